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

__all__ = ["real_number", "integer", "finite_tensor", "image_batch"]


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
