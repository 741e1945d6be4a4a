"""The DeepFloyd IF stage-1 UNet, written out in plain PyTorch.

IF stage 1 (DeepFloyd, 2023) turns a T5-XXL prompt embedding and a noisy 64x64 RGB image
x_t into a prediction of the noise and of the variance, (B, 6, 64, 64): channels 0..2 are
eps, channels 3..5 are the learned-range variance values (see ``minidiff.schedule``).

The network is a pixel-space UNet (Ho et al., 2020; Dhariwal & Nichol, 2021, "ADM"):

    t ──> sinusoid ──> MLP ──┐
    T5 tokens ──> attention pooling ──> (+) = emb     (one vector per image, conditions every ResNet)
    T5 tokens ──> Linear (text_proj) ──> context       (keys/values of every attention layer)

    x_t ─ conv_in ─ down blocks ─ mid block ─ up blocks ─ GroupNorm, act, conv_out ─> (eps, v)
                      │                          ^
                      └──── skip connections ────┘

    down block : L x [ResNet (+ attention)], then a ResNet that halves H and W
    up block   : (L + 1) x [concat skip, ResNet (+ attention)], then a ResNet that doubles H, W
    mid block  : ResNet, attention, ResNet

A ResNet block modulates its normalised features with the embedding ("scale-shift"):
    h = conv2(act(GroupNorm(conv1(act(GroupNorm(x)))) * (1 + scale) + shift)) + shortcut(x)
An attention layer lets every pixel attend to the projected text tokens *and* to all pixels
(the text keys/values come first in one joint softmax), then adds its output back.

Everything is built from the checkpoint's own ``config.json`` (diffusers'
``UNet2DConditionModel`` layout), so XL, L and M all load, and every parameter name equals
its key in ``diffusion_pytorch_model.safetensors``: loading is a strict ``load_state_dict``
with no renaming table.

    unet = IFUNet.from_pretrained("path/to/IF-I-XL-v1.0/unet", dtype=torch.float16)
    out = unet(x_t, t, prompt_embeds)     # (B, 3, 64, 64), (B,), (B, 77, 4096) -> (B, 6, 64, 64)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

# The header and key checks every loader shares; load_safetensors stays importable from here.
from minidiff.checkpoint import check_state_dict, load_safetensors

__all__ = [
    "IFUNet",
    "timestep_embedding",
    "read_config",
    "find_weights_file",
    "load_safetensors",
    "WEIGHT_NAMES",
]

# The two weight files a diffusers UNet folder may hold, half precision first.
WEIGHT_NAMES = ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors")

_DOWN_TYPES = {"ResnetDownsampleBlock2D": False, "SimpleCrossAttnDownBlock2D": True}
_UP_TYPES = {"ResnetUpsampleBlock2D": False, "SimpleCrossAttnUpBlock2D": True}
_ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu, "swish": F.silu}

# Config entries that change the network in ways IF stage 1 never uses: each must keep
# this value (or be absent), otherwise the config describes another network.
_FIXED = {
    "class_embed_type": None,
    "num_class_embeds": None,
    "time_embedding_type": "positional",
    "time_cond_proj_dim": None,
    "timestep_post_act": None,
    "only_cross_attention": False,
    "mid_block_only_cross_attention": None,
    "dual_cross_attention": False,
    "use_linear_projection": False,
    "class_embeddings_concat": False,
    "attention_type": "default",
    "num_attention_heads": None,
    "reverse_transformer_layers_per_block": None,
    "addition_time_embed_dim": None,
    "projection_class_embeddings_input_dim": None,
}


# ----------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------


def timestep_embedding(
    t: torch.Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim), float32 (Vaswani et al., 2017).

    freq_k = max_period^(-k / (dim/2 - freq_shift)),  k = 0 .. dim/2 - 1
    emb    = [cos(t freq), sin(t freq)]   (IF: flip_sin_to_cos=True, freq_shift=0)
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    angles = t.float()[:, None] * freqs[None, :]
    sin, cos = torch.sin(angles), torch.cos(angles)
    emb = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepMLP(nn.Module):
    """Linear -> act -> Linear on the sinusoidal embedding (keys ``time_embedding.linear_1/2``)."""

    def __init__(self, in_dim: int, dim: int, act: str):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)
        self.act = _ACTIVATIONS[act]

    def forward(self, t_emb: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(t_emb)))


class AttentionPooling(nn.Module):
    """Pool T tokens into one vector with multi-head attention from a "class token" query.

    The query is the mean token plus a learned position, cls = mean_s(x_s) + p; it attends to
    [cls, x_1 .. x_T]:  pooled_h = sum_s softmax_s(q_h . k_hs / sqrt(d)) v_hs.

    With a single query the key and value projections can be folded (exactly, up to float
    rounding), so the T x D x D products with W_k and W_v are never formed:
        q_h . (W_kh x_s + b_kh) = (W_kh^T q_h) . x_s + const  (the constant cancels in softmax)
        sum_s w_hs (W_vh x_s + b_vh) = W_vh (sum_s w_hs x_s) + b_vh   (the weights sum to 1)
    For IF (D = 4096, T = 77) this saves about 5 GFLOP per image.
    """

    def __init__(self, num_heads: int, dim: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"text pooling width {dim} is not divisible by its {num_heads} heads")
        self.num_heads = num_heads
        self.positional_embedding = nn.Parameter(torch.empty(1, dim))
        if self.positional_embedding.device.type != "meta":  # random ops on meta import sympy (2 s)
            nn.init.normal_(self.positional_embedding, std=dim**-0.5)
        self.k_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, D)
        B, T, D = x.shape
        H, d = self.num_heads, D // self.num_heads
        cls = x.mean(dim=1, keepdim=True) + self.positional_embedding.to(x.dtype)  # (B, 1, D)
        tokens = torch.cat([cls, x], dim=1)  # (B, T + 1, D)
        q = self.q_proj(cls).view(B, H, d) * d**-0.5
        u = torch.einsum("bhd,hdD->bhD", q, self.k_proj.weight.view(H, d, D))  # W_k^T q per head
        scores = torch.einsum("bhD,bsD->bhs", u, tokens)
        weights = torch.softmax(scores.float(), dim=-1).to(x.dtype)
        pooled = torch.einsum("bhs,bsD->bhD", weights, tokens)  # attention-weighted tokens per head
        out = torch.einsum("hdD,bhD->bhd", self.v_proj.weight.view(H, d, D), pooled)
        return (out + self.v_proj.bias.view(H, d)).reshape(B, D)


class TextPooling(nn.Module):
    """The pooled-text embedding added to the time embedding (``add_embedding``).

    LayerNorm -> AttentionPooling -> Linear to the embedding width -> LayerNorm.
    """

    def __init__(self, text_dim: int, emb_dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(text_dim)
        self.pool = AttentionPooling(num_heads, text_dim)
        self.proj = nn.Linear(text_dim, emb_dim)
        self.norm2 = nn.LayerNorm(emb_dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:  # (B, T, D_text) -> (B, D_emb)
        return self.norm2(self.proj(self.pool(self.norm1(text))))


class ResnetBlock(nn.Module):
    """Pre-norm ResNet block with time modulation, optionally halving or doubling H and W.

    h = act(GroupNorm(x));  resample h and x;  h = conv1(h)
    scale_shift: h = GroupNorm(h) * (1 + scale) + shift,  (scale, shift) = Linear(emb)
    default:     h = GroupNorm(h + Linear(emb))
    out = (shortcut(x) + conv2(act(h))) / output_scale
    Down-sampling is a 2x2 average pool, up-sampling nearest-neighbour, as in IF.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        groups: int,
        eps: float,
        act: str,
        scale_shift: bool,
        output_scale: float = 1.0,
        resample: str | None = None,
    ):
        super().__init__()
        self.act = _ACTIVATIONS[act]
        self.scale_shift = scale_shift
        self.output_scale = output_scale
        self.resample = resample
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=eps)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        if in_ch != out_ch:
            self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1)
        else:
            self.conv_shortcut = None

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # emb is act(time embedding), computed once per forward: (B, emb_dim)
        h = self.act(self.norm1(x))
        h, x = self._resample(h), self._resample(x)
        h = self.conv1(h)
        t = self.time_emb_proj(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = t.chunk(2, dim=1)
            h = torch.addcmul(shift, self.norm2(h), 1 + scale)
        else:
            h = self.norm2(h + t)
        h = self.conv2(self.act(h))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        out = x + h
        return out if self.output_scale == 1.0 else out / self.output_scale


class SimpleCrossAttention(nn.Module):
    """Pixels attend to the text tokens and to each other in one softmax; residual added.

    h = GroupNorm(x) as N = H*W tokens of width C;  c = GroupNorm_text(context)
    K = [W_add_k c ; W_k h],  V = [W_add_v c ; W_v h]   (text tokens first)
    x + W_out softmax(W_q h K^T / sqrt(d)) V            (per head, through SDPA)
    """

    def __init__(self, channels: int, context_dim: int, head_dim: int, groups: int, eps: float, norm_context: bool):
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"attention width {channels} is not divisible by attention_head_dim {head_dim}")
        self.heads = channels // head_dim
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        # IF normalises the (already projected) text tokens over their channels, in 32 groups.
        self.norm_cross = nn.GroupNorm(32, context_dim, eps=1e-5) if norm_context else None
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.add_k_proj = nn.Linear(context_dim, channels)
        self.add_v_proj = nn.Linear(context_dim, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, heads, N, d)
        B, N, C = t.shape
        return t.view(B, N, self.heads, C // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        # (B, C, H, W) -> (B, N, C); free when x is channels_last.
        h = self.group_norm(x).flatten(2).transpose(1, 2)
        c = context
        if self.norm_cross is not None:
            c = self.norm_cross(c.transpose(1, 2)).transpose(1, 2)
        q = self._split_heads(self.to_q(h))
        k = self._split_heads(torch.cat([self.add_k_proj(c), self.to_k(h)], dim=1))
        v = self._split_heads(torch.cat([self.add_v_proj(c), self.to_v(h)], dim=1))
        o = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        o = self.to_out[0](o.transpose(1, 2).reshape(B, H * W, C))
        return x + o.transpose(1, 2).reshape(B, C, H, W)


class DownBlock(nn.Module):
    """``layers`` x [ResNet (+ attention)], then an optional down-sampling ResNet.

    Returns the output and every intermediate output (the skip connections).
    """

    def __init__(self, in_ch: int, out_ch: int, layers: int, attention: bool, downsample: bool, r: dict, a: dict):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(in_ch if i == 0 else out_ch, out_ch, **r) for i in range(layers))
        if attention:
            self.attentions = nn.ModuleList(SimpleCrossAttention(out_ch, **a) for _ in range(layers))
        else:
            self.attentions = None
        if downsample:
            self.downsamplers = nn.ModuleList([ResnetBlock(out_ch, out_ch, resample="down", **r)])
        else:
            self.downsamplers = None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, list]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, emb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x, emb)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """``layers`` x [concat the last skip, ResNet (+ attention)], then an optional up-sampling ResNet."""

    def __init__(
        self,
        in_ch: int,
        prev_ch: int,
        out_ch: int,
        layers: int,
        attention: bool,
        upsample: bool,
        r: dict,
        a: dict,
    ):
        super().__init__()
        resnets = []
        for i in range(layers):
            skip_ch = in_ch if i == layers - 1 else out_ch
            res_in = prev_ch if i == 0 else out_ch
            resnets.append(ResnetBlock(res_in + skip_ch, out_ch, **r))
        self.resnets = nn.ModuleList(resnets)
        if attention:
            self.attentions = nn.ModuleList(SimpleCrossAttention(out_ch, **a) for _ in range(layers))
        else:
            self.attentions = None
        if upsample:
            self.upsamplers = nn.ModuleList([ResnetBlock(out_ch, out_ch, resample="up", **r)])
        else:
            self.upsamplers = None

    def forward(self, x: torch.Tensor, skips: list, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), emb)
            if self.attentions is not None:
                x = self.attentions[i](x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, emb)
        return x


