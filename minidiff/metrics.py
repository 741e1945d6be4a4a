"""Measuring MNIST models: two judge classifiers, their accuracy on generated digits, the Frechet
distance in their feature spaces, and PSNR.

The judges are small CNNs trained by minidiff on the training set only: ``MNISTJudge``
(``minidiff train judge``; weights/mnist/judge) and ``ResNetJudge``, another architecture
trained from another seed (``minidiff train judge2``; weights/mnist/judge2). One judge alone
is a target a sampler can be tuned to; a figure that holds on both is harder to flatter. A
generated "7" counts as right when a judge reads it as a 7. The Frechet distance compares two
sets of images through a judge's 128-d penultimate features f(x), fitting a Gaussian to each set::

    FD = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

(the FID recipe of Heusel et al., 2017, with a judge in place of Inception). It is only
comparable between sets of the same size, so every figure is reported beside the same
figure for two disjoint sets of real digits of that size (benchmarks/bench_mnist_quality.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minidiff.checks import finite_tensor, real_number

__all__ = ["MNISTJudge", "ResNetJudge", "judge_accuracy", "judge_features", "frechet_distance", "faint_share", "psnr", "random_shift"]


class MNISTJudge(nn.Module):
    """A small CNN digit classifier: (B, 1, 28, 28) in [0, 1] -> (B, 10) logits.

    conv 3x3 (32) - ReLU - maxpool - conv 3x3 (64) - ReLU - maxpool - linear 3136 -> 128 - ReLU
    (the features) - linear 128 -> 10. No BatchNorm, so eval on any batch is the same function.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128) -> None:
        super().__init__()
        self.width = width
        self.feature_dim = feature_dim
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 7 * 7, feature_dim)
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) -> (B, feature_dim) penultimate activations."""
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"the judge reads (B, 1, 28, 28) digits in [0, 1], got shape {tuple(x.shape)}")
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ResNetJudge(nn.Module):
    """A second digit classifier, independent of MNISTJudge: (B, 1, 28, 28) in [0, 1] -> (B, 10) logits.

    A small residual CNN (He et al., 2016, with pre-activation blocks)::

        stem     conv 3x3 (w)                          28 x 28
        stage 1  conv 3x3 stride 2 (w),  block (w)     14 x 14
        stage 2  conv 3x3 stride 2 (2w), block (2w)     7 x 7
        head     conv 1x1 (feature_dim) - ReLU - mean over positions (the features) - linear -> 10

        block(h) = h + conv(ReLU(GN(conv(ReLU(GN(h))))))

    MNISTJudge flattens a 7 x 7 map into its features; this one averages over positions, so
    the two weigh a digit's strokes differently, and a sampler tuned to one judge is checked
    by the other. GroupNorm normalises each image by itself: eval on any batch is the same function.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128) -> None:
        super().__init__()
        self.width = width
        self.feature_dim = feature_dim
        w = width
        self.stem = nn.Conv2d(1, w, 3, padding=1)
        self.down1 = nn.Conv2d(w, w, 3, stride=2, padding=1)
        self.block1 = _PreActBlock(w)
        self.down2 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.block2 = _PreActBlock(2 * w)
        self.lift = nn.Conv2d(2 * w, feature_dim, 1)
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) -> (B, feature_dim) position-averaged activations."""
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"the judge reads (B, 1, 28, 28) digits in [0, 1], got shape {tuple(x.shape)}")
        h = F.relu(self.stem(x))
        h = self.block1(self.down1(h))
        h = self.block2(self.down2(h))
        return F.relu(self.lift(h)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _PreActBlock(nn.Module):
    """h + conv(ReLU(GN(conv(ReLU(GN(h)))))), channels kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        groups = math.gcd(8, channels)  # 8 groups where the width allows (any width 1..512 builds)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(h))))))


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by a random integer offset in [-max_shift, max_shift]^2 (zero fill).

    The judge trains on shifted digits so that it reads slightly off-centre samples fairly.
    """
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator)
    out = torch.empty_like(x)
    for i in range(b):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


def _as_digits(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) / (N, 1, 28, 28) in 0..255, or float in [0, 1] -> float (N, 1, 28, 28) in [0, 1].

    Floats a little outside [0, 1] (a sampler's overshoot) are clipped; floats far outside
    are refused, since they are images in another range (e.g. [-1, 1] or 0..255).
    """
    if not isinstance(images, (torch.Tensor, np.ndarray)):
        raise ValueError(f"images must be a tensor or numpy array of digits, got {type(images).__name__}")
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1:] != (1, 28, 28) or x.shape[0] == 0:
        raise ValueError(f"images must be N >= 1 digits (N, 28, 28) or (N, 1, 28, 28), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise ValueError(f"images must be uint8 (0..255) or float in [0, 1], got {x.dtype}")
    finite_tensor(x, "images", "the judge cannot read them")
    low, high = float(x.min()), float(x.max())
    if low < -0.5 or high > 1.5:
        raise ValueError(
            f"float images must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]; "
            "map [-1, 1] images with (x + 1) / 2 and 0..255 ones with x / 255"
        )
    return x.float().clamp(0, 1)


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def judge_accuracy(judge: nn.Module, images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Fraction of digits the judge reads as their intended label."""
    x = _as_digits(images)
    y = torch.as_tensor(labels).long()
    if y.shape != (x.shape[0],):
        raise ValueError(f"need one label per digit: {x.shape[0]} digits, labels of shape {tuple(y.shape)}")
    judge.eval()
    pred = _batched(judge, x).argmax(dim=1)
    return float((pred == y).float().mean())


@torch.no_grad()
def judge_features(judge: nn.Module, images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The judge's (N, feature_dim) features of digits, float64."""
    judge.eval()
    return _batched(judge.features, _as_digits(images)).double()


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two (N, F) feature sets.

    Tr((S_a S_b)^(1/2)) is computed as Tr((A S_b A)^(1/2)) with A = S_a^(1/2), which is
    symmetric positive semi-definite and so has a stable eigen-decomposition.
    """
    a = np.asarray(torch.as_tensor(feats_a, dtype=torch.float64))
    b = np.asarray(torch.as_tensor(feats_b, dtype=torch.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feats_a and feats_b must be two (N, F) feature sets with the same F, got {a.shape} and {b.shape}"
        )
    for name, f in (("feats_a", a), ("feats_b", b)):
        if f.shape[0] < 2:
            raise ValueError(f"{name} has {f.shape[0]} samples; a covariance needs at least 2 (use hundreds)")
        if not np.isfinite(f).all():
            raise ValueError(f"{name} holds NaN or inf features; check the images they came from")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrtm_psd(s_a)
    cross = np.trace(_sqrtm_psd(root_a @ s_b @ root_a))
    fd = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)
    return max(fd, 0.0)


def faint_share(images: torch.Tensor | np.ndarray, low: int = 1, high: int = 40) -> float:
    """The share of pixels that are faint: values low..high of 255 (1..40 by default).

    Real MNIST backgrounds are exactly 0, so about 2.4% of a real digit's pixels are faint
    (its antialiased edges); a sampler that leaves a grey speckle on the background shows
    here long before the judge notices. Float images in [0, 1] are rounded to 0..255 first.
    """
    x = torch.round(_as_digits(images) * 255)
    return float(((x >= low) & (x <= high)).float().mean())


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole batch: 10 log10(range^2 / MSE); inf when equal."""
    for name, t in (("x", x), ("ref", ref)):
        if not isinstance(t, torch.Tensor) or t.numel() == 0:
            raise ValueError(f"psnr needs non-empty tensors, got {name} = {t!r:.60}")
    if x.shape != ref.shape:
        raise ValueError(f"psnr needs equal shapes, got x {tuple(x.shape)} and ref {tuple(ref.shape)}")
    data_range = real_number(data_range, "data_range", positive=True)
    mse = float(((x.double() - ref.double()) ** 2).mean())
    if mse == 0:
        return math.inf
    return 10 * math.log10(data_range**2 / mse)
