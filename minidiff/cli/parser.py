"""The ``minidiff`` argument parser: one small function per subcommand, and the option types.

Nothing here imports torch, so that ``minidiff --help`` is instant: the limits the options
state are written out below (tests/test_refuse_sizes.py and tests/test_train.py keep them
equal to the library's), and each subcommand names its handler in ``minidiff.cli.commands``
or ``minidiff.cli.training``, which import the library only when they run.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable

from minidiff.cli import commands, training

# The limits of `minidiff sample-digits`, the same as minidiff.mnist_pipeline's (repeated here so that
# `minidiff --help` need not import torch; tests/test_refuse_sizes.py keeps the two equal).
MAX_STEPS, MAX_PER_CLASS = 10_000, 10_000
SEED_MAX = 2**63 - 1  # what torch.Generator.manual_seed takes


def _whole_number(text: str, low: int) -> int:
    try:
        return int(text)
    except ValueError:
        too_long = text.strip().lstrip("+-").isdigit()  # Python refuses ints of over 4300 digits
        raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got "
                                         f"{f'{len(text)} digits' if too_long else repr(text[:40])}") from None


def int_in(low: int, high: int | None = None, why: str = "") -> Callable[[str], int]:
    """argparse type factory: a whole number in [low, high] (no upper bound with high None).

    The error states the allowed range, so that a size typed with a few digits too many is
    one line at once, not a hang or an allocator's message after minutes.
    """

    def parse(text: str) -> int:
        value = _whole_number(text, low)
        allowed = f" (allowed: {low}..{high}{why})" if high is not None else ""
        shown = str(value) if len(str(value)) <= 24 else f"a number of {len(str(value))} digits"
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}{allowed}, got {shown}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}{allowed}, got {shown}")
        return value

    return parse


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (steps, counts, sizes), so that 0 never means "the default"."""
    return int_in(1)(text)


def seed_int(text: str) -> int:
    """argparse type: a seed, a whole number in 0..2**63 - 1 (what torch.Generator.manual_seed takes)."""
    return int_in(0, SEED_MAX, " = 2**63 - 1, what torch.Generator.manual_seed takes")(text)


