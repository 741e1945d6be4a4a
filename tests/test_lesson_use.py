"""`minidiff lesson ID --use FILE`: the lesson's figures drawn by the learner's function.

A learner's file that holds minidiff's own function draws what the lesson draws without
--use (the learner's function really is the one called); a typical mistake draws something
else; a file of another exercise, a starter left as written, a lesson that takes no --use,
are each one line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minidiff.cli import main

# lesson, exercise, the learner's name, its figure, a typical mistake (a body for the function)
CASES = [
    ("A1.1", "forward", "forward.png",
     "return alphas_cumprod[t] * im + (1 - alphas_cumprod[t]) * noise  # square roots forgotten"),
    ("A1.6", "cfg_eps", "cfg.png", "return eps_cond + scale * (eps_cond - eps_uncond)  # starts from eps_cond"),
    ("A1.9", "hybrid_eps", "hybrids.png", "return eps_a  # no high frequencies of eps_b"),
]


def _learner_file(folder: Path, lesson: str, name: str, body: str | None) -> Path:
    """A learner's exercise file: minidiff's own function (body None), or the function with ``body``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    if body is None:
        path.write_text(f'EXERCISE = "{lesson}"\nfrom minidiff.exercises.reference import {name}  # noqa: F401\n')
    else:
        from minidiff.exercises import EXERCISES

        params = {"forward": "im, t, alphas_cumprod, noise", "cfg_eps": "eps_uncond, eps_cond, scale",
                  "hybrid_eps": "eps_a, eps_b, kernel_size, sigma"}[name]
        assert name in EXERCISES[lesson].names
        path.write_text(f'EXERCISE = "{lesson}"\n\n\ndef {name}({params}):\n    {body}\n')
    return path


def _figure(out: Path, lesson: str, name: str, *extra: str) -> np.ndarray:
    assert main(["lesson", lesson, "--quick", "--model", "mnist", "--out", str(out), *extra]) == 0
    return np.asarray(Image.open(out / lesson / name).convert("L"), dtype=int)


@pytest.mark.parametrize("lesson, name, figure, mistake", CASES)
def test_the_learners_function_draws_the_lesson(tmp_path, lesson, name, figure, mistake):
    plain = _figure(tmp_path / "plain", lesson, figure)
    right = _figure(tmp_path / "right", lesson, figure, "--use", str(_learner_file(tmp_path / "a", lesson, name, None)))
    wrong = _figure(tmp_path / "wrong", lesson, figure, "--use",
                    str(_learner_file(tmp_path / "b", lesson, name, mistake)))
    # minidiff's own function handed in as the learner's: the same figure (a guided pair of model
    # calls instead of one batched call may round a pixel to the next grey level)
    assert right.shape == plain.shape and np.abs(right - plain).max() <= 1
    assert np.abs(wrong - plain).mean() > 1.0, "a wrong function drew the same figure: --use was not used"


def test_flow_sampling_is_drawn_by_the_learners_euler(tmp_path):
    path = _learner_file(tmp_path / "a", "B2.3", "flow_sample", None)
    assert main(["lesson", "B2.3", "--quick", "--out", str(tmp_path / "o"), "--use", str(path)]) == 0
    assert (tmp_path / "o" / "B2.3" / "samples_by_epoch.png").is_file()


@pytest.mark.parametrize("lesson, which, message", [
    ("A1.1", "cfg", r"exercise A1\.6, which lesson A1\.6 draws: run minidiff lesson A1\.6 --use"),
    ("A1.2", "cfg", r"lesson A1\.2 does not use --use; the lessons that do: A1\.1, A1\.6, A1\.9, B2\.3"),
    ("all", "cfg", r"--use draws one lesson"),
    ("A1.1", "starter", r"forward in .* is not implemented yet"),
    ("A1.1", "missing", r"no file"),
])
def test_a_wrong_use_is_one_line(tmp_path, capsys, lesson, which, message):
    import re

    from minidiff.exercises import write_starter

    path = {"cfg": lambda: _learner_file(tmp_path, "A1.6", "cfg_eps", None),
            "starter": lambda: write_starter("A1.1", tmp_path),
            "missing": lambda: tmp_path / "nowhere.py"}[which]()
    assert main(["lesson", lesson, "--quick", "--model", "mnist", "--out", str(tmp_path / "o"), "--use", str(path)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1 and "Traceback" not in err, err
