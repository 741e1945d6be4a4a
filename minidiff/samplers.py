"""Samplers: loops that turn a denoiser and a schedule into images.

A *denoiser* is a callable ``den(x_t, t) -> model output`` where x_t is (B, C, H, W) and t
is a (B,) tensor: long DDPM timesteps for a DDPMSchedule, float times in [0, 1] for a
FlowSchedule. Its output is what the network predicts: eps (C channels) or eps plus IF's
learned-range variance values (2C channels) for DDPM, the velocity for flow matching.
``minidiff.guidance`` builds denoisers from conditional models; a bare unconditional
network is one already.

Every loop walks consecutive pairs (timesteps[i], timesteps[i + 1]) from index i_start::

    DDPM (course, Ho et al.):    timesteps = [990, 960, ..., 30, 0]   (strided, decreasing)
    flow (course, Lipman et al.): timesteps = [0.0, 0.02, ..., 1.0]    (increasing)

and the schedule says what one step means, so one loop serves both processes.

Common arguments:
    generator   torch.Generator for every random draw (same seed -> bit-identical result)
    callback    callback(i, t, x_t, x0_hat), called once per step with the state at
                timesteps[i] and the clean-image estimate made there (for trajectories, GIFs)
    progress    show a tqdm bar (progress=False turns it off)
    return_intermediates
                also return the list of states x at timesteps[i_start], ..., timesteps[-1]

Sampling needs no gradients, so every loop runs under torch.no_grad().
"""

from __future__ import annotations

import inspect
import numbers
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from minidiff.checks import finite_tensor, image_batch, integer, real_number
from minidiff.schedule import DDPMSchedule, FlowSchedule, check_schedule, dynamic_threshold

__all__ = [
    "Denoiser",
    "Callback",
    "check_generator",
    "check_timesteps",
    "check_loop_args",
    "run_denoiser",
    "one_step_denoise",
    "iterative_denoise",
    "ddim_step",
    "ddim",
    "flow_euler",
    "flow_heun",
    "sample",
    "SAMPLERS",
]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None]
Schedule = DDPMSchedule | FlowSchedule


# ----------------------------------------------------------------------------------------
# Helpers: timesteps as the denoiser wants them, checks, progress bars
# ----------------------------------------------------------------------------------------


def is_flow(schedule: Schedule) -> bool:
    """True for continuous-time (flow-matching) schedules, which have no step count."""
    return getattr(schedule, "num_timesteps", None) is None


