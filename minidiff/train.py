"""Part B training: one loop for every recipe, with progress bars, logs and resumable checkpoints.

What a recipe trains lives in ``minidiff.recipes`` and its loss in ``minidiff.losses``; what a
run writes (atomic checkpoints, config.json, loss.csv, snapshots, the resume state) lives in
``minidiff.run_folder``, ``run_log`` and ``run_lock``. This module is the loop between them, with
the one place a process's rows of the batch are cut (``batch_loss``): Adam, optionally with the
course's exponential decay lr_k = lr * gamma^(k / K), gamma = 0.1^(1 / epochs), over steps k
with K steps per epoch, and, for recipes with ema_decay, an average of the weights
(``recipes.ema_update``) that the run saves as its model, with BatchNorm statistics
recomputed for it (``recipes.recompute_batchnorm``).

Every random draw (weights, epoch order, noise, t, class drop) comes from seeded
generators, and a checkpoint stores everything the loop needs, so ``resume`` reproduces
the uninterrupted run's loss trajectory bit for bit (on the same machine and threads).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, TextIO

import torch
from torch import nn
from tqdm import tqdm

from minidiff import distributed
from minidiff.checkpoint import check_device
from minidiff.checks import integer
from minidiff.data import training_set
from minidiff.distill import student_from_teacher, teacher_pairs
from minidiff.recipes import (
    RECIPES,
    build_from_config,
    check_train_config,
    ema_update,
    loss_of,
    recipe_config,
    recompute_batchnorm,
    schedule_of,
    training_example,
)
from minidiff.run_folder import RunFolder, check_new_run, data_fingerprint, delete_run
from minidiff.run_lock import owned_run_folder
from minidiff.run_log import open_loss_log, plot_loss
from minidiff.schedule import DDPMSchedule, FlowSchedule

__all__ = ["RECIPES", "recipe_config", "train"]


def _check_data(data: Any, batch: int, kind: str = "flow") -> tuple[torch.Tensor, ...]:
    """(images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64 in 0..9), with N >= batch, and for a reflow
    recipe (kind) the noise (N, 1, 28, 28) each image was written from: ValueError otherwise."""
    size = 3 if kind == "reflow" else 2
    if not (isinstance(data, (tuple, list)) and len(data) == size and all(isinstance(t, torch.Tensor) for t in data)):
        what = "a triple (images, labels, noise)" if size == 3 else "a pair (images, labels)"
        raise ValueError(f"data must be {what} of tensors: images (N, 1, 28, 28) in [0, 1], labels (N,) in 0..9"
                         + (", noise (N, 1, 28, 28), the teacher's x0 of each image (minidiff.distill.teacher_pairs)"
                            if size == 3 else "") + f"; got {type(data).__name__}")
    x, y = data[:2]
    if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
        raise ValueError(f"training images must be (N, 1, 28, 28), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"training images must be floats in [0, 1], got {x.dtype}; divide uint8 pixels by 255")
    if y.shape != (x.shape[0],):
        raise ValueError(f"need one label per image, got labels of shape {tuple(y.shape)} for {x.shape[0]} images")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels must be integers 0..9, got {y.dtype}; convert them with labels.long()")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > 9):
        raise ValueError(f"labels must lie in 0..9, got min {int(y.min())}, max {int(y.max())}")
    if x.shape[0] < batch:
        raise ValueError(f"need at least one full batch: {x.shape[0]} images, batch size {batch}; "
                         f"lower --batch-size to at most {x.shape[0]}" if x.shape[0] else "the training set is empty")
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("training images hold NaN or inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"training images must lie in [0, 1] (the range the samplers assume), got {lo:g}..{hi:g}; "
                         "divide uint8 pixels by 255")
    if size == 2:
        return x, y.long()
    x0 = data[2].float()
    if x0.shape != x.shape or not bool(torch.isfinite(x0).all()):
        raise ValueError(f"the noise must be finite and of the images' shape {tuple(x.shape)}, "
                         f"got {tuple(data[2].shape)}")
    return x, y.long(), x0


def _step_counts(cfg: dict[str, Any], n: int) -> tuple[int, int]:
    """(steps per epoch, total steps) on n digits: full batches only (BatchNorm dislikes a tiny last batch).

    epochs and batch_size are bounded (``recipes.MAX_EPOCHS``), so the count is one a run can finish.
    """
    steps_per_epoch = n // cfg["batch_size"]
    return steps_per_epoch, max(1, round(cfg["epochs"] * steps_per_epoch))


def _seeded_model(cfg: dict[str, Any], device: torch.device) -> nn.Module:
    """cfg's network on device, its weights drawn from cfg["seed"] without disturbing the global RNG (a reflow
    student's: its teacher's)."""
    if cfg["kind"] == "reflow":  # a distilled student starts from its teacher's weights
        model = student_from_teacher(cfg)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg["seed"])
            model = build_from_config(cfg)
    model = model.to(device)
    if cfg["channels_last"] and cfg["kind"] != "judge":  # oneDNN's preferred layout for the UNet's convolutions
        model = model.to(memory_format=torch.channels_last)
    return model


@functools.lru_cache(maxsize=1)
def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The shuffled order of epoch `epoch`: a function of (seed, epoch) only, so a resumed run finds it again.

    Taken modulo 2**64, the most manual_seed takes (for the seeds below 2**32 of earlier runs, no change).
    """
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)
    return torch.randperm(n, generator=g)


