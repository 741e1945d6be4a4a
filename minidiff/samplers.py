"""Samplers: loops that turn a denoiser and a schedule into images.

A *denoiser* is a callable ``den(x_t, t) -> model output`` where x_t is (B, C, H, W) and t
is a (B,) tensor: long DDPM timesteps for a DDPMSchedule, float times in [0, 1] for a
FlowSchedule. Its output is what the network predicts: eps (C channels) or eps plus IF's
learned-range variance values (2C channels) for DDPM, the velocity for flow matching.
``minidiff.guidance`` builds denoisers from conditional models; a bare unconditional
network is one already.

Every sampler has one signature (k-diffusion style),

    sampler(den, x, schedule, timesteps, i_start=0, generator=None, callback=None,
            progress=True, return_intermediates=False, *, its own options)

checks its arguments once, at its entry, and hands its update rule
``update(x_t, model_output, t, t_prev) -> x at t_prev`` to ``sample_loop``, the one loop that
all samplers and the edits of ``minidiff.edit`` share. The loop walks consecutive pairs
(t, t_prev) = (timesteps[i], timesteps[i + 1]) from index i_start::

    DDPM (course, Ho et al.):    timesteps = [990, 960, ..., 30, 0]   (strided, decreasing)
    flow (course, Lipman et al.): timesteps = [0.0, 0.02, ..., 1.0]    (increasing)

Common arguments:
    generator   torch.Generator for every random draw (same seed -> bit-identical result)
    callback    callback(i, t, x_t, x0_hat), called once per step with the state at
                timesteps[i] and the clean-image estimate made there (for trajectories, GIFs)
    progress    show a tqdm bar (progress=False turns it off)
    return_intermediates
                also return the list of states x at timesteps[i_start], ..., timesteps[-1]

Sampling needs no gradients, so every sampler runs under torch.no_grad(). A run whose state
turns NaN or inf (a denoiser that returned NaN) ends in a RuntimeError naming the first such
step, not in an all-NaN image.
"""

from __future__ import annotations

import numbers
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from minidiff.checks import finite_run, finite_tensor, image_batch, real_number
from minidiff.schedule import DDPMSchedule, FlowSchedule, Schedule, check_schedule

__all__ = [
    "Denoiser",
    "Callback",
    "check_generator",
    "check_loop_args",
    "run_denoiser",
    "sample_loop",
    "one_step_denoise",
    "iterative_denoise",
    "ddim",
    "flow_euler",
    "flow_heun",
]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None]
Update = Callable[[torch.Tensor, torch.Tensor, float, float], torch.Tensor]
Timesteps = Sequence[float] | torch.Tensor
Result = torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]


# ----------------------------------------------------------------------------------------
# Checks, made once at a sampler's entry
# ----------------------------------------------------------------------------------------


def _timestep_list(schedule: Schedule, timesteps: Timesteps) -> list:
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
    if isinstance(schedule, FlowSchedule):
        return [real_number(t, f"timesteps[{i}]") for i, t in enumerate(timesteps)]
    ts = []
    for i, t in enumerate(timesteps):
        if isinstance(t, numbers.Real) and not isinstance(t, numbers.Integral) and float(t).is_integer():
            t = int(t)  # 990.0 is the timestep 990; 990.5 is a mistake
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise ValueError(f"timesteps[{i}] must be an integer DDPM timestep, got {t!r:.40}")
        ts.append(int(t))
    return ts


def check_timesteps(schedule: Schedule, timesteps: Timesteps, i_start: int) -> list:
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
    flow = isinstance(schedule, FlowSchedule)
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


def _check_den_and_x(den: Denoiser, x: torch.Tensor, x_name: str) -> None:
    if not callable(den):
        raise ValueError(f"den must be a denoiser, a callable den(x_t, t), got {den!r:.80}")
    image_batch(x, x_name)
    finite_tensor(x, x_name)


def _check_kind(schedule: Schedule, kind: type, sampler: str) -> None:
    """ValueError unless the schedule is the kind the sampler integrates."""
    if not isinstance(schedule, kind):
        others = "flow_euler or flow_heun" if kind is DDPMSchedule else "iterative_denoise or ddim"
        raise ValueError(f"{sampler} needs a {kind.__name__}, got {schedule!r:.60}; for that schedule use {others}")


def check_loop_args(
    den: Denoiser, x: torch.Tensor, schedule: Schedule, timesteps: Timesteps, i_start: int,
    generator: torch.Generator | None = None, callback: Callback | None = None, x_name: str = "x",
) -> list:
    """Everything a sampling or editing loop checks once, before its first step.

    Returns the timesteps as Python numbers (see ``check_timesteps``).
    """
    _check_den_and_x(den, x, x_name)
    check_generator(generator)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable as callback(i, t, x_t, x0_hat), got {callback!r:.80}")
    return check_timesteps(schedule, timesteps, i_start)


