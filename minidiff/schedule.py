"""Noise processes: the math of a schedule in one place.

Two processes serve every lesson.

DDPM (Ho et al., 2020), with discrete timesteps t in {0, ..., T-1}::

    alphas_cumprod[t] = ab_t = prod_{s <= t} (1 - beta_s)
    x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps,            eps ~ N(0, I)

Flow matching (Lipman et al., 2023; the course's Part B), with continuous t in [0, 1]::

    x_t = (1 - t) x_0 + t x_1,     x_0 ~ N(0, I) noise,  x_1 data,  u = x_1 - x_0

Beware the clash of names: in DDPM x_0 is the *clean image*, in flow matching x_0 is the
*noise* (the course keeps both conventions, and so do we). Both are x_t = a_t data + b_t noise,
with (a_t, b_t) = (sqrt(ab_t), sqrt(1 - ab_t)) or (t, 1 - t). So that samplers and edits can
drive either process without caring, both schedules speak the same verbs, always with the
clean image first:

    signal_and_noise(t, x)               -> (a_t, b_t), shaped to broadcast against x
    add_noise(data, noise, t)            -> x_t
    predict_data(x_t, model_output, t)   -> estimate of the clean image
    step(x_t, model_output, t, t_prev, noise=None, generator=None) -> x at t_prev
    renoise(x_prev, t, t_prev, noise=None, generator=None)         -> x at t again

``t_prev`` is where a step goes: the entry after t in the sampler's timesteps. In DDPM it is
an earlier time of the forward process (x_t -> x_{t-1}); the flow runs its clock the other
way, from noise at 0 to data at 1, so there t_prev > t.

Each schedule knows the range of its clean images, ``data_range``: (-1, 1) unless told (Ho et
al., IF), (0, 1) for the MNIST models; the edits of ``minidiff.edit`` refuse an image outside it.

Each public verb checks its arguments once, at the door, then runs its trusted core: the same
name with a leading underscore (``_step``, ``_add_noise``, ``_predict_data``, ``_renoise``), the
equation and nothing else. Samplers and edits check once and call the cores at every step.

Tensors are (B, C, H, W) images in the examples, but any (B, ...) shape works. ``t`` is a
Python number, a 0-d tensor or a (B,) tensor (one timestep per batch element). The
arithmetic runs in float32 (float64 for float64 inputs) whatever the model's dtype, and
every result comes back in its input's dtype.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
from torch import Generator, Tensor

from minidiff import checks, checks_sampling as check
from minidiff.betas import _dynamic_threshold, cosine_betas, linear_betas
from minidiff.checks import batch_tensor, integer, one_of, real_in, real_number, same_shape, value_range

Timestep = Union[int, float, Tensor]
MAX_STEPS = 100_000  # the longest timestep list built here: far past any use, far below a hang

__all__ = ["DDPMSchedule", "FlowSchedule", "check_schedule", "split_output", "strided_timesteps"]


# ----------------------------------------------------------------------------------------
# Helpers shared by both schedules
# ----------------------------------------------------------------------------------------


def _per_sample(coef: Tensor, x: Tensor) -> Tensor:
    """coef (a scalar or (B,)) as a coefficient for x (B, ...): shaped to broadcast, on x's device,
    in x's work dtype, float32 or float64 for float64 x (guided-diffusion's _extract_into_tensor)."""
    coef = coef.to(device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    return coef if coef.ndim == 0 else coef.reshape(-1, *([1] * (x.ndim - 1)))


def _draw(noise: Tensor | None, generator: Generator | None, like: Tensor) -> Tensor:
    """The N(0, I) draw of a step: ``noise`` when given, else drawn from generator."""
    if noise is None:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    return noise


def _door(x: Tensor, names: tuple[str, ...], *others: Tensor, noise: Tensor | None = None) -> None:
    """The checks of a verb's tensors: x (B, ...) named names[0], the others (and noise if given) of its shape."""
    batch_tensor(x, names[0])
    for name, y in zip(names[1:], others):
        same_shape(x, y, names[0], name)
    if noise is not None:
        same_shape(x, noise, names[0], "noise")


