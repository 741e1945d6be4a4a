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

checks its arguments once, at its entry (``check_loop_args``), then runs its own loop with its
update written inside, like k-diffusion's samplers, over consecutive pairs (t, t_prev) =
(timesteps[i], timesteps[i + 1]) from index i_start. The steps are the schedules' trusted cores
(``schedule._step``: DDPM's eq. 7, the flow's Euler step), which check nothing::

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

from typing import Callable, Iterator, Sequence

import torch
from tqdm import tqdm

from minidiff.checks import callable_arg, finite_run, finite_tensor, image_batch, model_output as model_output_fits
from minidiff.checks import real_number, torch_generator
from minidiff.checks_sampling import denoiser_output, sampler_timesteps
from minidiff.schedule import DDPMSchedule, FlowSchedule, Schedule, _draw, check_schedule, split_output

__all__ = [
    "Denoiser",
    "Callback",
    "Loop",
    "check_loop_args",
    "run_denoiser",
    "one_step_denoise",
    "iterative_denoise",
    "ddim_step",
    "ddim",
    "flow_euler",
    "flow_heun",
]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None]
Timesteps = Sequence[float] | torch.Tensor
Result = torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]


# ----------------------------------------------------------------------------------------
# What every loop shares: the checks at its entry, the model call, the bookkeeping
# ----------------------------------------------------------------------------------------


def check_loop_args(
    den: Denoiser, x: torch.Tensor, schedule: Schedule, timesteps: Timesteps, i_start: int,
    generator: torch.Generator | None = None, callback: Callback | None = None, x_name: str = "x", *,
    kind: type | None = None, sampler: str = "",
) -> list:
    """Everything a sampling or editing loop checks once, before its first step; ``kind`` is the one
    schedule class a ``sampler`` integrates, when it integrates one only.

    Returns the timesteps as Python numbers (``checks_sampling.sampler_timesteps``): DDPM strictly
    decreasing ints in [0, T - 1] (a final -1 steps to the clean image), flow strictly
    increasing floats in [0, 1], with 0 <= i_start < len(timesteps) - 1.
    """
    check_schedule(schedule, kind, sampler)
    callable_arg(den, "den", "a denoiser, a callable den(x_t, t)")
    image_batch(x, x_name)
    finite_tensor(x, x_name)
    torch_generator(generator)
    if callback is not None:
        callable_arg(callback, "callback", "callable as callback(i, t, x_t, x0_hat)")
    flow = isinstance(schedule, FlowSchedule)
    return sampler_timesteps(timesteps, i_start, flow=flow, num_timesteps=schedule.num_timesteps,
                             kind=type(schedule).__name__)


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
    denoiser_output(out, x, learned_variance=not flow)
    return out


class Loop:
    """What a sampling loop does besides its update: the progress bar over the steps from
    i_start, the states kept for return_intermediates, and one torch.isfinite(x).all() per
    step, read once after the loop so that the loop never waits on the device::

        loop = Loop(x, ts, i_start, progress, return_intermediates, "DDIM")
        for i, t, t_prev in loop:
            ...
            x = loop.keep(x)
        return loop.result(x)

    A state that went NaN or inf is a RuntimeError naming the step (``checks.finite_run``).
    """

    def __init__(self, x: torch.Tensor, ts: list, i_start: int, progress: bool, return_intermediates: bool,
                 what: str = "denoising") -> None:
        self.ts, self.i_start, self.what = ts, i_start, what
        self.progress = progress
        self.states = [x] if return_intermediates else None
        self.finite: list[torch.Tensor] = []

    def __iter__(self) -> Iterator[tuple[int, float, float]]:
        """(i, t, t_prev) = (i, ts[i], ts[i + 1]) for each step from i_start, behind a progress bar."""
        steps = tqdm(range(self.i_start, len(self.ts) - 1), desc=self.what, disable=None if self.progress else True,
                     leave=False)
        return ((i, self.ts[i], self.ts[i + 1]) for i in steps)

    def keep(self, x: torch.Tensor) -> torch.Tensor:
        """Record the state after a step; returns it."""
        self.finite.append(torch.isfinite(x).all())
        if self.states is not None:
            self.states.append(x)
        return x

    def result(self, x: torch.Tensor) -> Result:
        """x, or (x, states) with return_intermediates, once every step was finite."""
        finite_run(self.finite, self.ts, self.i_start, self.what)
        return x if self.states is None else (x, self.states)


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
    callable_arg(den, "den", "a denoiser, a callable den(x_t, t)")
    image_batch(x_t, "x_t")
    finite_tensor(x_t, "x_t")
    t = schedule._t(t, x_t)  # checked before the model runs (an IF forward takes seconds)
    x0_hat = schedule._predict_data(x_t, run_denoiser(den, x_t, schedule, t), t)
    finite_run([torch.isfinite(x0_hat).all()], [t, "the clean estimate"], what="one-step denoising")
    return x0_hat