# ----------------------------------------------------------------------------------------
# The one loop
# ----------------------------------------------------------------------------------------


def run_denoiser(den: Denoiser, x: torch.Tensor, schedule: Schedule, t: float | int) -> torch.Tensor:
    """den(x, t) with t as the (B,) tensor a denoiser receives (long for DDPM, float32 for flow).

    The output must have x's shape, or (DDPM only) twice its channels for eps plus the
    learned-range variance values; anything else is a denoiser bug named here rather than
    deep inside the schedule's arithmetic.
    """
    flow = isinstance(schedule, FlowSchedule)
    dtype = torch.float32 if flow else torch.long
    if isinstance(t, torch.Tensor):  # a 0-d or (B,) tensor, checked by the caller
        t_batch = t.to(device=x.device, dtype=dtype).reshape(-1).expand(x.shape[0]).contiguous()
    else:
        t_batch = torch.full((x.shape[0],), t, dtype=dtype, device=x.device)
    out = den(x, t_batch)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the denoiser must return a tensor of shape {tuple(x.shape)}, got a {type(out).__name__}")
    b, c = x.shape[:2]
    if out.shape != x.shape and (flow or out.shape != (b, 2 * c, *x.shape[2:])):
        what = tuple(x.shape) if flow else f"{tuple(x.shape)} or, with learned variance, {(b, 2 * c, *x.shape[2:])}"
        raise ValueError(
            f"the denoiser returned shape {tuple(out.shape)} for x_t of shape {tuple(x.shape)}; it must return {what}"
        )
    return out


def sample_loop(
    den: Denoiser, x: torch.Tensor, schedule: Schedule, ts: list, i_start: int, update: Update,
    callback: Callback | None = None, progress: bool = True, return_intermediates: bool = False,
    desc: str = "denoising",
) -> Result:
    """The loop every sampler and edit runs, from x at ts[i_start] to ts[-1]:

        for (t, t_prev) in consecutive pairs of ts from i_start:
            model_output = den(x, t)
            callback(i, t, x, x0_hat)                       (when given)
            x = update(x, model_output, t, t_prev)

    ts are the timesteps as ``check_loop_args`` returns them (its checks come first).
    Returns x at ts[-1], and with return_intermediates also the list of all states.
    A state that went NaN or inf is a RuntimeError naming the step (``finite_run``).
    """
    intermediates, finite = [x], []
    for i in tqdm(range(i_start, len(ts) - 1), desc=desc, disable=None if progress else True, leave=False):
        t, t_prev = ts[i], ts[i + 1]
        model_output = run_denoiser(den, x, schedule, t)
        if callback is not None:
            callback(i, t, x, schedule.predict_data(x, model_output, t))
        x = update(x, model_output, t, t_prev)
        finite.append(torch.isfinite(x).all())
        if return_intermediates:
            intermediates.append(x)
    finite_run(finite, ts, i_start, desc)
    return (x, intermediates) if return_intermediates else x


# ----------------------------------------------------------------------------------------
# Samplers (course Part A 1.3 and 1.4, DDIM, Part B's flow samplers)
# ----------------------------------------------------------------------------------------


@torch.no_grad()
def one_step_denoise(
    den: Denoiser, x_t: torch.Tensor, schedule: Schedule, t: float | int | torch.Tensor
) -> torch.Tensor:
    """Clean-image estimate from a single model call (course 1.3, "one-step denoising").

    DDPM: x0_hat = (x_t - sqrt(1 - ab_t) eps_hat) / sqrt(ab_t).
    Flow: x1_hat = x_t + (1 - t) v_hat.
    """
    check_schedule(schedule)
    _check_den_and_x(den, x_t, "x_t")
    schedule.signal_and_noise(t, x_t)  # checks t before the model runs (an IF forward takes seconds)
    x0_hat = schedule.predict_data(x_t, run_denoiser(den, x_t, schedule, t), t)
    finite_run([torch.isfinite(x0_hat).all()], [t, "the clean estimate"], what="one-step denoising")
    return x0_hat


