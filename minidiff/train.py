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
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

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


def recipe_config(recipe: str, **overrides: Any) -> dict[str, Any]:
    """The full config of a recipe, with overrides (None values are ignored)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of: {' | '.join(RECIPES)}")
    cfg = {"recipe": recipe, **_COMMON, **copy.deepcopy(RECIPES[recipe])}
    for key, value in overrides.items():
        if value is not None:
            cfg[key] = value
    for key in ("epochs", "batch_size", "lr"):
        if not (isinstance(cfg[key], (int, float)) and cfg[key] > 0):
            raise ValueError(f"{key} must be a positive number, got {cfg[key]!r}")
    if cfg["kind"] != "judge" and not (isinstance(cfg["num_hiddens"], int) and cfg["num_hiddens"] > 0):
        raise ValueError(f"--hidden (D) must be a positive int, got {cfg['num_hiddens']!r}")
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
    """Write folder/model.safetensors (state dict, floats cast to dtype if given) and folder/config.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v
    cfg = dict(cfg)
    cfg["dtype"] = str(dtype or torch.float32).replace("torch.", "")
    _atomic(folder / "model.safetensors", lambda p: save_file(state, p, metadata=metadata or {}))
    _write_json(folder / "config.json", cfg)
    return folder


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, float32, config) from a folder written by ``save_checkpoint``."""
    folder = Path(folder)
    weights, config = folder / "model.safetensors", folder / "config.json"
    for f in (weights, config):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: a checkpoint folder holds model.safetensors and config.json")
    with open(config) as fh:
        cfg = json.load(fh)
    model = build_from_config(cfg)
    state = load_file(str(weights))
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
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
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < start_step] if rows else []
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


def train(
    cfg: dict[str, Any],
    out: str | os.PathLike,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    max_steps: int | None = None,
    command: str | None = None,
) -> nn.Module:
    """Train the model `cfg` describes on data (images (N, 1, 28, 28) in [0, 1], labels (N,)).

    data None: ``minidiff.data.training_set(cfg.get("data"))``. Checkpoints every
    cfg["save_every"] steps and at the end; ``max_steps`` stops early (after a checkpoint),
    which is how the resume test interrupts a run. Returns the model (eval mode).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        from minidiff.data import training_set

        data = training_set(cfg.get("data"))
    x_all, y_all = data
    if x_all.ndim != 4 or x_all.shape[1:] != (1, 28, 28):
        raise ValueError(f"training images must be (N, 1, 28, 28), got {tuple(x_all.shape)}")
    if y_all.shape != (x_all.shape[0],):
        raise ValueError(f"need one label per image, got labels of shape {tuple(y_all.shape)}")
    if y_all.numel() and (int(y_all.min()) < 0 or int(y_all.max()) > 9):
        raise ValueError(f"labels must lie in 0..9, got min {int(y_all.min())}, max {int(y_all.max())}")
    n, batch = x_all.shape[0], int(cfg["batch_size"])
    steps_per_epoch = n // batch  # full batches only: BatchNorm dislikes a tiny last batch
    if steps_per_epoch < 1:
        raise ValueError(f"need at least one full batch: {n} images, batch size {batch}")
    total_steps = max(1, round(cfg["epochs"] * steps_per_epoch))
    x_all, y_all = x_all.to(device), y_all.to(device)

    # Model and optimizer; weights drawn from a seeded RNG without disturbing the global one.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        model = build_from_config(cfg)
    model = model.to(device)
    if cfg.get("channels_last") and cfg["kind"] != "judge":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]))
    schedule = DDPMSchedule.linear(cfg["T"], cfg["beta_start"], cfg["beta_end"]) if cfg["kind"] == "ddpm" else None
    generator = torch.Generator().manual_seed(cfg["seed"])

    start_step, wall_before = 0, 0.0
    state_file, state_json = out / "train_state.safetensors", out / "train_state.json"
    if resume:
        if not (state_file.is_file() and state_json.is_file() and (out / "model.safetensors").is_file()):
            raise FileNotFoundError(f"--resume: no training checkpoint in {out} (train_state.* and model.safetensors)")
        with open(state_json) as f:
            meta = json.load(f)
        saved_cfg = meta["config"]
        for key in ("recipe", "arch", "num_hiddens", "batch_size", "seed", "epochs", "lr"):
            if saved_cfg.get(key) != cfg.get(key):
                raise ValueError(
                    f"--resume: the checkpoint was trained with {key}={saved_cfg.get(key)!r}, now {cfg.get(key)!r}; "
                    "resume with the same settings or use a fresh --out"
                )
        tensors = load_file(str(state_file))
        weights = load_file(str(out / "model.safetensors"))
        from safetensors import safe_open

        with safe_open(str(out / "model.safetensors"), "pt") as f:
            model_step = int((f.metadata() or {}).get("step", -1))
        if model_step != meta["step"]:
            raise ValueError(f"--resume: model.safetensors is from step {model_step} but train_state from {meta['step']}")
        model.load_state_dict(weights)
        _load_optimizer(opt, tensors, meta["param_groups"])
        generator.set_state(tensors["generator"])
        start_step, wall_before = int(meta["step"]), float(meta["wall_s"])
        _truncate_csv(out / "loss.csv", start_step)

    def checkpoint(step: int, wall: float) -> None:
        opt_tensors, opt_meta = _optimizer_tensors(opt)
        opt_tensors["generator"] = generator.get_state()
        save_checkpoint(model, _final_config(cfg, step, steps_per_epoch, wall, n, command), out,
                        metadata={"step": str(step)})
        _atomic(state_file, lambda p: save_file(opt_tensors, p))
        _write_json(state_json, {"step": step, "wall_s": wall, "config": cfg, **opt_meta})

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
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise RuntimeError(f"training diverged at step {step} (loss {value}); lower --lr")
            writer.writerow([step, epoch, f"{lr:.6g}", f"{value:.8g}"])
            bar.set_postfix(loss=f"{value:.4f}", epoch=epoch + 1)
            done = step + 1
            if done % steps_per_epoch == 0 and (done // steps_per_epoch) in cfg.get("snapshot_epochs", []):
                e = done // steps_per_epoch
                model.eval()
                save_checkpoint(model, _final_config(cfg, done, steps_per_epoch, wall_before + time.perf_counter() - t0,
                                                     n, command), out / "snapshots" / f"epoch_{e:03d}")
                model.train()
            if done % int(cfg["save_every"]) == 0 and done < stop:
                log.flush()
                checkpoint(done, wall_before + time.perf_counter() - t0)
        step = stop
    finally:
        log.close()
        bar.close()
    checkpoint(step, wall_before + time.perf_counter() - t0)
    plot_loss(out)
    return model.eval()


def _final_config(cfg: dict[str, Any], step: int, steps_per_epoch: int, wall: float, n: int,
                  command: str | None) -> dict[str, Any]:
    return {
        **cfg,
        "steps": step,
        "steps_per_epoch": steps_per_epoch,
        "epochs_done": round(step / steps_per_epoch, 4),
        "train_images": n,
        "wall_s": round(wall, 1),
        "torch_threads": torch.get_num_threads(),
        "command": command,
    }


def cli_train(args) -> int:
    """`minidiff train <recipe> --out DIR [...]`."""
    cfg = recipe_config(
        args.recipe,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        **({"num_hiddens": args.hidden} if args.recipe != "judge" else {"width": args.hidden}),
    )
    if getattr(args, "save_every", None):
        cfg["save_every"] = args.save_every
    if getattr(args, "snapshot_epochs", None) is not None:
        cfg["snapshot_epochs"] = [int(e) for e in args.snapshot_epochs.split(",") if e.strip()]
    from minidiff.data import training_set

    data = training_set(args.data)
    command = "minidiff train " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["train"] else None
    cfg["train_data"] = "train split (train-* or train5k-*) + t10k[:8000]; held out: t10k[8000:]"
    train(cfg, args.out, data=data, resume=args.resume, device=args.device, command=command)
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
