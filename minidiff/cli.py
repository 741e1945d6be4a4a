"""The ``minidiff`` command line.

    minidiff lessons                          list the lessons
    minidiff lesson <id> --out DIR [--quick]  run one lesson (or ``all``) and write its figures
    minidiff sample-digits --per-class N --guidance G --steps S --seed K --out FILE.npz
    minidiff train <recipe> [...]             train a Part B model
    minidiff fetch if-i-xl|if-i-l|if-i-m      download IF stage-1 weights (licence + token)
    minidiff embed "a prompt" ...             encode prompts with T5 and cache them

Each subcommand is a thin shell around a library function; the heavy imports happen only
when that subcommand runs, so ``minidiff --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


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
    q.add_argument("--out", default="out", help="folder for the figures (default: out)")
    q.add_argument("--quick", action="store_true", help="a few steps only, to check that it runs")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--device", default="cpu")
    q.add_argument("--model", choices=["auto", "if", "mnist"], default="auto",
                   help="Part A model: IF when its weights are here (auto), or the shipped MNIST model")
    q.add_argument("--image", default=None, help="your own image file, for the lessons that edit an image")
    q.add_argument("--train", action="store_true", help="Part B: retrain instead of using the shipped weights")
    q.set_defaults(func=_lesson)

    q = sub.add_parser("sample-digits", help="sample MNIST digits with the shipped class-conditional model")
    q.add_argument("--per-class", type=int, default=10, help="digits per class (default 10)")
    q.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale (default 5)")
    q.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's own)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", required=True, help="output .npz (images uint8 N x 28 x 28, labels int64)")
    q.add_argument("--model", default=None, help="a checkpoint directory (default: the shipped flow model)")
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=_sample_digits)

    q = sub.add_parser("train", help="train a Part B model (see 'minidiff train --help')")
    q.add_argument("recipe", help="denoiser | pure-noise | ddpm-time | ddpm-class | flow-time | flow-class | judge")
    q.add_argument("--out", required=True, help="checkpoint directory")
    q.add_argument("--epochs", type=float, default=None)
    q.add_argument("--batch-size", type=int, default=None)
    q.add_argument("--lr", type=float, default=None)
    q.add_argument("--hidden", type=int, default=None, help="UNet width D")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--data", default=None, help="MNIST folder (IDX files); default: $MINIDIFF_MNIST_DIR or download")
    q.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    q.add_argument("--device", default="cpu")
    q.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps (default 500)")
    q.add_argument("--snapshot-epochs", default=None, help="comma-separated epochs to keep a snapshot of, e.g. 1,5")
    q.set_defaults(func=_train)

    q = sub.add_parser("fetch", help="download DeepFloyd IF stage-1 weights (needs the licence accepted and a token)")
    q.add_argument("name", help="if-i-xl | if-i-l | if-i-m | t5")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # Errors we raise on purpose carry their own advice; print it without a traceback.
        print(f"minidiff {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
