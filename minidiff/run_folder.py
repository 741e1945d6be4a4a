"""A training run's folder: what ``minidiff train`` writes, and the one place that reads it back.

    model.safetensors, config.json       the model (what ``load_checkpoint`` and the pipelines read)
    train_state.safetensors, .json       optimizer moments and generator state, for --resume
    loss.csv, loss.png                   step, epoch, lr, loss; the curve (``minidiff.run_log``)
    snapshots/epoch_NNN/                 model + config at the end of chosen epochs
    .run.lock                            while a run trains: which process owns the folder (``minidiff.run_lock``)

Every file is written to a temporary name and renamed (``checkpoint.atomic_write``), so a reader
(or a run killed mid-save) never sees half a file, and a checkpoint is written only after its
weights are checked finite; a Ctrl-C during a checkpoint waits until all of its files are
written. config.json records the training data's sha256 (``data_fingerprint``), so ``--resume``
refuses to continue a run on other data. One run at a time owns a folder
(``run_lock.owned_run_folder``): a second run into it is refused, not interleaved with the first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from minidiff.checkpoint import (
    atomic_write,
    check_device,
    check_finite_state,
    check_state_dict,
    load_safetensors,
    nonfinite_keys,
    read_json_config,
    writable_folder,
)
from minidiff.recipes import build_from_config, check_model_config
from minidiff.run_log import open_loss_log, plot_loss, read_loss_log  # a run's files: here too

__all__ = [
    "save_checkpoint", "load_checkpoint", "saved_step", "check_new_run", "delete_run", "data_fingerprint", "RunFolder",
    "open_loss_log", "read_loss_log", "plot_loss", "read_run_config", "run_epochs", "trained_how",
]

# The files a training run writes into its folder (besides snapshots/epoch_NNN/).
RUN_FILES = ("model.safetensors", "config.json", "train_state.safetensors", "train_state.json", "loss.csv", "loss.png")
# Settings that may change between a run and its --resume: they do not change the trajectory.
RESUMABLE_CHANGES = ("save_every", "snapshot_epochs", "data", "train_data")
# What to do about a damaged checkpoint (the advice in load_checkpoint's errors).
_DAMAGED = "the checkpoint is damaged: use another snapshot of the run, or train it again (minidiff train)"


# ----------------------------------------------------------------------------------------
# Files, written whole or not at all
# ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) back until the block is done, then deliver it.

    A checkpoint is several files (model, config, optimizer state): a run stopped between
    them would leave a model of one step beside a resume state of another, which --resume
    rightly refuses. Only the main thread can set signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught:
        signal.raise_signal(signal.SIGINT)  # to the handler that was there: usually a KeyboardInterrupt now


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(obj, indent=2) + "\n"))


# ----------------------------------------------------------------------------------------
# The model: model.safetensors + config.json
# ----------------------------------------------------------------------------------------


def save_checkpoint(
    model: nn.Module, cfg: dict[str, Any], folder: str | os.PathLike, dtype: torch.dtype | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write folder/model.safetensors (state dict, floats cast to dtype if given) and folder/config.json.

    Everything is checked before the first byte is written (a model with NaN or inf weights is
    not saved), and each file is replaced atomically, so a failed save leaves the old files.
    fp16 halves the size of a shipped snapshot; ``load_checkpoint`` casts back to float32.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch nn.Module, got a {type(model).__name__}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be None or a float dtype such as torch.float16, got {dtype!r}")
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise ValueError(f"metadata must be a dict of str to str, got {metadata!r:.80}")
    folder = writable_folder(folder, "checkpoint folder")
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
    check_finite_state(state, "the model", "a diverged model is not saved; train again with a lower --lr")
    if not isinstance(cfg, dict):
        raise ValueError(f"cfg must be a dict (the model's config), got a {type(cfg).__name__}")
    cfg = {**cfg, "dtype": str(dtype or torch.float32).replace("torch.", "")}
    try:
        config_text = json.dumps(cfg, indent=2) + "\n"
    except (TypeError, ValueError) as err:
        raise ValueError(f"cfg must hold only JSON values (numbers, strings, lists, dicts): {err}") from err
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "model.safetensors", lambda p: save_file(state, p, metadata=metadata or {}))
    atomic_write(folder / "config.json", lambda p: Path(p).write_text(config_text))
    return folder


def _describe(cfg: dict[str, Any]) -> str:
    width = f"width={cfg.get('width', 32)}" if cfg["kind"] == "judge" else f"num_hiddens={cfg['num_hiddens']}"
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
    check_model_config(cfg, str(config))
    model = build_from_config(cfg)
    state = load_safetensors(weights, _DAMAGED)
    check_state_dict(model, state, weights, _describe(cfg))
    check_finite_state(state, weights, "it was saved from a diverged run; use an earlier snapshot or train again")
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return model.to(device).eval(), cfg


# ----------------------------------------------------------------------------------------
# Starting and resuming a run
# ----------------------------------------------------------------------------------------


def check_new_run(out: Path, overwrite: bool) -> list[Path]:
    """The files of an earlier run in out, which only --overwrite may replace (and then they are returned)."""
    found = [out / f for f in RUN_FILES if (out / f).exists()]
    found += sorted((out / "snapshots").glob("epoch_*"))
    if found and not overwrite:
        shown = ", ".join(str(f.relative_to(out)) for f in found[:4]) + (", ..." if len(found) > 4 else "")
        raise ValueError(f"{out} already holds a training run ({shown}); pass --resume to continue it, "
                         "--overwrite to delete it and start over, or choose another --out")
    return found


def delete_run(paths: list[Path]) -> None:
    """Delete an earlier run's files and snapshot folders (``check_new_run``'s list)."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def data_fingerprint(x: torch.Tensor, y: torch.Tensor, *noise: torch.Tensor) -> str:
    """sha256 over the images' float32 bytes, the labels' int64 bytes, a reflow recipe's noise and N: what --resume
    compares."""
    h = hashlib.sha256(f"N={x.shape[0]}".encode())
    for t in (x.float(), y.long(), *(x0.float() for x0 in noise)):
        h.update(t.detach().cpu().contiguous().numpy().reshape(-1).view(np.uint8))
    return h.hexdigest()


