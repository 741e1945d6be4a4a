"""What every check stands on: watched calls, verdicts in words, shrunk inputs, time limits.

A check is a plain function of the implementation under test, ``check(forward)``, that
returns when the property holds and raises ``CheckFailed`` when it does not. Three helpers
keep the checks themselves down to the math:

    call(fn, *args, like=...)   the learner's function, watched: an exception in it, a changed
                                input, a result of the wrong type, shape, dtype or device, or a
                                NaN is a CheckFailed that says so in one line
    expect_close(got, want)     a CheckFailed with both tensors when they differ
    for_all(strategy, body)     body on inputs drawn by hypothesis; on a failure, hypothesis
                                shrinks the input and the smallest failing one is raised
                                (``@check(cases=...)`` makes a check such a property)

Two kinds of stop are BaseExceptions, so that hypothesis neither catches nor shrinks them:
``NotImplementedYet`` (the starter's body is still there: nothing to shrink) and
``CheckTimeout`` (the time limit of a check ran out).
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import os
import signal
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

__all__ = [
    "Check", "Exercise", "check", "CheckFailed", "NotImplementedYet", "CheckTimeout", "CallRecord", "Mistake",
    "call", "expect", "expect_close", "for_all", "time_limit", "run_limited", "clone_args", "describe", "show",
    "last_call", "allclose",
]


class CheckFailed(AssertionError):
    """A property that does not hold, said in one line (``problem``), with what to show under it.

    inputs    the input it failed on, in words ("t = 1, im (1, 1, 1, 1)")
    expected  what was expected (a tensor or a string), got: what came back
    hint      what the likely mistake is, when the check knows it better than the catalogue of
              known mistakes would (key: the mistake's name, for the tests)
    fallback  the hint when no known mistake matches (else the check's own general hint)
    record    the learner's call whose output was wrong (CallRecord), so that the runner can
              replay known mistakes on the same arguments and name the one that matches
    """

    def __init__(self, problem: str, *, inputs: str | None = None, expected: Any = None, got: Any = None,
                 hint: str | None = None, key: str | None = None, record: "CallRecord | None" = None,
                 fallback: str | None = None) -> None:
        super().__init__(problem)
        self.problem, self.inputs, self.expected, self.got = problem, inputs, expected, got
        self.hint, self.key, self.record, self.fallback = hint, key, record, fallback


class NotImplementedYet(BaseException):
    """The learner's function still raises NotImplementedError: the starter's body is still there."""


class CheckTimeout(BaseException):
    """A check ran past its time limit."""


@dataclass
class CallRecord:
    """One call of the learner's code: the function, its name, a copy of the arguments made before
    it ran, its result."""

    fn: Callable[..., Any]
    name: str
    args: tuple
    output: Any


@dataclass(frozen=True)
class Mistake:
    """A typical wrong version of an exercise's function, and what to tell a learner who wrote it.

    impl takes the arguments of the function it imitates (``function``); when a check fails
    and impl's result on the failing call equals the learner's, ``hint`` is the hint shown.
    """

    key: str
    function: str
    hint: str
    impl: Callable[..., Any]


@dataclass(frozen=True)
class Check:
    """One property of an exercise: ``says`` what holds when it passes (the line of the report),
    ``fn(**implementation)`` raises CheckFailed when it does not, ``hint`` is what to tell a
    learner when no known mistake matches. fn's parameter names are the exercise's names it uses."""

    says: str
    fn: Callable[..., None]
    hint: str
    names: tuple[str, ...] = ()  # the names fn takes, when its signature cannot say (fn(**implementation))

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.fn(*args, **kwargs)

    @property
    def name(self) -> str:
        return self.fn.__name__

    @property
    def uses(self) -> tuple[str, ...]:
        return self.names or tuple(inspect.signature(self.fn).parameters)


def check(fn: Callable[..., None] | None = None, *, cases: Callable[[], Any] | None = None,
          examples: int = 25) -> Any:
    """Decorator: a check function becomes a Check. The first paragraph of its docstring is what
    the report says of it (what holds when it passes); the second, after "Hint:", what to tell a
    learner when no known mistake matches.

    ``@check`` alone for a check that runs once. With ``cases`` (a function that returns a
    hypothesis strategy), ``@check(cases=..., examples=...)`` makes the check a property: its last
    parameter is one drawn case, and it runs on ``examples`` of them (``for_all``).
    """

    def make(fn: Callable[..., None]) -> Check:
        says, hint = (" ".join(part.split()) for part in inspect.getdoc(fn).split("\n\n"))
        hint = hint.removeprefix("Hint: ")
        if cases is None:
            return Check(says, fn, hint)
        *names, drawn = inspect.signature(fn).parameters

        def on_every_case(**implementation: Any) -> None:
            for_all(cases(), lambda case: fn(**implementation, **{drawn: case}), examples)

        on_every_case.__name__ = fn.__name__
        return Check(says, on_every_case, hint, names=tuple(names))

    return make if fn is None else make(fn)


@dataclass(frozen=True)
class Exercise:
    """One method to implement: its starter file, its checks, the mistakes it knows, minidiff's version.

    names      what the learner writes (functions or classes), in the starter's order
    starter    the pristine text of the starter file
    reference  name -> minidiff's implementation, in the exercise's signature
    """

    id: str
    title: str
    lesson: str
    file_name: str
    names: tuple[str, ...]
    starter: str
    checks: tuple[Check, ...]
    mistakes: tuple[Mistake, ...]
    reference: dict[str, Any] = field(default_factory=dict)

    @property
    def signatures(self) -> str:
        """'name(args)' of everything the learner writes, read from the starter."""
        tree = ast.parse(self.starter)
        sigs = {}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                sigs[node.name] = f"{node.name}({', '.join(a.arg for a in node.args.args)})"
            elif isinstance(node, ast.ClassDef):
                init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
                args = [a.arg for a in init.args.args[1:]] if init else []
                sigs[node.name] = f"{node.name}({', '.join(args)})"
        return ", ".join(sigs.get(n, n) for n in self.names)


_last = threading.local()


def last_call() -> CallRecord | None:
    """The record of the latest watched call on this thread (None before any)."""
    return getattr(_last, "record", None)


# ----------------------------------------------------------------------------------------
# Showing tensors and inputs in a line
# ----------------------------------------------------------------------------------------


def show(value: Any, limit: int = 6) -> str:
    """A value as a short string: small tensors in full, larger ones by shape, dtype and first entries."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().flatten().tolist()
        nums = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in flat[:limit])
        more = ", ..." if len(flat) > limit else ""
        shape = tuple(value.shape)
        return f"tensor of shape {shape}, {str(value.dtype).replace('torch.', '')}: [{nums}{more}]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value) if not isinstance(value, str) else value


def describe(**named: Any) -> str:
    """Inputs in words: numbers as they are, tensors by their shape (and their values when tiny)."""
    parts = []
    for name, value in named.items():
        if isinstance(value, torch.Tensor):
            flat = value.detach().flatten().tolist()
            shown = [round(v, 4) for v in flat] if value.is_floating_point() else flat
            parts.append(f"{name} of shape {tuple(value.shape)}" + (f" = {shown}" if len(flat) <= 4 else ""))
        elif isinstance(value, float):
            parts.append(f"{name} = {value:.4g}")
        else:
            parts.append(f"{name} = {value!r}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------
# Watched calls
# ----------------------------------------------------------------------------------------


def clone_args(args: tuple) -> tuple:
    """A copy of args that a call cannot change: tensors cloned, generators at the same state."""

    def copy(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.detach().clone()
        if isinstance(v, torch.Generator):
            g = torch.Generator(device=v.device)
            g.set_state(v.get_state())
            return g
        if isinstance(v, (list, tuple)):
            return type(v)(copy(u) for u in v)
        return v

    return tuple(copy(a) for a in args)


def _where(err: BaseException, fn: Callable) -> str:
    """' (line N of file.py: code)' for the deepest frame of err's traceback in fn's file, or ''."""
    code = getattr(fn, "__code__", None) or getattr(getattr(fn, "__init__", None), "__code__", None)
    home = getattr(code, "co_filename", None)
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == home]
    if not frames:
        return ""
    f = frames[-1]
    return f" (line {f.lineno} of {os.path.basename(f.filename)}: {(f.line or '').strip()})"


def call(fn: Callable, *args: Any, name: str | None = None, like: torch.Tensor | None = None,
         like_name: str = "the input", scalar: bool = False, inputs: str | None = None) -> Any:
    """fn(*args), the learner's code, watched.

    A CheckFailed (one line each) when fn raises, changes a tensor it was given, or returns
    something other than a tensor shaped, typed and placed like ``like`` (or a 0-d tensor,
    with scalar=True) and free of NaN and inf. NotImplementedError is NotImplementedYet.
    The call is recorded (``last_call``) for the runner's diagnosis.
    """
    name = name or getattr(fn, "__name__", "your function")
    before = clone_args(args)
    try:
        out = fn(*args)
    except (CheckFailed, NotImplementedYet, CheckTimeout):
        raise
    except NotImplementedError as err:
        raise NotImplementedYet(f"{name} is not implemented yet: replace its `raise NotImplementedError` "
                                "with your code") from err
    except Exception as err:  # the learner's bug, reported in a line, never as the checker's traceback
        raise CheckFailed(f"{name} raised {type(err).__name__}: {err}{_where(err, fn)}", inputs=inputs,
                          key="raised") from err
    _last.record = CallRecord(fn, name, before, out)  # before is already a private copy
    for k, (a, b) in enumerate(zip(args, before)):
        if isinstance(a, torch.Tensor) and not _same(a, b):
            raise CheckFailed(f"{name} changed its argument {_param_name(fn, k)} in place (an in-place op such as "
                              "+= or mul_ on an input); compute a new tensor instead", inputs=inputs, key="mutated",
                              hint="Write x = x + y rather than x += y, and call no method ending in _ (mul_, "
                                   "clamp_) on an argument: the caller still needs its tensors as they were.")
    if like is not None or scalar:
        _check_output(name, out, like, like_name, scalar, inputs)
    return out


def _param_name(fn: Callable, k: int) -> str:
    """The name of fn's k-th parameter ("im"), or "number k + 1" when it cannot be read."""
    try:
        names = list(inspect.signature(fn).parameters)
        return f"`{names[k]}`" if k < len(names) else f"number {k + 1}"
    except (TypeError, ValueError):
        return f"number {k + 1}"


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """a == b entry for entry, NaN equal to NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.detach(), b.detach()
    return bool(((a == b) | (a.isnan() & b.isnan()) if a.is_floating_point() else (a == b)).all())


def _check_output(name: str, out: Any, like: torch.Tensor | None, like_name: str, scalar: bool,
                  inputs: str | None) -> None:
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{name} returned a {type(out).__name__}, not a torch.Tensor"
                          + (" (did you forget the `return`?)" if out is None else ""), inputs=inputs, key="type",
                          hint="Return the result as a torch.Tensor.")
    if scalar and out.ndim != 0:
        raise CheckFailed(f"{name} returned shape {tuple(out.shape)}; a loss is one number, a 0-d tensor "
                          "(take the mean)", inputs=inputs, key="shape")
    if like is not None and out.shape != like.shape:
        raise CheckFailed(f"{name} returned shape {tuple(out.shape)}, but {like_name} has shape "
                          f"{tuple(like.shape)} and the result must have it too", inputs=inputs, key="shape")
    if like is not None and out.dtype != like.dtype:
        raise CheckFailed(f"{name} returned dtype {out.dtype} for {like_name} of dtype {like.dtype}; keep the "
                          "input's dtype (no .float() or new tensors of another dtype)", inputs=inputs, key="dtype",
                          hint="Make new tensors like the inputs (torch.zeros_like(x), torch.randn(shape, "
                               "dtype=x.dtype, generator=...)) and leave out .float() and .double().")
    if like is not None and out.device != like.device:
        raise CheckFailed(f"{name} returned a tensor on {out.device} for {like_name} on {like.device}; make new "
                          "tensors on the input's device", inputs=inputs, key="device",
                          hint="Make new tensors with device=x.device (or torch.zeros_like(x)).")
    if out.is_floating_point() and not bool(torch.isfinite(out.detach()).all()):
        bad = int((~torch.isfinite(out.detach())).sum())
        raise CheckFailed(f"{name} returned NaN or inf ({bad} of {out.numel()} entries): a division by zero, "
                          "or the square root of a negative number?", inputs=inputs, key="nan", record=last_call(),
                          fallback="Look for a division by something that can be 0 (1 - ab_t at t = 0 is tiny, not "
                               "0; a t of -1 means ab = 1) and a square root of something that can be negative.")


# ----------------------------------------------------------------------------------------
# Verdicts
# ----------------------------------------------------------------------------------------


def expect(ok: bool, problem: str, **details: Any) -> None:
    """CheckFailed(problem, **details) unless ok."""
    if not ok:
        raise CheckFailed(problem, **details)


def expect_close(got: torch.Tensor, want: torch.Tensor, what: str, *, inputs: str | None = None,
                 atol: float = 1e-5, rtol: float = 1e-5, hint: str | None = None, key: str | None = None) -> None:
    """CheckFailed naming ``what`` and the largest difference when got and want differ.

    The failure carries the latest watched call, whose output ``got`` usually is, so that the
    runner can tell which known mistake gives the same numbers.
    """
    got_w, want_w = got.detach().to(torch.float64), want.detach().to(torch.float64)
    if got_w.shape == want_w.shape and torch.allclose(got_w, want_w, atol=atol, rtol=rtol):
        return
    if got_w.shape != want_w.shape:
        problem = f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    else:
        err = float((got_w - want_w).abs().max())
        problem = f"{what}: off by up to {err:.3g}"
    raise CheckFailed(problem, inputs=inputs, expected=want, got=got, hint=hint, key=key, record=last_call())


# ----------------------------------------------------------------------------------------
# Properties over many inputs, shrunk by hypothesis
# ----------------------------------------------------------------------------------------


def for_all(strategy: Any, body: Callable[[Any], None], examples: int = 25) -> None:
    """body(case) for ``examples`` cases drawn from a hypothesis strategy; raises the failure of the
    smallest failing case that hypothesis finds (derandomized: the same cases on every run)."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True, print_blob=False,
              report_multiple_bugs=False, verbosity=Verbosity.quiet, suppress_health_check=list(HealthCheck),
              phases=(Phase.explicit, Phase.generate, Phase.shrink))
    @given(strategy)
    def prop(case: Any) -> None:
        body(case)

    prop()


# ----------------------------------------------------------------------------------------
# Time limits
# ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise CheckTimeout in the block after ``seconds`` (an interval timer: the main thread of a
    Unix process only; elsewhere the block runs without a limit, see ``run_limited``)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise CheckTimeout(f"still running after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_limited(fn: Callable[[], Any], seconds: float | None) -> Any:
    """fn() with a time limit: a timer signal on the main thread; on another thread, fn runs in a
    daemon thread that is abandoned (it cannot be stopped) when it overruns."""
    if not seconds or (threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")):
        with time_limit(seconds):
            return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller's thread below
            box["error"] = err

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise CheckTimeout(f"still running after {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def allclose(a: Any, b: Any, atol: float = 1e-6, rtol: float = 1e-5) -> bool:
    """a and b the same tensors up to rounding (tuples of tensors entry by entry); False for anything else."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(allclose(u, v, atol, rtol) for u, v in zip(a, b))
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return False
    a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
    return torch.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True)  # the same NaNs: the same mistake