def split_output(x_t: Tensor, model_output: Tensor) -> tuple[Tensor, Tensor | None]:
    """Split a model output for x_t (B, C, ...) into (prediction, variance values or None).

    C channels: the prediction only (eps or velocity). 2C channels: eps and IF's learned-range
    variance values v in [-1, 1] (diffusers' variance_type="learned_range"). Trusts its inputs
    (``checks.model_output`` is the door's check).
    """
    c = x_t.shape[1]
    return tuple(model_output.split(c, dim=1)) if model_output.shape[1] == 2 * c else (model_output, None)


# ----------------------------------------------------------------------------------------
# DDPM
# ----------------------------------------------------------------------------------------


class DDPMSchedule:
    """A discrete DDPM noise process with the strided reverse step of the course.

    Holds betas, alphas = 1 - betas and alphas_cumprod (all float32 of length T, like
    diffusers' DDPMScheduler, so its numbers can be compared to ours to 1e-5), and the
    range of its clean images, data_range.
    """

    def __init__(
        self, betas: Tensor, *, thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0, clip_sample: bool = False, clip_sample_range: float = 1.0,
        data_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        self.betas = check.betas(betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        # ab at t = -1, 0, ..., T-1: t = -1 is the clean image (ab = 1), the end of a final step
        self._alphas_cumprod_from_clean = torch.cat([torch.ones(1), self.alphas_cumprod])
        self.thresholding = thresholding
        self.dynamic_thresholding_ratio = real_in(dynamic_thresholding_ratio, "dynamic_thresholding_ratio", "(0, 1]")
        self.sample_max_value = real_in(sample_max_value, "sample_max_value", "[1, inf)")
        self.clip_sample = clip_sample
        self.clip_sample_range = real_number(clip_sample_range, "clip_sample_range", positive=True)
        self.data_range = value_range(data_range, "data_range")

    @classmethod
    def deepfloyd(cls, num_timesteps: int = 1000, thresholding: bool = False) -> "DDPMSchedule":
        """DeepFloyd IF stage 1: 1000 steps of the cosine ("squaredcos_cap_v2") schedule.

        The course's update uses x0_hat as the network gives it, so thresholding is off by
        default; ``thresholding=True`` adds IF's own dynamic thresholding (ratio 0.95, max 1.5).
        """
        return cls(cosine_betas(num_timesteps), thresholding=thresholding, dynamic_thresholding_ratio=0.95,
                   sample_max_value=1.5)

    @classmethod
    def linear(cls, T: int = 300, beta_start: float = 1e-4, beta_end: float = 0.02) -> "DDPMSchedule":
        """The linear schedule of Ho et al. (2020); T = 300 is the course's MNIST DDPM."""
        return cls(linear_betas(T, beta_start, beta_end))

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def __repr__(self) -> str:
        return f"DDPMSchedule(T={self.num_timesteps}, thresholding={self.thresholding}, clip_sample={self.clip_sample})"

    # -- the trusted core: coefficients and the clean estimate ------------------------------

    def _t(self, t: Timestep, x: Tensor, name: str = "t", allow_clean: bool = False) -> Tensor:
        """The door's check of a timestep: t as long indices (0-d or (B,)); -1 only with allow_clean."""
        return check.ddpm_timestep(t, x.shape[0], self.num_timesteps, name, allow_clean)

    def _ab(self, t: int | Tensor, x: Tensor) -> Tensor:
        """ab_t = alphas_cumprod[t] as a coefficient for x (B, ...), with ab = 1 at t = -1. The one lookup."""
        table = self._alphas_cumprod_from_clean
        return _per_sample(table.to(t.device)[t + 1] if isinstance(t, Tensor) else table[t + 1], x)

    @staticmethod
    def _clean_estimate(x_t: Tensor, eps: Tensor, ab_t: Tensor) -> Tensor:
        """x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t), in ab_t's work dtype: the one clean estimate."""
        return (x_t.to(ab_t.dtype) - (1 - ab_t).sqrt() * eps.to(ab_t.dtype)) / ab_t.sqrt()

    def _threshold(self, x0_hat: Tensor) -> Tensor:
        """x0_hat through IF's dynamic thresholding or plain clipping, when the schedule asks for one."""
        if self.thresholding:
            return _dynamic_threshold(x0_hat, self.dynamic_thresholding_ratio, self.sample_max_value)
        if self.clip_sample:
            return x0_hat.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0_hat

    @staticmethod
    def _sigma(ab_t: Tensor, ab_prev: Tensor, v: Tensor | None) -> Tensor:
        """sigma of the step t -> t', with alpha_t = ab_t / ab_{t'} and beta_t = 1 - alpha_t over the stride.

        Fixed: sigma^2 = beta~_t = (1 - ab_{t'}) / (1 - ab_t) beta_t, the posterior variance.
        Learned range (Nichol & Dhariwal; IF): log sigma^2 = frac log beta_t + (1 - frac) log beta~_t,
        frac = (v + 1) / 2, so v = -1 gives beta~_t and v = +1 gives beta_t. beta~_t is clamped at
        1e-20 so that its log stays finite at t' = -1; sigma = exp(log sigma^2 / 2) in the order of
        operations of diffusers, for parity to 1e-5.
        """
        beta = 1 - ab_t / ab_prev
        posterior = ((1 - ab_prev) / (1 - ab_t) * beta).clamp(min=1e-20)
        if v is None:
            return posterior.sqrt()
        frac = (v.to(beta.dtype) + 1) / 2
        return (0.5 * (frac * beta.log() + (1 - frac) * posterior.log())).exp()

    # -- forward process and its inverses ----------------------------------------------------

    def signal_and_noise(self, t: Timestep, x: Tensor) -> tuple[Tensor, Tensor]:
        """(a_t, b_t) = (sqrt(ab_t), sqrt(1 - ab_t)), the coefficients of x_t = a_t x0 + b_t eps."""
        ab = self._ab(self._t(t, batch_tensor(x, "x")), x)
        return ab.sqrt(), (1 - ab).sqrt()

    def add_noise(self, x0: Tensor, noise: Tensor, t: Timestep) -> Tensor:
        """Forward process q(x_t | x_0): x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise."""
        _door(x0, ("x0", "noise"), noise)
        return self._add_noise(x0, noise, self._t(t, x0))

    def _add_noise(self, x0: Tensor, noise: Tensor, t: int | Tensor) -> Tensor:
        ab_t = self._ab(t, x0)
        return (ab_t.sqrt() * x0.to(ab_t.dtype) + (1 - ab_t).sqrt() * noise.to(ab_t.dtype)).to(x0.dtype)

    def predict_x0(self, x_t: Tensor, eps: Tensor, t: Timestep) -> Tensor:
        """Invert add_noise given the noise: x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)."""
        _door(x_t, ("x_t", "eps"), eps)
        return self._clean_estimate(x_t, eps, self._ab(self._t(t, x_t), x_t)).to(x_t.dtype)

    def predict_data(self, x_t: Tensor, model_output: Tensor, t: Timestep) -> Tensor:
        """The clean-image estimate from an eps-prediction (its first C channels when 2C)."""
        checks.model_output(x_t, model_output)
        return self._predict_data(x_t, model_output, self._t(t, x_t))

    def _predict_data(self, x_t: Tensor, model_output: Tensor, t: int | Tensor) -> Tensor:
        eps, _ = split_output(x_t, model_output)
        return self._clean_estimate(x_t, eps, self._ab(t, x_t)).to(x_t.dtype)

    def renoise(
        self, x_prev: Tensor, t: Timestep, t_prev: Timestep, noise: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Tensor:
        """The forward transition q(x_t | x_{t'}) over a stride, taking x back from t' = t_prev to t:

            x_t = sqrt(alpha_t) x_{t'} + sqrt(1 - alpha_t) z,     alpha_t = ab_t / ab_{t'},  z ~ N(0, I)

        (RePaint's "jump back", which undoes a step t -> t' before taking it again.)
        """
        t, t_prev = self._check_stride(x_prev, t, t_prev, noise, "x_prev")
        return self._renoise(x_prev, t, t_prev, noise, generator)

    def _renoise(self, x_prev: Tensor, t: int | Tensor, t_prev: int | Tensor, noise: Tensor | None = None,
                 generator: Generator | None = None) -> Tensor:
        alpha_t = self._ab(t, x_prev) / self._ab(t_prev, x_prev)
        z = _draw(noise, generator, x_prev).to(alpha_t.dtype)
        return (alpha_t.sqrt() * x_prev.to(alpha_t.dtype) + (1 - alpha_t).sqrt() * z).to(x_prev.dtype)

    # -- reverse steps ---------------------------------------------------------------------

    def _check_stride(self, x: Tensor, t: Timestep, t_prev: Timestep, noise: Tensor | None,
                      name: str = "x_t") -> tuple[Tensor, Tensor]:
        """The door of a stride t -> t_prev: x (B, ...), -1 <= t_prev < t, noise of x's shape; returns (t, t_prev)."""
        t, t_prev = self._t(t, batch_tensor(x, name)), self._t(t_prev, x, "t_prev", allow_clean=True)
        check.step_order(t, t_prev, flow=False)
        _door(x, (name,), noise=noise)
        return t, t_prev

    def step(
        self, x_t: Tensor, model_output: Tensor, t: Timestep, t_prev: Timestep, noise: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Tensor:
        """One strided DDPM step t -> t_prev (Ho et al., 2020, eq. 7 over a stride; the course's update),
        ``_step`` after the door's checks:

            x0_hat  = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)
            x_{t'}  = sqrt(ab_{t'}) beta_t / (1 - ab_t) * x0_hat
                    + sqrt(alpha_t) (1 - ab_{t'}) / (1 - ab_t) * x_t  +  sigma z

        with alpha_t = ab_t / ab_{t'}, beta_t = 1 - alpha_t, z ~ N(0, I) and sigma from ``_sigma``
        (fixed posterior variance for C-channel outputs, learned range for 2C). t_prev = -1
        steps to the clean image (ab = 1). Noise is added wherever t > 0. ``noise`` is the z
        to use (else it is drawn from ``generator``).
        """
        checks.model_output(x_t, model_output)
        t, t_prev = self._check_stride(x_t, t, t_prev, noise)
        return self._step(x_t, model_output, t, t_prev, noise, generator)

    def _step(self, x_t: Tensor, model_output: Tensor, t: int | Tensor, t_prev: int | Tensor,
              noise: Tensor | None = None, generator: Generator | None = None) -> Tensor:
        """The strided DDPM step (eq. 7) on trusted arguments; the sampler loops call it at every step."""
        eps, v = split_output(x_t, model_output)
        ab_t, ab_prev = self._ab(t, x_t), self._ab(t_prev, x_t)
        alpha_t = ab_t / ab_prev
        beta_t = 1 - alpha_t
        x0_hat = self._threshold(self._clean_estimate(x_t, eps, ab_t))
        mean = (ab_prev.sqrt() * beta_t / (1 - ab_t) * x0_hat
                + alpha_t.sqrt() * (1 - ab_prev) / (1 - ab_t) * x_t.to(ab_t.dtype))
        z = _draw(noise, generator, x_t).to(ab_t.dtype)
        noisy = _per_sample(torch.as_tensor(t) > 0, x_t)  # no noise on the step from t = 0
        return (mean + noisy * self._sigma(ab_t, ab_prev, v) * z).to(x_t.dtype)


# ----------------------------------------------------------------------------------------
# Flow matching
# ----------------------------------------------------------------------------------------

FLOW_GRIDS = {  # u = i / num_steps in [0, 1] -> where the time grid puts step i
    "uniform": lambda u, power: u,
    "late": lambda u, power: 1 - (1 - u) ** power,  # denser near the data end t -> 1
    "early": lambda u, power: u**power,  # denser near the noise end t -> 0
}


class FlowSchedule:
    """Linear-path flow matching, as the course's Part B defines it.

        x_t = (1 - t) x_0 + t x_1,     x_0 ~ N(0, I),  x_1 data,  t in [0, 1]
        u(x_t) = x_1 - x_0             (the target velocity, constant along the path)

    A model predicts u; sampling integrates dx/dt = u from t = 0 (noise) to t = 1 (data).
    The schedule holds no tables: it is a namespace for the conversions, kept a class so
    that samplers treat DDPM and flow alike.
    """

    num_timesteps = None  # continuous time

    def __init__(self, data_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        self.data_range = value_range(data_range, "data_range")  # of the data x1

    def __repr__(self) -> str:
        return "FlowSchedule()" if self.data_range == (-1.0, 1.0) else f"FlowSchedule(data_range={self.data_range})"

    @staticmethod
    def _t(t: Timestep, x: Tensor, name: str = "t") -> Tensor:
        """The door's check of a time: t in [0, 1], as a 0-d or (B,) tensor."""
        return check.flow_time(t, batch_tensor(x, "x").shape[0], name)

    @staticmethod
    def _time(t: float | Tensor, x: Tensor) -> Tensor:
        """t (a number, or a 0-d or (B,) tensor) as a coefficient for x (B, ...). A number goes through
        float32, as the time a denoiser receives does, so that every verb sees the same t."""
        return _per_sample(torch.as_tensor(t), x)

    def signal_and_noise(self, t: Timestep, x: Tensor) -> tuple[Tensor, Tensor]:
        """(a_t, b_t) = (t, 1 - t), the coefficients of x_t = t x1 + (1 - t) x0."""
        tt = self._time(self._t(t, x), x)
        return tt, 1 - tt

    def add_noise(self, x1: Tensor, x0: Tensor, t: Timestep) -> Tensor:
        """The path: x_t = (1 - t) x0 + t x1 (data x1 first, noise x0 second, like DDPM's add_noise)."""
        _door(x1, ("x1", "x0"), x0)
        return self._add_noise(x1, x0, self._t(t, x1))

    def _add_noise(self, x1: Tensor, x0: Tensor, t: float | Tensor) -> Tensor:
        tt = self._time(t, x1)
        return (tt * x1.to(tt.dtype) + (1 - tt) * x0.to(tt.dtype)).to(x1.dtype)

    def predict_data(self, x_t: Tensor, model_output: Tensor, t: Timestep) -> Tensor:
        """The clean-image estimate from a velocity: x1_hat = x_t + (1 - t) v."""
        _door(x_t, ("x_t", "model_output"), model_output)
        return self._predict_data(x_t, model_output, self._t(t, x_t))

    def _predict_data(self, x_t: Tensor, v: Tensor, t: float | Tensor) -> Tensor:
        tt = self._time(t, x_t)
        return (x_t.to(tt.dtype) + (1 - tt) * v.to(tt.dtype)).to(x_t.dtype)

    def renoise(
        self, x_prev: Tensor, t: Timestep, t_prev: Timestep, noise: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Tensor:
        """The forward transition from t' = t_prev back to the noisier t < t' (RePaint's "jump back"):

            x_t = (t / t') x_{t'} + sqrt((1 - t)^2 - (t (1 - t') / t')^2) z,     z ~ N(0, I)

        which keeps x_t = t x1 + (1 - t) (fresh noise) when x_{t'} = t' x1 + (1 - t') (noise).
        """
        t, t_prev = self._t(t, x_prev), self._t(t_prev, x_prev, "t_prev")
        check.step_order(t, t_prev, flow=True)
        _door(x_prev, ("x_prev",), noise=noise)
        return self._renoise(x_prev, t, t_prev, noise, generator)

    def _renoise(self, x_prev: Tensor, t: float | Tensor, t_prev: float | Tensor, noise: Tensor | None = None,
                 generator: Generator | None = None) -> Tensor:
        t_now, t_to = self._time(t, x_prev), self._time(t_prev, x_prev)
        keep = t_now / t_to
        extra = ((1 - t_now) ** 2 - (keep * (1 - t_to)) ** 2).clamp(min=0).sqrt()
        z = _draw(noise, generator, x_prev).to(keep.dtype)
        return (keep * x_prev.to(keep.dtype) + extra * z).to(x_prev.dtype)

    def step(
        self, x_t: Tensor, model_output: Tensor, t: Timestep, t_prev: Timestep, noise: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Tensor:
        """One Euler step of dx/dt = v from t to t_prev (> t): x_{t'} = x_t + (t' - t) v.

        The flow is deterministic, so ``noise`` and ``generator`` are accepted and ignored.
        """
        _door(x_t, ("x_t", "model_output"), model_output)
        return self._step(x_t, model_output, self._t(t, x_t), self._t(t_prev, x_t, "t_prev"))

    def _step(self, x_t: Tensor, v: Tensor, t: float | Tensor, t_prev: float | Tensor,
              noise: Tensor | None = None, generator: Generator | None = None) -> Tensor:
        """Euler's x_{t'} = x_t + (t' - t) v on trusted arguments; the flow samplers call it at every step."""
        t_now, t_to = self._time(t, x_t), self._time(t_prev, x_t)
        return (x_t.to(t_now.dtype) + (t_to - t_now) * v.to(t_now.dtype)).to(x_t.dtype)

    @staticmethod
    def timesteps(num_steps: int, t_start: float = 0.0, t_end: float = 1.0, *, grid: str = "uniform",
                  power: float = 1.5) -> list[float]:
        """num_steps + 1 increasing times from t_start (noise) to t_end (data): the one flow time grid.

            t_i = t_start + (t_end - t_start) * w(i / num_steps)

        with w(u) = u for the "uniform" (Euler) grid, 1 - (1 - u)^power for "late" (denser near
        the data end, where a guided velocity field bends most) and u^power for "early".
        """
        num_steps = integer(num_steps, "num_steps", minimum=1, maximum=MAX_STEPS)
        t_start, t_end = real_number(t_start, "t_start"), real_number(t_end, "t_end")
        power = real_number(power, "power", positive=True)
        warp = FLOW_GRIDS[one_of(grid, FLOW_GRIDS, "time grid")]
        if not 0.0 <= t_start < t_end <= 1.0:
            raise ValueError(f"need 0 <= t_start < t_end <= 1, got {t_start}, {t_end}")
        return [t_start + (t_end - t_start) * warp(i / num_steps, power) for i in range(num_steps + 1)]


Schedule = Union[DDPMSchedule, FlowSchedule]


def check_schedule(schedule: object, kind: type | None = None, sampler: str = "") -> None:
    """ValueError unless schedule is a DDPMSchedule or a FlowSchedule (what samplers and edits drive),
    or of ``kind`` for a ``sampler`` that integrates one kind only."""
    if not isinstance(schedule, kind or (DDPMSchedule, FlowSchedule)):
        others = "flow_euler or flow_heun" if kind is DDPMSchedule else "iterative_denoise or ddim"
        raise ValueError(
            f"{sampler} needs a {kind.__name__}, got {schedule!r:.60}; for that schedule use {others}" if kind else
            f"schedule must be a DDPMSchedule or a FlowSchedule (from minidiff.schedule), got {schedule!r:.80}"
        )


# ----------------------------------------------------------------------------------------
# Strided timesteps
# ----------------------------------------------------------------------------------------


def strided_timesteps(start: int = 990, stride: int = 30, end: int = 0, *, steps: int | None = None) -> list[int]:
    """The course's strided schedule: [start, start - stride, ..., end], strictly decreasing.

    With the defaults, [990, 960, ..., 30, 0] (34 steps); index i_start = 1, 3, 5, 7, 10, 20
    maps to t = 960, 900, 840, 780, 690, 390 (``timesteps.index(t)`` goes back). The last
    entry is always ``end`` (appended when stride does not divide start - end).

    Given ``steps`` (in [1, start - end + 1]) instead of a stride: that many timesteps evenly
    spaced from start to end, each rounded to the nearest integer (a fractional stride).
    """
    start = integer(start, "start", minimum=0, maximum=MAX_STEPS)
    end = integer(end, "end", minimum=0, maximum=start, why="need 0 <= end <= start")
    if steps is not None:
        steps = integer(steps, "steps", minimum=1, maximum=start - end + 1)
        return sorted({round(v) for v in np.linspace(start, end, steps).tolist()}, reverse=True)
    stride = integer(stride, "stride", minimum=1, why="a stride must be a positive int")
    ts = list(range(start, end - 1, -stride))
    if ts[-1] != end:
        ts.append(end)
    return ts
