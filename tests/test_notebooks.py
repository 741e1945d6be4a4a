"""Every lesson is also a notebook that runs: `minidiff notebook` writes it, a real Jupyter kernel runs it.

The notebooks are written by the command a learner types (``minidiff notebook all --out DIR
--quick``), checked against the notebook format, then executed headless by nbclient through
an ipykernel, each in its own kernel, in quick mode on the MNIST path. A notebook passes when
every cell runs without error and every figure the lesson saved is shown in it, and shown as
a real picture. That is what keeps the notebooks in step with the library.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from minidiff import notebooks
from minidiff.cli import main
from minidiff.lessons_index import find_lesson, list_lessons

LESSONS = list_lessons()
IMAGES = ("image/png", "image/gif")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """Every lesson's notebook, in quick mode, as `minidiff notebook all --out DIR --quick` writes them."""
    folder = tmp_path_factory.mktemp("notebooks")
    assert main(["notebook", "all", "--out", str(folder), "--quick"]) == 0
    return folder


def _execute(path: Path, **parameters) -> nbformat.NotebookNode:
    """Run the notebook at path top to bottom in a fresh python3 kernel, in its own folder, the parameters
    cell's variables changed first as a learner would (e.g. MODEL="mnist"); the executed notebook."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for name, value in parameters.items():
        line = next(line for line in cell.source.splitlines() if line.startswith(f"{name} = "))
        cell.source = cell.source.replace(line, f"{name} = {value!r}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as conftest.py sets for the tests' own torch
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute(env=env)
    return nb


_EXECUTED: dict[str, nbformat.NotebookNode] = {}  # lesson id -> its quick notebook, run once for every test


def _executed(written: Path, info) -> nbformat.NotebookNode:
    """Lesson info's notebook as written by the fixture, run (on MNIST, as tests/test_lessons.py runs it)."""
    if info.id not in _EXECUTED:
        _EXECUTED[info.id] = _execute(written / f"{info.path.stem}.ipynb",
                                      **({"MODEL": "mnist"} if "model" in info.options else {}))
    return _EXECUTED[info.id]


def _shown(nb: nbformat.NotebookNode) -> list[tuple[np.ndarray, np.ndarray]]:
    """The images the notebook shows, as grey pixel arrays: (first frame, last frame) of each."""
    pictures = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for mime in IMAGES:
                if mime in output.get("data", {}):
                    image = Image.open(io.BytesIO(base64.b64decode(output["data"][mime])))
                    first = np.asarray(image.convert("L"), dtype=np.float32)
                    image.seek(getattr(image, "n_frames", 1) - 1)
                    pictures.append((first, np.asarray(image.convert("L"), dtype=np.float32)))
    return pictures


def test_every_notebook_is_valid_and_reads_as_the_lesson(written):
    for info in LESSONS:
        path = written / f"{info.path.stem}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3"
        first, parameters = nb.cells[0], nb.cells[1]
        assert first.cell_type == "markdown" and first.source.startswith(f"# {info.id} "), info.id
        assert "$$" in first.source, f"{info.id}: the first cell states no equation in LaTeX"
        assert parameters.metadata["tags"] == ["parameters"]
        assert f'LESSON = "{info.id}"' in parameters.source and "QUICK = True" in parameters.source
        assert ("USE = None" in parameters.source) == ("use" in info.options)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "def run(ctx: LessonContext) -> None:" in code and nb.cells[-1].source.startswith("if __name__")
        assert '"""' + info.id not in code, f"{info.id}: the docstring repeats the first cell"


def test_notebooks_are_written_the_same_each_time(written, tmp_path):
    """Cell ids come from the cell's place: a notebook written again is the same file, diffable."""
    assert main(["notebook", "A1.4", "--out", str(tmp_path), "--quick"]) == 0
    assert (tmp_path / "a1_4_iterative.ipynb").read_bytes() == (written / "a1_4_iterative.ipynb").read_bytes()


