"""How a parity test compares minidiff with a golden output that diffusers made.

A float32 golden output carries the rounding of the CPU that made it, and another CPU's
kernels (vectorized or not, FMA or not, another summation order) round differently. So a
limit set just above what one machine measured fails on the next. Each comparison is made
twice instead, against the reference's float64 output (io64.safetensors):

- the network in float64 must give the float64 reference to 1e-6. Float64 rounding is 1e-16;
  what is left is the attention pooling's softmax, which diffusers (and minidiff, to match it)
  takes in float32 even in a float64 run: up to 7e-8 measured, 1e-6 allowed. Any mistake in
  the network moves the output by 1e-3 or more;
- the network in float32, what a user runs, must lie within 10x of diffusers' own float32
  error (its float32 golden output against its float64 one) of the float64 reference.
  Measured with PyTorch's default, AVX2 and AVX512 kernels, 1 and 2 threads: 0.9-1.5x.
"""

from __future__ import annotations

import torch

FLOAT64_LIMIT = 1e-6
FLOAT32_MARGIN = 10.0


def assert_parity(ours32: torch.Tensor, ours64: torch.Tensor, golden32: torch.Tensor, golden64: torch.Tensor) -> None:
    assert ours32.shape == ours64.shape == golden32.shape == golden64.shape
    assert ours32.dtype == torch.float32 and ours64.dtype == golden64.dtype == torch.float64
    err64 = (ours64 - golden64).abs().max().item()
    assert err64 <= FLOAT64_LIMIT, f"float64: {err64:.2e} from the reference"
    own = (golden32.double() - golden64).abs().max().item()
    err32 = (ours32.double() - golden64).abs().max().item()
    assert err32 <= FLOAT32_MARGIN * own, f"float32: {err32:.2e} from float64, diffusers' own float32 error {own:.2e}"
