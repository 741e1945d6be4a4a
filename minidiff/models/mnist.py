"""The Part B MNIST UNets: small blocks, then three models built from them.

The architecture is the course's (CS180 Project 5, Part B). With hidden width D, a
(B, 1, 28, 28) image goes through::

    ConvBlock(1, D)      28x28xD   ---------------------------------------------.  skip 0
    DownBlock(D, D)      14x14xD   ------------------------------.               |  skip 1
    DownBlock(D, 2D)      7x7x2D   ----------------.             |               |  skip 2
    Flatten               1x1x2D                   |             |               |
    Unflatten(2D)         7x7x2D   <- (modulated)  |             |               |
    UpBlock(4D, D)       14x14xD   <- cat(., skip 2)  (modulated) |               |
    UpBlock(2D, D)       28x28xD   <------------- cat(., skip 1)                 |
    ConvBlock(2D, D)     28x28xD   <------------------------------ cat(., skip 0)
    Conv2d(D, 1, 3x3)    28x28x1

"Modulated" is where conditioning enters the decoder. The time-conditioned UNet adds
FCBlock embeddings of the scalar t in [0, 1]::

    h_unflatten <- h_unflatten + t1,   h_up1 <- h_up1 + t2,      t1 = fc1_t(t), t2 = fc2_t(t)

and the class-conditioned UNet also scales by embeddings of the one-hot class c::

    h_unflatten <- c1 * h_unflatten + t1,   h_up1 <- c2 * h_up1 + t2

A zero class vector (c1 = fc1_c(0) = the bias path only) is the "unconditional" input that
classifier-free guidance needs; training drops the class to zero with p_uncond = 0.1.

At D = 64 one forward pass costs about 0.54 GFLOP per image (``forward_flops``).
"""

from __future__ import annotations

import copy
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.schedule import DDPMSchedule, FlowSchedule

__all__ = [
    "Conv",
    "DownConv",
    "UpConv",
    "Flatten",
    "Unflatten",
    "ConvBlock",
    "DownBlock",
    "UpBlock",
    "FCBlock",
    "UnconditionalUNet",
    "TimeConditionalUNet",
    "ClassConditionalUNet",
    "class_vector",
    "drop_class",
    "unet_time",
    "build_model",
    "fold_batchnorm",
    "forward_flops",
    "NUM_CLASSES",
]

NUM_CLASSES = 10


# ----------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------


class _ConvNormAct(nn.Sequential):
    """A convolution, then BatchNorm and GELU: the layer every block below is made of."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d) -> None:
        super().__init__(conv, nn.BatchNorm2d(conv.out_channels), nn.GELU())


class Conv(_ConvNormAct):
    """3x3 convolution that keeps the resolution, then BatchNorm and GELU. (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1))


class DownConv(_ConvNormAct):
    """3x3 convolution with stride 2 (halves H and W), BatchNorm, GELU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1))


class UpConv(_ConvNormAct):
    """4x4 transposed convolution with stride 2 (doubles H and W), BatchNorm, GELU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1))


class Flatten(nn.Sequential):
    """7x7 average pool to a 1x1 "bottleneck vector", then GELU. (B, C, 7, 7) -> (B, C, 1, 1)."""

    def __init__(self) -> None:
        super().__init__(nn.AvgPool2d(7), nn.GELU())


class Unflatten(_ConvNormAct):
    """7x7 transposed convolution with stride 7, BatchNorm, GELU. (B, C, 1, 1) -> (B, C, 7, 7)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(nn.ConvTranspose2d(in_channels, in_channels, 7, stride=7, padding=0))


class ConvBlock(nn.Sequential):
    """Two Convs: Conv(C_in, C_out) then Conv(C_out, C_out)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(Conv(in_channels, out_channels), Conv(out_channels, out_channels))


class DownBlock(nn.Sequential):
    """DownConv then ConvBlock: (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(DownConv(in_channels, out_channels), ConvBlock(out_channels, out_channels))


class UpBlock(nn.Sequential):
    """UpConv then ConvBlock: (B, C_in, H, W) -> (B, C_out, 2H, 2W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(UpConv(in_channels, out_channels), ConvBlock(out_channels, out_channels))


class FCBlock(nn.Sequential):
    """Linear, GELU, Linear: embeds a conditioning vector (B, F_in) -> (B, F_out)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(
            nn.Linear(in_features, out_features),
            nn.GELU(),
            nn.Linear(out_features, out_features),
        )


# ----------------------------------------------------------------------------------------
# Conditioning helpers
# ----------------------------------------------------------------------------------------


def class_vector(c: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Labels (B,) int64 in [0, num_classes) -> one-hot float (B, num_classes); a (B, K) float passes through."""
    if not isinstance(c, torch.Tensor):
        raise ValueError(f"the class condition c must be a tensor, got {type(c).__name__}")
    if c.ndim == 1 and not c.is_floating_point():
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= num_classes):
            raise ValueError(
                f"class labels c must lie in 0..{num_classes - 1}, got min {int(c.min())}, max {int(c.max())}"
            )
        return F.one_hot(c.long(), num_classes).float()
    if c.ndim == 2 and c.shape[1] == num_classes:
        return c.float()
    raise ValueError(
        f"the class condition c must be (B,) integer labels or a (B, {num_classes}) class vector, "
        f"got shape {tuple(c.shape)} and dtype {c.dtype}"
    )


