"""Part B recipes: what each training run trains (its settings) and the loss it minimises.

Every recipe is the same loop (``minidiff.train``) around a different loss on a batch of
digits x in [0, 1]:

    denoiser    z = x + sigma eps (sigma = 0.5)          L = |D(z) - x|^2
    pure-noise  z = eps                                   L = |D(z) - x|^2
    ddpm-*      t ~ U{0..T-1}, x_t = sqrt(ab_t) x + sqrt(1 - ab_t) eps
                                                          L = |eps_theta(x_t, t / T [, c]) - eps|^2
    flow-*      t ~ U[0, 1], x_0 ~ N(0, I), x_t = (1 - t) x_0 + t x
                                                          L = |u_theta(x_t, t [, c]) - (x - x_0)|^2
    reflow      (x0, x1) a teacher's pairs of noise and digit (minidiff.distill); t = 0 with probability
                p_zero, else t ~ U[0, 1]; x_t = (1 - t) x0 + t x1
                                                          L = |u_theta(x_t, t, c) - (x1 - x0)|^2
    judge       cross-entropy of the classifier on randomly shifted digits

(*-class recipes drop the class vector to zero with p_uncond = 0.1, for classifier-free
guidance; a flow recipe with ``time_power`` p draws t = 1 - (1 - U)^p instead.) Each loss is
one function of ``minidiff.losses``; ``training_example`` picks a recipe's. Its settings are
checked here once (``recipe_config``, ``check_train_config``), so the losses trust them. Any
recipe can also keep an exponential moving average of its weights (``ema_decay``,
``ema_update``) and ship the average instead of the last step's weights.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.checks import integer, real_number
from minidiff.losses import (
    ddpm_example,
    denoiser_example,
    flow_example,
    judge_example,
    pure_noise_example,
    reflow_example,
)
from minidiff.metrics import MNISTJudge, ResNetJudge
from minidiff.models.mnist import build_model, class_vector
from minidiff.schedule import DDPMSchedule, FlowSchedule

__all__ = [
    "RECIPES",
    "recipe_config",
    "check_train_config",
    "check_model_config",
    "build_from_config",
    "schedule_of",
    "training_example",
    "loss_of",
    "ema_update",
    "recompute_batchnorm",
]

# The course's settings, with the width D chosen to train in minutes on a 2-core CPU
# (the course uses D = 128 for the denoiser and D = 64 for DDPM and flow models).
RECIPES: dict[str, dict[str, Any]] = {
    "denoiser": dict(kind="denoiser", arch="unconditional", num_hiddens=32, sigma=0.5,
                     epochs=5, batch_size=64, lr=1e-3, lr_decay=False, snapshot_epochs=[1, 5]),
    "pure-noise": dict(kind="pure-noise", arch="unconditional", num_hiddens=32,
                       epochs=5, batch_size=64, lr=1e-3, lr_decay=False, snapshot_epochs=[1, 5]),
    "ddpm-time": dict(kind="ddpm", arch="time", num_hiddens=32, T=300, beta_start=1e-4, beta_end=0.02,
                      epochs=10, batch_size=128, lr=1e-3, lr_decay=True, snapshot_epochs=[1, 5]),
    "ddpm-class": dict(kind="ddpm", arch="class", num_hiddens=32, T=300, beta_start=1e-4, beta_end=0.02,
                       p_uncond=0.1, epochs=10, batch_size=128, lr=1e-3, lr_decay=True, snapshot_epochs=[1, 5]),
    "flow-time": dict(kind="flow", arch="time", num_hiddens=32,
                      epochs=10, batch_size=64, lr=1e-2, lr_decay=True, snapshot_epochs=[1, 5]),
    "flow-class": dict(kind="flow", arch="class", num_hiddens=32, p_uncond=0.1,
                       epochs=8, batch_size=64, lr=1e-2, lr_decay=True, snapshot_epochs=[1, 2, 5, 8]),
    # Not the course's: flow-class trained longer, shipping an average of its weights. The
    # default model of sample_digits (weights/README.md says what it changes and why).
    "flow-class-ema": dict(kind="flow", arch="class", num_hiddens=32, p_uncond=0.1, ema_decay=0.999,
                           epochs=18, batch_size=64, lr=1e-2, lr_decay=True, snapshot_epochs=[1, 6, 12, 18]),
    # Not the course's: a student distilled from flow-class-ema by reflow (minidiff.distill) that
    # makes a digit in one network evaluation, without guidance (weights/README.md, "Digits in one step").
    "flow-class-1step": dict(kind="reflow", arch="class", num_hiddens=32, teacher="flow-class-ema",
                             teacher_guidance=1.75, teacher_steps=8, pairs=16_000, p_zero=0.5,
                             epochs=24, batch_size=64, lr=1e-3, lr_decay=True, snapshot_epochs=[1, 6, 12, 24],
                             sampler=dict(method="euler", steps=1, guidance=1.0, final_denoise=0.0)),
    "judge": dict(kind="judge", arch="judge", width=32, max_shift=2,
                  epochs=4, batch_size=64, lr=1e-3, lr_decay=True, snapshot_epochs=[]),
    # Not the course's: a second judge, of another architecture and seed, so that no figure
    # rests on one classifier a sampler could be tuned to (weights/README.md).
    "judge2": dict(kind="judge", arch="resnet-judge", width=32, max_shift=2, seed=1,
                   epochs=4, batch_size=64, lr=1e-3, lr_decay=True, snapshot_epochs=[]),
}
_COMMON = dict(seed=0, save_every=500, channels_last=True, data_range=[0.0, 1.0])

# Keys a config may carry beyond its recipe's settings: where the training data came from.
_EXTRA_KEYS = ("data", "train_data")
# Settings a recipe may take that it need not set: the weight average's decay (absent: none) and,
# for flow recipes, the power of the training times (absent: 1, uniform).
_OPTIONAL = ("ema_decay", "time_power")
# The network each kind of training can train.
_ARCHS_OF = {"denoiser": ("unconditional",), "pure-noise": ("unconditional",), "ddpm": ("time", "class"),
             "flow": ("time", "class"), "reflow": ("class",), "judge": ("judge", "resnet-judge")}
# The command-line flag of each setting, for error messages.
_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "num_hiddens": "--hidden",
          "ema_decay": "--ema", "time_power": "--time-power", "width": "--hidden", "seed": "--seed",
          "save_every": "--save-every", "snapshot_epochs": "--snapshot-epochs", "teacher": "--teacher",
          "pairs": "--pairs"}
# The range of each size a run may ask for, and why it ends there. A slip such as a width of
# 10**9 for 32 is refused before anything is built, not met by an allocator error or a run
# that never ends.
_RANGES = {
    "num_hiddens": (1, 512, "D = 512 is 129M parameters, 2 GB with Adam's moments; the course's widest is 128"),
    "width": (1, 512, "the judge's first convolution; it ships at 32"),
    "batch_size": (1, 70_000, "70,000 is all of MNIST in one step"),
    "seed": (0, 2**63 - 1, "2**63 - 1, as torch.Generator.manual_seed takes"),
    "pairs": (1, 1_000_000, "a million pairs take 6 GB and about four hours of the teacher's sampling on a 2-core CPU"),
    "teacher_steps": (1, 10_000, "the samplers' limit (mnist_pipeline.MAX_STEPS)"),
}
MAX_EPOCHS = 10_000  # the recipes train 4 to 24 epochs


# ----------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------


def recipe_config(recipe: str, **overrides: Any) -> dict[str, Any]:
    """The full config of a recipe, with overrides (None values are ignored), checked.

    Only the recipe's own settings (and ``data``, the MNIST folder) can be overridden. When
    epochs is overridden, the recipe's default snapshot epochs beyond it are dropped; snapshot
    epochs given explicitly must lie in 1..epochs.
    """
    if not isinstance(recipe, str) or recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of: {' | '.join(RECIPES)}")
    cfg = {"recipe": recipe, **_COMMON, **copy.deepcopy(RECIPES[recipe])}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    fixed = sorted(set(overrides) & {"recipe", "kind", "arch"})
    if fixed:
        raise ValueError(f"{', '.join(fixed)} is set by the recipe; choose another recipe instead of overriding it")
    unknown = sorted(set(overrides) - set(cfg) - set(_EXTRA_KEYS) - set(_OPTIONAL))
    if unknown:
        raise ValueError(f"recipe {recipe!r} has no setting {', '.join(unknown)}; "
                         f"its settings are {', '.join(sorted(set(cfg) - {'recipe', 'kind', 'arch'}))}")
    cfg.update(overrides)
    if "epochs" in overrides and "snapshot_epochs" not in overrides:
        epochs = real_number(cfg["epochs"], setting_name("epochs"))  # its range: check_train_config
        cfg["snapshot_epochs"] = [e for e in cfg["snapshot_epochs"] if e <= epochs]
    return check_train_config(cfg)


def setting_name(key: str, where: str = "") -> str:
    """How an error names a setting: its flag when training, its file when loading."""
    if where:
        return f"{key} in {where}"
    return f"{key} ({_FLAGS[key]})" if key in _FLAGS else key


def check_model_config(cfg: dict[str, Any], where: str = "") -> None:
    """The settings that define the network and its noise schedule: what ``load_checkpoint`` needs.

    where: the config file, when the config was read from one (named in the error).
    """
    kind, arch = cfg.get("kind"), cfg.get("arch")
    if kind not in _ARCHS_OF:
        raise ValueError(f"{setting_name('kind', where)} must be one of {', '.join(_ARCHS_OF)}, got {kind!r}")
    if arch not in _ARCHS_OF[kind]:
        raise ValueError(f"{setting_name('arch', where)} must be {' or '.join(_ARCHS_OF[kind])} "
                         f"for kind {kind!r}, got {arch!r}")
    needed = ["width"] if kind == "judge" else ["num_hiddens"]
    needed += ["T", "beta_start", "beta_end"] if kind == "ddpm" else []
    missing = [k for k in needed if k not in cfg]
    if missing:
        raise ValueError(f"{where or 'the config'} lacks {', '.join(missing)}, which a {kind} model needs")
    _in_range(cfg[needed[0]], needed[0], where)
    if arch == "class":
        p_uncond = real_number(cfg.get("p_uncond", 0.1), setting_name("p_uncond", where), nonnegative=True)
        if p_uncond > 1:
            raise ValueError(f"{setting_name('p_uncond', where)} is a probability and must lie in [0, 1], "
                             f"got {p_uncond}")
    if kind == "ddpm":
        integer(cfg["T"], setting_name("T", where), minimum=1)
        b0 = real_number(cfg["beta_start"], setting_name("beta_start", where), positive=True)
        b1 = real_number(cfg["beta_end"], setting_name("beta_end", where), positive=True)
        if not b0 <= b1 < 1:
            raise ValueError(f"{where or 'the config'}: need 0 < beta_start <= beta_end < 1, got {b0} and {b1}")


def check_train_config(cfg: Any) -> dict[str, Any]:
    """A copy of cfg, checked, with numbers as Python numbers and snapshot epochs sorted: ValueError naming the setting."""
    if not isinstance(cfg, dict):
        raise ValueError(f"cfg must be a dict such as recipe_config('flow-class') returns, got a {type(cfg).__name__}")
    recipe = cfg.get("recipe")
    if recipe not in RECIPES:
        raise ValueError(f"cfg['recipe'] must be one of: {' | '.join(RECIPES)}, got {recipe!r}; build cfg with recipe_config")
    missing = [k for k in {"kind": 0, **_COMMON, **RECIPES[recipe]} if k not in cfg]
    if missing:
        raise ValueError(f"cfg lacks {', '.join(missing)}; build it with recipe_config({recipe!r}, ...)")
    cfg = copy.deepcopy(cfg)
    check_model_config(cfg)
    epochs = real_number(cfg["epochs"], setting_name("epochs"))
    if not 0 < epochs <= MAX_EPOCHS:
        raise ValueError(f"{setting_name('epochs')} must lie in (0, {MAX_EPOCHS}] (the recipes train 4 to 24), "
                         f"got {epochs:g}")
    cfg["epochs"] = int(epochs) if isinstance(cfg["epochs"], int) else epochs  # keep 5 as 5 in config.json
    cfg["lr"] = real_number(cfg["lr"], setting_name("lr"), positive=True)
    for key in ("batch_size", "seed"):
        cfg[key] = _in_range(cfg[key], key)
    cfg["save_every"] = integer(cfg["save_every"], setting_name("save_every"), minimum=1)
    for key in ("lr_decay", "channels_last"):
        if not isinstance(cfg[key], bool):
            raise ValueError(f"{key} must be True or False, got {cfg[key]!r}")
    if cfg["kind"] == "denoiser":
        cfg["sigma"] = real_number(cfg["sigma"], "sigma", nonnegative=True)
    if cfg["kind"] == "judge":
        cfg["max_shift"] = integer(cfg["max_shift"], "max_shift", minimum=0)
    cfg["snapshot_epochs"] = _check_snapshot_epochs(cfg["snapshot_epochs"], epochs, cfg["epochs"])
    _check_ema_decay(cfg)
    if "time_power" in cfg:
        if cfg["kind"] != "flow":
            raise ValueError(f"{setting_name('time_power')} sets how a flow recipe draws its times; "
                             f"{recipe} is a {cfg['kind']} recipe: leave it out")
        cfg["time_power"] = real_number(cfg["time_power"], setting_name("time_power"), positive=True)
    if cfg["kind"] == "reflow":
        _check_reflow(cfg)
    if cfg.get("data") is not None:
        if not isinstance(cfg["data"], (str, os.PathLike)):
            raise ValueError(f"data (--data) must be the path of an MNIST folder, got {cfg['data']!r}")
        cfg["data"] = str(cfg["data"])
    try:  # config.json is written at the first checkpoint: find out now, not after the first 500 steps
        json.dumps(cfg)
    except (TypeError, ValueError) as err:
        raise ValueError(f"cfg must hold only JSON values (numbers, strings, lists, dicts): {err}") from err
    return cfg


def _in_range(value: Any, key: str, where: str = "") -> int:
    """value as an int within key's range (``_RANGES``): ValueError stating the range otherwise."""
    low, high, why = _RANGES[key]
    number = integer(value, setting_name(key, where))
    if not low <= number <= high:
        raise ValueError(f"{setting_name(key, where)} must be an int from {low} to {high} ({why}), got {number}")
    return number


