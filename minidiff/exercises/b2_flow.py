"""B2.2 The flow-matching loss and B2.3 sampling the flow with Euler: starters, checks, known mistakes."""

from __future__ import annotations

import torch
from torch import nn

from minidiff.analytic import finite_data_denoiser
from minidiff.exercises import reference as R
from minidiff.exercises.fixtures import (
    FLOW, SpyDen, expect_same_gradients, first_model_call, pm_one_data, randn, seeds, st,
)
from minidiff.exercises.harness import CheckFailed, Mistake, call, check, describe, expect, expect_close
from minidiff.exercises.starters import NOT_YET, exercise

__all__ = ["B2_2", "B2_3", "flow_batch"]


# ========================================================================================
# B2.2 The flow-matching loss
# ========================================================================================


def _velocity_model(x, t, *rest):
    """A stand-in velocity model with known outputs: u(x_t, t) = 0.3 x_t + t."""
    return 0.3 * x + t.reshape(-1, *[1] * (x.ndim - 1)).to(x.dtype)


def _flow_loss_with(x_t_of, target_of, reduce=lambda d: (d**2).mean()):
    def flow_loss(model, x1, x0, t):
        tt = t.reshape(-1, *[1] * (x1.ndim - 1)).to(x1.dtype)
        return reduce(model(x_t_of(x1, x0, tt), t) - target_of(x1, x0))

    return flow_loss


_PATH = lambda x1, x0, t: (1 - t) * x0 + t * x1  # noqa: E731
FLOW_LOSS_MISTAKES = (
    Mistake("target-reversed", "flow_loss",
            "The path x_t = (1 - t) x0 + t x1 runs from the noise x0 (t = 0) to the data x1 (t = 1), so its "
            "velocity is dx_t/dt = x1 - x0, not x0 - x1.",
            _flow_loss_with(_PATH, lambda x1, x0: x0 - x1)),
    Mistake("target-is-data", "flow_loss",
            "The model predicts the velocity u = x1 - x0, not the clean digit x1.",
            _flow_loss_with(_PATH, lambda x1, x0: x1)),
    Mistake("sum-not-mean", "flow_loss",
            "Average the squared errors (F.mse_loss, or .mean()).",
            _flow_loss_with(_PATH, lambda x1, x0: x1 - x0, lambda d: (d**2).sum())),
)


