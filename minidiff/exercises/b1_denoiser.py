"""B1.2 Noising digits and B1.2.1 the one-step denoiser's L2 loss: starters, checks, known mistakes.

The loss is checked on stand-in models with known outputs, and on a small convolution for
the gradients it sends into the model's weights (``fixtures.expect_same_gradients``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.exercises import reference as R
from minidiff.exercises.fixtures import expect_same_gradients, first_model_call, image_shapes, randn, seeds, st
from minidiff.exercises.harness import Mistake, call, check, describe, expect_close
from minidiff.exercises.starters import NOT_YET, exercise

__all__ = ["B1_2", "B1_2_1"]


ADD_NOISE_MISTAKES = (
    Mistake("sigma-squared", "add_noise",
            "sigma is the noise's standard deviation: z = x + sigma * eps (sigma^2 is its variance).",
            lambda x, s, n: x + s**2 * n),
    Mistake("ddpm-scaling", "add_noise",
            "This part's noising leaves the image unscaled: z = x + sigma * eps. The sqrt(ab_t) fading is DDPM's "
            "(Part A and B2.3.1).",
            lambda x, s, n: math.sqrt(max(1 - s**2, 0)) * x + s * n),
    Mistake("image-scaled", "add_noise",
            "Add the noise to the image as it is: z = x + sigma * eps, with no (1 - sigma) in front of x.",
            lambda x, s, n: (1 - s) * x + s * n),
)


def _digits_like(shape, seed):
    """Images in [0, 1] like MNIST's, and N(0, I) noise."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), randn(shape, seed + 1)


@check(cases=lambda: st.tuples(image_shapes(), seeds()), examples=5)
def check_add_noise_zero(add_noise, case):
    """sigma = 0 leaves the image as it is

    Hint: z = x + sigma * eps: with sigma = 0 nothing is added.
    """
    shape, seed = case
    x, eps = _digits_like(shape, seed)
    inputs = "sigma = 0, " + describe(x=x, noise=eps)
    out = call(add_noise, x, 0.0, eps, like=x, like_name="x", inputs=inputs)
    expect_close(out, x, "z at sigma = 0 against x", atol=1e-12, inputs=inputs)


# sigma < 1: at sigma = 1 several wrong scalings of x agree (they all vanish)
@check(cases=lambda: st.tuples(image_shapes(), seeds(), st.floats(0.05, 0.95)), examples=20)
def check_add_noise_matches(add_noise, case):
    """z = x + sigma eps for every sigma in [0, 1]

    Hint: z = x + sigma * noise: the noise scaled by sigma, added to the unscaled image.
    """
    shape, seed, sigma = case
    x, eps = _digits_like(shape, seed)
    inputs = f"sigma = {sigma:.4g}, " + describe(x=x, noise=eps)
    out = call(add_noise, x, sigma, eps, like=x, like_name="x", inputs=inputs)
    expect_close(out, R.add_noise(x, sigma, eps), "z", atol=1e-9, inputs=inputs)


B1_2 = exercise(
    "B1.2", "noising digits: z = x + sigma eps", lesson="B1.2", file_name="b1_2_add_noise.py",
    checks=(check_add_noise_zero, check_add_noise_matches), mistakes=ADD_NOISE_MISTAKES,
    heading="Noising digits", intro="""
        The one-step denoiser of Part B learns to undo a simple noising of digits x in [0, 1]:

            z = x + sigma eps,       eps ~ N(0, I)

        (sigma = 0.5 for training; the lesson shows sigma from 0 to 1).
        """, imports="import torch", body=f'''
        def add_noise(x, sigma, noise):
            """The noisy digit z = x + sigma * noise.

            x        (B, 1, 28, 28) digits in [0, 1] (any (B, ...) shape works)
            sigma    the noise level, a float >= 0
            noise    the N(0, I) draw eps, x's shape
            returns  z, x's shape and dtype
            """
            # TODO: one line
            {NOT_YET}
        ''')


def _fixed_model(x):
    """A stand-in denoiser with known outputs: D(z) = 0.5 z + 0.1."""
    return 0.5 * x + 0.1


