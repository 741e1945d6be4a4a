"""The lessons as Jupyter notebooks: ``minidiff notebook ID|all --out DIR``.

Each lesson script is also a notebook, in jupytext's percent format: ``# %%`` starts a code
cell and ``# %% [markdown]`` a cell of text whose lines are comments, so the file stays a
plain script. A lesson's cells, in the order a student reads them:

    script (lessons/a1_4_iterative.py)           notebook (DIR/a1_4_iterative.ipynb)
    # %% [markdown]  the idea, equations in LaTeX  the same: the title and the idea
                                                   the parameters cell, written here: LESSON, OUT, QUICK, ...
    # %%  docstring, imports, OPTIONS              the same, less the docstring (the first cell says it)
    # %% [markdown]  what run(ctx) does, in order  the same
    # %%  def run(ctx): ...                        the same
    # %%  if __name__ == "__main__": main(...)     the same: runs the lesson with the parameters

The notebook is made from the script each time it is written, never kept beside it, so it
cannot fall behind the library (tests/test_notebooks.py runs every one through a real
Jupyter kernel). In that kernel the last cell's ``lesson_script`` has no command line to
read: ``run_in_kernel`` takes the options from the parameters cell, and LessonContext shows
each figure under the cell as it saves it (``show``), so the notebook shows the files the
script writes.

jupytext and nbformat write the notebooks, IPython runs them: the ``notebooks`` extra
(pip install "minidiff[notebooks]"), which running a lesson as a script does not need.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["PARAMETERS", "lesson_notebook", "write_notebooks", "kernel", "run_in_kernel", "show"]

INSTALL = 'pip install "minidiff[notebooks]"'

# A notebook variable for each option of `minidiff lesson`: the option, its variable, its default and what
# it does. The first four go into every notebook, the others into those of the lessons that read them.
PARAMETERS = [
    ("out", "OUT", "out", "the figures go to OUT/<id>/ (beside this notebook) and show below the last cell"),
    ("quick", "QUICK", False, "True: a few steps only, to check that it runs"),
    ("seed", "SEED", 0, "the seed of every random draw: the same seed draws the same figures"),
    ("device", "DEVICE", "cpu", '"cuda" to run on a GPU'),
    ("model", "MODEL", "auto", 'Part A\'s model: "if" (DeepFloyd IF, when its weights are here), "mnist" or "auto"'),
    ("image", "IMAGE", None, "your own picture (a file name) in place of the test picture"),
    ("guidance", "GUIDANCE", None, "the classifier-free guidance scale; None: the model's own"),
    ("train", "TRAIN", False, "True: train the model here (minutes) instead of loading the shipped one"),
    ("use", "USE", None, "your exercise file (minidiff exercise <id>): the figures drawn by your function"),
]
_ALWAYS = ("out", "quick", "seed", "device")
# the types a parameter may take (a string where a number belongs would fail deep inside the lesson)
_TYPES: dict[str, tuple[type, ...]] = {
    "out": (str, os.PathLike), "quick": (bool,), "seed": (int,), "device": (str,), "model": (str,),
    "image": (str, os.PathLike, type(None)), "guidance": (int, float, type(None)), "train": (bool,),
    "use": (str, os.PathLike, type(None)),
}


def _notebook_modules():
    """(jupytext, nbformat), or RuntimeError saying how to install them."""
    try:
        import jupytext
        import nbformat
    except ImportError as err:
        raise RuntimeError(f"writing notebooks needs jupytext and nbformat ({err.name} is missing): {INSTALL}") from None
    return jupytext, nbformat


# ----------------------------------------------------------------------------------------
# Writing: script -> notebook
# ----------------------------------------------------------------------------------------


def parameters_source(info, quick: bool = False, use: str | None = None) -> str:
    """The parameters cell of lesson ``info``'s notebook: one variable per option it reads."""
    given = {"quick": quick, "use": None if use is None else str(Path(use).expanduser().resolve())}
    lines = [f"# The settings of this run, as `minidiff lesson {info.id}` takes them on its command line.",
             "# Change them here, then run all cells; the last cell runs the lesson with them.",
             f"LESSON = {json.dumps(info.id)}"]
    for option, name, default, what in PARAMETERS:
        if option in _ALWAYS or option in info.options:
            value = given.get(option) or default
            shown = json.dumps(value) if isinstance(value, str) else repr(value)  # "out", with its escapes
            lines.append(f"{name} = {shown}  # {what.replace('<id>', info.id)}")
    return "\n".join(lines)


def _without_docstring(source: str) -> str:
    """A cell's code less the module docstring that opens it (the notebook's first cell says the same)."""
    body = ast.parse(source).body
    if not body or not isinstance(body[0], ast.Expr) or not isinstance(getattr(body[0], "value", None), ast.Constant):
        return source
    lines = source.splitlines()
    return "\n".join(lines[: body[0].lineno - 1] + lines[body[0].end_lineno:]).strip("\n")


