"""Part B training and checkpoint loading refuse every bad input early, with the culprit named,
and never lose a run that is already saved.

One table holds the bad inputs (the command line, ``recipe_config``, ``train``,
``save_checkpoint``, ``load_checkpoint`` / ``load_mnist_model``); the tests after it check
what must survive a refusal: an earlier run's bytes, and the last good checkpoint of a run
that diverges.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from minidiff import mnist_pipeline as P
from minidiff import recipes as R
from minidiff import run_folder as RF
from minidiff import run_lock as RL
from minidiff import train as T
from minidiff.cli import build_parser, main

from idx_files import write_idx

N, BATCH = 64, 32  # 64 random digits, 2 steps per epoch


def random_digits(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10


def tiny_cfg(recipe: str = "flow-time", **kw) -> dict:
    """What `minidiff train <recipe> --epochs 1 --batch-size 32 --hidden 4` builds."""
    return R.recipe_config(recipe, **{"epochs": 1.0, "batch_size": BATCH, "num_hiddens": 4, **kw})


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    """An MNIST folder of IDX files: 32 train5k + 32 t10k digits (the training set is both)."""
    folder = tmp_path_factory.mktemp("mnist")
    x, y = random_digits()
    images, labels = (x[:, 0] * 255).round().to(torch.uint8).numpy(), y.numpy().astype(np.uint8)
    for prefix, part in (("train5k", slice(0, 32)), ("t10k", slice(32, 64))):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images[part])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels[part])
    return folder


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, mnist_dir) -> Path:
    """A flow-time run stopped after 1 of 2 steps (a checkpoint at step 1), as the command line makes it."""
    out = tmp_path_factory.mktemp("saved") / "run"
    T.train(tiny_cfg(data=str(mnist_dir)), out, progress=False, max_steps=1)
    return out


class Ctx:
    """What a table case works in: a fresh folder, the IDX folder, and a copy of the saved run."""

    def __init__(self, tmp: Path, mnist_dir: Path, saved_run: Path) -> None:
        self.tmp, self.mnist_dir, self._saved = tmp, mnist_dir, saved_run

    def run(self) -> Path:
        """A private copy of the saved run, to damage or to resume."""
        copy = self.tmp / "run"
        if not copy.exists():
            shutil.copytree(self._saved, copy)
        return copy

    def cli(self, *argv: str, out: Path | None = None, recipe: str = "flow-time") -> None:
        """`minidiff train flow-time --out ... --epochs 1 --batch-size 32 --hidden 4 --data ... ARGV` (later flags win).

        Called below the command line's error printing, so that the test sees the exception itself.
        """
        args = ["train", recipe, "--out", str(out or self.tmp / "new"), "--epochs", "1",
                "--batch-size", str(BATCH), "--hidden", "4", "--data", str(self.mnist_dir)]
        parsed = build_parser().parse_args(args + list(argv))
        parsed.func(parsed)

    def train(self, cfg: dict | None = None, data=None, out: Path | None = None, **kw) -> None:
        T.train(tiny_cfg() if cfg is None else cfg, out or self.tmp / "new",
                data=random_digits() if data is None else data, progress=False, **kw)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _edit_config(run: Path, **changes) -> Path:
    cfg = json.loads((run / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            del cfg[key]
        else:
            cfg[key] = value
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path.parent


def _edit_weights(run: Path, change: Callable[[dict], None]) -> Path:
    state = load_file(str(run / "model.safetensors"))
    change(state)
    save_file(state, str(run / "model.safetensors"))
    return run


def _poison(state: dict) -> None:
    state["conv_out.weight"][0] = float("nan")


def _nan_model():
    model = R.build_from_config(tiny_cfg())
    with torch.no_grad():
        next(model.parameters())[0] = float("inf")
    return model


def _while_owned(folder: Path, call: Callable[[], object]) -> None:
    """call() while the test holds folder's run lock, as a run training into it would."""
    with RL.owned_run_folder(folder, "minidiff train held-by-the-test"):
        call()


def _no_labels_over_9(c: Ctx):
    x, y = random_digits()
    c.train(data=(x, y + 5))


def _other_data(c: Ctx):
    x, y = random_digits(seed=1)  # as many digits, other pixels
    c.train(tiny_cfg(data=str(c.mnist_dir)), data=(x, y), out=c.run(), resume=True)


