"""The ``minidiff`` command line.

    minidiff lessons                          list the lessons
    minidiff lesson <id> --out DIR [--quick]  run one lesson (or ``all``) and write its figures
    minidiff sample-digits --per-class N --guidance G --steps S --seed K --out FILE.npz
    minidiff train <recipe> [...]             train a Part B model
    minidiff fetch if-i-xl|...|if-ii-l        download IF stage-1 or stage-2 weights (licence + token)
    minidiff embed "a prompt" ...             encode prompts with T5 and cache them

Each subcommand is a thin shell around a library function; the heavy imports happen only
when that subcommand runs, so ``minidiff --help`` is instant.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, Sequence


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (steps, counts, sizes), so that 0 never means "the default"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite float (a NaN or infinite guidance scale would give NaN images)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def noise_level(text: str) -> float:
    """argparse type: a noise level s in [0, 1) (a flow time 1 - s in (0, 1])."""
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1) (0: no final step), got {text!r}")
    return value


def device_arg(text: str) -> str:
    """argparse type: a device PyTorch has here ("cpu", "cuda", "cuda:1", "mps"), checked before any work."""
    if text == "cpu":
        return text  # the default: answer without importing torch, so --help stays instant
    from minidiff.checkpoint import check_device

    try:
        check_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def add_lesson_options(p: argparse.ArgumentParser) -> None:
    """The options of a lesson run, shared by `minidiff lesson` and `python lessons/<script>.py`."""
    p.add_argument("--out", default="out", help="folder for the figures; a lesson writes into OUT/<id>/ (default: out)")
    p.add_argument("--quick", action="store_true", help="a few steps only, to check that it runs")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--model", choices=["auto", "if", "mnist"], default="auto",
                   help="Part A lessons: IF when its weights are here (auto, the default), or the shipped MNIST model")
    p.add_argument("--image", default=None,
                   help="your own picture (PNG, JPEG, ...) for the lessons that start from one: "
                        "A1.1-A1.4 and A1.7-A1.7.3")
    p.add_argument("--guidance", type=finite_float, default=None,
                   help="classifier-free guidance scale for the lessons that guide (default: the model's own, "
                        "7 for IF, 5 for MNIST)")
    p.add_argument("--train", action="store_true",
                   help="Part B lessons: retrain the model (needs MNIST: $MINIDIFF_MNIST_DIR, or a download) "
                        "instead of using the shipped weights")


def _lessons(args: argparse.Namespace) -> int:
    from minidiff.lessons_index import cli_lessons

    return cli_lessons(args)


def _lesson(args: argparse.Namespace) -> int:
    from minidiff.lessons_index import cli_lesson

    return cli_lesson(args)


def _sample_digits(args: argparse.Namespace) -> int:
    from minidiff.mnist_pipeline import cli_sample_digits

    return cli_sample_digits(args)


def _train(args: argparse.Namespace) -> int:
    from minidiff.train import cli_train

    return cli_train(args)


def _fetch(args: argparse.Namespace) -> int:
    from minidiff.hub import cli_fetch

    return cli_fetch(args)


def _embed(args: argparse.Namespace) -> int:
    from minidiff.text import cli_embed

    return cli_embed(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minidiff", description="Diffusion models built from scratch.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    q = sub.add_parser("lessons", help="list the lessons")
    q.set_defaults(func=_lessons)

    q = sub.add_parser("lesson", help="run one lesson (or 'all') and write its figures")
    q.add_argument("id", help="lesson id from 'minidiff lessons', or 'all'")
    add_lesson_options(q)
    q.set_defaults(func=_lesson)

    q = sub.add_parser("sample-digits", help="sample MNIST digits with a shipped class-conditional model",
                       description="Sample digits of every class with classifier-free guidance. Every setting "
                                   "left out is the model's own (its config.json, \"sampler\").")
    q.add_argument("--per-class", type=positive_int, default=10, help="digits per class (default 10)")
    q.add_argument("--guidance", type=finite_float, default=None,
                   help="classifier-free guidance scale (default: the model's own; 5 for the course's models)")
    q.add_argument("--steps", type=positive_int, default=None,
                   help="sampler steps (default: the model's own; 8 Heun steps for the course's flow model)")
    q.add_argument("--final-denoise", type=noise_level, default=None, metavar="S",
                   help="flow models: one last denoising step at noise level S in [0, 1), 0 for none "
                        "(default: the model's own)")
    q.add_argument("--seed", type=int, default=0, help="the same seed gives the same digits (default 0)")
    q.add_argument("--out", required=True, help="output .npz (images uint8 N x 28 x 28, labels int64)")
    q.add_argument("--model", default=None,
                   help="a shipped model name (flow-class-ema, flow-class, ddpm-class) or a checkpoint "
                        "directory (default: flow-class-ema)")
    q.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    q.add_argument("--compile", action="store_true",
                   help="compile the network first (torch.compile with frozen weights; needs a C++ compiler on "
                        "a CPU): the first batch waits about 25 s (less once the compiled graph is cached), then "
                        "sampling runs 1.0-1.4x faster; pays from a few thousand digits")
    q.set_defaults(func=_sample_digits)

    q = sub.add_parser("train", help="train a Part B model (see 'minidiff train --help')",
                       description="Train a Part B model. On several processes: torchrun --nproc_per_node N "
                                   "-m minidiff train ... (--batch-size is then the global batch, split "
                                   "evenly; the result equals one process's up to float rounding).")
    q.add_argument("recipe", help="denoiser | pure-noise | ddpm-time | ddpm-class | flow-time | flow-class | "
                                   "flow-class-ema (flow-class trained longer, shipping a weight average) | judge")
    q.add_argument("--out", required=True, help="the run's folder (checkpoints, loss.csv, snapshots/)")
    q.add_argument("--epochs", type=float, default=None, help="epochs, > 0; a fraction runs part of one")
    q.add_argument("--batch-size", type=int, default=None, help="images per step, at most the training set's size")
    q.add_argument("--lr", type=float, default=None, help="Adam learning rate, > 0")
    q.add_argument("--hidden", type=int, default=None, help="UNet width D (the judge's width)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--data", default=None, help="MNIST folder (IDX files); default: $MINIDIFF_MNIST_DIR or download")
    runs = q.add_mutually_exclusive_group()
    runs.add_argument("--resume", action="store_true",
                      help="continue the run in --out (same settings and data)")
    runs.add_argument("--overwrite", action="store_true",
                      help="delete the run already in --out and start over (without it, an earlier run is an error)")
    q.add_argument("--device", type=device_arg, default="cpu",
                   help="cpu, cuda or cuda:N (default cpu); under torchrun each process takes cuda:LOCAL_RANK")
    q.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999) and save it as the model")
    q.add_argument("--time-power", type=float, default=None, metavar="P",
                   help="flow recipes: draw training times t = 1 - (1 - r)^P, r uniform; P > 1 trains more "
                        "near the data end (default 1: uniform, the course's)")
    q.add_argument("--amp", choices=["bf16"], default=None,
                   help="compute forward and loss under bfloat16 autocast (default: float32)")
    q.add_argument("--save-every", type=int, default=None, help="checkpoint every N >= 1 steps (default 500)")
    q.add_argument("--snapshot-epochs", default=None,
                   help="comma-separated epochs (1..epochs) to keep a snapshot of, e.g. 1,5; '' for none")
    q.set_defaults(func=_train)

    q = sub.add_parser("fetch", help="download DeepFloyd IF weights (needs the licence accepted and a token)")
    q.add_argument("name", help="if-i-xl | if-i-l | if-i-m (stage I) | if-ii-l | if-ii-m (stage II) | t5")
    q.add_argument("--t5", action="store_true", help="also fetch the T5-XXL encoder (about 9 GB in fp16)")
    q.add_argument("--cache-dir", default=None)
    q.set_defaults(func=_fetch)

    q = sub.add_parser("embed", help="encode prompts with T5 and store them in the embedding cache")
    q.add_argument("prompts", nargs="+")
    q.add_argument("--t5", default=None, help="T5 encoder directory or hub id (default: DeepFloyd's)")
    q.add_argument("--cache", default=None, help="cache file (safetensors)")
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=_embed)
    return p


def report_errors(command: str, func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command; an error minidiff raises on purpose becomes one line on stderr and exit code 2."""
    try:
        return int(func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # Errors we raise on purpose carry their own advice; print it without a traceback.
        print(f"{command}: error: {err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return report_errors(f"minidiff {args.command}", args.func, args)


if __name__ == "__main__":
    raise SystemExit(main())
