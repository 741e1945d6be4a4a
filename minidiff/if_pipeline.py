"""DeepFloyd IF as a minidiff model: text-to-64x64 sampling (stage 1) and 64 -> 256 upscaling (stage 2).

``IFDenoiser`` wraps the UNet into the model signature every guidance rule and sampler of
minidiff speaks, ``model(x_t, t, cond) -> output``, the condition being the T5 prompt
embeddings ``prompt_embeds`` (B, 77, 4096), which the UNet reads as its
``encoder_hidden_states``. The UNet may hold fp16 or bf16 weights (the released
checkpoints are fp16) while the sampling state x_t stays float32: the adapter casts on the
way in and out, so the schedule arithmetic (sqrt(ab_t), the variance interpolation) never
runs in half precision.

``if_stage1`` is the course's sampling loop (strided DDPM from t = 990, stride 30, CFG with
scale 7, the null prompt "" as the unconditional branch):

    x_T ~ N(0, I)                               (B, 3, 64, 64)
    for (t, t') in [(990, 960), ..., (30, 0)]:
        eps, v = eps_u + 7 (eps_c - eps_u), v_c  (one batched UNet call)
        x_t' = DDPM step with IF's learned-range variance

``if_stage2`` upscales with IF-II-L/M as diffusers' ``IFSuperResolutionPipeline`` does
(the same generator gives the same image). The low-res image is upscaled bilinearly and
noised to ``noise_level`` (``augment_low_res``, noise augmentation: the stage-2 UNet was
trained on noised low-res inputs and is told how noisy, ``IFUNet._noise_level_embedding``),
and every UNet call sees it beside x_t:

    up = sqrt(ab_s) bilinear(low_res) + sqrt(1 - ab_s) n,   s = noise_level (250)
    x_T ~ N(0, I)                               (B, 3, 256, 256)
    for t in [980, 960, ..., 20, 0], then t' = -1 (the clean image):
        eps, v = CFG (scale 4) of UNet([x_t, up], t, text, s)
        x_t' = DDPM step, x0_hat dynamically thresholded (ratio 0.95, max 1.0)

With ``views`` (visual anagrams, minidiff.guidance.anagram), stage 2 keeps the illusion:
each view V_k is applied to x_t and to the upscaled image alike, the UNet is guided with
prompt k on that pair, and the predictions are mapped back with V_k^-1 and averaged.
With ``hybrid`` (hybrid images, minidiff.guidance.hybrid), stage 2 splits eps into the
same two frequency bands, with the Gaussian widened by the upscaling factor (sigma 2 at
64 px is sigma 8 at 256 px), so the far and near readings survive the upscale.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from minidiff.betas import cosine_betas
from minidiff.checks import finite_tensor, image_batch, integer, invertible_view, torch_generator
from minidiff.guidance import anagram, cfg, hybrid as hybrid_rule
from minidiff.models.if_config import IFUNetConfig
from minidiff.models.if_unet import check_image_size
from minidiff.samplers import Callback, iterative_denoise
from minidiff.schedule import DDPMSchedule, strided_timesteps
from minidiff.views import View, get_view

__all__ = [
    "IFDenoiser",
    "IFUpscaleDenoiser",
    "if_stage1",
    "if_stage2",
    "stage2_schedule",
    "noise_augmentation_schedule",
    "augment_low_res",
    "GUIDANCE_SCALE",
    "STAGE2_GUIDANCE_SCALE",
    "STAGE2_NOISE_LEVEL",
]

GUIDANCE_SCALE = 7.0  # the course's classifier-free guidance scale for IF stage 1
STAGE2_GUIDANCE_SCALE = 4.0  # IF stage 2's (diffusers' IFSuperResolutionPipeline default)
STAGE2_NOISE_LEVEL = 250  # the noise level of the upscaled low-res image (IF's aug_level 0.25)
MAX_SIDE = 2048  # the largest height or width sampled: 8x stage 2's 256, far below an allocator's failure


class IFDenoiser:
    """The IF UNet as ``model(x_t, t, prompt_embeds)``: x_t (B, 3, H, W), t (B,), prompt_embeds (B, 77, D).

    Inputs are cast to the UNet's dtype and device, the output (B, 6, H, W) back to x_t's
    dtype and device, so fp16 weights serve a float32 sampling state.
    """

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, prompt_embeds: torch.Tensor) -> torch.Tensor:
        return self._unet_call(x_t, t, prompt_embeds)

    def _unet_call(self, x_in: torch.Tensor, t: torch.Tensor, prompt_embeds: torch.Tensor, *extra) -> torch.Tensor:
        """unet(x_in, t, prompt_embeds, *extra) in the UNet's dtype and device; the output in x_in's."""
        dtype, device = self.dtype, self.device
        t = torch.as_tensor(t, device=device)
        out = self.unet(x_in.to(device=device, dtype=dtype), t, prompt_embeds.to(device=device, dtype=dtype), *extra)
        return out.to(device=x_in.device, dtype=x_in.dtype)


def _as_batch(embeds: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(embeds, torch.Tensor) or embeds.ndim not in (2, 3):
        shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise ValueError(f"{name} must be T5 embeddings (B, 77, D) or (77, D), got {shape}")
    return embeds if embeds.ndim == 3 else embeds[None]


def _check_embeds(prompt_embeds: torch.Tensor, negative_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as batches, (B, 77, D) and (1 or B, 77, D); ValueError unless they match."""
    prompt_embeds = _as_batch(prompt_embeds, "prompt_embeds")
    negative_embeds = _as_batch(negative_embeds, "negative_embeds")
    batch, n_tokens, dim = prompt_embeds.shape
    if negative_embeds.shape[1:] != prompt_embeds.shape[1:] or negative_embeds.shape[0] not in (1, batch):
        raise ValueError(
            f"negative_embeds must be (1 or {batch}, {n_tokens}, {dim}) like prompt_embeds "
            f"{tuple(prompt_embeds.shape)}, got {tuple(negative_embeds.shape)}; "
            "embed the empty prompt \"\" with the same T5"
        )
    return prompt_embeds, negative_embeds


