"""What schedules, samplers and edits check at their door, once per call.

The public verbs of ``minidiff.schedule``, the samplers of ``minidiff.samplers`` and the edits
of ``minidiff.edit`` check their arguments with these validators before any arithmetic, and
then run their trusted cores, which check nothing. Each validator raises a ValueError that
names the argument, what it got and what it needs (tests/test_refuse_*.py hold the messages);
the generic ones (numbers, ints, shapes) are in ``minidiff.checks``.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np
import torch

from minidiff.checks import batch_tensor, real_number, timestep_tensor

__all__ = [
    "betas", "ddpm_timestep", "flow_time", "step_order", "sampler_timesteps", "denoiser_output",
    "inpaint_mask", "image_in_range",
]


def betas(values: object) -> torch.Tensor:
    """values as a float32 tensor of betas: non-empty, 1-D, every one in (0, 1); else ValueError."""
    b = torch.as_tensor(values, dtype=torch.float32)
    if b.ndim != 1 or b.numel() < 1:
        raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(b.shape)}")
    inside = (b > 0) & (b < 1)
    if not bool(inside.all()):
        raise ValueError(f"every beta must lie in (0, 1), got e.g. {b[~inside][:3].tolist()}")
    return b


def ddpm_timestep(t: object, batch: int, num_timesteps: int, name: str = "t", allow_clean: bool = False) -> torch.Tensor:
    """t as a long 0-d or (batch,) tensor of DDPM timesteps in [0, T - 1], else ValueError;
    allow_clean admits t = -1 (the clean image, where a final step ends)."""
    tt = timestep_tensor(t, batch, name)
    whole = not tt.is_floating_point() or bool((tt.isfinite() & (tt == tt.round())).all())
    low = -1 if allow_clean else 0
    if whole and bool(((tt.long() >= low) & (tt.long() < num_timesteps)).all()):
        return tt.long()
    what = "-1 (the clean image) or " if allow_clean else ""
    raise ValueError(
        f"{name} out of range: got {tt.tolist()}, need {what}an integer in [0, {num_timesteps - 1}] for a "
        f"{num_timesteps}-step schedule" if whole else
        f"{name} must hold integer DDPM timesteps in [0, {num_timesteps - 1}], got {tt}"
    )


def flow_time(t: object, batch: int, name: str = "t") -> torch.Tensor:
    """t as a 0-d or (batch,) tensor of flow-matching times in [0, 1], else ValueError."""
    tt = timestep_tensor(t, batch, name)
    if bool(((tt < 0) | (tt > 1)).any()) or bool(tt.isnan().any()):
        raise ValueError(f"flow-matching {name} must lie in [0, 1], got {tt.flatten().tolist()}")
    return tt


def step_order(t: torch.Tensor, t_prev: torch.Tensor, *, flow: bool) -> None:
    """ValueError unless a step goes from t towards the data: to a smaller t_prev for DDPM, to a larger
    one for the flow (its clock runs from noise at 0 to data at 1)."""
    if bool(((t_prev <= t) if flow else (t_prev >= t)).any()):
        need = "larger than t for the flow (it runs from 0 to 1)" if flow else "smaller than t"
        raise ValueError(f"t_prev must be {need}, got t={t.tolist()}, t_prev={t_prev.tolist()}")


def _timestep_list(timesteps: object, flow: bool) -> list:
    """timesteps as a list of Python numbers: floats for the flow, ints for DDPM (each one checked)."""
    if isinstance(timesteps, (torch.Tensor, np.ndarray)):
        if timesteps.ndim != 1:
            raise ValueError(f"timesteps must be a 1-D sequence, got an array of shape {tuple(timesteps.shape)}")
        timesteps = timesteps.tolist()
    if isinstance(timesteps, (str, bytes)) or not isinstance(timesteps, Sequence):
        raise ValueError(
            f"timesteps must be a list of numbers such as strided_timesteps() or FlowSchedule.timesteps(n), "
            f"got {timesteps!r:.80}"
        )
    if flow:
        return [real_number(t, f"timesteps[{i}]") for i, t in enumerate(timesteps)]
    ts = []
    for i, t in enumerate(timesteps):
        if isinstance(t, numbers.Real) and not isinstance(t, numbers.Integral) and float(t).is_integer():
            t = int(t)  # 990.0 is the timestep 990; 990.5 is a mistake
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise ValueError(f"timesteps[{i}] must be an integer DDPM timestep, got {t!r:.40}")
        ts.append(int(t))
    return ts


def sampler_timesteps(timesteps: object, i_start: object, *, flow: bool, num_timesteps: int | None,
                      kind: str) -> list:
    """A sampler's timesteps as Python numbers, checked with i_start; else ValueError.

    DDPM: strictly decreasing ints in [0, T - 1] (a final -1 means "step to the clean image").
    Flow: strictly increasing floats in [0, 1]. Needs 0 <= i_start < len(timesteps) - 1, so
    that there is at least one step to take. ``kind`` names the schedule in messages.
    """
    ts = _timestep_list(timesteps, flow)
    if len(ts) < 2:
        raise ValueError(f"timesteps needs at least two entries (one step), got {ts}")
    if isinstance(i_start, bool) or not isinstance(i_start, numbers.Integral) or not 0 <= i_start < len(ts) - 1:
        raise ValueError(
            f"i_start must be an int in [0, {len(ts) - 2}] for {len(ts)} timesteps "
            f"(the last entry is where sampling ends), got {i_start!r}"
        )
    order = "increase strictly (noise at t = 0, data at t = 1)" if flow else "decrease strictly (from noise to image)"
    for i, (a, b) in enumerate(zip(ts[:-1], ts[1:])):
        if (a >= b) if flow else (a <= b):
            raise ValueError(
                f"timesteps must {order} for a {kind}, got timesteps[{i}] = {a} then timesteps[{i + 1}] = {b}"
            )
    if flow and (ts[0] < 0 or ts[-1] > 1):
        raise ValueError(f"flow-matching timesteps must lie within [0, 1], got {ts[0]} ... {ts[-1]}")
    if not flow and (ts[0] >= num_timesteps or ts[-1] < -1):
        raise ValueError(
            f"DDPM timesteps must lie within [0, {num_timesteps - 1}] for this {num_timesteps}-step schedule "
            f"(optionally ending at -1), got {ts[0]} ... {ts[-1]}"
        )
    return ts


def denoiser_output(output: object, x: torch.Tensor, *, learned_variance: bool) -> None:
    """ValueError unless a denoiser's output for x (B, C, ...) has x's shape, or (learned_variance,
    DDPM) twice its channels: a denoiser bug named where it shows, not deep inside a step."""
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"the denoiser must return a tensor of shape {tuple(x.shape)}, got a {type(output).__name__}")
    b, c = x.shape[:2]
    doubled = (b, 2 * c, *x.shape[2:])
    if output.shape != x.shape and (not learned_variance or output.shape != doubled):
        what = f"{tuple(x.shape)} or, with learned variance, {doubled}" if learned_variance else tuple(x.shape)
        raise ValueError(
            f"the denoiser returned shape {tuple(output.shape)} for x_t of shape {tuple(x.shape)}; it must return {what}"
        )


def inpaint_mask(mask: object, image: torch.Tensor) -> torch.Tensor:
    """Validate an inpainting mask and return it as a (1 or B, 1 or C, H, W) tensor in image's dtype.

    Accepted: (H, W), or 4-D with the image's H and W and batch and channel sizes 1 or the
    image's. Bool masks are fine; float masks must hold only 0 and 1.
    """
    if not isinstance(mask, torch.Tensor) or mask.is_complex():
        raise ValueError(f"mask must be a tensor of 0s and 1s, got {getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.ndim == 2:
        mask = mask[None, None]
    if mask.ndim != 4:
        raise ValueError(
            f"mask must be (H, W) or (B, C, H, W) with B and C equal to 1 or the image's, got shape {tuple(mask.shape)}"
        )
    b, c, h, w = image.shape
    if mask.shape[-2:] != (h, w) or mask.shape[0] not in (1, b) or mask.shape[1] not in (1, c):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit image of shape {tuple(image.shape)}: "
            f"its H x W must be {h} x {w} and its batch and channel sizes 1 or the image's; "
            f"e.g. mask = torch.zeros({h}, {w}) with 1 where to regenerate"
        )
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        bad = mask[(mask != 0) & (mask != 1)].flatten()[:3].tolist()
        raise ValueError(f"mask values must be 0 (keep) or 1 (regenerate), found e.g. {bad}: threshold it first")
    return mask.to(device=image.device, dtype=image.dtype)


def image_in_range(pixels: torch.Tensor, low: float, high: float, whose: str) -> None:
    """ValueError when pixels lie outside [low, high] by more than 5% of its width (a resize may
    overshoot a little: bicubic rings by a few percent); ``whose`` names where the range comes from."""
    if pixels.numel() == 0:
        return
    slack = 0.05 * (high - low)
    got_low, got_high = float(pixels.min()), float(pixels.max())
    if got_low < low - slack or got_high > high + slack:
        raise ValueError(
            f"image values must lie in {whose} [{low}, {high}], got [{got_low:.3g}, {got_high:.3g}]; "
            "load_image gives [-1, 1] (IF), MNIST digits are [0, 1]: rescale the image first "
            "(or pass check_range=False to edit it as it is)"
        )
