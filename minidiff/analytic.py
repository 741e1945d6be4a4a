"""Exact denoisers: the best possible model output when the data distribution is known.

A trained network approximates E[clean image | x_t]. For two kinds of data that
expectation has a closed form, which gives denoisers whose answers are known exactly:
samplers, guidance and edits can then be tested (and taught) without training anything.

1. A finite data set D = {d_1, ..., d_N} (the empirical distribution of a training set).
   For DDPM, x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps, so the posterior over the members is
   a softmax of Gaussian log-likelihoods::

       w_i(x_t)  = softmax_i( log pi_i - |x_t - sqrt(ab_t) d_i|^2 / (2 (1 - ab_t)) )
       x0_hat    = sum_i w_i d_i
       eps_hat   = (x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t)

   For flow matching, x_t = (1 - t) z + t x_1, so the same softmax with mean t d_i and
   variance (1 - t)^2 gives x1_hat, and the velocity is v = (x1_hat - x_t) / (1 - t).
   A sampler driven by this denoiser can only ever produce members of D: the ideal model of
   a finite training set memorises it (a useful thing to see once).

2. Gaussian data, every pixel independent N(mu, s^2). Then x_t is Gaussian too and the
   posterior mean is linear in x_t (see ``gaussian_denoiser``), so the distribution after
   any number of sampler steps can be computed in closed form.

Both return plain callables in the conventions of ``minidiff.guidance`` and
``minidiff.samplers``: a *model* ``model(x_t, t, cond)`` or a *denoiser* ``den(x_t, t)``,
whose output is eps for a DDPMSchedule and the velocity for a FlowSchedule.
"""

from __future__ import annotations

from typing import Callable

import torch

from minidiff.checks import integer, real_number
from minidiff.schedule import FlowSchedule, Schedule, check_schedule

