"""One page of results: out/index.html for the lessons run into a folder, run/index.html for a training run.

    out/results.json     what each lesson run into out/ wrote: its id, title, idea, files, time, command
    out/index.html       the page made from it: a section per lesson, in curriculum order
    run/index.html       a training run: its loss curve, samples of each epoch snapshot, its config
    run/snapshots/epoch_NNN/samples.png, run/samples.png    those samples, drawn once per checkpoint

The lesson page is rendered from the manifest, which is merged, never replaced: lessons run
into the same folder later are added to it (a lesson run again replaces its own entry), so the
page grows with the folder; lesson runs into one folder at the same moment take turns at the
merge (a lock on out/.results.lock). A manifest that cannot be read is set aside as results.json.bad
and the lessons are found again from their folders on disk, without their times and commands.

The page is one self-contained folder opened from disk: images by relative paths, the CSS
inline, no script, every text that comes from a file or an option HTML-escaped. Each page is
written atomically, so a browser refreshing it never sees half of it.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import html
import json
import os
import shlex
import time
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import quote

from minidiff.checkpoint import atomic_write

__all__ = ["MANIFEST", "PAGE", "IMAGES", "lesson_idea", "lesson_command", "lesson_entry", "read_manifest",
           "record_lesson", "record_lessons", "lessons_page", "run_page", "write_run_page", "snapshot_figure"]

MANIFEST = "results.json"
PAGE = "index.html"
LOCK = ".results.lock"  # held while a lesson run merges its entry into the manifest
_FORMAT = "minidiff results 1"  # the manifest's "format": what this module writes and reads
IMAGES = (".png", ".gif", ".jpg", ".jpeg", ".svg", ".webp")  # shown on the page; other files are linked


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M")


def _write_text(path: Path, text: str) -> Path:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


# ----------------------------------------------------------------------------------------
# Lessons: the manifest
# ----------------------------------------------------------------------------------------


def _lesson_key(lesson_id: str) -> tuple:
    """Curriculum order: Part A before Part B, then the numbers ("A1.10" after "A1.9"); odd ids last."""
    try:
        return (0, lesson_id[0], tuple(int(n) for n in lesson_id[1:].split(".")))
    except (ValueError, IndexError):
        return (1, lesson_id, ())


def lesson_idea(path: Path) -> str:
    """The idea and equation of a lesson: its script's docstring after the title line, as plain text."""
    doc = ast.get_docstring(ast.parse(Path(path).read_text(encoding="utf-8"))) or ""
    return "\n".join(doc.splitlines()[1:]).strip("\n").replace("``", "")  # ``--train``: markup, not text


def lesson_command(info: Any, args: Any) -> str:
    """The `minidiff lesson` command that re-makes lesson ``info``'s files, shell-quoted.

    args: the parsed options of the run (out, quick, seed, device and the lesson flags). Of the
    flags (``lessons_index.FLAGS``) only those the lesson reads go in: `lesson all --image me.png`
    gives --image to some lessons only, and the others would refuse it.
    """
    from minidiff.lessons_index import FLAGS

    words = ["minidiff", "lesson", info.id, "--out", str(args.out)]
    words += ["--quick"] if args.quick else []
    words += ["--seed", str(args.seed)]
    words += ["--device", str(args.device)] if str(args.device) != "cpu" else []
    for name, flag in FLAGS.items():
        value = getattr(args, name, None)
        if name not in info.options or value in (None, False, "auto"):
            continue
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words)


def lesson_entry(info: Any, out: Path, written: Iterable[Path], seconds: float | None,
                 command: str | None) -> dict[str, Any]:
    """A lesson's entry in the manifest; files relative to the folder ``out`` (so the folder can move)."""
    out = Path(out).resolve()
    files = [Path(f).resolve().relative_to(out).as_posix() for f in written]
    return {"id": info.id, "title": info.title, "idea": lesson_idea(info.path), "files": files,
            "seconds": None if seconds is None else round(float(seconds), 1), "command": command, "when": _now()}


def record_lesson(info: Any, args: Any, written: Iterable[Path], seconds: float) -> tuple[Path, str | None]:
    """Add one lesson run (its parsed options ``args``) to args.out's manifest and page: (page, note or None)."""
    entry = lesson_entry(info, Path(args.out), written, seconds, lesson_command(info, args))
    return record_lessons(Path(args.out), [entry])


