"""B2.3.1 DDPM for digits, the training loss and the sampler: the starter, its checks, known mistakes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minidiff.analytic import finite_data_denoiser
from minidiff.exercises import reference as R
from minidiff.exercises.a1_loop import expect_visits, step_with
from minidiff.exercises.fixtures import (
    LIN, SpyDen, first_model_call, pm_one_data, randn, same_with_generator, seeds, st,
)
from minidiff.exercises.harness import CheckFailed, Mistake, call, check, describe, expect, expect_close
from minidiff.exercises.starters import NOT_YET, exercise

__all__ = ["B2_3_1"]


T_MNIST = LIN.num_timesteps  # 300


def _unet_of(den, schedule=LIN):
    """A stand-in time-conditioned UNet around a denoiser: unet(x_t, t / T) = den(x_t, t). It holds
    the learner to the UNet's input: float times in [0, 1], one per image."""

    def unet(x_t, t_norm):
        if not isinstance(t_norm, torch.Tensor) or t_norm.shape != (x_t.shape[0],):
            raise CheckFailed(f"the UNet was called with t = {t_norm!r:.40}; it takes a (B,) tensor of t / T",
                              hint="model(x_t, t / T) with t a (B,) tensor.", key="t-shape")
        if not t_norm.is_floating_point() or bool((t_norm > 1).any()) or bool((t_norm < 0).any()):
            raise CheckFailed(f"the UNet was called with t = {t_norm[:4].tolist()}, not with times in [0, 1]",
                              hint=f"The UNet takes the normalised time t / T (T = {schedule.num_timesteps}), a float "
                                   "in [0, 1]: model(x_t, t / T).", key="t-not-normalised")
        return den(x_t, (t_norm.double() * schedule.num_timesteps).round().long())

    return unet


def _ddpm_loss_with(x_t_of, target_of, time_of=lambda t, T: t.float() / T):
    def ddpm_loss(model, x0, t, eps, alphas_cumprod):
        ab = alphas_cumprod.double()[t].reshape(-1, *[1] * (x0.ndim - 1))
        x_t = x_t_of(x0, eps, ab)
        return F.mse_loss(model(x_t, time_of(t, alphas_cumprod.shape[0])), target_of(x0, eps))

    return ddpm_loss


def _ddpm_sample_with(step):
    def ddpm_sample(model, x, timesteps, alphas_cumprod, generator):
        T = alphas_cumprod.shape[0]
        for t, t_prev in zip(timesteps[:-1], timesteps[1:]):
            eps = model(x, torch.full((x.shape[0],), t / T))
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x = step(x, eps, t, t_prev, alphas_cumprod, z)
        return x

    return ddpm_sample


_FWD = lambda x0, e, ab: ab.sqrt() * x0 + (1 - ab).sqrt() * e  # noqa: E731
DDPM_MISTAKES = (
    Mistake("target-is-x0", "ddpm_loss",
            "This UNet predicts the noise: L = mean |eps_theta(x_t, t / T) - eps|^2, with eps the target.",
            _ddpm_loss_with(_FWD, lambda x0, e: x0)),
    Mistake("missing-sqrt", "ddpm_loss",
            "x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps: both coefficients are square roots (A1.1).",
            _ddpm_loss_with(lambda x0, e, ab: ab * x0 + (1 - ab) * e, lambda x0, e: e)),
    Mistake("beta-variance", "ddpm_sample",
            "Use the posterior variance sigma^2 = (1 - ab_t') / (1 - ab_t) beta_t: with sigma^2 = beta_t the last "
            "step (to t' = -1) adds noise to the finished digit, where sigma must be 0.",
            _ddpm_sample_with(step_with(sigma_mode="beta"))),
)


