"""`minidiff lesson ID --use FILE`: a lesson's figures drawn by the learner's function in place of minidiff's.

The lessons that take ``--use`` read ``ctx.use``, the learner's functions by name (empty
without the flag), and fall back to minidiff's own. The functions a learner writes work on
tensors (an eps, a velocity), so the two that combine a model's predictions are wrapped here
into the denoisers the samplers drive:

    cfg_denoiser     den(x_t, t) = cfg_eps(eps_u, eps_c, scale)                       (A1.6)
    anagram_denoiser den(x_t, t) = anagram_eps(cfg(., A), cfg(., B), x_t, view, inverse) (A1.8)
    hybrid_denoiser  den(x_t, t) = hybrid_eps(cfg(x_t, far), cfg(x_t, near), k, sigma)  (A1.9)

The learner's loops (A1.3-A1.5, A1.7, A1.7.2) take a denoiser that returns eps and keep their
state where their CPU generator draws: ``eps_denoiser`` hands them minidiff's denoiser so,
the eps half only (on IF their steps use the fixed posterior variance, as the exercise's do,
not IF's learned range), the model run on its own device.

For IF's 2C outputs the learner's rule acts on the eps half; the variance half is taken as
``minidiff.guidance`` takes it (the conditional branch's; for a hybrid, the mean of both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from minidiff.lessons_index import LessonInfo

__all__ = ["learner_functions", "eps_denoiser", "cfg_denoiser", "anagram_denoiser", "hybrid_denoiser"]


def _watched(fn: Callable, name: str, path: Path) -> Callable:
    """fn, whose exceptions become one-line RuntimeErrors naming the learner's file (no checker traceback)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            raise RuntimeError(f"{name} in {path} is not implemented yet: write it, then run "
                               f"`minidiff check {path}`") from None
        except Exception as err:  # the learner's code: say what it raised, point at the checker
            raise RuntimeError(f"your {name} ({path}) raised {type(err).__name__}: {err}; "
                               f"`minidiff check {path}` finds the smallest input that fails") from None

    return call


def learner_functions(path: str | Path, lesson: LessonInfo) -> dict[str, Callable]:
    """The learner's functions of ``path``, by name, for ``lesson``.

    ValueError when the file is not an exercise the lesson draws with (``lesson.uses``: another
    lesson's, or a loss no lesson trains with), does not import or lacks a name;
    FileNotFoundError when there is no such file.
    """
    from minidiff.exercises import EXERCISES, load_file
    from minidiff.lessons_index import list_lessons

    path = Path(path)
    ex, found = load_file(path)
    if not set(ex.names) & set(lesson.uses):
        wanted = [e.id for e in EXERCISES.values() if set(e.names) & set(lesson.uses)]
        drawn_by = [i.id for i in list_lessons() if set(i.uses) & set(ex.names)]
        where = (f"run minidiff lesson {drawn_by[0]} --use {path}" if drawn_by else
                 f"no lesson draws with {', '.join(ex.names)}: minidiff check {path} tests it")
        raise ValueError(f"{path} is exercise {ex.id}; lesson {lesson.id} draws with {' or '.join(lesson.uses)} "
                         f"(exercise {' or '.join(wanted)}); {where}")
    if isinstance(found, str):
        raise ValueError(f"{found} (minidiff check {path} says more)")
    return {name: _watched(fn, name, path) for name, fn in found.items()}


def _eps_and_var(x_t: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    c = x_t.shape[1]
    return (out, None) if out.shape[1] == c else (out[:, :c], out[:, c:])


def eps_denoiser(den: Callable, device: torch.device | str) -> Callable:
    """den as the exercises' denoiser: the eps half of its output, on the device of the x_t given
    (the model itself runs on ``device``)."""

    def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = den(x_t.to(device), torch.as_tensor(t).to(device))
        return _eps_and_var(x_t, out)[0].to(x_t.device)

    return eps


def cfg_denoiser(model, cond: torch.Tensor, uncond: torch.Tensor, scale: float, cfg_eps: Callable):
    """den(x_t, t): the learner's cfg_eps of the model's unconditional and conditional predictions."""

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = x_t.shape[0]
        eps_c, var_c = _eps_and_var(x_t, model(x_t, t, cond.expand(batch, *cond.shape[1:])))
        eps_u, _ = _eps_and_var(x_t, model(x_t, t, uncond.expand(batch, *uncond.shape[1:])))
        eps = cfg_eps(eps_u, eps_c, scale)
        return eps if var_c is None else torch.cat([eps, var_c], dim=1)

    return den


def anagram_denoiser(model, view, cond_a: torch.Tensor, cond_b: torch.Tensor, uncond: torch.Tensor, scale: float,
                     anagram_eps: Callable):
    """den(x_t, t): the learner's anagram_eps of the guided predictions of prompt A (as seen) and
    prompt B (under ``view``, a minidiff.views.View). IF's variance half is minidiff.guidance.anagram's."""
    from minidiff.guidance import cfg

    den_a, den_b = cfg(model, cond_a, uncond, scale), cfg(model, cond_b, uncond, scale)

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        var = []

        def predict(d: Callable, inverse: Callable) -> Callable:
            def eps(x: torch.Tensor) -> torch.Tensor:
                e, v = _eps_and_var(x, d(x, t))
                if v is not None:
                    var.append(inverse(v) * inverse(torch.ones_like(v)))  # moved with the pixels, sign kept
                return e

            return eps

        eps = anagram_eps(predict(den_a, lambda v: v), predict(den_b, view.inverse), x_t, view.view, view.inverse)
        return eps if not var else torch.cat([eps, torch.stack(var).mean(0)], dim=1)

    return den


def hybrid_denoiser(model, cond_far: torch.Tensor, cond_near: torch.Tensor, uncond: torch.Tensor, scale: float,
                    kernel_size: int, sigma: float, hybrid_eps: Callable):
    """den(x_t, t): the learner's hybrid_eps of the two prompts' guided predictions (far: low frequencies)."""
    from minidiff.guidance import cfg

    far, near = cfg(model, cond_far, uncond, scale), cfg(model, cond_near, uncond, scale)

    def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps_a, var_a = _eps_and_var(x_t, far(x_t, t))
        eps_b, var_b = _eps_and_var(x_t, near(x_t, t))
        eps = hybrid_eps(eps_a, eps_b, kernel_size, sigma)
        return eps if var_a is None else torch.cat([eps, (var_a + var_b) / 2], dim=1)

    return den