def _found_on_disk(out: Path) -> dict[str, dict[str, Any]]:
    """Entries for the lesson folders in ``out``, from their files alone (a run's train/ folder left out)."""
    from minidiff.lessons_index import list_lessons

    found = {}
    for info in list_lessons():
        folder = out / info.id
        if folder.is_dir():
            files = sorted(p for p in folder.rglob("*") if p.is_file() and "train" not in p.relative_to(folder).parts
                           and not p.name.startswith("."))
            found[info.id] = {**lesson_entry(info, out, files, None, None), "when": None}
    return found


def _valid_entry(entry: Any) -> bool:
    """An entry as ``lesson_entry`` writes it: its files inside the folder (the page links nothing outside it)."""
    if not (isinstance(entry, dict) and isinstance(entry.get("id"), str) and isinstance(entry.get("title"), str)
            and isinstance(entry.get("files"), list)):
        return False
    inside = all(isinstance(f, str) and f and not Path(f).is_absolute() and ".." not in Path(f).parts
                 for f in entry["files"])
    texts = all(isinstance(entry.get(k), (str, type(None))) for k in ("idea", "command", "when"))
    seconds = entry.get("seconds")
    return inside and texts and (seconds is None or type(seconds) in (int, float))


def read_manifest(out: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """({lesson id: entry}, a note or None) of out/results.json; {} when there is none yet.

    A manifest that is not JSON or not this format is renamed to results.json.bad (kept for
    its times and commands) and the lessons are rebuilt from their folders; the note says so.
    """
    path = Path(out) / MANIFEST
    if not path.exists():
        return {}, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(data, dict) and data.get("format") == _FORMAT and isinstance(data.get("lessons"), list)
                and all(_valid_entry(e) for e in data["lessons"])):
            raise ValueError(f"it is not a '{_FORMAT}' manifest")
        return {e["id"]: e for e in data["lessons"]}, None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        kept = path.with_name(MANIFEST + ".bad")
        os.replace(path, kept)
        found = _found_on_disk(Path(out))
        return found, (f"{path} could not be read ({err}); it is kept as {kept.name} and the page lists the "
                       f"{len(found)} lesson folder(s) found in {out}, without their times and commands")


def record_lessons(out: Path, entries: list[dict[str, Any]]) -> tuple[Path, str | None]:
    """Add lesson entries to out/results.json (replacing earlier runs of the same lessons) and rewrite out/index.html.

    Returns (the page, a note about a manifest that had to be rebuilt, or None).
    """
    out = Path(out)
    with _manifest_lock(out):  # read, merge, write: one lesson run at a time, or one of two entries is lost
        known, note = read_manifest(out)
        known.update({e["id"]: e for e in entries})
        ordered = sorted(known.values(), key=lambda e: _lesson_key(e["id"]))
        _write_text(out / MANIFEST, json.dumps({"format": _FORMAT, "lessons": ordered}, indent=1) + "\n")
        widths = {f: _width(out / f) for e in ordered for f in e["files"] if (out / f).is_file()}
        return _write_text(out / PAGE, lessons_page(ordered, out.resolve().name, widths)), note