def _check_reflow(cfg: dict[str, Any]) -> None:
    """A reflow recipe's own settings: its teacher, the pairs it writes, and the share of t = 0 draws."""
    if not isinstance(cfg["teacher"], (str, os.PathLike)) or not str(cfg["teacher"]):
        raise ValueError(f"{setting_name('teacher')} must be a shipped model name (flow-class-ema) or a checkpoint "
                         f"folder, got {cfg['teacher']!r}")
    cfg["teacher"] = str(cfg["teacher"])
    for key in ("pairs", "teacher_steps"):
        cfg[key] = _in_range(cfg[key], key)
    cfg["teacher_guidance"] = real_number(cfg["teacher_guidance"], "teacher_guidance")
    cfg["p_zero"] = real_number(cfg["p_zero"], "p_zero", nonnegative=True)
    if cfg["p_zero"] > 1:
        raise ValueError(f"p_zero is the share of training times at t = 0 and must lie in [0, 1], got {cfg['p_zero']}")
    for key, flag in (("ema_decay", "--ema"), ("data", "--data")):
        if cfg.get(key) is not None:
            raise ValueError(f"{key} ({flag}): a reflow student learns from its teacher's pairs, not from MNIST, "
                             "and ships its own weights: leave it out")


def _check_ema_decay(cfg: dict[str, Any]) -> None:
    if "ema_decay" in cfg:
        decay = real_number(cfg["ema_decay"], setting_name("ema_decay"), nonnegative=True)
        if decay >= 1:
            raise ValueError(f"{setting_name('ema_decay')} must lie in [0, 1) (0: no average; 0.999: about "
                             f"the last 1,000 steps), got {decay}")
        cfg["ema_decay"] = decay


