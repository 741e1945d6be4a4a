"""Tiny class-conditional MNIST checkpoints (width 4, random weights): fast stand-ins for the shipped ones."""

from __future__ import annotations

from pathlib import Path

import torch

from minidiff.run_folder import save_checkpoint
from minidiff.recipes import build_from_config, recipe_config


def tiny_checkpoints(root: Path) -> dict[str, Path]:
    """Write flow-class and ddpm-class checkpoints (seed 0) under root; recipe -> folder."""
    torch.manual_seed(0)
    out = {}
    for recipe in ("flow-class", "ddpm-class"):
        cfg = recipe_config(recipe, num_hiddens=4)
        save_checkpoint(build_from_config(cfg).eval(), cfg, root / recipe)
        out[recipe] = root / recipe
    return out