def flow_batch(batch, seed, side=4):
    """(x1, x0, t): batch digits in [0, 1] (side x side pixels), N(0, I) noise, a time in [0, 1] each."""
    x1 = torch.rand((batch, 1, side, side), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x0 = randn(x1.shape, seed + 1)
    t = torch.rand(batch, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    return x1, x0, t


def _flow_batches(smallest=1):
    """flow_batch of smallest to 4 digits."""
    return st.tuples(st.integers(smallest, 4), seeds()).map(lambda c: flow_batch(*c))


@check(cases=lambda: _flow_batches(smallest=2), examples=6)
def check_flow_loss_input(flow_loss, batch):
    """the model sees x_t = (1 - t) x0 + t x1 and t as a (B,) tensor

    Hint: x_t = (1 - t) x0 + t x1 with t reshaped to (B, 1, 1, 1); the model takes t itself, shape (B,).
    """
    x1, x0, t = batch
    inputs = describe(x1=x1, x0=x0, t=t)
    seen_x, seen_t = first_model_call(flow_loss, _velocity_model, (x1, x0, t), inputs)[1][:2]
    expect(isinstance(seen_t, torch.Tensor) and seen_t.shape == t.shape,
           f"the model was called with t of shape {tuple(getattr(seen_t, 'shape', ()))}, not ({len(t)},)",
           inputs=inputs, key="t-shape", hint="Give the model t as it came, a (B,) tensor; reshape only the copy "
           "that multiplies the images.")
    tt = t.reshape(-1, 1, 1, 1)
    hint, key = (("x_t = (1 - t) x0 + t x1: noise at t = 0, data at t = 1.", "path-reversed")
                 if torch.allclose(seen_x, tt * x0 + (1 - tt) * x1) else (None, None))
    expect_close(seen_x, (1 - tt) * x0 + tt * x1, "the model's input against x_t", atol=1e-9, inputs=inputs,
                 hint=hint, key=key)


@check(cases=_flow_batches, examples=15)
def check_flow_loss_value(flow_loss, batch):
    """L = mean |u_theta(x_t, t) - (x1 - x0)|^2, one number

    Hint: The target is the path's velocity u = x1 - x0; F.mse_loss(model(x_t, t), x1 - x0).
    """
    x1, x0, t = batch
    inputs = "model u(x_t, t) = 0.3 x_t + t, " + describe(x1=x1, x0=x0, t=t)
    out = call(flow_loss, _velocity_model, x1, x0, t, scalar=True, inputs=inputs)
    expect_close(out, R.flow_loss(_velocity_model, x1, x0, t), "the loss", atol=1e-9, inputs=inputs)


class _TinyVelocity(nn.Module):
    """u(x, t) = conv(x) + w t: a model with weights, for the gradient check."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.w = nn.Conv2d(1, 1, 3, padding=1).double(), nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, x, t, *rest):
        return self.conv(x) + self.w * t.reshape(-1, 1, 1, 1).to(x.dtype)


@check
def check_flow_loss_gradient(flow_loss):
    """the loss carries gradients to the model's weights

    Hint: Return the loss as a tensor built from the model's output, so that loss.backward() reaches the weights.
    """
    x1, x0, t = flow_batch(3, 0)
    expect_same_gradients(flow_loss, R.flow_loss, _TinyVelocity, (x1, x0, t), "a 3x3 convolution plus w t as the model")


B2_2 = exercise(
    "B2.2", "the flow-matching loss", lesson="B2.3", file_name="b2_2_flow_loss.py",
    checks=(check_flow_loss_input, check_flow_loss_value, check_flow_loss_gradient), mistakes=FLOW_LOSS_MISTAKES,
    heading="The flow-matching loss", intro="""
        Flow matching (Lipman et al., 2023) trains the UNet to predict the velocity of a straight
        path from noise x0 ~ N(0, I) at t = 0 to a digit x1 at t = 1:

            x_t = (1 - t) x0 + t x1,      u = dx_t/dt = x1 - x0
            L   = mean | u_theta(x_t, t) - (x1 - x0) |^2,      t ~ U[0, 1] per digit
        """, imports="""
        import torch
        import torch.nn.functional as F
        """, body=f'''
        def flow_loss(model, x1, x0, t):
            """The flow-matching loss mean |model(x_t, t) - (x1 - x0)|^2, a 0-d tensor with a gradient.

            model    the UNet: model(x_t, t) -> the velocity, x_t's shape; t a (B,) tensor
            x1       (B, 1, 28, 28) digits (the data, at t = 1)
            x0       (B, 1, 28, 28) the N(0, I) noise (at t = 0)
            t        (B,) times in [0, 1], one per digit
            returns  the loss, a 0-d tensor
            """
            # TODO: x_t on the path (t as (B, 1, 1, 1)), the model's velocity, the L2 loss to x1 - x0
            {NOT_YET}
        ''')


# ========================================================================================
# B2.3 Sampling the flow: Euler from noise to data
# ========================================================================================


def _euler_with(times, dt_of, sign=1.0):
    """A wrong Euler: steps at times(N) with step dt_of(N) and direction sign."""

    def flow_sample(velocity, x0, num_steps):
        x = x0
        for t in times(num_steps):
            x = x + sign * dt_of(num_steps) * velocity(x, torch.full((x.shape[0],), t, dtype=torch.float32))
        return x

    return flow_sample


EULER_MISTAKES = (
    Mistake("wrong-direction", "flow_sample",
            "The flow runs forward in time, from the noise at t = 0 to the data at t = 1: t_i = i / N and "
            "x <- x + (1 / N) v(x, t_i).",
            _euler_with(lambda n: [1 - i / n for i in range(n)], lambda n: 1 / n, -1.0)),
    Mistake("dt-one-over-n-plus-one", "flow_sample",
            "num_steps steps of dt = 1 / num_steps cover [0, 1]; with 1 / (num_steps + 1) the sampler stops short "
            "of t = 1.",
            _euler_with(lambda n: [i / (n + 1) for i in range(n)], lambda n: 1 / (n + 1))),
    Mistake("dt-one-over-n-minus-one", "flow_sample",
            "num_steps steps of dt = 1 / num_steps cover [0, 1]; with 1 / (num_steps - 1) it overshoots.",
            _euler_with(lambda n: [i / (n - 1) for i in range(n)], lambda n: 1 / (n - 1))),
    Mistake("time-at-step-end", "flow_sample",
            "Euler evaluates the velocity where the step starts: v(x, t_i) with t_i = i / N, for i = 0 ... N - 1.",
            _euler_with(lambda n: [(i + 1) / n for i in range(n)], lambda n: 1 / n)),
)


def _times_hint(got: list, n: int) -> tuple[str | None, str | None]:
    """(hint, key) for velocity calls at the wrong times in n steps: the known mistake whose time
    grid they follow, or the wrong number of steps."""
    grids = {
        "wrong-direction": [1 - i / n for i in range(n)],
        "time-at-step-end": [(i + 1) / n for i in range(n)],
        "dt-one-over-n-plus-one": [i / (n + 1) for i in range(n)],
        "dt-one-over-n-minus-one": [i / (n - 1) for i in range(n)],
    }
    key = next((k for k, ts in grids.items() if len(got) == n and all(abs(a - b) < 1e-6 for a, b in zip(got, ts))),
               None)
    if key is None and len(got) != n:
        return f"Take num_steps steps, one velocity call each: {n} here.", "step-count"
    return next((m.hint for m in EULER_MISTAKES if m.key == key), None), key


# N >= 2: with one step, several wrong time grids coincide ([1.0] backwards and at the step's end)
@check(cases=lambda: st.tuples(st.integers(2, 6), seeds()), examples=6)
def check_flow_sample_times(flow_sample, case):
    """calls velocity(x, t) at t = 0, 1/N, ..., (N - 1)/N, with t a (B,) tensor

    Hint: for i in range(num_steps): t = i / num_steps as a (B,) tensor; x = x + (1 / num_steps) * velocity(x, t)
    """
    n, seed = case
    d = pm_one_data(1, seed % 5)
    spy = SpyDen(finite_data_denoiser(d, FLOW), flow=True)
    x0 = randn((2, 1, 8, 8), seed)
    inputs = f"num_steps = {n}, " + describe(x0=x0)
    call(flow_sample, spy, x0, n, like=x0, like_name="x0", inputs=inputs)
    want, got = [i / n for i in range(n)], spy.times
    if not (len(got) == n and all(abs(a - b) < 1e-6 for a, b in zip(got, want))):
        hint, key = _times_hint(got, n)
        raise CheckFailed("velocity was called at the wrong times", inputs=inputs,
                          expected=f"t = {[round(v, 4) for v in want]}", got=f"t = {[round(v, 4) for v in got]}",
                          hint=hint, key=key)


@check(cases=lambda: st.tuples(st.integers(1, 8), seeds()), examples=8)
def check_flow_sample_exact(flow_sample, case):
    """follows the straight path of a one-image data set exactly and ends on the image

    Hint: With one data image the velocity is constant along x_t = (1 - t) x0 + t x1, so Euler is exact.
    """
    n, seed = case
    d = pm_one_data(1, seed % 5)
    x0 = randn((2, 1, 8, 8), seed)
    inputs = f"num_steps = {n}, " + describe(x0=x0)
    out = call(flow_sample, finite_data_denoiser(d, FLOW), x0, n, like=x0, like_name="x0", inputs=inputs)
    expect_close(out, d.expand_as(x0), "the sample against the data image", atol=1e-6, inputs=inputs)


@check(cases=lambda: st.tuples(st.integers(1, 10), st.floats(-2, 2), st.floats(0.5, 3)), examples=12)
def check_flow_sample_linear(flow_sample, case):
    """for v = a + b t, Euler's error at t = 1 is exactly -b / (2 N)

    Hint: dt = 1 / num_steps and the velocity taken at the start of each step: x(1) = x0 + a + b / 2 - b / (2 N).
    """
    n, a, b = case

    def velocity(x, t):
        return torch.full_like(x, a) + b * t.to(x.dtype).reshape(-1, 1, 1, 1)

    x0 = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    inputs = f"num_steps = {n}, velocity v = {a:.3g} + {b:.3g} t, x0 = 0"
    out = call(flow_sample, velocity, x0, n, like=x0, like_name="x0", inputs=inputs)
    expect_close(out, torch.full_like(x0, a + b / 2 - b / (2 * n)), "x at t = 1", atol=1e-6, inputs=inputs)


@check(cases=lambda: st.tuples(st.integers(1, 12), seeds()), examples=8)
def check_flow_sample_matches(flow_sample, case):
    """equals minidiff's flow_euler

    Hint: x <- x + (1 / N) velocity(x, t_i) with t_i = i / N, for i = 0, ..., N - 1.
    """
    n, seed = case
    data = pm_one_data(4, seed % 5)
    den = finite_data_denoiser(data, FLOW)
    x0 = randn((3, 1, 8, 8), seed)
    inputs = f"num_steps = {n}, " + describe(x0=x0)
    out = call(flow_sample, den, x0, n, like=x0, like_name="x0", inputs=inputs)
    expect_close(out, R.flow_sample(den, x0, n), "the sample", atol=1e-5, inputs=inputs)


B2_3 = exercise(
    "B2.3", "flow sampling: Euler from noise (t = 0) to data (t = 1)", lesson="B2.3", file_name="b2_3_flow_sample.py",
    checks=(check_flow_sample_times, check_flow_sample_exact, check_flow_sample_linear, check_flow_sample_matches),
    mistakes=EULER_MISTAKES,
    heading="Sampling the flow", intro="""
        A trained flow model gives the velocity field of dx/dt = v(x, t). Sampling integrates it
        from noise x0 at t = 0 to a digit at t = 1, with Euler's method on N equal steps:

            t_i = i / N,     x <- x + (1 / N) v(x, t_i),      i = 0, ..., N - 1
        """, imports="import torch", body=f'''
        def flow_sample(velocity, x0, num_steps):
            """Euler's method for dx/dt = velocity(x, t) from t = 0 (x = x0) to t = 1.

            velocity   callable: velocity(x_t, t) -> v of x_t's shape, with t a (B,) tensor of times
            x0         (B, C, H, W) the starting noise
            num_steps  N, the number of Euler steps
            returns    x at t = 1, x0's shape and dtype
            """
            # TODO: N steps; t as torch.full((B,), t_i)
            {NOT_YET}
        ''')
