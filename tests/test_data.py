"""MNIST loading from IDX folders (made here from fake digits), image loading, grids and GIFs."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from minidiff import data

from idx_files import write_idx


def _fake_split(folder, prefix: str, n: int, seed: int = 0, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return images, labels


@pytest.fixture
def mnist_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(data.MNIST_ENV, raising=False)
    _fake_split(tmp_path, "train5k", 30, seed=1)
    _fake_split(tmp_path, "t10k", 20, seed=2, gz=False)
    return tmp_path


def test_idx_round_trip_gz_and_raw(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, a)
        np.testing.assert_array_equal(data.read_idx(tmp_path / name), a)


def test_load_mnist_values_dtypes_and_labels(mnist_dir):
    images, labels = _fake_split(mnist_dir, "train5k", 30, seed=1)
    x, y = data.load_mnist("train", mnist_dir)
    assert x.shape == (30, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (30,) and y.dtype == torch.int64
    torch.testing.assert_close(x[:, 0], torch.from_numpy(images).float() / 255)
    assert y.tolist() == labels.astype(int).tolist()
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_official_train_name_wins_over_train5k(mnist_dir):
    _fake_split(mnist_dir, "train", 40, seed=3)
    assert data.load_mnist("train", mnist_dir)[0].shape[0] == 40
    assert data.load_mnist("train5k", mnist_dir)[0].shape[0] == 30


def test_env_var_points_to_the_folder(mnist_dir, monkeypatch):
    monkeypatch.setenv(data.MNIST_ENV, str(mnist_dir))
    assert data.load_mnist("t10k")[0].shape == (20, 1, 28, 28)


@pytest.fixture
def mix_dir(tmp_path, monkeypatch):
    """A folder whose t10k is "whole" at T10K_SIZE = 100: train5k 50 digits, t10k 100, 5 of each class per source."""
    monkeypatch.delenv(data.MNIST_ENV, raising=False)
    monkeypatch.setattr(data, "T10K_SIZE", 100)
    _fake_split(tmp_path, "train5k", 50, seed=1)
    _fake_split(tmp_path, "t10k", 100, seed=2)
    return tmp_path


def _rows(x: torch.Tensor) -> list[bytes]:
    return [bytes((r * 255).round().to(torch.uint8).flatten().tolist()) for r in x]


def test_training_and_heldout_sets_split_the_mix_without_overlap(mix_dir, monkeypatch):
    monkeypatch.setattr(data, "HOLDOUT_SIZE", 30)
    x_tr, y_tr = data.training_set(mix_dir)
    x_ho, y_ho = data.heldout_set(mix_dir)
    x_mix, y_mix, source = data.mnist_mix(mix_dir)
    assert x_tr.shape[0] == 120 and x_ho.shape[0] == 30
    assert source.tolist() == [0] * 50 + [1] * 50 + [2] * 50
    train, held, mix = _rows(x_tr), _rows(x_ho), _rows(x_mix)  # random images: every row is unique
    assert len(set(mix)) == 150 and not set(train) & set(held) and sorted(train + held) == sorted(mix)
    label_of = dict(zip(mix, y_mix.tolist()))
    assert [label_of[r] for r in held] == y_ho.tolist() and [label_of[r] for r in train] == y_tr.tolist()


def test_the_holdout_is_stratified_by_source_and_class(mix_dir, monkeypatch):
    """30 of 150: each of the 30 strata (3 sources x 10 classes, 5 digits each) gives exactly one."""
    _, y, source = data.mnist_mix(mix_dir)
    held = data.holdout_mask(y, source, size=30)
    strata = (10 * source + y)[held]
    assert sorted(strata.tolist()) == list(range(30))


def test_uneven_strata_get_their_share_within_one_digit_and_the_total_exactly():
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, 10, (997,), generator=g)
    source = torch.randint(0, 3, (997,), generator=g)
    for size in (1, 17, 100, 333):
        held = data.holdout_mask(y, source, size=size)
        assert int(held.sum()) == size
        strata = 10 * source + y
        got = torch.bincount(strata[held], minlength=30).double()
        exact = size * torch.bincount(strata, minlength=30).double() / 997
        assert float((got - exact).abs().max()) < 1


def test_the_holdout_is_the_same_every_time_and_depends_on_the_seed(mix_dir):
    _, y, source = data.mnist_mix(mix_dir)
    a = data.holdout_mask(y, source, size=30)
    assert torch.equal(a, data.holdout_mask(y, source, size=30))
    assert not torch.equal(a, data.holdout_mask(y, source, size=30, seed=1))


def test_a_small_t10k_has_no_holdout_and_heldout_set_says_why(mnist_dir):
    """t10k of 20 < 10,000 digits: training_set is the whole mix, heldout_set refuses in one line."""
    x_tr, _ = data.training_set(mnist_dir)
    assert x_tr.shape[0] == 30 + 20
    with pytest.raises(ValueError, match=r"t10k has only 20 digits; the held-out set is drawn from MNIST's whole "
                                         r"test split of 10000"):
        data.heldout_set(mnist_dir)


def test_holding_out_everything_is_refused():
    with pytest.raises(ValueError, match="cannot hold out 10 of 10 digits"):
        data.holdout_mask(torch.arange(10) % 10, torch.zeros(10, dtype=torch.long), size=10)


def test_missing_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(data.MNIST_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_mnist("train", tmp_path / "nope")
    monkeypatch.setenv(data.MNIST_ENV, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="MINIDIFF_MNIST_DIR"):
        data.load_mnist("t10k")


def test_folder_without_the_split_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(data.MNIST_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        data.load_mnist("t10k", tmp_path)


def test_corrupt_files_are_value_errors(mnist_dir):
    path = mnist_dir / "t10k-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])  # truncated
    with pytest.raises(ValueError, match="corrupt"):
        data.load_mnist("t10k", mnist_dir)
    path.write_bytes(b"\x12\x34" + raw[2:])  # bad magic
    with pytest.raises(ValueError, match="magic"):
        data.load_mnist("t10k", mnist_dir)
    gz = mnist_dir / "train5k-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(raw)[:40])  # broken gzip stream
    with pytest.raises(ValueError, match="download it again"):
        data.load_mnist("train5k", mnist_dir)


def test_labels_out_of_range_are_rejected(mnist_dir):
    write_idx(mnist_dir / "t10k-labels-idx1-ubyte", np.full(20, 11, dtype=np.uint8))
    with pytest.raises(ValueError, match="0..9"):
        data.load_mnist("t10k", mnist_dir)


@pytest.mark.parametrize("mode,size", [("RGB", (90, 30)), ("RGBA", (30, 90)), ("L", (64, 64)), ("P", (17, 23))])
def test_load_image_any_mode_and_size(tmp_path, mode, size):
    img = Image.new(mode, size)
    img.save(tmp_path / "x.png")
    x = data.load_image(tmp_path / "x.png")
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_load_image_centre_crop_keeps_the_middle(tmp_path):
    # 90 x 30: black side thirds, a white centre square; the crop must be all white.
    arr = np.zeros((30, 90, 3), dtype=np.uint8)
    arr[:, 30:60] = 255
    Image.fromarray(arr).save(tmp_path / "wide.png")
    x = data.load_image(tmp_path / "wide.png", size=16)
    assert x.shape == (1, 3, 16, 16)
    assert float(x.min()) > 0.99


def test_load_image_bad_input(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read"):
        data.load_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError):
        data.load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="size"):
        data.load_image(tmp_path / "bad.png", size=0)


def test_grid_layout_and_png(tmp_path):
    x = torch.stack([torch.full((1, 4, 4), float(i) / 5) for i in range(5)])
    grid = data.make_grid(x, nrow=3, padding=1)
    assert grid.shape == (1, 2 * 5 + 1, 3 * 5 + 1)
    assert float(grid[0, 1, 1 + 5 * 2]) == pytest.approx(2 / 5)  # third image, first row
    path = data.save_grid(x, tmp_path / "g.png", nrow=3, value_range=(0, 1), padding=1)
    assert Image.open(path).size == (16, 11)


def test_gif_has_every_frame(tmp_path):
    frames = [torch.rand(4, 3, 8, 8) * 2 - 1 for _ in range(3)]
    path = data.save_gif(frames, tmp_path / "a.gif", nrow=2)
    with Image.open(path) as im:
        assert im.n_frames == 3
    with pytest.raises(ValueError):
        data.save_gif([], tmp_path / "b.gif")