def _check_snapshot_epochs(snaps: Any, epochs: float, shown: Any) -> list[int]:
    """The snapshot epochs, sorted and unique, each a whole epoch in 1..epochs (`shown` as the config says it)."""
    if not isinstance(snaps, (list, tuple)):
        raise ValueError(f"{setting_name('snapshot_epochs')} must be a list of epochs such as [1, 5], got {snaps!r}")
    for e in snaps:
        if isinstance(e, bool) or not isinstance(e, int) or not 1 <= e <= epochs:
            raise ValueError(f"{setting_name('snapshot_epochs')} must be whole epochs from 1 to epochs = {shown}, "
                             f"got {e!r} in {list(snaps)}")
    return sorted(set(snaps))


# ----------------------------------------------------------------------------------------
# The network and the schedule of a config
# ----------------------------------------------------------------------------------------


def build_from_config(cfg: dict[str, Any]) -> nn.Module:
    """The network a config describes (weights initialised from the global RNG)."""
    if cfg["arch"] == "judge":
        return MNISTJudge(width=cfg.get("width", 32))
    if cfg["arch"] == "resnet-judge":
        return ResNetJudge(width=cfg["width"])
    return build_model(cfg["arch"], cfg["num_hiddens"])


def schedule_of(cfg: dict[str, Any]) -> DDPMSchedule | FlowSchedule | None:
    """The noise process a config trains on: DDPM's linear betas, the flow path (flow and reflow), or None
    (denoisers, judge)."""
    if cfg["kind"] == "ddpm":
        return DDPMSchedule.linear(cfg["T"], cfg["beta_start"], cfg["beta_end"])
    return FlowSchedule() if cfg["kind"] in ("flow", "reflow") else None