def drop_class(
    c: torch.Tensor, p_uncond: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Classifier-free guidance training: each row of the class vector c (B, K) becomes 0 with prob p_uncond."""
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
    keep = torch.rand(c.shape[0], 1, generator=generator, device=c.device) >= p_uncond
    return c * keep.to(c.dtype)


def unet_time(t: torch.Tensor, schedule: DDPMSchedule | FlowSchedule) -> torch.Tensor:
    """The time the UNet sees, a float in [0, 1]: t / T for a DDPM step t in {0..T-1}, the flow time t as is.

    The one place the scaling lives: training (``minidiff.recipes``) and sampling
    (``minidiff.mnist_pipeline.MNISTModel``) both call it.
    """
    t = t.float()
    return t / schedule.num_timesteps if isinstance(schedule, DDPMSchedule) else t


def _time_column(t: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """Normalised time t in [0, 1] (scalar or (B,)) -> a (B, 1) float column for the FCBlocks."""
    if isinstance(t, bool) or not isinstance(t, (torch.Tensor, numbers.Real)):
        raise ValueError(f"t must be a number or a (B,) tensor of normalised times in [0, 1], got {t!r:.60}")
    t = torch.as_tensor(t, dtype=torch.float32, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1 or t.shape[0] != batch:
        raise ValueError(f"t must be a scalar or a (B,) tensor with B = {batch}, got shape {tuple(t.shape)}")
    return t.reshape(batch, 1)


def _check_image(x: torch.Tensor, in_channels: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != in_channels or x.shape[2:] != (28, 28):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"the MNIST UNet takes x of shape (B, {in_channels}, 28, 28), got {shape}; "
            "resize or pad to 28x28 (two stride-2 downsamplings and a 7x7 pool need exactly 28)"
        )
    if not x.is_floating_point():
        raise ValueError(f"the MNIST UNet takes float images x in [0, 1], got dtype {x.dtype}")


# ----------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------


class UnconditionalUNet(nn.Module):
    """The course's unconditional UNet: (B, 1, 28, 28) -> (B, 1, 28, 28)."""

    def __init__(self, in_channels: int = 1, num_hiddens: int = 128) -> None:
        super().__init__()
        D = num_hiddens
        self.in_channels = in_channels
        self.num_hiddens = D
        self.conv_in = ConvBlock(in_channels, D)
        self.down1 = DownBlock(D, D)
        self.down2 = DownBlock(D, 2 * D)
        self.flatten = Flatten()
        self.unflatten = Unflatten(2 * D)
        self.up1 = UpBlock(4 * D, D)
        self.up2 = UpBlock(2 * D, D)
        self.conv_mid = ConvBlock(2 * D, D)
        self.conv_out = nn.Conv2d(D, in_channels, 3, stride=1, padding=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder half: the three skips (28, 14, 7 px) and the 1x1 bottleneck."""
        _check_image(x, self.in_channels)
        s0 = self.conv_in(x)
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        return s0, s1, s2, self.flatten(s2)

    def decode(
        self,
        skips: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        bottleneck: torch.Tensor,
        scale1: torch.Tensor | None = None,
        shift1: torch.Tensor | None = None,
        scale2: torch.Tensor | None = None,
        shift2: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decoder half. h <- scale * h + shift after Unflatten (1) and after the first UpBlock (2).

        scale/shift are (B, C) vectors (or None for no modulation), broadcast over H and W.
        """
        s0, s1, s2 = skips
        h = self.unflatten(bottleneck)
        h = _modulate(h, scale1, shift1)
        h = self.up1(torch.cat([h, s2], dim=1))
        h = _modulate(h, scale2, shift2)
        h = self.up2(torch.cat([h, s1], dim=1))
        h = self.conv_mid(torch.cat([h, s0], dim=1))
        return self.conv_out(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0, s1, s2, z = self.encode(x)
        return self.decode((s0, s1, s2), z)


def _modulate(h: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None) -> torch.Tensor:
    if scale is not None:
        h = h * scale[:, :, None, None]
    if shift is not None:
        h = h + shift[:, :, None, None]
    return h


class TimeConditionalUNet(UnconditionalUNet):
    """The UNet with a scalar time t in [0, 1] added to the decoder: forward(x, t) -> (B, 1, 28, 28).

    DDPM models get t / T here (the integer step divided by the number of steps); flow
    models get their continuous t directly.
    """

    def __init__(self, in_channels: int = 1, num_hiddens: int = 64) -> None:
        super().__init__(in_channels, num_hiddens)
        D = num_hiddens
        self.fc1_t = FCBlock(1, 2 * D)
        self.fc2_t = FCBlock(1, D)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        _check_image(x, self.in_channels)  # before t's check reads x.shape
        tc = _time_column(t, x.shape[0], x.device).to(x.dtype)
        s0, s1, s2, z = self.encode(x)
        return self.decode((s0, s1, s2), z, shift1=self.fc1_t(tc), shift2=self.fc2_t(tc))


class ClassConditionalUNet(TimeConditionalUNet):
    """The UNet conditioned on time and class: forward(x, t, c) -> (B, 1, 28, 28).

    c is a (B, 10) class vector (one-hot for a digit, all zeros for "no class") or (B,)
    int64 labels. Training replaces c by zeros at the rate p_uncond of its config
    (``drop_class``); the forward pass itself never drops, so eval and training calls
    with the same inputs agree apart from BatchNorm.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = NUM_CLASSES, num_hiddens: int = 64) -> None:
        super().__init__(in_channels, num_hiddens)
        D = num_hiddens
        self.num_classes = num_classes
        self.fc1_c = FCBlock(num_classes, 2 * D)
        self.fc2_c = FCBlock(num_classes, D)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, c: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # Every input is checked before the encoder runs.
        _check_image(x, self.in_channels)
        tc = _time_column(t, x.shape[0], x.device).to(x.dtype)
        cv = class_vector(c, self.num_classes).to(device=x.device, dtype=x.dtype)
        if cv.shape[0] != x.shape[0]:
            raise ValueError(f"the class condition c has {cv.shape[0]} rows but the batch has {x.shape[0]} images")
        s0, s1, s2, z = self.encode(x)
        return self.decode(
            (s0, s1, s2),
            z,
            scale1=self.fc1_c(cv),
            shift1=self.fc1_t(tc),
            scale2=self.fc2_c(cv),
            shift2=self.fc2_t(tc),
        )


# ----------------------------------------------------------------------------------------
# Construction from a config, and cost
# ----------------------------------------------------------------------------------------

_ARCHS = {
    "unconditional": UnconditionalUNet,
    "time": TimeConditionalUNet,
    "class": ClassConditionalUNet,
}


def build_model(arch: str, num_hiddens: int) -> nn.Module:
    """A model from its config name: "unconditional", "time" or "class"."""
    if arch not in _ARCHS:
        raise ValueError(f"unknown MNIST architecture {arch!r}; choose one of {sorted(_ARCHS)}")
    if not isinstance(num_hiddens, int) or num_hiddens < 1:
        raise ValueError(f"num_hiddens (D) must be a positive int, got {num_hiddens!r}")
    return _ARCHS[arch](num_hiddens=num_hiddens)


@torch.no_grad()
def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of net for inference, each BatchNorm folded into the convolution before it.

    In eval mode BatchNorm is a fixed per-channel affine map, so conv then BN is one conv:

        BN(W * x + b) = s (W * x + b - mu) + beta = (s W) * x + s (b - mu) + beta,
        s = gamma / sqrt(var + eps)   per output channel

    which saves a pass over every activation (about a tenth of a forward on a CPU). The
    copy is in eval mode; its outputs equal net's (eval) up to float rounding.
    """
    net = copy.deepcopy(net).eval()
    for block in net.modules():
        if not isinstance(block, _ConvNormAct) or not isinstance(block[1], nn.BatchNorm2d):
            continue
        conv, bn = block[0], block[1]
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        # Conv2d weights are (out, in, k, k), ConvTranspose2d weights (in, out, k, k).
        shape = (-1, 1, 1, 1) if isinstance(conv, nn.Conv2d) else (1, -1, 1, 1)
        conv.weight.mul_(s.reshape(shape))
        conv.bias.copy_(s * (conv.bias - bn.running_mean) + bn.bias)
        block[1] = nn.Identity()
    return net


def forward_flops(num_hiddens: int, in_channels: int = 1) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass for one 28x28 image, convolutions only.

    The FCBlocks, BatchNorm and GELU add well under 1%.
    """
    D, c = num_hiddens, in_channels

    def conv(cin: int, cout: int, hw: int, k: int = 3) -> int:
        """A conv's output pixel gathers one k x k patch, a transposed conv's input pixel scatters one: hw is that side."""
        return 2 * hw * hw * cin * cout * k * k

    return (
        conv(c, D, 28) + conv(D, D, 28)  # conv_in
        + conv(D, D, 14) + 2 * conv(D, D, 14)  # down1
        + conv(D, 2 * D, 7) + 2 * conv(2 * D, 2 * D, 7)  # down2
        + conv(2 * D, 2 * D, 1, 7)  # unflatten (transposed, 1x1 in)
        + conv(4 * D, D, 7, 4) + 2 * conv(D, D, 14)  # up1 (transposed, 7x7 in)
        + conv(2 * D, D, 14, 4) + 2 * conv(D, D, 28)  # up2 (transposed, 14x14 in)
        + conv(2 * D, D, 28) + conv(D, D, 28)  # conv_mid
        + conv(D, c, 28)  # conv_out
    )
