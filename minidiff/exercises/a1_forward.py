"""A1.1 The forward process, x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps: the starter, its checks, known mistakes."""

from __future__ import annotations

import torch

from minidiff.exercises.fixtures import IF, SCHEDULES, dtypes, image_shapes, randn, seeds, st
from minidiff.exercises.harness import Mistake, call, check, describe, expect, expect_close, last_call
from minidiff.exercises.starters import NOT_YET, exercise

__all__ = ["A1_1"]


def _forward_with(coefs):
    """A wrong forward: x_t = a im + b noise with (a, b) = coefs(alphas_cumprod, t)."""

    def forward(im, t, alphas_cumprod, noise):
        a, b = coefs(alphas_cumprod.double(), t)
        return (a * im + b * noise).to(im.dtype)

    return forward


def _alpha_one_step(ab, t):
    alpha = ab[t] / (ab[t - 1] if t > 0 else 1.0)
    return alpha.sqrt(), (1 - alpha).sqrt()


FORWARD_MISTAKES = (
    Mistake("noise-wrong-side", "forward",
            "The image goes with sqrt(ab_t) and the noise with sqrt(1 - ab_t): ab_t is near 1 at t = 0 (almost no "
            "noise yet) and near 0 at t = T - 1 (almost only noise).",
            _forward_with(lambda ab, t: ((1 - ab[t]).sqrt(), ab[t].sqrt()))),
    Mistake("index-off-by-one", "forward",
            "Index the table with t itself: alphas_cumprod[t] is ab_t for t = 0 ... T - 1. alphas_cumprod[t - 1] "
            "is a step behind, and at t = 0 it wraps round to the last entry, pure noise.",
            _forward_with(lambda ab, t: (ab[t - 1].sqrt(), (1 - ab[t - 1]).sqrt()))),
    Mistake("missing-sqrt", "forward",
            "Both coefficients are square roots: sqrt(ab_t) and sqrt(1 - ab_t). They scale standard deviations; "
            "their squares, ab_t and 1 - ab_t, are the variances, which add up to 1.",
            _forward_with(lambda ab, t: (ab[t], 1 - ab[t]))),
    Mistake("noise-coefficient", "forward",
            "The noise's coefficient is sqrt(1 - ab_t), so that the variances ab_t and 1 - ab_t add up to 1.",
            _forward_with(lambda ab, t: (ab[t].sqrt(), 1 - ab[t]))),
    Mistake("alpha-not-cumprod", "forward",
            "x_t comes from the clean image in one jump, so it uses the cumulative product ab_t = alphas_cumprod[t], "
            "not alpha_t = 1 - beta_t = ab_t / ab_(t-1), the signal kept by a single step.",
            _forward_with(_alpha_one_step)),
)


def _forward_inputs(shape, seed, dtype):
    im = randn(shape, seed, dtype).clamp(-1, 1)  # an image in [-1, 1]
    noise = randn(shape, seed + 1, dtype).clamp(-3, 3)
    return im, noise


@check(cases=lambda: st.tuples(image_shapes(), seeds()), examples=10)
def check_forward_endpoints(forward, case):
    """t = 0 is still the image, t = T - 1 is (almost) only the noise

    Hint: x_t = sqrt(ab_t) im + sqrt(1 - ab_t) noise, with ab_t = alphas_cumprod[t]: near 1 at t = 0, near 0 at t = 999.
    """
    ab = IF.alphas_cumprod
    shape, seed = case
    im, noise = _forward_inputs(shape, seed, torch.float64)
    inputs = describe(im=im, noise=noise)
    x0 = call(forward, im, 0, ab, noise, like=im, like_name="im", inputs="t = 0, " + inputs)
    expect_close(x0, im, "at t = 0, x_t should be the image (ab_0 = 0.99996)", atol=0.05, inputs="t = 0, " + inputs)
    x_end = call(forward, im, 999, ab, noise, like=im, like_name="im", inputs="t = 999, " + inputs)
    expect_close(x_end, noise, "at t = 999, x_t should be the noise (ab_999 = 2e-9)", atol=0.05,
                 inputs="t = 999, " + inputs)


@check(cases=lambda: st.tuples(st.integers(300, 700), seeds()), examples=8)
def check_forward_variance(forward, case):
    """x_t has variance 1 when im and noise are independent N(0, 1) (the process preserves variance)

    Hint: The variances of the two terms, ab_t and 1 - ab_t, must add up to 1: the coefficients are their square roots.
    """
    ab = IF.alphas_cumprod
    t, seed = case
    im, noise = randn((4, 1, 32, 32), seed), randn((4, 1, 32, 32), seed + 1)
    inputs = f"t = {t}, im and noise N(0, 1) of shape (4, 1, 32, 32)"
    x_t = call(forward, im, t, ab, noise, like=im, like_name="im", inputs=inputs)
    var = float(x_t.var())
    expect(abs(var - 1) < 0.1, f"x_t has variance {var:.3f} at t = {t}, expected 1 (ab_t = {ab[t]:.3f})",
           inputs=inputs, expected="variance 1", got=f"variance {var:.3f}", record=last_call())


@check(cases=lambda: st.tuples(st.sampled_from(list(SCHEDULES)), image_shapes(), seeds(), dtypes(), st.floats(0, 1)),
       examples=30)
def check_forward_matches_schedule(forward, case):
    """x_t = sqrt(ab_t) im + sqrt(1 - ab_t) noise at every t, for both schedules, shapes and dtypes

    Hint: Look up ab_t = alphas_cumprod[t] and return sqrt(ab_t) * im + sqrt(1 - ab_t) * noise.
    """
    name, shape, seed, dtype, u = case
    schedule = SCHEDULES[name]
    t = int(u * (schedule.num_timesteps - 1))
    im, noise = _forward_inputs(shape, seed, dtype)
    inputs = f"schedule {name}, t = {t}, " + describe(im=im, noise=noise)
    x_t = call(forward, im, t, schedule.alphas_cumprod, noise, like=im, like_name="im", inputs=inputs)
    tol = 1e-5 if dtype == torch.float64 else 1e-4
    expect_close(x_t, schedule.add_noise(im, noise, t), "x_t", atol=tol, inputs=inputs)


A1_1 = exercise(
    "A1.1", "the forward process: noise an image to time t", lesson="A1.1", file_name="a1_1_forward.py",
    checks=(check_forward_endpoints, check_forward_variance, check_forward_matches_schedule), mistakes=FORWARD_MISTAKES,
    heading="The forward process", intro="""
        The forward process q(x_t | x_0) noises a clean image to time t in one jump:

            x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps,      eps ~ N(0, I)

        where ab_t = alphas_cumprod[t] = prod_{s <= t} (1 - beta_s) falls from about 1 at t = 0
        to about 0 at t = T - 1 (T = 1000 for DeepFloyd IF).
        """, imports="import torch", body=f'''
        def forward(im, t, alphas_cumprod, noise):
            """The noisy image x_t = sqrt(ab_t) im + sqrt(1 - ab_t) noise.

            im              (B, C, H, W) clean images in [-1, 1]
            t               an int in [0, T - 1]
            alphas_cumprod  (T,) tensor: alphas_cumprod[t] = ab_t
            noise           (B, C, H, W) the draw eps ~ N(0, I) to use
            returns         x_t, with im's shape and dtype
            """
            # TODO: look up ab_t, then mix im and noise with the two square roots
            {NOT_YET}
        ''')