@contextlib.contextmanager
def _manifest_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive flock on out/.results.lock for the block. Another process recording a lesson into the
    same folder waits here (for milliseconds) instead of merging into a manifest this one is about to replace."""
    with open(out / LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, also if the process dies
        yield


def _width(path: Path) -> int | None:
    """An image's width in pixels (read from its header), or None for a file that is no image."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size[0]
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------
# The HTML: pure functions of their arguments
# ----------------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       background: #f4f4f6; margin: 0; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 60px; }
header { border-bottom: 1px solid #d8d8de; margin-bottom: 18px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 0 0 4px; }
h2 .id { color: #5b5bd6; margin-right: 6px; }
h3 { font-size: 15px; margin: 18px 0 6px; color: #444; }
.meta { color: #666; font-size: 13px; margin: 0 0 12px; }
nav ul { columns: 2; column-gap: 32px; list-style: none; padding: 0; margin: 6px 0 18px; }
nav li { break-inside: avoid; padding-left: 4.2em; text-indent: -4.2em; }
nav .id { display: inline-block; width: 4.2em; text-indent: 0; color: #5b5bd6; font-weight: 600; }
nav a, section a { color: #3a3ab0; text-decoration: none; }
nav a:hover, section a:hover { text-decoration: underline; }
section { background: #fff; border: 1px solid #e0e0e6; border-radius: 10px; padding: 18px 22px; margin: 18px 0; }
pre { font: 13px/1.45 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; overflow-x: auto;
      white-space: pre; margin: 0; }
pre.idea { background: #f7f7fa; border-left: 3px solid #c9c9e8; padding: 10px 14px; }
pre.command { background: #1f2430; color: #e6e6e6; padding: 10px 14px; border-radius: 6px; user-select: all;
              white-space: pre-wrap; overflow-wrap: anywhere; }
figure { margin: 14px 0; }
figure img { display: block; max-width: 100%; max-height: 720px; width: auto; height: auto; border: 1px solid #ececf0; }
figcaption { color: #666; font-size: 13px; margin-top: 3px; }
table { border-collapse: collapse; font-size: 13px; }
td { border-bottom: 1px solid #eee; padding: 3px 14px 3px 0; vertical-align: top; }
td:first-child { color: #555; white-space: nowrap; }
.missing { color: #a33; font-size: 13px; }
"""


def _e(value: Any) -> str:
    """Text from a file or an option, safe inside HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def _src(relative: str) -> str:
    """A relative path as a URL in an attribute: %-encoded (a '#' or '?' in a name is not a URL part), then escaped."""
    return _e(quote(relative))


def _page(title: str, body: str, reload_s: int | None = None) -> str:
    """A whole HTML page; reload_s: the browser reloads it every reload_s seconds (a run that is training)."""
    reload = f'<meta http-equiv="refresh" content="{int(reload_s)}">\n' if reload_s else ""
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n{reload}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n")


_SMALL = 192  # an image narrower than this (a 28-pixel MNIST GIF) is shown a whole number of times larger


def _figure(src: str, caption: str, width: int | None = None) -> str:
    """An image (a link to it, its caption below), or a link for another file. width: its own, if known."""
    if not src.lower().endswith(IMAGES):
        return f'<p><a href="{_src(src)}">{_e(caption)}</a></p>\n'
    size = ""
    if width and width < _SMALL:  # whole-number scaling with sharp pixels: a digit stays a digit
        size = f' style="width: {width * -(-_SMALL // width)}px; image-rendering: pixelated"'
    return (f'<figure><a href="{_src(src)}"><img src="{_src(src)}" alt="{_e(caption)}"{size}></a>'
            f"<figcaption>{_e(caption)}</figcaption></figure>\n")


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return "time not recorded"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _lesson_section(entry: dict[str, Any], widths: dict[str, int | None] | None) -> str:
    lesson_id, files = entry["id"], entry["files"]
    when = f", run {entry['when']}" if entry.get("when") else ""
    parts = [f'<section id="lesson-{_e(lesson_id)}">\n',
             f'<h2><span class="id">{_e(lesson_id)}</span>{_e(entry["title"])}</h2>\n',
             f'<p class="meta">{len(files)} file{"s" if len(files) != 1 else ""} in '
             f"{_seconds(entry.get('seconds'))}{when}</p>\n"]
    if entry.get("idea"):
        parts.append(f'<pre class="idea">{_e(entry["idea"])}</pre>\n')
    for f in files:
        if widths is not None and f not in widths:
            parts.append(f'<p class="missing">{_e(f)}: the file is no longer in this folder</p>\n')
        else:
            parts.append(_figure(f, f.split("/", 1)[-1], None if widths is None else widths[f]))
    parts.append("<h3>Re-make these files</h3>\n")
    if entry.get("command"):
        parts.append(f'<pre class="command">{_e(entry["command"])}</pre>\n')
    else:
        parts.append(f'<p class="meta">the command was not recorded; run <code>minidiff lesson {_e(lesson_id)} '
                     f"--out DIR</code> with the options it was run with</p>\n")
    parts.append("</section>\n")
    return "".join(parts)


def lessons_page(entries: list[dict[str, Any]], folder_name: str, widths: dict[str, int | None] | None = None) -> str:
    """The HTML of a lesson folder: a header, a table of contents, one section per entry in the given order.

    entries: the manifest's (``lesson_entry``); widths: {file: its width in pixels, or None} of the
    files on disk (paths relative to the folder), None to take every file as there. A listed file
    not in it is gone from the folder, and said so in a line instead of a broken image.
    """
    toc = "".join(f'<li><a href="#lesson-{_e(e["id"])}"><span class="id">{_e(e["id"])}</span>'
                  f'{_e(e["title"])}</a></li>\n' for e in entries)
    n = len(entries)
    header = (f"<header>\n<h1>minidiff lessons: {_e(folder_name)}</h1>\n"
              f'<p class="meta">{n} lesson{"s" if n != 1 else ""} run into this folder; page written {_now()}. '
              f"Each section shows the lesson's idea, the files it wrote and the command that re-makes them.</p>\n"
              f"<nav><ul>\n{toc}</ul></nav>\n</header>\n")
    return _page(f"minidiff lessons: {folder_name}", header + "".join(_lesson_section(e, widths) for e in entries))


def _config_table(cfg: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v if isinstance(v, str) else json.dumps(v))}</td></tr>\n"
                   for k, v in cfg.items() if k != "command")
    return f"<table>\n{rows}</table>\n"


def run_page(cfg: dict[str, Any], folder_name: str, snapshots: list[tuple[str, str, str]], status: str,
             command: str | None, loss: str | None = "loss.png", reload_s: int | None = None) -> str:
    """The HTML of a training run: status, command, loss curve, a figure per snapshot, the config.

    snapshots: (heading, figure path relative to the run, caption) in epoch order; reload_s: while
    the run trains, how often the browser reloads the page.
    """
    recipe = cfg.get("recipe", "a model")
    parts = [f"<header>\n<h1>minidiff training run: {_e(recipe)}</h1>\n",
             f'<p class="meta">{_e(folder_name)}: {_e(status)}. Page written {_now()}.</p>\n</header>\n']
    parts.append('<section id="command">\n<h2>Command</h2>\n')
    parts.append(f'<pre class="command">{_e(command)}</pre>\n' if command else
                 '<p class="meta">not recorded (the run was started from Python)</p>\n')
    parts.append('</section>\n<section id="loss">\n<h2>Training loss</h2>\n')
    parts.append(_figure(loss, "loss.png: loss against epochs") if loss else
                 '<p class="meta">no loss curve yet: it is drawn from the first checkpoint on '
                 "(every save_every steps)</p>\n")
    parts.append('</section>\n<section id="snapshots">\n<h2>Snapshots</h2>\n')
    if snapshots:
        parts.append('<p class="meta">Each drawn from the same noise, so that a column follows one starting point '
                     "as training goes on.</p>\n")
    elif cfg.get("kind") in _DRAWN:
        parts.append('<p class="meta">no epoch snapshots yet (--snapshot-epochs chooses them)</p>\n')
    else:
        parts.append(f'<p class="meta">a {_e(cfg.get("kind"))} model draws no samples</p>\n')
    for heading, src, caption in snapshots:
        parts.append(f"<h3>{_e(heading)}</h3>\n" + _figure(src, caption))
    parts.append(f'</section>\n<section id="config">\n<h2>Config</h2>\n{_config_table(cfg)}</section>\n')
    return _page(f"minidiff training run: {recipe} ({folder_name})", "".join(parts), reload_s)


# ----------------------------------------------------------------------------------------
# A training run: samples of each snapshot, and the page
# ----------------------------------------------------------------------------------------

SAMPLES = "samples.png"  # each snapshot's figure, in its folder (the final model's in the run's)
_DDPM_STEPS = 30  # strided DDPM steps for a snapshot's samples: what lesson B2.3.1 shows, a tenth of 300
_DRAWN = ("flow", "reflow", "ddpm", "denoiser", "pure-noise")  # the kinds of model a snapshot figure is drawn for


def snapshot_figure(folder: Path, path: Path, title: str, device: str = "cpu") -> Path:
    """Draw what the checkpoint in ``folder`` does into ``path``, titled "<title>: <how it was drawn>".

    From the same noise for every checkpoint (seed 0), so that a column follows one starting
    point as training goes on. A class model: one digit of each class 0..9, guided; a time
    model: ten digits; a denoiser: ten noisy test digits and what it makes of them; a
    pure-noise model: its output for ten noises. (A judge is a classifier: nothing to draw.)
    """
    import torch

    from minidiff.figures import grid_figure
    from minidiff.mnist_pipeline import (ddpm_timesteps, flow_time_grid, load_mnist_model, sample_digits,
                                         sampler_settings)
    from minidiff.samplers import flow_heun, iterative_denoise

    model = load_mnist_model(folder, device=device)
    noise = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
    flow = model.kind == "flow"
    if model.kind == "denoiser":
        from minidiff.data import sample_digits_real

        sigma = float(model.config["sigma"])
        z = (sample_digits_real()[0][::4] + sigma * noise.cpu()).to(device)  # one test digit of each class
        rows, labels, how = [list(z), list(model(z))], [f"noisy, sigma {sigma:g}", "denoised"], "one network call"
    elif model.kind == "pure-noise":
        rows, labels, how = [list(model(noise))], ["D(noise)"], "one network call on pure noise"
    elif model.conditional:
        settings = sampler_settings(model, steps=None if flow else _DDPM_STEPS)
        images, _ = sample_digits(model, per_class=1, seed=0, device=device, progress=False, settings=settings)
        rows, labels = [list(torch.from_numpy(images).float().div(255).unsqueeze(1))], ["digits 0-9"]
        how = (f"{settings.sampler.__name__}, {len(settings.timesteps) - 1} steps" if flow
               else f"{_DDPM_STEPS} strided DDPM steps") + f", guidance {settings.guidance:g}"
    elif flow:
        rows, labels, how = [list(flow_heun(model, noise, model.schedule, flow_time_grid(8), progress=False))], \
            ["samples"], "flow_heun, 8 steps"
    else:
        x = iterative_denoise(lambda x_t, t: model(x_t, t), noise, model.schedule,
                              ddpm_timesteps(model.config["T"], _DDPM_STEPS),
                              generator=torch.Generator().manual_seed(1), progress=False)
        rows, labels, how = [list(x)], ["samples"], f"{_DDPM_STEPS} strided DDPM steps"
    rows = [[img.detach().float().cpu() for img in row] for row in rows]
    return grid_figure(path, rows, labels, value_range=(0.0, 1.0), suptitle=f"{title}: {how}", cell=0.7)


def _stale(figure: Path, model: Path) -> bool:
    return not figure.is_file() or figure.stat().st_mtime < model.stat().st_mtime


def write_run_page(folder: Path, command: str | None = None, cfg: dict[str, Any] | None = None,
                   device: str = "cpu") -> Path:
    """Write run/index.html from what the run's folder holds; draw the snapshot figures not drawn yet.

    cfg None: the run is over, and its config.json says how far it went (its final model gets a
    figure; the loss curve is drawn already). While it trains, ``cfg`` is the config as of now
    (``RunFolder.model_config``: the last checkpoint's may be older) and the page shows the
    snapshots saved so far and the loss up to now.
    """
    from minidiff.run_folder import read_run_config, trained_how
    from minidiff.run_log import plot_loss

    folder, finished = Path(folder), cfg is None
    cfg = read_run_config(folder) if finished else cfg
    if not finished and (folder / "config.json").is_file():
        plot_loss(folder)  # the curve so far (it needs a checkpoint's config.json); the run draws the last one
    checkpoints = {int(s.name[6:]): s for s in (folder / "snapshots").glob("epoch_*")
                   if s.name[6:].isdigit() and (s / "model.safetensors").is_file()}  # as RunFolder names them
    if finished:
        checkpoints[round(cfg.get("epochs_done", cfg["epochs"]))] = folder  # the model the run ships
    snapshots = []
    for epoch, where in sorted(checkpoints.items()) if cfg.get("kind") in _DRAWN else ():
        name = f"epoch {epoch}, the final model" if where == folder else f"epoch {epoch} snapshot"
        if _stale(where / SAMPLES, where / "model.safetensors"):
            snapshot_figure(where, where / SAMPLES, f"{cfg['recipe']}, {name}", device=device)
        snapshots.append((name[0].upper() + name[1:], (where / SAMPLES).relative_to(folder).as_posix(),
                          (where / SAMPLES).relative_to(folder).as_posix()))
    done = cfg.get("epochs_done", 0)
    status = (f"finished: {trained_how(folder)}" if finished
              else f"training, {done:g} of {cfg['epochs']:g} epochs done (rewritten at each epoch's end, reloaded "
                   "by the browser every 30 s)")
    loss = "loss.png" if (folder / "loss.png").is_file() else None
    return _write_text(folder / PAGE, run_page(cfg, folder.resolve().name, snapshots, status,
                                               command or cfg.get("command"), loss, None if finished else 30))
