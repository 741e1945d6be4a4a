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
    "SEED_MAX", "real_number", "integer", "seed", "value_range", "finite_tensor", "finite_run", "image_batch",
    "batch_tensor", "same_shape", "timestep_tensor",
]

SEED_MAX = 2**63 - 1  # the largest seed torch.Generator.manual_seed takes as a seed of its own


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


def integer(value: object, name: str, *, minimum: int | None = None, maximum: int | None = None,
            why: str = "") -> int:
    """value as an int; ValueError unless it is an integer (Python, numpy or 0-d integer tensor)
    in [minimum, maximum] (either bound may be left out). ``why`` says where a bound comes from.

    A maximum keeps a size a user typed from becoming a hang or an allocator's message: a
    count of steps or images is checked here, before anything of that size is built.
    """
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r:.60}")
    number = int(value)
    below, above = minimum is not None and number < minimum, maximum is not None and number > maximum
    if below or above:
        bound = f">= {minimum}" if below else f"<= {maximum}"
        allowed = f" (allowed: [{minimum}, {maximum}])" if None not in (minimum, maximum) else ""
        raise ValueError(f"{name} must be an int {bound}{allowed}, got {_short(number)}{f'; {why}' if why else ''}")
    return number


def _short(number: int) -> str:
    """An int as it is read: in full up to 24 digits, else its first digits and its length."""
    text = str(number)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text.lstrip('-'))} digits)"


def seed(value: object, name: str = "seed") -> int:
    """value as a seed for torch.Generator.manual_seed: an int in [0, 2**63 - 1], else ValueError."""
    why = f"{SEED_MAX} = 2**63 - 1 is the largest seed torch.Generator.manual_seed takes"
    return integer(value, name, minimum=0, maximum=SEED_MAX, why=why)


def value_range(value: object, name: str = "value_range") -> tuple[float, float]:
    """value as a range (low, high) of finite floats with high > low, else ValueError."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be (low, high), got {value!r:.60}")
    low, high = (real_number(v, name) for v in value)
    if not high > low:
        raise ValueError(f"{name} must be (low, high) with high > low, got {tuple(value)}")
    return low, high


def finite_tensor(x: torch.Tensor, name: str, why: str = "they would spread through every later step") -> None:
    """ValueError when x holds NaN or inf values; ``why`` says what they would have done."""
    if x.is_floating_point() or x.is_complex():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            raise ValueError(
                f"{name} holds NaN or inf values ({int(bad.sum())} of {x.numel()} entries) and {why}; "
                "a NaN usually comes from an earlier step, e.g. a non-finite guidance scale"
            )


def finite_run(finite: list[torch.Tensor], ts: list, i_start: int = 0, what: str = "sampling") -> None:
    """RuntimeError when a sampling loop's state went NaN or inf, naming the first step that made it so.

    finite[k] = torch.isfinite(x).all() after step i_start + k, the step from ts[i_start + k]
    to ts[i_start + k + 1]: 0-d tensors, read here once after the loop, so that the loop
    itself never waits on the device.
    """
    if not finite:
        return
    ok = torch.stack(finite)
    if bool(ok.all()):
        return
    i = i_start + int((~ok).nonzero()[0])
    t, t_next = (v.tolist() if isinstance(v, torch.Tensor) else v for v in (ts[i], ts[i + 1]))
    raise RuntimeError(
        f"{what} produced NaN or inf values: x first went non-finite at step {i} (t = {t} -> {t_next}); "
        "the denoiser returned NaN or inf there (a model with broken weights, or inputs it cannot take), "
        "so the result would be an all-NaN image"
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
