"""Judge, Frechet distance and PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minidiff.metrics import (
    MNISTJudge,
    ResNetJudge,
    faint_share,
    frechet_distance,
    judge_accuracy,
    judge_features,
    psnr,
    random_shift,
)


def test_psnr_known_values():
    x = torch.zeros(2, 1, 4, 4)
    assert psnr(x + 0.1, x) == pytest.approx(20.0)
    assert psnr(x + 0.5, x, data_range=2.0) == pytest.approx(10 * math.log10(16.0))
    assert psnr(x, x) == math.inf
    with pytest.raises(ValueError, match="equal shapes"):
        psnr(x, x[:1])


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_spread():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # Same mean, covariance scaled by 4: FD = Tr(S + 4S - 2 * 2S) = Tr(S).
    s = np.cov(a.numpy(), rowvar=False)
    assert frechet_distance(a, 2 * a - a.mean(0)) == pytest.approx(np.trace(s), rel=1e-6)


@given(shift=st.lists(st.floats(-3, 3), min_size=4, max_size=4))
def test_frechet_distance_of_a_translate_is_the_squared_shift(shift):
    """Translation identity: FD(a, a + c) = |c|^2 (equal covariances cancel)."""
    a = torch.randn(64, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c = torch.tensor(shift, dtype=torch.float64)
    assert frechet_distance(a, a + c) == pytest.approx(float((c**2).sum()), abs=1e-6)


def test_frechet_distance_bad_input():
    with pytest.raises(ValueError, match="feature sets"):
        frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))


@pytest.mark.parametrize("kind", [MNISTJudge, ResNetJudge])
def test_judge_shapes_accuracy_and_features(kind):
    torch.manual_seed(0)
    judge = kind(width=4).eval()
    x = torch.rand(12, 1, 28, 28)
    with torch.no_grad():
        pred = judge(x).argmax(1)
    assert judge_accuracy(judge, x, pred) == 1.0
    assert judge_accuracy(judge, x, (pred + 1) % 10) == 0.0
    uint8 = (x[:, 0] * 255).round().to(torch.uint8).numpy()  # the sample-digits format
    assert judge_features(judge, uint8).shape == (12, 128)
    with pytest.raises(ValueError, match="one label per digit"):
        judge_accuracy(judge, x, pred[:3])
    with pytest.raises(ValueError, match="28"):
        judge_accuracy(judge, torch.rand(2, 1, 32, 32), pred[:2])


def test_random_shift_moves_content_without_losing_it():
    x = torch.zeros(6, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0  # central square: shifts of up to 2 px keep it inside
    y = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(y.sum((1, 2, 3)), x.sum((1, 2, 3)))
    assert not torch.equal(x, y)
    assert torch.equal(random_shift(x, 0), x)


def test_faint_share_counts_values_1_to_40_of_255():
    x = np.zeros((2, 28, 28), dtype=np.uint8)
    x[0, 0, :4] = [1, 40, 41, 255]  # two faint, one just above, one full
    x[1, 5, 5] = 20
    assert faint_share(x) == pytest.approx(3 / (2 * 28 * 28))
    as_float = torch.from_numpy(x).float() / 255  # floats in [0, 1] are rounded to 0..255 first
    assert faint_share(as_float) == faint_share(x)
    assert faint_share(np.zeros((1, 28, 28), dtype=np.uint8)) == 0.0
    with pytest.raises(ValueError, match="28, 28"):
        faint_share(np.zeros((1, 27, 28), dtype=np.uint8))


@pytest.mark.parametrize("width", [1, 3, 12])
def test_the_second_judge_builds_at_any_width(width):
    assert ResNetJudge(width=width)(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_the_second_judge_reads_each_digit_alone_whatever_the_batch():
    """GroupNorm normalises each image by itself: a digit's logits do not depend on its batch
    (BatchNorm's in training mode would), in train and eval mode alike."""
    torch.manual_seed(0)
    judge = ResNetJudge(width=8)
    x = torch.rand(6, 1, 28, 28)
    for mode in (judge.train, judge.eval):
        mode()
        with torch.no_grad():
            torch.testing.assert_close(judge(x)[2:3], judge(x[2:3]), rtol=1e-5, atol=1e-5)


def test_the_judge2_recipe_trains_a_resnet_judge_that_loads_back(tmp_path):
    """minidiff's judge2 recipe: another architecture and seed than judge's; its checkpoint loads as one."""
    from minidiff.mnist_pipeline import load_mnist_model
    from minidiff.recipes import recipe_config
    from minidiff.train import train

    from minidiff.cli import build_parser

    cfg = recipe_config("judge2", width=4, epochs=1, batch_size=16, snapshot_epochs=[])
    assert cfg["seed"] != recipe_config("judge")["seed"] and cfg["kind"] == "judge"
    told_nothing = build_parser().parse_args(["train", "judge2", "--out", "run"]).seed  # the command line's
    assert recipe_config("judge2", seed=told_nothing)["seed"] == cfg["seed"]
    x = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % 10
    net = train(cfg, tmp_path / "run", data=(x, y), progress=False)
    loaded = load_mnist_model(tmp_path / "run")
    assert isinstance(net, ResNetJudge) and isinstance(loaded.net, ResNetJudge)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