def _check_same_run(out: Path, saved: dict[str, Any], run_cfg: dict[str, Any]) -> None:
    """--resume continues only the run that was started: same settings (but RESUMABLE_CHANGES), same data."""
    if "data_sha256" not in saved:
        raise ValueError(f"--resume: {out} was written by an older minidiff that did not record its training data, "
                         "so resuming it cannot be checked; start over with --overwrite")
    for key in sorted((set(saved) | set(run_cfg)) - set(RESUMABLE_CHANGES)):
        if saved.get(key) == run_cfg.get(key):
            continue
        if key == "data_sha256":
            raise ValueError(f"--resume: the run in {out} was trained on other data ({saved.get('train_images')} "
                             f"images, sha256 {saved[key][:12]}...) than given now ({run_cfg['train_images']} "
                             f"images, sha256 {run_cfg[key][:12]}...); resume with the same --data or use a fresh --out")
        raise ValueError(f"--resume: the checkpoint was trained with {key}={saved.get(key)!r}, now "
                         f"{run_cfg.get(key)!r}; resume with the same settings or use a fresh --out")


def _read_resume_state(out: Path, run_cfg: dict[str, Any], model: nn.Module) -> tuple[dict, dict, dict]:
    """(train_state.json, its tensors, the model weights) of the run in out, after checking it is this run."""
    state_file, state_json, weights = out / "train_state.safetensors", out / "train_state.json", out / "model.safetensors"
    if not (state_file.is_file() and state_json.is_file() and weights.is_file()):
        raise FileNotFoundError(f"--resume: no training checkpoint in {out} (train_state.* and model.safetensors); "
                                "start a new run without --resume")
    damaged = "the run's checkpoint is damaged; start over with --overwrite"
    meta = read_json_config(state_json, ("step", "wall_s", "config", "param_groups"), damaged)
    if not isinstance(meta["config"], dict) or not isinstance(meta["step"], int):
        raise ValueError(f"{state_json} holds no valid config and step; {damaged}")
    _check_same_run(out, meta["config"], run_cfg)
    tensors = load_safetensors(state_file, damaged)
    state = load_safetensors(weights, damaged)
    check_state_dict(model, state, weights, _describe(run_cfg))
    check_finite_state(state, weights, damaged)
    with safe_open(str(weights), "pt") as f:
        model_step = (f.metadata() or {}).get("step")
    if model_step != str(meta["step"]) or "generator" not in tensors:
        raise ValueError(f"--resume: {weights} is from step {model_step} but {state_json} from step {meta['step']}; "
                         f"{damaged}")
    return meta, tensors, state


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's state as flat tensors {"opt.<param>.<name>"} and its param_groups (JSON)."""
    sd = opt.state_dict()
    tensors = {f"opt.{idx}.{name}": torch.as_tensor(value).detach().cpu().contiguous()
               for idx, st in sd["state"].items() for name, value in st.items()}
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