__all__ = ["finite_data_model", "finite_data_denoiser", "gaussian_denoiser", "posterior_weights"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def posterior_weights(
    x_t: torch.Tensor, data: torch.Tensor, a: torch.Tensor, b: torch.Tensor, log_prior: torch.Tensor
) -> torch.Tensor:
    """w_i(x_t) = softmax_i(log pi_i - |x_t - a d_i|^2 / (2 b^2)), shape (B, N), float64.

    x_t (B, ...), data (N, ...), a and b (B,) from x_t = a * data + b * noise, log_prior (B, N).
    b is floored at 1e-6 so that the weights stay defined at the clean end (b = 0), where
    they become one-hot on the nearest member.
    """
    x = x_t.reshape(x_t.shape[0], -1).to(torch.float64)
    d = data.reshape(data.shape[0], -1).to(torch.float64)
    sq_dist = ((x[:, None, :] - a[:, None, None] * d[None, :, :]) ** 2).sum(-1)  # (B, N)
    var = b.clamp(min=1e-6) ** 2
    return torch.softmax(log_prior - sq_dist / (2 * var[:, None]), dim=1)


def finite_data_model(
    data: torch.Tensor,
    schedule: Schedule,
    labels: torch.Tensor | None = None,
    num_classes: int | None = None,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """The optimal class-conditional model of a finite data set: model(x_t, t, cond).

    data: (N, C, H, W) members; labels: (N,) ints in [0, num_classes). cond is a (B, K)
    tensor of class weights, one-hot for "class k" and all zeros for "no condition" (the
    null condition of classifier-free guidance); None also means no condition. It sets the
    prior over members: pi_i proportional to cond[label_i], uniform for the zero vector.
    The output is eps for a DDPMSchedule and the velocity for a FlowSchedule, in x_t's dtype
    and on x_t's device (the sums themselves run on the CPU in float64: it is a test oracle).
    """
    if not isinstance(data, torch.Tensor) or data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(f"data must be a non-empty (N, ...) tensor, got {getattr(data, 'shape', data)!r}")
    check_schedule(schedule)
    if num_classes is not None:
        num_classes = integer(num_classes, "num_classes", minimum=1)
    if labels is None:
        labels = torch.zeros(data.shape[0], dtype=torch.long)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.shape[0] != data.shape[0]:
        raise ValueError(f"got {data.shape[0]} data points but {labels.shape[0]} labels")
    k = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    if bool((labels < 0).any()) or bool((labels >= k).any()):
        raise ValueError(f"labels must lie in [0, {k}), got {labels.unique().tolist()}")
    one_hot = torch.nn.functional.one_hot(labels, k).to(torch.float64)  # (N, K)

    def model(x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if x_t.shape[1:] != data.shape[1:]:
            raise ValueError(f"x_t has shape {tuple(x_t.shape)} but the data points are {tuple(data.shape[1:])}")
        batch = x_t.shape[0]
        x = x_t.cpu().to(torch.float64)
        a, b = schedule.signal_and_noise(t, x)  # x_t = a data + b noise; (B, 1, ..., 1) or 0-d
        if cond is None:
            cond = torch.zeros(batch, k)
        if not isinstance(cond, torch.Tensor) or cond.shape != (batch, k):
            got = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
            raise ValueError(f"cond must be a ({batch}, {k}) tensor of class weights, got {got}")
        cond = cond.to(torch.float64).cpu()
        prior = cond @ one_hot.T  # (B, N): weight of each member under each row's condition
        prior = torch.where(cond.sum(1, keepdim=True) > 0, prior, torch.ones_like(prior))
        w = posterior_weights(x, data, a.reshape(-1).expand(batch), b.reshape(-1).expand(batch), prior.log())
        x_data = (w @ data.reshape(data.shape[0], -1).to(torch.float64)).reshape(x_t.shape)
        if isinstance(schedule, FlowSchedule):
            out = (x_data - x) / b.clamp(min=1e-6)  # v = (x1_hat - x_t) / (1 - t)
        else:
            out = (x - a * x_data) / b  # eps_hat = (x_t - sqrt(ab) x0_hat) / sqrt(1 - ab)
        return out.to(device=x_t.device, dtype=x_t.dtype)

    return model


def finite_data_denoiser(data: torch.Tensor, schedule: Schedule) -> Denoiser:
    """The optimal unconditional denoiser den(x_t, t) of a finite data set (N, C, H, W)."""
    model = finite_data_model(data, schedule)
    return lambda x_t, t: model(x_t, t, None)


def gaussian_denoiser(mean: float, std: float, schedule: Schedule) -> Denoiser:
    """The optimal denoiser when every pixel of the data is independent N(mean, std^2).

    DDPM: x_t ~ N(sqrt(ab) mean, V) with V = ab std^2 + 1 - ab, and
        x0_hat = mean + sqrt(ab) std^2 / V * (x_t - sqrt(ab) mean),
        eps_hat = (x_t - sqrt(ab) x0_hat) / sqrt(1 - ab).
    Flow: x_t ~ N(t mean, V) with V = (1 - t)^2 + t^2 std^2; the flow keeps the standard
    score (x_t - t mean) / sqrt(V) fixed, so its velocity is
        v = mean + (t std^2 - (1 - t)) / V * (x_t - t mean),
    which stays finite at t = 1.
    """
    mean, std = real_number(mean, "mean"), real_number(std, "std", positive=True)
    check_schedule(schedule)

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = x_t.to(torch.float64)
        a, b = schedule.signal_and_noise(t, x)  # x_t = a data + b noise
        var = a**2 * std**2 + b**2
        if isinstance(schedule, FlowSchedule):
            tt = a
            out = mean + (tt * std**2 - (1 - tt)) / var * (x - tt * mean)
        else:
            x0_hat = mean + a * std**2 / var * (x - a * mean)
            out = (x - a * x0_hat) / b
        return out.to(x_t.dtype)

    return den