@torch.no_grad()
def iterative_denoise(
    den: Denoiser, x: torch.Tensor, schedule: Schedule, timesteps: Timesteps, i_start: int = 0,
    generator: torch.Generator | None = None, callback: Callback | None = None, progress: bool = True,
    return_intermediates: bool = False,
) -> Result:
    """The course's iterative denoising (1.4): x_{t'} = schedule.step(x_t, den(x_t, t), t, t').

    DDPM: the strided DDPM update (Ho et al., 2020, eq. 7 over a stride),

        x_{t'} = sqrt(ab_{t'}) beta_t / (1 - ab_t) x0_hat + sqrt(alpha_t) (1 - ab_{t'}) / (1 - ab_t) x_t + sigma z

    with noise while t > 0. The loop ends at timesteps[-1] = 0 as the course's does; append
    -1 to the timesteps to finish with one noiseless step to x0_hat, like diffusers.
    Flow: the step is Euler's, so this is ``flow_euler``.
    """
    ts = check_loop_args(den, x, schedule, timesteps, i_start, generator, callback)
    update = partial(schedule.step, generator=generator)
    return sample_loop(den, x, schedule, ts, i_start, update, callback, progress, return_intermediates)


@torch.no_grad()
def ddim(
    den: Denoiser, x: torch.Tensor, schedule: DDPMSchedule, timesteps: Timesteps, i_start: int = 0,
    generator: torch.Generator | None = None, callback: Callback | None = None, progress: bool = True,
    return_intermediates: bool = False, *, eta: float = 0.0,
) -> Result:
    """DDIM (Song, Meng & Ermon, 2021, eq. 12), see ``DDPMSchedule.ddim_step``:

        x_{t'} = sqrt(ab_{t'}) x0_hat + sqrt(1 - ab_{t'} - sigma^2) eps + sigma z,   sigma = eta sqrt(beta~_t)

    With eta = 0 (the default) the result is a deterministic function of the starting x:
    the same noise always gives the same image, and few steps (20-50) suffice.
    """
    _check_kind(schedule, DDPMSchedule, "DDIM")
    eta = real_number(eta, "eta", nonnegative=True)
    ts = check_loop_args(den, x, schedule, timesteps, i_start, generator, callback)
    update = partial(schedule.ddim_step, eta=eta, generator=generator)
    return sample_loop(den, x, schedule, ts, i_start, update, callback, progress, return_intermediates, "DDIM")


@torch.no_grad()
def flow_euler(
    den: Denoiser, x: torch.Tensor, schedule: FlowSchedule, timesteps: Timesteps, i_start: int = 0,
    generator: torch.Generator | None = None, callback: Callback | None = None, progress: bool = True,
    return_intermediates: bool = False,
) -> Result:
    """Euler's method for dx/dt = v(x, t) from noise (t = 0) to data (t = 1), the course's
    flow-matching sampler (Lipman et al., 2023): x_{t'} = x_t + (t' - t) v(x_t, t).

    The generator is unused (the flow is deterministic); every sampler takes one.
    """
    _check_kind(schedule, FlowSchedule, "flow_euler")
    ts = check_loop_args(den, x, schedule, timesteps, i_start, generator, callback)
    return sample_loop(den, x, schedule, ts, i_start, schedule.step, callback, progress, return_intermediates)


@torch.no_grad()
def flow_heun(
    den: Denoiser, x: torch.Tensor, schedule: FlowSchedule, timesteps: Timesteps, i_start: int = 0,
    generator: torch.Generator | None = None, callback: Callback | None = None, progress: bool = True,
    return_intermediates: bool = False, *, final_euler: bool = True,
) -> Result:
    """Heun's method (the trapezoidal predictor-corrector of Karras et al., 2022, Alg. 1):

        v1 = v(x_t, t);   x~ = x_t + (t' - t) v1        (Euler predictor)
        v2 = v(x~, t');   x_{t'} = x_t + (t' - t) (v1 + v2) / 2

    Second order: exact when v is linear in t along the path, two model calls per step.
    With final_euler (the default), like Karras et al., the step that ends at t' = 1 is a
    plain Euler step: at the data end the velocity of an exact (memorising) denoiser is 0/0.
    final_euler=False corrects that step too, for models whose v(x, 1) is meaningful.
    """
    _check_kind(schedule, FlowSchedule, "flow_heun")
    ts = check_loop_args(den, x, schedule, timesteps, i_start, generator, callback)

    def update(x_t: torch.Tensor, v1: torch.Tensor, t: float, t_prev: float) -> torch.Tensor:
        x_euler = schedule.step(x_t, v1, t, t_prev)
        if final_euler and t_prev >= 1.0:
            return x_euler
        v2 = run_denoiser(den, x_euler, schedule, t_prev)
        return schedule.step(x_t, (v1 + v2) / 2, t, t_prev)

    return sample_loop(den, x, schedule, ts, i_start, update, callback, progress, return_intermediates, "Heun")