def lesson_notebook(info, quick: bool = False, use: str | None = None):
    """Lesson ``info``'s script as an nbformat v4 notebook, with its parameters cell; validated.

    RuntimeError when the script does not open with a markdown cell (a notebook would start
    with code and no idea), or when jupytext or nbformat is missing.
    """
    jupytext, nbformat = _notebook_modules()
    cells = jupytext.reads(info.path.read_text(encoding="utf-8"), fmt="py:percent").cells
    if not cells or cells[0].cell_type != "markdown":
        raise RuntimeError(f"{info.path} does not open with a '# %% [markdown]' cell stating the lesson's idea")
    first_code = next(k for k, cell in enumerate(cells) if cell.cell_type == "code")
    cells[first_code].source = _without_docstring(cells[first_code].source)
    v4 = nbformat.v4
    cells.insert(first_code, v4.new_code_cell(parameters_source(info, quick, use), metadata={"tags": ["parameters"]}))
    new_cell = {"markdown": v4.new_markdown_cell, "code": v4.new_code_cell}
    nb = v4.new_notebook(
        # ids from the cell's place, not random: a notebook written twice is the same file; of jupytext's
        # metadata only the tags (the rest, e.g. lines_to_next_cell, is how the script spaced its cells)
        cells=[new_cell[c.cell_type](c.source, id=f"cell-{k}", metadata={"tags": c.metadata["tags"]} if
                                     "tags" in c.metadata else {}) for k, c in enumerate(cells)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                  "language_info": {"name": "python"}},
    )
    nbformat.validate(nb)
    return nb


def write_notebooks(lessons: Sequence, folder: str | os.PathLike, quick: bool = False, use: str | None = None,
                    force: bool = False) -> list[Path]:
    """Write each lesson's notebook to folder/<script name>.ipynb; returns the paths.

    A notebook already there may hold the learner's edits and outputs: it is replaced only with
    ``force``. Every notebook is made and validated before the first is written.
    """
    from minidiff.checkpoint import atomic_write
    from minidiff.paths import output_dir

    _, nbformat = _notebook_modules()
    if use is not None and not Path(use).expanduser().is_file():
        raise FileNotFoundError(f"--use {use}: no such file; write one with: minidiff exercise {lessons[0].id} --out .")
    folder = output_dir(folder)
    paths = [folder / f"{info.path.stem}.ipynb" for info in lessons]
    there = [p for p in paths if p.exists()]
    if there and not force:
        more = f" (and {len(there) - 1} more)" if len(there) > 1 else ""
        raise ValueError(f"{there[0]} exists{more} and may hold your edits: give --force to replace it, "
                         "or another --out")
    notebooks = [lesson_notebook(info, quick, use) for info in lessons]
    for path, nb in zip(paths, notebooks):
        atomic_write(path, lambda tmp: nbformat.write(nb, tmp))
    return paths


# ----------------------------------------------------------------------------------------
# Running: the last cell, in a Jupyter kernel
# ----------------------------------------------------------------------------------------


def kernel():
    """The IPython shell of the Jupyter kernel this code runs in, or None (a script, a terminal IPython)."""
    import sys

    ipython = sys.modules.get("IPython")  # never imported here: a kernel has imported it already
    shell = ipython.get_ipython() if ipython is not None else None
    return shell if getattr(shell, "kernel", None) is not None else None


def _options(namespace: dict, info) -> dict[str, Any]:
    """The lesson's options from the notebook's variables (their defaults where one is missing), type-checked."""
    options = {}
    for option, name, default, _ in PARAMETERS:
        if option not in _ALWAYS and option not in info.options:
            continue  # run_lesson refuses an option this lesson does not read; its variable is not in the cell
        value = namespace.get(name, default)
        if not isinstance(value, _TYPES[option]) or (isinstance(value, bool) and bool not in _TYPES[option]):
            kinds = " or ".join("None" if t is type(None) else t.__name__ for t in _TYPES[option])
            raise ValueError(f"{name} must be {kinds}, got {value!r}: fix it in the parameters cell")
        options[option] = value
    if options.get("model", "auto") not in ("auto", "if", "mnist"):
        raise ValueError(f'MODEL must be "auto", "if" or "mnist", got {options["model"]!r}')
    if options["device"] != "cpu":
        from minidiff.checkpoint import check_device

        check_device(options["device"])
    return options


def show(path: Path) -> None:
    """Show a figure the lesson has just saved under the running cell (a PNG or GIF; other files by name)."""
    from IPython.display import Image, display

    print(path)
    if path.suffix in (".png", ".gif"):
        display(Image(filename=str(path)))


def run_in_kernel(run: Callable, shell) -> list[Path]:
    """The last cell of a lesson's notebook: run(ctx) with the parameters cell's options; returns the files.

    ``run`` is the notebook's own (a student may have changed it); the lesson's id and options come
    from the variables of the parameters cell in the kernel's namespace.
    """
    from minidiff.lessons_index import find_lesson, run_lesson

    if "LESSON" not in shell.user_ns:
        raise ValueError("no LESSON in this notebook: run its parameters cell first, or write the notebook "
                         "again with: minidiff notebook <id> --out DIR")
    info = find_lesson(str(shell.user_ns["LESSON"]))
    options = _options(shell.user_ns, info)
    out = Path(options.pop("out"))
    # progress bars in a notebook only as Jupyter widgets: without ipywidgets, tqdm warns and draws text
    from importlib.util import find_spec

    start = time.perf_counter()
    written = run_lesson(info, out, run=run, show=show, progress=find_spec("ipywidgets") is not None, **options)
    # out/index.html, as `minidiff lesson` writes it: the same figures, re-made by the same command
    from minidiff.results_page import lesson_command, record_lessons, lesson_entry

    args = argparse.Namespace(out=out, **options)
    record_lessons(out, [lesson_entry(info, out, written, time.perf_counter() - start, lesson_command(info, args))])
    return written
