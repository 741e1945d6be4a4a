"""Noise processes: the math of a schedule in one place.

Two processes serve every lesson.

DDPM (Ho et al., 2020), with discrete timesteps t in {0, ..., T-1}::

    alphas_cumprod[t] = ab_t = prod_{s <= t} (1 - beta_s)
    x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps,            eps ~ N(0, I)

Flow matching (Lipman et al., 2023; the course's Part B), with continuous t in [0, 1]::

    x_t = (1 - t) x_0 + t x_1,     x_0 ~ N(0, I) noise,  x_1 data,  u = x_1 - x_0

Beware the clash of names: in DDPM x_0 is the *clean image*, in flow matching x_0 is the
*noise* (the course keeps both conventions, and so do we). So that samplers and edits can
drive either process without caring, both schedules speak the same three verbs, always
with the clean image first:

    add_noise(data, noise, t)            -> x_t
    predict_data(x_t, model_output, t)   -> estimate of the clean image
    step(x_t, model_output, t, t_next, noise=None, generator=None) -> x at t_next

Tensors are (B, C, H, W) images in the examples, but any (B, ...) shape works. ``t`` is a
Python number, a 0-d tensor or a (B,) tensor (one timestep per batch element).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch

from minidiff.checks import integer, real_number

Timestep = Union[int, float, torch.Tensor]

__all__ = [
    "DDPMSchedule",
    "FlowSchedule",
    "check_schedule",
    "strided_timesteps",
    "timestep_index",
    "linear_betas",
    "cosine_betas",
    "dynamic_threshold",
]


# ----------------------------------------------------------------------------------------
# Beta schedules
# ----------------------------------------------------------------------------------------


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
    if not 0.0 < real_number(max_beta, "max_beta") < 1.0:
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta}")
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
    if not 0.0 < real_number(ratio, "ratio") <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if not real_number(max_value, "max_value") >= 1.0:
        raise ValueError(f"max_value must be >= 1 (s is clamped to [1, max_value]), got {max_value}")
    dtype = x0_hat.dtype
    flat = x0_hat.reshape(x0_hat.shape[0], -1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # quantile is not implemented for half precision
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1.0, max=max_value).unsqueeze(1)
    return (flat.clamp(-s, s) / s).reshape(x0_hat.shape).to(dtype)


# ----------------------------------------------------------------------------------------
# Helpers for validating and broadcasting timesteps
# ----------------------------------------------------------------------------------------


def _check_batch(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension (B, ...), got a 0-d tensor")


def _same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    for x, name in ((a, name_a), (b, name_b)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """Schedule arithmetic runs in float32 (float64 for float64 inputs), whatever the model's dtype."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _per_sample(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a scalar or (B,) coefficient to broadcast against x of shape (B, ...)."""
    if coef.ndim == 0:
        return coef
    return coef.reshape(-1, *([1] * (x.ndim - 1)))


def _timesteps_as_tensor(t: Timestep, batch: int, name: str) -> torch.Tensor:
    """Turn t into a 0-d or (B,) tensor, checking its rank and batch size."""
    if isinstance(t, torch.Tensor):
        tt = t
    else:
        try:
            tt = torch.tensor(t)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name} must be a number or a tensor, got {t!r}") from err
    if tt.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a (B,) tensor, got shape {tuple(tt.shape)}")
    if tt.ndim == 1 and tt.shape[0] != batch:
        raise ValueError(f"{name} has {tt.shape[0]} entries but the batch has {batch} samples")
    if tt.is_complex() or tt.dtype == torch.bool:
        raise ValueError(f"{name} must be a real number or tensor of them, got dtype {tt.dtype}")
    return tt


# ----------------------------------------------------------------------------------------
# DDPM
# ----------------------------------------------------------------------------------------


