"""Guidance: rules that turn a conditional *model* into a *denoiser*.

A model is ``model(x_t, t, cond) -> output`` with x_t (B, C, H, W), t (B,) and cond a tensor
whose first dimension is the batch: T5 prompt embeddings (B, 77, 4096) for IF, class one-hot
vectors (B, 10) or labels (B,) for MNIST. A denoiser is ``den(x_t, t) -> output`` with the
condition bound, which is what ``minidiff.samplers`` and ``minidiff.edit`` drive.

    cfg         classifier-free guidance (Ho & Salimans, 2022)
    anagram     view-averaged guidance for visual anagrams (Geng et al., 2024)
    hybrid      low frequencies from one prompt, high from another (factorized diffusion,
                Geng et al., 2024); ``hybrid_bands`` and ``factorized`` for N components

All of them work on eps (DDPM) and on velocities (flow matching) alike, since each is a
linear combination of model outputs. For IF-style outputs with 2C channels (eps and the
learned-range variance values) the guidance rule applies to the eps half only; each
function's docstring says where its variance half comes from.

cond and uncond may have batch 1 (one prompt for the whole batch) or B. Each rule checks its
arguments once, when it is built (minidiff.checks); its denoiser is the rule's equation.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from minidiff.checks import (
    batched_condition, gaussian_kernel_args, guidance_rule, image_batch, invertible_view, model_output, pairs,
    sigma_list, time_interval,
)
from minidiff.filters import high_pass, low_pass
from minidiff.schedule import split_output
from minidiff.views import View, get_view

__all__ = ["Model", "cfg", "anagram", "factorized", "hybrid", "hybrid_bands", "frequency_bands"]

Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Output = tuple[torch.Tensor, "torch.Tensor | None"]  # (eps or velocity, learned-range variance values or None)


def _model_outputs(model: Model, x_t: torch.Tensor, t: torch.Tensor, conds: dict[str, torch.Tensor]) -> list[Output]:
    """The model's outputs for x_t under each condition, from one batched call.

    The batch is cat([x_t] * K) with conditions cat([cond_1, ..., cond_K]) (each expanded to
    x_t's batch); returns [(pred_k, variance values of output k or None)] in the order of conds.
    """
    batch = image_batch(x_t, "x_t").shape[0]
    rows = [batched_condition(cond, batch, name) for name, cond in conds.items()]
    t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(batch)
    outputs = model(torch.cat([x_t] * len(rows)), torch.cat([t] * len(rows)), torch.cat(rows)).chunk(len(rows))
    for output in outputs:
        model_output(x_t, output)  # a model of the wrong shape is named here, not deep inside a step
    return [split_output(x_t, output) for output in outputs]


def _join(pred: torch.Tensor, var: torch.Tensor | None) -> torch.Tensor:
    return pred if var is None else torch.cat([pred, var], dim=1)


def _time_of(t: torch.Tensor | float) -> float:
    """The one time of a sampler step: samplers pass a scalar or (B,) copies of one value."""
    return float(torch.as_tensor(t).reshape(-1)[0])


# ----------------------------------------------------------------------------------------
# Classifier-free guidance
# ----------------------------------------------------------------------------------------


def cfg(
    model: Model, cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float, *,
    interval: tuple[float, float] | None = None,
) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans, 2022; course 1.6):

        eps = eps_u + guidance_scale (eps_c - eps_u)

    eps_c = model(x_t, t, cond) and eps_u = model(x_t, t, uncond) come from one model call on
    the batch cat([x_t, x_t]) with conditions cat([cond, uncond]). guidance_scale = 1 is the
    plain conditional model (called alone, at half the cost), 0 the unconditional one, > 1
    (IF: 7) trades diversity for fidelity. For 2C outputs the variance half is the conditional
    branch's, as in diffusers' IF pipeline.

    interval (t_lo, t_hi): guidance in a limited interval (Kynkaenniemi et al., 2024). Only
    steps at times t_lo <= t <= t_hi, in the schedule's own time (a DDPM step, or the flow
    time), are guided; the others call the conditional model alone (eps = eps_c, a call of
    batch B). Guidance at the noisiest steps pulls every sample of a class towards one
    prototype, and at the cleanest it barely changes anything, so guiding only in between
    keeps what guidance buys (the asked class) with less loss of variety.
    """
    guidance_scale = guidance_rule(model, {"cond": cond, "uncond": uncond}, guidance_scale)
    t_lo, t_hi = time_interval(interval) if interval is not None else (None, None)

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # At scale 1 eps_u cancels, and outside the interval it is not used: eps = eps_c, half the work.
        if guidance_scale == 1 or (interval is not None and not t_lo <= _time_of(t) <= t_hi):
            ((eps_c, var_c),) = _model_outputs(model, x_t, t, {"cond": cond})
            return _join(eps_c, var_c)
        (eps_c, var_c), (eps_u, _) = _model_outputs(model, x_t, t, {"cond": cond, "uncond": uncond})
        return _join(eps_u + guidance_scale * (eps_c - eps_u), var_c)

    return den


# ----------------------------------------------------------------------------------------
# Visual anagrams
# ----------------------------------------------------------------------------------------


def anagram(
    model: Model, views_and_conds: Sequence[tuple[View | str, torch.Tensor]], uncond: torch.Tensor,
    guidance_scale: float,
) -> Denoiser:
    """Visual anagrams (Geng et al., 2024; course 1.8): one image, one prompt per view.

        eps_k = eps_u(V_k x_t) + guidance_scale (eps(V_k x_t, prompt k) - eps_u(V_k x_t))
        eps   = (1/N) sum_k  V_k^{-1}( eps_k )

    Each view V_k (a View or a name for ``get_view``, e.g. "identity" and "flip") is applied
    to x_t, the model is guided with prompt k on the viewed image, and the prediction is
    mapped back with the inverse view. Everything goes into one model call of batch 2NB: the
    N viewed copies with their own conditions, then the same copies with uncond.

    The 2C variance half: each view's conditional variance values are mapped back by the
    view's *pixel permutation* and averaged. Variance values say how noisy a pixel is, so
    they move with the pixels but never change sign; the views of minidiff.views are signed
    permutations S, for which |S^{-1}| v = S^{-1}(v) * S^{-1}(1) removes any sign (negate).
    """
    checked = pairs(views_and_conds, "views_and_conds", "anagram", "view")
    views = [get_view(v) if isinstance(v, str) else invertible_view(v) for v, _ in checked]
    conds = {f"views_and_conds[{k}] condition": c for k, (_, c) in enumerate(checked)}
    guidance_scale = guidance_rule(model, {**conds, "uncond": uncond}, guidance_scale)

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch, n = image_batch(x_t, "x_t").shape[0], len(views)
        # The N viewed copies as one batch of N*B, each with its own prompt: one model call serves all.
        viewed = torch.cat([v.view(x_t) for v in views])
        cond = torch.cat([batched_condition(c, batch, name) for name, c in conds.items()])
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(batch).repeat(n)
        (eps_c, var_c), (eps_u, _) = _model_outputs(model, viewed, t, {"cond": cond, "uncond": uncond})
        eps_k = (eps_u + guidance_scale * (eps_c - eps_u)).chunk(n)
        eps = torch.stack([v.inverse(e) for v, e in zip(views, eps_k)]).mean(0)
        if var_c is None:
            return eps
        ones = torch.ones_like(x_t)
        var = torch.stack([v.inverse(q) * v.inverse(ones) for v, q in zip(views, var_c.chunk(n))]).mean(0)
        return _join(eps, var)

    return den


# ----------------------------------------------------------------------------------------
# Hybrid images / factorized diffusion
# ----------------------------------------------------------------------------------------


def hybrid(
    model: Model,
    cond_low: torch.Tensor,
    cond_high: torch.Tensor,
    uncond: torch.Tensor,
    guidance_scale: float,
    kernel_size: int = 33,
    sigma: float = 2.0,
) -> Denoiser:
    """Hybrid images (course 1.9; factorized diffusion with two frequency bands):

        eps_low  = eps_u + guidance_scale (eps(x_t, cond_low)  - eps_u)
        eps_high = eps_u + guidance_scale (eps(x_t, cond_high) - eps_u)
        eps      = low_pass(eps_low) + high_pass(eps_high)

    cond_low is what you see from afar, cond_high what you see up close; the filters are the
    Gaussian of minidiff.filters (kernel 33, sigma 2 as in the course). Since
    low_pass(e) + high_pass(e) == e, the result is the plain CFG prediction whenever both
    prompts agree. One model call of batch 3B. Variance half: mean of the two.
    """
    kernel_size, sigma = gaussian_kernel_args(kernel_size, sigma)
    conds = {"cond_low": cond_low, "cond_high": cond_high, "uncond": uncond}
    guidance_scale = guidance_rule(model, conds, guidance_scale)

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        (eps_low, var_low), (eps_high, var_high), (eps_u, _) = _model_outputs(model, x_t, t, conds)
        eps_low = eps_u + guidance_scale * (eps_low - eps_u)
        eps_high = eps_u + guidance_scale * (eps_high - eps_u)
        eps = low_pass(eps_low, kernel_size, sigma) + high_pass(eps_high, kernel_size, sigma)
        return _join(eps, None if var_low is None else (var_low + var_high) / 2)

    return den


def factorized(
    model: Model,
    components_and_conds: Sequence[tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]],
    uncond: torch.Tensor,
    guidance_scale: float,
) -> Denoiser:
    """Factorized diffusion (Geng et al., 2024), K prompts:

        eps = sum_k f_k( eps_u + guidance_scale (eps(x_t, cond_k) - eps_u) )

    Each f_k is a linear image filter and together they should split an image into parts,
    sum_k f_k(x) = x (low/high frequencies, colour/greyscale, ...), so that each prompt
    controls its own part. All K prompts share one model call of batch (K + 1) B.
    The 2C variance half is the mean of the K conditional variance values.
    """
    checked = pairs(components_and_conds, "components_and_conds", "factorized", "filter function", True)
    filters = [f for f, _ in checked]
    conds = {f"components_and_conds[{k}] condition": c for k, (_, c) in enumerate(checked)}
    guidance_scale = guidance_rule(model, {**conds, "uncond": uncond}, guidance_scale)

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        *outputs, (eps_u, _) = _model_outputs(model, x_t, t, {**conds, "uncond": uncond})
        eps = sum(f(eps_u + guidance_scale * (eps_k - eps_u)) for f, (eps_k, _) in zip(filters, outputs))
        variances = [var for _, var in outputs]
        return _join(eps, None if variances[0] is None else torch.stack(variances).mean(0))

    return den