def batch_timesteps(schedule: Schedule, t: float | int | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t as the (B,) tensor a denoiser receives: long for DDPM, float32 for flow."""
    dtype = torch.float32 if is_flow(schedule) else torch.long
    tt = torch.as_tensor(t, device=x.device)
    if tt.ndim > 1 or (tt.ndim == 1 and tt.shape[0] not in (1, x.shape[0])):
        raise ValueError(f"t must be a number or a (B,) tensor with B = {x.shape[0]}, got shape {tuple(tt.shape)}")
    if not is_flow(schedule) and tt.is_floating_point() and not bool((tt == tt.round()).all()):
        raise ValueError(f"DDPM timesteps must be integers, got {tt.tolist()}")
    return tt.to(dtype).reshape(-1).expand(x.shape[0]).contiguous()


def _timestep_list(schedule: Schedule, timesteps: Sequence[float] | torch.Tensor) -> list:
    """timesteps as a list of Python numbers: ints for DDPM, floats for flow (each one checked)."""
    if isinstance(timesteps, (torch.Tensor, np.ndarray)):
        if timesteps.ndim != 1:
            raise ValueError(f"timesteps must be a 1-D sequence, got an array of shape {tuple(timesteps.shape)}")
        timesteps = timesteps.tolist()
    if isinstance(timesteps, (str, bytes)) or not isinstance(timesteps, Sequence):
        raise ValueError(
            f"timesteps must be a list of numbers such as strided_timesteps() or FlowSchedule.timesteps(n), "
            f"got {timesteps!r:.80}"
        )
    if is_flow(schedule):
        return [real_number(t, f"timesteps[{i}]") for i, t in enumerate(timesteps)]
    ts = []
    for i, t in enumerate(timesteps):
        if isinstance(t, numbers.Real) and not isinstance(t, numbers.Integral) and float(t).is_integer():
            t = int(t)  # 990.0 is the timestep 990; 990.5 is a mistake
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise ValueError(f"timesteps[{i}] must be an integer DDPM timestep, got {t!r:.40}")
        ts.append(int(t))
    return ts


def check_timesteps(schedule: Schedule, timesteps: Sequence[float] | torch.Tensor, i_start: int) -> list:
    """Validate a timestep list and i_start; return the timesteps as Python numbers.

    DDPM: strictly decreasing ints in [0, T - 1] (a final -1 means "step to the clean image").
    Flow: strictly increasing floats in [0, 1]. Needs 0 <= i_start < len(timesteps) - 1,
    so that there is at least one step to take.
    """
    check_schedule(schedule)
    ts = _timestep_list(schedule, timesteps)
    if len(ts) < 2:
        raise ValueError(f"timesteps needs at least two entries (one step), got {ts}")
    if isinstance(i_start, bool) or not isinstance(i_start, numbers.Integral) or not 0 <= i_start < len(ts) - 1:
        raise ValueError(
            f"i_start must be an int in [0, {len(ts) - 2}] for {len(ts)} timesteps "
            f"(the last entry is where sampling ends), got {i_start!r}"
        )
    flow = is_flow(schedule)
    order = "increase strictly (noise at t = 0, data at t = 1)" if flow else "decrease strictly (from noise to image)"
    for i, (a, b) in enumerate(zip(ts[:-1], ts[1:])):
        if (a >= b) if flow else (a <= b):
            raise ValueError(
                f"timesteps must {order} for a {type(schedule).__name__}, got timesteps[{i}] = {a} "
                f"then timesteps[{i + 1}] = {b}"
            )
    if flow and (ts[0] < 0 or ts[-1] > 1):
        raise ValueError(f"flow-matching timesteps must lie within [0, 1], got {ts[0]} ... {ts[-1]}")
    if not flow and (ts[0] >= schedule.num_timesteps or ts[-1] < -1):
        raise ValueError(
            f"DDPM timesteps must lie within [0, {schedule.num_timesteps - 1}] for this "
            f"{schedule.num_timesteps}-step schedule (optionally ending at -1), got {ts[0]} ... {ts[-1]}"
        )
    return ts


def check_generator(generator: torch.Generator | None) -> None:
    """ValueError unless generator is None or a torch.Generator (a bare seed is a common slip)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator, e.g. torch.Generator().manual_seed(0), got {generator!r:.40}"
        )


def check_loop_args(
    den: Denoiser,
    x: torch.Tensor,
    schedule: Schedule,
    timesteps: Sequence[float] | torch.Tensor,
    i_start: int,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    x_name: str = "x",
) -> list:
    """Everything a sampling or editing loop checks once, before its first step.

    Returns the timesteps as Python numbers (see ``check_timesteps``).
    """
    if not callable(den):
        raise ValueError(f"den must be a denoiser, a callable den(x_t, t), got {den!r:.80}")
    image_batch(x, x_name)
    finite_tensor(x, x_name)
    check_generator(generator)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable as callback(i, t, x_t, x0_hat), got {callback!r:.80}")
    return check_timesteps(schedule, timesteps, i_start)


def run_denoiser(den: Denoiser, x: torch.Tensor, schedule: Schedule, t: float | int) -> torch.Tensor:
    """den(x, t) with t broadcast to the batch, and the output's shape checked.

    The output must have x's shape, or (DDPM only) twice its channels for eps plus the
    learned-range variance values; anything else is a denoiser bug named here rather than
    deep inside the schedule's arithmetic.
    """
    out = den(x, batch_timesteps(schedule, t, x))
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the denoiser must return a tensor of shape {tuple(x.shape)}, got a {type(out).__name__}")
    b, c = x.shape[:2]
    ok = out.shape == x.shape or (not is_flow(schedule) and out.shape == (b, 2 * c, *x.shape[2:]))
    if not ok:
        what = f"{tuple(x.shape)} or, with learned variance, {(b, 2 * c, *x.shape[2:])}"
        raise ValueError(
            f"the denoiser returned shape {tuple(out.shape)} for x_t of shape {tuple(x.shape)}; "
            f"it must return {what if not is_flow(schedule) else tuple(x.shape)}"
        )
    return out


