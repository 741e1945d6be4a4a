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

Each schedule also knows the range of its clean images, ``data_range``: (-1, 1) unless told
(Ho et al. scale images to it, and so do IF and the flows of most papers); the MNIST models
set (0, 1), the raw pixels the course trains on. The edits of ``minidiff.edit`` refuse an
image outside it, which the schedule's arithmetic would otherwise turn into noise.

Tensors are (B, C, H, W) images in the examples, but any (B, ...) shape works. ``t`` is a
Python number, a 0-d tensor or a (B,) tensor (one timestep per batch element). The
arithmetic runs in float32 (float64 for float64 inputs) whatever the model's dtype, and
every result comes back in its input's dtype.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Generator, Tensor

from minidiff.betas import cosine_betas, dynamic_threshold, linear_betas
from minidiff.checks import batch_tensor, integer, real_number, same_shape, timestep_tensor, value_range

Timestep = Union[int, float, Tensor]
MAX_STEPS = 100_000  # the longest timestep list built here: far past any use, far below a hang

__all__ = ["DDPMSchedule", "FlowSchedule", "check_schedule", "split_output", "strided_timesteps"]


# ----------------------------------------------------------------------------------------
# Helpers shared by both schedules: checks, timesteps, coefficients, noise
# ----------------------------------------------------------------------------------------


def _work_dtype(x: Tensor) -> torch.dtype:
    """Schedule arithmetic runs in float32 (float64 for float64 inputs), whatever the model's dtype."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _per_sample(coef: Tensor, x: Tensor) -> Tensor:
    """coef (a scalar or (B,)) as a coefficient for x (B, ...): shaped to broadcast, on x's device,
    in x's work dtype (guided-diffusion's _extract_into_tensor)."""
    coef = coef.to(device=x.device, dtype=_work_dtype(x))
    return coef if coef.ndim == 0 else coef.reshape(-1, *([1] * (x.ndim - 1)))


def _operands(
    schedule: "Schedule", x: Tensor, y: Tensor, t: Timestep, names: tuple[str, str]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The preamble of every conversion: check x (B, ...) and y of the same shape, look up
    (a_t, b_t) of x_t = a_t data + b_t noise, and cast x and y to the work dtype.

    Returns (a_t, b_t, x, y).
    """
    batch_tensor(x, names[0])
    same_shape(x, y, *names)
    a, b = schedule.signal_and_noise(t, x)
    return a, b, x.to(a.dtype), y.to(a.dtype)


def _noise(noise: Tensor | None, generator: Generator | None, like: Tensor) -> Tensor:
    """The N(0, I) draw of a step: ``noise`` when given (checked against like's shape), else drawn from generator."""
    if noise is None:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    same_shape(like, noise, "x_t", "noise")
    return noise