class DDPMSchedule:
    """A discrete DDPM noise process with the strided reverse step of the course.

    Holds betas, alphas = 1 - betas and alphas_cumprod (all float32 of length T, like
    diffusers' DDPMScheduler, so its numbers can be compared to ours to 1e-5).
    """

    def __init__(
        self,
        betas: torch.Tensor,
        *,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
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
        self.thresholding = thresholding
        self.dynamic_thresholding_ratio = dynamic_thresholding_ratio
        self.sample_max_value = sample_max_value
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range

    # -- constructors ---------------------------------------------------------------------

    @classmethod
    def deepfloyd(cls, num_timesteps: int = 1000, thresholding: bool = False) -> "DDPMSchedule":
        """DeepFloyd IF stage 1: 1000 steps of the cosine ("squaredcos_cap_v2") schedule.

        The course's update uses x0_hat as the network gives it, so thresholding is off by
        default; ``thresholding=True`` adds IF's own dynamic thresholding (ratio 0.95, max 1.5).
        """
        return cls(
            cosine_betas(num_timesteps),
            thresholding=thresholding,
            dynamic_thresholding_ratio=0.95,
            sample_max_value=1.5,
        )

    @classmethod
    def linear(cls, T: int = 300, beta_start: float = 1e-4, beta_end: float = 0.02) -> "DDPMSchedule":
        """The linear schedule of Ho et al. (2020); T = 300 is the course's MNIST DDPM."""
        return cls(linear_betas(T, beta_start, beta_end))

    @classmethod
    def cosine(cls, T: int = 1000) -> "DDPMSchedule":
        """The cosine schedule of Nichol & Dhariwal (2021) with T steps."""
        return cls(cosine_betas(T))

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def __repr__(self) -> str:
        return (
            f"DDPMSchedule(T={self.num_timesteps}, thresholding={self.thresholding}, "
            f"clip_sample={self.clip_sample})"
        )

    # -- indexing -------------------------------------------------------------------------

    def _index(self, t: Timestep, batch: int, name: str = "t", allow_minus_one: bool = False) -> torch.Tensor:
        tt = _timesteps_as_tensor(t, batch, name)
        if tt.is_floating_point():
            if not bool((tt.isfinite() & (tt == tt.round())).all()):
                raise ValueError(
                    f"{name} must hold integer DDPM timesteps in [0, {self.num_timesteps - 1}], got {tt}"
                )
        tt = tt.long()
        low = -1 if allow_minus_one else 0
        if bool((tt < low).any()) or bool((tt >= self.num_timesteps).any()):
            what = "-1 (the clean image) or " if allow_minus_one else ""
            raise ValueError(
                f"{name} out of range: got {tt.tolist()}, need {what}an integer in "
                f"[0, {self.num_timesteps - 1}] for a {self.num_timesteps}-step schedule"
            )
        return tt

    def _abar(self, t: torch.Tensor, device: torch.device) -> torch.Tensor:
        """alphas_cumprod[t], with ab = 1 at t = -1 (the clean image). float32."""
        table = self.alphas_cumprod.to(device)
        t = t.to(device)
        return torch.where(t >= 0, table[t.clamp(min=0)], torch.ones((), device=device))

    # -- forward process and its inverses ----------------------------------------------------

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: Timestep) -> torch.Tensor:
        """Forward process q(x_t | x_0): x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise."""
        _check_batch(x0, "x0")
        _same_shape(x0, noise, "x0", "noise")
        ab = _per_sample(self._abar(self._index(t, x0.shape[0]), x0.device), x0)
        work = _work_dtype(x0)
        ab = ab.to(work)
        return (ab.sqrt() * x0.to(work) + (1 - ab).sqrt() * noise.to(work)).to(x0.dtype)

    def predict_x0(self, x_t: torch.Tensor, eps: torch.Tensor, t: Timestep) -> torch.Tensor:
        """Invert add_noise given the noise: x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)."""
        _check_batch(x_t, "x_t")
        _same_shape(x_t, eps, "x_t", "eps")
        ab = _per_sample(self._abar(self._index(t, x_t.shape[0]), x_t.device), x_t)
        work = _work_dtype(x_t)
        ab = ab.to(work)
        return ((x_t.to(work) - (1 - ab).sqrt() * eps.to(work)) / ab.sqrt()).to(x_t.dtype)

    def predict_eps(self, x_t: torch.Tensor, x0: torch.Tensor, t: Timestep) -> torch.Tensor:
        """Invert add_noise given the image: eps_hat = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)."""
        _check_batch(x_t, "x_t")
        _same_shape(x_t, x0, "x_t", "x0")
        ab = _per_sample(self._abar(self._index(t, x_t.shape[0]), x_t.device), x_t)
        work = _work_dtype(x_t)
        ab = ab.to(work)
        return ((x_t.to(work) - ab.sqrt() * x0.to(work)) / (1 - ab).sqrt()).to(x_t.dtype)

    def predict_data(self, x_t: torch.Tensor, model_output: torch.Tensor, t: Timestep) -> torch.Tensor:
        """The clean-image estimate from an eps-prediction (its first C channels when 2C)."""
        eps, _ = self.split_output(x_t, model_output)
        return self.predict_x0(x_t, eps, t)

    # -- the reverse step -------------------------------------------------------------------

    @staticmethod
    def split_output(x_t: torch.Tensor, model_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Split a model output into (eps, variance values or None).

        C channels: eps only. 2C channels: eps and IF's learned-range values v in [-1, 1].
        """
        _check_batch(x_t, "x_t")
        if x_t.ndim < 2 or model_output.ndim != x_t.ndim:
            raise ValueError(
                f"x_t and model_output must both be (B, C, ...) tensors of the same rank, "
                f"got shapes {tuple(x_t.shape)} and {tuple(model_output.shape)}"
            )
        c = x_t.shape[1]
        same_rest = model_output.shape[0] == x_t.shape[0] and model_output.shape[2:] == x_t.shape[2:]
        if same_rest and model_output.shape[1] == c:
            return model_output, None
        if same_rest and model_output.shape[1] == 2 * c:
            eps, v = model_output.split(c, dim=1)
            return eps, v
        raise ValueError(
            f"model_output must have shape {tuple(x_t.shape)} (eps) or with {2 * c} channels "
            f"(eps + learned-range variance), got {tuple(model_output.shape)}"
        )

    def variance(
        self, t: Timestep, t_prev: Timestep, v: torch.Tensor | None = None, batch: int = 1
    ) -> torch.Tensor:
        """sigma^2 of the step t -> t_prev.

        Fixed: the posterior variance beta~ = (1 - ab_{t'}) / (1 - ab_t) * beta_t.
        Learned range (Nichol & Dhariwal; IF): log sigma^2 = frac log beta_t + (1 - frac) log beta~,
        frac = (v + 1) / 2, so v = -1 gives beta~ and v = +1 gives beta_t.
        Here alpha_t = ab_t / ab_{t'} and beta_t = 1 - alpha_t span the whole stride.
        Returns a (B,) tensor, or v's shape when v is given.
        """
        if v is not None:
            batch = v.shape[0]
        t = self._index(t, batch)
        t_prev = self._index(t_prev, batch, "t_prev", allow_minus_one=True)
        device = v.device if v is not None else self.alphas_cumprod.device
        _, _, beta, posterior = self._stride(t, t_prev, device, torch.float32)
        if v is None:
            return posterior.expand(batch) if posterior.ndim == 0 else posterior
        return self._learned_log_variance(v, _per_sample(beta, v), _per_sample(posterior, v)).exp()

    def _stride(
        self, t: torch.Tensor, t_prev: torch.Tensor, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ab_t, ab_t', beta_t, beta~_t) of the stride t -> t', as scalars or (B,) tensors.

        beta_t = 1 - ab_t / ab_t' and the posterior variance beta~_t = (1 - ab_t') / (1 - ab_t) beta_t,
        clamped at 1e-20 so that its log stays finite at t' = -1.
        """
        ab_t = self._abar(t, device).to(dtype)
        ab_prev = self._abar(t_prev, device).to(dtype)
        beta = 1 - ab_t / ab_prev
        posterior = ((1 - ab_prev) / (1 - ab_t) * beta).clamp(min=1e-20)
        return ab_t, ab_prev, beta, posterior

    @staticmethod
    def _learned_log_variance(v: torch.Tensor, beta: torch.Tensor, posterior: torch.Tensor) -> torch.Tensor:
        """log sigma^2 = frac log beta_t + (1 - frac) log beta~_t, frac = (v + 1) / 2 (shapes broadcast)."""
        frac = (v + 1) / 2
        return frac * beta.log() + (1 - frac) * posterior.log()

    def step(
        self,
        x_t: torch.Tensor,
        model_output: torch.Tensor,
        t: Timestep,
        t_prev: Timestep,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One strided DDPM step t -> t_prev (the course's iterative denoising update).

            x0_hat  = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)
            x_{t'}  = sqrt(ab_{t'}) beta_t / (1 - ab_t) * x0_hat
                    + sqrt(alpha_t) (1 - ab_{t'}) / (1 - ab_t) * x_t  +  sigma z

        with alpha_t = ab_t / ab_{t'}, beta_t = 1 - alpha_t, z ~ N(0, I) and sigma^2 from
        ``variance`` (fixed posterior for C-channel outputs, learned range for 2C). t_prev = -1
        steps to the clean image (ab = 1). Noise is added wherever t > 0. ``noise`` is the z
        to use (else it is drawn from ``generator``).
        """
        eps, v = self.split_output(x_t, model_output)
        batch = x_t.shape[0]
        t_idx = self._index(t, batch)
        prev_idx = self._index(t_prev, batch, "t_prev", allow_minus_one=True)
        if bool((prev_idx >= t_idx).any()):
            raise ValueError(f"t_prev must be smaller than t, got t={t_idx.tolist()}, t_prev={prev_idx.tolist()}")
        work = _work_dtype(x_t)
        device = x_t.device
        ab_t, ab_prev, beta, posterior = (_per_sample(c, x_t) for c in self._stride(t_idx, prev_idx, device, work))
        alpha = ab_t / ab_prev

        x0_hat = self.predict_x0(x_t.to(work), eps.to(work), t_idx)
        if self.thresholding:
            x0_hat = dynamic_threshold(x0_hat, self.dynamic_thresholding_ratio, self.sample_max_value)
        elif self.clip_sample:
            x0_hat = x0_hat.clamp(-self.clip_sample_range, self.clip_sample_range)

        mean = ab_prev.sqrt() * beta / (1 - ab_t) * x0_hat + alpha.sqrt() * (1 - ab_prev) / (1 - ab_t) * x_t.to(work)

        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, device=device, dtype=x_t.dtype)
        else:
            _same_shape(x_t, noise, "x_t", "noise")
        if v is None:
            sigma = posterior.sqrt()
        else:  # exp(log var / 2), in the same order of operations as diffusers, for parity to 1e-5
            sigma = (0.5 * self._learned_log_variance(v.to(work), beta, posterior)).exp()
        noisy = _per_sample((t_idx > 0).to(device=device, dtype=work), x_t)
        return (mean + noisy * sigma.to(work) * noise.to(work)).to(x_t.dtype)


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

    def __repr__(self) -> str:
        return "FlowSchedule()"

    @staticmethod
    def _time(t: Timestep, x: torch.Tensor, name: str = "t") -> torch.Tensor:
        _check_batch(x, "x")
        tt = _timesteps_as_tensor(t, x.shape[0], name)
        tt = tt.to(device=x.device, dtype=_work_dtype(x))
        if bool(((tt < 0) | (tt > 1)).any()) or bool(tt.isnan().any()):
            raise ValueError(f"flow-matching {name} must lie in [0, 1], got {tt.tolist()}")
        return _per_sample(tt, x)

    def add_noise(self, x1: torch.Tensor, x0: torch.Tensor, t: Timestep) -> torch.Tensor:
        """The path: x_t = (1 - t) x0 + t x1 (data x1 first, noise x0 second, like DDPM's add_noise)."""
        _same_shape(x1, x0, "x1", "x0")
        tt = self._time(t, x1)
        return ((1 - tt) * x0 + tt * x1).to(x1.dtype)

    interpolate = add_noise

    @staticmethod
    def velocity(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """The training target u = x1 - x0."""
        _same_shape(x0, x1, "x0", "x1")
        return x1 - x0

    def predict_x1(self, x_t: torch.Tensor, v: torch.Tensor, t: Timestep) -> torch.Tensor:
        """Data estimate from a velocity: x1_hat = x_t + (1 - t) v."""
        _same_shape(x_t, v, "x_t", "v")
        return (x_t + (1 - self._time(t, x_t)) * v).to(x_t.dtype)

    def predict_x0(self, x_t: torch.Tensor, v: torch.Tensor, t: Timestep) -> torch.Tensor:
        """Noise estimate from a velocity: x0_hat = x_t - t v."""
        _same_shape(x_t, v, "x_t", "v")
        return (x_t - self._time(t, x_t) * v).to(x_t.dtype)

    def velocity_from_x1(self, x_t: torch.Tensor, x1_hat: torch.Tensor, t: Timestep) -> torch.Tensor:
        """v = (x1_hat - x_t) / (1 - t); undefined at t = 1."""
        _same_shape(x_t, x1_hat, "x_t", "x1_hat")
        tt = self._time(t, x_t)
        if bool((tt >= 1).any()):
            raise ValueError("velocity_from_x1 needs t < 1: at t = 1, x_t is the data and v is not determined")
        return ((x1_hat - x_t) / (1 - tt)).to(x_t.dtype)

    def velocity_from_x0(self, x_t: torch.Tensor, x0_hat: torch.Tensor, t: Timestep) -> torch.Tensor:
        """v = (x_t - x0_hat) / t; undefined at t = 0."""
        _same_shape(x_t, x0_hat, "x_t", "x0_hat")
        tt = self._time(t, x_t)
        if bool((tt <= 0).any()):
            raise ValueError("velocity_from_x0 needs t > 0: at t = 0, x_t is the noise and v is not determined")
        return ((x_t - x0_hat) / tt).to(x_t.dtype)

    def predict_data(self, x_t: torch.Tensor, model_output: torch.Tensor, t: Timestep) -> torch.Tensor:
        """The clean-image estimate, x1_hat (same role as DDPMSchedule.predict_data)."""
        return self.predict_x1(x_t, model_output, t)

    def step(
        self,
        x_t: torch.Tensor,
        model_output: torch.Tensor,
        t: Timestep,
        t_next: Timestep,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One Euler step of dx/dt = v: x_{t_next} = x_t + (t_next - t) v.

        The flow is deterministic, so ``noise`` and ``generator`` are accepted and ignored.
        """
        _same_shape(x_t, model_output, "x_t", "model_output")
        tt = self._time(t, x_t)
        tn = self._time(t_next, x_t, "t_next")
        return (x_t + (tn - tt) * model_output).to(x_t.dtype)

    @staticmethod
    def timesteps(num_steps: int, t_start: float = 0.0, t_end: float = 1.0) -> list[float]:
        """num_steps + 1 evenly spaced times from t_start to t_end (the Euler grid)."""
        num_steps = integer(num_steps, "num_steps", minimum=1)
        if not 0.0 <= real_number(t_start, "t_start") < real_number(t_end, "t_end") <= 1.0:
            raise ValueError(f"need 0 <= t_start < t_end <= 1, got {t_start}, {t_end}")
        return torch.linspace(t_start, t_end, num_steps + 1, dtype=torch.float64).tolist()


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
    maps to t = 960, 900, 840, 780, 690, 390. The last entry is always ``end`` (appended
    when stride does not divide start - end).
    """
    start, end = integer(start, "start", minimum=0), integer(end, "end", minimum=0)
    stride = integer(stride, "stride")
    if stride <= 0:
        raise ValueError(f"stride must be a positive int, got {stride}")
    if start < end:
        raise ValueError(f"need 0 <= end <= start, got start={start}, end={end}")
    ts = list(range(start, end - 1, -stride))
    if ts[-1] != end:
        ts.append(end)
    return ts


def timestep_index(timesteps: Sequence[int], t: int) -> int:
    """The index i with timesteps[i] == t (inverse of timesteps[i_start])."""
    ts = list(timesteps)
    if t not in ts:
        where = f"(first {ts[:3]}..., last {ts[-1]})" if ts else "(the timesteps list is empty)"
        raise ValueError(f"timestep {t} is not in the schedule {where}")
    return ts.index(t)
