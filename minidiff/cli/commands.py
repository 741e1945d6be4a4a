"""What each ``minidiff`` subcommand does (but ``train``, in ``minidiff.cli.training``).

A handler reads the parsed options (``args``), calls the library with plain values and says
what it did on standard output. The library is imported inside each handler, when the
command runs, so that ``minidiff --help`` needs no torch; and it is looked up there on its
module (``lessons_index.run_lesson``, ``mnist_pipeline.sample_digits``), where the tests
replace the work with a tripwire.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def lessons(args: argparse.Namespace) -> int:
    """`minidiff lessons`: every lesson's id and title, in curriculum order."""
    from minidiff.lessons_index import list_lessons

    every = list_lessons()
    width = max(len(i.id) for i in every)
    for info in every:
        print(f"{info.id:<{width}}  {info.title}")
    print(f"\n{len(every)} lessons. Run one with: minidiff lesson <id> --out DIR  (or: minidiff lesson all)")
    return 0


def _how_long(args: argparse.Namespace) -> str:
    """What `lesson all` costs on the MNIST path, as measured on an otherwise idle 2-core CPU: 91 s for the 22
    lessons (the README's "Measured" table; 67 s before B3's fine_tune.png, 95 s for the first 21), and about 60 s
    with --quick (97 s of CPU time on 2 threads, before B3's few seconds). A busy machine takes longer (16 min
    with four other jobs on the 2 cores); the last line says what it took."""
    took = "about 1 minute on a 2-core CPU in quick mode" if args.quick else "1 to 2 minutes on a 2-core CPU"
    return f"{took} on the MNIST path; IF wants a GPU" + (
        "; --train adds the training, which each Part B lesson times" if args.train else "")


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def lesson(args: argparse.Namespace) -> int:
    """`minidiff lesson <id>|all --out DIR [...]`: one line per lesson, its files beneath it.

    Progress bars only on a terminal (tqdm's ``disable=None``): redirected to a log, the
    output is the lines alone. Ctrl-C ends it with one line saying where the figures are.
    """
    from tqdm import tqdm

    from minidiff import lessons_index as L
    from minidiff import results_page
    from minidiff.paths import output_dir

    every = L.list_lessons()
    chosen = every if args.id.lower() == "all" else [L.find_lesson(args.id)]
    given = dict(image=args.image, guidance=args.guidance, train=args.train, model=args.model, use=args.use)
    L.check_options(chosen, every, **given)  # every refusal before the first lesson starts
    output_dir(args.out)
    if len(chosen) > 1:
        print(f"Running all {len(chosen)} lessons into {args.out}/ ({_how_long(args)}).")
        for name, value in given.items():
            if value not in (None, False, "auto"):
                print(f"{L.FLAGS[name]} goes to {', '.join(i.id for i in chosen if name in i.options)}")
    said: set[str] = set()  # a note (e.g. "IF weights not found") is said once per run, not per lesson
    t0 = time.perf_counter()
    # one bar for 'all' (the lessons' own stay quiet), the lesson's own bars for one; none in a log
    bar = tqdm(chosen, desc="lessons", disable=True if len(chosen) == 1 else None, unit="lesson")
    done, info = 0, chosen[0]
    try:
        for info in bar:
            bar.set_postfix_str(info.id)
            start = time.perf_counter()
            # with 'all', each lesson gets only the options it reads
            mine = {k: v for k, v in given.items() if k in info.options}
            written = L.run_lesson(info, Path(args.out), quick=args.quick, seed=args.seed, device=args.device,
                                   progress=len(chosen) == 1 and sys.stderr.isatty(), said=said, **mine)
            took = time.perf_counter() - start
            tqdm.write(f"{info.id} {info.title}: {_files(len(written))} in {took:.1f} s")
            for path in written:
                tqdm.write(f"    {path}")
            done += 1
            # after each lesson, so that the page holds every lesson done even if a later one is stopped
            page, note = results_page.record_lesson(info, args, written, took)
            if note:
                tqdm.write(note)
    except KeyboardInterrupt:
        bar.close()
        if len(chosen) == 1:
            raise KeyboardInterrupt(f"figures written so far are in {Path(args.out) / info.id}") from None
        raise KeyboardInterrupt(f"{info.id} was running ({done} of {len(chosen)} lessons done); "
                                f"figures written so far are in {args.out}/") from None
    if len(chosen) > 1:
        print(f"all lessons done in {time.perf_counter() - t0:.0f} s")
    print(f"results page: {page}")
    return 0


def notebook(args: argparse.Namespace) -> int:
    """`minidiff notebook <id>|all --out DIR [--quick] [--use FILE] [--force]`: one .ipynb per lesson."""
    from minidiff import lessons_index as L
    from minidiff.notebooks import write_notebooks

    every = L.list_lessons()
    chosen = every if args.id.lower() == "all" else [L.find_lesson(args.id)]
    L.check_options(chosen, every, use=args.use)  # --use: one lesson, one that reads it
    for path in write_notebooks(chosen, args.out, quick=args.quick, use=args.use, force=args.force):
        print(path)
    print(f"Open {'them' if len(chosen) > 1 else 'it'} in Jupyter and run all cells: each runs its lesson and shows "
          "the figures under its last cell.")
    return 0


