"""A wheel built from this checkout, installed outside it, is the whole tool, offline.

Students install minidiff from a wheel (``pip install minidiff``), not from a clone, so the
lessons and the shipped weights must travel inside it. This test builds the wheel from a
copy of the source, installs it into an empty folder with no dependencies fetched (they are
this environment's), and runs the command line from another folder: the installed package,
not the checkout, must answer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ["setup.cfg", "pyproject.toml", "README.md", "minidiff", "lessons", "weights"]


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder a freshly built wheel was installed into (a --target install, like site-packages)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCE:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    # --no-build-isolation: build with this environment's setuptools and wheel (the dev extra), offline
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation",
          "-w", str(tmp / "dist"), str(src)], cwd=tmp)
    wheels = list((tmp / "dist").glob("minidiff-*.whl"))
    assert len(wheels) == 1, wheels
    site = tmp / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheels[0])],
         cwd=tmp)
    return site


def _minidiff(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site), MPLBACKEND="Agg")
    env.pop("MINIDIFF_WEIGHTS", None)
    return _run([sys.executable, "-m", "minidiff", *args], cwd=cwd, env=env)


def test_the_wheel_carries_every_lesson_and_every_shipped_weight(installed):
    """Every lessons/*.py and every file under weights/ is in the installed package."""
    for sub, pattern in (("lessons", "*.py"), ("weights", "**/*")):
        expected = {p.relative_to(ROOT / sub) for p in (ROOT / sub).glob(pattern)
                    if p.is_file() and "__pycache__" not in p.parts}
        got = {p.relative_to(installed / "minidiff" / sub) for p in (installed / "minidiff" / sub).glob(pattern)
               if p.is_file() and "__pycache__" not in p.parts}
        assert expected and expected == got, f"{sub}: missing {sorted(expected - got)[:5]}, extra {sorted(got - expected)[:5]}"


def test_the_installed_package_answers_not_the_checkout(installed, tmp_path):
    code = "import minidiff, minidiff.paths as s; print(minidiff.__file__); print(s.lessons_dir()); print(s.weights_dir())"
    env = dict(os.environ, PYTHONPATH=str(installed))
    env.pop("MINIDIFF_WEIGHTS", None)
    lines = _run([sys.executable, "-c", code], cwd=tmp_path, env=env).stdout.split()
    assert all(Path(line).is_relative_to(installed) for line in lines), lines


def test_installed_wheel_lists_and_runs_a_lesson_and_samples_digits(installed, tmp_path):
    listed = _minidiff(installed, "lessons", cwd=tmp_path).stdout
    assert "A1.7.2" in listed and "B2.6.1" in listed
    _minidiff(installed, "lesson", "B1.2", "--quick", "--out", "out", cwd=tmp_path)
    figures = list((tmp_path / "out" / "B1.2").glob("*.png"))
    assert figures and all(f.stat().st_size > 1000 for f in figures)

    _minidiff(installed, "sample-digits", "--per-class", "1", "--steps", "2", "--out", "digits.npz", cwd=tmp_path)
    with np.load(tmp_path / "digits.npz") as f:
        assert f["images"].shape == (10, 28, 28) and f["images"].dtype == np.uint8
        assert f["labels"].tolist() == list(range(10))
        assert f["images"].max() > 128  # digits were drawn, not a blank array