# (id, what to call, exception, regex the message must match: it names the culprit)
CASES: list[tuple[str, Callable[[Ctx], object], type, str]] = [
    # -- the command line: settings ------------------------------------------------------
    ("epochs-inf", lambda c: c.cli("--epochs", "inf"), ValueError, r"epochs \(--epochs\) must be a finite number, got inf"),
    ("epochs-nan", lambda c: c.cli("--epochs", "nan"), ValueError, r"epochs \(--epochs\) must be a finite number"),
    ("epochs-0", lambda c: c.cli("--epochs", "0"), ValueError, r"epochs \(--epochs\) must lie in \(0, 10000\].*got 0$"),
    ("epochs-negative", lambda c: c.cli("--epochs", "-2"), ValueError, r"epochs \(--epochs\) must lie in \(0, 10000\]"),
    ("epochs-huge", lambda c: c.cli("--epochs", "1e300"), ValueError,
     r"epochs \(--epochs\) must lie in \(0, 10000\] \(the recipes train 4 to 24\), got 1e\+300"),
    ("epochs-10-to-the-12", lambda c: c.cli("--epochs", str(10**12)), ValueError,
     r"epochs \(--epochs\) must lie in \(0, 10000\] \(the recipes train 4 to 24\), got 1e\+12"),
    ("epochs-just-over", lambda c: c.cli("--epochs", "10000.5"), ValueError, r"must lie in \(0, 10000\].*got 10000\.5"),
    ("epochs-not-a-number", lambda c: c.cli("--epochs", "five"), SystemExit, r"2"),
    ("lr-nan", lambda c: c.cli("--lr", "nan"), ValueError, r"lr \(--lr\) must be a finite number"),
    ("lr-inf", lambda c: c.cli("--lr", "inf"), ValueError, r"lr \(--lr\) must be a finite number"),
    ("lr-0", lambda c: c.cli("--lr", "0"), ValueError, r"lr \(--lr\) must be > 0"),
    ("lr-negative", lambda c: c.cli("--lr", "-0.1"), ValueError, r"lr \(--lr\) must be > 0"),
    ("batch-0", lambda c: c.cli("--batch-size", "0"), ValueError,
     r"batch_size \(--batch-size\) must be an int from 1 to 70000 \(70,000 is all of MNIST in one step\), got 0"),
    ("batch-10-to-the-12", lambda c: c.cli("--batch-size", str(10**12)), ValueError,
     r"batch_size \(--batch-size\) must be an int from 1 to 70000 .*got 1000000000000"),
    ("batch-over-data", lambda c: c.cli("--batch-size", "65"), ValueError,
     r"64 images, batch size 65; lower --batch-size to at most 64"),
    ("hidden-0", lambda c: c.cli("--hidden", "0"), ValueError, r"num_hiddens \(--hidden\) must be an int from 1 to 512"),
    ("hidden-negative", lambda c: c.cli("--hidden", "-4"), ValueError, r"num_hiddens \(--hidden\) must be an int from 1"),
    ("hidden-10-to-the-9", lambda c: c.cli("--hidden", str(10**9)), ValueError,
     r"num_hiddens \(--hidden\) must be an int from 1 to 512 \(D = 512 is 129M parameters, 2 GB with Adam's "
     r"moments; the course's widest is 128\), got 1000000000$"),
    ("hidden-just-over", lambda c: c.cli("--hidden", "513"), ValueError, r"from 1 to 512 .*got 513$"),
    ("judge-width-0", lambda c: R.recipe_config("judge", width=0), ValueError,
     r"width \(--hidden\) must be an int from 1 to 512"),
    ("judge-width-10-to-the-9", lambda c: c.cli("--hidden", str(10**9), recipe="judge"), ValueError,
     r"width \(--hidden\) must be an int from 1 to 512 \(the judge's first convolution; it ships at 32\), "
     r"got 1000000000"),
    ("load-width-10-to-the-9", lambda c: RF.load_checkpoint(_edit_config(c.run(), num_hiddens=10**9)), ValueError,
     r"num_hiddens in .*run/config\.json must be an int from 1 to 512"),
    ("seed-negative", lambda c: c.cli("--seed", "-1"), ValueError,
     r"seed \(--seed\) must be an int from 0 to 9223372036854775807 \(2\*\*63 - 1, as torch.Generator.manual_seed "
     r"takes\), got -1"),
    ("seed-huge", lambda c: c.cli("--seed", "99999999999999999999999"), ValueError,
     r"seed \(--seed\) must be an int from 0 to 9223372036854775807 .*got 99999999999999999999999$"),
    ("seed-just-over", lambda c: c.cli("--seed", str(2**63)), ValueError,
     r"from 0 to 9223372036854775807 .*got 9223372036854775808$"),
    ("save-every-0", lambda c: c.cli("--save-every", "0"), ValueError, r"save_every \(--save-every\) must be an int >= 1"),
    ("save-every-negative", lambda c: c.cli("--save-every", "-3"), ValueError, r"save_every \(--save-every\) must be"),
    ("snapshot-0", lambda c: c.cli("--snapshot-epochs", "0"), ValueError,
     r"snapshot_epochs \(--snapshot-epochs\) must be whole epochs from 1 to epochs = 1, got 0"),
    ("snapshot-over-epochs", lambda c: c.cli("--snapshot-epochs", "1,3"), ValueError,
     r"snapshot-epochs.* from 1 to epochs = 1, got 3"),
    ("snapshot-negative", lambda c: c.cli("--snapshot-epochs", "-1"), ValueError, r"snapshot-epochs.*got -1"),
    ("snapshot-letters", lambda c: c.cli("--snapshot-epochs", "a,b"), ValueError,
     r"--snapshot-epochs takes whole epochs separated by commas.*got 'a,b'"),
    ("snapshot-fraction", lambda c: c.cli("--snapshot-epochs", "1.5"), ValueError, r"--snapshot-epochs takes whole"),
    ("time-power-0", lambda c: c.cli("--time-power", "0"), ValueError, r"time_power \(--time-power\) must be > 0"),
    ("time-power-nan", lambda c: c.cli("--time-power", "nan"), ValueError, r"time_power \(--time-power\) must be a finite"),
    ("time-power-ddpm", lambda c: R.recipe_config("ddpm-class", time_power=2), ValueError,
     r"time_power \(--time-power\) sets how a flow recipe draws its times; ddpm-class is a ddpm recipe"),
    # -- the command line: folders -------------------------------------------------------
    ("out-is-a-file", lambda c: c.cli(out=_write(c.tmp / "f.txt", "x")), ValueError, r"f\.txt is a file; give a folder"),
    ("out-under-a-file", lambda c: c.cli(out=_write(c.tmp / "f.txt", "x") / "run"), ValueError,
     r"run cannot be made: .*f\.txt is a file"),
    ("out-holds-a-run", lambda c: c.cli(out=c.run()), ValueError,
     r"already holds a training run \(model\.safetensors, .*\); pass --resume to continue it, --overwrite"),
    ("out-holds-a-partial-run", lambda c: c.cli(out=_write(c.tmp / "loss.csv", "step\n").parent), ValueError,
     r"already holds a training run \(loss\.csv\)"),
    ("resume-and-overwrite", lambda c: c.train(out=c.run(), resume=True, overwrite=True), ValueError,
     r"--resume .* --overwrite .*choose one"),
    ("resume-without-run", lambda c: c.cli("--resume"), FileNotFoundError, r"--resume: no training checkpoint in .*new"),
    ("out-in-use", lambda c: _while_owned(c.tmp / "new", lambda: c.cli()), RL.RunFolderInUse,
     rf"new is in use by another training run \(pid {os.getpid()} on host {re.escape(socket.gethostname())}, "
     r"started [-0-9]+ [:0-9]+: minidiff train held-by-the-test\); wait until it ends, or choose another --out$"),
    ("resume-in-use", lambda c: _while_owned(c.run(), lambda: c.cli("--resume", out=c.run())), RL.RunFolderInUse,
     r"run is in use by another training run \(pid \d+ on host"),
    ("data-folder-missing", lambda c: c.cli("--data", str(c.tmp / "nowhere")), FileNotFoundError,
     r"nowhere does not exist; point it to a folder holding t10k-images-idx3-ubyte\.gz"),
    ("data-folder-empty", lambda c: c.cli("--data", str(c.tmp)), FileNotFoundError,
     r"MNIST folder .* has no 'train' split: expected train-images-idx3-ubyte\[\.gz\] or train5k"),
    # -- train(): device, data, config ---------------------------------------------------
    ("device-unknown", lambda c: c.train(device="foo"), ValueError, r"unknown device 'foo'; use cpu, cuda"),
    ("device-absent-gpu", lambda c: c.train(device="cuda:99"), ValueError, r"device 'cuda:99': this machine .*CUDA GPU"),
    ("device-meta", lambda c: c.train(device="meta"), ValueError, r"device 'meta': minidiff runs on cpu, cuda or mps"),
    ("data-not-a-pair", lambda c: c.train(data=[torch.rand(64, 1, 28, 28)]), ValueError, r"data must be a pair \(images, labels\)"),
    ("data-uint8", lambda c: c.train(data=(torch.zeros(64, 1, 28, 28, dtype=torch.uint8), torch.zeros(64).long())),
     ValueError, r"training images must be floats in \[0, 1\], got torch\.uint8"),
    ("data-0-255", lambda c: c.train(data=(random_digits()[0] * 255, random_digits()[1])), ValueError,
     r"training images must lie in \[0, 1\].*divide uint8 pixels by 255"),
    ("data-nan", lambda c: c.train(data=(random_digits()[0].index_fill(0, torch.tensor([3]), float("nan")),
                                         random_digits()[1])), ValueError, r"training images hold NaN"),
    ("data-float-labels", lambda c: c.train(data=(random_digits()[0], random_digits()[1].float())), ValueError,
     r"labels must be integers 0\.\.9, got torch\.float32"),
    ("data-labels-over-9", _no_labels_over_9, ValueError, r"labels must lie in 0\.\.9, got min 5, max 14"),
    ("data-empty", lambda c: c.train(data=(torch.zeros(0, 1, 28, 28), torch.zeros(0).long())), ValueError,
     r"the training set is empty"),
    ("max-steps-0", lambda c: c.train(max_steps=0), ValueError, r"max_steps must be an int >= 1, got 0"),
    ("cfg-not-a-dict", lambda c: c.train(cfg="flow-time"), ValueError, r"cfg must be a dict such as recipe_config"),
    ("cfg-lacks-a-key", lambda c: c.train(cfg={k: v for k, v in tiny_cfg().items() if k != "lr"}), ValueError,
     r"cfg lacks lr; build it with recipe_config\('flow-time'"),
    ("cfg-arch-of-other-kind", lambda c: c.train(cfg={**tiny_cfg(), "arch": "unconditional"}), ValueError,
     r"arch must be time or class for kind 'flow', got 'unconditional'"),
    ("recipe-unknown", lambda c: R.recipe_config("gan"), ValueError, r"unknown recipe 'gan'; choose one of: denoiser"),
    ("recipe-typo-setting", lambda c: R.recipe_config("denoiser", epoch=3), ValueError,
     r"recipe 'denoiser' has no setting epoch; its settings are .*epochs"),
    ("recipe-override-kind", lambda c: R.recipe_config("flow-time", kind="ddpm"), ValueError, r"kind is set by the recipe"),
    ("recipe-p-uncond", lambda c: R.recipe_config("flow-class", p_uncond=1.5), ValueError, r"p_uncond is a probability"),
    ("recipe-beta-end", lambda c: R.recipe_config("ddpm-time", beta_end=1.0), ValueError,
     r"need 0 < beta_start <= beta_end < 1, got 0\.0001 and 1\.0"),
    ("recipe-batch-float", lambda c: R.recipe_config("denoiser", batch_size=2.5), ValueError,
     r"batch_size \(--batch-size\) must be an int, got 2\.5"),
    ("recipe-bool-flag", lambda c: R.recipe_config("denoiser", lr_decay="yes"), ValueError, r"lr_decay must be True or False"),
    ("recipe-sigma", lambda c: R.recipe_config("denoiser", sigma=float("nan")), ValueError, r"sigma must be a finite"),
    # -- --resume ------------------------------------------------------------------------
    ("resume-other-data", _other_data, ValueError, r"--resume: the run in .* was trained on other data \(64 images"),
    ("resume-other-width", lambda c: c.cli("--resume", "--hidden", "8", out=c.run()), ValueError,
     r"trained with num_hiddens=4, now 8"),
    ("resume-damaged-state", lambda c: c.cli("--resume", out=_write(c.run() / "train_state.json", "{").parent),
     ValueError, r"train_state\.json is not valid JSON"),
    ("resume-truncated-weights", lambda c: c.cli("--resume", out=_truncate(c.run() / "model.safetensors")),
     ValueError, r"run/model\.safetensors is truncated"),
    # -- save_checkpoint -----------------------------------------------------------------
    ("save-nan-model", lambda c: RF.save_checkpoint(_nan_model(), tiny_cfg(), c.tmp / "ck"), ValueError,
     r"the model holds NaN or inf weights in 1 tensor\(s\): conv_in"),
    ("save-cfg-not-json", lambda c: RF.save_checkpoint(R.build_from_config(tiny_cfg()), {"x": torch.ones(1)}, c.tmp / "ck"),
     ValueError, r"cfg must hold only JSON values"),
    ("save-int-dtype", lambda c: RF.save_checkpoint(R.build_from_config(tiny_cfg()), tiny_cfg(), c.tmp, dtype=torch.int8),
     ValueError, r"dtype must be None or a float dtype"),
    ("save-into-a-file", lambda c: RF.save_checkpoint(R.build_from_config(tiny_cfg()), tiny_cfg(), _write(c.tmp / "f", "")),
     ValueError, r"checkpoint folder .*f is a file"),
    # -- load_checkpoint / load_mnist_model ----------------------------------------------
    ("load-no-config", lambda c: P.load_mnist_model((c.run() / "config.json").unlink() or c.run()), FileNotFoundError,
     r"run holds no config\.json: give a folder holding model\.safetensors and config\.json"),
    ("load-no-weights", lambda c: RF.load_checkpoint((c.run() / "model.safetensors").unlink() or c.run()),
     FileNotFoundError, r"run/model\.safetensors not found"),
    ("load-config-not-json", lambda c: P.load_mnist_model(_write(c.run() / "config.json", "{'kind': ").parent),
     ValueError, r"run/config\.json is not valid JSON .*the checkpoint is damaged"),
    ("load-config-a-list", lambda c: P.load_mnist_model(_write(c.run() / "config.json", "[1, 2]").parent),
     ValueError, r"run/config\.json must hold a JSON object"),
    ("load-config-lacks-arch", lambda c: P.load_mnist_model(_edit_config(c.run(), arch=None)), ValueError,
     r"run/config\.json lacks the key\(s\) arch"),
    ("load-config-lacks-width", lambda c: P.load_mnist_model(_edit_config(c.run(), num_hiddens=None)), ValueError,
     r"run/config\.json lacks num_hiddens, which a flow model needs"),
    ("load-config-bad-width", lambda c: P.load_mnist_model(_edit_config(c.run(), num_hiddens="4")), ValueError,
     r"num_hiddens in .*run/config\.json must be an int"),
    ("load-weights-truncated", lambda c: P.load_mnist_model(_truncate(c.run() / "model.safetensors")), ValueError,
     r"run/model\.safetensors is truncated.*use another snapshot"),
    ("load-weights-not-safetensors", lambda c: P.load_mnist_model(_write(c.run() / "model.safetensors", "x" * 64).parent),
     ValueError, r"run/model\.safetensors is not a safetensors file"),
    ("load-other-width", lambda c: P.load_mnist_model(_edit_config(c.run(), num_hiddens=8)), ValueError,
     r"run/model\.safetensors does not match the time network its config\.json describes \(num_hiddens=8\): "
     r"\d+ mis-shaped key\(s\)"),
    ("load-other-arch", lambda c: P.load_mnist_model(_edit_config(c.run(), arch="class")), ValueError,
     r"model\.safetensors does not match the class network .*missing key\(s\)"),
    ("load-extra-key", lambda c: P.load_mnist_model(_edit_weights(c.run(), lambda s: s.update(extra=torch.ones(1)))),
     ValueError, r"1 unexpected key\(s\): extra"),
    ("load-nan-weights", lambda c: P.load_mnist_model(_edit_weights(c.run(), _poison)), ValueError,
     r"run/model\.safetensors holds NaN or inf weights in 1 tensor\(s\): conv_out\.weight"),
    ("load-a-file", lambda c: P.load_mnist_model(c.run() / "config.json"), ValueError, r"config\.json is a file; give the folder"),
    ("load-not-a-path", lambda c: P.load_mnist_model(None), ValueError, r"give a shipped model name .* got None"),
    ("load-device-unknown", lambda c: RF.load_checkpoint(c.run(), device="gpu"), ValueError, r"unknown device 'gpu'"),
]


