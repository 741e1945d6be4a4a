"""Learning by doing: one exercise per method of the course, a starter file and a checker.

The loop a learner follows (the command line calls the functions named on the right):

    minidiff exercises                       every exercise, its lesson, passed or not   list_exercises
    minidiff exercise A1.4 --out my/         my/a1_4_iterative_denoise.py: a starter     write_starter
    minidiff check my/a1_4_iterative_denoise.py   the checks, one line each            check_file
    minidiff check A1.4 --reference          the same checks on minidiff's own version   check_reference

A starter holds the signature, the equation in the docstring and a body that raises
NotImplementedError("not implemented yet"). The checks are minidiff's own property tests,
exact-denoiser tests (``minidiff.analytic``) and comparisons with minidiff's implementation,
written once as functions of the implementation under test: the test suite runs them on
minidiff's version (``minidiff.exercises.reference``), the checker on the learner's. They
need no network and no download and take seconds on a CPU. Inputs are drawn and shrunk by
hypothesis, so a failure shows the smallest input that fails, what was expected, what came
back and a hint for the likely mistake. Each exercise also lists the mistakes learners
typically make, as wrong implementations with the hint that explains them; when a check
fails, the runner replays them on the failing call and shows the hint of the one that gives
the learner's numbers.

Where an exercise's starter, checks and mistakes are, by its id:

    A1.1                   a1_forward    the forward process
    A1.2, A1.3             a1_denoise    Gaussian blur, one-step denoising
    A1.4                   a1_loop       the strided DDPM step and the loop
    A1.5                   a1_sample     sampling from pure noise
    A1.6, A1.8, A1.9       a1_guidance   CFG, visual anagrams, hybrid images
    A1.7                   a1_sdedit     SDEdit
    A1.7.2, A1.7.2b        a1_inpaint    inpainting, RePaint's resampling
    B1.1                   b1_blocks     the UNet's operations and blocks
    B1.2, B1.2.1           b1_denoiser   noising digits, the denoiser's loss
    B2.1                   b2_condition  FCBlock and c1 * h + t1
    B2.2, B2.3             b2_flow       the flow-matching loss, Euler sampling
    B2.3.1                 b2_ddpm       DDPM for digits
    B2.4, B2.6             b2_class      class dropout, CFG sampling
    B3.1                   b3_reflow     reflow: the flow loss on a teacher's pairs

beside what they stand on: ``harness`` (watched calls, verdicts, ``@check``, hypothesis),
``fixtures`` (tiny data sets, schedules, strategies and the helpers several exercises share),
``starters`` (the starter file, ``exercise``), ``runner`` (the report) and ``reference``
(minidiff's own version of every exercise). Part A's checks run on exact
denoisers (``minidiff.analytic``) with IF's schedule (and the course's linear one where a
case draws it) and the course's strided timesteps, ending at 0 or, for a run that must end
on clean data, at -1. Part B's networks are either the learner's own blocks next to
minidiff's, compared with the same weights, or stand-ins whose answers are known: fixed
functions for the losses and exact denoisers for the samplers, so nothing trains.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minidiff.exercises.a1_denoise import A1_2, A1_3
from minidiff.exercises.a1_forward import A1_1
from minidiff.exercises.a1_guidance import A1_6, A1_8, A1_9
from minidiff.exercises.a1_inpaint import A1_7_2, A1_7_2B
from minidiff.exercises.a1_loop import A1_4
from minidiff.exercises.a1_sample import A1_5
from minidiff.exercises.a1_sdedit import A1_7
from minidiff.exercises.b1_blocks import B1_1
from minidiff.exercises.b1_denoiser import B1_2, B1_2_1
from minidiff.exercises.b2_class import B2_4, B2_6
from minidiff.exercises.b2_condition import B2_1
from minidiff.exercises.b2_ddpm import B2_3_1
from minidiff.exercises.b2_flow import B2_2, B2_3
from minidiff.exercises.b3_reflow import B3_1
from minidiff.exercises.harness import Check, CheckFailed, CheckTimeout, Exercise, Mistake, run_limited
from minidiff.exercises.runner import TIME_LIMIT, CheckResult, Report, run_checks

__all__ = [
    "EXERCISES", "Exercise", "Check", "CheckFailed", "Mistake", "CheckResult", "Report", "ExerciseStatus",
    "get_exercise", "write_starter", "load_file", "check_file", "check_reference", "check", "run_checks",
    "list_exercises", "format_exercises", "print_exercises", "print_starter", "print_check", "TIME_LIMIT",
    "RECORD_FILE",
]

EXERCISES: dict[str, Exercise] = {ex.id: ex for ex in (  # in the course's order
    A1_1, A1_2, A1_3, A1_4, A1_5, A1_6, A1_7, A1_7_2, A1_7_2B, A1_8, A1_9,
    B1_1, B1_2, B1_2_1, B2_1, B2_2, B2_3, B2_3_1, B2_4, B2_6, B3_1,
)}
RECORD_FILE = ".minidiff-checks.json"  # beside the learner's files: what the last check of each said


def get_exercise(ex_id: str) -> Exercise:
    """The exercise with this id ("A1.4", case as you like), else ValueError listing them all."""
    if isinstance(ex_id, str):
        for key, ex in EXERCISES.items():
            if key.lower() == ex_id.strip().lower():
                return ex
    raise ValueError(f"unknown exercise {ex_id!r}; the exercises are {', '.join(EXERCISES)} (minidiff exercises)")


# ----------------------------------------------------------------------------------------
# Starters
# ----------------------------------------------------------------------------------------


def write_starter(ex_id: str, out_dir: str | os.PathLike = ".") -> Path:
    """Write the exercise's starter file into out_dir (made if missing) and return its path.

    A file of that name that differs from the starter holds the learner's work: it is never
    overwritten (ValueError). An untouched starter is simply written again.
    """
    ex = get_exercise(ex_id)
    path = Path(out_dir) / ex.file_name
    if path.exists():
        if not path.is_file():
            raise ValueError(f"{path} exists and is not a file; choose another --out")
        if path.read_text(encoding="utf-8", errors="replace") != ex.starter:
            raise ValueError(f"{path} exists and holds your changes, so it was left as it is; check it with "
                             f"`minidiff check {path}`, or move it away to start again")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ex.starter, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------
# Checking a learner's file
# ----------------------------------------------------------------------------------------


def _exercise_of(text: str, path: Path) -> Exercise:
    """The exercise a file is for: its EXERCISE = "..." line, else its name (a1_4_... -> A1.4)."""
    try:
        for node in ast.parse(text).body:
            if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXERCISE" for t in node.targets)
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                return get_exercise(node.value.value)
    except SyntaxError:  # the file does not parse: read the line as text, the import will say the rest
        found = re.search(r"""^EXERCISE\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
        if found:
            return get_exercise(found.group(1))
    match = re.match(r"([ab]\d+(?:_\d+)*[a-z]?)(?:_|$)", path.stem.lower())
    if match:
        try:
            return get_exercise(match.group(1).replace("_", "."))
        except ValueError:  # a name like an id that is none: the error below says what to add
            pass
    raise ValueError(f"{path} does not say which exercise it is: add a line such as EXERCISE = \"A1.4\" "
                     f"(the starters of `minidiff exercise ID --out DIR` have one)")