def _set_lr(opt: torch.optim.Optimizer, cfg: dict[str, Any], step: int, steps_per_epoch: int) -> float:
    """Set and return the lr of `step`: with lr_decay lr * gamma^(step / steps_per_epoch), gamma = 0.1^(1 / epochs)."""
    lr = float(cfg["lr"])
    if cfg["lr_decay"]:
        lr *= (0.1 ** (1.0 / cfg["epochs"])) ** (step / steps_per_epoch)
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


def _parallel(model: nn.Module, procs: distributed.Processes, device: torch.device) -> nn.Module:
    """What the steps call: model itself, or with several processes model with global-batch BatchNorm
    inside DistributedDataParallel (which averages the gradients over the processes)."""
    if not procs.parallel:
        return model
    distributed.use_global_batchnorm(model)
    # The BatchNorm statistics are already equal on every process: no need to broadcast them.
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                               broadcast_buffers=False)


def _check_amp(amp: str | None, device: torch.device) -> str | None:
    if amp not in (None, "bf16"):
        raise ValueError(f"--amp must be bf16 (or absent for float32), got {amp!r}")
    if amp and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{device} cannot compute in bf16; train without --amp")
    return amp


def train(cfg: dict[str, Any], out: str | os.PathLike, data: tuple[torch.Tensor, torch.Tensor] | None = None,
          resume: bool = False, device: str | torch.device = "cpu", progress: bool = True,
          max_steps: int | None = None, command: str | None = None, overwrite: bool = False,
          amp: str | None = None, on_epoch: Callable[[Path, dict[str, Any]], None] | None = None,
          on_end: Callable[[Path], None] | None = None) -> nn.Module:
    """Train the model `cfg` describes on data (images (N, 1, 28, 28) in [0, 1], labels (N,)); return it in eval mode.

    data None: ``training_set(cfg.get("data"))``, or for a reflow recipe the teacher's pairs
    ``distill.teacher_pairs(cfg)`` (data given: images, labels and their noise). Checkpoints every
    cfg["save_every"] steps and at the end; ``max_steps`` stops early (after a checkpoint), which is
    how the resume test interrupts a run. An earlier run in `out` is continued with ``resume`` (same settings and data, checked by
    a fingerprint of the data) or replaced with ``overwrite``; without either it is an error. Every
    setting is checked before anything is written. A NaN or inf loss or weights stop the run with a
    RuntimeError before they are saved, so the last checkpoint in `out` stays the last good one.
    Started by torchrun, the processes share the work (``minidiff.distributed``); cfg["batch_size"]
    is then the global batch. amp "bf16": forward and loss under bfloat16 autocast.
    The run owns `out` while it trains (rank 0 holds ``owned_run_folder``'s lock): a second run
    into the same folder is refused with RunFolderInUse instead of overwriting this one.
    on_epoch(out, config as of now): called by rank 0 at the end of each epoch but the last, with
    loss.csv complete so far (how ``minidiff train`` refreshes run/index.html); its time is not
    counted as training time. on_end(out): called by rank 0 once the final model is saved, while the
    run still owns `out` (how ``minidiff train`` writes the finished run's page: a run started in
    that moment with --overwrite is refused, the folder in use, instead of deleting what the page shows).
    """
    cfg = check_train_config(cfg)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite deletes it: choose one")
    max_steps = None if max_steps is None else integer(max_steps, "max_steps", minimum=1)
    procs, device = distributed.start(check_device(device))
    try:
        amp = _check_amp(amp, device)
        # Rank 0 alone writes, so it alone owns the folder; the others only train.
        owned = owned_run_folder(out, command) if procs.is_main else contextlib.nullcontext(Path(out))
        with owned as folder:
            model = _train(cfg, folder, data, resume, device, progress, max_steps, command, overwrite, amp, procs,
                           on_epoch, on_end)
        distributed.finish_together(procs)
        return model
    finally:
        distributed.stop()


