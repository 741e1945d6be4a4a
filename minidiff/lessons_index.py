"""The lesson list: one script in lessons/ per step of the curriculum.

A lesson script is named after its step, ``a1_7_2_inpainting.py`` is lesson A1.7.2, and
defines ``run(ctx: LessonContext)`` (see ``minidiff.course``). This module finds the
scripts, lists them and runs them; their command lines, ``minidiff lessons``, ``minidiff
lesson <id>`` and ``python lessons/<script>.py``, are in ``minidiff.cli``.

Some options mean something to some lessons only: ``--image`` to those that start from a
picture, ``--guidance`` to those that guide, ``--train`` to the Part B lessons that show a
trained model, ``--model`` to Part A. A script names the ones it reads in a constant,
``OPTIONS = ("image", "guidance")``; giving an option to a lesson that would ignore it is an
error, never a silent no-op. ``--model`` goes with every Part A lesson. A lesson that takes
``--use FILE`` also names the learner's functions it draws with, ``USES = ("cfg_eps",)``; a file
of an exercise it does not draw with (a loss, another lesson's method) is refused for the same reason.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from minidiff.paths import lessons_dir

__all__ = ["LessonInfo", "FLAGS", "lessons_dir", "lesson_info", "list_lessons", "find_lesson", "load_lesson", "check_options",
           "run_lesson"]

_NAME = re.compile(r"^([ab])((?:_?\d+)+)_([a-z0-9_]+)\.py$")


@dataclass(frozen=True)
class LessonInfo:
    """A lesson script: its id ("A1.7.2"), a one-line title, its path and the options it reads."""

    id: str
    title: str
    path: Path
    options: frozenset[str] = frozenset()
    uses: tuple[str, ...] = ()  # the learner's functions that --use FILE draws it with (the script's USES)

    @property
    def sort_key(self) -> tuple:
        return (self.id[0], tuple(int(n) for n in self.id[1:].split(".")))


def _lesson_id(path: Path) -> str | None:
    m = _NAME.match(path.name)
    if not m:
        return None
    numbers = [n for n in m.group(2).split("_") if n]
    return m.group(1).upper() + ".".join(numbers)


def _title(path: Path) -> str:
    """The first line of the script's docstring, without its id and its final period."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r'^"""(.*?)$', text, flags=re.MULTILINE)
    line = m.group(1).strip() if m else path.stem
    return re.sub(r"^[AB]\d+(\.\d+)*\s*[:.-]?\s*", "", line).removesuffix(".")


def _constant(tree: ast.Module, name: str) -> tuple:
    """A tuple constant of the script (OPTIONS, USES), or () where it has none."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def _options(path: Path, tree: ast.Module, lesson_id: str) -> frozenset[str]:
    """The script's OPTIONS constant, plus model for Part A."""
    options = {"model"} if lesson_id.startswith("A") else set()
    options |= set(_constant(tree, "OPTIONS"))
    unknown = options - set(FLAGS)
    if unknown:
        raise RuntimeError(f"{path}: OPTIONS names {sorted(unknown)}; a lesson may read {sorted(FLAGS)}")
    return frozenset(options)


def lesson_info(path: Path) -> LessonInfo:
    """The LessonInfo of one script, e.g. lessons/a1_7_sdedit.py -> A1.7."""
    path = Path(path).resolve()
    lesson_id = _lesson_id(path)
    if lesson_id is None:
        raise ValueError(f"{path.name} is not named like a lesson script (e.g. a1_7_2_inpainting.py)")
    tree = ast.parse(path.read_text(encoding="utf-8"))  # read, not imported, so listing stays instant
    return LessonInfo(lesson_id, _title(path), path, _options(path, tree, lesson_id), _constant(tree, "USES"))


def list_lessons(folder: Path | None = None) -> list[LessonInfo]:
    """Every lesson script in curriculum order (Part A, then Part B)."""
    folder = folder or lessons_dir()
    found = [lesson_info(p) for p in folder.glob("*.py") if _lesson_id(p)]
    return sorted(found, key=lambda info: info.sort_key)


def find_lesson(lesson_id: str, folder: Path | None = None) -> LessonInfo:
    lessons = list_lessons(folder)
    wanted = lesson_id.upper().lstrip()
    for info in lessons:
        if info.id == wanted:
            return info
    raise ValueError(
        f"no lesson {lesson_id!r}; the lessons are: {', '.join(i.id for i in lessons)} "
        "(or 'all'); see 'minidiff lessons'"
    )


def load_lesson(info: LessonInfo) -> ModuleType:
    """Import a lesson script as a module (it stays runnable as a plain script too)."""
    name = f"minidiff_lesson_{info.path.stem}"
    spec = importlib.util.spec_from_file_location(name, info.path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import lesson {info.id} from {info.path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise RuntimeError(f"lesson {info.id} ({info.path}) defines no run(ctx)")
    return module


# The options only some lessons read, and the flag that sets each.
FLAGS = {"image": "--image", "guidance": "--guidance", "train": "--train", "model": "--model", "use": "--use"}


def check_options(lessons: list[LessonInfo], every: list[LessonInfo] | None = None, **given) -> None:
    """Refuse an option that none of ``lessons`` reads; check an --image file before any lesson runs.

    given: the options as set (None, False or "auto" = not given), e.g. image="me.png", guidance=3.0.
    ``every``: all lessons, to say which ones would read it.
    """
    every = every or list_lessons()
    for name, value in given.items():
        if value in (None, False, "auto") or (name, value) == ("model", "mnist"):
            continue  # not given; and Part B runs on MNIST anyway
        if not any(name in info.options for info in lessons):
            takers = ", ".join(i.id for i in every if name in i.options)
            which = f"lesson {lessons[0].id}" if len(lessons) == 1 else "these lessons"
            raise ValueError(f"{which} does not use {FLAGS[name]}; the lessons that do: {takers}")
    if given.get("image") is not None:
        from minidiff.data import load_image

        load_image(given["image"], size=8)  # FileNotFoundError / ValueError naming the file, before any work
    if given.get("use") is not None and len(lessons) != 1:  # the file itself is loaded once, by run_lesson
        raise ValueError("--use draws one lesson with your function: run minidiff lesson <its lesson> --use FILE")
    if given.get("guidance") is not None and not math.isfinite(given["guidance"]):
        raise ValueError(f"--guidance must be a finite number, got {given['guidance']}")


def run_lesson(info: LessonInfo, out: Path, run=None, **options) -> list[Path]:
    """Run one lesson; its figures go to out/<id>/. Returns the files it wrote.

    options: the LessonContext fields (quick, seed, device, model, progress, image, guidance,
    train, said; use: the learner's file, loaded here into their functions). An option the lesson does not read (see ``LessonInfo.options``) is an error.
    ``run``: the lesson's run(ctx) when its script is already running (``python lessons/<script>.py``).
    """
    from minidiff.course import LessonContext
    from minidiff.paths import output_dir

    check_options([info], **{k: options.get(k) for k in FLAGS})
    if options.get("use") is not None:
        from minidiff.exercises.lesson_use import learner_functions

        options["use"] = learner_functions(options["use"], info)
    ctx = LessonContext(out=output_dir(Path(out) / info.id), **{k: v for k, v in options.items() if v is not None})
    (run or load_lesson(info).run)(ctx)
    return list(ctx.written)
