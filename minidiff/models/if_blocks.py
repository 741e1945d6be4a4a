"""The building blocks of the DeepFloyd IF UNets, stages 1 and 2 (assembled in ``if_unet.py``).

Attribute names follow diffusers' ``UNet2DConditionModel``, so that every parameter name
equals its key in the released checkpoint. Shapes: images (B, C, H, W); the text tokens
``encoder_hidden_states`` (B, T, D); the per-image embedding ``emb`` (B, emb_dim).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "timestep_embedding",
    "TimestepMLP",
    "AttentionPooling",
    "FoldedAttentionPooling",
    "TextPooling",
    "ResnetBlock",
    "SimpleCrossAttention",
    "DownBlock",
    "UpBlock",
    "MidBlock",
]

ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu, "swish": F.silu}


# ----------------------------------------------------------------------------------------
# The per-image embedding: time and pooled text
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
    """Linear -> act -> Linear on a sinusoidal embedding: (B, in_dim) -> (B, dim).

    Keys ``time_embedding.linear_1/2`` for t, and ``class_embedding.linear_1/2`` for the
    noise level of a stage-2 UNet's low-res image (same form, its own weights).
    """

    def __init__(self, in_dim: int, dim: int, act: str):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)
        self.act = ACTIVATIONS[act]

    def forward(self, t_emb: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(t_emb)))


class AttentionPooling(nn.Module):
    """Pool T tokens into one vector with multi-head attention from a "class token" query.

    The plain formula (IF's ``AttentionPooling``, as in diffusers): the query is the mean
    token plus a learned position, cls = mean_s(x_s) + p, and it attends to [cls, x_1 .. x_T]:
        q_h = W_qh cls + b_qh,   k_hs = W_kh x_s + b_kh,   v_hs = W_vh x_s + b_vh
        pooled_h = sum_s softmax_s(q_h . k_hs / sqrt(d)) v_hs,   out = [pooled_1 .. pooled_H]
    The network runs ``FoldedAttentionPooling``, the same map computed with less work.
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

    def _cls_and_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) -> the query token cls (B, 1, D) and the attended tokens [cls, x] (B, T + 1, D)."""
        cls = x.mean(dim=1, keepdim=True) + self.positional_embedding.to(x.dtype)
        return cls, torch.cat([cls, x], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, D)
        B, T, D = x.shape
        H, d = self.num_heads, D // self.num_heads
        cls, tokens = self._cls_and_tokens(x)
        q = self.q_proj(cls).view(B, 1, H, d).transpose(1, 2)  # (B, H, 1, d)
        k = self.k_proj(tokens).view(B, T + 1, H, d).transpose(1, 2)  # (B, H, T + 1, d)
        v = self.v_proj(tokens).view(B, T + 1, H, d).transpose(1, 2)
        weights = torch.softmax((q @ k.transpose(-1, -2) * d**-0.5).float(), dim=-1).to(x.dtype)
        return (weights @ v).reshape(B, D)  # (B, H, 1, d) -> (B, D)


class FoldedAttentionPooling(AttentionPooling):
    """``AttentionPooling`` with the key and value projections folded: same parameters, same output.

    With a single query the T x D x D products with W_k and W_v need never be formed
    (exact up to float rounding):
        q_h . (W_kh x_s + b_kh) = (W_kh^T q_h) . x_s + const  (the constant cancels in softmax)
        sum_s w_hs (W_vh x_s + b_vh) = W_vh (sum_s w_hs x_s) + b_vh   (the weights sum to 1)
    For IF (D = 4096, T = 77) this saves about 5 GFLOP per image.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, D)
        B, T, D = x.shape
        H, d = self.num_heads, D // self.num_heads
        cls, tokens = self._cls_and_tokens(x)
        q = self.q_proj(cls).view(B, H, d) * d**-0.5
        u = torch.einsum("bhd,hdD->bhD", q, self.k_proj.weight.view(H, d, D))  # W_k^T q per head
        scores = torch.einsum("bhD,bsD->bhs", u, tokens)
        weights = torch.softmax(scores.float(), dim=-1).to(x.dtype)
        pooled = torch.einsum("bhs,bsD->bhD", weights, tokens)  # attention-weighted tokens per head
        out = torch.einsum("hdD,bhD->bhd", self.v_proj.weight.view(H, d, D), pooled)
        return (out + self.v_proj.bias.view(H, d)).reshape(B, D)