def frequency_bands(x: torch.Tensor, sigmas: Sequence[float], kernel_size: int = 33) -> list[torch.Tensor]:
    """Split x (B, C, H, W) into len(sigmas) + 1 frequency bands, coarsest first.

    With blurs L_k = low_pass(., sigma_k) for decreasing sigmas s_1 > s_2 > ... > s_{N-1}:
        band_1 = L_1 x,   band_k = L_k x - L_{k-1} x,   band_N = x - L_{N-1} x
    The sum telescopes, so sum(bands) == x up to rounding.
    """
    sigmas = sigma_list(sigmas, kernel_size)
    blurs = [low_pass(x, kernel_size, s) for s in sigmas]
    bands = [blurs[0]] if blurs else []
    bands += [fine - coarse for coarse, fine in zip(blurs, blurs[1:])]
    bands.append(x - blurs[-1] if blurs else x)
    return bands


def hybrid_bands(
    model: Model,
    conds: Sequence[torch.Tensor],
    uncond: torch.Tensor,
    guidance_scale: float,
    sigmas: Sequence[float],
    kernel_size: int = 33,
) -> Denoiser:
    """Hybrid images with N prompts: prompt k owns frequency band k of ``frequency_bands``
    (coarsest first; len(sigmas) == N - 1). With N = 2 and sigmas = [sigma] it is ``hybrid``.
    """
    conds = list(conds)
    sigmas = sigma_list(sigmas, kernel_size, bands=len(conds))

    def band(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda e: frequency_bands(e, sigmas, kernel_size)[k]

    return factorized(model, [(band(k), c) for k, c in enumerate(conds)], uncond, guidance_scale)