@torch.no_grad()
def iterative_denoise(
    den: Denoiser, x: torch.Tensor, schedule: Schedule, timesteps: Timesteps, i_start: int = 0,
    generator: torch.Generator | None = None, callback: Callback | None = None, progress: bool = True,
    return_intermediates: bool = False,
) -> Result:
    """The course's iterative denoising (1.4): for each stride t -> t' of the timesteps,

        x_{t'} = schedule.step(x_t, den(x_t, t), t, t')

    DDPM: the strided DDPM update (Ho et al., 2020, eq. 7 over a stride; ``DDPMSchedule.step``),

        x_{t'} = sqrt(ab_{t'}) beta_t / (1 - ab_t) x0_hat + sqrt(alpha_t) (1 - ab_{t'}) / (1 - ab_t) x_t + sigma z

    with noise while t > 0. The loop ends at timesteps[-1] = 0 as the course's does; append
    -1 to the timesteps to finish with one noiseless step to x0_hat, like diffusers.
    Flow: the step is Euler's, so this is ``flow_euler``.
    """
    ts = check_loop_args(den, x, schedule, timesteps, i_start, generator, callback)
    loop = Loop(x, ts, i_start, progress, return_intermediates)
    for i, t, t_prev in loop:
        model_output = run_denoiser(den, x, schedule, t)
        if callback is not None:
            callback(i, t, x, schedule._predict_data(x, model_output, t))
        x = loop.keep(schedule._step(x, model_output, t, t_prev, generator=generator))
    return loop.result(x)