def sample_digits(args: argparse.Namespace) -> int:
    """`minidiff sample-digits --per-class N --guidance G --steps S --seed K --out FILE.npz [--png FILE.png]`.

    Every refusal comes before the sampling: the output files, the model, then its sampler settings.
    """
    import numpy as np

    from minidiff import mnist_pipeline as P
    from minidiff.checkpoint import atomic_write
    from minidiff.paths import output_file

    out = output_file(args.out, ".npz")
    png = output_file(args.png or out.with_suffix(".png"), ".png", "--png")
    name = args.model or P.DEFAULT_MODEL
    model = P.load_mnist_model(name, device=args.device, compile=args.compile)
    settings = P.sampler_settings(model, steps=args.steps, guidance=args.guidance, final_denoise=args.final_denoise)
    images, labels = P.sample_digits(model, args.per_class, seed=args.seed, device=args.device, settings=settings)
    atomic_write(out, lambda tmp: np.savez(tmp, images=images, labels=labels))
    shown = min(args.per_class, P.GRID_COLUMNS)
    title = f"{Path(name).name}, seed {args.seed}" + (
        f": the first {shown} of {args.per_class} per class" if shown < args.per_class else "")
    atomic_write(png, lambda tmp: P.save_digit_grid(tmp, images, labels, title=title))
    what = "them" if shown == args.per_class else f"the first {shown} of each class"
    print(f"wrote {images.shape[0]} digits to {out} and a grid of {what} to {png}")
    return 0


def fetch(args: argparse.Namespace) -> int:
    """`minidiff fetch NAME [--t5] [--cache-dir DIR]`."""
    from minidiff import hub

    name = args.name.lower()
    if name != "t5" and name not in hub.REPOS and name.count("/") != 1:
        raise ValueError(f"unknown model {args.name!r}; choose one of {', '.join(hub.REPOS)} or t5")
    if args.cache_dir is not None:
        from minidiff.paths import output_dir

        output_dir(args.cache_dir, what="--cache-dir")  # a file or a read-only folder, named before the download
    if not sys.stderr.isatty():  # progress bars on a terminal only, as minidiff's own (tqdm's disable=None)
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if name != "t5":
        repo = hub.REPOS.get(name, args.name)
        print(f"fetching the stage-{hub.STAGE_OF.get(name, 1)} UNet of {repo} (config + fp16 weights) ...")
        print(f"UNet ready: {hub.download_unet(repo, args.cache_dir)}")
    if name == "t5" or args.t5:
        print(f"fetching the T5-XXL encoder and tokenizer of {hub.T5_REPO} (fp16, about 9.5 GB) ...")
        print(f"T5 ready: {hub.download_t5(hub.T5_REPO, args.cache_dir)}")
    return 0


def embed(args: argparse.Namespace) -> int:
    """`minidiff embed PROMPT... [--from FILE.pth] [--t5 DIR_OR_ID] [--cache FILE] [--device DEV]`.

    ``prompt_embeddings`` of the prompts, saying which were new and which already cached; then,
    with --from, every embedding of the course's prompt_embeds_dict.pth copied into the cache.
    """
    from minidiff import text

    if not args.prompts and args.course_file is None:
        raise ValueError("give at least one prompt to encode, or --from the course's prompt_embeds_dict.pth")
    cache = Path(args.cache) if args.cache else text.default_cache_path()
    if args.prompts:
        known = text.load_embedding_cache(cache)
        new = [p for p in dict.fromkeys(args.prompts) if p not in known]
        if new:
            print(f"encoding {len(new)} prompt(s) with T5 ({args.t5 or text.DEFAULT_T5}) ...")
        text.prompt_embeddings(args.prompts, cache=cache, t5=args.t5, device=args.device)
        for p in args.prompts:
            print(f"{'new   ' if p in new else 'cached'} {p!r}")
    if args.course_file is not None:
        copied = text.load_prompt_embeds_dict(args.course_file)
        text.save_embedding_cache(copied, cache)
        print(f"copied {len(copied)} prompt(s) from {args.course_file}")
    print(f"{len(text.load_embedding_cache(cache))} prompt(s) in {cache}")
    return 0


def exercises(args: argparse.Namespace) -> int:
    from minidiff.exercises import print_exercises

    return print_exercises(args.dir)


def exercise(args: argparse.Namespace) -> int:
    from minidiff.exercises import print_starter

    return print_starter(args.id, args.out)


def check(args: argparse.Namespace) -> int:
    from minidiff.exercises import print_check

    return print_check(args.target, reference=args.reference)
