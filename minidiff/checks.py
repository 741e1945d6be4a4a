"""Small argument checks shared by the public functions.

Every public function checks its arguments once, at its entry, and a bad one stops it
with a ValueError that names the argument, what it got and what it needs. These helpers
are the checks that several modules share; each returns the value in the form the caller
computes with (a float, an int), so a check and its conversion are one line.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable

import torch

__all__ = [
    "SEED_MAX", "real_number", "integer", "seed", "value_range", "finite_tensor", "finite_run", "image_batch",
    "batch_tensor", "same_shape", "timestep_tensor", "real_in", "callable_arg", "torch_generator", "model_output",
    "nonempty_list",
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


# ----------------------------------------------------------------------------------------
# Guidance, filters and views: what their public functions check once, when called
# ----------------------------------------------------------------------------------------

__all__ += [
    "condition", "guidance_rule", "batched_condition", "pairs", "time_interval", "invertible_view",
    "gaussian_kernel_args", "sigma_list", "one_of", "square_image", "blur_padding",
]


def condition(cond: object, name: str) -> torch.Tensor:
    """cond if it is a tensor whose first dimension is the batch (a guidance condition), else ValueError."""
    if not isinstance(cond, torch.Tensor) or cond.ndim < 1:
        raise ValueError(
            f"{name} must be a tensor whose first dimension is the batch, such as prompt embeddings "
            f"(B, 77, D) or class vectors (B, K), got {cond!r:.80}"
        )
    return cond


def guidance_rule(model: object, conds: dict[str, object], guidance_scale: object) -> float:
    """What every guidance rule checks once, when it is built; returns guidance_scale as a float.

    The model must be callable, every condition a tensor with a batch dimension, all of them
    the same shape apart from the batch, and the scale a finite number (a NaN or inf scale
    turns every pixel into NaN, which would be saved as a black image).
    """
    if not callable(model):
        raise ValueError(f"model must be callable as model(x_t, t, cond), got {model!r:.80}")
    shapes = {name: tuple(condition(c, name).shape) for name, c in conds.items()}
    if len({shape[1:] for shape in shapes.values()}) > 1:
        got = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"cond and uncond must have the same shape apart from the batch, got {got}")
    return real_number(guidance_scale, "guidance_scale")


def batched_condition(cond: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """cond with batch 1 or ``batch``, returned with batch ``batch`` (one condition serves every row)."""
    if cond.shape[0] == batch:
        return cond
    if cond.shape[0] == 1:
        return cond.expand(batch, *cond.shape[1:])
    raise ValueError(f"{name} has batch {cond.shape[0]} but x_t has batch {batch}: give 1 or {batch} conditions")


def pairs(items: object, name: str, who: str, first: str, callable_first: bool = False) -> list:
    """items as a non-empty list of (first, condition) pairs, else ValueError naming the bad one."""
    items = list(items)
    if not items:
        raise ValueError(f"{who} needs at least one ({first}, condition) pair, got an empty list")
    for k, pair in enumerate(items):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or (callable_first and not callable(pair[0])):
            raise ValueError(f"{name}[{k}] must be a ({first}, condition) pair, got {pair!r:.80}")
    return items


def time_interval(value: object, name: str = "interval") -> tuple[float, float]:
    """value as a pair of finite times (t_lo, t_hi) with t_lo <= t_hi, else ValueError."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (t_lo, t_hi), got {value!r:.80}")
    t_lo, t_hi = (real_number(v, name) for v in value)
    if t_lo > t_hi:
        raise ValueError(f"{name} (t_lo, t_hi) needs t_lo <= t_hi, got {value!r}")
    return t_lo, t_hi


def invertible_view(view: object) -> object:
    """view if it has callable .view and .inverse (a minidiff.views.View or alike), else ValueError."""
    if not (callable(getattr(view, "view", None)) and callable(getattr(view, "inverse", None))):
        raise ValueError(f"expected a View (with .view and .inverse) or a view name, got {view!r}")
    return view


def gaussian_kernel_args(kernel_size: object, sigma: object, sigma_name: str = "sigma") -> tuple[int, float]:
    """(kernel_size, sigma) checked: a positive odd int (the kernel is centred) and a finite sigma > 0."""
    kernel_size = integer(kernel_size, "kernel_size")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int (the kernel is centred), got {kernel_size!r}")
    return kernel_size, real_number(sigma, sigma_name, positive=True)


