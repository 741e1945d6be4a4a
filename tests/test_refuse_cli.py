"""What the command line refuses: each bad input is exit code 2 and a message naming it, before any work.

One table, one row per bad input. A row runs ``minidiff ...`` in this process and checks the
exit code, that stderr names the culprit (a regex), and that no traceback was printed. The
heavy work a row must never reach (sampling, a lesson's run) is replaced by a tripwire, so
"refused early" is checked, not assumed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minidiff import mnist_pipeline
from minidiff.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path):
    """A text file posing as an image, a folder, and a plain file where a folder is expected."""
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "a_folder.npz").mkdir()
    (tmp_path / "plain_file").write_text("x")
    return tmp_path


@pytest.fixture
def tripwires(monkeypatch):
    """Fail loudly if a refused command gets as far as sampling or running a lesson."""

    def tripped(*args, **kwargs):
        raise AssertionError("the bad input was not refused before the work started")

    monkeypatch.setattr(mnist_pipeline, "sample_digits", tripped)
    monkeypatch.setattr("minidiff.lessons_index.load_lesson", tripped)
    monkeypatch.setattr("huggingface_hub.snapshot_download", tripped)


NO_CUDA = not torch.cuda.is_available()

# (id, argv with {tmp} for the temporary folder, regex the error must match)
CASES = [
    # sample-digits: numbers
    ("steps-zero", "sample-digits --steps 0 --out {tmp}/d.npz", r"--steps.*at least 1"),
    ("steps-negative", "sample-digits --steps -4 --out {tmp}/d.npz", r"--steps.*at least 1"),
    ("steps-not-a-number", "sample-digits --steps many --out {tmp}/d.npz", r"--steps.*whole number"),
    ("per-class-zero", "sample-digits --per-class 0 --out {tmp}/d.npz", r"--per-class.*at least 1"),
    ("guidance-nan", "sample-digits --guidance nan --out {tmp}/d.npz", r"--guidance.*finite"),
    ("guidance-inf", "sample-digits --guidance inf --out {tmp}/d.npz", r"--guidance.*finite"),
    ("guidance-text", "sample-digits --guidance strong --out {tmp}/d.npz", r"--guidance.*number"),
    ("final-denoise-one", "sample-digits --final-denoise 1 --out {tmp}/d.npz", r"--final-denoise.*\[0, 1\)"),
    ("final-denoise-text", "sample-digits --final-denoise some --out {tmp}/d.npz", r"--final-denoise.*number"),
    ("final-denoise-ddpm", "sample-digits --model ddpm-class --final-denoise 0.1 --out {tmp}/d.npz",
     r"--final-denoise\) needs a flow model"),
    # sample-digits: where it writes, what it reads, where it runs
    ("out-not-npz", "sample-digits --out {tmp}/digits.png", r"--out must name a \.npz file"),
    ("out-is-a-folder", "sample-digits --out {tmp}/a_folder.npz", r"a_folder\.npz is a folder"),
    ("out-under-a-file", "sample-digits --out {tmp}/plain_file/d.npz", r"plain_file.*(is a file|cannot be written)"),
    ("model-missing", "sample-digits --model {tmp}/no_such_run --out {tmp}/d.npz", r"no MNIST checkpoint.*no_such_run"),
    ("device-unknown", "sample-digits --device gpu0 --out {tmp}/d.npz", r"--device.*unknown device 'gpu0'"),
    *([("device-cuda-absent", "sample-digits --device cuda --out {tmp}/d.npz", r"--device.*no CUDA GPU")]
      if NO_CUDA else []),
    # lesson: ids and options a lesson would ignore
    ("lesson-unknown", "lesson Z9 --out {tmp}/out", r"no lesson 'Z9'"),
    ("image-missing", "lesson A1.7 --image {tmp}/missing.png --out {tmp}/out", r"missing\.png"),
    ("image-not-an-image", "lesson A1.7.2 --image {tmp}/notes.png --out {tmp}/out", r"cannot read .*notes\.png"),
    ("image-missing-for-all", "lesson all --image {tmp}/missing.png --out {tmp}/out", r"missing\.png"),
    ("image-to-a-lesson-without-one", "lesson B2.6 --image {tmp}/notes.png --out {tmp}/out",
     r"B2\.6 does not use --image; the lessons that do: A1\.1"),
    ("guidance-to-a-lesson-without-guidance", "lesson A1.5 --guidance 3 --out {tmp}/out",
     r"A1\.5 does not use --guidance"),
    ("guidance-nan-lesson", "lesson A1.6 --guidance nan --out {tmp}/out", r"--guidance.*finite"),
    ("train-to-part-a", "lesson A1.1 --train --out {tmp}/out", r"A1\.1 does not use --train"),
    ("model-if-to-part-b", "lesson B2.3 --model if --out {tmp}/out", r"B2\.3 does not use --model"),
    ("model-unknown", "lesson A1.1 --model sd --out {tmp}/out", r"--model.*invalid choice"),
    ("lesson-out-is-a-file", "lesson A1.1 --out {tmp}/plain_file", r"plain_file is a file"),
    ("lesson-device-unknown", "lesson A1.1 --device tpu --out {tmp}/out", r"--device.*(unknown device|runs on cpu)"),
    # fetch
    ("fetch-unknown-model", "fetch if-ii-xl", r"unknown model 'if-ii-xl'"),
    ("fetch-cache-dir-a-file", "fetch if-i-xl --cache-dir {tmp}/plain_file",
     r"--cache-dir .*plain_file is a file, not a folder"),
    ("fetch-cache-dir-under-a-file", "fetch if-ii-l --cache-dir {tmp}/plain_file/hub",
     r"--cache-dir .*plain_file/hub cannot be written to"),
]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse refuses a malformed option by exiting 2
        code = stop.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case_id, command, message", CASES, ids=[c[0] for c in CASES])
def test_cli_refuses_bad_input_early_with_a_clear_message(case_id, command, message, files, tripwires, capsys):
    code, err = _run(command.format(tmp=files).split(), capsys)
    assert code == 2, f"{case_id}: exit code {code}, stderr: {err}"
    assert "Traceback" not in err
    assert re.search(message, err), f"{case_id}: {err!r} does not match {message!r}"


def test_refusing_every_lesson_writes_nothing(files, tripwires, capsys):
    """'lesson all' with a bad --image fails before the first lesson, so no figure folder appears."""
    code, _ = _run(["lesson", "all", "--image", str(files / "missing.png"), "--out", str(files / "out")], capsys)
    assert code == 2
    assert not (files / "out").exists()


def test_sample_digits_steps_means_what_it_says(tmp_path, capsys):
    """--steps 1 runs one step (not the default 8): fewer steps give different digits."""
    import numpy as np

    outs = {}
    for steps in (1, 8):
        out = tmp_path / f"d{steps}.npz"
        assert main(["sample-digits", "--per-class", "1", "--steps", str(steps), "--out", str(out)]) == 0
        with np.load(out) as f:
            outs[steps] = f["images"].astype(int)
    assert np.abs(outs[1] - outs[8]).mean() > 5


def test_a_lesson_script_and_the_cli_write_to_the_same_folder(tmp_path):
    """``python lessons/X.py --out D`` writes D/<id>/, as ``minidiff lesson <id> --out D`` does."""
    done = subprocess.run([sys.executable, str(ROOT / "lessons" / "a1_1_forward.py"), "--quick", "--model", "mnist",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "A1.1" / "forward.png").is_file()


def test_a_lesson_script_refuses_bad_input_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "lessons" / "a1_7_sdedit.py"), "--image",
                           str(tmp_path / "gone.jpg"), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert "gone.jpg" in done.stderr and "Traceback" not in done.stderr


def test_image_reaches_every_lesson_that_starts_from_a_picture(tmp_path):
    """--image replaces the test picture: a white square on black gives another figure than the default."""
    from PIL import Image

    from minidiff.lessons_index import list_lessons, run_lesson

    picture = tmp_path / "square.png"
    img = Image.new("L", (40, 40), 0)
    img.paste(255, (10, 10, 30, 30))
    img.save(picture)
    takers = [i for i in list_lessons() if "image" in i.options]
    assert {i.id for i in takers} >= {"A1.7", "A1.7.1", "A1.7.2", "A1.7.3"}
    for info in takers:
        own = run_lesson(info, tmp_path / "own", quick=True, model="mnist", progress=False, image=str(picture))
        default = run_lesson(info, tmp_path / "default", quick=True, model="mnist", progress=False)
        assert [p.name for p in own] == [p.name for p in default]
        assert any(a.read_bytes() != b.read_bytes() for a, b in zip(own, default)), f"{info.id} ignored --image"
