"""Small argument checks shared by the public functions.

Every public function checks its arguments once, at its entry, and a bad one stops it
with a ValueError that names the argument, what it got and what it needs. These helpers
are the checks that several modules share; each returns the value in the form the caller
computes with (a float, an int), so a check and its conversion are one line.
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = [
    "real_number", "integer", "finite_tensor", "image_batch", "batch_tensor", "same_shape", "timestep_tensor"
]


def real_number(value: object, name: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    """value as a float; ValueError unless it is a finite real number (> 0 or >= 0 when asked).

    Python and numpy numbers and 0-d tensors are accepted; bools and strings are not
    (``scale=True`` is far more likely a slip than a guidance scale of 1).
    """
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r:.60}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number}")
    if positive and not number > 0:
        raise ValueError(f"{name} must be > 0, got {number}")
    if nonnegative and not number >= 0:
        raise ValueError(f"{name} must be >= 0, got {number}")
    return number


def integer(value: object, name: str, *, minimum: int | None = None) -> int:
    """value as an int; ValueError unless it is an integer (Python, numpy or 0-d integer tensor) >= minimum."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r:.60}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {number}")
    return number


def finite_tensor(x: torch.Tensor, name: str, why: str = "they would spread through every later step") -> None:
    """ValueError when x holds NaN or inf values; ``why`` says what they would have done."""
    if x.is_floating_point() or x.is_complex():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            raise ValueError(
                f"{name} holds NaN or inf values ({int(bad.sum())} of {x.numel()} entries) and {why}; "
                "a NaN usually comes from an earlier step, e.g. a non-finite guidance scale"
            )


def image_batch(x: object, name: str, *, channels: int | None = None, floating: bool = True) -> torch.Tensor:
    """x if it is a (B, C, H, W) tensor, else ValueError; float unless floating=False, and with
    ``channels`` channels when given."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"
        hint = f"; add a batch dimension with {name}[None]" if isinstance(x, torch.Tensor) and x.ndim == 3 else ""
        raise ValueError(f"{name} must be an image batch (B, C, H, W), got {got}{hint}")
    if floating and not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got {x.dtype}; convert it with {name}.float()")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    return x


def batch_tensor(x: object, name: str) -> torch.Tensor:
    """x if it is a tensor with a batch dimension (B, ...), else ValueError."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension (B, ...), got a 0-d tensor")
    return x


def same_shape(a: object, b: object, name_a: str, name_b: str) -> None:
    """ValueError unless a and b are tensors of the same shape."""
    for x, name in ((a, name_a), (b, name_b)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def timestep_tensor(t: object, batch: int, name: str) -> torch.Tensor:
    """t (a number, a 0-d or a (batch,) tensor) as a 0-d or (batch,) real tensor, else ValueError."""
    if isinstance(t, torch.Tensor):
        tt = t
    else:
        try:
            tt = torch.tensor(t)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name} must be a number or a tensor, got {t!r}") from err
    if tt.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a (B,) tensor, got shape {tuple(tt.shape)}")
    if tt.ndim == 1 and tt.shape[0] != batch:
        raise ValueError(f"{name} has {tt.shape[0]} entries but the batch has {batch} samples")
    if tt.is_complex() or tt.dtype == torch.bool:
        raise ValueError(f"{name} must be a real number or tensor of them, got dtype {tt.dtype}")
    return tt
