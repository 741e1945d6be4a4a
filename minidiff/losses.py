"""The Part B losses, one function each, in the order the course meets them.

Each function takes a batch of digits (x in [0, 1], with its class vector c where the model is
class-conditioned), the run's generator and the recipe's settings, draws the randomness of its
loss for every row, and returns the pair the loss compares: the network's inputs and its target,

    L = criterion(model(*inputs), target)       (mean squared error; the judge: cross-entropy)

which ``minidiff.train.batch_loss`` evaluates. The network is called there, not here, for one
reason: with several processes each one must draw the random numbers of the whole global batch,
as one process would, and then train on its own rows (``minidiff.distributed``). So the draws
are made here, for the batch given, and the training loop cuts its rows once, between the draws
and the network. The arguments were checked once, by ``recipes.recipe_config``.

x_t comes from the schedules (``DDPMSchedule.add_noise``, ``FlowSchedule.add_noise``), the same
ones the samplers invert, and the network sees t as ``unet_time`` scales it, as when sampling.
"""

from __future__ import annotations

import torch

from minidiff.metrics import random_shift
from minidiff.models.mnist import drop_class, unet_time
from minidiff.schedule import DDPMSchedule, FlowSchedule

__all__ = ["denoiser_example", "pure_noise_example", "ddpm_example", "flow_example", "reflow_example", "judge_example"]

Inputs = tuple[torch.Tensor, ...]


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) of x's shape, drawn on the CPU (so a seeded run draws the same on every device)."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def denoiser_example(x: torch.Tensor, generator: torch.Generator | None, sigma: float) -> tuple[Inputs, torch.Tensor]:
    """The one-step denoiser at a fixed noise level (course B1.2):

        eps ~ N(0, I),  z = x + sigma eps,  L = ||D(z) - x||^2

    Returns ((z,), x).
    """
    eps = _randn_like(x, generator)
    z = x + sigma * eps
    return (z,), x


def pure_noise_example(x: torch.Tensor, generator: torch.Generator | None) -> tuple[Inputs, torch.Tensor]:
    """Denoising pure noise (course B1.2.3): the input holds nothing of x, so the best D is the mean digit.

        eps ~ N(0, I),  L = ||D(eps) - x||^2

    Returns ((eps,), x).
    """
    eps = _randn_like(x, generator)
    return (eps,), x


def ddpm_example(schedule: DDPMSchedule, x0: torch.Tensor, c: torch.Tensor | None, generator: torch.Generator | None,
                 p_uncond: float = 0.0) -> tuple[Inputs, torch.Tensor]:
    """DDPM's eps-prediction loss (Ho et al., 2020, Algorithm 1), with class dropout for CFG:

        c -> 0 (the null class) with probability p_uncond
        t ~ U{0, ..., T-1},  eps ~ N(0, I)
        x_t = sqrt(alphas_cumprod[t]) x0 + sqrt(1 - alphas_cumprod[t]) eps
        L = ||eps_theta(x_t, t / T, c) - eps||^2

    c None: the time-only model (no c). Returns ((x_t, t / T[, c]), eps).
    """
    if c is not None and p_uncond > 0:  # p_uncond 0: nothing drawn, c kept
        c = drop_class(c, p_uncond, generator)
    t = torch.randint(0, schedule.num_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
    eps = _randn_like(x0, generator)
    x_t = schedule.add_noise(x0, eps, t)  # sqrt(alphas_cumprod[t]) x0 + sqrt(1 - alphas_cumprod[t]) eps
    inputs = (x_t, unet_time(t, schedule))  # the network sees t / T
    return (inputs if c is None else inputs + (c,)), eps


def flow_example(schedule: FlowSchedule, x1: torch.Tensor, c: torch.Tensor | None, generator: torch.Generator | None,
                 p_uncond: float = 0.0, time_power: float = 1.0) -> tuple[Inputs, torch.Tensor]:
    """Flow matching (Lipman et al., 2023; rectified flow, Liu et al., 2023), with class dropout for CFG:

        c -> 0 (the null class) with probability p_uncond
        x0 ~ N(0, I),  t = 1 - (1 - r)^time_power with r ~ U[0, 1]
        x_t = (1 - t) x0 + t x1,  u = x1 - x0
        L = ||u_theta(x_t, t, c) - u||^2

    time_power 1 is the course's uniform t; above 1 more of the training lies near the data end
    (t -> 1), with density (1 - t)^(1/p - 1) / p: at p = 2 a sixth of the draws fall in t > 0.975,
    against a fortieth uniformly. c None: the time-only model. Returns ((x_t, t[, c]), u).
    """
    if c is not None and p_uncond > 0:  # p_uncond 0: nothing drawn, c kept
        c = drop_class(c, p_uncond, generator)
    x0 = _randn_like(x1, generator)
    t = torch.rand(x1.shape[0], generator=generator)
    if time_power != 1.0:  # at 1 the course's recipes keep drawing, bit for bit, what they always drew
        t = 1 - (1 - t) ** time_power
    t = t.to(x1.device)
    x_t = schedule.add_noise(x1, x0, t)  # (1 - t) x0 + t x1
    u = x1 - x0  # the path's constant velocity
    inputs = (x_t, unet_time(t, schedule))  # the flow network sees t itself
    return (inputs if c is None else inputs + (c,)), u


def reflow_example(schedule: FlowSchedule, x1: torch.Tensor, x0: torch.Tensor, c: torch.Tensor,
                   generator: torch.Generator | None, p_zero: float) -> tuple[Inputs, torch.Tensor]:
    """Reflow on a teacher's pairs (Liu et al., 2023, rectified flow), weighted towards t = 0 to distil
    one step (their Section 2.3):

        (x0, x1): the teacher's digit x1 = Phi(x0, c) from its own noise x0 (``minidiff.distill``)
        t = 0 with probability p_zero, else t ~ U[0, 1]
        x_t = (1 - t) x0 + t x1,  u = x1 - x0
        L = ||u_theta(x_t, t, c) - u||^2

    It is flow_example's loss with one difference: x0 and x1 are coupled, not drawn apart. The
    teacher's path from x0 bends; the student learns the straight line from x0 to where that path
    ends, so one Euler step x0 + u_theta(x0, 0, c) lands there. At t = 0 the loss is the direct
    distillation of Luhman & Luhman (2021); the other times keep the straight path learned on the
    way, where a second step starts (x_0.5 of a two-step sampler). No class drop: the student
    learns the teacher's guided map and samples without guidance. Returns ((x_t, t, c), u).
    """
    at_zero = torch.rand(x1.shape[0], generator=generator) < p_zero
    t = torch.rand(x1.shape[0], generator=generator).masked_fill(at_zero, 0.0).to(x1.device)
    x_t = schedule.add_noise(x1, x0, t)  # (1 - t) x0 + t x1
    return (x_t, unet_time(t, schedule), c), x1 - x0


def judge_example(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None,
                  max_shift: int) -> tuple[Inputs, torch.Tensor]:
    """The judge classifier on randomly shifted digits (so that it reads off-centre samples fairly):

        x' = x shifted by (dy, dx) ~ U{-max_shift..max_shift}^2,  L = cross-entropy(f(x'), y)

    Returns ((x',), y).
    """
    return (random_shift(x, max_shift, generator),), y