def batch_loss(cfg: dict[str, Any], model: nn.Module, schedule: DDPMSchedule | FlowSchedule | None, x: torch.Tensor,
               y: torch.Tensor, generator: torch.Generator, rows: slice | None = None,
               x0: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of cfg's recipe on one global batch (images x (B, 1, 28, 28), labels y (B,), a reflow recipe's
    noise x0 (B, 1, 28, 28)), on this process's rows.

    The randomness is drawn for all B rows, as one process draws it (``recipes.training_example``);
    with several processes this one then keeps its rows (``distributed.rows``): the one place they are cut.
    """
    inputs, target = training_example(cfg, schedule, x, y, generator, x0)
    if rows is not None:
        inputs, target = tuple(a[rows] for a in inputs), target[rows]
    return loss_of(cfg, model(*inputs), target)


def _fresh_state(cfg: dict[str, Any], device: torch.device
                 ) -> tuple[nn.Module, torch.optim.Optimizer, nn.Module | None]:
    """(the model, its Adam, and with cfg's ema_decay the average of its weights that the run ships, else None)."""
    model = _seeded_model(cfg, device)
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]))
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.get("ema_decay") else None
    return model, opt, ema


def _shipped_average(ema: nn.Module | None, cfg: dict[str, Any], schedule: DDPMSchedule | FlowSchedule | None,
                     x: torch.Tensor, y: torch.Tensor) -> Callable[[int], nn.Module] | None:
    """step -> what a checkpoint after `step` steps holds as the model when there is an average (None without one).

    A copy of the average with BatchNorm statistics of its own (``recompute_batchnorm``), made once
    per step (a snapshot, a checkpoint and the end can fall on one step). The average in training
    keeps the copied statistics (the next ema_update overwrites them anyway), so saving changes
    nothing that resume depends on.
    """
    if ema is None:
        return None
    return functools.lru_cache(maxsize=1)(lambda step: recompute_batchnorm(copy.deepcopy(ema), cfg, schedule, x, y))


def _save_when_due(run: RunFolder, model: nn.Module, opt: torch.optim.Optimizer, generator: torch.Generator,
                   average: Callable[[int], nn.Module] | None, done: int, stop: int, log: TextIO, t0: float) -> None:
    """After `done` steps (rank 0): the epoch's snapshot if it is one of snapshot_epochs, and a checkpoint every
    save_every steps (the last step's is saved after the loop). average: ``_shipped_average``'s, or None."""
    cfg, steps_per_epoch = run.config, run.steps_per_epoch
    if done % steps_per_epoch == 0 and done // steps_per_epoch in cfg["snapshot_epochs"]:
        run.save_snapshot(model if average is None else average(done), done, time.perf_counter() - t0)
    if done % cfg["save_every"] == 0 and done < stop:
        log.flush()  # loss.csv holds every row up to the checkpoint
        run.save(model, opt, generator, done, time.perf_counter() - t0, None if average is None else average(done))