def _ddpm_batch(batch, seed):
    x0 = torch.rand((batch, 1, 4, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    t = torch.randint(0, T_MNIST, (batch,), generator=torch.Generator().manual_seed(seed + 1))
    return x0, t, randn(x0.shape, seed + 2)


def _ddpm_batches():
    """(x0, t, eps): 1 to 4 digits in [0, 1] (4x4 pixels), a timestep each, N(0, I) noise."""
    return st.tuples(st.integers(1, 4), seeds()).map(lambda c: _ddpm_batch(*c))


@check(cases=_ddpm_batches, examples=6)
def check_ddpm_loss_input(ddpm_loss, batch):
    """ddpm_loss: the UNet sees x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps and t / T

    Hint: x_t from A1.1's forward process, per digit; the UNet takes t / T, floats in [0, 1].
    """
    x0, t, eps = batch
    inputs = describe(x0=x0, t=t, eps=eps)
    seen_x, seen_t = first_model_call(ddpm_loss, lambda x, tn: 0.5 * x, (x0, t, eps, LIN.alphas_cumprod), inputs)[1][:2]
    normalised = isinstance(seen_t, torch.Tensor) and seen_t.is_floating_point() and bool((seen_t <= 1).all())
    expect(normalised and seen_t.shape == t.shape, f"the UNet was called with t = "
           f"{seen_t.reshape(-1)[:4].tolist() if isinstance(seen_t, torch.Tensor) else seen_t}",
           inputs=inputs, expected=f"t / T = {(t.float() / T_MNIST)[:4].tolist()}",
           hint=f"The UNet takes the normalised time t / T (T = {T_MNIST}), a (B,) float tensor in [0, 1].",
           key="t-not-normalised")
    expect_close(seen_t.double(), t.double() / T_MNIST, "the times the UNet saw against t / T", atol=1e-6,
                 inputs=inputs)
    expect_close(seen_x, LIN.add_noise(x0, eps, t), "the UNet's input against x_t", atol=1e-6, inputs=inputs)


@check(cases=_ddpm_batches, examples=12)
def check_ddpm_loss_value(ddpm_loss, batch):
    """ddpm_loss = mean |eps_theta(x_t, t / T) - eps|^2, one number

    Hint: The UNet predicts the noise: F.mse_loss(model(x_t, t / T), eps).
    """
    x0, t, eps = batch
    model = lambda x, tn: 0.5 * x + tn.reshape(-1, 1, 1, 1).to(x.dtype)  # noqa: E731
    inputs = "model eps(x_t, s) = 0.5 x_t + s, " + describe(x0=x0, t=t, eps=eps)
    out = call(ddpm_loss, model, x0, t, eps, LIN.alphas_cumprod, scalar=True, inputs=inputs)
    expect_close(out, R.ddpm_loss(model, x0, t, eps, LIN.alphas_cumprod), "the loss", atol=1e-6, inputs=inputs)


def _ddpm_timesteps(steps: int) -> list[int]:
    """steps decreasing timesteps from T - 1 to 0, then -1 (the clean image), like the shipped sampler."""
    ts = sorted({round(v) for v in torch.linspace(T_MNIST - 1, 0, steps, dtype=torch.float64).tolist()}, reverse=True)
    return ts + [-1]


@check
def check_ddpm_sample_visits(ddpm_sample):
    """ddpm_sample visits the timesteps in order and calls the UNet with t / T

    Hint: for each (t, t') in consecutive timesteps: eps = model(x, t / T); x = the DDPM step of A1.4.
    """
    data = pm_one_data(4)
    spy = SpyDen(finite_data_denoiser(data, LIN))
    ts = _ddpm_timesteps(10)
    x = randn((2, 1, 8, 8), 0)
    inputs = f"timesteps = {ts}"
    call(ddpm_sample, _unet_of(spy), x, ts, LIN.alphas_cumprod, torch.Generator().manual_seed(0), like=x,
         like_name="x", inputs=inputs)
    expect_visits(spy, ts, 0, inputs, who="the UNet")


@check(cases=lambda: st.tuples(st.sampled_from([10, 30]), seeds()), examples=3)
def check_ddpm_sample_ends_on_data(ddpm_sample, case):
    """ddpm_sample ends exactly on data images (an exact denoiser behind the UNet; the last step adds no noise)

    Hint: The DDPM step of A1.4 with t' = -1 at the end: x0_hat, without noise.
    """
    steps, seed = case
    data = pm_one_data(4, seed % 5)
    ts = _ddpm_timesteps(steps)
    x = randn((6, 1, 8, 8), seed)
    inputs = f"timesteps = {ts}, " + describe(x=x)
    out = call(ddpm_sample, _unet_of(finite_data_denoiser(data, LIN)), x, ts, LIN.alphas_cumprod,
               torch.Generator().manual_seed(seed), like=x, like_name="x", inputs=inputs)
    nearest = data[torch.cdist(out.flatten(1), data.flatten(1)).argmin(1)]
    expect_close(out, nearest, "the samples against their nearest data images", atol=1e-3, inputs=inputs)


@check
def check_ddpm_sample_generator(ddpm_sample):
    """ddpm_sample draws from the generator only: the same seed gives the same digits

    Hint: Draw every z with torch.randn(x.shape, generator=generator, dtype=x.dtype).
    """
    data = pm_one_data(4)
    unet, ts, x = _unet_of(finite_data_denoiser(data, LIN)), _ddpm_timesteps(10), randn((2, 1, 8, 8), 0)
    args = lambda: (unet, x, ts, LIN.alphas_cumprod, torch.Generator().manual_seed(4))  # noqa: E731
    same_with_generator(ddpm_sample, args(), args(), f"timesteps = {ts}")


@check(cases=lambda: st.tuples(st.sampled_from([5, 10, 30]), seeds()), examples=4)
def check_ddpm_sample_matches(ddpm_sample, case):
    """ddpm_sample equals minidiff's iterative_denoise with the UNet at t / T, draw for draw

    Hint: At each step: eps = model(x, t / T), z = torch.randn(x.shape, generator=generator, dtype=x.dtype), the step.
    """
    steps, seed = case
    data = pm_one_data(4, seed % 5)
    unet, ts, x = _unet_of(finite_data_denoiser(data, LIN)), _ddpm_timesteps(steps), randn((2, 1, 8, 8), seed)
    inputs = f"timesteps = {ts}, generator seed {seed}"
    out = call(ddpm_sample, unet, x, ts, LIN.alphas_cumprod, torch.Generator().manual_seed(seed), like=x,
               like_name="x", inputs=inputs)
    want = R.ddpm_sample(unet, x, ts, LIN.alphas_cumprod, torch.Generator().manual_seed(seed))
    expect_close(out, want, "the samples", atol=1e-4, inputs=inputs)


B2_3_1 = exercise(
    "B2.3.1", "DDPM for digits: the training loss and the sampler", lesson="B2.3.1", file_name="b2_3_1_ddpm.py",
    checks=(check_ddpm_loss_input, check_ddpm_loss_value, check_ddpm_sample_visits, check_ddpm_sample_ends_on_data,
            check_ddpm_sample_generator, check_ddpm_sample_matches),
    mistakes=DDPM_MISTAKES,
    heading="DDPM for digits", intro="""
        The course's DDPM version of Part B: linear betas from 1e-4 to 0.02 over T = 300 steps
        give ab_t = alphas_cumprod[t]. Training noises a digit in one jump and teaches the UNet,
        told t / T, to find the noise; sampling runs A1.4's strided DDPM loop from pure noise:

            x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps,     t ~ U{0, ..., T - 1} per digit
            L   = mean | eps_theta(x_t, t / T) - eps |^2
        """, imports="""
        import torch
        import torch.nn.functional as F

        from minidiff.exercises.reference import ddpm_step  # or your A1.4 step
        """, body=f'''
        def ddpm_loss(model, x0, t, eps, alphas_cumprod):
            """The DDPM loss mean |model(x_t, t / T) - eps|^2, a 0-d tensor with a gradient.

            model           the UNet: model(x_t, t / T) -> eps_hat; t / T a (B,) float tensor in [0, 1]
            x0              (B, 1, 28, 28) digits in [0, 1]
            t               (B,) integer timesteps in [0, T - 1], one per digit
            eps             (B, 1, 28, 28) the N(0, I) noise
            alphas_cumprod  (T,) tensor: alphas_cumprod[t] = ab_t
            returns         the loss, a 0-d tensor
            """
            # TODO: ab_t per digit as (B, 1, 1, 1), x_t, the UNet at t / T, the L2 loss to eps
            {NOT_YET}


        def ddpm_sample(model, x, timesteps, alphas_cumprod, generator):
            """Digits from noise x at timesteps[0] = T - 1: A1.4's loop with the UNet at t / T.

            for each consecutive (t, t') in timesteps:
                eps = model(x, torch.full((B,), t / T))
                z   = torch.randn(x.shape, generator=generator, dtype=x.dtype)
                x   = ddpm_step(x, eps, t, t', alphas_cumprod, z)

            model           the UNet: model(x_t, t / T) -> eps_hat
            x               (B, 1, 28, 28) pure noise
            timesteps       decreasing ints from T - 1, e.g. [299, 289, ..., 0, -1]; -1 is the clean image
            alphas_cumprod  (T,) tensor
            generator       a torch.Generator: draw every z from it
            returns         the digits, x's shape and dtype
            """
            # TODO: the loop of the docstring
            {NOT_YET}
        ''')
