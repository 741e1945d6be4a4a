"""What the checks feed a learner's function: small tensors, exact data sets, watched models,
the hypothesis strategies they are drawn from, and the checks' helpers that several lessons share.

Everything is tiny and made here, so that every check runs offline in well under a second:
the data sets are a few 8x8 images of +-1 pixels, far apart, whose optimal denoiser is known
in closed form (``minidiff.analytic``), so the right answer of a sampler or an edit is a
known member of the set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from minidiff.analytic import finite_data_model
from minidiff.exercises.harness import CheckFailed, call, expect, expect_close
from minidiff.exercises.reference import FLOW, IF_SCHEDULE, MNIST_SCHEDULE
from minidiff.schedule import DDPMSchedule, strided_timesteps

try:
    from hypothesis import strategies as st
except ImportError:  # only running checks needs hypothesis (see harness.for_all); listing and starters do not
    st = None

__all__ = [
    "IF", "LIN", "FLOW", "SCHEDULES", "st", "seeds", "dtypes", "image_shapes", "randn", "pm_one_data",
    "labelled_data", "labelled_model", "ab_of", "x0_atol", "timesteps_for", "SpyDen", "SpyModel", "first_model_call",
    "same_with_generator", "expect_noise_term", "expect_same_gradients",
]

IF, LIN = IF_SCHEDULE, MNIST_SCHEDULE
SCHEDULES = {"IF (cosine, T = 1000)": IF, "linear (T = 300)": LIN}


def seeds() -> Any:
    return st.integers(0, 2**16)


def dtypes() -> Any:
    return st.sampled_from([torch.float64, torch.float32])


def image_shapes(max_side: int = 4) -> Any:
    """(B, C, H, W) with every size small; hypothesis shrinks towards (1, 1, 1, 1)."""
    return st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, max_side), st.integers(1, max_side))


def randn(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """N(0, I) of the given shape from its own seeded generator."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def pm_one_data(n: int = 4, seed: int = 0, size: int = 8, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """n distinct (1, size, size) images of +-1 pixels, any two at L2 distance >= 4."""
    for s in range(seed, seed + 100):
        data = randn((n, 1, size, size), s, dtype).sign()
        dist = torch.cdist(data.flatten(1), data.flatten(1)) + 100 * torch.eye(n, dtype=dtype)
        if n == 1 or dist.min() >= 4:
            return data
    raise RuntimeError("no well-separated data set found")  # never happens at these sizes


def labelled_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of three +-1 8x8 images each (float64), labels 0, 0, 0, 1, 1, 1."""
    return pm_one_data(6, seed), torch.tensor([0, 0, 0, 1, 1, 1])


def labelled_model(schedule: Any, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, Callable]:
    """(data, labels, model): labelled_data(seed) and its exact class-conditional model(x, t, c),
    c a one-hot (B, 2) class vector or zeros for no class (``minidiff.analytic.finite_data_model``)."""
    data, labels = labelled_data(seed)
    return data, labels, finite_data_model(data, schedule, labels, 2)


def ab_of(schedule: DDPMSchedule, t: int) -> float:
    """ab_t as a float, with ab = 1 at t = -1 (the clean image)."""
    return 1.0 if t < 0 else float(schedule.alphas_cumprod[t])


def x0_atol(schedule: DDPMSchedule, t: int) -> float:
    """The tolerance on a clean-image estimate at t: 1 / sqrt(ab_t) amplifies the table's float32 rounding."""
    return 1e-6 / math.sqrt(ab_of(schedule, t)) + 1e-6


def timesteps_for(schedule: DDPMSchedule, stride: int, clean_end: bool = True) -> list[int]:
    """The course's strided timesteps from the top of the schedule, ending at 0, then -1 (a last
    noiseless step to the clean estimate) when clean_end."""
    top = schedule.num_timesteps - 1
    start = top - top % 10  # 990 for IF, 290 for the linear 300
    return strided_timesteps(start, stride) + ([-1] if clean_end else [])


