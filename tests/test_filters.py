"""Property tests for minidiff.filters: the Gaussian low-pass and its complement."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minidiff.filters import gaussian_blur, gaussian_kernel1d, high_pass, low_pass

seeds = st.integers(0, 2**31 - 1)
odd_sizes = st.integers(0, 6).map(lambda k: 2 * k + 1)
sigmas = st.floats(0.3, 5.0)
paddings = st.sampled_from(["reflect", "replicate", "zeros", "circular"])


def gaussian_kernel(kernel_size, sigma, dtype=torch.float32):
    """The 2-D Gaussian G_sigma = g g^T (outer product of the 1-D one); sums to 1. Shape (k, k)."""
    g = gaussian_kernel1d(kernel_size, sigma, torch.float64)
    return torch.outer(g, g).to(dtype)


def _img(seed, shape=(2, 3, 16, 16), dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@given(seed=seeds, k=odd_sizes, sigma=sigmas, padding=paddings)
def test_low_pass_plus_high_pass_is_identity(seed, k, sigma, padding):
    """low_pass(x) + high_pass(x) == x for every kernel and padding."""
    x = _img(seed)
    torch.testing.assert_close(low_pass(x, k, sigma, padding) + high_pass(x, k, sigma, padding), x)


@given(k=odd_sizes, sigma=sigmas)
def test_kernel_sums_to_one_is_symmetric_and_peaks_at_centre(k, sigma):
    g = gaussian_kernel(k, sigma, torch.float64)
    assert g.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(g, g.T)
    torch.testing.assert_close(g, g.flip(0).flip(1))
    assert g[k // 2, k // 2] == g.max()


@given(value=st.floats(-10, 10), k=odd_sizes, sigma=sigmas, padding=st.sampled_from(["reflect", "replicate", "circular"]))
def test_blur_keeps_a_constant_image_constant(value, k, sigma, padding):
    """A constant image stays the same constant (so its mean is preserved) with border-safe padding."""
    x = torch.full((1, 2, 16, 16), value, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(x, k, sigma, padding), x)


@given(seed=seeds, k=odd_sizes, sigma=sigmas)
def test_blur_preserves_mean_with_circular_padding(seed, k, sigma):
    """With circular padding the blur is a convolution on the torus: the image mean is exact."""
    x = _img(seed)
    torch.testing.assert_close(gaussian_blur(x, k, sigma, "circular").mean((-2, -1)), x.mean((-2, -1)))


@given(seed=seeds, a=st.floats(-3, 3), b=st.floats(-3, 3), k=odd_sizes, sigma=sigmas, padding=paddings)
def test_blur_is_linear(seed, a, b, k, sigma, padding):
    """blur(a x + b y) == a blur(x) + b blur(y)."""
    x, y = _img(seed), _img(seed + 1)
    torch.testing.assert_close(
        gaussian_blur(a * x + b * y, k, sigma, padding),
        a * gaussian_blur(x, k, sigma, padding) + b * gaussian_blur(y, k, sigma, padding),
    )


def test_blur_equals_direct_2d_convolution_in_the_interior():
    """The two separable 1-D passes equal one 2-D convolution with the outer-product kernel."""
    x = _img(0, (1, 1, 20, 20))
    k, sigma = 5, 1.3
    direct = torch.nn.functional.conv2d(x, gaussian_kernel(k, sigma, torch.float64)[None, None])
    torch.testing.assert_close(gaussian_blur(x, k, sigma)[..., 2:-2, 2:-2], direct)


def test_blur_reduces_noise_variance_and_keeps_dtype():
    x = _img(0, (1, 1, 64, 64), torch.float32)
    y = gaussian_blur(x, 9, 2.0)
    assert y.dtype == torch.float32 and y.var() < 0.1 * x.var()
    assert gaussian_blur(x.half(), 9, 2.0).dtype == torch.float16


def test_zero_padding_darkens_the_border():
    x = torch.ones(1, 1, 16, 16)
    y = gaussian_blur(x, 7, 2.0, "zeros")
    assert y[0, 0, 0, 0] < 0.6 and y[0, 0, 8, 8] == pytest.approx(1.0)


def test_kernel1d_values():
    g = gaussian_kernel1d(3, 1.0, torch.float64)
    e = torch.exp(torch.tensor(-0.5, dtype=torch.float64))
    torch.testing.assert_close(g, torch.stack([e, torch.ones((), dtype=torch.float64), e]) / (1 + 2 * e))


def test_bad_arguments_are_clear_errors():
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(x, 4, 1.0)
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(0, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(x, 5, 0.0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gaussian_blur(torch.zeros(3, 16, 16), 5, 1.0)
    with pytest.raises(ValueError, match="padding"):
        gaussian_blur(x, 5, 1.0, "mirror")
    with pytest.raises(ValueError, match="smaller kernel"):
        gaussian_blur(x, 33, 2.0)  # radius 16 >= 16 pixels