def _check_size(unet: torch.nn.Module, height: object, width: object) -> tuple[int, int]:
    """(height, width) as ints in [1, MAX_SIDE] that the UNet's levels can halve, else ValueError."""
    height = integer(height, "height", minimum=1, maximum=MAX_SIDE)
    width = integer(width, "width", minimum=1, maximum=MAX_SIDE)
    check_image_size(height, width, getattr(unet, "num_upsamplers", 0))
    return height, width


def _check_stage1(unet, prompt_embeds, negative_embeds, generator, schedule, height, width, x_T) -> tuple:
    """Everything ``if_stage1`` takes but guidance_scale (cfg checks it), checked before its first
    UNet call; returns (prompt_embeds, negative_embeds, schedule, (height, width))."""
    if not isinstance(unet, torch.nn.Module) or not isinstance(getattr(unet, "config", None), IFUNetConfig):
        raise ValueError(f"unet must be an IF stage-1 UNet (minidiff.models.if_unet.IFUNet, e.g. "
                         f"IFUNet.from_pretrained(folder)), got a {type(unet).__name__}")
    if unet.config.takes_noise_level:
        raise ValueError("unet is an IF stage-2 (super-resolution) UNet; if_stage1 needs a stage-1 one "
                         "(IF-I-XL/L/M), and minidiff.if_stage2 takes this one")
    prompt_embeds, negative_embeds = _check_embeds(prompt_embeds, negative_embeds)
    torch_generator(generator)
    schedule = schedule if schedule is not None else DDPMSchedule.deepfloyd()
    if not isinstance(schedule, DDPMSchedule):
        raise ValueError(f"schedule must be a DDPMSchedule (IF is a DDPM model), got {schedule!r:.60}")
    if x_T is None:
        return prompt_embeds, negative_embeds, schedule, _check_size(unet, height, width)
    image_batch(x_T, "x_T", channels=unet.config.in_channels)
    finite_tensor(x_T, "x_T")
    if x_T.shape[0] != prompt_embeds.shape[0]:
        raise ValueError(f"x_T has batch {x_T.shape[0]} but there are {prompt_embeds.shape[0]} prompt embeddings")
    return prompt_embeds, negative_embeds, schedule, tuple(x_T.shape[-2:])