def sigma_list(sigmas: object, kernel_size: object, bands: int | None = None) -> list[float]:
    """sigmas as floats, each finite and > 0, strictly decreasing (coarsest band first), and with
    ``bands`` given, bands - 1 of them (N frequency bands are cut by N - 1 blurs); else ValueError."""
    if not isinstance(sigmas, (list, tuple, range, torch.Tensor)):
        raise ValueError(f"sigmas must be a list of numbers, got {sigmas!r:.60}")
    sigmas = [gaussian_kernel_args(kernel_size, s, f"sigmas[{k}]")[1] for k, s in enumerate(sigmas)]
    if any(b >= a for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError(f"sigmas must decrease strictly (coarsest band first), got {sigmas}")
    if bands is not None and bands != len(sigmas) + 1:
        raise ValueError(f"N prompts need N - 1 sigmas: got {bands} prompts and {len(sigmas)} sigmas")
    return sigmas


def one_of(value: object, choices, what: str) -> str:
    """value if it is one of the names ``choices``, else ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value


def square_image(x: torch.Tensor, who: str, multiple: int = 1, multiple_name: str = "") -> None:
    """ValueError unless x (..., H, W) is square, with a side that is a multiple of ``multiple``."""
    h, w = x.shape[-2:]
    if h != w or h % multiple:
        need = f"a square image whose side is a multiple of {multiple_name}={multiple}" if multiple_name else \
            "a square image x"
        raise ValueError(f"{who} needs {need}, got {h}x{w}")


def blur_padding(padding: object, modes, kernel_size: int, height: int, width: int) -> str:
    """padding if it is one of ``modes`` and, for "reflect", the kernel radius is below the image size."""
    padding = one_of(padding, modes, "padding")
    if padding == "reflect" and kernel_size // 2 >= min(height, width):
        raise ValueError(
            f"reflect padding needs kernel_size // 2 < image size, got kernel_size={kernel_size} for "
            f"a {height}x{width} image: use a smaller kernel or padding='replicate'"
        )
    return padding


def real_in(value: object, name: str, interval: str, why: str = "") -> float:
    """value as a float inside ``interval``, written as in mathematics ("(0, 1]", "[1, inf)"), else
    ValueError; ``why`` says where the bound comes from."""
    number = real_number(value, name)
    low_text, high_text = (v.strip() for v in interval[1:-1].split(","))
    low, high = float(low_text), float(high_text)
    above = number > low if interval[0] == "(" else number >= low
    below = number < high if interval[-1] == ")" else number <= high
    if not (above and below):
        bound = f"be >= {low_text}" if high == math.inf and interval[0] == "[" else f"lie in {interval}"
        raise ValueError(f"{name} must {bound}{f' ({why})' if why else ''}, got {number}")
    return number


def callable_arg(value: object, name: str, what: str) -> None:
    """ValueError unless value is callable; ``what`` says how it is called ("a denoiser, a callable den(x_t, t)")."""
    if not callable(value):
        raise ValueError(f"{name} must be {what}, got {value!r:.80}")


def torch_generator(generator: object) -> None:
    """ValueError unless generator is None or a torch.Generator (a bare seed is a common slip)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator, e.g. torch.Generator().manual_seed(0), got {generator!r:.40}"
        )


def model_output(x_t: object, output: object) -> None:
    """ValueError unless output fits x_t (B, C, ...): x_t's shape (eps or velocity) or 2C channels
    (eps + IF's learned-range variance values), with x_t's batch and image size."""
    batch_tensor(x_t, "x_t")
    if x_t.ndim < 2 or not isinstance(output, torch.Tensor) or output.ndim != x_t.ndim:
        raise ValueError(
            f"x_t and model_output must both be (B, C, ...) tensors of the same rank, "
            f"got shapes {tuple(x_t.shape)} and {tuple(getattr(output, 'shape', ()))}"
        )
    c = x_t.shape[1]
    if output.shape[0] != x_t.shape[0] or output.shape[2:] != x_t.shape[2:] or output.shape[1] not in (c, 2 * c):
        raise ValueError(
            f"model_output must have x_t's shape {tuple(x_t.shape)} ({c} channels: eps or velocity) or "
            f"{2 * c} channels (eps + learned-range variance), with x_t's batch and image size "
            f"{tuple(x_t.shape[2:])}; got {tuple(output.shape)}"
        )


def nonempty_list(items: object, name: str, what: str, empty: str) -> list:
    """items as a list; ValueError unless an iterable other than a string, with at least one item.

    what: what the items are ("strings"); empty: the message when there are none.
    """
    if isinstance(items, str) or not isinstance(items, Iterable):
        got = f"not a single string: write [{items!r:.60}]" if isinstance(items, str) else f"got {type(items).__name__}"
        raise ValueError(f"{name} must be a list of {what}, {got}")
    items = list(items)
    if not items:
        raise ValueError(empty)
    return items
