"""Digits in one step: a student distilled from a many-step teacher by reflow.

A flow model samples by following its velocity from noise x0 (t = 0) to a digit x1 (t = 1).
The guided path bends, so Euler needs several steps to follow it; one step from x0 goes
straight along the first velocity and lands on the average of every digit that noise could
become, a blur. Reflow (Liu et al., 2023) straightens the path:

1. The teacher writes pairs: from noise x0 and a class c, its guided sampler makes the digit
   x1 = Phi(x0, c), as ``sample_digits`` would (``teacher_pairs``).
2. The student, starting from the teacher's weights (``student_from_teacher``), learns the
   straight line between each pair: u_theta(x_t, t, c) = x1 - x0 at x_t = (1 - t) x0 + t x1
   (``losses.reflow_example``), with half the draws at t = 0, where a one-step sampler asks.
3. The student samples with Euler: 1 step is x0 + u_theta(x0, 0, c); 2 steps stop at t = 1/2 on
   the way. It learned the teacher's guided map, so it samples without guidance: one network
   evaluation of batch B per step, where the teacher spends a guided pair on each of its steps.

The pairs are the student's training data: ``minidiff.train`` makes them here when the recipe
is a reflow one (``flow-class-1step``), from the config's teacher and seed, so that a resumed
run finds the same pairs again (its data fingerprint says so).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm import tqdm

__all__ = ["REFLOW", "TEACHER_PAIRS", "teacher_pairs", "student_from_teacher"]

REFLOW = ("flow-class-1step",)  # the recipes (minidiff.recipes) that distil a teacher
PAIR_BATCH = 250  # digits the teacher writes per batch (a guided batch of 500 in its network)
TEACHER_PAIRS = ("pairs of noise x0, drawn with the run's seed, and the digit x1 the teacher writes from it "
                 "(minidiff.distill.teacher_pairs); no MNIST digit")  # what config.json says it trained on


def _check_teacher(cfg: dict[str, Any], teacher: dict[str, Any]) -> None:
    """Refuse a teacher (its config) that is not a class-conditioned flow model of the student's width: the
    student starts from its weights."""
    if teacher["kind"] not in ("flow", "reflow") or teacher["arch"] != "class":
        raise ValueError(f"the teacher {cfg['teacher']!r} is a {teacher['kind']}/{teacher['arch']} model; "
                         "a reflow student needs a class-conditioned flow teacher (e.g. flow-class-ema)")
    if teacher["num_hiddens"] != cfg["num_hiddens"]:
        raise ValueError(f"the student starts from its teacher's weights, so its width must be the teacher's: "
                         f"D = {teacher['num_hiddens']} for {cfg['teacher']!r}, got D = {cfg['num_hiddens']}")


@torch.inference_mode()
def teacher_pairs(cfg: dict[str, Any], device: torch.device | str = "cpu",
                  progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x1, labels, x0): cfg["pairs"] digits written by cfg["teacher"] from noise of their own.

    x0 (N, 1, 28, 28) ~ N(0, I) drawn with torch.Generator seed cfg["seed"]; labels (N,) the
    classes 0..9 in turn; x1 (N, 1, 28, 28) in [0, 1] the teacher's digits from x0, with its own
    sampler (config["sampler"]) at cfg["teacher_steps"] steps and guidance cfg["teacher_guidance"]:
    what ``sample_digits`` returns, before rounding to 8 bits. All three on the CPU.
    """
    from minidiff.mnist_pipeline import guided_samples, load_mnist_model, sampler_settings

    teacher = load_mnist_model(cfg["teacher"], device=device)
    _check_teacher(cfg, teacher.config)
    settings = sampler_settings(teacher, steps=cfg["teacher_steps"], guidance=cfg["teacher_guidance"])
    n = cfg["pairs"]
    labels = torch.arange(n) % 10
    x0 = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(cfg["seed"]))
    x1 = [guided_samples(teacher, x0[i : i + PAIR_BATCH], labels[i : i + PAIR_BATCH], settings, progress=False)
          for i in tqdm(range(0, n, PAIR_BATCH), desc=f"teacher {cfg['teacher']}", unit="batch",
                        disable=None if progress else True, dynamic_ncols=True)]
    return torch.cat(x1), labels, x0


def student_from_teacher(cfg: dict[str, Any]) -> nn.Module:
    """The student's starting point: the teacher's network (float32, training mode, on the CPU), BatchNorm unfolded."""
    from minidiff.mnist_pipeline import _resolve
    from minidiff.run_folder import load_checkpoint

    net, teacher = load_checkpoint(_resolve(cfg["teacher"]))
    _check_teacher(cfg, teacher)
    return net.train()