@torch.no_grad()
def if_stage1(
    unet: torch.nn.Module,
    prompt_embeds: torch.Tensor,
    negative_embeds: torch.Tensor,
    guidance_scale: float = GUIDANCE_SCALE,
    timesteps: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    schedule: DDPMSchedule | None = None,
    height: int = 64,
    width: int = 64,
    x_T: torch.Tensor | None = None,
    callback: Callback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Sample images from prompt embeddings with IF stage 1 and classifier-free guidance.

    prompt_embeds (B, 77, D): one image per row. negative_embeds (1 or B, 77, D): the
    unconditional branch, usually the embedding of the empty prompt "".
    timesteps: strided DDPM timesteps, default [990, 960, ..., 30, 0] (the course's).
    x_T: the starting noise (B, 3, H, W); drawn with ``generator`` when not given.
    Returns float32 images (B, 3, H, W) clipped to [-1, 1].
    """
    prompt_embeds, negative_embeds, schedule, (height, width) = _check_stage1(
        unet, prompt_embeds, negative_embeds, generator, schedule, height, width, x_T)
    den = cfg(IFDenoiser(unet), prompt_embeds.float(), negative_embeds.float(), guidance_scale)
    if x_T is None:
        x_T = torch.randn(len(prompt_embeds), unet.config.in_channels, height, width, generator=generator)
    timesteps = timesteps if timesteps is not None else strided_timesteps(990, 30)
    x = iterative_denoise(den, x_T.float(), schedule, timesteps, generator=generator, callback=callback,
                          progress=progress)
    return x.clamp(-1.0, 1.0)


# ----------------------------------------------------------------------------------------
# Stage 2: 64 -> 256
# ----------------------------------------------------------------------------------------


class IFUpscaleDenoiser(IFDenoiser):
    """The stage-2 UNet as ``model(x_t, t, prompt_embeds)``, with the noised upscaled image fixed.

    x_t (N, 3, H, W) with N a multiple of B (guidance stacks copies of the batch), upscaled
    (B, 3, H, W), noise_level in [0, 999]: the UNet sees [x_t, upscaled] (N, 6, H, W) and the
    noise level (N,) of the upscaled image.
    """

    def __init__(self, unet: torch.nn.Module, upscaled: torch.Tensor, noise_level: int):
        super().__init__(unet)
        self.upscaled = upscaled
        self.noise_level = noise_level

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, prompt_embeds: torch.Tensor) -> torch.Tensor:
        copies = x_t.shape[0] // self.upscaled.shape[0]
        x_in = torch.cat([x_t, self.upscaled.to(x_t.dtype).repeat(copies, 1, 1, 1)], dim=1)
        level = torch.full((x_t.shape[0],), self.noise_level, device=self.device)
        return self._unet_call(x_in, t, prompt_embeds, level)


def stage2_schedule() -> DDPMSchedule:
    """IF stage 2's sampling schedule: IF's cosine DDPM with dynamic thresholding (ratio 0.95, max 1.0)."""
    return DDPMSchedule(cosine_betas(1000), thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.0)


def noise_augmentation_schedule() -> DDPMSchedule:
    """The schedule that noises stage 2's upscaled low-res image: IF's cosine DDPM, 1000 steps
    (diffusers' ``image_noising_scheduler``), apart from the sampling schedule ``stage2_schedule``."""
    return DDPMSchedule(cosine_betas(1000))


def augment_low_res(low_res: torch.Tensor, height: int, width: int, noise_level: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Stage 2's noise augmentation (Ho et al., 2022, cascaded diffusion; DeepFloyd IF):

        up = sqrt(ab_s) bilinear(low_res) + sqrt(1 - ab_s) n,   n ~ N(0, I),  s = noise_level

    ab_s from ``noise_augmentation_schedule``; bilinear with align_corners=True to (height,
    width), as IFSuperResolutionPipeline. The stage-2 UNet was trained on low-res images noised
    so and is told s (``IFUNet._noise_level_embedding``), so it does not copy their artefacts.
    """
    up = F.interpolate(low_res.float(), (height, width), mode="bilinear", align_corners=True)
    n = torch.randn(up.shape, generator=generator)
    return noise_augmentation_schedule().add_noise(up, n, noise_level)


def _check_stage2(unet, low_res, prompt_embeds, negative_embeds, noise_level, height, width, generator,
                  views, hybrid) -> tuple:
    """Everything ``if_stage2`` takes but guidance_scale and the hybrid kernel (the guidance rule
    checks them), before its first draw; returns (prompt_embeds, negative_embeds, noise_level,
    (height, width), views as Views or None)."""
    if not isinstance(unet, torch.nn.Module) or not getattr(getattr(unet, "config", None), "takes_noise_level", False):
        raise ValueError(
            f"unet must be an IF stage-2 IFUNet (IF-II-L/M, whose config has class_embed_type 'timestep'), "
            f"got {type(unet).__name__}"
        )
    prompt_embeds, negative_embeds = _check_embeds(prompt_embeds, negative_embeds)
    n_prompts = prompt_embeds.shape[0]
    if views is not None and hybrid is not None:
        raise ValueError("views and hybrid are two different guidance rules: give one of them")
    if hybrid is not None and (not isinstance(hybrid, (tuple, list)) or len(hybrid) != 2):
        raise ValueError(f"hybrid must be (kernel_size, sigma), got {hybrid!r:.80}")
    if hybrid is not None and n_prompts != 2:
        raise ValueError(f"hybrid: prompt_embeds must hold two prompts (far, near), got {n_prompts}")
    views = None if views is None else [get_view(v) if isinstance(v, str) else invertible_view(v) for v in views]
    if views is not None and len(views) != n_prompts:
        raise ValueError(f"views: one prompt embedding per view, got {len(views)} views and {n_prompts} prompts")
    image_batch(low_res, "low_res", channels=3)
    finite_tensor(low_res, "low_res")
    batch = n_prompts if views is None and hybrid is None else low_res.shape[0]  # a rule's prompts serve every image
    if low_res.shape[0] != batch:
        raise ValueError(f"low_res has batch {low_res.shape[0]} but there are {batch} prompt embeddings")
    noise_level = integer(noise_level, "noise_level", minimum=0)
    if noise_level > 999:
        raise ValueError(f"noise_level must lie in [0, 999], got {noise_level}")
    torch_generator(generator)
    return prompt_embeds, negative_embeds, noise_level, _check_size(unet, height, width), views


def _stage2_guidance(unet, upscaled, noise_level, prompt_embeds, negative_embeds, guidance_scale, views, hybrid):
    """Stage 2's guidance rule: CFG; with views the visual anagram, each view acting on x_t and on the
    upscaled image alike; with hybrid (kernel_size, sigma) the hybrid image, far prompt first."""
    cond, uncond = prompt_embeds.float(), negative_embeds.float()
    if views is not None:  # the anagram's batch is [V_1(x), ..., V_N(x)] twice (cond, uncond): view `up` so too
        model = IFUpscaleDenoiser(unet, torch.cat([v.view(upscaled) for v in views]), noise_level)
        return anagram(model, list(zip(views, cond.split(1))), uncond, guidance_scale)
    model = IFUpscaleDenoiser(unet, upscaled, noise_level)
    if hybrid is not None:
        far, near = (e.expand(len(upscaled), -1, -1) for e in cond.split(1))
        return hybrid_rule(model, far, near, uncond, guidance_scale, *hybrid)
    return cfg(model, cond, uncond, guidance_scale)


@torch.no_grad()
def if_stage2(
    unet: torch.nn.Module,
    low_res: torch.Tensor,
    prompt_embeds: torch.Tensor,
    negative_embeds: torch.Tensor,
    guidance_scale: float = STAGE2_GUIDANCE_SCALE,
    noise_level: int = STAGE2_NOISE_LEVEL,
    timesteps: Sequence[int] | None = None,
    height: int = 256,
    width: int = 256,
    generator: torch.Generator | None = None,
    progress: bool = True,
    views: Sequence[View | str] | None = None,
    hybrid: tuple[int, float] | None = None,
) -> torch.Tensor:
    """Upscale stage-1 images (B, 3, h, w) in [-1, 1] to (B, 3, height, width) with IF stage 2:

        up = augment_low_res(low_res)            sqrt(ab_s) bilinear(low_res) + sqrt(1 - ab_s) n
        x_T ~ N(0, I);  x_t' = DDPM step of the guided UNet([x_t, up], t, text, s)

    prompt_embeds (B, 77, D) and negative_embeds (1 or B, 77, D): as for ``if_stage1``.
    noise_level: how far the bilinearly upscaled low_res is noised before the UNet sees it.
    timesteps: the UNet's timesteps, strictly decreasing; a last noiseless step to the clean
    image follows. Default: diffusers' 50 steps [980, 960, ..., 20, 0].
    The random draws (x_T, the low-res noise, each step's noise) come from ``generator`` in
    the order diffusers' IFSuperResolutionPipeline draws them.
    views: visual anagrams (e.g. ["identity", "flip"]): prompt_embeds then holds one prompt
    per view, (N, 77, D), for every image of low_res, and the views act on x_t and on the
    upscaled low_res together (see the module docstring).
    hybrid: (kernel_size, sigma) at the output size, for hybrid images: prompt_embeds then
    holds two prompts, (2, 77, D), the far one (low frequencies) first, for every image.
    Returns float32 images (B, 3, height, width) clipped to [-1, 1].
    """
    prompt_embeds, negative_embeds, noise_level, (height, width), views = _check_stage2(
        unet, low_res, prompt_embeds, negative_embeds, noise_level, height, width, generator, views, hybrid)
    ts = list(timesteps) if timesteps is not None else strided_timesteps(980, 20)
    if ts and ts[-1] != -1:
        ts.append(-1)  # the final step to the clean image
    x = torch.randn(len(low_res), 3, height, width, generator=generator)  # x_T, drawn before the low-res noise
    upscaled = augment_low_res(low_res, height, width, noise_level, generator)
    den = _stage2_guidance(unet, upscaled, noise_level, prompt_embeds, negative_embeds, guidance_scale, views, hybrid)
    x = iterative_denoise(den, x, stage2_schedule(), ts, generator=generator, progress=progress)
    return x.clamp(-1.0, 1.0)
