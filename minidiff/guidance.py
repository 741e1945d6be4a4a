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

cond and uncond may have batch 1 (one prompt for the whole batch) or B.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from minidiff.checks import image_batch, real_number
from minidiff.filters import check_kernel, high_pass, low_pass
from minidiff.schedule import split_output
from minidiff.views import View, get_view

__all__ = ["Model", "cfg", "guided_outputs", "anagram", "factorized", "hybrid", "hybrid_bands", "frequency_bands"]

Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------


def _check_cond(cond: torch.Tensor, name: str) -> None:
    if not isinstance(cond, torch.Tensor) or cond.ndim < 1:
        raise ValueError(
            f"{name} must be a tensor whose first dimension is the batch, such as prompt embeddings "
            f"(B, 77, D) or class vectors (B, K), got {cond!r:.80}"
        )


def _check_rule(model: Model, named_conds: Sequence[tuple[str, torch.Tensor]], scale: float) -> float:
    """What every guidance rule checks once, when it is built; returns scale as a float.

    The model must be callable, every condition a tensor with a batch dimension, all of
    them the same shape apart from the batch, and the scale a finite number (a NaN or inf
    scale turns every pixel into NaN, which would be saved as a black image).
    """
    if not callable(model):
        raise ValueError(f"model must be callable as model(x_t, t, cond), got {model!r:.80}")
    for name, cond in named_conds:
        _check_cond(cond, name)
    if len({tuple(c.shape[1:]) for _, c in named_conds}) > 1:
        shapes = ", ".join(f"{name} {tuple(c.shape)}" for name, c in named_conds)
        raise ValueError(f"cond and uncond must have the same shape apart from the batch, got {shapes}")
    return real_number(scale, "scale")


