"""A run folder loses nothing: one run owns it at a time, and a stopped run says how to go on.

Measured against the real thing: `python -m minidiff train` processes started side by side
into one folder, stopped with Ctrl-C (SIGINT) and killed (SIGKILL), on tiny data (64 random
digits, D = 4). The children run on one thread (OMP_NUM_THREADS=1): on a busy 2-core machine
two threads per process spin against each other and a step takes seconds instead of
milliseconds. MINIDIFF_RACE_ROUNDS sets how many two-process races the first test runs.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from minidiff import run_folder as RF
from minidiff import run_lock as RL
from minidiff import train as T
from minidiff.cli import build_parser, main
from minidiff.cli import training as CT

from idx_files import write_idx

ROUNDS = int(os.environ.get("MINIDIFF_RACE_ROUNDS", "3"))


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    """An MNIST folder of IDX files: 32 train5k + 32 t10k random digits (2 steps of 32 per epoch)."""
    folder = tmp_path_factory.mktemp("mnist")
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(64, 28, 28, generator=g) * 255).round().to(torch.uint8).numpy()
    labels = (np.arange(64) % 10).astype(np.uint8)
    for prefix, part in (("train5k", slice(0, 32)), ("t10k", slice(32, 64))):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images[part])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels[part])
    return folder


def _args(out: Path, mnist_dir: Path, epochs: int, *more: str) -> list[str]:
    """The words after `minidiff` of a tiny run: flow-time, D = 4, batch 32, 2 steps per epoch, a checkpoint every 2."""
    return ["train", "flow-time", "--out", str(out), "--data", str(mnist_dir), "--epochs", str(epochs),
            "--batch-size", "32", "--hidden", "4", "--save-every", "2", "--snapshot-epochs", "", *more]


def _start(words: list[str]) -> subprocess.Popen:
    """`python -m minidiff WORDS` as a real process, Ctrl-C acting as in a terminal (a shell's
    background job would inherit SIGINT ignored)."""
    return subprocess.Popen([sys.executable, "-m", "minidiff", *words], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _steps_logged(out: Path) -> list[int]:
    """The steps of loss.csv, after checking every line ends in a bare newline."""
    text = (out / "loss.csv").read_bytes()
    assert b"\r" not in text and text.endswith(b"\n")
    with open(out / "loss.csv", newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen) -> None:
    while not (out / "train_state.json").exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)


def _one_race(out: Path, mnist_dir: Path) -> str:
    """Two runs (seeds 1 and 2) started at once into `out`: check that one trained and one was refused."""
    procs = [_start(_args(out, mnist_dir, 6, "--seed", str(seed))) for seed in (1, 2)]
    results = [(p.pid, *p.communicate(timeout=120), p.returncode) for p in procs]
    ran = [r for r in results if r[3] == 0]
    refused = [r for r in results if r[3] == 2]
    assert len(ran) == 1 and len(refused) == 1, results
    (pid, out_text, _, _), (_, _, err, _) = ran[0], refused[0]
    assert f"saved flow-time model to {out}" in out_text
    message = err.strip()
    assert message.count("\n") == 0, err  # one line, no traceback
    assert message.startswith(f"minidiff train: error: {out} is in use by another training run "
                              f"(pid {pid} on host {socket.gethostname()}, started "), message
    assert message.endswith("; wait until it ends, or choose another --out")
    seed = 1 if procs[0].pid == pid else 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == seed and cfg["steps"] == 12  # the winner's run, whole
    assert _steps_logged(out) == list(range(12))  # once each: no rows of the refused run
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "index.html", "loss.csv", "loss.png",
                                                     "model.safetensors", "samples.png",  # the page and its figure
                                                     "train_state.json", "train_state.safetensors"]
    return f"seed {seed} ran, seed {3 - seed} refused"


def test_two_runs_started_at_once_into_one_folder_one_trains_and_the_other_is_refused(tmp_path, mnist_dir):
    """The data-loss case of issue 21: before the lock, both runs printed "saved" and the folder
    held seed 2's model beside a loss.csv with both runs' rows."""
    outcomes = [_one_race(tmp_path / f"round{i}", mnist_dir) for i in range(ROUNDS)]
    print(f"{ROUNDS} races: " + "; ".join(outcomes))


def test_a_lock_naming_a_dead_process_does_not_block_resume(tmp_path, mnist_dir):
    """A lock file is only a note of who holds the lock; the lock is the flock, which died with its process."""
    out = tmp_path / "run"
    cfg = T.recipe_config("flow-time", epochs=2, batch_size=32, num_hiddens=4, snapshot_epochs=[],
                          save_every=2, data=str(mnist_dir))
    T.train(cfg, out, progress=False, max_steps=2)  # what the command line would train, stopped at step 2
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    (out / RL.LOCK_FILE).write_text(json.dumps({"pid": finished.pid, "host": socket.gethostname(),
                                                "started": "2026-12-01 10:00:00", "command": "minidiff train ..."}))
    assert main(_args(out, mnist_dir, 2, "--resume")) == 0
    assert RF.saved_step(out) == (4, 2.0) and _steps_logged(out) == [0, 1, 2, 3]
    assert not (out / RL.LOCK_FILE).exists()  # released, and the stale note with it


def test_a_killed_run_leaves_a_lock_file_that_does_not_block_its_resume(tmp_path, mnist_dir):
    """SIGKILL, as the out-of-memory killer sends it. Killed after its checkpoint of step 8, 8 steps before
    the next: a kill between the files of a checkpoint cannot be held back as a Ctrl-C is."""
    out = tmp_path / "run"
    proc = _start(_args(out, mnist_dir, 8, "--save-every", "8"))
    _wait_for_checkpoint(out, proc)
    proc.kill()  # no Python code runs: the lock file stays
    proc.wait(timeout=60)
    note = json.loads((out / RL.LOCK_FILE).read_text())
    assert note["pid"] == proc.pid and note["host"] == socket.gethostname()
    assert main(_args(out, mnist_dir, 8, "--resume")) == 0
    assert json.loads((out / "config.json").read_text())["steps"] == 16
    assert _steps_logged(out) == list(range(16))
    assert not (out / RL.LOCK_FILE).exists()


def test_ctrl_c_says_in_one_line_what_is_kept_and_how_to_resume(tmp_path, mnist_dir):
    """SIGINT after the first checkpoint: exit code 130, one line, no traceback; the command it
    prints finishes the run at its last step. (That a resumed run repeats the uninterrupted one
    bit for bit is tests/test_train.py's.)"""
    stopped = tmp_path / "stopped"
    proc = _start(_args(stopped, mnist_dir, 8))
    _wait_for_checkpoint(stopped, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    line = err.splitlines()[-1]
    kept = RF.saved_step(stopped)
    assert kept is not None and kept[0] < 16
    assert line.startswith(f"minidiff train: interrupted; the checkpoint of step {kept[0]} "
                           f"(epoch {kept[1]:g}) in {stopped} is intact; resume it with: python -m minidiff train "), \
        line
    assert not (stopped / RL.LOCK_FILE).exists()  # released on the way out
    command = shlex.split(line.split("resume it with: ", 1)[1])
    assert command[:3] == ["python", "-m", "minidiff"] and command[3:] == _args(stopped, mnist_dir, 8, "--resume")
    resumed = _start(command[3:])
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert f"saved flow-time model to {stopped}" in out
    assert RF.saved_step(stopped) == (16, 8.0) and _steps_logged(stopped) == list(range(16))


def test_ctrl_c_before_the_first_checkpoint_says_to_start_over(tmp_path, mnist_dir, monkeypatch, capsys):
    """Nothing to resume: the line gives the command again, with --overwrite for the partial log."""
    monkeypatch.setattr(sys, "argv", ["minidiff"] + _args(tmp_path / "run", mnist_dir, 1))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "batch_loss", interrupted)
    assert main(sys.argv[1:]) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == ("minidiff train: interrupted before the first checkpoint, so there is nothing to resume; "
                    "start again with: minidiff train " + shlex.join(_args(tmp_path / "run", mnist_dir, 1)[1:])
                    + " --overwrite")


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raising KeyboardInterrupt in this process, as in a terminal (a background job has it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_during_a_checkpoint_waits_until_all_its_files_are_written(tmp_path, monkeypatch, ctrl_c_raises):
    """A checkpoint is four files; stopped between them, model and resume state would disagree."""
    save_checkpoint = RF.save_checkpoint

    def interrupted_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after the first of the files
        return save_checkpoint(*args, **kwargs)

    monkeypatch.setattr(RF, "save_checkpoint", interrupted_save)
    data = (torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 10)
    cfg = T.recipe_config("flow-time", epochs=2, batch_size=32, num_hiddens=4, save_every=1, snapshot_epochs=[])
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, tmp_path, data=data, progress=False)
    assert RF.saved_step(tmp_path) == (1, 0.5)  # config.json and train_state.json of the same step
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 1
    assert not (tmp_path / RL.LOCK_FILE).exists()
    monkeypatch.setattr(RF, "save_checkpoint", save_checkpoint)
    T.train(cfg, tmp_path, data=data, progress=False, resume=True)  # and it resumes
    assert RF.saved_step(tmp_path) == (4, 2.0)


def test_the_lock_is_released_when_a_run_fails_and_the_folder_it_made_is_removed(tmp_path):
    bad = (torch.rand(64, 1, 28, 28) * 255, torch.arange(64) % 10)  # pixels 0..255: refused after the lock
    cfg = T.recipe_config("flow-time", epochs=1, batch_size=32, num_hiddens=4)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        T.train(cfg, tmp_path / "new", data=bad, progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        T.train(cfg, tmp_path / "kept", data=bad, progress=False)
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())  # the user's folder stays
    with RL.owned_run_folder(tmp_path / "kept") as folder:  # free again
        assert folder == tmp_path / "kept"


def test_the_resume_command_of_a_run_started_from_python_parses_back_to_the_same_run(tmp_path, monkeypatch):
    """main(["train", ...]) called from Python has no command line in sys.argv: the words come from its args."""
    monkeypatch.setattr(sys, "argv", ["pytest"])
    words = ["train", "judge", "--out", str(tmp_path / "my run"), "--epochs", "0.5", "--snapshot-epochs", "",
             "--seed", "7", "--overwrite"]
    args = build_parser().parse_args(words)
    again = build_parser().parse_args(["train"] + CT._with_flag(CT._train_words(args), "--resume", "--overwrite"))
    assert vars(again) == {**vars(args), "resume": True, "overwrite": False}


def test_the_finished_runs_page_is_written_while_the_run_still_owns_its_folder(tmp_path, mnist_dir, capsys,
                                                                             monkeypatch):
    """`minidiff train` writes the finished run's index.html inside the run's ownership (train's on_end): at that
    moment the folder lock is held, so a run started then is refused instead of deleting the run under its page."""
    import fcntl

    held = []
    train = T.train

    def watched_train(*args, on_end, **kwargs):
        def on_end_watched(out):
            with open(out / RL.LOCK_FILE) as f:  # another open file: flock tells whether the run still holds it
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held.append(False)
                except BlockingIOError:
                    held.append(True)
            on_end(out)
        return train(*args, on_end=on_end_watched, **kwargs)

    monkeypatch.setattr(T, "train", watched_train)  # the CLI imports minidiff.train.train when it runs
    out = tmp_path / "run"
    assert main(_args(out, mnist_dir, 1)) == 0
    assert held == [True]
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2:] == [f"saved flow-time model to {out}", f"results page: {out / 'index.html'}"]
    assert (out / "index.html").is_file() and "finished" in (out / "index.html").read_text().lower()
