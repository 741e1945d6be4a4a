"""Invertible image views for visual anagrams (Geng et al., 2024).

A view is a map v on images with an exact inverse. An anagram asks one image to read as
prompt A as it is and as prompt B under v: at each step the denoiser's predictions on
v(x_t) are mapped back with v^{-1} and averaged (see ``minidiff.guidance.anagram``).
Geng et al. show this is sound for *orthogonal* views, which keep the statistics of
Gaussian noise: permutations of pixels (flips, rotations, patch shuffles) and negation.

Every view here is orthogonal, so it preserves the L2 norm; the permutations also keep
the multiset of pixel values. Images are (B, C, H, W).

    get_view("flip")                         # upside down, the course's anagram
    get_view("rot90"), get_view("negate")
    get_view("patch_permute", patch_size=8, seed=0)
    get_view("jigsaw", pieces=4, seed=0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from minidiff.checks import image_batch, integer, one_of, square_image

__all__ = ["View", "get_view", "VIEW_NAMES", "patch_permutation_view", "jigsaw_view"]


@dataclass(frozen=True)
class View:
    """A named invertible map on (B, C, H, W) images: inverse(view(x)) == x."""

    name: str
    view: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.view(x)


def _checked(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """fn, refusing anything but a (B, C, H, W) image batch (views act on images)."""

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        image_batch(x, "x", floating=False)
        return fn(x)

    wrapped.__doc__ = fn.__doc__
    return wrapped


def _rot(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def rotate(x: torch.Tensor) -> torch.Tensor:
        if k % 2:
            square_image(x, "a 90-degree rotation")
        return torch.rot90(x, k, dims=(-2, -1))

    return rotate


def _square_pixel_permutation(size: int, perm_of_cells: torch.Tensor, cell: int) -> torch.Tensor:
    """Flat pixel index map for a square image cut into (size // cell)^2 cells moved by perm."""
    n = size // cell
    idx = torch.arange(size * size).reshape(n, cell, n, cell).permute(0, 2, 1, 3).reshape(n * n, cell, cell)
    moved = idx[perm_of_cells]  # cell j of the output is cell perm[j] of the input
    return moved.reshape(n, n, cell, cell).permute(0, 2, 1, 3).reshape(-1)


def _permutation_view(name: str, make_index: Callable[[torch.Tensor], torch.Tensor]) -> View:
    """A view that permutes pixels by a flat index map built for the image's (H, W)."""

    def index_for(x: torch.Tensor) -> torch.Tensor:
        return make_index(x).to(x.device)

    def forward(x: torch.Tensor) -> torch.Tensor:
        idx = index_for(x)
        flat = x.reshape(*x.shape[:2], -1)
        return flat[..., idx].reshape(x.shape)

    def inverse(x: torch.Tensor) -> torch.Tensor:
        idx = index_for(x)
        inv = torch.empty_like(idx)
        inv[idx] = torch.arange(idx.numel(), device=idx.device)
        flat = x.reshape(*x.shape[:2], -1)
        return flat[..., inv].reshape(x.shape)

    return View(name, _checked(forward), _checked(inverse))


def patch_permutation_view(patch_size: int = 8, seed: int = 0) -> View:
    """Cut the image into patch_size x patch_size squares and shuffle them (seeded)."""
    patch_size, seed = integer(patch_size, "patch_size", minimum=1), integer(seed, "seed", minimum=0)

    def make_index(x: torch.Tensor) -> torch.Tensor:
        square_image(x, "patch_permute", patch_size, "patch_size")
        h = x.shape[-1]
        n = (h // patch_size) ** 2
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return _square_pixel_permutation(h, perm, patch_size)

    return _permutation_view(f"patch_permute(patch_size={patch_size}, seed={seed})", make_index)


def jigsaw_view(pieces: int = 4, seed: int = 0) -> View:
    """A jigsaw-style view: the image as a pieces x pieces grid of tiles, tiles shuffled and
    each turned by a seeded multiple of 90 degrees (a permutation of pixels, like Geng et al.'s
    jigsaw; our pieces are squares rather than interlocking shapes)."""
    pieces, seed = integer(pieces, "pieces", minimum=1), integer(seed, "seed", minimum=0)

    def make_index(x: torch.Tensor) -> torch.Tensor:
        square_image(x, "jigsaw", pieces, "pieces")
        h = w = x.shape[-1]
        cell = h // pieces
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(pieces * pieces, generator=g)
        turns = torch.randint(0, 4, (pieces * pieces,), generator=g)
        idx = torch.arange(h * w).reshape(pieces, cell, pieces, cell).permute(0, 2, 1, 3)
        idx = idx.reshape(pieces * pieces, cell, cell)[perm]
        idx = torch.stack([torch.rot90(tile, int(k), dims=(0, 1)) for tile, k in zip(idx, turns)])
        return idx.reshape(pieces, pieces, cell, cell).permute(0, 2, 1, 3).reshape(-1)

    return _permutation_view(f"jigsaw(pieces={pieces}, seed={seed})", make_index)


def _simple(name: str, fwd: Callable, inv: Callable) -> View:
    return View(name, _checked(fwd), _checked(inv))


_FACTORIES: dict[str, Callable[..., View]] = {
    "identity": lambda: _simple("identity", lambda x: x, lambda x: x),
    "flip": lambda: _simple("flip", lambda x: x.flip(-2), lambda x: x.flip(-2)),  # upside down
    "vflip": lambda: _simple("vflip", lambda x: x.flip(-2), lambda x: x.flip(-2)),
    "hflip": lambda: _simple("hflip", lambda x: x.flip(-1), lambda x: x.flip(-1)),  # mirror
    "rot90": lambda: _simple("rot90", _rot(1), _rot(-1)),
    "rot180": lambda: _simple("rot180", _rot(2), _rot(-2)),
    "rot270": lambda: _simple("rot270", _rot(3), _rot(-3)),
    "negate": lambda: _simple("negate", lambda x: -x, lambda x: -x),
    "patch_permute": patch_permutation_view,
    "jigsaw": jigsaw_view,
}

VIEW_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get_view(name: str, **params) -> View:
    """The view called ``name`` (one of VIEW_NAMES); params go to the parametrised ones.

    "flip" is the course's upside-down flip (same as "vflip"); "hflip" mirrors left-right.
    """
    try:
        return _FACTORIES[one_of(name, VIEW_NAMES, "view")](**params)
    except TypeError as err:
        raise ValueError(f"bad parameters for view {name!r}: {params} ({err})") from err