@pytest.mark.parametrize("info", LESSONS, ids=[i.id for i in LESSONS])
def test_every_notebook_runs_in_a_kernel_and_shows_its_figures(written, info):
    path = written / f"{info.path.stem}.ipynb"
    nb = _executed(written, info)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    shown = _shown(nb)
    saved = sorted(p.name for p in (path.parent / "out" / info.id).iterdir() if p.suffix in (".png", ".gif"))
    assert shown, f"{info.id} shows no figure"
    assert len(shown) == len(saved), f"{info.id} saved {saved} but shows {len(shown)} of them"
    for first, last in shown:
        assert min(first.shape) >= 28 and first.std() > 1.0 and last.std() > 1.0, f"{info.id}: a constant picture"
    # the notebook's run is on the folder's results page too, with the command that re-makes it
    entry = {e["id"]: e for e in json.loads((path.parent / "out" / "results.json").read_text())["lessons"]}[info.id]
    assert sorted(Path(f).name for f in entry["files"] if f.endswith((".png", ".gif"))) == saved
    assert entry["command"].startswith(f"minidiff lesson {info.id} --out ") and "--quick" in entry["command"]


def test_use_names_the_learners_file_and_the_notebook_draws_with_it(written, tmp_path):
    """A1.1 with a learner's forward that forgets the square roots: the notebook's figure is not minidiff's."""
    learner = tmp_path / "forward.py"
    learner.write_text('EXERCISE = "A1.1"\n\n\ndef forward(im, t, alphas_cumprod, noise):\n'
                       "    return alphas_cumprod[t] * im + (1 - alphas_cumprod[t]) * noise  # square roots forgotten\n")
    assert main(["notebook", "A1.1", "--out", str(tmp_path / "mine"), "--quick", "--use", str(learner)]) == 0
    mine = _execute(tmp_path / "mine" / "a1_1_forward.ipynb", MODEL="mnist")
    assert f"USE = {json.dumps(str(learner.resolve()))}" in mine.cells[1].source
    ((a, _),), ((b, _),) = _shown(mine), _shown(_executed(written, find_lesson("A1.1")))
    assert a.shape == b.shape and np.abs(a - b).mean() > 1.0, "the learner's forward drew minidiff's figure"


@pytest.mark.parametrize("args, message", [
    (["Z9"], "no lesson 'Z9'"),
    (["all", "--use", "x.py"], "--use draws one lesson"),
    (["A1.7.1", "--use", "x.py"], "lesson A1.7.1 does not use --use"),
    (["A1.1", "--use", "nowhere.py"], "--use nowhere.py: no such file"),
])
def test_a_refused_notebook_is_one_line(tmp_path, capsys, monkeypatch, args, message):
    (tmp_path / "x.py").write_text("")
    monkeypatch.chdir(tmp_path)
    assert main(["notebook", *args, "--out", str(tmp_path / "nb")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "nb").exists() or not any((tmp_path / "nb").iterdir())


def test_a_notebook_already_there_is_kept_without_force(tmp_path, capsys):
    mine = tmp_path / "a1_1_forward.ipynb"
    mine.write_text("my notes")
    assert main(["notebook", "A1.1", "--out", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err and mine.read_text() == "my notes"
    assert main(["notebook", "A1.1", "--out", str(tmp_path), "--force"]) == 0
    nbformat.validate(nbformat.read(mine, as_version=4))


def test_without_the_extra_the_error_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "jupytext", None)  # import jupytext now raises ImportError
    assert main(["notebook", "A1.1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert 'pip install "minidiff[notebooks]"' in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def test_parameters_of_the_wrong_type_are_named():
    info = find_lesson("A1.4")
    for namespace, message in [({"SEED": "0"}, "SEED must be int"), ({"QUICK": 1}, "QUICK must be bool"),
                               ({"MODEL": "IF"}, 'MODEL must be "auto", "if" or "mnist"'),
                               ({"OUT": None}, "OUT must be str")]:
        with pytest.raises(ValueError, match=message):
            notebooks._options({"OUT": "out", **namespace}, info)
    assert notebooks._options({"OUT": "o", "USE": "f.py"}, info) == {
        "out": "o", "quick": False, "seed": 0, "device": "cpu", "model": "auto", "image": None, "use": "f.py"}

    class Shell:  # a kernel whose parameters cell never ran
        user_ns: dict = {}

    with pytest.raises(ValueError, match="no LESSON in this notebook"):
        notebooks.run_in_kernel(lambda ctx: None, Shell())
