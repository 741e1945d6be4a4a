"""Image edits: denoising that starts from, or is tied to, a real image.

    sdedit          image-to-image translation (Meng et al., SDEdit; course 1.7): noise an
                    image part of the way, then denoise; the less noise, the closer the result
    image_to_image  the same with a conditional model and a (new) prompt (course 1.7.3)
    inpaint         regenerate only where mask == 1 (course 1.7.2; RePaint, Lugmayr et al.,
                    2022): after every step the known pixels are reset to the original,
                    noised to the current time; resample_steps > 1 adds RePaint's resampling

Every edit takes a denoiser den(x_t, t) (see minidiff.guidance for making one from a
conditional model), a schedule (DDPMSchedule or FlowSchedule) and its timesteps, checks them
once at its entry and returns the edited image, or (image, intermediates) with
return_intermediates=True. Past the arguments every edit needs, options are keywords.
Images are (B, C, H, W), in the model's range: the schedule's ``data_range`` ((-1, 1) for IF,
(0, 1) for the MNIST models) or the ``value_range`` given. An image outside it (by more than
5% of its width) is refused instead of edited into noise; ``check_range=False`` edits it anyway.
"""

from __future__ import annotations

import torch

from minidiff.checks import integer, value_range as range_of
from minidiff.checks_sampling import image_in_range, inpaint_mask as check_mask
from minidiff.guidance import Model, cfg
from minidiff.samplers import (
    Callback, Denoiser, Loop, Result, Timesteps, check_loop_args, iterative_denoise, run_denoiser,
)
from minidiff.schedule import Schedule

__all__ = ["sdedit", "image_to_image", "inpaint", "check_mask"]


def _check_image(image: torch.Tensor, schedule: Schedule, value_range: tuple[float, float] | None,
                 check_range: bool, keep: torch.Tensor | None = None) -> None:
    """The edits' range check: the image's values (where keep != 0, with a mask) must lie in
    value_range, by default the schedule's data_range; nothing is checked with check_range=False."""
    if check_range:
        given = value_range is not None
        low, high = range_of(value_range if given else schedule.data_range, "value_range")
        pixels = image if keep is None else image[(keep != 0).expand_as(image)]
        image_in_range(pixels, low, high, "the value_range given" if given else f"{type(schedule).__name__}.data_range")


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@torch.no_grad()
def sdedit(
    den: Denoiser, image: torch.Tensor, schedule: Schedule, timesteps: Timesteps, i_start: int,
    generator: torch.Generator | None = None, *, callback: Callback | None = None, progress: bool = True,
    return_intermediates: bool = False, value_range: tuple[float, float] | None = None, check_range: bool = True,
) -> Result:
    """SDEdit (Meng et al., 2022; course 1.7): x = iterative_denoise(add_noise(image, eps, t), ...)

        x_t = schedule.add_noise(image, eps, timesteps[i_start]),  eps ~ N(0, I)
        then denoise from index i_start to the end.

    A small i_start starts from much noise (t near 990: a new image that shares only the
    coarse layout); a large i_start from little noise (the result stays close to the image).
    The image must lie in value_range, by default the schedule's data_range (module docstring).
    """
    ts = check_loop_args(den, image, schedule, timesteps, i_start, generator, callback, "image")
    _check_image(image, schedule, value_range, check_range)
    x_t = schedule._add_noise(image, _noise_like(image, generator), ts[i_start])
    return iterative_denoise(den, x_t, schedule, ts, i_start, generator, callback, progress, return_intermediates)


def image_to_image(
    model: Model,
    image: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    scale: float,
    schedule: Schedule,
    timesteps: Timesteps,
    i_start: int,
    generator: torch.Generator | None = None,
    **kwargs,
) -> Result:
    """Text-conditional image-to-image translation (course 1.7.3): SDEdit guided towards cond.

    sdedit(cfg(model, cond, uncond, scale), image, ...); kwargs go to sdedit (callback,
    progress, return_intermediates, value_range, check_range). With IF, cond is the embedding of the new prompt.
    """
    return sdedit(cfg(model, cond, uncond, scale), image, schedule, timesteps, i_start, generator, **kwargs)


@torch.no_grad()
def inpaint(
    den: Denoiser, image: torch.Tensor, mask: torch.Tensor, schedule: Schedule, timesteps: Timesteps,
    generator: torch.Generator | None = None, *, i_start: int = 0, resample_steps: int = 1,
    callback: Callback | None = None, progress: bool = True, return_intermediates: bool = False,
    value_range: tuple[float, float] | None = None, check_range: bool = True,
) -> Result:
    """Inpainting (course 1.7.2; RePaint, Lugmayr et al., 2022).

    mask == 1 marks pixels to regenerate, mask == 0 pixels to keep. Starting from
    x = add_noise(image, eps, timesteps[i_start]) (pure noise at i_start = 0), every step is

        x_{t'} = schedule.step(x_t, den(x_t, t), t, t')
        x_{t'} <- m * x_{t'} + (1 - m) * add_noise(image, eps', t')       (fresh eps')

    so the known pixels always carry the right amount of noise and the model fills the hole
    to match them. After the last step the kept pixels are the original's exactly.

    resample_steps = u > 1 is RePaint's resampling (Alg. 1, jump length one stride): u - 1
    times per step, jump back with the forward transition, x_t = schedule.renoise(x_{t'}, t, t'),
    and take the step again, so that the hole and the known pixels have u model calls to
    agree. Like RePaint, the last step is taken once. u = 1 (the default) is the course's
    plain replacement. The kept pixels must lie in value_range, by default the schedule's
    data_range (the hole's are never used).
    """
    ts = check_loop_args(den, image, schedule, timesteps, i_start, generator, callback, "image")
    m = check_mask(mask, image)
    _check_image(image, schedule, value_range, check_range, keep=1 - m)
    resample_steps = integer(resample_steps, "resample_steps", minimum=1)

    def step_and_paste(x_t: torch.Tensor, model_output: torch.Tensor, t: float, t_prev: float) -> torch.Tensor:
        """x_{t'} = m * step(x_t) + (1 - m) * add_noise(image, eps', t') (the image itself at the end)."""
        x_prev = schedule._step(x_t, model_output, t, t_prev, generator=generator)
        known = image if t_prev == ts[-1] else schedule._add_noise(image, _noise_like(image, generator), t_prev)
        return m * x_prev + (1 - m) * known

    x = schedule._add_noise(image, _noise_like(image, generator), ts[i_start])
    loop = Loop(x, ts, i_start, progress, return_intermediates, "inpainting")
    for i, t, t_prev in loop:
        model_output = run_denoiser(den, x, schedule, t)
        if callback is not None:
            callback(i, t, x, schedule._predict_data(x, model_output, t))
        x_prev = step_and_paste(x, model_output, t, t_prev)
        for _ in range(resample_steps - 1 if t_prev != ts[-1] else 0):  # RePaint: jump back to t, step again
            x_t = schedule._renoise(x_prev, t, t_prev, generator=generator)
            x_prev = step_and_paste(x_t, run_denoiser(den, x_t, schedule, t), t, t_prev)
        x = loop.keep(x_prev)
    return loop.result(x)