def load_file(path: str | os.PathLike, time_limit: float | None = TIME_LIMIT) -> tuple[Exercise, dict[str, Any] | str]:
    """(exercise, {name: the learner's function or class}) for a learner's file, or (exercise,
    the reason in a line) when the file does not import or lacks a name the checks call.
    FileNotFoundError when there is no such file; ValueError when its exercise is unknown."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}; write a starter with `minidiff exercise ID --out DIR`")
    text = path.read_text(encoding="utf-8", errors="replace")
    ex = _exercise_of(text, path)
    name = f"minidiff_exercise_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # while it runs, as for any import (dataclasses look their module up there)
    try:
        run_limited(lambda: spec.loader.exec_module(module), time_limit)
    except CheckTimeout:
        return ex, f"importing {path.name} took more than {time_limit:g} s: move long work into a function"
    except SyntaxError as err:
        return ex, f"{path.name} does not parse: {err.msg} at line {err.lineno}"
    except Exception as err:  # the learner's module-level code
        return ex, f"{path.name} does not import: {type(err).__name__}: {err}"
    finally:
        sys.modules.pop(name, None)
    missing = [n for n in ex.names if not hasattr(module, n)]
    if missing:
        return ex, (f"{path.name} defines no {', '.join(missing)}; the checks of {ex.id} call "
                    f"{ex.signatures}")
    found = {n: getattr(module, n) for n in ex.names}
    wrong = _unbindable(ex, found)
    if wrong:
        return ex, f"{path.name}: {wrong}"
    return ex, found


def _unbindable(ex: Exercise, found: dict[str, Any]) -> str | None:
    """Why one of the learner's functions cannot take the starter's arguments, or None."""
    starter = {}
    for node in ast.parse(ex.starter).body:
        if isinstance(node, ast.FunctionDef):
            starter[node.name] = [a.arg for a in node.args.args]
    for name, params in starter.items():
        fn = found.get(name)
        if not callable(fn) or isinstance(fn, type):
            continue
        try:
            inspect.signature(fn).bind(*params)
        except TypeError:
            return f"{name}{inspect.signature(fn)} must take ({', '.join(params)}), as the checks call it"
        except ValueError:  # a builtin without a signature: let the checks try it
            continue
    return None


def check_file(path: str | os.PathLike, time_limit: float | None = TIME_LIMIT, record: bool = True) -> Report:
    """Run the checks of the file's exercise on the learner's functions in it; a Report.

    With record, the outcome is kept in RECORD_FILE beside the file, for ``list_exercises``.
    """
    ex, found = load_file(path, time_limit)
    if isinstance(found, str):
        report = Report(ex, str(path), error=found)
    else:
        report = run_checks(ex, found, str(path), time_limit)
    if record:
        _record(Path(path), report)
    return report


def check_reference(ex_id: str, time_limit: float | None = TIME_LIMIT) -> Report:
    """The exercise's checks on minidiff's own implementation (every one passes)."""
    ex = get_exercise(ex_id)
    return run_checks(ex, ex.reference, "minidiff's own implementation (minidiff.exercises.reference)", time_limit)


def check(target: str | os.PathLike, reference: bool = False, time_limit: float | None = TIME_LIMIT) -> Report:
    """What `minidiff check TARGET [--reference]` runs.

    target: a learner's file, or an exercise id. With reference, the checks run on minidiff's
    own version (target may then be either). An id without reference checks that exercise's
    starter file in the current folder, when there is one.
    """
    path = Path(target)
    if reference:
        ex_id = _exercise_of(path.read_text(encoding="utf-8", errors="replace"), path).id if path.is_file() else target
        return check_reference(str(ex_id), time_limit)
    if not path.is_file():
        ex = get_exercise(str(target))  # ValueError for a file name that is neither a file nor an id
        if not Path(ex.file_name).is_file():
            raise FileNotFoundError(f"no file {ex.file_name} here: give the path of your file, or "
                                    f"`minidiff check {ex.id} --reference` for minidiff's own version")
        path = Path(ex.file_name)
    return check_file(path, time_limit)


# ----------------------------------------------------------------------------------------
# The list, with each exercise's state in a folder
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExerciseStatus:
    """One row of `minidiff exercises`: the exercise, its file in the folder and where it stands."""

    exercise: Exercise
    path: Path
    status: str
    passed: bool


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_records(folder: Path) -> dict:
    """RECORD_FILE in folder: the last check of each file. None yet, or a damaged one, reads as empty
    (it only remembers outcomes, which the next check of each file writes again)."""
    try:
        records = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def _record(path: Path, report: Report) -> None:
    """Keep the report's outcome in the record file beside path (quietly skipped when it cannot be written)."""
    from minidiff.checkpoint import atomic_write

    records = _read_records(path.parent)
    try:
        records[path.name] = {"exercise": report.exercise.id, "sha256": _digest(path.read_text(encoding="utf-8")),
                              "passed": len(report.passed), "checks": len(report.exercise.checks), "ok": report.ok}
        text = json.dumps(records, indent=1, sort_keys=True) + "\n"
        atomic_write(path.parent / RECORD_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except (OSError, ValueError):  # unwritable folder or unreadable file: the check's report stands without it
        pass


def list_exercises(folder: str | os.PathLike = ".") -> list[ExerciseStatus]:
    """Every exercise, with the state of its starter file in folder: not started, untouched,
    passed, failing (k of n checks) or changed since its last check (as RECORD_FILE keeps it)."""
    folder = Path(folder)
    records = _read_records(folder)
    rows = []
    for ex in EXERCISES.values():
        path = folder / ex.file_name
        rec = records.get(ex.file_name, {})
        if not path.is_file():
            status, ok = "not started", False
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
            if text == ex.starter:
                status, ok = "starter, untouched", False
            elif rec.get("sha256") != _digest(text):
                status, ok = "changed since its last check", False
            elif rec.get("ok"):
                status, ok = "passed", True
            else:
                passed, total = rec.get("passed", 0), rec.get("checks", len(ex.checks))
                status, ok = f"failing: {passed} of {total} checks pass", False
        rows.append(ExerciseStatus(ex, path, status, ok))
    return rows


def _names(ex: Exercise) -> str:
    """What the learner writes, in a few words: the names, or the first and last of a long list."""
    names = ex.names
    return ", ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]} ({len(names)})"


def format_exercises(rows: list[ExerciseStatus]) -> str:
    """The table `minidiff exercises` prints: id, lesson, what to write, its file, its state, the idea."""
    table = [("id", "lesson", "write", "file", "status", "")]
    table += [(r.exercise.id, r.exercise.lesson, _names(r.exercise), r.exercise.file_name, r.status, r.exercise.title)
              for r in rows]
    widths = [max(len(row[k]) for row in table) for k in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5] for row in table]
    lines += ["", "minidiff exercise ID --out DIR writes a starter; minidiff check FILE checks it."]
    return "\n".join(line.rstrip() for line in lines)


# ----------------------------------------------------------------------------------------
# The three commands, as the command line runs them (each prints and returns the exit status)
# ----------------------------------------------------------------------------------------


def print_exercises(folder: str | os.PathLike = ".") -> int:
    """`minidiff exercises`: the table of every exercise and its state in folder."""
    print(format_exercises(list_exercises(folder)))
    return 0


def print_starter(ex_id: str, out_dir: str | os.PathLike = ".") -> int:
    """`minidiff exercise ID --out DIR`: write the starter and say what to do next."""
    path = write_starter(ex_id, out_dir)
    ex = get_exercise(ex_id)
    print(f"wrote {path}: fill in {', '.join(ex.names)}, then run `minidiff check {path}`")
    return 0


def print_check(target: str | os.PathLike, reference: bool = False, time_limit: float | None = TIME_LIMIT) -> int:
    """`minidiff check FILE` or `minidiff check ID --reference`: the report; 0 only when every check passed."""
    report = check(target, reference, time_limit)
    print(report.format())
    return report.exit_code
