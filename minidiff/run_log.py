"""A training run's loss log: loss.csv (step, epoch, lr, loss), written as the run trains, and its curve.

    loss.csv, loss.png      one row per step; the curve against epochs (``plot_loss``)

A resumed run keeps the rows before its checkpoint and trains the later ones again
(``open_loss_log``); every rewrite is atomic (``minidiff.checkpoint.atomic_write``).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from minidiff.checkpoint import atomic_write

__all__ = ["open_loss_log", "read_loss_log", "plot_loss"]


def _csv_writer(log: TextIO) -> Any:
    """A csv writer that ends rows with a newline alone (csv's default, CR LF, leaves a stray byte in Unix tools)."""
    return csv.writer(log, lineterminator="\n")


def open_loss_log(path: Path | None, start_step: int) -> tuple[TextIO, Any]:
    """(file, csv writer) of loss.csv, ready for the rows of steps start_step on.

    A new run starts the file with its header; a resumed one keeps the rows of the steps before
    its checkpoint and drops the later ones (they are trained again), rewriting the file
    atomically so that a run stopped right then keeps its log. path None: a writer to nowhere
    (the processes other than rank 0 of a run over several).
    """
    if path is None:
        log = open(os.devnull, "w")
        return log, _csv_writer(log)
    if start_step == 0 or not path.exists():
        log = open(path, "w", newline="")
        writer = _csv_writer(log)
        writer.writerow(["step", "epoch", "lr", "loss"])
        return log, writer
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    try:
        kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < start_step] if rows else []
    except ValueError as err:
        raise ValueError(f"--resume: {path} is damaged ({err}); delete it to start a new log, "
                         "or start over with --overwrite") from err

    def write_kept(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            _csv_writer(f).writerows(kept)

    atomic_write(path, write_kept)
    log = open(path, "a", newline="")
    return log, _csv_writer(log)


def read_loss_log(folder: str | os.PathLike) -> list[tuple[int, float]]:
    """(step, loss) pairs from folder/loss.csv."""
    log_file = Path(folder) / "loss.csv"
    if not log_file.is_file():
        raise FileNotFoundError(f"{log_file} not found: the run's loss log ships with its weights")
    with open(log_file) as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def plot_loss(folder: str | os.PathLike, path: str | os.PathLike | None = None, title: str | None = None) -> Path:
    """The training loss of a run (folder/loss.csv) against epochs, log scale, with a running mean.

    Written to path (default folder/loss.png). A title longer than one line of the figure is
    split at its first ": " ("what: how it was trained").
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = read_loss_log(folder)
    # the run's settings (steps_per_epoch), read here: run_folder.read_run_config imports this module
    cfg = json.loads((Path(folder) / "config.json").read_text())
    steps_per_epoch = cfg.get("steps_per_epoch") or max(1, len(log))
    epoch = np.array([s for s, _ in log]) / steps_per_epoch
    loss = np.array([v for _, v in log])
    window = max(1, len(loss) // 50)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epoch, loss, lw=0.5, alpha=0.4 if window > 1 else 1.0, label="loss per step")
    if window > 1:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(epoch[window - 1 :], smooth, lw=1.5, label=f"mean of {window} steps")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy)" if cfg.get("kind") == "judge" else "training loss (MSE)")
    if title is not None:
        ax.set_title(title.replace(": ", "\n", 1) if len(title) > 60 else title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    path = Path(folder) / "loss.png" if path is None else Path(path)
    atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return path