_TRAINED = "trained."  # the prefix of the trained weights in the resume state of a run with an average


@dataclass
class RunFolder:
    """A run's folder while it trains: the config each checkpoint records, and the last step saved.

    config: the checked training config plus train_images and data_sha256 (what --resume compares).
    """

    path: Path
    config: dict[str, Any]
    steps_per_epoch: int
    command: str | None = None
    world_size: int = 1  # processes that trained it (torchrun); recorded, not compared on --resume
    amp: str | None = None  # "bf16": trained under bfloat16 autocast
    last_saved: int | None = None

    def resume(self, model: nn.Module, opt: torch.optim.Optimizer, generator: torch.Generator,
               ema: nn.Module | None = None) -> tuple[int, float]:
        """Load the saved weights, optimizer moments and generator state: (step, wall seconds) they were saved at.

        With ema, model.safetensors holds the average (into ema) and the resume state the trained weights.
        """
        meta, tensors, weights = _read_resume_state(self.path, self.config, model)
        (model if ema is None else ema).load_state_dict(weights)
        try:
            if ema is not None:
                model.load_state_dict({k[len(_TRAINED):]: v for k, v in tensors.items() if k.startswith(_TRAINED)})
            _load_optimizer(opt, tensors, meta["param_groups"])
            generator.set_state(tensors["generator"])
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"--resume: {self.path / 'train_state.safetensors'} does not fit this model ({err}); "
                             "start over with --overwrite") from err
        self.last_saved = int(meta["step"])
        return self.last_saved, float(meta["wall_s"])

    def model_config(self, step: int, wall: float) -> dict[str, Any]:
        """The config.json of a checkpoint after `step` steps and `wall` seconds of training."""
        return {**self.config, "steps": step, "steps_per_epoch": self.steps_per_epoch,
                "epochs_done": round(step / self.steps_per_epoch, 4), "wall_s": round(wall, 1),
                "torch_threads": torch.get_num_threads(), "world_size": self.world_size,
                **({"amp": self.amp} if self.amp else {}), "command": self.command}

    def diverged(self, what: str) -> RuntimeError:
        kept = (f"the checkpoint of step {self.last_saved} in {self.path} is kept" if self.last_saved is not None
                else "nothing was saved")
        return RuntimeError(f"training diverged: {what}; {kept}. Lower --lr and start over with --overwrite")

    def check_weights(self, model: nn.Module, step: int) -> None:
        """Before any save: a step with a finite loss can still have made the weights NaN (an inf gradient)."""
        bad = nonfinite_keys(model.state_dict())
        if bad:
            raise self.diverged(f"after {step} steps the weights hold NaN or inf ({len(bad)} tensors, e.g. {bad[0]})")

    def save_snapshot(self, model: nn.Module, step: int, wall: float) -> None:
        """snapshots/epoch_NNN: the model (eval-mode BatchNorm) at the end of an epoch."""
        self.check_weights(model, step)
        was_training = model.training
        model.eval()
        with _ctrl_c_deferred():
            save_checkpoint(model, self.model_config(step, wall),
                            self.path / "snapshots" / f"epoch_{step // self.steps_per_epoch:03d}")
        model.train(was_training)

    def save(self, model: nn.Module, opt: torch.optim.Optimizer, generator: torch.Generator, step: int,
             wall: float, ema: nn.Module | None = None) -> None:
        """The model, then the optimizer and generator state that --resume continues from.

        With ema (an average of the weights), model.safetensors holds the average, which is what
        the pipelines sample with, and the trained weights go into the resume state.
        """
        self.check_weights(model, step)
        opt_tensors, opt_meta = _optimizer_tensors(opt)
        opt_tensors["generator"] = generator.get_state()
        if ema is not None:
            opt_tensors.update({_TRAINED + k: v.contiguous() for k, v in model.state_dict().items()})
        with _ctrl_c_deferred():  # all of the checkpoint's files, or (stopped before it) none
            save_checkpoint(model if ema is None else ema, self.model_config(step, wall), self.path,
                            metadata={"step": str(step)})
            atomic_write(self.path / "train_state.safetensors", lambda p: save_file(opt_tensors, p))
            _write_json(self.path / "train_state.json",
                        {"step": step, "wall_s": wall, "config": self.config, **opt_meta})
        self.last_saved = step