DENOISER_LOSS_MISTAKES = (
    Mistake("target-is-noise", "denoiser_loss",
            "This denoiser predicts the clean digit: L = mean |D(z) - x|^2, with x the target (not the noise).",
            lambda m, x, s, n: F.mse_loss(m(x + s * n), n)),
    Mistake("target-is-z", "denoiser_loss",
            "Compare D(z) with the clean x, not with the noisy z it was given.",
            lambda m, x, s, n: F.mse_loss(m(x + s * n), x + s * n)),
    Mistake("sum-not-mean", "denoiser_loss",
            "Average the squared errors (F.mse_loss, or .mean()): a sum grows with the batch and the image size.",
            lambda m, x, s, n: ((m(x + s * n) - x) ** 2).sum()),
    Mistake("root-mean-square", "denoiser_loss",
            "The L2 loss is the mean squared error itself, without a square root.",
            lambda m, x, s, n: F.mse_loss(m(x + s * n), x).sqrt()),
)


@check(cases=lambda: st.tuples(image_shapes(), seeds(), st.floats(0.1, 1.0)), examples=5)
def check_denoiser_loss_input(denoiser_loss, case):
    """the model sees z = x + sigma noise

    Hint: L = mean |D(x + sigma * noise) - x|^2: the model denoises the noisy digit.
    """
    shape, seed, sigma = case
    x, eps = _digits_like(shape, seed)
    inputs = f"sigma = {sigma:.3g}, " + describe(x=x, noise=eps)
    seen = first_model_call(denoiser_loss, _fixed_model, (x, sigma, eps), inputs)[1][0]
    hint, key = (("Give the model the noisy z = x + sigma * noise, not the clean x.", "model-sees-x")
                 if seen.shape == x.shape and torch.allclose(seen, x) else (None, None))
    expect_close(seen, x + sigma * eps, "the model's input against z", atol=1e-9, inputs=inputs, hint=hint,
                 key=key)


@check(cases=lambda: st.tuples(image_shapes(), seeds(), st.floats(0.1, 1.0)), examples=15)
def check_denoiser_loss_value(denoiser_loss, case):
    """L = mean |D(z) - x|^2, one number

    Hint: F.mse_loss(model(z), x): the mean over every pixel of the batch.
    """
    shape, seed, sigma = case
    x, eps = _digits_like(shape, seed)
    inputs = f"sigma = {sigma:.3g}, model D(z) = 0.5 z + 0.1, " + describe(x=x, noise=eps)
    out = call(denoiser_loss, _fixed_model, x, sigma, eps, scalar=True, inputs=inputs)
    expect_close(out, R.denoiser_loss(_fixed_model, x, sigma, eps), "the loss", atol=1e-9, inputs=inputs)


def _tiny_conv() -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(1, 1, 3, padding=1).double()


@check
def check_denoiser_loss_gradient(denoiser_loss):
    """the loss carries gradients to the model's weights

    Hint: Return the loss as a tensor built from the model's output, so that loss.backward() reaches the weights.
    """
    x, eps = _digits_like((2, 1, 6, 6), 0)
    expect_same_gradients(denoiser_loss, R.denoiser_loss, _tiny_conv, (x, 0.5, eps),
                          "a 3x3 convolution as the model, sigma = 0.5, x of shape (2, 1, 6, 6)")


B1_2_1 = exercise(
    "B1.2.1", "the one-step denoiser's L2 loss", lesson="B1.2.1", file_name="b1_2_1_denoiser_loss.py",
    checks=(check_denoiser_loss_input, check_denoiser_loss_value, check_denoiser_loss_gradient),
    mistakes=DENOISER_LOSS_MISTAKES,
    heading="The denoiser's loss", intro="""
        The unconditional UNet D is trained to map a noisy digit back to the clean one with
        the L2 loss, averaged over the batch and the pixels:

            L = mean | D(x + sigma eps) - x |^2
        """, imports="""
        import torch
        import torch.nn.functional as F
        """, body=f'''
        def denoiser_loss(model, x, sigma, noise):
            """The L2 loss mean |model(x + sigma * noise) - x|^2, a 0-d tensor with a gradient.

            model    the denoiser: model(z) -> the clean estimate, z's shape
            x        (B, 1, 28, 28) clean digits in [0, 1]
            sigma    the noise level (0.5 in the course)
            noise    the N(0, I) draw, x's shape
            returns  the loss, a 0-d tensor
            """
            # TODO: noise the digits, denoise them, compare with the clean ones
            {NOT_YET}
        ''')
