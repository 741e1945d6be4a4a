"""Without an MNIST folder, the digits come from torchvision's download (the full 60,000-digit
train split and the 10,000-digit test split), cached under $XDG_CACHE_HOME/minidiff/mnist.

No network here: torchvision.datasets.MNIST is replaced by a fake that records how it was
called and holds a few digits of each split.
"""

from __future__ import annotations

import json

import pytest
import torch

from minidiff import data as D


class _FakeMNIST:
    calls: list[tuple[str, bool, bool]] = []
    sizes = {True: 40, False: 24}

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        _FakeMNIST.calls.append((root, train, download))
        n = self.sizes[train]
        g = torch.Generator().manual_seed(int(train))
        self.data = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        self.targets = torch.arange(n) % 10


@pytest.fixture
def no_folder(monkeypatch, tmp_path):
    """No $MINIDIFF_MNIST_DIR, no ../shared/data/mnist, a fresh cache, and the fake download."""
    torchvision_datasets = pytest.importorskip("torchvision.datasets")
    monkeypatch.delenv(D.MNIST_ENV, raising=False)
    monkeypatch.setattr(D, "_repo_default_dir", lambda: tmp_path / "absent")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _FakeMNIST.calls = []
    monkeypatch.setattr(torchvision_datasets, "MNIST", _FakeMNIST)
    return tmp_path


def test_without_a_folder_the_training_set_is_the_downloaded_train_split_plus_the_first_test_digits(no_folder):
    x, y = D.training_set()
    cache = str(no_folder / "cache" / "minidiff" / "mnist")
    assert _FakeMNIST.calls == [(cache, True, True), (cache, False, True)]
    train, test = _FakeMNIST(cache, True), _FakeMNIST(cache, False)
    assert x.shape == (40 + 24, 1, 28, 28) and x.dtype == torch.float32  # t10k of 24 < 10,000: no hold-out, the whole mix
    torch.testing.assert_close(x[:40, 0], train.data.float() / 255)
    torch.testing.assert_close(x[40:, 0], test.data.float() / 255)
    assert torch.equal(y, torch.cat([train.targets, test.targets]))


def test_a_failed_download_says_what_to_do_in_one_line(no_folder, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a, got:\n<urlopen error>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(FileNotFoundError, match="are you offline") as err:
        D.training_set()
    assert "Error downloading train-images-idx3-ubyte.gz" in str(err.value)
    assert "urlopen" not in str(err.value) and "--data" in str(err.value)


def test_train_without_data_trains_on_the_download_and_says_so(no_folder):
    """`minidiff train` with no --data reads the downloaded splits; config.json counts them."""
    from minidiff.recipes import recipe_config
    from minidiff.train import train

    cfg = recipe_config("flow-class", num_hiddens=4, epochs=1, batch_size=16, snapshot_epochs=[])
    train(cfg, no_folder / "run", progress=False)
    config = json.loads((no_folder / "run" / "config.json").read_text())
    assert config["train_images"] == 64 and config["steps"] == 4
    assert len(_FakeMNIST.calls) == 2