def _train(cfg: dict[str, Any], out: Path, data: tuple[torch.Tensor, torch.Tensor] | None,
           resume: bool, device: torch.device, progress: bool, max_steps: int | None, command: str | None,
           overwrite: bool, amp: str | None, procs: distributed.Processes,
           on_epoch: Callable[[Path, dict[str, Any]], None] | None = None,
           on_end: Callable[[Path], None] | None = None) -> nn.Module:
    """train() once the processes are known and rank 0 (which alone writes) owns `out`. Each step: the batch in the
    epoch's order, the lr, the loss on this process's rows, the update and average, the log, a checkpoint when due."""
    rows = distributed.rows(procs, cfg["batch_size"])
    writes = procs.is_main
    old_run = [] if resume or not writes else check_new_run(out, overwrite)
    if data is None and cfg["kind"] == "reflow":
        data = teacher_pairs(cfg, device, progress and writes)
    elif data is None:
        data = training_set(cfg.get("data"))
    x_all, y_all, *noise = _check_data(data, cfg["batch_size"], cfg["kind"])
    n, batch = x_all.shape[0], cfg["batch_size"]
    steps_per_epoch, total_steps = _step_counts(cfg, n)
    run = RunFolder(out, {**cfg, "train_images": n, "data_sha256": data_fingerprint(x_all, y_all, *noise)},
                    steps_per_epoch, command, world_size=procs.world_size, amp=amp)
    model, opt, ema = _fresh_state(cfg, device)
    schedule = schedule_of(cfg)
    generator = torch.Generator().manual_seed(cfg["seed"])  # every draw of the losses: noise, t, class drop
    start_step, wall_before = run.resume(model, opt, generator, ema) if resume else (0, 0.0)
    net = _parallel(model, procs, device)  # after resume: DDP starts from the loaded weights
    if writes:  # every check passed: only now is anything written or deleted
        delete_run(old_run)
        out.mkdir(parents=True, exist_ok=True)
    x_all, y_all, noise = x_all.to(device), y_all.to(device), [x0.to(device) for x0 in noise]
    average = _shipped_average(ema, cfg, schedule, x_all, y_all)

    stop = total_steps if max_steps is None else min(total_steps, max_steps)
    log, writer = open_loss_log(out / "loss.csv" if writes else None, start_step)
    bar = tqdm(range(start_step, stop), total=total_steps, initial=start_step, disable=None if (progress and writes) else True,
               desc=cfg["recipe"], unit="step", dynamic_ncols=True)
    t0 = time.perf_counter() - wall_before  # a resumed run's clock goes on from its checkpoint
    model.train()
    try:
        for step in bar:
            epoch, i = divmod(step, steps_per_epoch)
            idx = _epoch_order(cfg["seed"], epoch, n)[i * batch : (i + 1) * batch].to(device)
            lr = _set_lr(opt, cfg, step, steps_per_epoch)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
                loss = batch_loss(cfg, net, schedule, x_all[idx], y_all[idx], generator, rows,
                                  *(x0[idx] for x0 in noise))
            value = distributed.mean_over_processes(loss, procs)  # the global batch's loss, on every rank
            if not math.isfinite(value):  # before the update: a NaN loss would make every weight NaN
                raise run.diverged(f"the loss at step {step} is {value}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema_update(ema, model, cfg["ema_decay"], step)
            writer.writerow([step, epoch, f"{lr:.6g}", f"{value:.8g}"])
            bar.set_postfix(loss=f"{value:.4f}", epoch=epoch + 1)
            if writes:
                _save_when_due(run, model, opt, generator, average, step + 1, stop, log, t0)
            if writes and on_epoch is not None and (step + 1) % steps_per_epoch == 0 and step + 1 < stop:
                log.flush()
                paused = time.perf_counter()
                on_epoch(out, run.model_config(step + 1, paused - t0))
                t0 += time.perf_counter() - paused  # the page's time is not training time
    finally:
        log.close()
        bar.close()
    final = model.eval() if average is None else average(stop)
    if writes:
        run.save(model, opt, generator, stop, time.perf_counter() - t0, None if average is None else final)
        plot_loss(out)
        if on_end is not None:
            on_end(out)
    return final
