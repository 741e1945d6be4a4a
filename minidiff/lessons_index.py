"""The lesson list: one script in lessons/ per step of the curriculum.

A lesson script is named after its step, ``a1_7_2_inpainting.py`` is lesson A1.7.2, and
defines ``run(ctx: LessonContext)`` (see ``minidiff.course``). This module finds the
scripts, lists them and runs them; ``minidiff lessons`` and ``minidiff lesson <id>`` are
its command line.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

__all__ = ["LessonInfo", "lessons_dir", "list_lessons", "find_lesson", "load_lesson", "run_lesson"]

_NAME = re.compile(r"^([ab])((?:_?\d+)+)_([a-z0-9_]+)\.py$")


@dataclass(frozen=True)
class LessonInfo:
    """A lesson script: its id ("A1.7.2"), a one-line title and its path."""

    id: str
    title: str
    path: Path

    @property
    def sort_key(self) -> tuple:
        return (self.id[0], tuple(int(n) for n in self.id[1:].split(".")))


def lessons_dir() -> Path:
    """The lessons/ folder of the source checkout (it sits beside the minidiff package)."""
    here = Path(__file__).resolve().parent.parent / "lessons"
    if not here.is_dir():
        raise FileNotFoundError(
            f"no lessons folder at {here}: the lessons ship with the source repository; "
            "clone it and install with pip install -e ."
        )
    return here


def _lesson_id(path: Path) -> str | None:
    m = _NAME.match(path.name)
    if not m:
        return None
    numbers = [n for n in m.group(2).split("_") if n]
    return m.group(1).upper() + ".".join(numbers)


def _title(path: Path) -> str:
    """The first line of the script's docstring, without its id."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r'^"""(.*?)$', text, flags=re.MULTILINE)
    line = m.group(1).strip() if m else path.stem
    return re.sub(r"^[AB]\d+(\.\d+)*\s*[:.-]?\s*", "", line)


def list_lessons(folder: Path | None = None) -> list[LessonInfo]:
    """Every lesson script in curriculum order (Part A, then Part B)."""
    folder = folder or lessons_dir()
    found = [LessonInfo(lid, _title(p), p) for p in folder.glob("*.py") if (lid := _lesson_id(p))]
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


def run_lesson(info: LessonInfo, out: Path, quick: bool = False, seed: int = 0, device: str = "cpu",
               model: str = "auto", progress: bool = True, image: str | None = None,
               train: bool = False) -> list[Path]:
    """Run one lesson; its figures go to out/<id>/. Returns the files it wrote."""
    from minidiff.course import LessonContext

    ctx = LessonContext(
        out=Path(out) / info.id, quick=quick, seed=seed, device=device, model=model, progress=progress, image=image,
        train=train,
    )
    ctx.out.mkdir(parents=True, exist_ok=True)
    load_lesson(info).run(ctx)
    return list(ctx.written)


def cli_lessons(args) -> int:
    lessons = list_lessons()
    width = max(len(i.id) for i in lessons)
    for info in lessons:
        print(f"{info.id:<{width}}  {info.title}")
    print(f"\n{len(lessons)} lessons. Run one with: minidiff lesson <id> --out DIR  (or: minidiff lesson all)")
    return 0


def cli_lesson(args) -> int:
    from tqdm.auto import tqdm

    chosen = list_lessons() if args.id.lower() == "all" else [find_lesson(args.id)]
    if len(chosen) > 1:
        print(
            f"Running all {len(chosen)} lessons into {args.out}/ "
            f"({'quick mode' if args.quick else 'about 2 minutes on a 2-core CPU on the MNIST path; IF wants a GPU'})."
        )
    t0 = time.perf_counter()
    bar = tqdm(chosen, desc="lessons", disable=len(chosen) == 1, unit="lesson")
    for info in bar:
        bar.set_postfix_str(info.id)
        start = time.perf_counter()
        written = run_lesson(info, Path(args.out), args.quick, args.seed, args.device, args.model,
                             progress=len(chosen) == 1,  # one bar for 'all': the lessons' own stay quiet
                             image=getattr(args, "image", None), train=getattr(args, "train", False))
        tqdm.write(f"{info.id} {info.title}: {len(written)} files in {time.perf_counter() - start:.1f} s")
        for path in written:
            tqdm.write(f"    {path}")
    if len(chosen) > 1:
        print(f"all lessons done in {time.perf_counter() - t0:.0f} s")
    return 0