def nonempty(text: str) -> str:
    """argparse type: a path or name that is not empty ('' would silently mean "." or "the default")."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must not be empty (it would quietly mean the current folder or the "
                                         f"default), got {text!r}")
    return text


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


def epochs_number(text: str) -> int | float:
    """argparse type: "5" -> 5, "0.5" -> 0.5, so that config.json records --epochs 1 as 1, not 1.0.

    The range is minidiff.recipes' to check (MAX_EPOCHS), with the flag named.
    """
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of epochs such as 5 or 0.5, got {text!r:.40}") from None


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
    p.add_argument("--use", type=nonempty, default=None, metavar="FILE",
                   help="your exercise file (minidiff exercise ID): the lesson draws its figures with your "
                        "function in place of minidiff's (A1.1-A1.6, A1.7, A1.7.2, A1.8, A1.9, B1.2, B2.3, "
                        "B2.3.1, B2.6; B3 trains a student a few steps with your reflow_loss)")


def _add_lessons(sub) -> None:
    sub.add_parser("lessons", help="list the lessons").set_defaults(func=commands.lessons)
    q = sub.add_parser("lesson", help="run one lesson (or 'all') and write its figures")
    q.add_argument("id", help="lesson id from 'minidiff lessons', or 'all'")
    add_lesson_options(q)
    q.set_defaults(func=commands.lesson)

    q = sub.add_parser("notebook", help="write a lesson (or 'all') as a Jupyter notebook",
                       description="Write each lesson as a .ipynb that runs top to bottom in Jupyter and shows "
                                   "its figures inline (needs the extra: pip install \"minidiff[notebooks]\"). "
                                   "Its parameters cell holds the options minidiff lesson takes.")
    q.add_argument("id", help="lesson id from 'minidiff lessons', or 'all'")
    q.add_argument("--out", type=nonempty, required=True, help="folder for the .ipynb files (created if missing)")
    q.add_argument("--quick", action="store_true", help="QUICK = True in the notebooks: a few steps only")
    q.add_argument("--use", type=nonempty, default=None, metavar="FILE",
                   help="your exercise file: USE names it, and the lesson draws its figures with your function")
    q.add_argument("--force", action="store_true", help="replace notebooks already in --out (your edits there are lost)")
    q.set_defaults(func=commands.notebook)


def _add_sample_digits(sub) -> None:
    q = sub.add_parser("sample-digits", help="sample MNIST digits with a shipped class-conditional model",
                       description="Sample digits of every class with classifier-free guidance. Every setting "
                                   "left out is the model's own (its config.json, \"sampler\").")
    q.add_argument("--per-class", type=int_in(1, MAX_PER_CLASS), default=10,
                   help=f"digits per class, 1..{MAX_PER_CLASS} (default 10)")
    q.add_argument("--guidance", type=finite_float, default=None,
                   help="classifier-free guidance scale (default: the model's own; 5 for the course's models)")
    q.add_argument("--steps", type=int_in(1, MAX_STEPS), default=None,
                   help=f"sampler steps, 1..{MAX_STEPS} (at most T for a DDPM model; default: the model's own, "
                        "8 Heun steps for the course's flow model)")
    q.add_argument("--final-denoise", type=noise_level, default=None, metavar="S",
                   help="flow models: one last denoising step at noise level S in [0, 1), 0 for none "
                        "(default: the model's own)")
    q.add_argument("--seed", type=seed_int, default=0,
                   help="0..2**63-1; the same seed gives the same digits (default 0)")
    q.add_argument("--out", type=nonempty, required=True,
                   help="output .npz (images uint8 N x 28 x 28, labels int64)")
    q.add_argument("--png", type=nonempty, default=None,
                   help="also the digits as a picture, one row per class, at most 16 digits each "
                        "(default: --out with .png in place of .npz)")
    q.add_argument("--model", type=nonempty, default=None,
                   help="a shipped model name (flow-class-ema, flow-class-1step: one step, flow-class, "
                        "ddpm-class) or a checkpoint directory (default: flow-class-ema)")
    q.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    q.add_argument("--compile", action="store_true",
                   help="compile the network first (torch.compile with frozen weights; needs a C++ compiler on "
                        "a CPU): the first batch waits about 25 s (less once the compiled graph is cached), then "
                        "sampling runs 1.0-1.4x faster; pays from a few thousand digits")
    q.set_defaults(func=commands.sample_digits)


# What each recipe trains with, for `minidiff train --help`: minidiff.recipes.RECIPES, written out
# so that --help need not import torch (tests/test_train.py keeps the two equal).
TRAIN_DEFAULTS = """\
each recipe's defaults (an option left out takes them):
  recipe          epochs  batch size  lr     width (--hidden)
  denoiser             5          64  1e-3   32
  pure-noise           5          64  1e-3   32
  ddpm-time           10         128  1e-3   32
  ddpm-class          10         128  1e-3   32
  flow-time           10          64  1e-2   32
  flow-class           8          64  1e-2   32
  flow-class-ema      18          64  1e-2   32  (and --ema 0.999)
  flow-class-1step    24          64  1e-3   32  (distilled from --teacher flow-class-ema on --pairs 16000)
  judge                4          64  1e-3   32
  judge2               4          64  1e-3   32  (a second judge: another architecture, seed 1)
