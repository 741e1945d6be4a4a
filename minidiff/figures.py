"""Figures: what a person looks at after a lesson or a sampling run.

    rows_figure(path, rows, titles, row_labels)   titled rows of single images (PNG, matplotlib)
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

__all__ = ["rows_figure", "sampling_gif"]


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

    Short rows leave their last cells blank; a cell is ``cell`` inches square.
    """
    import matplotlib

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
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


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
