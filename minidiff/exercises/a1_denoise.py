"""A1.2 Denoising by Gaussian blur and A1.3 one-step denoising: starters, checks, known mistakes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minidiff.analytic import finite_data_denoiser
from minidiff.exercises import reference as R
from minidiff.exercises.fixtures import IF, SpyDen, pm_one_data, randn, seeds, st, x0_atol
from minidiff.exercises.harness import Mistake, call, check, describe, expect, expect_close
from minidiff.exercises.starters import NOT_YET, exercise
from minidiff.filters import gaussian_blur

__all__ = ["A1_2", "A1_3"]


# ========================================================================================
# A1.2 Denoising by Gaussian blur
# ========================================================================================


def _blur(x, k, sigma, padding="reflect", normalise=True, two=2.0, groups=True):
    """A Gaussian blur with the knobs learners get wrong (a blur is right with the defaults)."""
    i = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    g = torch.exp(-(i**2) / (two * sigma**2))
    g = g / g.sum() if normalise else g
    kernel = torch.outer(g, g).to(x.dtype)
    c, r = x.shape[1], k // 2
    y = F.pad(x, (r, r, r, r), mode="reflect") if padding == "reflect" else F.pad(x, (r, r, r, r))
    if groups:
        return F.conv2d(y, kernel.expand(c, 1, k, k), groups=c)
    return F.conv2d(y, kernel.expand(c, c, k, k))


BLUR_MISTAKES = (
    Mistake("zero-padding", "blur_denoise",
            "Pad by reflection, F.pad(x, (r, r, r, r), mode='reflect') with r = kernel_size // 2 (torchvision's "
            "gaussian_blur does): zero padding mixes black into a band along the border.",
            lambda x, k, s: _blur(x, k, s, padding="zeros")),
    Mistake("unnormalised", "blur_denoise",
            "Divide the kernel by its sum, so that it sums to 1: a blur must keep a flat image as it is.",
            lambda x, k, s: _blur(x, k, s, normalise=False)),
    Mistake("mixes-channels", "blur_denoise",
            "Blur every channel on its own: F.conv2d(x, kernel of shape (C, 1, k, k), groups=C). Without "
            "groups=C each output channel sums all input channels.",
            lambda x, k, s: _blur(x, k, s, groups=False)),
    Mistake("sigma-convention", "blur_denoise",
            "The Gaussian is exp(-i^2 / (2 sigma^2)) for i = -(k // 2) ... k // 2; without the 2 it is too narrow "
            "by sqrt(2).",
            lambda x, k, s: _blur(x, k, s, two=1.0)),
)


def _blur_args():
    odd = st.integers(1, 4).map(lambda h: 2 * h + 1)  # 3 ... 9: radius < the 9-pixel side
    return st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(9, 14), odd, st.floats(0.5, 3.0), seeds())


@check(cases=_blur_args, examples=15)
def check_blur_keeps_constants(blur_denoise, case):
    """a flat image stays flat (the kernel sums to 1, the border is not darkened)

    Hint: Build the normalised Gaussian kernel, pad by reflection and convolve every channel with it.
    """
    b, c, side, k, sigma, seed = case
    value = 0.25 + 0.5 * (seed % 3)
    x = torch.full((b, c, side, side), value, dtype=torch.float64)
    inputs = f"kernel_size = {k}, sigma = {sigma:.3g}, x_t = {value} everywhere, shape {tuple(x.shape)}"
    out = call(blur_denoise, x, k, sigma, like=x, like_name="x_t", inputs=inputs)
    expect_close(out, x, "the blur of a flat image", atol=1e-6, inputs=inputs)


@check(cases=_blur_args, examples=10)
def check_blur_per_channel(blur_denoise, case):
    """each channel is blurred on its own

    Hint: Convolve each channel with the kernel separately (groups=C): no channel may leak into another.
    """
    b, _, side, k, sigma, seed = case
    x = torch.cat([randn((b, 1, side, side), seed), torch.zeros(b, 1, side, side, dtype=torch.float64)], dim=1)
    inputs = f"kernel_size = {k}, sigma = {sigma:.3g}, channel 0 random, channel 1 zero, shape {tuple(x.shape)}"
    out = call(blur_denoise, x, k, sigma, like=x, like_name="x_t", inputs=inputs)
    expect_close(out[:, 1], x[:, 1], "channel 1 (all zeros) after the blur", atol=1e-9, inputs=inputs)


@check(cases=_blur_args, examples=20)
def check_blur_matches(blur_denoise, case):
    """equals minidiff's gaussian_blur (the course's kernel, reflect padding) for any size and sigma

    Hint: g_i = exp(-i^2 / (2 sigma^2)) for i = -(k // 2) ... k // 2, normalised; the 2-D kernel is the outer product of
    g with itself; pad by reflection.
    """
    b, c, side, k, sigma, seed = case
    x = randn((b, c, side, side), seed)
    inputs = f"kernel_size = {k}, sigma = {sigma:.3g}, " + describe(x_t=x)
    out = call(blur_denoise, x, k, sigma, like=x, like_name="x_t", inputs=inputs)
    expect_close(out, gaussian_blur(x, k, sigma), "the blurred image", atol=1e-5, inputs=inputs)


A1_2 = exercise(
    "A1.2", "denoising by Gaussian blur, the classical baseline", lesson="A1.2", file_name="a1_2_blur_denoise.py",
    checks=(check_blur_keeps_constants, check_blur_per_channel, check_blur_matches), mistakes=BLUR_MISTAKES,
    heading="Denoising by Gaussian blur", intro="""
        Before any network: noise is high-frequency, so a low-pass filter removes much of it,

            x0_hat = G_sigma * x_t

        (it also blurs the image's own edges: the baseline a diffusion model has to beat).
        """, imports="""
        import torch
        import torch.nn.functional as F
        """, body=f'''
        def blur_denoise(x_t, kernel_size, sigma):
            """x_t blurred by a normalised Gaussian: every channel on its own, reflect padding.

            The kernel is the outer product of the 1-D Gaussian with itself,
                g_i = exp(-i^2 / (2 sigma^2)),  i = -(k // 2), ..., k // 2,  divided by sum(g).

            x_t          (B, C, H, W) noisy images
            kernel_size  k, an odd int smaller than twice H and W
            sigma        the Gaussian's standard deviation in pixels, a float > 0
            returns      (B, C, H, W), x_t's shape and dtype
            """
            # TODO: the kernel, reflect padding (F.pad(..., mode="reflect")), then F.conv2d with groups=C
            # (torchvision.transforms.functional.gaussian_blur does all three, if you prefer)
            {NOT_YET}
        ''')


# ========================================================================================
# A1.3 One-step denoising
# ========================================================================================


def _one_step_with(x0_of):
    def one_step_denoise(den, x_t, t, alphas_cumprod):
        eps = den(x_t, torch.full((x_t.shape[0],), t, dtype=torch.long))
        ab = alphas_cumprod[t].double()
        return x0_of(x_t, eps, ab).to(x_t.dtype)

    return one_step_denoise


ONE_STEP_MISTAKES = (
    Mistake("no-division", "one_step_denoise",
            "Divide by sqrt(ab_t) too: x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, so x0 = (x_t - sqrt(1 - ab_t) eps) "
            "/ sqrt(ab_t). Removing the noise alone leaves the image faded by sqrt(ab_t).",
            _one_step_with(lambda x, e, ab: x - (1 - ab).sqrt() * e)),
    Mistake("plus-sign", "one_step_denoise",
            "Subtract the predicted noise: x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t).",
            _one_step_with(lambda x, e, ab: (x + (1 - ab).sqrt() * e) / ab.sqrt())),
    Mistake("missing-sqrt", "one_step_denoise",
            "Both coefficients are square roots: x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t).",
            _one_step_with(lambda x, e, ab: (x - (1 - ab) * e) / ab)),
)


def _one_step_case(n_data: int):
    return st.tuples(st.integers(0, 999), st.integers(1, 3), seeds()).map(lambda c: (n_data, *c))


def _one_step_inputs(case):
    n_data, t, batch, seed = case
    data = pm_one_data(n_data, seed=seed % 7)
    x0 = data[torch.arange(batch) % n_data]
    x_t = IF.add_noise(x0, randn(x0.shape, seed), t)
    return data, x0, x_t, t


@check(cases=lambda: _one_step_case(4), examples=8)
def check_one_step_calls_den(one_step_denoise, case):
    """calls den(x_t, t) with x_t itself and t as a (B,) tensor of that timestep

    Hint: eps_hat = den(x_t, torch.full((B,), t)): the denoiser takes the batch and one timestep per image.
    """
    data, _, x_t, t = _one_step_inputs(case)
    spy = SpyDen(finite_data_denoiser(data, IF))
    inputs = f"t = {t}, " + describe(x_t=x_t)
    call(one_step_denoise, spy, x_t, t, IF.alphas_cumprod, like=x_t, like_name="x_t", inputs=inputs)
    expect(bool(spy.calls), "den was never called", inputs=inputs, key="den-not-called",
           hint="Ask the denoiser for the noise: eps_hat = den(x_t, t_batch).")
    seen_x, _ = spy.calls[0]
    expect(seen_x.shape == x_t.shape and bool(torch.equal(seen_x, x_t)), "den was called with another image "
           "than x_t", inputs=inputs, key="den-wrong-x", hint="Call den on x_t itself.")
    expect(spy.times[0] == t, f"den was called at t = {spy.times[0]}, not at t = {t}", inputs=inputs,
           key="den-wrong-t", hint="Call den at the image's own timestep t.")


@check(cases=lambda: _one_step_case(1), examples=20)
def check_one_step_exact(one_step_denoise, case):
    """recovers the clean image exactly when den knows it (a data set of one image)

    Hint: x0_hat = (x_t - sqrt(1 - ab_t) eps_hat) / sqrt(ab_t): invert the forward process with the predicted noise.
    """
    data, x0, x_t, t = _one_step_inputs(case)
    inputs = f"t = {t}, " + describe(x_t=x_t)
    out = call(one_step_denoise, finite_data_denoiser(data, IF), x_t, t, IF.alphas_cumprod, like=x_t,
               like_name="x_t", inputs=inputs)
    expect_close(out, x0, "x0_hat against the one data image", atol=x0_atol(IF, t), inputs=inputs)


@check(cases=lambda: _one_step_case(4), examples=20)
def check_one_step_matches(one_step_denoise, case):
    """equals minidiff's one_step_denoise for a data set of four images

    Hint: x0_hat = (x_t - sqrt(1 - ab_t) eps_hat) / sqrt(ab_t) with eps_hat = den(x_t, t).
    """
    data, _, x_t, t = _one_step_inputs(case)
    den = finite_data_denoiser(data, IF)
    inputs = f"t = {t}, " + describe(x_t=x_t)
    out = call(one_step_denoise, den, x_t, t, IF.alphas_cumprod, like=x_t, like_name="x_t", inputs=inputs)
    want = R.one_step_denoise(den, x_t, t, IF.alphas_cumprod)
    expect_close(out, want, "x0_hat", atol=x0_atol(IF, t), inputs=inputs)


A1_3 = exercise(
    "A1.3", "one-step denoising: x0_hat from one noise estimate", lesson="A1.3", file_name="a1_3_one_step_denoise.py",
    checks=(check_one_step_calls_den, check_one_step_exact, check_one_step_matches), mistakes=ONE_STEP_MISTAKES,
    heading="One-step denoising", intro="""
        A denoiser predicts the noise in x_t. Since x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps, one
        prediction is enough to estimate the clean image:

            x0_hat = (x_t - sqrt(1 - ab_t) eps_hat) / sqrt(ab_t),      eps_hat = den(x_t, t)
        """, imports="import torch", body=f'''
        def one_step_denoise(den, x_t, t, alphas_cumprod):
            """The clean-image estimate x0_hat = (x_t - sqrt(1 - ab_t) eps_hat) / sqrt(ab_t).

            den             the denoiser: den(x_t, t_batch) -> eps_hat of x_t's shape, where
                            t_batch is a (B,) tensor holding the timestep of each image
            x_t             (B, C, H, W) noisy images at timestep t
            t               an int in [0, T - 1]
            alphas_cumprod  (T,) tensor: alphas_cumprod[t] = ab_t
            returns         x0_hat, x_t's shape and dtype
            """
            # TODO: eps_hat = den(x_t, torch.full((x_t.shape[0],), t)), then invert the forward process
            {NOT_YET}
        ''')