@dataclass
class SpyDen:
    """A denoiser den(x_t, t) that answers with ``inner`` and records every call (x_t and t copied).

    It holds the learner to the protocol every sampler of minidiff follows: x_t a (B, ...)
    tensor, t a (B,) tensor (integer timesteps for DDPM, float times in [0, 1] for a flow).
    """

    inner: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    flow: bool = False
    calls: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        what = "flow time in [0, 1]" if self.flow else "integer timestep"
        example = "torch.full((x.shape[0],), t)"
        if not isinstance(x_t, torch.Tensor) or x_t.ndim < 2:
            raise CheckFailed(f"den was called with x_t = {type(x_t).__name__}; it takes the (B, C, H, W) batch",
                              key="den-x")
        if not isinstance(t, torch.Tensor):
            raise CheckFailed(f"den was called with t = {t!r:.30}, a {type(t).__name__}; it takes t as a (B,) "
                              f"tensor, one {what} per image", hint=f"Make t a tensor with one entry per image: "
                              f"{example}.", key="t-not-tensor")
        if t.shape != (x_t.shape[0],):
            raise CheckFailed(f"den was called with t of shape {tuple(t.shape)} for a batch of {x_t.shape[0]}; it "
                              f"takes t of shape ({x_t.shape[0]},)", hint=f"Make t a (B,) tensor: {example}.",
                              key="t-shape")
        if not self.flow and t.is_floating_point() and not bool((t == t.round()).all()):
            raise CheckFailed(f"den was called with t = {t.tolist()}; DDPM timesteps are integers",
                              key="t-not-integer")
        self.calls.append((x_t.detach().clone(), t.detach().clone()))
        return self.inner(x_t, t)

    @property
    def times(self) -> list:
        """The time of each call (the first entry of its t)."""
        return [t[0].item() if self.flow else int(t[0]) for _, t in self.calls]


class SpyModel:
    """A model that records what it is called with (copies) and answers with ``answer``."""

    def __init__(self, answer: Callable[..., torch.Tensor]) -> None:
        self.answer, self.calls = answer, []

    def __call__(self, *args: Any) -> torch.Tensor:
        self.calls.append(tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args))
        return self.answer(*args)


def first_model_call(loss_fn: Callable, answer: Callable[..., torch.Tensor], args: tuple, inputs: str) -> tuple:
    """(the loss, the arguments of the model's first call) of the learner's loss_fn(model, *args),
    with a model that records its calls (SpyModel) and answers with ``answer``."""
    spy = SpyModel(answer)
    loss = call(loss_fn, spy, *args, scalar=True, inputs=inputs)
    expect(len(spy.calls) >= 1, "the model was never called", inputs=inputs, key="model-not-called")
    return loss, spy.calls[0]


def same_with_generator(fn: Callable, args_before: tuple, args_after: tuple, inputs: str) -> None:
    """fn run twice with generators of the same seed (the last argument) and the global RNG moved
    between runs: the two results must be equal, else the code drew from the global RNG."""
    torch.manual_seed(1)
    a = call(fn, *args_before, inputs=inputs)
    torch.manual_seed(2)
    b = call(fn, *args_after, inputs=inputs)
    same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    expect(same, "two runs with generators of the same seed gave different results", inputs=inputs, key="global-rng",
           hint="Draw every random number from the generator you are given: torch.randn(x.shape, "
                "generator=generator, dtype=x.dtype). torch.randn without it draws from the global RNG.")


def expect_noise_term(fn: Callable, args: tuple, z: torch.Tensor, scale: float, like_name: str, inputs: str,
                      what: str) -> None:
    """fn(*args, z) - fn(*args, 0) must be scale * z: an update that adds its noise as scale z
    (a DDPM step's sigma z, a jump back's sqrt(1 - alpha_t) z). args[0] is the image it updates."""
    quiet = call(fn, *args, torch.zeros_like(z), like=args[0], like_name=like_name, inputs=inputs)
    noisy = call(fn, *args, z, like=args[0], like_name=like_name, inputs=inputs)
    expect_close(noisy - quiet, scale * z, what, atol=1e-6, inputs=inputs)


def expect_same_gradients(loss_fn: Callable, reference: Callable, make_model: Callable[[], nn.Module],
                          args: tuple, inputs: str) -> None:
    """loss_fn(model, *args) must backpropagate the same gradients into the model as reference's."""
    ours, theirs = make_model(), make_model()
    reference(ours, *args).backward()
    loss = call(loss_fn, theirs, *args, scalar=True, inputs=inputs)
    no_grad = dict(inputs=inputs, key="no-grad", hint="Keep the loss a tensor computed from the model's output: no "
                   ".item(), .detach(), torch.no_grad() or torch.tensor(...) around it. Training needs its gradient.")
    expect(loss.requires_grad, "the loss carries no gradient to the model", **no_grad)
    loss.backward()
    for p_ours, p_theirs in zip(ours.parameters(), theirs.parameters()):
        expect(p_theirs.grad is not None, "some of the model's weights got no gradient", **no_grad)
        expect_close(p_theirs.grad, p_ours.grad, "the gradient of the loss with respect to the model's weights",
                     atol=1e-6, inputs=inputs)
