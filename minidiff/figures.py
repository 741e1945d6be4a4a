"""Figures: what a person looks at after a lesson or a sampling run.

    rows_figure(path, rows, titles, row_labels)   titled rows of single images (PNG, matplotlib)
    grid_figure(path, rows, row_labels)           labelled rows of many same-sized images, as one picture (PNG)
    sampling_gif(path, states)                    a sampler's states x_t from noise to image (GIF)

Images are tensors in a known ``value_range`` ((-1, 1) for IF, (0, 1) for MNIST); every
function maps that range to black..white, so a figure never depends on a sample's own
minimum and maximum.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from minidiff.checks import finite_tensor

__all__ = ["rows_figure", "grid_figure", "sampling_gif"]


def _check_rows(rows: Sequence[Sequence[torch.Tensor]]) -> None:
    """ValueError for no images at all, or for a NaN or infinite one (it would be drawn as black)."""
    if not rows or not any(len(row) for row in rows):
        raise ValueError("a figure needs at least one image, got no rows or only empty ones")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            finite_tensor(image, f"rows[{r}][{c}]", "would be drawn as black pixels")


def _as_picture(image: torch.Tensor, value_range: tuple[float, float]):
    """(C, H, W) or (1, C, H, W) in value_range -> (H, W, C) numpy in [0, 1]."""
    lo, hi = value_range
    img = image.detach().float().cpu()
    img = img[0] if img.ndim == 4 else img
    return ((img - lo) / (hi - lo)).clamp(0, 1).permute(1, 2, 0).numpy()


def rows_figure(
    path: str | os.PathLike,
    rows: Sequence[Sequence[torch.Tensor]],
    titles: Sequence[Sequence[str]] | None = None,
    row_labels: Sequence[str] | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    suptitle: str | None = None,
    cell: float = 1.6,
) -> Path:
    """Rows of single images (each (C, H, W) or (1, C, H, W)), with titles and row labels, as a PNG.

    Short rows leave their last cells blank; a cell is ``cell`` inches square. A NaN or
    infinite image is refused before anything is drawn (it would show as black).
    """
    import matplotlib

    from minidiff.data import _output_path

    _check_rows(rows)
    path = _output_path(path)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrows, ncols = len(rows), max(len(r) for r in rows)
    height = (cell + 0.3) * nrows + (0.4 if suptitle else 0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, height), squeeze=False)
    for r, row in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.axis("off")
                continue
            picture = _as_picture(row[c], value_range)
            if picture.shape[2] == 1:
                ax.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(picture, interpolation="nearest")
            if titles is not None and c < len(titles[r]) and titles[r][c]:
                ax.set_title(titles[r][c], fontsize=8)
            if row_labels is not None and c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
    return _save(fig, path, suptitle)


def grid_figure(
    path: str | os.PathLike,
    rows: Sequence[Sequence[torch.Tensor]],
    row_labels: Sequence[str] | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    suptitle: str | None = None,
    cell: float = 0.6,
) -> Path:
    """Rows of same-sized images (each (C, H, W) or (1, C, H, W)), a label left of each row, as a PNG.

    The rows of ``rows_figure`` without its titles, tiled into one picture (white between the
    images, short rows left white at the end), so that hundreds of digits take a fraction of a
    second instead of an axes each. A cell is about ``cell`` inches square.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minidiff.data import _output_path, make_grid

    _check_rows(rows)
    path = _output_path(path)
    lo, hi = value_range
    first = next(img for row in rows for img in row)
    first = first[0] if first.ndim == 4 else first
    blank = torch.full_like(first, hi)
    ncols, (h, w), pad = max(len(row) for row in rows), first.shape[-2:], 2
    tiles = [img[0] if img.ndim == 4 else img for row in rows for img in list(row) + [blank] * (ncols - len(row))]
    picture = _as_picture(make_grid(torch.stack(tiles).detach().float().cpu(), ncols, pad, pad_value=hi), value_range)
    labels = 1.0 if row_labels is not None else 0.0
    fig, ax = plt.subplots(figsize=(cell * ncols + labels, cell * len(rows) + (0.5 if suptitle else 0.2)))
    if picture.shape[2] == 1:
        ax.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(picture, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([pad + r * (h + pad) + h / 2 for r in range(len(rows))] if row_labels is not None else [])
    if row_labels is not None:
        ax.set_yticklabels(row_labels, fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _save(fig, path, suptitle)


def sampling_gif(
    path: str | os.PathLike,
    states: Sequence[torch.Tensor],
    nrow: int = 10,
    scale: int = 2,
    max_frames: int = 16,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Path:
    """A GIF of a sampler's states x_t (each (B, C, H, W)), from noise to the last, as a grid.

    Images are enlarged ``scale`` times (nearest) to be seen; at most max_frames + 1 evenly
    spaced states are kept (noise frames are large in a GIF), always the first and the last.
    """
    from minidiff.data import save_gif

    keep = sorted({round(i * (len(states) - 1) / max_frames) for i in range(max_frames + 1)})
    frames = [torch.nn.functional.interpolate(states[i].detach().float().cpu(), scale_factor=scale, mode="nearest")
              for i in keep]
    return save_gif(frames, path, nrow=nrow, value_range=value_range, duration_ms=max(80, 2000 // len(frames)))


def _save(fig, path: str | os.PathLike, suptitle: str | None) -> Path:
    """Title, lay out, write and close a figure; the path written."""
    import matplotlib.pyplot as plt

    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
