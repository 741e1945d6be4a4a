"""The DeepFloyd IF UNets (stage 1 and stage 2), written out in plain PyTorch.

IF stage 1 (DeepFloyd, 2023) turns a T5-XXL prompt embedding and a noisy 64x64 RGB image
x_t into a prediction of the noise and of the variance, (B, 6, 64, 64): channels 0..2 are
eps, channels 3..5 are the learned-range variance values (see ``minidiff.schedule``).

IF stage 2 (IF-II-L, IF-II-M) is the same network with a few options set, and upscales
64 -> 256: its input is x_t and the upscaled low-res image side by side (6 channels), and
the low-res image's own noise level s (the "noise augmentation" applied to it) is one more
input, embedded like t and added to emb:
    emb = act(MLP_t(sinusoid(t)) + MLP_s(sinusoid(s)) + TextPooling(T5 tokens))
Its ResNets multiply their output by 0.7071 (they divide by resnet_out_scale_factor and
mid_block_scale_factor, both 1/0.7071), and emb is read as it is (resnet_skip_time_act).

The network is a pixel-space UNet (Ho et al., 2020; Dhariwal & Nichol, 2021, "ADM"):

    t ──> sinusoid ──> MLP ──┐
    T5 tokens ──> attention pooling ──> (+) = emb     (one vector per image, conditions every ResNet)
    T5 tokens ──> Linear (text_proj) ──> tokens        (keys/values of every attention layer)

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

The T5 tokens keep one name from the call down to the attention layers,
``encoder_hidden_states`` (B, T, D): D is the T5 width before ``encoder_hid_proj`` and
``cross_attention_dim`` after it. The blocks are in ``if_blocks.py``.

Everything is built from the checkpoint's own ``config.json`` (diffusers'
``UNet2DConditionModel`` layout, read into ``IFUNetConfig``), so XL, L and M all load, and
every parameter name equals its key in ``diffusion_pytorch_model.safetensors``: loading
(``if_loading.py``) is a strict ``load_state_dict`` with no renaming table.

    unet = IFUNet.from_pretrained("path/to/IF-I-XL-v1.0/unet", dtype=torch.float16)
    out = unet(x_t, t, prompt_embeds)     # (B, 3, 64, 64), (B,), (B, 77, 4096) -> (B, 6, 64, 64)
    unet2 = IFUNet.from_pretrained("path/to/IF-II-L-v1.0/unet", dtype=torch.float16)
    out = unet2(x_t, t, prompt_embeds, noise_level)   # (B, 6, 256, 256), ..., (B,) -> (B, 6, 256, 256)
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn

from minidiff.models.if_blocks import (
    ACTIVATIONS,
    DownBlock,
    MidBlock,
    TextPooling,
    TimestepMLP,
    UpBlock,
    timestep_embedding,
)
from minidiff.models.if_config import DOWN_BLOCKS, UP_BLOCKS, IFUNetConfig
from minidiff.models.if_loading import load_pretrained

__all__ = ["IFUNet", "IFUNetConfig", "check_image_size"]


def check_image_size(height: int, width: int, num_upsamplers: int, name: str = "height and width") -> None:
    """ValueError unless height and width are multiples of 2**num_upsamplers (every level but the
    lowest halves them, and the up path must land on the skips' sizes)."""
    f = 2**num_upsamplers
    if height % f or width % f:
        raise ValueError(f"{name} must be multiples of {f} for this UNet, got {height}x{width}")


class IFUNet(nn.Module):
    """DeepFloyd IF UNet: (sample (B, C_in, H, W), timestep (B,), encoder_hidden_states (B, T, D)
    [, noise_level (B,) for stage 2]) -> (B, C_out, H, W)."""

    def __init__(self, config: IFUNetConfig | Mapping[str, Any]):
        super().__init__()
        if not isinstance(config, IFUNetConfig):
            config = IFUNetConfig.from_dict(config)
        self.config = c = config
        ch = c.block_out_channels
        self.act = ACTIVATIONS[c.act_fn]
        self.emb_act = ACTIVATIONS[c.time_embedding_act_fn] if c.time_embedding_act_fn else None
        self.num_upsamplers = len(ch) - 1

        self.conv_in = nn.Conv2d(c.in_channels, ch[0], c.conv_in_kernel, padding=(c.conv_in_kernel - 1) // 2)
        self.time_embedding = TimestepMLP(ch[0], c.emb_dim, c.act_fn)
        # stage 2: MLP_s of the low-res image's noise level (see _noise_level_embedding)
        self.class_embedding = TimestepMLP(ch[0], c.emb_dim, c.act_fn) if c.takes_noise_level else None
        text_proj = c.encoder_hid_dim_type == "text_proj"
        self.encoder_hid_proj = nn.Linear(c.encoder_hid_dim, c.cross_attention_dim) if text_proj else None
        pooled = c.addition_embed_type == "text"
        self.add_embedding = TextPooling(c.text_dim, c.emb_dim, c.addition_embed_type_num_heads) if pooled else None

        self.down_blocks = nn.ModuleList(self._down_block(i) for i in range(len(ch)))
        mid_attention = self._attention_kwargs(-1, c.mid_block_only_cross_attention)
        self.mid_block = MidBlock(ch[-1], 1, self._resnet_kwargs(c.mid_block_scale_factor), mid_attention)
        self.up_blocks = nn.ModuleList(self._up_block(i) for i in range(len(ch)))
        self.conv_norm_out = nn.GroupNorm(c.norm_num_groups, ch[0], eps=c.norm_eps)
        self.conv_out = nn.Conv2d(ch[0], c.out_channels, c.conv_out_kernel, padding=(c.conv_out_kernel - 1) // 2)

    # -- construction ------------------------------------------------------------------

    def _resnet_kwargs(self, output_scale: float) -> dict:
        c = self.config
        scale_shift = c.resnet_time_scale_shift == "scale_shift"
        return dict(emb_dim=c.emb_dim, groups=c.norm_num_groups, eps=c.norm_eps, act=c.act_fn,
                    scale_shift=scale_shift, output_scale=output_scale)

    def _attention_kwargs(self, level: int, only_cross: bool) -> dict:
        c = self.config
        # The attention's own GroupNorm keeps eps=1e-5 whatever norm_eps says (as in diffusers).
        return dict(context_dim=c.cross_attention_dim, head_dim=c.attention_head_dim[level], groups=c.norm_num_groups,
                    eps=1e-5, norm_context=c.cross_attention_norm == "group_norm", only_cross=only_cross)

    def _down_block(self, i: int) -> DownBlock:
        """Level i, from ch[i - 1] to ch[i] channels; every level but the lowest halves H and W."""
        c, ch = self.config, self.config.block_out_channels
        has_attention = DOWN_BLOCKS[c.down_block_types[i]]
        attention = self._attention_kwargs(i, c.only_cross_attention[i]) if has_attention else None
        return DownBlock(ch[max(i - 1, 0)], ch[i], c.layers_per_block[i], downsample=i < len(ch) - 1,
                         resnet=self._resnet_kwargs(c.resnet_out_scale_factor), attention=attention)

    def _up_block(self, i: int) -> UpBlock:
        """Up level i counts from the lowest resolution; it takes one skip more than its down level made."""
        c, rev = self.config, self.config.block_out_channels[::-1]
        n = len(rev)
        # diffusers indexes attention_head_dim *unreversed* here (only_cross_attention reversed);
        # we keep that so that per-level head sizes build the same network as the checkpoint's.
        only_cross = c.only_cross_attention[::-1][i]
        attention = self._attention_kwargs(i, only_cross) if UP_BLOCKS[c.up_block_types[i]] else None
        return UpBlock(in_ch=rev[min(i + 1, n - 1)], prev_ch=rev[max(i - 1, 0)], out_ch=rev[i],
                       layers=c.layers_per_block[::-1][i] + 1, upsample=i < n - 1,
                       resnet=self._resnet_kwargs(c.resnet_out_scale_factor), attention=attention)

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | IFUNetConfig, device: str | torch.device | None = None
    ) -> "IFUNet":
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
        cls, path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
    ) -> "IFUNet":
        """Load a diffusers-format IF UNet, stage 1 or 2 (see ``if_loading.load_pretrained``).

        path: a folder with config.json and diffusion_pytorch_model[.fp16].safetensors (the
        ``unet/`` folder of DeepFloyd/IF-I-*-v1.0 or IF-II-*-v1.0, or the repo folder holding
        ``unet/``), or a hub repo id such as "DeepFloyd/IF-I-XL-v1.0" (downloaded with ``minidiff.hub``).
        dtype: the parameter dtype (default: the file's; the fp16 file is preferred unless
        float32 is asked for). Returned in eval mode with gradients off.
        """
        return load_pretrained(cls, path, dtype, device)

    # -- forward -----------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        encoder_hidden_states: torch.Tensor,
        noise_level: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """sample (B, C_in, H, W), timestep scalar or (B,), encoder_hidden_states (B, T, D_text),
        noise_level scalar or (B,) in [0, 999]: the low-res image's noise level (stage 2 only).

        Inputs are cast to the weights' dtype; the output (B, C_out, H, W) has that dtype.
        """
        t = self._check_inputs(sample, timestep, encoder_hidden_states)
        emb_s = self._noise_level_embedding(noise_level, t.shape[0], sample.device)  # stage 2; None for stage 1
        x, encoder_hidden_states = sample.to(self.dtype), encoder_hidden_states.to(self.dtype)
        if self.config.center_input_sample:
            x = 2 * x - 1.0
        emb = self._embedding(t, encoder_hidden_states, emb_s)  # (B, emb_dim), read by every ResNet
        if self.encoder_hid_proj is not None:
            encoder_hidden_states = self.encoder_hid_proj(encoder_hidden_states)  # (B, T, cross_attention_dim)

        h = self.conv_in(self._channels_last(x))
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, emb, encoder_hidden_states)
            skips.extend(block_skips)
        h = self.mid_block(h, emb, encoder_hidden_states)
        for block in self.up_blocks:
            h = block(h, skips, emb, encoder_hidden_states)  # pops its skips from the end
        return self.conv_out(self.act(self.conv_norm_out(h))).contiguous()

    def _embedding(
        self, t: torch.Tensor, encoder_hidden_states: torch.Tensor, emb_s: torch.Tensor | None
    ) -> torch.Tensor:
        """emb = act(MLP_t(sinusoid(t)) [+ emb_s] + TextPooling(encoder_hidden_states)).

        t (B,), encoder_hidden_states (B, T, D), emb_s (B, emb_dim) the embedded noise level of
        stage 2 (``_noise_level_embedding``) or None -> (B, emb_dim).
        """
        c = self.config
        t_emb = timestep_embedding(t, self.conv_in.out_channels, c.flip_sin_to_cos, c.freq_shift)
        emb = self.time_embedding(t_emb.to(self.dtype))
        if emb_s is not None:
            emb = emb + emb_s
        if self.add_embedding is not None:
            emb = emb + self.add_embedding(encoder_hidden_states)
        if self.emb_act is not None:
            emb = self.emb_act(emb)
        # Every ResNet applies act() to emb before its own projection; done once here.
        return emb if c.resnet_skip_time_act else self.act(emb)

    def _check_inputs(self, sample: Any, timestep: Any, encoder_hidden_states: Any) -> torch.Tensor:
        """ValueError for inputs this UNet cannot take; the timesteps as a (B,) tensor."""
        in_ch = self.conv_in.in_channels
        if not isinstance(sample, torch.Tensor) or sample.ndim != 4 or sample.shape[1] != in_ch:
            got = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample).__name__
            raise ValueError(f"sample must be (B, {in_ch}, H, W) for this UNet, got {got}")
        B, _, H, W = sample.shape
        ehs, text_dim = encoder_hidden_states, self.config.text_dim
        if not isinstance(ehs, torch.Tensor) or ehs.ndim != 3 or ehs.shape[0] != B or ehs.shape[2] != text_dim:
            got = tuple(ehs.shape) if isinstance(ehs, torch.Tensor) else type(ehs).__name__
            raise ValueError(
                f"encoder_hidden_states must be (B, T, {text_dim}) text embeddings with B={B} (the batch of "
                f"sample), got {got}"
            )
        check_image_size(H, W, self.num_upsamplers, "sample height and width")
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 0:
            t = t[None]
        if t.ndim != 1 or t.shape[0] not in (1, B):
            raise ValueError(f"timestep must be a scalar or a (B,) tensor with B={B}, got shape {tuple(t.shape)}")
        return t.expand(B)

    def _noise_level_embedding(self, noise_level: Any, batch: int, device: torch.device) -> torch.Tensor | None:
        """Stage 2's noise augmentation as the UNet reads it: the noise level s of the upscaled
        low-res image (minidiff.if_pipeline.augment_low_res) is embedded like t, by its own MLP,

            emb_s = MLP_s(sinusoid(s)),   s in [0, 999]       (B,) -> (B, emb_dim)

        and added to the time embedding (diffusers' class_embed_type "timestep"). A stage-1 UNet
        has no MLP_s and takes no noise level: None. ValueError for a missing or bad noise level.
        """
        if self.class_embedding is None:
            if noise_level is not None:
                raise ValueError(
                    "noise_level is only taken by a stage-2 (super-resolution) UNet; this one is stage 1 "
                    "(its config has no class_embed_type 'timestep'): call it as unet(x_t, t, text)"
                )
            return None
        if noise_level is None:
            raise ValueError(
                "this stage-2 UNet needs noise_level, the noise level (0..999) of the upscaled low-res image: "
                "unet(x_t, t, text, noise_level)"
            )
        s = torch.as_tensor(noise_level, device=device)
        s = s[None] if s.ndim == 0 else s
        if s.ndim != 1 or s.shape[0] not in (1, batch):
            raise ValueError(
                f"noise_level must be a scalar or a (B,) tensor with B={batch}, got shape {tuple(s.shape)}"
            )
        if s.device.type != "meta" and bool((s < 0).any() or (s > 999).any()):
            raise ValueError(f"noise_level must lie in [0, 999], got {s.tolist()}")
        c = self.config
        s_emb = timestep_embedding(s.expand(batch), self.conv_in.out_channels, c.flip_sin_to_cos, c.freq_shift)
        return self.class_embedding(s_emb.to(self.dtype))

    def _channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """x in channels_last layout, and (once) every convolution weight too.

        channels_last lets oneDNN convolutions skip layout reorders and makes the
        (B, C, H, W) -> (B, H*W, C) token view of attention free. A convolution would otherwise
        copy its weight into that layout on every call (about 4% of a forward); the weights
        are converted at the first forward rather than at load, so that loading keeps them
        memory-mapped until they are used.
        """
        if not getattr(self, "_weights_channels_last", False):
            with torch.no_grad():
                for module in self.modules():
                    if isinstance(module, nn.Conv2d) and module.weight.device.type != "meta":
                        module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
            self._weights_channels_last = True
        return x.contiguous(memory_format=torch.channels_last)