class MidBlock(nn.Module):
    """ResNet, then ``layers`` x [attention, ResNet], at the lowest resolution."""

    def __init__(self, ch: int, layers: int, r: dict, a: dict):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(ch, ch, **r) for _ in range(layers + 1))
        self.attentions = nn.ModuleList(SimpleCrossAttention(ch, **a) for _ in range(layers))

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, emb)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            x = resnet(attn(x, context), emb)
        return x


# ----------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------


def _per_level(value: Any, n: int, name: str) -> list:
    """An int (same for every level) or a list of n values -> list of n values."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"config {name} has {len(value)} entries but there are {n} down blocks")
        return list(value)
    return [value] * n


def _check_config(config: Mapping[str, Any]) -> dict:
    """Validate a diffusers UNet2DConditionModel config for IF stage 1; return it with defaults."""
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a dict (the contents of unet/config.json), got {type(config).__name__}")
    cfg = dict(config)
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        if key not in cfg:
            raise ValueError(f"config has no {key!r}: is this the unet/config.json of an IF stage-1 checkpoint?")
    for key, expected in _FIXED.items():
        if key in cfg and cfg[key] != expected:
            raise ValueError(f"config {key}={cfg[key]!r} is not supported (IF stage 1 uses {expected!r})")
    n = len(cfg["block_out_channels"])
    if len(cfg["down_block_types"]) != n or len(cfg["up_block_types"]) != n:
        raise ValueError(
            f"config has {n} block_out_channels but {len(cfg['down_block_types'])} down and "
            f"{len(cfg['up_block_types'])} up block types; they must agree"
        )
    for kind, names, allowed in (("down", cfg["down_block_types"], _DOWN_TYPES), ("up", cfg["up_block_types"], _UP_TYPES)):
        for name in names:
            if name not in allowed:
                raise ValueError(f"{kind} block type {name!r} is not an IF stage-1 block; expected one of {sorted(allowed)}")
    mid = cfg.get("mid_block_type", "UNetMidBlock2DSimpleCrossAttn")
    if mid != "UNetMidBlock2DSimpleCrossAttn":
        raise ValueError(f"mid_block_type {mid!r} is not supported; IF stage 1 uses 'UNetMidBlock2DSimpleCrossAttn'")
    act = cfg.get("act_fn", "silu")
    if act not in _ACTIVATIONS:
        raise ValueError(f"act_fn {act!r} is not supported; expected one of {sorted(_ACTIVATIONS)}")
    if cfg.get("time_embedding_act_fn") not in (None, *_ACTIVATIONS):
        raise ValueError(f"time_embedding_act_fn {cfg['time_embedding_act_fn']!r} is not supported")
    if cfg.get("resnet_time_scale_shift", "default") not in ("default", "scale_shift"):
        raise ValueError(f"resnet_time_scale_shift {cfg['resnet_time_scale_shift']!r} must be 'default' or 'scale_shift'")
    if cfg.get("cross_attention_norm") not in (None, "group_norm"):
        raise ValueError(f"cross_attention_norm {cfg['cross_attention_norm']!r} must be null or 'group_norm'")
    if cfg.get("addition_embed_type") not in (None, "text"):
        raise ValueError(f"addition_embed_type {cfg['addition_embed_type']!r} must be null or 'text'")
    hid_type = cfg.get("encoder_hid_dim_type")
    if hid_type is None and cfg.get("encoder_hid_dim") is not None:
        hid_type = "text_proj"  # diffusers' default when only the width is given
    if hid_type not in (None, "text_proj"):
        raise ValueError(f"encoder_hid_dim_type {hid_type!r} must be null or 'text_proj'")
    cfg["encoder_hid_dim_type"] = hid_type
    if cfg.get("norm_num_groups", 32) is None:
        raise ValueError("norm_num_groups=null is not supported; IF uses 32")
    cad = cfg.get("cross_attention_dim", 1280)
    if isinstance(cad, (list, tuple)):
        raise ValueError("a per-block cross_attention_dim list is not supported; IF uses one integer")
    return cfg


def read_config(path: str | os.PathLike) -> dict:
    """Read a UNet config.json (a file, or a folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise FileNotFoundError(f"no UNet config at {p}; expected the unet/config.json of an IF checkpoint")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not valid JSON ({err}); download it again") from err


# ----------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------


class IFUNet(nn.Module):
    """DeepFloyd IF stage-1 UNet: (x_t (B, C_in, H, W), t (B,), text (B, T, D_text)) -> (B, C_out, H, W)."""

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        cfg = _check_config(config)
        self.config = cfg
        ch = list(cfg["block_out_channels"])
        n = len(ch)
        layers = _per_level(cfg.get("layers_per_block", 2), n, "layers_per_block")
        head_dims = _per_level(cfg.get("attention_head_dim", 8), n, "attention_head_dim")
        act = cfg.get("act_fn", "silu")
        groups, eps = cfg.get("norm_num_groups", 32), cfg.get("norm_eps", 1e-5)
        cross_dim = cfg.get("cross_attention_dim", 1280)
        text_dim = cfg.get("encoder_hid_dim") or cross_dim
        self.act = _ACTIVATIONS[act]
        self.flip_sin_to_cos = cfg.get("flip_sin_to_cos", True)
        self.freq_shift = cfg.get("freq_shift", 0)
        self.center_input_sample = cfg.get("center_input_sample", False)
        self.skip_time_act = cfg.get("resnet_skip_time_act", False)
        emb_act = cfg.get("time_embedding_act_fn")
        self.emb_act = _ACTIVATIONS[emb_act] if emb_act else None
        self.num_upsamplers = n - 1
        self.channels_last = True

        emb_dim = cfg.get("time_embedding_dim") or 4 * ch[0]
        k_in, k_out = cfg.get("conv_in_kernel", 3), cfg.get("conv_out_kernel", 3)
        self.conv_in = nn.Conv2d(cfg.get("in_channels", 4), ch[0], k_in, padding=(k_in - 1) // 2)
        self.time_embedding = TimestepMLP(ch[0], emb_dim, act)
        if cfg["encoder_hid_dim_type"] == "text_proj":
            self.encoder_hid_proj = nn.Linear(cfg["encoder_hid_dim"], cross_dim)
        else:
            self.encoder_hid_proj = None
        if cfg.get("addition_embed_type") == "text":
            self.add_embedding = TextPooling(text_dim, emb_dim, cfg.get("addition_embed_type_num_heads", 64))
        else:
            self.add_embedding = None

        r = dict(
            emb_dim=emb_dim,
            groups=groups,
            eps=eps,
            act=act,
            scale_shift=cfg.get("resnet_time_scale_shift", "default") == "scale_shift",
            output_scale=cfg.get("resnet_out_scale_factor", 1.0),
        )
        norm_context = cfg.get("cross_attention_norm") == "group_norm"

        def attn_args(head_dim: int) -> dict:
            # The attention's own GroupNorm keeps eps=1e-5 whatever norm_eps says (as in diffusers).
            return dict(context_dim=cross_dim, head_dim=head_dim, groups=groups, eps=1e-5, norm_context=norm_context)

        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(cfg["down_block_types"]):
            self.down_blocks.append(
                DownBlock(
                    ch[max(i - 1, 0)], ch[i], layers[i], _DOWN_TYPES[kind], i < n - 1, r, attn_args(head_dims[i])
                )
            )
        mid_r = dict(r, output_scale=cfg.get("mid_block_scale_factor", 1.0))
        self.mid_block = MidBlock(ch[-1], 1, mid_r, attn_args(head_dims[-1]))

        self.up_blocks = nn.ModuleList()
        rev, rev_layers = ch[::-1], layers[::-1]
        for i, kind in enumerate(cfg["up_block_types"]):
            # diffusers indexes attention_head_dim *unreversed* here; we keep that so that
            # per-level head sizes build the same network as the checkpoint's.
            self.up_blocks.append(
                UpBlock(
                    in_ch=rev[min(i + 1, n - 1)],
                    prev_ch=rev[max(i - 1, 0)],
                    out_ch=rev[i],
                    layers=rev_layers[i] + 1,
                    attention=_UP_TYPES[kind],
                    upsample=i < n - 1,
                    r=r,
                    a=attn_args(head_dims[i]),
                )
            )
        self.conv_norm_out = nn.GroupNorm(groups, ch[0], eps=eps)
        self.conv_out = nn.Conv2d(ch[0], cfg.get("out_channels", 4), k_out, padding=(k_out - 1) // 2)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Mapping[str, Any], device: str | torch.device | None = None) -> "IFUNet":
        """Build the network of a config.json dict with fresh (random) weights.

        ``device="meta"`` builds it without allocating memory (for counting parameters or
        before loading a checkpoint).
        """
        if device is None:
            return cls(config)
        with torch.device(device):
            return cls(config)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        prefer_fp16: bool | None = None,
    ) -> "IFUNet":
        """Load a diffusers-format IF stage-1 UNet.

        path: a folder with config.json and diffusion_pytorch_model[.fp16].safetensors (the
        ``unet/`` folder of DeepFloyd/IF-I-*-v1.0, or the repo folder holding ``unet/``), or
        a hub repo id such as "DeepFloyd/IF-I-XL-v1.0" (downloaded with ``minidiff.hub``).
        dtype: the parameter dtype (default: the file's). The network is built on the meta
        device and the checkpoint's tensors are assigned to it: no random initialisation,
        and, when dtype and device match the file, no copy (the weights stay memory-mapped).
        """
        folder = _resolve_unet_folder(path)
        config = read_config(folder)
        if prefer_fp16 is None:
            prefer_fp16 = dtype is None or dtype in (torch.float16, torch.bfloat16)
        weights = find_weights_file(folder, prefer_fp16=prefer_fp16)
        model = cls.from_config(config, device="meta")
        state = load_safetensors(weights)
        _check_state_dict(model, state, config, weights)
        device = torch.device(device)
        state = {k: v.to(device=device, dtype=dtype if (dtype and v.is_floating_point()) else v.dtype) for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval().requires_grad_(False)

    # -- forward -----------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int | float, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        """sample (B, C_in, H, W), timestep scalar or (B,), encoder_hidden_states (B, T, D_text).

        Inputs are cast to the weights' dtype; the output (B, C_out, H, W) has that dtype.
        """
        in_ch = self.conv_in.in_channels
        if not isinstance(sample, torch.Tensor) or sample.ndim != 4 or sample.shape[1] != in_ch:
            got = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample).__name__
            raise ValueError(f"sample must be (B, {in_ch}, H, W) for this UNet, got {got}")
        B, _, H, W = sample.shape
        # The text width the network reads: the projection's input, else the cross-attention's.
        text_dim = self.encoder_hid_proj.in_features if self.encoder_hid_proj is not None else self.config.get(
            "cross_attention_dim", 1280
        )
        ehs = encoder_hidden_states
        if not isinstance(ehs, torch.Tensor) or ehs.ndim != 3 or ehs.shape[0] != B or ehs.shape[2] != text_dim:
            got = tuple(ehs.shape) if isinstance(ehs, torch.Tensor) else type(ehs).__name__
            raise ValueError(
                f"encoder_hidden_states must be (B, T, {text_dim}) text embeddings with B={B} (the batch of "
                f"sample), got {got}"
            )
        f = 2**self.num_upsamplers
        if H % f or W % f:
            raise ValueError(f"sample height and width must be multiples of {f} for this UNet, got {H}x{W}")
        dtype = self.dtype
        x = sample.to(dtype)
        text = encoder_hidden_states.to(dtype)
        t = torch.as_tensor(timestep, device=x.device)
        if t.ndim == 0:
            t = t[None]
        if t.ndim != 1 or t.shape[0] not in (1, B):
            raise ValueError(f"timestep must be a scalar or a (B,) tensor with B={B}, got shape {tuple(t.shape)}")
        t = t.expand(B)
        if self.center_input_sample:
            x = 2 * x - 1.0

        # One embedding vector per image: time MLP + pooled text.
        t_emb = timestep_embedding(t, self.conv_in.out_channels, self.flip_sin_to_cos, self.freq_shift)
        emb = self.time_embedding(t_emb.to(dtype))
        if self.add_embedding is not None:
            emb = emb + self.add_embedding(text)
        if self.emb_act is not None:
            emb = self.emb_act(emb)
        # Every ResNet applies act() to emb before its own projection; do it once here.
        block_emb = emb if self.skip_time_act else self.act(emb)
        context = self.encoder_hid_proj(text) if self.encoder_hid_proj is not None else text

        # channels_last lets oneDNN convolutions skip layout reorders and makes the
        # (B, C, H, W) -> (B, H*W, C) token view of attention free.
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            self._conv_weights_channels_last()
        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, block_emb, context)
            skips.extend(block_skips)
        h = self.mid_block(h, block_emb, context)
        for block in self.up_blocks:
            h = block(h, skips, block_emb, context)  # pops its skips from the end
        h = self.conv_out(self.act(self.conv_norm_out(h)))
        return h.contiguous()

    @torch.no_grad()
    def _conv_weights_channels_last(self) -> None:
        """Store 3x3 convolution weights channels_last, once.

        With channels_last activations a convolution otherwise copies its weight into that
        layout on every call (about 4% of a forward). Done at the first forward rather than
        at load, so that loading keeps the weights memory-mapped until they are used.
        """
        if getattr(self, "_weights_channels_last", False):
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module.weight.device.type != "meta":
                module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
        self._weights_channels_last = True

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ----------------------------------------------------------------------------------------
# Loading checkpoints
# ----------------------------------------------------------------------------------------


def _resolve_unet_folder(path: str | os.PathLike) -> Path:
    """A folder with config.json: the given one, its unet/ subfolder, or a hub download."""
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "config.json").is_file():
            return p
        if (p / "unet" / "config.json").is_file():
            return p / "unet"
        raise FileNotFoundError(f"{p} holds no config.json (nor unet/config.json); point at an IF unet folder")
    if p.exists():
        raise ValueError(f"{p} is a file; pass the folder holding config.json and the .safetensors weights")
    text = str(path)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        from minidiff.hub import download_unet  # network only when asked for a repo id

        return Path(download_unet(text))
    raise FileNotFoundError(f"{p} does not exist; pass an IF unet folder or a hub id like DeepFloyd/IF-I-XL-v1.0")


def find_weights_file(folder: str | os.PathLike, prefer_fp16: bool = True) -> Path:
    """The .safetensors weights in a diffusers UNet folder (fp16 variant first if preferred)."""
    folder = Path(folder)
    names = WEIGHT_NAMES if prefer_fp16 else WEIGHT_NAMES[::-1]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    if any(folder.glob("*.bin")):
        raise ValueError(f"{folder} holds only .bin (pickle) weights; minidiff reads .safetensors only")
    raise FileNotFoundError(f"no {' or '.join(WEIGHT_NAMES)} in {folder}; run `minidiff fetch if-i-xl`")


def _describe(config: Mapping[str, Any]) -> str:
    keys = ("block_out_channels", "layers_per_block", "cross_attention_dim", "encoder_hid_dim", "attention_head_dim")
    return ", ".join(f"{k}={config.get(k)!r}" for k in keys)


def _check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], config: Mapping, source: Any) -> None:
    """The shared strict key and shape check (minidiff.checkpoint), describing the UNet by its config."""
    check_state_dict(model, state, source, f"the UNet its config.json describes ({_describe(config)})")