class TextPooling(nn.Module):
    """The pooled-text embedding added to the time embedding (``add_embedding``).

    LayerNorm -> attention pooling -> Linear to the embedding width -> LayerNorm.
    """

    def __init__(self, text_dim: int, emb_dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(text_dim)
        self.pool = FoldedAttentionPooling(num_heads, text_dim)
        self.proj = nn.Linear(text_dim, emb_dim)
        self.norm2 = nn.LayerNorm(emb_dim)

    def forward(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:  # (B, T, D_text) -> (B, emb_dim)
        return self.norm2(self.proj(self.pool(self.norm1(encoder_hidden_states))))


# ----------------------------------------------------------------------------------------
# ResNet and attention layers
# ----------------------------------------------------------------------------------------


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
        self.act = ACTIVATIONS[act]
        self.scale_shift = scale_shift
        self.output_scale = output_scale
        self.resample = resample
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=eps)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

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

    h = GroupNorm(x) as N = H*W tokens of width C;  c = GroupNorm_text(encoder_hidden_states)
    K = [W_add_k c ; W_k h],  V = [W_add_v c ; W_v h]   (text tokens first)
    x + W_out softmax(W_q h K^T / sqrt(d)) V            (per head, through SDPA)
    only_cross: K = W_add_k c, V = W_add_v c (the pixels attend to the text only; no W_k, W_v).
    """

    def __init__(
        self,
        channels: int,
        context_dim: int,
        head_dim: int,
        groups: int,
        eps: float,
        norm_context: bool,
        only_cross: bool = False,
    ):
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"attention width {channels} is not divisible by attention_head_dim {head_dim}")
        self.heads = channels // head_dim
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        # IF normalises the (already projected) text tokens over their channels, in 32 groups.
        self.norm_cross = nn.GroupNorm(32, context_dim, eps=1e-5) if norm_context else None
        self.to_q = nn.Linear(channels, channels)
        self.to_k = None if only_cross else nn.Linear(channels, channels)
        self.to_v = None if only_cross else nn.Linear(channels, channels)
        self.add_k_proj = nn.Linear(context_dim, channels)
        self.add_v_proj = nn.Linear(context_dim, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, heads, N, d)
        B, N, C = t.shape
        return t.view(B, N, self.heads, C // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        # (B, C, H, W) -> (B, N, C); free when x is channels_last.
        h = self.group_norm(x).flatten(2).transpose(1, 2)
        c = encoder_hidden_states  # (B, T, context_dim), normalised over its channels when configured
        if self.norm_cross is not None:
            c = self.norm_cross(c.transpose(1, 2)).transpose(1, 2)
        q = self._split_heads(self.to_q(h))
        k, v = self.add_k_proj(c), self.add_v_proj(c)  # (B, T, C)
        if self.to_k is not None:  # the pixels are keys and values too, after the text tokens
            k, v = torch.cat([k, self.to_k(h)], dim=1), torch.cat([v, self.to_v(h)], dim=1)
        k, v = self._split_heads(k), self._split_heads(v)
        o = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        o = self.to_out[0](o.transpose(1, 2).reshape(B, H * W, C))
        return x + o.transpose(1, 2).reshape(B, C, H, W)


# ----------------------------------------------------------------------------------------
# The UNet's levels
# ----------------------------------------------------------------------------------------


def _attentions(channels: int, layers: int, attention: dict | None) -> nn.ModuleList | None:
    """``layers`` attention layers of the given kwargs, or None for a level without attention."""
    return nn.ModuleList(SimpleCrossAttention(channels, **attention) for _ in range(layers)) if attention else None


class DownBlock(nn.Module):
    """``layers`` x [ResNet (+ attention)], then an optional down-sampling ResNet.

    Returns the output and every intermediate output (the skip connections).
    resnet / attention: the keyword arguments of every ``ResnetBlock`` / ``SimpleCrossAttention``
    (attention None: no attention at this level).
    """

    def __init__(self, in_ch: int, out_ch: int, layers: int, downsample: bool, resnet: dict, attention: dict | None):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(in_ch if i == 0 else out_ch, out_ch, **resnet) for i in range(layers))
        self.attentions = _attentions(out_ch, layers, attention)
        self.downsamplers = None
        if downsample:
            self.downsamplers = nn.ModuleList([ResnetBlock(out_ch, out_ch, resample="down", **resnet)])

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, emb)
            if self.attentions is not None:
                x = self.attentions[i](x, encoder_hidden_states)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x, emb)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """``layers`` x [concat the last skip, ResNet (+ attention)], then an optional up-sampling ResNet.

    in_ch: the channels of the down level below this one (its skip arrives last);
    prev_ch: the channels of the block before this one (the first ResNet's input).
    """

    def __init__(
        self,
        in_ch: int,
        prev_ch: int,
        out_ch: int,
        layers: int,
        upsample: bool,
        resnet: dict,
        attention: dict | None,
    ):
        super().__init__()
        resnets = []
        for i in range(layers):
            skip_ch = in_ch if i == layers - 1 else out_ch
            res_in = prev_ch if i == 0 else out_ch
            resnets.append(ResnetBlock(res_in + skip_ch, out_ch, **resnet))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = _attentions(out_ch, layers, attention)
        self.upsamplers = None
        if upsample:
            self.upsamplers = nn.ModuleList([ResnetBlock(out_ch, out_ch, resample="up", **resnet)])

    def forward(
        self, x: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), emb)  # pops this level's skips from the end
            if self.attentions is not None:
                x = self.attentions[i](x, encoder_hidden_states)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, emb)
        return x


class MidBlock(nn.Module):
    """ResNet, then ``layers`` x [attention, ResNet], at the lowest resolution."""

    def __init__(self, ch: int, layers: int, resnet: dict, attention: dict):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(ch, ch, **resnet) for _ in range(layers + 1))
        self.attentions = _attentions(ch, layers, attention)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, emb)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            x = resnet(attn(x, encoder_hidden_states), emb)
        return x
