"""The ``minidiff`` command line.

    minidiff lessons                          list the lessons
    minidiff lesson <id> --out DIR [--quick]  run one lesson (or ``all``) and write its figures
    minidiff notebook <id> --out DIR          the lesson (or ``all``) as a Jupyter notebook
    minidiff sample-digits --per-class N --guidance G --steps S --seed K --out FILE.npz [--png FILE.png]
    minidiff train <recipe> [...]             train a Part B model
    minidiff fetch if-i-xl|...|if-ii-l        download IF stage-1 or stage-2 weights (licence + token)
    minidiff embed "a prompt" ...             encode prompts with T5 and cache them
    minidiff exercises                        the exercises: write the method, minidiff checks it
    minidiff exercise <id> --out DIR          a starter file for one exercise
    minidiff check FILE | check <id> --reference   run an exercise's checks on your file (or on minidiff's)

Each subcommand is a thin shell around library functions, called with plain values: the
parser is ``minidiff.cli.parser`` (one small function per subcommand), the handlers are
``minidiff.cli.commands`` and ``minidiff.cli.training``, and a lesson script's own command
line is ``lesson_script`` below. The heavy imports happen only when a subcommand runs, so
``minidiff --help`` is instant. No library module imports this package.

However a command ends, it says so in at most one line on stderr (``report_errors``): exit 2
for a refused input, 130 for Ctrl-C (with what was kept), 141 without a word when the reader
of standard output has left (``| head -1``), 1 when standard output cannot be written.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from minidiff.cli.parser import (
    MAX_PER_CLASS,
    MAX_STEPS,
    SEED_MAX,
    TRAIN_DEFAULTS,
    add_lesson_options,
    build_parser,
    device_arg,
    epochs_number,
    finite_float,
    int_in,
    noise_level,
    nonempty,
    positive_int,
    seed_int,
)

__all__ = ["main", "build_parser", "report_errors", "add_lesson_options", "lesson_script", "MAX_STEPS",
           "MAX_PER_CLASS", "SEED_MAX", "TRAIN_DEFAULTS", "int_in", "positive_int", "seed_int", "nonempty",
           "finite_float", "noise_level", "device_arg", "epochs_number"]


class _WatchedStdout:
    """sys.stdout, keeping the error if a write to it failed: a full disk under standard output is then
    told apart from a full disk under a figure."""

    def __init__(self, stream) -> None:
        self.stream, self.error = stream, None

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _output_failed(command: str, err: OSError) -> int:
    """Standard output is closed (its reader left: ``| head -1``) or cannot be written (``> /dev/full``).

    Its file descriptor is pointed at /dev/null, so that the interpreter's last flush of what is
    still buffered does not fail a second time, with a traceback, at exit.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture): nothing to redirect
        pass
    if isinstance(err, BrokenPipeError):
        return 141  # quietly, with 128 + SIGPIPE: what `yes | head -1` leaves in bash's PIPESTATUS
    print(f"{command}: cannot write to standard output: {err.strerror or err}", file=sys.stderr)
    return 1


def report_errors(command: str, func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace,
                  interrupted: str = "") -> int:
    """Run a command; whatever stops it ends in at most one line on stderr and an exit code, never a traceback.

    - an error minidiff raises on purpose (ValueError, FileNotFoundError, RuntimeError): its message, exit 2;
    - Ctrl-C: "<command>: interrupted; <what was kept>", exit 130 (128 + SIGINT). The what-was-kept comes
      from the KeyboardInterrupt when the command raised one with a message, else from ``interrupted``;
    - standard output closed by its reader: nothing, exit 141; standard output that cannot be written
      (a full disk): "<command>: cannot write to standard output: <why>", exit 1.
    """
    stdout = sys.stdout = _WatchedStdout(sys.stdout)
    try:
        code = int(func(args) or 0)
        sys.stdout.flush()  # now, not at exit: a closed or full standard output is reported like the rest
        return code
    except KeyboardInterrupt as stop:
        kept = str(stop) or interrupted
        print(f"{command}: interrupted{'; ' + kept if kept else ''}", file=sys.stderr)
        return 130
    except OSError as err:
        if stdout.error is not None:
            return _output_failed(command, err)
        if not isinstance(err, FileNotFoundError):
            raise
        print(f"{command}: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as err:
        # Errors we raise on purpose carry their own advice; print it without a traceback.
        print(f"{command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        sys.stdout = stdout.stream


def _what_is_kept(args: argparse.Namespace) -> str:
    """What a command interrupted by Ctrl-C leaves behind, for its one line (`minidiff lesson` says its own)."""
    if args.command == "sample-digits":
        return "no file was written (sample-digits writes its files whole, at the end)"
    if args.command == "fetch":
        return "files already complete stay in the hub cache and the same command fetches the rest"
    if args.command == "embed":
        return "the embedding cache is written only once every prompt is encoded, so it was not changed"
    return ""


def lesson_script(run: Callable, doc: str | None = None, argv: list[str] | None = None) -> None:
    """``python lessons/<script>.py --out DIR [...]``: the same run, options and folder (DIR/<id>) as
    ``minidiff lesson <id> --out DIR [...]``.

    In a Jupyter kernel (the last cell of the lesson's notebook) there is no command line to read,
    only the kernel's own: the options come from the notebook's parameters cell instead
    (``minidiff.notebooks.run_in_kernel``), and an error is the kernel's usual traceback.
    """
    from pathlib import Path

    from minidiff.lessons_index import lesson_info, run_lesson
    from minidiff.notebooks import kernel, run_in_kernel

    shell = kernel() if argv is None else None
    if shell is not None:
        run_in_kernel(run, shell)
        return

    info = lesson_info(Path(sys.modules[run.__module__].__file__))
    p = argparse.ArgumentParser(prog=info.path.name, description=(doc or "").strip().splitlines()[0] if doc else None)
    add_lesson_options(p)
    args = p.parse_args(argv)

    def go(args: argparse.Namespace) -> int:
        import time

        from minidiff.results_page import record_lesson

        start = time.perf_counter()
        written = run_lesson(info, Path(args.out), run=run, quick=args.quick, seed=args.seed, device=args.device,
                             model=args.model, image=args.image, guidance=args.guidance, train=args.train, use=args.use)
        for path in written:
            print(path)
        page, note = record_lesson(info, args, written, time.perf_counter() - start)  # out/index.html, as `lesson` does
        print(*filter(None, [note, f"results page: {page}"]), sep="\n")
        return 0

    code = report_errors(f"lesson {info.id}", go, args,
                         interrupted=f"figures written so far are in {Path(args.out) / info.id}")
    if code:
        raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # e.g. while --device cuda imports torch to check the GPU
        print("minidiff: interrupted", file=sys.stderr)
        return 130
    if not getattr(args, "func", None):
        return report_errors("minidiff", lambda _: parser.print_help(), args)
    command = f"minidiff {args.command}" + (f" {args.id}" if args.command == "lesson" else "")
    return report_errors(command, args.func, args, interrupted=_what_is_kept(args))


if __name__ == "__main__":
    raise SystemExit(main())