# ----------------------------------------------------------------------------------------
# Reading a finished run
# ----------------------------------------------------------------------------------------


def read_run_config(folder: str | os.PathLike) -> dict:
    """folder/config.json: the run's settings and how far it trained (steps, epochs_done, wall_s)."""
    with open(Path(folder) / "config.json") as f:
        return json.load(f)


def saved_step(folder: str | os.PathLike) -> tuple[int, float] | None:
    """(step, epochs done) of the training checkpoint in folder that --resume would continue, or None.

    What an interrupted run reports as kept: the step must agree between config.json and
    train_state.json (a checkpoint's files are written together, ``RunFolder.save``).
    """
    try:
        cfg = read_run_config(folder)
        state = json.loads((Path(folder) / "train_state.json").read_text())
        step = state["step"]
        return (step, float(cfg["epochs_done"])) if cfg.get("steps") == step else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_epochs(folder: str | os.PathLike) -> dict[int, Path]:
    """{epoch: checkpoint folder} of a run: each snapshots/epoch_NNN, and the final model at its last epoch."""
    found = {}
    for snap in sorted((Path(folder) / "snapshots").glob("epoch_*")):
        if (snap / "config.json").is_file():
            found[int(snap.name.split("_")[1])] = snap
    cfg = read_run_config(folder)
    found[round(cfg.get("epochs_done", cfg["epochs"]))] = Path(folder)
    return dict(sorted(found.items()))


def trained_how(folder: str | os.PathLike) -> str:
    """'D = 32, 10 epochs, 2030 steps of 64, 14.2 min': what a run's config says about its training."""
    cfg = read_run_config(folder)
    text = f"{cfg.get('epochs_done', cfg['epochs']):g} epochs, {cfg.get('steps', 0)} steps of {cfg['batch_size']}"
    if cfg.get("num_hiddens"):
        text = f"D = {cfg['num_hiddens']}, " + text
    if cfg.get("wall_s"):
        wall = float(cfg["wall_s"])
        text += f", {wall / 60:.1f} min" if wall >= 120 else f", {wall:.0f} s"
    return text