the ranges: epochs in (0, 10000], batch size 1..70000, width 1..512, seed 0..2**63-1
"""


def _add_train(sub) -> None:
    q = sub.add_parser("train", help="train a Part B model (see 'minidiff train --help')",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=TRAIN_DEFAULTS,
                       description="Train a Part B model. On several processes: torchrun --nproc_per_node N\n"
                                   "-m minidiff train ... (--batch-size is then the global batch, split evenly;\n"
                                   "the result equals one process's up to float rounding). One run at a time\n"
                                   "may train into a folder; Ctrl-C stops it with the command that resumes it.")
    q.add_argument("recipe", help="denoiser | pure-noise | ddpm-time | ddpm-class | flow-time | flow-class | "
                                   "flow-class-ema (flow-class trained longer, shipping a weight average) | "
                                   "flow-class-1step (one-step digits, distilled from a teacher) | judge | judge2")
    q.add_argument("--out", required=True, help="the run's folder (checkpoints, loss.csv, snapshots/)")
    q.add_argument("--epochs", type=epochs_number, default=None,
                   help="epochs, > 0 and at most 10000; a fraction runs part of one (default: the recipe's, below)")
    q.add_argument("--batch-size", type=int, default=None,
                   help="images per step, at most the training set's size (default: the recipe's, below)")
    q.add_argument("--lr", type=float, default=None, help="Adam learning rate, > 0 (default: the recipe's, below)")
    q.add_argument("--hidden", type=int, default=None,
                   help="UNet width D (the judge's width), 1..512 (default: the recipe's, 32)")
    q.add_argument("--seed", type=int, default=None,
                   help="seed of every random draw: the weights, the epoch order, the noise, t and the class "
                        "drops; the same seed trains the same model (0..2**63-1, default: the recipe's, "
                        "0; judge2's 1)")
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
    q.add_argument("--teacher", type=nonempty, default=None,
                   help="flow-class-1step: the class-conditioned flow model that writes the pairs, a shipped name "
                        "or a checkpoint folder of the student's width (default flow-class-ema)")
    q.add_argument("--pairs", type=int, default=None,
                   help="flow-class-1step: how many (noise, digit) pairs the teacher writes, 1..1000000 "
                        "(default 16000; about 4 min on a 2-core CPU)")
    q.add_argument("--amp", choices=["bf16"], default=None,
                   help="compute forward and loss under bfloat16 autocast (default: float32)")
    q.add_argument("--save-every", type=int, default=None, help="checkpoint every N >= 1 steps (default 500)")
    q.add_argument("--snapshot-epochs", default=None,
                   help="comma-separated epochs (1..epochs) to keep a snapshot of, e.g. 1,5; '' for none")
    q.set_defaults(func=training.train)


def _add_weights(sub) -> None:
    q = sub.add_parser("fetch", help="download DeepFloyd IF weights (needs the licence accepted and a token)")
    q.add_argument("name", help="if-i-xl | if-i-l | if-i-m (stage I) | if-ii-l | if-ii-m (stage II) | t5")
    q.add_argument("--t5", action="store_true", help="also fetch the T5-XXL encoder (about 9 GB in fp16)")
    q.add_argument("--cache-dir", default=None)
    q.set_defaults(func=commands.fetch)

    q = sub.add_parser("embed", help="encode prompts with T5 and store them in the embedding cache")
    q.add_argument("prompts", nargs="*", help="the prompts to encode (at least one, unless --from is given)")
    q.add_argument("--from", dest="course_file", type=nonempty, default=None, metavar="FILE.pth",
                   help="also copy every embedding of the course's prompt_embeds_dict.pth into the cache "
                        "(no T5 needed for those prompts)")
    q.add_argument("--t5", default=None, help="T5 encoder directory or hub id (default: DeepFloyd's)")
    q.add_argument("--cache", default=None, help="cache file (safetensors)")
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=commands.embed)


def _add_exercises(sub) -> None:
    q = sub.add_parser("exercises", help="list the exercises: write a method yourself, minidiff checks it",
                       description="Every exercise: its id, what to write, its lesson, and whether your file "
                                   "in the folder passed its checks.")
    q.add_argument("--dir", default=".", help="the folder holding your exercise files (default: here)")
    q.set_defaults(func=commands.exercises)

    q = sub.add_parser("exercise", help="write the starter file of one exercise",
                       description="Write the starter: the signature, the equation and a body that raises "
                                   "'not implemented yet'. A file you have edited is never overwritten.")
    q.add_argument("id", help="exercise id from 'minidiff exercises', e.g. A1.4")
    q.add_argument("--out", type=nonempty, default=".", help="folder to write it into (default: here)")
    q.set_defaults(func=commands.exercise)

    q = sub.add_parser("check", help="run an exercise's checks on your file (or on minidiff's own function)",
                       description="Run the exercise's property tests on your function: one line per check, "
                                   "and for the first failure the smallest input, what was expected, what came "
                                   "back and a hint. Exit code 0 only when every check passes.")
    q.add_argument("target", help="your exercise file, or an exercise id with --reference")
    q.add_argument("--reference", action="store_true", help="run the checks on minidiff's own implementation")
    q.set_defaults(func=commands.check)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: each subcommand's options and the handler that runs it (``args.func``)."""
    p = argparse.ArgumentParser(prog="minidiff", description="Diffusion models built from scratch.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_lessons, _add_sample_digits, _add_train, _add_weights, _add_exercises):
        add(sub)
    return p
