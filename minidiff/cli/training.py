"""`minidiff train`: the options made into a recipe's config, the run, and the one line a Ctrl-C leaves.

The line names the checkpoint kept and the command that resumes it, written back from the
words the run was started with (``--resume`` in place of ``--overwrite``), and started the
same way: ``minidiff``, ``python -m minidiff`` or torchrun.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys


def _parse_epochs(text: str | None) -> list[int] | None:
    """--snapshot-epochs "1,5" -> [1, 5] ("" -> [], no snapshots); ValueError naming the flag for anything else."""
    if text is None:
        return None
    try:
        return [int(e) for e in text.split(",") if e.strip()]
    except ValueError:
        raise ValueError(f"--snapshot-epochs takes whole epochs separated by commas, such as 1,5 "
                         f"(or '' for none), got {text!r}") from None


def _train_words(args: argparse.Namespace) -> list[str]:
    """The words after `minidiff train` of this run's command: as typed, or (main() called with a list) from args."""
    if sys.argv[1:2] == ["train"]:
        return sys.argv[2:]
    words = [args.recipe]
    for key, value in vars(args).items():
        if key not in ("recipe", "command", "func") and value is not None and value is not False:
            words += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return words


def _launcher() -> str:
    """How this process was started: `minidiff`, `python -m minidiff`, or torchrun on one machine."""
    from minidiff import distributed

    module = os.path.basename(sys.argv[0]) == "__main__.py"
    procs = distributed.from_environment()
    if procs.parallel:
        per_node = os.environ.get("LOCAL_WORLD_SIZE", str(procs.world_size))
        if per_node != str(procs.world_size):  # several machines: each restarts with its own torchrun line
            return "torchrun ... -m minidiff"
        return f"torchrun --nproc_per_node {per_node} -m minidiff"
    return "python -m minidiff" if module else "minidiff"


def _is_flag(word: str, flag: str) -> bool:
    """Whether a command-line word is `flag` or an abbreviation of it (argparse takes unique prefixes)."""
    return word.startswith("--") and len(word) > 2 and flag.startswith(word)


def _with_flag(words: list[str], flag: str, instead_of: str) -> list[str]:
    """words with `flag` (added if missing) and without `instead_of`: --resume for --overwrite, or back."""
    kept = [w for w in words if not _is_flag(w, instead_of)]
    return kept if any(_is_flag(w, flag) for w in kept) else kept + [flag]


def _interrupted(args: argparse.Namespace) -> str:
    """The one line a Ctrl-C leaves: what is kept in --out and the command that goes on from it."""
    from minidiff.run_folder import saved_step

    words, kept = _train_words(args), saved_step(args.out)
    if kept is None:  # a partial loss.csv may be there: --overwrite starts over whatever is left
        return (f"interrupted before the first checkpoint, so there is nothing to resume; start again with: "
                f"{_launcher()} train {shlex.join(_with_flag(words, '--overwrite', '--resume'))}")
    step, epochs = kept
    return (f"interrupted; the checkpoint of step {step} (epoch {epochs:g}) in {args.out} is intact; "
            f"resume it with: {_launcher()} train {shlex.join(_with_flag(words, '--resume', '--overwrite'))}")


def train(args: argparse.Namespace) -> int:
    """`minidiff train <recipe> --out DIR [...]`: every setting is checked before the data is read.

    Ctrl-C stops the run with one line (exit code 130, as a shell reports SIGINT) that names the
    checkpoint kept and the command that resumes it, instead of a KeyboardInterrupt traceback.
    """
    try:  # torch takes seconds to import: a Ctrl-C then is one line too, like one during training
        from minidiff import distributed
        from minidiff.recipes import recipe_config
        from minidiff.train import train as train_model
        from minidiff.data import SPLIT
        from minidiff.distill import REFLOW, TEACHER_PAIRS
    except KeyboardInterrupt:
        print("minidiff train: interrupted while starting; nothing was written", file=sys.stderr)
        return 130
    width = {"num_hiddens": args.hidden} if args.recipe not in ("judge", "judge2") else {"width": args.hidden}
    cfg = recipe_config(args.recipe, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        save_every=args.save_every, snapshot_epochs=_parse_epochs(args.snapshot_epochs),
                        data=args.data, ema_decay=args.ema, time_power=args.time_power,
                        teacher=args.teacher, pairs=args.pairs,
                        train_data=TEACHER_PAIRS if args.recipe in REFLOW else SPLIT,
                        **width)
    command = "minidiff train " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["train"] else None
    pages: list = []  # the finished run's page, written while the run still owns --out (rank 0 only)
    try:
        train_model(cfg, args.out, resume=args.resume, overwrite=args.overwrite, device=args.device, command=command,
                    amp=args.amp, on_epoch=lambda out, now: _write_page(args, now),
                    on_end=lambda out: pages.append(_write_page(args)))
    except KeyboardInterrupt:
        if distributed.from_environment().is_main:  # one line per run, not one per process
            print(f"minidiff train: {_interrupted(args)}", file=sys.stderr)
        return 130
    print(f"saved {cfg['recipe']} model to {args.out}")
    if pages and pages[0] is not None:
        print(f"results page: {pages[0]}")
    return 0


def _page_command(args: argparse.Namespace) -> str:
    """The command of this run, as the page shows it: how it was started and its words."""
    return f"{_launcher()} train {shlex.join(_train_words(args))}"


def _write_page(args: argparse.Namespace, now: dict | None = None) -> Path | None:
    """--out/index.html: at an epoch's end (``now``: the config so far) or, now None, of the finished run;
    the page's path, or None when it could not be written.

    A page that cannot be written is said in one line, and the run goes on (or ends) as if it had
    been: the model matters more than its page.
    """
    from tqdm import tqdm

    from minidiff.results_page import write_run_page

    try:
        page = write_run_page(args.out, _page_command(args), cfg=now, device=args.device)
    except (OSError, ValueError, RuntimeError) as err:
        tqdm.write(f"minidiff train: could not write {args.out}/index.html ({err})"
                   + ("; training goes on" if now is not None else ""), file=sys.stderr)
        return None
    return page
