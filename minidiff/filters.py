"""Frequency filters: a Gaussian low-pass and its complement.

Used twice in the course: the classical Gaussian-blur denoiser of lesson 1.2 (the
baseline a diffusion model has to beat) and hybrid images (lesson 1.9), where one
prompt owns the low frequencies and another the high ones.

    low_pass(x)  = G_sigma * x          (separable Gaussian convolution)
    high_pass(x) = x - low_pass(x)      so low_pass(x) + high_pass(x) == x exactly

Padding is ``reflect`` by default (no dark frame at the border); ``zeros`` and
``replicate`` are available. Images are (B, C, H, W); every channel is filtered alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minidiff.checks import blur_padding, gaussian_kernel_args, image_batch

__all__ = ["gaussian_kernel1d", "gaussian_blur", "low_pass", "high_pass"]

_PADDING = {"reflect": "reflect", "replicate": "replicate", "zeros": "constant", "circular": "circular"}


def gaussian_kernel1d(kernel_size: int, sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The normalised 1-D Gaussian g_i ~ exp(-i^2 / (2 sigma^2)), i = -k//2 .. k//2. Shape (k,).

    The 2-D Gaussian G_sigma is its outer product g g^T, which is why a blur is two 1-D passes.
    kernel_size must be a positive odd int (the kernel is centred), sigma finite and > 0.
    """
    kernel_size, sigma = gaussian_kernel_args(kernel_size, sigma)
    i = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    g = torch.exp(-(i**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, kernel_size: int = 33, sigma: float = 2.0, padding: str = "reflect") -> torch.Tensor:
    """Blur each channel of x (B, C, H, W) with a Gaussian: G_sigma * x = g^T * (g * x), two 1-D passes.

    Linear in x, and it keeps a constant image constant (the kernel sums to 1).
    ``reflect`` padding needs the kernel radius to be smaller than H and W; ``zeros``
    darkens the border, which is why it is not the default.
    """
    b, c, h, w = image_batch(x, "x").shape
    work = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    g = gaussian_kernel1d(kernel_size, sigma, work).to(x.device)
    r = len(g) // 2
    mode = _PADDING[blur_padding(padding, _PADDING, len(g), h, w)]
    y = x.to(work).reshape(b * c, 1, h, w)
    y = F.pad(y, (r, r, r, r), mode=mode)
    y = F.conv2d(y, g.view(1, 1, 1, -1))  # along W
    y = F.conv2d(y, g.view(1, 1, -1, 1))  # along H
    return y.reshape(b, c, h, w).to(x.dtype)


def low_pass(x: torch.Tensor, kernel_size: int = 33, sigma: float = 2.0, padding: str = "reflect") -> torch.Tensor:
    """The low frequencies of x: its Gaussian blur."""
    return gaussian_blur(x, kernel_size, sigma, padding)


def high_pass(x: torch.Tensor, kernel_size: int = 33, sigma: float = 2.0, padding: str = "reflect") -> torch.Tensor:
    """The high frequencies of x: x - low_pass(x), so the two always add back to x."""
    return x - low_pass(x, kernel_size, sigma, padding)