def progress_bar(steps: range, progress: bool, desc: str):
    return tqdm(steps, desc=desc, disable=not progress, leave=False)


# ----------------------------------------------------------------------------------------
# One-step and iterative denoising (course Part A 1.3 and 1.4)
# ----------------------------------------------------------------------------------------


@torch.no_grad()
def one_step_denoise(
    den: Denoiser, x_t: torch.Tensor, schedule: Schedule, t: float | int | torch.Tensor
) -> torch.Tensor:
    """Clean-image estimate from a single model call (course 1.3, "one-step denoising").

    DDPM: x0_hat = (x_t - sqrt(1 - ab_t) eps_hat) / sqrt(ab_t).
    Flow: x1_hat = x_t + (1 - t) v_hat.
    """
    if not callable(den):
        raise ValueError(f"den must be a denoiser, a callable den(x_t, t), got {den!r:.80}")
    check_schedule(schedule)
    image_batch(x_t, "x_t")
    finite_tensor(x_t, "x_t")
    # The range of t is checked before the model runs (an IF forward takes seconds).
    if is_flow(schedule):
        schedule._time(t, x_t)
    else:
        schedule._index(t, x_t.shape[0])
    return schedule.predict_data(x_t, run_denoiser(den, x_t, schedule, t), t)


@torch.no_grad()
def iterative_denoise(
    den: Denoiser,
    x: torch.Tensor,
    schedule: Schedule,
    timesteps: Sequence[float] | torch.Tensor,
    i_start: int = 0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    return_intermediates: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """The course's iterative denoising loop (1.4), from x at timesteps[i_start] to timesteps[-1].

    For each consecutive pair (t, t') = (timesteps[i], timesteps[i + 1]):

        model_output = den(x_t, t)
        x_{t'} = schedule.step(x_t, model_output, t, t')

    DDPM: the strided DDPM update (Ho et al. eq. 7 over a stride, with the variance term
    v_sigma added while t > 0). The loop ends at timesteps[-1] = 0 as the course's does;
    append -1 to the timesteps to finish with one noiseless step to x0_hat, like diffusers.
    Flow: the step is Euler's, so this is the flow-matching Euler sampler.

    Returns x at timesteps[-1], and with return_intermediates also the list of all states.
    """
    ts = check_loop_args(den, x, schedule, timesteps, i_start, generator, callback)
    intermediates = [x]
    for i in progress_bar(range(i_start, len(ts) - 1), progress, "denoising"):
        t, t_next = ts[i], ts[i + 1]
        model_output = run_denoiser(den, x, schedule, t)
        if callback is not None:
            callback(i, t, x, schedule.predict_data(x, model_output, t))
        x = schedule.step(x, model_output, t, t_next, generator=generator)
        intermediates.append(x)
    return (x, intermediates) if return_intermediates else x


# ----------------------------------------------------------------------------------------
# DDIM (Song, Meng & Ermon, 2021)
# ----------------------------------------------------------------------------------------


def _alpha_bar(schedule: DDPMSchedule, t: int, like: torch.Tensor) -> torch.Tensor:
    """alphas_cumprod[t] in like's work dtype, with ab = 1 at t = -1 (the clean image)."""
    work = torch.float64 if like.dtype == torch.float64 else torch.float32
    if t < 0:
        return torch.ones((), dtype=work, device=like.device)
    return schedule.alphas_cumprod[t].to(dtype=work, device=like.device)


def ddim_step(
    schedule: DDPMSchedule,
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    t: int,
    t_prev: int,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One DDIM step t -> t_prev (Song et al., 2021, eq. 12).

        x0_hat  = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)
        sigma   = eta * sqrt((1 - ab_{t'}) / (1 - ab_t)) * sqrt(1 - ab_t / ab_{t'})
        x_{t'}  = sqrt(ab_{t'}) x0_hat + sqrt(1 - ab_{t'} - sigma^2) eps + sigma z

    eta = 0 is deterministic: it re-noises the clean estimate with the very noise the model
    predicted, x_{t'} = add_noise(x0_hat, eps, t'). eta = 1 has DDPM's posterior variance.
    Uses the first C channels of a 2C output (DDIM has no learned variance) and the
    schedule's thresholding/clipping of x0_hat, as diffusers' DDIMScheduler does.
    """
    if not isinstance(schedule, DDPMSchedule):
        raise ValueError(f"ddim_step needs a DDPMSchedule, got {schedule!r:.60}")
    real_number(eta, "eta", nonnegative=True)
    t, t_prev = integer(t, "t"), integer(t_prev, "t_prev")
    if not -1 <= t_prev < t < schedule.num_timesteps:
        raise ValueError(
            f"ddim_step needs -1 <= t_prev < t <= {schedule.num_timesteps - 1}, got t={t}, t_prev={t_prev}"
        )
    eps, _ = schedule.split_output(x_t, model_output)
    work = torch.float64 if x_t.dtype == torch.float64 else torch.float32
    ab_t, ab_prev = _alpha_bar(schedule, t, x_t), _alpha_bar(schedule, t_prev, x_t)
    x0_hat = schedule.predict_x0(x_t.to(work), eps.to(work), t)
    if schedule.thresholding:
        x0_hat = dynamic_threshold(x0_hat, schedule.dynamic_thresholding_ratio, schedule.sample_max_value)
    elif schedule.clip_sample:
        x0_hat = x0_hat.clamp(-schedule.clip_sample_range, schedule.clip_sample_range)
    sigma = eta * ((1 - ab_prev) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_prev).sqrt()
    x_prev = ab_prev.sqrt() * x0_hat + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps.to(work)
    if eta > 0:
        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        x_prev = x_prev + sigma * noise.to(work)
    return x_prev.to(x_t.dtype)


@torch.no_grad()
def ddim(
    den: Denoiser,
    x: torch.Tensor,
    schedule: DDPMSchedule,
    timesteps: Sequence[int] | torch.Tensor,
    i_start: int = 0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    return_intermediates: bool = False,
    eta: float = 0.0,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """DDIM sampling (Song et al., 2021): the loop of iterative_denoise with ddim_step.

    With eta = 0 (the default) the result is a deterministic function of the starting x:
    the same noise always gives the same image, and few steps (20-50) suffice.
    """
    if not isinstance(schedule, DDPMSchedule):
        raise ValueError(
            f"DDIM needs a DDPMSchedule, got {schedule!r:.60}; for a FlowSchedule use flow_euler or flow_heun"
        )
    eta = real_number(eta, "eta", nonnegative=True)
    ts = check_loop_args(den, x, schedule, timesteps, i_start, generator, callback)
    intermediates = [x]
    for i in progress_bar(range(i_start, len(ts) - 1), progress, "DDIM"):
        t, t_prev = ts[i], ts[i + 1]
        model_output = run_denoiser(den, x, schedule, t)
        if callback is not None:
            callback(i, t, x, schedule.predict_data(x, model_output, t))
        x = ddim_step(schedule, x, model_output, t, t_prev, eta=eta, generator=generator)
        intermediates.append(x)
    return (x, intermediates) if return_intermediates else x


# ----------------------------------------------------------------------------------------
# Flow matching: Euler and Heun (course Part B; Lipman et al., 2023; Karras et al., 2022)
# ----------------------------------------------------------------------------------------


@torch.no_grad()
def flow_euler(
    den: Denoiser,
    x: torch.Tensor,
    schedule: FlowSchedule,
    timesteps: Sequence[float] | torch.Tensor,
    i_start: int = 0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    return_intermediates: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Euler's method for dx/dt = v(x, t) from noise (t = 0) to data (t = 1), the course's
    flow-matching sampler: x_{t'} = x_t + (t' - t) v(x_t, t).

    It is iterative_denoise with a FlowSchedule; the generator is unused (the flow is
    deterministic) and accepted so that every sampler has the same signature.
    """
    if not isinstance(schedule, FlowSchedule):
        raise ValueError(
            f"flow_euler needs a FlowSchedule, got {schedule!r:.60}; for a DDPMSchedule use iterative_denoise or ddim"
        )
    return iterative_denoise(den, x, schedule, timesteps, i_start, generator, callback, progress, return_intermediates)


@torch.no_grad()
def flow_heun(
    den: Denoiser,
    x: torch.Tensor,
    schedule: FlowSchedule,
    timesteps: Sequence[float] | torch.Tensor,
    i_start: int = 0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    return_intermediates: bool = False,
    final_euler: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Heun's method (the trapezoidal predictor-corrector of Karras et al., 2022, Alg. 1):

        v1 = v(x_t, t);   x~ = x_t + (t' - t) v1        (Euler predictor)
        v2 = v(x~, t');   x_{t'} = x_t + (t' - t) (v1 + v2) / 2

    Second order: exact when v is linear in t along the path, two model calls per step.
    With final_euler (the default), like Karras et al., the step that ends at t' = 1 is a
    plain Euler step: at the data end the velocity of an exact (memorising) denoiser is 0/0.
    final_euler=False corrects that step too, for models whose v(x, 1) is meaningful.
    """
    if not isinstance(schedule, FlowSchedule):
        raise ValueError(
            f"flow_heun needs a FlowSchedule, got {schedule!r:.60}; for a DDPMSchedule use iterative_denoise or ddim"
        )
    ts = check_loop_args(den, x, schedule, timesteps, i_start, generator, callback)
    intermediates = [x]
    for i in progress_bar(range(i_start, len(ts) - 1), progress, "Heun"):
        t, t_next = ts[i], ts[i + 1]
        v1 = run_denoiser(den, x, schedule, t)
        if callback is not None:
            callback(i, t, x, schedule.predict_data(x, v1, t))
        x_euler = schedule.step(x, v1, t, t_next)
        if t_next < 1.0 or not final_euler:
            v2 = run_denoiser(den, x_euler, schedule, t_next)
            x = schedule.step(x, (v1 + v2) / 2, t, t_next)
        else:
            x = x_euler
        intermediates.append(x)
    return (x, intermediates) if return_intermediates else x


# ----------------------------------------------------------------------------------------
# Sampling from pure noise
# ----------------------------------------------------------------------------------------

SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": iterative_denoise,
    "ddim": ddim,
    "euler": flow_euler,
    "heun": flow_heun,
}
FLOW_METHODS = ("euler", "heun")  # the others need a DDPMSchedule


def sample(
    den: Denoiser,
    shape: Sequence[int],
    schedule: Schedule,
    timesteps: Sequence[float] | torch.Tensor,
    generator: torch.Generator | None = None,
    method: str | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    return_intermediates: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **sampler_kwargs,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Generate images from pure noise: x = N(0, I) of ``shape`` (B, C, H, W) at timesteps[0],
    then the sampler named by ``method`` ("ddpm", "ddim", "euler", "heun"; by default "ddpm"
    for a DDPMSchedule and "euler" for a FlowSchedule) down to timesteps[-1].

    The course starts DDPM sampling from pure noise at timesteps[0] (t = 990 for IF, where
    sqrt(ab) ~ 0.006). The noise is drawn from ``generator`` on ``device`` (which must be the
    generator's device). Extra keyword arguments go to the sampler (e.g. eta for DDIM).
    """
    check_schedule(schedule)
    if method is None:
        method = "euler" if is_flow(schedule) else "ddpm"
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampling method {method!r}; choose one of {', '.join(SAMPLERS)}")
    if (method in FLOW_METHODS) != is_flow(schedule):
        fits = ", ".join(m for m in SAMPLERS if (m in FLOW_METHODS) == is_flow(schedule))
        raise ValueError(f"method {method!r} does not fit a {type(schedule).__name__}; choose one of {fits}")
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or len(shape) != 4:
        raise ValueError(f"shape must be the image batch shape (B, C, H, W), got {shape!r:.60}")
    shape = tuple(integer(n, f"shape[{i}]", minimum=1) for i, n in enumerate(shape))
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype such as torch.float32, got {dtype!r}")
    check_generator(generator)
    sampler = SAMPLERS[method]
    unknown = set(sampler_kwargs) - set(inspect.signature(sampler).parameters)
    if unknown:
        raise ValueError(f"method {method!r} takes no argument {', '.join(sorted(unknown))}")
    if device is None and generator is not None:
        device = generator.device
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return sampler(
        den, x, schedule, timesteps, 0, generator, callback, progress, return_intermediates, **sampler_kwargs
    )