def split_output(x_t: Tensor, model_output: Tensor) -> tuple[Tensor, Tensor | None]:
    """Split a model output for x_t (B, C, ...) into (prediction, variance values or None).

    C channels: the prediction only (eps or velocity). 2C channels: eps and IF's learned-range
    variance values v in [-1, 1] (diffusers' variance_type="learned_range").
    """
    batch_tensor(x_t, "x_t")
    if x_t.ndim < 2 or not isinstance(model_output, Tensor) or model_output.ndim != x_t.ndim:
        raise ValueError(
            f"x_t and model_output must both be (B, C, ...) tensors of the same rank, "
            f"got shapes {tuple(x_t.shape)} and {tuple(getattr(model_output, 'shape', ()))}"
        )
    c = x_t.shape[1]
    same_rest = model_output.shape[0] == x_t.shape[0] and model_output.shape[2:] == x_t.shape[2:]
    if same_rest and model_output.shape[1] == c:
        return model_output, None
    if same_rest and model_output.shape[1] == 2 * c:
        eps, v = model_output.split(c, dim=1)
        return eps, v
    raise ValueError(
        f"model_output must have x_t's shape {tuple(x_t.shape)} ({c} channels: eps or velocity) or "
        f"{2 * c} channels (eps + learned-range variance), with x_t's batch and image size "
        f"{tuple(x_t.shape[2:])}; got {tuple(model_output.shape)}"
    )


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
        betas = torch.as_tensor(betas, dtype=torch.float32)
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            bad = betas[~((betas > 0) & (betas < 1))][:3].tolist()
            raise ValueError(f"every beta must lie in (0, 1), got e.g. {bad}")
        if not 0.0 < real_number(dynamic_thresholding_ratio, "dynamic_thresholding_ratio") <= 1.0:
            raise ValueError(f"dynamic_thresholding_ratio must lie in (0, 1], got {dynamic_thresholding_ratio}")
        if real_number(sample_max_value, "sample_max_value") < 1.0:
            raise ValueError(f"sample_max_value must be >= 1, got {sample_max_value}")
        real_number(clip_sample_range, "clip_sample_range", positive=True)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        # ab at t = -1, 0, ..., T-1: t = -1 is the clean image (ab = 1), the end of a final step
        self._alphas_cumprod_from_clean = torch.cat([torch.ones(1), self.alphas_cumprod])
        self.thresholding = thresholding
        self.dynamic_thresholding_ratio = dynamic_thresholding_ratio
        self.sample_max_value = sample_max_value
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range
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

    # -- looking up ab_t ---------------------------------------------------------------------

    def _index(self, t: Timestep, batch: int, name: str = "t", allow_clean: bool = False) -> Tensor:
        """t checked and as a long 0-d or (B,) tensor; allow_clean admits t = -1 (the clean image)."""
        tt = timestep_tensor(t, batch, name)
        if tt.is_floating_point() and not bool((tt.isfinite() & (tt == tt.round())).all()):
            raise ValueError(f"{name} must hold integer DDPM timesteps in [0, {self.num_timesteps - 1}], got {tt}")
        tt = tt.long()
        low = -1 if allow_clean else 0
        if bool((tt < low).any()) or bool((tt >= self.num_timesteps).any()):
            what = "-1 (the clean image) or " if allow_clean else ""
            raise ValueError(
                f"{name} out of range: got {tt.tolist()}, need {what}an integer in "
                f"[0, {self.num_timesteps - 1}] for a {self.num_timesteps}-step schedule"
            )
        return tt

    def _extract(self, index: Tensor, x: Tensor) -> Tensor:
        """ab_t = alphas_cumprod[index] as a coefficient for x (B, ...), with ab = 1 at index -1. The one lookup."""
        table = self._alphas_cumprod_from_clean.to(index.device)
        return _per_sample(table[index + 1], x)

    def _stride(self, x: Tensor, t: Timestep, t_prev: Timestep) -> tuple[Tensor, Tensor, Tensor]:
        """(t as indices, ab_t, ab_t') of the stride t -> t' = t_prev, for x (B, ...); needs -1 <= t' < t."""
        t_index = self._index(t, x.shape[0])
        prev_index = self._index(t_prev, x.shape[0], "t_prev", allow_clean=True)
        if bool((prev_index >= t_index).any()):
            raise ValueError(f"t_prev must be smaller than t, got t={t_index.tolist()}, t_prev={prev_index.tolist()}")
        return t_index, self._extract(t_index, x), self._extract(prev_index, x)

    def signal_and_noise(self, t: Timestep, x: Tensor) -> tuple[Tensor, Tensor]:
        """(a_t, b_t) = (sqrt(ab_t), sqrt(1 - ab_t)), the coefficients of x_t = a_t x0 + b_t eps."""
        batch_tensor(x, "x")
        ab = self._extract(self._index(t, x.shape[0]), x)
        return ab.sqrt(), (1 - ab).sqrt()

    # -- forward process and its inverses ----------------------------------------------------

    def add_noise(self, x0: Tensor, noise: Tensor, t: Timestep) -> Tensor:
        """Forward process q(x_t | x_0): x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise."""
        a, b, x0_w, noise_w = _operands(self, x0, noise, t, ("x0", "noise"))
        return (a * x0_w + b * noise_w).to(x0.dtype)

    def predict_x0(self, x_t: Tensor, eps: Tensor, t: Timestep) -> Tensor:
        """Invert add_noise given the noise: x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)."""
        a, b, x_w, eps_w = _operands(self, x_t, eps, t, ("x_t", "eps"))
        return ((x_w - b * eps_w) / a).to(x_t.dtype)

    def predict_eps(self, x_t: Tensor, x0: Tensor, t: Timestep) -> Tensor:
        """Invert add_noise given the image: eps_hat = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)."""
        a, b, x_w, x0_w = _operands(self, x_t, x0, t, ("x_t", "x0"))
        return ((x_w - a * x0_w) / b).to(x_t.dtype)

    def predict_data(self, x_t: Tensor, model_output: Tensor, t: Timestep) -> Tensor:
        """The clean-image estimate from an eps-prediction (its first C channels when 2C)."""
        eps, _ = split_output(x_t, model_output)
        return self.predict_x0(x_t, eps, t)

    def renoise(
        self, x_prev: Tensor, t: Timestep, t_prev: Timestep, noise: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Tensor:
        """The forward transition q(x_t | x_{t'}) over a stride, taking x back from t' = t_prev to t:

            x_t = sqrt(alpha_t) x_{t'} + sqrt(1 - alpha_t) z,     alpha_t = ab_t / ab_{t'},  z ~ N(0, I)

        (RePaint's "jump back", which undoes a step t -> t' before taking it again.)
        """
        batch_tensor(x_prev, "x_prev")
        _, ab_t, ab_prev = self._stride(x_prev, t, t_prev)
        alpha = ab_t / ab_prev
        z = _noise(noise, generator, x_prev).to(alpha.dtype)
        return (alpha.sqrt() * x_prev.to(alpha.dtype) + (1 - alpha).sqrt() * z).to(x_prev.dtype)

    # -- reverse steps ---------------------------------------------------------------------

    def _clean_estimate(self, x_t: Tensor, eps: Tensor, ab_t: Tensor) -> Tensor:
        """x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t) in ab_t's work dtype (predict_x0 without
        its checks, which the step has made), then IF's dynamic thresholding or clipping if asked for."""
        x0_hat = (x_t.to(ab_t.dtype) - (1 - ab_t).sqrt() * eps.to(ab_t.dtype)) / ab_t.sqrt()
        if self.thresholding:
            return dynamic_threshold(x0_hat, self.dynamic_thresholding_ratio, self.sample_max_value)
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

    def step(
        self, x_t: Tensor, model_output: Tensor, t: Timestep, t_prev: Timestep, noise: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Tensor:
        """One strided DDPM step t -> t_prev (Ho et al., 2020, eq. 7 over a stride; the course's update).

            x0_hat  = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)
            x_{t'}  = sqrt(ab_{t'}) beta_t / (1 - ab_t) * x0_hat
                    + sqrt(alpha_t) (1 - ab_{t'}) / (1 - ab_t) * x_t  +  sigma z

        with alpha_t = ab_t / ab_{t'}, beta_t = 1 - alpha_t, z ~ N(0, I) and sigma from ``_sigma``
        (fixed posterior variance for C-channel outputs, learned range for 2C). t_prev = -1
        steps to the clean image (ab = 1). Noise is added wherever t > 0. ``noise`` is the z
        to use (else it is drawn from ``generator``).
        """
        eps, v = split_output(x_t, model_output)
        t_index, ab_t, ab_prev = self._stride(x_t, t, t_prev)
        alpha = ab_t / ab_prev
        beta = 1 - alpha
        x0_hat = self._clean_estimate(x_t, eps, ab_t)
        x_w = x_t.to(ab_t.dtype)
        mean = ab_prev.sqrt() * beta / (1 - ab_t) * x0_hat + alpha.sqrt() * (1 - ab_prev) / (1 - ab_t) * x_w
        z = _noise(noise, generator, x_t).to(ab_t.dtype)
        noisy = _per_sample(t_index > 0, x_t)
        return (mean + noisy * self._sigma(ab_t, ab_prev, v) * z).to(x_t.dtype)

    def ddim_step(
        self, x_t: Tensor, model_output: Tensor, t: Timestep, t_prev: Timestep, eta: float = 0.0,
        noise: Tensor | None = None, generator: Generator | None = None,
    ) -> Tensor:
        """One DDIM step t -> t_prev (Song, Meng & Ermon, 2021, eq. 12).

            x0_hat  = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)
            sigma   = eta * sqrt(beta~_t),   beta~_t = (1 - ab_{t'}) / (1 - ab_t) (1 - ab_t / ab_{t'})
            x_{t'}  = sqrt(ab_{t'}) x0_hat + sqrt(1 - ab_{t'} - sigma^2) eps + sigma z

        eta = 0 is deterministic: it re-noises the clean estimate with the very noise the model
        predicted, x_{t'} = add_noise(x0_hat, eps, t'). eta = 1 has DDPM's posterior variance.
        Uses the first C channels of a 2C output (DDIM has no learned variance) and the
        schedule's thresholding/clipping of x0_hat, as diffusers' DDIMScheduler does.
        """
        eta = real_number(eta, "eta", nonnegative=True)
        eps, _ = split_output(x_t, model_output)
        _, ab_t, ab_prev = self._stride(x_t, t, t_prev)
        x0_hat = self._clean_estimate(x_t, eps, ab_t)
        sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()
        x_prev = ab_prev.sqrt() * x0_hat + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps.to(ab_t.dtype)
        if eta > 0:
            x_prev = x_prev + sigma * _noise(noise, generator, x_t).to(ab_t.dtype)
        return x_prev.to(x_t.dtype)


# ----------------------------------------------------------------------------------------
# Flow matching
# ----------------------------------------------------------------------------------------


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
    def _time(t: Timestep, x: Tensor, name: str = "t") -> Tensor:
        """t checked to lie in [0, 1], as a coefficient for x (B, ...)."""
        batch_tensor(x, "x")
        tt = _per_sample(timestep_tensor(t, x.shape[0], name), x)
        if bool(((tt < 0) | (tt > 1)).any()) or bool(tt.isnan().any()):
            raise ValueError(f"flow-matching {name} must lie in [0, 1], got {tt.flatten().tolist()}")
        return tt

    def signal_and_noise(self, t: Timestep, x: Tensor) -> tuple[Tensor, Tensor]:
        """(a_t, b_t) = (t, 1 - t), the coefficients of x_t = t x1 + (1 - t) x0."""
        tt = self._time(t, x)
        return tt, 1 - tt

    def add_noise(self, x1: Tensor, x0: Tensor, t: Timestep) -> Tensor:
        """The path: x_t = (1 - t) x0 + t x1 (data x1 first, noise x0 second, like DDPM's add_noise)."""
        a, b, x1_w, x0_w = _operands(self, x1, x0, t, ("x1", "x0"))
        return (a * x1_w + b * x0_w).to(x1.dtype)

    def predict_data(self, x_t: Tensor, model_output: Tensor, t: Timestep) -> Tensor:
        """The clean-image estimate from a velocity: x1_hat = x_t + (1 - t) v."""
        _, b, x_w, v_w = _operands(self, x_t, model_output, t, ("x_t", "model_output"))
        return (x_w + b * v_w).to(x_t.dtype)

    def renoise(
        self, x_prev: Tensor, t: Timestep, t_prev: Timestep, noise: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Tensor:
        """The forward transition from t' = t_prev back to the noisier t < t' (RePaint's "jump back"):

            x_t = (t / t') x_{t'} + sqrt((1 - t)^2 - (t (1 - t') / t')^2) z,     z ~ N(0, I)

        which keeps x_t = t x1 + (1 - t) (fresh noise) when x_{t'} = t' x1 + (1 - t') (noise).
        """
        t_now, t_to = self._time(t, x_prev), self._time(t_prev, x_prev, "t_prev")
        if bool((t_to <= t_now).any()):
            raise ValueError(
                f"t_prev must be larger than t for the flow (it runs from 0 to 1), got t={t}, t_prev={t_prev}"
            )
        keep = t_now / t_to
        extra = ((1 - t_now) ** 2 - (keep * (1 - t_to)) ** 2).clamp(min=0).sqrt()
        z = _noise(noise, generator, x_prev).to(keep.dtype)
        return (keep * x_prev.to(keep.dtype) + extra * z).to(x_prev.dtype)

    def step(
        self, x_t: Tensor, model_output: Tensor, t: Timestep, t_prev: Timestep, noise: Tensor | None = None,
        generator: Generator | None = None,
    ) -> Tensor:
        """One Euler step of dx/dt = v from t to t_prev (> t): x_{t'} = x_t + (t' - t) v.

        The flow is deterministic, so ``noise`` and ``generator`` are accepted and ignored.
        """
        t_now, _, x_w, v_w = _operands(self, x_t, model_output, t, ("x_t", "model_output"))
        return (x_w + (self._time(t_prev, x_t, "t_prev") - t_now) * v_w).to(x_t.dtype)

    @staticmethod
    def timesteps(num_steps: int, t_start: float = 0.0, t_end: float = 1.0) -> list[float]:
        """num_steps + 1 evenly spaced times from t_start to t_end (the Euler grid)."""
        num_steps = integer(num_steps, "num_steps", minimum=1, maximum=MAX_STEPS)
        if not 0.0 <= real_number(t_start, "t_start") < real_number(t_end, "t_end") <= 1.0:
            raise ValueError(f"need 0 <= t_start < t_end <= 1, got {t_start}, {t_end}")
        return torch.linspace(t_start, t_end, num_steps + 1, dtype=torch.float64).tolist()


Schedule = Union[DDPMSchedule, FlowSchedule]


def check_schedule(schedule: object) -> None:
    """ValueError unless schedule is a DDPMSchedule or a FlowSchedule (what samplers and edits drive)."""
    if not isinstance(schedule, (DDPMSchedule, FlowSchedule)):
        raise ValueError(
            f"schedule must be a DDPMSchedule or a FlowSchedule (from minidiff.schedule), got {schedule!r:.80}"
        )


# ----------------------------------------------------------------------------------------
# Strided timesteps
# ----------------------------------------------------------------------------------------


def strided_timesteps(start: int = 990, stride: int = 30, end: int = 0) -> list[int]:
    """The course's strided schedule: [start, start - stride, ..., end], strictly decreasing.

    With the defaults, [990, 960, ..., 30, 0] (34 steps); index i_start = 1, 3, 5, 7, 10, 20
    maps to t = 960, 900, 840, 780, 690, 390 (``timesteps.index(t)`` goes back). The last
    entry is always ``end`` (appended when stride does not divide start - end).
    """
    start, end = integer(start, "start", minimum=0, maximum=MAX_STEPS), integer(end, "end", minimum=0)
    stride = integer(stride, "stride")
    if stride <= 0:
        raise ValueError(f"stride must be a positive int, got {stride}")
    if start < end:
        raise ValueError(f"need 0 <= end <= start, got start={start}, end={end}")
    ts = list(range(start, end - 1, -stride))
    if ts[-1] != end:
        ts.append(end)
    return ts