def _ddim_update(schedule: DDPMSchedule, x_t: torch.Tensor, model_output: torch.Tensor, t: int, t_prev: int,
                 eta: float, noise: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    """One DDIM step t -> t_prev (Song, Meng & Ermon, 2021, eq. 12) on checked arguments:

        x0_hat  = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)
        sigma   = eta * sqrt(beta~_t),   beta~_t = (1 - ab_{t'}) / (1 - ab_t) (1 - ab_t / ab_{t'})
        x_{t'}  = sqrt(ab_{t'}) x0_hat + sqrt(1 - ab_{t'} - sigma^2) eps + sigma z

    eta = 0 is deterministic: it re-noises the clean estimate with the very noise the model
    predicted, x_{t'} = add_noise(x0_hat, eps, t'). eta = 1 has DDPM's posterior variance.
    Uses the first C channels of a 2C output (DDIM has no learned variance) and the
    schedule's thresholding/clipping of x0_hat, as diffusers' DDIMScheduler does.
    """
    eps, _ = split_output(x_t, model_output)
    ab_t, ab_prev = schedule._ab(t, x_t), schedule._ab(t_prev, x_t)
    x0_hat = schedule._threshold(schedule._clean_estimate(x_t, eps, ab_t))
    sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()
    x_prev = ab_prev.sqrt() * x0_hat + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps.to(ab_t.dtype)
    if eta > 0:
        x_prev = x_prev + sigma * _draw(noise, generator, x_t).to(ab_t.dtype)
    return x_prev.to(x_t.dtype)


def ddim_step(
    schedule: DDPMSchedule, x_t: torch.Tensor, model_output: torch.Tensor, t: int | torch.Tensor,
    t_prev: int | torch.Tensor, eta: float = 0.0, noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One DDIM step t -> t_prev (eq. 12, see ``_ddim_update``), its arguments checked like DDPMSchedule.step's."""
    check_schedule(schedule, DDPMSchedule, "ddim_step")
    eta = real_number(eta, "eta", nonnegative=True)
    model_output_fits(x_t, model_output)
    t, t_prev = schedule._check_stride(x_t, t, t_prev, noise)
    return _ddim_update(schedule, x_t, model_output, t, t_prev, eta, noise, generator)


@torch.no_grad()
def ddim(
    den: Denoiser, x: torch.Tensor, schedule: DDPMSchedule, timesteps: Timesteps, i_start: int = 0,
    generator: torch.Generator | None = None, callback: Callback | None = None, progress: bool = True,
    return_intermediates: bool = False, *, eta: float = 0.0,
) -> Result:
    """DDIM (Song, Meng & Ermon, 2021, eq. 12): at each stride t -> t' (``_ddim_update``, just above),

        x_{t'} = sqrt(ab_{t'}) x0_hat + sqrt(1 - ab_{t'} - sigma^2) eps + sigma z,   sigma = eta sqrt(beta~_t)

    With eta = 0 (the default) the result is a deterministic function of the starting x:
    the same noise always gives the same image, and few steps (20-50) suffice.
    """
    ts = check_loop_args(den, x, schedule, timesteps, i_start, generator, callback, kind=DDPMSchedule, sampler="DDIM")
    eta = real_number(eta, "eta", nonnegative=True)
    loop = Loop(x, ts, i_start, progress, return_intermediates, "DDIM")
    for i, t, t_prev in loop:
        model_output = run_denoiser(den, x, schedule, t)
        if callback is not None:
            callback(i, t, x, schedule._predict_data(x, model_output, t))
        x = loop.keep(_ddim_update(schedule, x, model_output, t, t_prev, eta, None, generator))
    return loop.result(x)


@torch.no_grad()
def flow_euler(
    den: Denoiser, x: torch.Tensor, schedule: FlowSchedule, timesteps: Timesteps, i_start: int = 0,
    generator: torch.Generator | None = None, callback: Callback | None = None, progress: bool = True,
    return_intermediates: bool = False,
) -> Result:
    """Euler's method for dx/dt = v(x, t) from noise (t = 0) to data (t = 1), the course's
    flow-matching sampler (Lipman et al., 2023):

        x_{t'} = x_t + (t' - t) v(x_t, t)

    The generator is unused (the flow is deterministic); every sampler takes one.
    """
    ts = check_loop_args(den, x, schedule, timesteps, i_start, generator, callback, kind=FlowSchedule,
                         sampler="flow_euler")
    loop = Loop(x, ts, i_start, progress, return_intermediates)
    for i, t, t_next in loop:
        v = run_denoiser(den, x, schedule, t)
        if callback is not None:
            callback(i, t, x, schedule._predict_data(x, v, t))
        x = loop.keep(schedule._step(x, v, t, t_next))  # x + (t' - t) v
    return loop.result(x)


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
    ts = check_loop_args(den, x, schedule, timesteps, i_start, generator, callback, kind=FlowSchedule,
                         sampler="flow_heun")
    loop = Loop(x, ts, i_start, progress, return_intermediates, "Heun")
    for i, t, t_next in loop:
        v1 = run_denoiser(den, x, schedule, t)
        if callback is not None:
            callback(i, t, x, schedule._predict_data(x, v1, t))
        x_euler = schedule._step(x, v1, t, t_next)  # predictor: x + (t' - t) v1
        if final_euler and t_next >= 1.0:
            x = loop.keep(x_euler)
            continue
        v2 = run_denoiser(den, x_euler, schedule, t_next)
        x = loop.keep(schedule._step(x, (v1 + v2) / 2, t, t_next))  # corrector: x + (t' - t) (v1 + v2) / 2
    return loop.result(x)