@pytest.mark.parametrize("case, call, error, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_its_name(case, call, error, message, tmp_path, mnist_dir, saved_run):
    with pytest.raises(error, match=message):
        call(Ctx(tmp_path, mnist_dir, saved_run))
    assert not (tmp_path / "new").exists(), "a refused run must not leave a folder behind"


def _bytes(run: Path) -> dict[str, bytes]:
    return {f: (run / f).read_bytes() for f in ("model.safetensors", "config.json", "train_state.safetensors")}


def test_an_earlier_run_is_kept_without_overwrite_and_replaced_with_it(tmp_path, mnist_dir, saved_run, capsys):
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    (run / "snapshots" / "epoch_009").mkdir(parents=True)  # as if from a longer earlier run
    before = _bytes(run)
    argv = ["train", "flow-time", "--out", str(run), "--epochs", "1", "--batch-size", "32", "--hidden", "8",
            "--data", str(mnist_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "--overwrite" in err
    assert _bytes(run) == before
    assert main(argv + ["--overwrite"]) == 0
    assert json.loads((run / "config.json").read_text())["num_hiddens"] == 8
    assert not (run / "snapshots" / "epoch_009").exists()  # nothing of the old run is left to mix in


_batch_loss = T.batch_loss  # the real one, for the diverging losses below


def _nan_loss(cfg, model, *args):
    return _batch_loss(cfg, model, *args) * float("nan")


def _nan_gradient(cfg, model, *args):
    """A finite loss whose gradient is NaN (d sqrt(u) / du at u = 0): a loss check alone lets it through."""
    p = next(model.parameters())
    return _batch_loss(cfg, model, *args) + torch.sqrt((p * 0).abs().sum())


@pytest.mark.parametrize("loss", [_nan_loss, _nan_gradient], ids=["nan-loss", "nan-weights-finite-loss"])
def test_a_diverging_run_exits_non_zero_and_keeps_the_last_checkpoint(loss, tmp_path, mnist_dir, saved_run,
                                                                      monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    before = _bytes(run)
    monkeypatch.setattr(T, "batch_loss", loss)  # the name the loop calls
    rc = main(["train", "flow-time", "--out", str(run), "--epochs", "1", "--batch-size", "32", "--hidden", "4",
               "--data", str(mnist_dir), "--resume", "--save-every", "1"])
    assert rc == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress bar: the error, on one line
    assert last.startswith("minidiff train: error: training diverged") and "the checkpoint of step 1" in last
    assert _bytes(run) == before
    model, cfg = RF.load_checkpoint(run)
    assert cfg["steps"] == 1 and all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_a_mismatched_checkpoint_is_named_in_a_few_lines(tmp_path, saved_run):
    run = _edit_config(shutil.copytree(saved_run, tmp_path / "run"), num_hiddens=16)
    with pytest.raises(ValueError) as info:
        P.load_mnist_model(run)
    text = str(info.value)
    assert len(text.splitlines()) == 1 and len(text) < 1200 and str(run / "model.safetensors") in text
    assert "more)" in text  # the first few offenders, then a count


def test_resume_with_the_same_data_and_settings_still_works(tmp_path, mnist_dir, saved_run):
    """The refusals above leave the ordinary resume alone: it finishes the saved run."""
    run = shutil.copytree(saved_run, tmp_path / "run")
    assert main(["train", "flow-time", "--out", str(run), "--epochs", "1", "--batch-size", "32", "--hidden", "4",
                 "--data", str(mnist_dir), "--resume"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["steps"] == 2 and cfg["train_images"] == N and len(cfg["data_sha256"]) == 64
