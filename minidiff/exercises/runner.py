"""Running an exercise's checks on an implementation, and saying what came of it.

    report = run_checks(exercise, {"forward": my_forward})
    print(report.format())          # one line per check; the first failure in full
    report.exit_code                # 0 only when every check passed

A check that fails is reported with the smallest input hypothesis found, what was expected,
what came back and a hint: the check's own when it knows the mistake, else the hint of the
known mistake (``Exercise.mistakes``) whose output on the failing call equals the learner's,
else the check's general hint. Whatever the learner's code does (raise, hang, return the
wrong thing) ends up as one line of the report, never as a traceback of the checker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from minidiff.exercises.harness import (
    Check, CheckFailed, CheckTimeout, Exercise, NotImplementedYet, allclose, clone_args, run_limited, show,
)

__all__ = ["CheckResult", "Report", "run_checks", "TIME_LIMIT"]

TIME_LIMIT = 20.0  # seconds per check; minidiff's own versions take well under one


@dataclass
class CheckResult:
    """The outcome of one check: passed, or the problem in a line and what to show under it.

    mistake: the key of the known mistake the failure was traced to (or of the problem the
    check itself named, such as "not-implemented", "raised", "shape"), None when unknown.
    """

    check: Check
    passed: bool
    seconds: float
    problem: str | None = None
    inputs: str | None = None
    expected: Any = None
    got: Any = None
    hint: str | None = None
    mistake: str | None = None

    def line(self) -> str:
        if self.passed:
            return f"  pass  {self.check.says}"
        return f"  FAIL  {self.check.says}\n        {self.problem}"


@dataclass
class Report:
    """What ``minidiff check`` prints: one result per check, or the error that stopped them all
    (a file that does not import, a function missing from it)."""

    exercise: Exercise
    source: str
    results: list[CheckResult] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> list[CheckResult]:
        return [r for r in self.results if r.passed]

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.results) and not self.failed

    @property
    def exit_code(self) -> int:
        """0 when every check passed, 1 otherwise (the command line's exit status)."""
        return 0 if self.ok else 1

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)

    def format(self) -> str:
        ex = self.exercise
        lines = [f"{ex.id} {ex.title}: {ex.signatures}", f"  checking {self.source}"]
        if self.error is not None:
            lines += [f"  FAIL  {self.error}", "0 checks run."]
            return "\n".join(lines)
        lines += [r.line() for r in self.results]
        first = next((r for r in self.failed if r.mistake != "not-implemented"), None)
        if first is not None:
            lines.append("")
            lines.append(f"First failure: {first.check.says}")
            if first.inputs:
                lines.append(f"  smallest failing input: {first.inputs}")
            if first.expected is not None:
                lines.append(f"  expected: {show(first.expected)}")
            if first.got is not None:
                lines.append(f"  got:      {show(first.got)}")
            lines.append(f"  hint: {first.hint or first.check.hint}")
        verdict = "every check passed." if self.ok else f"{len(self.passed)} of {len(self.results)} checks passed."
        lines.append(verdict)
        return "\n".join(lines)


def run_checks(exercise: Exercise, implementation: Mapping[str, Any], source: str = "your implementation",
               time_limit: float | None = TIME_LIMIT) -> Report:
    """Run every check of exercise on implementation (name -> function or class); a Report."""
    _needs_hypothesis()
    report = Report(exercise, source)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the checks' tensors are tiny: more threads only wait for each other
    try:
        for chk in exercise.checks:
            report.results.append(_run_one(exercise, chk, implementation, time_limit))
    finally:
        torch.set_num_threads(threads)
    return report


def _needs_hypothesis() -> None:
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        raise RuntimeError("the checker draws its inputs with hypothesis, which is not installed: "
                           "pip install hypothesis") from None


def _run_one(exercise: Exercise, chk: Check, implementation: Mapping[str, Any],
             time_limit: float | None) -> CheckResult:
    kwargs = {name: implementation[name] for name in chk.uses}
    start = time.perf_counter()
    rng = torch.random.get_rng_state()  # a check may run the learner's code that draws from the global RNG
    try:
        run_limited(lambda: chk.fn(**kwargs), time_limit)
    except NotImplementedYet as stop:
        return _failed(chk, start, str(stop) or "not implemented yet", mistake="not-implemented")
    except CheckTimeout:
        return _failed(chk, start, f"still running after {time_limit:g} s: an endless loop, or a loop over "
                       "every pixel? minidiff's own version takes well under a second", mistake="timeout")
    except CheckFailed as failure:
        return _from_failure(exercise, chk, start, failure, implementation)
    except Exception as err:  # hypothesis' verdicts, or the learner's code outside a watched call
        failure = _inner_failure(err)
        if failure is not None:
            return _from_failure(exercise, chk, start, failure, implementation)
        if type(err).__name__.startswith("Flaky"):
            return _failed(chk, start, "your code gave different results for the same input: does it draw random "
                           "numbers without the generator it was given, or keep state between calls?",
                           mistake="flaky")
        return _failed(chk, start, f"the check stopped on {type(err).__name__}: {err}", mistake="error")
    finally:
        torch.random.set_rng_state(rng)
    return CheckResult(chk, True, time.perf_counter() - start)


def _failed(chk: Check, start: float, problem: str, mistake: str | None = None) -> CheckResult:
    return CheckResult(chk, False, time.perf_counter() - start, problem=problem, mistake=mistake)


def _inner_failure(err: BaseException) -> CheckFailed | None:
    """The CheckFailed inside an exception group (hypothesis raises one for a flaky failure)."""
    for inner in getattr(err, "exceptions", ()):
        if isinstance(inner, CheckFailed):
            return inner
        found = _inner_failure(inner)
        if found is not None:
            return found
    return None


def _from_failure(exercise: Exercise, chk: Check, start: float, failure: CheckFailed,
                  implementation: Mapping[str, Any]) -> CheckResult:
    hint, key = _diagnose(exercise, failure, implementation)
    return CheckResult(chk, False, time.perf_counter() - start, problem=failure.problem, inputs=failure.inputs,
                       expected=failure.expected, got=failure.got, hint=hint or chk.hint, mistake=key)


def _diagnose(exercise: Exercise, failure: CheckFailed,
              implementation: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(hint, key) for a failure: the check's own when it gave one, else that of the first known
    mistake whose output on the failing call equals the learner's, else (the failure's fallback
    hint or None, the failure's key)."""
    if failure.hint:
        return failure.hint, failure.key
    record = failure.record
    if record is None:
        return failure.fallback, failure.key
    for mistake in exercise.mistakes:
        if implementation.get(mistake.function) is not record.fn:
            continue
        try:
            out = mistake.impl(*clone_args(record.args))
        except Exception:  # a mistake that cannot even run on these arguments is not the learner's
            continue
        if allclose(out, record.output):
            return mistake.hint, mistake.key
    return failure.fallback, failure.key
