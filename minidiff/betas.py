"""Beta schedules and dynamic thresholding: the tables and the clamp a DDPM schedule is built from.

    linear_betas        Ho et al. (2020): beta_t evenly spaced (the course's MNIST DDPM, T = 300)
    cosine_betas        Nichol & Dhariwal (2021), "squaredcos_cap_v2" (DeepFloyd IF, T = 1000)
    dynamic_threshold   Saharia et al. (2022), Imagen's clamp of x0_hat (IF's scheduler)

``minidiff.schedule.DDPMSchedule`` turns betas into alphas_cumprod and does everything else.
"""

from __future__ import annotations

import math

import torch

from minidiff.checks import integer, real_in, real_number

__all__ = ["linear_betas", "cosine_betas", "dynamic_threshold"]


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """beta_t evenly spaced from beta_start to beta_end (Ho et al., 2020). Shape (T,), float32."""
    num_timesteps = integer(num_timesteps, "num_timesteps", minimum=1)
    beta_start, beta_end = real_number(beta_start, "beta_start"), real_number(beta_end, "beta_end")
    if not (0.0 < beta_start < beta_end < 1.0):
        raise ValueError(
            f"need 0 < beta_start < beta_end < 1 (noise grows with t), got beta_start={beta_start}, "
            f"beta_end={beta_end}; for constant betas build DDPMSchedule(torch.full((T,), beta))"
        )
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float32)


def cosine_betas(num_timesteps: int, max_beta: float = 0.999, s: float = 0.008) -> torch.Tensor:
    """The cosine schedule of Nichol & Dhariwal (2021), "squaredcos_cap_v2" in diffusers.

    ab(u) = cos^2((u + s) / (1 + s) * pi / 2) for u in [0, 1], and
    beta_i = min(1 - ab((i + 1) / T) / ab(i / T), max_beta).

    DeepFloyd IF uses it with T = 1000. Computed in float64, returned as float32 (T,).
    """
    num_timesteps = integer(num_timesteps, "num_timesteps", minimum=1)
    max_beta = real_in(max_beta, "max_beta", "(0, 1)")
    s = real_number(s, "s", nonnegative=True)

    def alpha_bar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [
        min(1.0 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
        for i in range(num_timesteps)
    ]
    return torch.tensor(betas, dtype=torch.float32)


def dynamic_threshold(x0_hat: torch.Tensor, ratio: float = 0.995, max_value: float = 1.0) -> torch.Tensor:
    """Dynamic thresholding of Imagen (Saharia et al., 2022), as DeepFloyd IF uses it.

    Per sample, s = quantile(|x0_hat|, ratio) clamped to [1, max_value]; the sample is then
    clipped to [-s, s] and divided by s. With s = 1 this is plain clipping to [-1, 1]; a
    sample whose pixels saturate is squeezed back instead of clipped flat.
    """
    if x0_hat.ndim < 2:
        raise ValueError(f"dynamic_threshold expects a batch (B, ...), got shape {tuple(x0_hat.shape)}")
    ratio = real_in(ratio, "ratio", "(0, 1]")
    max_value = real_in(max_value, "max_value", "[1, inf)", why="s is clamped to [1, max_value]")
    return _dynamic_threshold(x0_hat, ratio, max_value)


def _dynamic_threshold(x0_hat: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """``dynamic_threshold`` on checked arguments (DDPMSchedule checks them once, when it is built)."""
    dtype = x0_hat.dtype
    flat = x0_hat.reshape(x0_hat.shape[0], -1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # quantile is not implemented for half precision
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1.0, max=max_value).unsqueeze(1)
    return (flat.clamp(-s, s) / s).reshape(x0_hat.shape).to(dtype)