# ----------------------------------------------------------------------------------------
# A recipe's loss on one batch (the losses themselves: minidiff.losses)
# ----------------------------------------------------------------------------------------


def training_example(
    cfg: dict[str, Any], schedule: DDPMSchedule | FlowSchedule | None, x: torch.Tensor, y: torch.Tensor,
    generator: torch.Generator | None, x0: torch.Tensor | None = None,
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """(the network's inputs, its target) of cfg's loss on a batch: images x (B, 1, 28, 28) in [0, 1], labels y (B,)
    and, for a reflow recipe, the noise x0 (B, 1, 28, 28) each image was written from.

    The draws are made for all B rows (``minidiff.losses``); ``loss_of`` compares the two.
    """
    kind = cfg["kind"]
    if kind == "judge":
        return judge_example(x, y, generator, cfg["max_shift"])
    if cfg.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
        x0 = None if x0 is None else x0.contiguous(memory_format=torch.channels_last)
    if kind == "denoiser":
        return denoiser_example(x, generator, cfg["sigma"])
    if kind == "pure-noise":
        return pure_noise_example(x, generator)
    if kind == "reflow":
        return reflow_example(schedule, x, x0, class_vector(y), generator, cfg["p_zero"])
    c, p_uncond = (class_vector(y), cfg["p_uncond"]) if cfg["arch"] == "class" else (None, 0.0)
    if kind == "ddpm":
        return ddpm_example(schedule, x, c, generator, p_uncond)
    return flow_example(schedule, x, c, generator, p_uncond, cfg.get("time_power", 1.0))


def loss_of(cfg: dict[str, Any], output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L = ||output - target||^2 (the mean over pixels and rows), or the judge's cross-entropy."""
    return F.cross_entropy(output, target) if cfg["kind"] == "judge" else F.mse_loss(output, target)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """ema <- d ema + (1 - d) model, after optimizer step `step` (0-based), with

        d = min(decay, (1 + step) / (10 + step))

    An exponential moving average of the weights (Polyak averaging, as DDPM and most
    diffusion models since ship it) smooths the step-to-step noise of SGD out of the
    weights; the warm-up of d keeps the first steps' random weights from lingering.
    Buffers (BatchNorm's running statistics) are copied, not averaged: they already are
    running averages, of the model's own activations.
    """
    d = min(decay, (1 + step) / (10 + step))
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - d)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, cfg: dict[str, Any], schedule: DDPMSchedule | FlowSchedule | None,
                        x: torch.Tensor, y: torch.Tensor, batches: int = 32) -> nn.Module:
    """Give every BatchNorm of model the running statistics of its own activations; return model (eval mode).

    An average of the weights (``ema_update``) never runs forward during training: the running
    mean and variance it carries were copied from the trained weights and describe another
    network's activations (on the shipped flow-class-ema at its default settings: FD 23.4 and
    27% faint pixels with the copied statistics, 18.5 and 8.5% with its own). As for
    stochastic weight averaging (Izmailov et al., 2018), the fix is one pass
    over training batches in train mode with momentum None, so that each statistic is the plain
    average over `batches` batches of cfg's recipe inputs (x_t, t, c as ``training_example`` draws
    them) from images x (N, 1, 28, 28) and labels y (N,). The draws come from a generator of
    their own, seeded with cfg["seed"]: the same weights always get the same statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    batches = integer(batches, "batches", minimum=1)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    generator = torch.Generator().manual_seed(cfg["seed"])
    batch = min(cfg["batch_size"], x.shape[0])
    model.train()
    for _ in range(batches):
        idx = torch.randint(0, x.shape[0], (batch,), generator=generator).to(x.device)
        inputs, _ = training_example(cfg, schedule, x[idx], y[idx], generator)
        model(*inputs)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()
