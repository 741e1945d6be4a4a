"""The README's digits figure: real digits beside the course's model and the default one.

    python tools/make_digits_figure.py [--out docs/digits.png]

Top row: 100 digits each (10 per class, one class per column), as they are. Bottom row: the
same digits with pixel values raised to the power 0.25, which turns the faint pixels (1..40
of 255) that real MNIST almost never has into a visible grey. Needs MNIST for the real panel
(the usual search: $MINIDIFF_MNIST_DIR, ../shared/data/mnist, or a download).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from minidiff.data import heldout_set
from minidiff.metrics import faint_share
from minidiff.mnist_pipeline import DEFAULT_MODEL, load_mnist_model, sample_digits

OUT = Path(__file__).resolve().parents[1] / "docs" / "digits.png"


def grid(images: np.ndarray) -> np.ndarray:
    """(100, 28, 28) uint8 in class order -> (280, 280) float in [0, 1], one class per column."""
    tiles = images.reshape(10, 10, 28, 28).transpose(1, 2, 0, 3)  # (row, y, class, x)
    return tiles.reshape(280, 280).astype(np.float32) / 255


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    x, y = heldout_set()
    real = torch.cat([x[y == c][:10] for c in range(10)])
    real = (real[:, 0] * 255).round().to(torch.uint8).numpy()
    course, _ = sample_digits("flow-class", per_class=10, seed=0, progress=False)  # CFG 5, Heun 8
    default, _ = sample_digits(per_class=10, seed=0, progress=False)  # flow-class-ema, its own settings
    guidance = load_mnist_model(DEFAULT_MODEL).config["sampler"]["guidance"]
    panels = [("real held-out digits", real),
              ("flow-class, CFG 5, Heun 8 steps\n(the course's settings, 15 evaluations)", course),
              (f"flow-class-ema, guidance {guidance:g}, Euler 8\n+ final step (the default, 9 evaluations)", default)]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 8.6))
    for col, (title, images) in enumerate(panels):
        g = grid(images)
        axes[0, col].imshow(g, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[0, col].set_title(title, fontsize=10)
        axes[1, col].imshow(g**0.25, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[1, col].set_title(f"values^0.25: faint pixels {100 * faint_share(images):.1f}%", fontsize=10)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    plt.close(fig)
    from PIL import Image

    Image.open(args.out).convert("L").save(args.out, optimize=True)  # a grey figure: 8-bit grey, a small file
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
