"""Part B training loops: denoisers, DDPM and flow matching on MNIST, and the judge.

Every recipe is the same loop around a different loss on a batch of digits x in [0, 1]:

    denoiser    z = x + sigma eps (sigma = 0.5)          L = |D(z) - x|^2
    pure-noise  z = eps                                   L = |D(z) - x|^2
    ddpm-*      t ~ U{0..T-1}, x_t = sqrt(ab_t) x + sqrt(1 - ab_t) eps
                                                          L = |eps_theta(x_t, t / T [, c]) - eps|^2
    flow-*      t ~ U[0, 1], x_0 ~ N(0, I), x_t = (1 - t) x_0 + t x
                                                          L = |u_theta(x_t, t [, c]) - (x - x_0)|^2
    judge       cross-entropy of the classifier on randomly shifted digits

(*-class recipes drop the class vector to zero with p_uncond = 0.1, for classifier-free
guidance.) Adam, optionally with the course's exponential decay lr_k = lr * gamma^(k / K),
gamma = 0.1^(1 / epochs), over steps k with K steps per epoch.

Every random draw (weights, epoch order, noise, t, class drop) comes from seeded
generators, and a checkpoint stores everything the loop needs, so ``resume`` reproduces
the uninterrupted run's loss trajectory bit for bit (on the same machine and threads).

A run's folder::

    model.safetensors, config.json       the model (what ``load_checkpoint`` and the pipelines read)
    train_state.safetensors, .json       optimizer moments and generator state, for --resume
    loss.csv, loss.png                   step, epoch, lr, loss; the curve
    snapshots/epoch_NNN/                 model + config at the end of chosen epochs
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from minidiff.checkpoint import (
    check_device,
    check_finite_state,
    check_state_dict,
    load_safetensors,
    nonfinite_keys,
    read_json_config,
)
from minidiff.checks import integer, real_number
from minidiff.models.mnist import build_model, class_vector, drop_class
from minidiff.schedule import DDPMSchedule

__all__ = [
    "RECIPES",
    "recipe_config",
    "denoiser_loss",
    "pure_noise_loss",
    "ddpm_loss",
    "flow_loss",
    "judge_loss",
    "build_from_config",
    "save_checkpoint",
    "load_checkpoint",
    "train",
    "data_fingerprint",
    "export_checkpoint",
    "cli_train",
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
    "judge": dict(kind="judge", arch="judge", width=32, max_shift=2,
                  epochs=4, batch_size=64, lr=1e-3, lr_decay=True, snapshot_epochs=[]),
}
_COMMON = dict(seed=0, save_every=500, channels_last=True, data_range=[0.0, 1.0])


# Keys a config may carry beyond its recipe's settings: where the training data came from.
_EXTRA_KEYS = ("data", "train_data")
# The network each kind of training can train.
_ARCHS_OF = {"denoiser": ("unconditional",), "pure-noise": ("unconditional",), "ddpm": ("time", "class"),
             "flow": ("time", "class"), "judge": ("judge",)}
# The command-line flag of each setting, for error messages.
_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "num_hiddens": "--hidden",
          "width": "--hidden", "seed": "--seed", "save_every": "--save-every", "snapshot_epochs": "--snapshot-epochs"}


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
    unknown = sorted(set(overrides) - set(cfg) - set(_EXTRA_KEYS))
    if unknown:
        raise ValueError(f"recipe {recipe!r} has no setting {', '.join(unknown)}; "
                         f"its settings are {', '.join(sorted(set(cfg) - {'recipe', 'kind', 'arch'}))}")
    cfg.update(overrides)
    if "epochs" in overrides and "snapshot_epochs" not in overrides:
        epochs = real_number(cfg["epochs"], _name("epochs"), positive=True)
        cfg["snapshot_epochs"] = [e for e in cfg["snapshot_epochs"] if e <= epochs]
    return _check_train_config(cfg)


def _name(key: str, where: str = "") -> str:
    """How an error names a setting: its flag when training, its file when loading."""
    if where:
        return f"{key} in {where}"
    return f"{key} ({_FLAGS[key]})" if key in _FLAGS else key


def _check_model_config(cfg: dict[str, Any], where: str = "") -> None:
    """The settings that define the network and its noise schedule: what ``load_checkpoint`` needs.

    where: the config file, when the config was read from one (named in the error).
    """
    kind, arch = cfg.get("kind"), cfg.get("arch")
    if kind not in _ARCHS_OF:
        raise ValueError(f"{_name('kind', where)} must be one of {', '.join(_ARCHS_OF)}, got {kind!r}")
    if arch not in _ARCHS_OF[kind]:
        raise ValueError(f"{_name('arch', where)} must be {' or '.join(_ARCHS_OF[kind])} for kind {kind!r}, got {arch!r}")
    needed = ["width"] if arch == "judge" else ["num_hiddens"]
    needed += ["T", "beta_start", "beta_end"] if kind == "ddpm" else []
    missing = [k for k in needed if k not in cfg]
    if missing:
        raise ValueError(f"{where or 'the config'} lacks {', '.join(missing)}, which a {kind} model needs")
    integer(cfg[needed[0]], _name(needed[0], where), minimum=1)
    if arch == "class":
        p_uncond = real_number(cfg.get("p_uncond", 0.1), _name("p_uncond", where), nonnegative=True)
        if p_uncond > 1:
            raise ValueError(f"{_name('p_uncond', where)} is a probability and must lie in [0, 1], got {p_uncond}")
    if kind == "ddpm":
        integer(cfg["T"], _name("T", where), minimum=1)
        b0 = real_number(cfg["beta_start"], _name("beta_start", where), positive=True)
        b1 = real_number(cfg["beta_end"], _name("beta_end", where), positive=True)
        if not b0 <= b1 < 1:
            raise ValueError(f"{where or 'the config'}: need 0 < beta_start <= beta_end < 1, got {b0} and {b1}")


def _check_train_config(cfg: Any) -> dict[str, Any]:
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
    _check_model_config(cfg)
    epochs = real_number(cfg["epochs"], _name("epochs"), positive=True)
    cfg["epochs"] = int(epochs) if isinstance(cfg["epochs"], int) else epochs  # keep 5 as 5 in config.json
    cfg["lr"] = real_number(cfg["lr"], _name("lr"), positive=True)
    cfg["batch_size"] = integer(cfg["batch_size"], _name("batch_size"), minimum=1)
    cfg["save_every"] = integer(cfg["save_every"], _name("save_every"), minimum=1)
    cfg["seed"] = integer(cfg["seed"], _name("seed"), minimum=0)
    if cfg["seed"] >= 2**32:
        raise ValueError(f"{_name('seed')} must be below 2**32, got {cfg['seed']}")
    for key in ("lr_decay", "channels_last"):
        if not isinstance(cfg[key], bool):
            raise ValueError(f"{key} must be True or False, got {cfg[key]!r}")
    if cfg["kind"] == "denoiser":
        cfg["sigma"] = real_number(cfg["sigma"], "sigma", nonnegative=True)
    if cfg["kind"] == "judge":
        cfg["max_shift"] = integer(cfg["max_shift"], "max_shift", minimum=0)
    snaps = cfg["snapshot_epochs"]
    if not isinstance(snaps, (list, tuple)):
        raise ValueError(f"{_name('snapshot_epochs')} must be a list of epochs such as [1, 5], got {snaps!r}")
    for e in snaps:
        if isinstance(e, bool) or not isinstance(e, int) or not 1 <= e <= epochs:
            raise ValueError(f"{_name('snapshot_epochs')} must be whole epochs from 1 to epochs = {cfg['epochs']}, "
                             f"got {e!r} in {list(snaps)}")
    cfg["snapshot_epochs"] = sorted(set(snaps))
    if cfg.get("data") is not None:
        if not isinstance(cfg["data"], (str, os.PathLike)):
            raise ValueError(f"data (--data) must be the path of an MNIST folder, got {cfg['data']!r}")
        cfg["data"] = str(cfg["data"])
    try:  # config.json is written at the first checkpoint: find out now, not after the first 500 steps
        json.dumps(cfg)
    except (TypeError, ValueError) as err:
        raise ValueError(f"cfg must hold only JSON values (numbers, strings, lists, dicts): {err}") from err
    return cfg


# ----------------------------------------------------------------------------------------
# Losses: one batch in, a scalar out. Each draws its randomness from `generator`.
# ----------------------------------------------------------------------------------------


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def denoiser_loss(model: nn.Module, x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """L2 between D(x + sigma eps) and x."""
    z = x + sigma * _randn_like(x, generator)
    return F.mse_loss(model(z), x)


def pure_noise_loss(model: nn.Module, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """L2 between D(eps) and x: the best answer is the mean digit (the lesson's point)."""
    return F.mse_loss(model(_randn_like(x, generator)), x)


def ddpm_targets(
    schedule: DDPMSchedule, x0: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw t ~ U{0..T-1} and eps; return (x_t, t, eps) with x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps."""
    t = torch.randint(0, schedule.num_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
    eps = _randn_like(x0, generator)
    return schedule.add_noise(x0, eps, t), t, eps


def ddpm_loss(
    model: nn.Module,
    schedule: DDPMSchedule,
    x0: torch.Tensor,
    c: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L2 between eps_theta(x_t, t / T [, c]) and eps."""
    x_t, t, eps = ddpm_targets(schedule, x0, generator)
    t_norm = t.float() / schedule.num_timesteps
    out = model(x_t, t_norm) if c is None else model(x_t, t_norm, c)
    return F.mse_loss(out, eps)


def flow_targets(
    x1: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw x0 ~ N(0, I) and t ~ U[0, 1]; return (x_t, t, u) with x_t = (1 - t) x0 + t x1, u = x1 - x0."""
    x0 = _randn_like(x1, generator)
    t = torch.rand(x1.shape[0], generator=generator).to(x1.device)
    tt = t.view(-1, *([1] * (x1.ndim - 1)))
    return (1 - tt) * x0 + tt * x1, t, x1 - x0


def flow_loss(
    model: nn.Module, x1: torch.Tensor, c: torch.Tensor | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """L2 between u_theta(x_t, t [, c]) and u = x1 - x0."""
    x_t, t, u = flow_targets(x1, generator)
    out = model(x_t, t) if c is None else model(x_t, t, c)
    return F.mse_loss(out, u)


def judge_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cross-entropy on randomly shifted digits."""
    from minidiff.metrics import random_shift

    return F.cross_entropy(model(random_shift(x, max_shift, generator)), y)


def _batch_loss(
    cfg: dict[str, Any], model: nn.Module, schedule: DDPMSchedule | None, x: torch.Tensor, y: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    kind = cfg["kind"]
    if kind == "judge":
        return judge_loss(model, x, y, cfg["max_shift"], generator)
    if cfg.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    if kind == "denoiser":
        return denoiser_loss(model, x, cfg["sigma"], generator)
    if kind == "pure-noise":
        return pure_noise_loss(model, x, generator)
    c = None
    if cfg["arch"] == "class":
        c = drop_class(class_vector(y), cfg["p_uncond"], generator)
    if kind == "ddpm":
        return ddpm_loss(model, schedule, x, c, generator)
    if kind == "flow":
        return flow_loss(model, x, c, generator)
    raise ValueError(f"unknown training kind {kind!r}")


# ----------------------------------------------------------------------------------------
# Models and checkpoints
# ----------------------------------------------------------------------------------------


def build_from_config(cfg: dict[str, Any]) -> nn.Module:
    """The network a config describes (weights initialised from the global RNG)."""
    if cfg["arch"] == "judge":
        from minidiff.metrics import MNISTJudge

        return MNISTJudge(width=cfg.get("width", 32))
    kwargs = {"p_uncond": cfg.get("p_uncond", 0.1)} if cfg["arch"] == "class" else {}
    return build_model(cfg["arch"], cfg["num_hiddens"], **kwargs)


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _run_folder(folder: Any, what: str) -> Path:
    """folder as a Path, if it is or can become a folder we can write in: ValueError otherwise, before any work."""
    if not isinstance(folder, (str, os.PathLike)) or not str(folder):
        raise ValueError(f"the {what} must be a folder path, got {folder!r}")
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the {what} {folder} is a file; give a folder (it is made if missing)")
    parent = folder
    while not parent.exists():  # the nearest part of the path that exists must be a folder we may write in
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"the {what} {folder} cannot be made: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"the {what} {folder} is not writable (no write permission in {parent}); choose another folder")
    return folder


def _write_json(path: Path, obj: Any) -> None:
    def write(p: str) -> None:
        with open(p, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    _atomic(path, write)


def save_checkpoint(
    model: nn.Module, cfg: dict[str, Any], folder: str | os.PathLike, dtype: torch.dtype | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write folder/model.safetensors (state dict, floats cast to dtype if given) and folder/config.json.

    Everything is checked before the first byte is written (a model with NaN or inf weights is
    not saved), and each file is replaced atomically, so a failed save leaves the old files.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch nn.Module, got a {type(model).__name__}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be None or a float dtype such as torch.float16, got {dtype!r}")
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise ValueError(f"metadata must be a dict of str to str, got {metadata!r:.80}")
    folder = _run_folder(folder, "checkpoint folder")
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v
    check_finite_state(state, "the model", "a diverged model is not saved; train again with a lower --lr")
    if not isinstance(cfg, dict):
        raise ValueError(f"cfg must be a dict (the model's config), got a {type(cfg).__name__}")
    cfg = dict(cfg)
    cfg["dtype"] = str(dtype or torch.float32).replace("torch.", "")
    try:
        config_text = json.dumps(cfg, indent=2) + "\n"
    except (TypeError, ValueError) as err:
        raise ValueError(f"cfg must hold only JSON values (numbers, strings, lists, dicts): {err}") from err
    folder.mkdir(parents=True, exist_ok=True)
    _atomic(folder / "model.safetensors", lambda p: save_file(state, p, metadata=metadata or {}))
    _atomic(folder / "config.json", lambda p: Path(p).write_text(config_text))
    return folder


# What to do about a damaged checkpoint (the advice in load_checkpoint's errors).
_DAMAGED = "the checkpoint is damaged: use another snapshot of the run, or train it again (minidiff train)"


def _describe(cfg: dict[str, Any]) -> str:
    width = f"width={cfg.get('width', 32)}" if cfg["arch"] == "judge" else f"num_hiddens={cfg['num_hiddens']}"
    return f"the {cfg['arch']} network its config.json describes ({width})"


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, float32, config) from a folder written by ``save_checkpoint``.

    A folder that is not such a checkpoint is refused with the file named: config.json that is
    not JSON or lacks a setting, model.safetensors that is truncated or holds other tensors
    than the config's network, or weights holding NaN or inf (minidiff.checkpoint).
    """
    device = check_device(device)
    if not isinstance(folder, (str, os.PathLike)) or not str(folder):
        raise ValueError(f"folder must be a checkpoint folder path, got {folder!r}")
    folder = Path(folder).expanduser()
    if folder.is_file():
        raise ValueError(f"{folder} is a file; give the folder holding model.safetensors and config.json")
    weights, config = folder / "model.safetensors", folder / "config.json"
    for f in (weights, config):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: a checkpoint folder holds model.safetensors and config.json")
    cfg = read_json_config(config, ("kind", "arch"), _DAMAGED)
    _check_model_config(cfg, str(config))
    model = build_from_config(cfg)
    state = load_safetensors(weights, _DAMAGED)
    check_state_dict(model, state, weights, _describe(cfg))
    check_finite_state(state, weights, "it was saved from a diverged run; use an earlier snapshot or train again")
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return model.to(device).eval(), cfg


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            tensors[f"opt.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


# ----------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The shuffled order of epoch `epoch`: a function of (seed, epoch) only, so a resumed run finds it again."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def _lr_at(cfg: dict[str, Any], step: int, steps_per_epoch: int) -> float:
    if not cfg.get("lr_decay"):
        return float(cfg["lr"])
    gamma = 0.1 ** (1.0 / cfg["epochs"])
    return float(cfg["lr"]) * gamma ** (step / steps_per_epoch)


def _truncate_csv(path: Path, start_step: int) -> None:
    """Keep the header and the rows of steps before start_step (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    with open(path) as f:
        rows = list(csv.reader(f))
    try:
        kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < start_step] if rows else []
    except ValueError as err:
        raise ValueError(f"--resume: {path} is damaged ({err}); delete it to start a new log, "
                         "or start over with --overwrite") from err
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(kept)


def read_loss_log(folder: str | os.PathLike) -> list[tuple[int, float]]:
    """(step, loss) pairs from folder/loss.csv."""
    with open(Path(folder) / "loss.csv") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def plot_loss(folder: str | os.PathLike) -> Path:
    """folder/loss.png: the training loss against step (log scale) with a running mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = read_loss_log(folder)
    steps = [s for s, _ in log]
    losses = [v for _, v in log]
    window = max(1, len(losses) // 50)
    smooth = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
              for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, lw=0.5, alpha=0.4, label="loss")
    ax.plot(steps, smooth, lw=1.5, label=f"mean of {window}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    out = Path(folder) / "loss.png"
    fig.savefig(out)
    plt.close(fig)
    return out


# The files a training run writes into its folder (besides snapshots/epoch_NNN/).
_RUN_FILES = ("model.safetensors", "config.json", "train_state.safetensors", "train_state.json", "loss.csv", "loss.png")
# Settings that may change between a run and its --resume: they do not change the trajectory.
_RESUMABLE_CHANGES = ("save_every", "snapshot_epochs", "data", "train_data")


def _check_data(data: Any, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64 in 0..9), with N >= batch: ValueError otherwise."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        raise ValueError("data must be a pair (images, labels) of tensors: images (N, 1, 28, 28) in [0, 1], "
                         f"labels (N,) in 0..9; got {type(data).__name__}")
    x, y = data
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
    return x, y.long()


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 over the images' float32 bytes, the labels' int64 bytes and N: what --resume compares."""
    h = hashlib.sha256(f"N={x.shape[0]}".encode())
    for t in (x.float(), y.long()):
        h.update(t.detach().cpu().contiguous().numpy().reshape(-1).view(np.uint8))
    return h.hexdigest()


def _check_new_run(out: Path, overwrite: bool) -> list[Path]:
    """The files of an earlier run in out, which only --overwrite may replace (and then they are returned)."""
    found = [out / f for f in _RUN_FILES if (out / f).exists()]
    found += sorted((out / "snapshots").glob("epoch_*"))
    if found and not overwrite:
        shown = ", ".join(str(f.relative_to(out)) for f in found[:4]) + (", ..." if len(found) > 4 else "")
        raise ValueError(f"{out} already holds a training run ({shown}); pass --resume to continue it, "
                         "--overwrite to delete it and start over, or choose another --out")
    return found


def _read_resume_state(out: Path, run_cfg: dict[str, Any], model: nn.Module) -> tuple[dict, dict, dict]:
    """(train_state.json, its tensors, the model weights) of the run in out, after checking it is this run."""
    state_file, state_json, weights = out / "train_state.safetensors", out / "train_state.json", out / "model.safetensors"
    if not (state_file.is_file() and state_json.is_file() and weights.is_file()):
        raise FileNotFoundError(f"--resume: no training checkpoint in {out} (train_state.* and model.safetensors); "
                                "start a new run without --resume")
    damaged = "the run's checkpoint is damaged; start over with --overwrite"
    meta = read_json_config(state_json, ("step", "wall_s", "config", "param_groups"), damaged)
    saved = meta["config"]
    if not isinstance(saved, dict) or not isinstance(meta["step"], int):
        raise ValueError(f"{state_json} holds no valid config and step; {damaged}")
    if "data_sha256" not in saved:
        raise ValueError(f"--resume: {out} was written by an older minidiff that did not record its training data, "
                         "so resuming it cannot be checked; start over with --overwrite")
    for key in sorted((set(saved) | set(run_cfg)) - set(_RESUMABLE_CHANGES)):
        if saved.get(key) != run_cfg.get(key):
            if key == "data_sha256":
                raise ValueError(f"--resume: the run in {out} was trained on other data ({saved.get('train_images')} "
                                 f"images, sha256 {saved[key][:12]}...) than given now ({run_cfg['train_images']} "
                                 f"images, sha256 {run_cfg[key][:12]}...); resume with the same --data or use a fresh --out")
            raise ValueError(
                f"--resume: the checkpoint was trained with {key}={saved.get(key)!r}, now {run_cfg.get(key)!r}; "
                "resume with the same settings or use a fresh --out"
            )
    tensors = load_safetensors(state_file, damaged)
    state = load_safetensors(weights, damaged)
    check_state_dict(model, state, weights, _describe(run_cfg))
    check_finite_state(state, weights, damaged)
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        model_step = (f.metadata() or {}).get("step")
    if model_step != str(meta["step"]) or "generator" not in tensors:
        raise ValueError(f"--resume: {weights} is from step {model_step} but {state_json} from step {meta['step']}; "
                         f"{damaged}")
    return meta, tensors, state


def train(
    cfg: dict[str, Any],
    out: str | os.PathLike,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    max_steps: int | None = None,
    command: str | None = None,
    overwrite: bool = False,
) -> nn.Module:
    """Train the model `cfg` describes on data (images (N, 1, 28, 28) in [0, 1], labels (N,)).

    data None: ``minidiff.data.training_set(cfg.get("data"))``. Checkpoints every
    cfg["save_every"] steps and at the end; ``max_steps`` stops early (after a checkpoint),
    which is how the resume test interrupts a run. Returns the model (eval mode).

    An earlier run in `out` is continued with ``resume`` (same settings and data, checked by a
    fingerprint of the data) or deleted and replaced with ``overwrite``; without either it is
    an error. Every setting is checked before anything is written. A NaN or inf loss or
    weights stop the run with a RuntimeError before they are saved, so the last checkpoint in
    `out` stays the last good one.
    """
    from tqdm.auto import tqdm

    cfg = _check_train_config(cfg)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite deletes it: choose one")
    out = _run_folder(out, "run folder (--out)")
    device = check_device(device)
    if max_steps is not None:
        max_steps = integer(max_steps, "max_steps", minimum=1)
    old_run = [] if resume else _check_new_run(out, overwrite)
    if data is None:
        from minidiff.data import training_set

        data = training_set(cfg.get("data"))
    batch = cfg["batch_size"]
    x_all, y_all = _check_data(data, batch)
    n = x_all.shape[0]
    steps_per_epoch = n // batch  # full batches only: BatchNorm dislikes a tiny last batch
    if cfg["epochs"] * steps_per_epoch > 1e12:
        raise ValueError(f"{_name('epochs')} = {cfg['epochs']} means {cfg['epochs'] * steps_per_epoch:.3g} steps; "
                         "give a number of epochs that can finish")
    total_steps = max(1, round(cfg["epochs"] * steps_per_epoch))
    run_cfg = {**cfg, "train_images": n, "data_sha256": data_fingerprint(x_all, y_all)}

    # Model and optimizer; weights drawn from a seeded RNG without disturbing the global one.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        model = build_from_config(cfg)
    opt_state = _read_resume_state(out, run_cfg, model) if resume else None
    # Every check passed: only now is anything written or deleted.
    for old in old_run:
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    x_all, y_all = x_all.to(device), y_all.to(device)
    model = model.to(device)
    if cfg.get("channels_last") and cfg["kind"] != "judge":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]))
    schedule = DDPMSchedule.linear(cfg["T"], cfg["beta_start"], cfg["beta_end"]) if cfg["kind"] == "ddpm" else None
    generator = torch.Generator().manual_seed(cfg["seed"])

    start_step, wall_before = 0, 0.0
    state_file, state_json = out / "train_state.safetensors", out / "train_state.json"
    if opt_state is not None:
        meta, tensors, weights = opt_state
        model.load_state_dict(weights)
        try:
            _load_optimizer(opt, tensors, meta["param_groups"])
            generator.set_state(tensors["generator"])
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"--resume: {state_file} does not fit this model ({err}); start over with --overwrite") from err
        start_step, wall_before = int(meta["step"]), float(meta["wall_s"])
        _truncate_csv(out / "loss.csv", start_step)
    last_saved = start_step if resume else None

    def refuse_diverged(what: str) -> None:
        kept = f"the checkpoint of step {last_saved} in {out} is kept" if last_saved is not None else "nothing was saved"
        raise RuntimeError(f"training diverged: {what}; {kept}. Lower --lr and start over with --overwrite")

    def check_weights(done: int) -> None:
        """Before any save: a step with a finite loss can still have made the weights NaN (an inf gradient)."""
        bad = nonfinite_keys(model.state_dict())
        if bad:
            refuse_diverged(f"after {done} steps the weights hold NaN or inf ({len(bad)} tensors, e.g. {bad[0]})")

    def checkpoint(step: int, wall: float) -> None:
        nonlocal last_saved
        check_weights(step)
        opt_tensors, opt_meta = _optimizer_tensors(opt)
        opt_tensors["generator"] = generator.get_state()
        save_checkpoint(model, _final_config(run_cfg, step, steps_per_epoch, wall, command), out,
                        metadata={"step": str(step)})
        _atomic(state_file, lambda p: save_file(opt_tensors, p))
        _write_json(state_json, {"step": step, "wall_s": wall, "config": run_cfg, **opt_meta})
        last_saved = step

    log_path = out / "loss.csv"
    new_log = not log_path.exists() or start_step == 0
    log = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "epoch", "lr", "loss"])

    stop = total_steps if max_steps is None else min(total_steps, max_steps)
    model.train()
    t0 = time.perf_counter()
    order, order_epoch = None, -1
    bar = tqdm(range(start_step, stop), total=total_steps, initial=start_step, disable=not progress,
               desc=cfg["recipe"], unit="step", dynamic_ncols=True)
    step = start_step
    try:
        for step in bar:
            epoch, i = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = _epoch_order(cfg["seed"], epoch, n), epoch
            idx = order[i * batch : (i + 1) * batch].to(device)
            lr = _lr_at(cfg, step, steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = _batch_loss(cfg, model, schedule, x_all[idx], y_all[idx], generator)
            value = float(loss.detach())
            if not math.isfinite(value):  # before the update: a NaN loss would make every weight NaN
                refuse_diverged(f"the loss at step {step} is {value}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            writer.writerow([step, epoch, f"{lr:.6g}", f"{value:.8g}"])
            bar.set_postfix(loss=f"{value:.4f}", epoch=epoch + 1)
            done = step + 1
            if done % steps_per_epoch == 0 and (done // steps_per_epoch) in cfg["snapshot_epochs"]:
                e = done // steps_per_epoch
                check_weights(done)
                model.eval()
                save_checkpoint(model, _final_config(run_cfg, done, steps_per_epoch,
                                                     wall_before + time.perf_counter() - t0, command),
                                out / "snapshots" / f"epoch_{e:03d}")
                model.train()
            if done % cfg["save_every"] == 0 and done < stop:
                log.flush()
                checkpoint(done, wall_before + time.perf_counter() - t0)
        step = stop
    finally:
        log.close()
        bar.close()
    checkpoint(step, wall_before + time.perf_counter() - t0)
    plot_loss(out)
    return model.eval()


def _final_config(cfg: dict[str, Any], step: int, steps_per_epoch: int, wall: float,
                  command: str | None) -> dict[str, Any]:
    return {
        **cfg,
        "steps": step,
        "steps_per_epoch": steps_per_epoch,
        "epochs_done": round(step / steps_per_epoch, 4),
        "wall_s": round(wall, 1),
        "torch_threads": torch.get_num_threads(),
        "command": command,
    }


def _parse_epochs(text: str | None) -> list[int] | None:
    """--snapshot-epochs "1,5" -> [1, 5] ("" -> [], no snapshots); ValueError naming the flag for anything else."""
    if text is None:
        return None
    try:
        return [int(e) for e in text.split(",") if e.strip()]
    except ValueError:
        raise ValueError(f"--snapshot-epochs takes whole epochs separated by commas, such as 1,5 "
                         f"(or '' for none), got {text!r}") from None


def cli_train(args) -> int:
    """`minidiff train <recipe> --out DIR [...]`: every setting is checked before the data is read."""
    cfg = recipe_config(
        args.recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        save_every=args.save_every,
        snapshot_epochs=_parse_epochs(args.snapshot_epochs),
        data=args.data,
        train_data="train split (train-* or train5k-*) + t10k[:8000]; held out: t10k[8000:]",
        **({"num_hiddens": args.hidden} if args.recipe != "judge" else {"width": args.hidden}),
    )
    command = "minidiff train " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["train"] else None
    train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, device=args.device, command=command)
    print(f"saved {cfg['recipe']} model to {args.out}")
    return 0


def export_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, dtype: torch.dtype | None = None, **extra: Any
) -> Path:
    """Copy a trained model (model.safetensors + config.json) to dst for shipping.

    dtype casts the stored floats (fp16 halves the size; loading casts back to fp32);
    extra keys are merged into the config (e.g. sampler defaults, measured quality).
    The training state (optimizer moments) is not copied.
    """
    model, cfg = load_checkpoint(src)
    cfg.update(extra)
    cfg.pop("dtype", None)
    return save_checkpoint(model, cfg, dst, dtype=dtype)