def _expand_cond(cond: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """cond with batch 1 or B, returned with batch B."""
    _check_cond(cond, name)
    if cond.shape[0] == batch:
        return cond
    if cond.shape[0] == 1:
        return cond.expand(batch, *cond.shape[1:])
    raise ValueError(f"{name} has batch {cond.shape[0]} but x_t has batch {batch}: give 1 or {batch} conditions")


def _join(pred: torch.Tensor, var: torch.Tensor | None) -> torch.Tensor:
    return pred if var is None else torch.cat([pred, var], dim=1)


def guided_outputs(
    model: Model, x_t: torch.Tensor, t: torch.Tensor, conds: Sequence[torch.Tensor], uncond: torch.Tensor, scale: float
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """CFG predictions for several conditions on the same x_t, in one batched model call.

    Builds the batch [x_t] * K + [x_t] with conditions [cond_1, ..., cond_K, uncond] (each
    expanded to batch B), calls the model once, and returns for every k the pair
    (eps_u + scale (eps_k - eps_u), variance values of the k-th conditional output or None).
    """
    image_batch(x_t, "x_t")
    batch = x_t.shape[0]
    all_conds = [_expand_cond(c, batch, f"cond[{k}]") for k, c in enumerate(conds)]
    all_conds.append(_expand_cond(uncond, batch, "uncond"))
    if len({c.shape[1:] for c in all_conds}) != 1:
        raise ValueError(
            f"cond and uncond must have the same shape apart from the batch, got {[tuple(c.shape) for c in all_conds]}"
        )
    n = len(all_conds)
    t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(batch)
    out = model(torch.cat([x_t] * n), torch.cat([t] * n), torch.cat(all_conds))
    if not isinstance(out, torch.Tensor) or out.shape[0] != n * batch:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"the model must return a (B, ...) tensor for a batch of {n * batch}, got {got}")
    chunks = [split_output(x_t, o) for o in out.chunk(n)]
    pred_u, _ = chunks[-1]
    return [(pred_u + scale * (pred_c - pred_u), var_c) for pred_c, var_c in chunks[:-1]]


# ----------------------------------------------------------------------------------------
# Classifier-free guidance
# ----------------------------------------------------------------------------------------


def cfg(
    model: Model, cond: torch.Tensor, uncond: torch.Tensor, scale: float, *, interval: tuple[float, float] | None = None
) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans, 2022; course 1.6):

        eps = eps_u + scale (eps_c - eps_u)

    eps_c = model(x_t, t, cond) and eps_u = model(x_t, t, uncond) come from one model call on
    the batch cat([x_t, x_t]) with conditions cat([cond, uncond]). scale = 1 is the plain
    conditional model, 0 the unconditional one, > 1 (IF: 7) trades diversity for fidelity.
    For 2C outputs the variance half is the conditional branch's, as in diffusers' IF pipeline.

    interval (t_lo, t_hi): guidance in a limited interval (Kynkaenniemi et al., 2024). Only
    steps at times t_lo <= t <= t_hi, in the schedule's own time (a DDPM step, or the flow
    time), are guided; the others call the conditional model alone (eps = eps_c, a call of
    batch B). Guidance at the noisiest steps pulls every sample of a class towards one
    prototype, and at the cleanest it barely changes anything, so guiding only in between
    keeps what guidance buys (the asked class) with less loss of variety.
    """
    scale = _check_rule(model, [("cond", cond), ("uncond", uncond)], scale)
    if interval is not None:
        if not isinstance(interval, (tuple, list)) or len(interval) != 2:
            raise ValueError(f"interval must be a pair (t_lo, t_hi), got {interval!r:.80}")
        t_lo, t_hi = (real_number(v, "interval") for v in interval)
        if t_lo > t_hi:
            raise ValueError(f"interval (t_lo, t_hi) needs t_lo <= t_hi, got {interval!r}")

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if interval is not None and not t_lo <= _time_of(t) <= t_hi:
            image_batch(x_t, "x_t")
            t_b = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(x_t.shape[0])
            return model(x_t, t_b, _expand_cond(cond, x_t.shape[0], "cond"))
        ((pred, var),) = guided_outputs(model, x_t, t, [cond], uncond, scale)
        return _join(pred, var)

    return den


def _time_of(t: torch.Tensor | float) -> float:
    """The one time of a sampler step: samplers pass a scalar or (B,) copies of one value."""
    return float(torch.as_tensor(t).reshape(-1)[0])


# ----------------------------------------------------------------------------------------
# Visual anagrams
# ----------------------------------------------------------------------------------------


def _as_view(view: View | str) -> View:
    if isinstance(view, str):
        return get_view(view)
    if not (callable(getattr(view, "view", None)) and callable(getattr(view, "inverse", None))):
        raise ValueError(f"expected a View (with .view and .inverse) or a view name, got {view!r}")
    return view


def anagram(
    model: Model, views_and_conds: Sequence[tuple[View | str, torch.Tensor]], uncond: torch.Tensor, scale: float
) -> Denoiser:
    """Visual anagrams (Geng et al., 2024; course 1.8): one image, one prompt per view.

        eps = (1/N) sum_k  V_k^{-1}( CFG_k( V_k(x_t) ) )

    Each view V_k (a View or a name for ``get_view``, e.g. "identity" and "flip") is applied
    to x_t, the model is guided with prompt k on the viewed image, and the prediction is
    mapped back with the inverse view. Everything goes into one model call of batch 2NB: the
    N viewed copies with their own conditions, then the same copies with uncond.

    The 2C variance half: each view's conditional variance values are mapped back by the
    view's *pixel permutation* and averaged. Variance values say how noisy a pixel is, so
    they move with the pixels but never change sign; the views of minidiff.views are signed
    permutations S, for which |S^{-1}| v = S^{-1}(v) * S^{-1}(1) removes any sign (negate).
    """
    pairs = list(views_and_conds)
    if not pairs:
        raise ValueError("anagram needs at least one (view, condition) pair, got an empty list")
    for k, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"views_and_conds[{k}] must be a (view, condition) pair, got {pair!r:.80}")
    views = [_as_view(v) for v, _ in pairs]
    conds = [c for _, c in pairs]
    named = [(f"views_and_conds[{k}] condition", c) for k, c in enumerate(conds)]
    scale = _check_rule(model, named + [("uncond", uncond)], scale)

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        image_batch(x_t, "x_t")
        batch = x_t.shape[0]
        # Stack the N viewed copies into one batch of N*B, each with its own condition,
        # so that one model call (of batch 2NB, with the unconditional passes) serves all.
        viewed = torch.cat([v.view(x_t) for v in views])
        stacked_cond = torch.cat([_expand_cond(c, batch, f"condition of view {k}") for k, c in enumerate(conds)])
        t_all = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(batch).repeat(len(views))
        ((pred, var),) = guided_outputs(model, viewed, t_all, [stacked_cond], uncond, scale)
        preds = [v.inverse(p) for v, p in zip(views, pred.chunk(len(views)))]
        mean_pred = torch.stack(preds).mean(0)
        if var is None:
            return mean_pred
        ones = torch.ones_like(x_t)
        vars_back = [v.inverse(q) * v.inverse(ones) for v, q in zip(views, var.chunk(len(views)))]
        return _join(mean_pred, torch.stack(vars_back).mean(0))

    return den


# ----------------------------------------------------------------------------------------
# Hybrid images / factorized diffusion
# ----------------------------------------------------------------------------------------


def factorized(
    model: Model,
    components_and_conds: Sequence[tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]],
    uncond: torch.Tensor,
    scale: float,
) -> Denoiser:
    """Factorized diffusion (Geng et al., 2024): eps = sum_k f_k( CFG_k(x_t) ).

    Each f_k is a linear image filter and together they should split an image into parts,
    sum_k f_k(x) = x (low/high frequencies, colour/greyscale, ...), so that each prompt
    controls its own part. All K prompts share one model call of batch (K + 1) B.
    The 2C variance half is the mean of the K conditional variance values.
    """
    pairs = list(components_and_conds)
    if not pairs:
        raise ValueError("factorized needs at least one (filter, condition) pair, got an empty list")
    for k, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not callable(pair[0]):
            raise ValueError(f"components_and_conds[{k}] must be a (filter function, condition) pair, got {pair!r:.80}")
    filters = [f for f, _ in pairs]
    conds = [c for _, c in pairs]
    named = [(f"components_and_conds[{k}] condition", c) for k, c in enumerate(conds)]
    scale = _check_rule(model, named + [("uncond", uncond)], scale)

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        guided = guided_outputs(model, x_t, t, conds, uncond, scale)
        pred = sum(f(p) for f, (p, _) in zip(filters, guided))
        variances = [v for _, v in guided]
        var = None if variances[0] is None else torch.stack(variances).mean(0)
        return _join(pred, var)

    return den


def hybrid(
    model: Model,
    cond_low: torch.Tensor,
    cond_high: torch.Tensor,
    uncond: torch.Tensor,
    scale: float,
    kernel_size: int = 33,
    sigma: float = 2.0,
) -> Denoiser:
    """Hybrid images (course 1.9; factorized diffusion with two frequency bands):

        eps = low_pass(eps_low) + high_pass(eps_high)

    eps_low is guided by cond_low (what you see from afar), eps_high by cond_high (what you
    see up close); the filters are the Gaussian of minidiff.filters (kernel 33, sigma 2 as
    in the course). Since low_pass(e) + high_pass(e) == e, the result is the plain CFG
    prediction whenever both prompts agree. Variance half: mean of the two.
    """
    kernel_size, sigma = check_kernel(kernel_size, sigma)
    lp = lambda e: low_pass(e, kernel_size, sigma)  # noqa: E731
    hp = lambda e: high_pass(e, kernel_size, sigma)  # noqa: E731
    return factorized(model, [(lp, cond_low), (hp, cond_high)], uncond, scale)


def frequency_bands(x: torch.Tensor, sigmas: Sequence[float], kernel_size: int = 33) -> list[torch.Tensor]:
    """Split x (B, C, H, W) into len(sigmas) + 1 frequency bands, coarsest first.

    With blurs L_k = low_pass(., sigma_k) for decreasing sigmas s_1 > s_2 > ... > s_{N-1}:
        band_1 = L_1 x,   band_k = L_k x - L_{k-1} x,   band_N = x - L_{N-1} x
    The sum telescopes, so sum(bands) == x up to rounding.
    """
    sigmas = _check_sigmas(sigmas, kernel_size)
    blurs = [low_pass(x, kernel_size, s) for s in sigmas]
    bands = [blurs[0]] if blurs else []
    bands += [fine - coarse for coarse, fine in zip(blurs, blurs[1:])]
    bands.append(x - blurs[-1] if blurs else x)
    return bands


def _check_sigmas(sigmas: Sequence[float], kernel_size: int) -> list[float]:
    """sigmas as floats: each finite and > 0, strictly decreasing; kernel_size a positive odd int."""
    if isinstance(sigmas, (str, bytes)) or not isinstance(sigmas, (Sequence, torch.Tensor)):
        raise ValueError(f"sigmas must be a list of numbers, got {sigmas!r:.60}")
    sigmas = [check_kernel(kernel_size, s, f"sigmas[{k}]")[1] for k, s in enumerate(sigmas)]
    if any(b >= a for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError(f"sigmas must decrease strictly (coarsest band first), got {sigmas}")
    return sigmas


def hybrid_bands(
    model: Model,
    conds: Sequence[torch.Tensor],
    uncond: torch.Tensor,
    scale: float,
    sigmas: Sequence[float],
    kernel_size: int = 33,
) -> Denoiser:
    """Hybrid images with N prompts: prompt k owns frequency band k of ``frequency_bands``
    (coarsest first; len(sigmas) == N - 1). With N = 2 and sigmas = [sigma] it is ``hybrid``.
    """
    conds = list(conds)
    sigmas = _check_sigmas(sigmas, kernel_size)
    if len(conds) != len(sigmas) + 1:
        raise ValueError(f"N prompts need N - 1 sigmas: got {len(conds)} prompts and {len(sigmas)} sigmas")

    def band(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda e: frequency_bands(e, sigmas, kernel_size)[k]

    return factorized(model, [(band(k), c) for k, c in enumerate(conds)], uncond, scale)
