"""The page of results: out/index.html of the lessons run into a folder, run/index.html of a training run.

The HTML, its escaping, the merge of lessons run one after another and a damaged manifest are
checked everywhere. The pages are also opened in headless Chromium (tests/browser.py): every
image loaded, no console error. Without chromium those tests are skipped, unless
MINIDIFF_REQUIRE_BROWSER is set (as .ci/run does), where its absence is a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from minidiff import results_page as R
from minidiff import train as T
from minidiff.cli import build_parser, main
from minidiff.lessons_index import LessonInfo, find_lesson

from browser import find_chromium, open_page
from idx_files import write_idx

A14, B12, B26 = find_lesson("A1.4"), find_lesson("B1.2"), find_lesson("B2.6")


def _args(**given) -> argparse.Namespace:
    """The options of `minidiff lesson` as parsed (add_lesson_options' defaults), some given."""
    base = dict(out="out", quick=False, seed=0, device="cpu", model="auto", image=None, guidance=None, train=False,
                use=None)
    return argparse.Namespace(**{**base, **given})


def _fake_lesson(out: Path, info: LessonInfo, names: list[str], seconds: float = 1.0) -> dict:
    """A lesson entry as a run of ``info`` into ``out`` would make it, with tiny real PNG files."""
    from PIL import Image

    (out / info.id).mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((8, 12), 200, np.uint8)).save(out / info.id / name)
    command = R.lesson_command(info, _args(out=out))
    return R.lesson_entry(info, out, [out / info.id / n for n in names], seconds, command)


def _sections(page: str) -> list[str]:
    return re.findall(r'<section id="lesson-([^"]+)">', page)


# ----------------------------------------------------------------------------------------
# Everywhere: the HTML and the manifest
# ----------------------------------------------------------------------------------------


def test_the_command_gives_each_lesson_the_options_it_reads_shell_quoted():
    args = _args(out="my out", quick=True, seed=7, device="cuda:1", model="mnist", image="me & you.png",
                 guidance=3.0, use="mine.py")
    a14 = R.lesson_command(A14, args)  # A1.4 reads --image, --use and (Part A) --model, not --guidance
    assert a14 == ("minidiff lesson A1.4 --out 'my out' --quick --seed 7 --device cuda:1 --image 'me & you.png' "
                   "--model mnist --use mine.py")
    assert shlex.split(a14)[3:5] == ["--out", "my out"]
    # what the command line parses it into is the run it came from, and gives the same command back
    words = ["lesson", "A1.4", "--out", "my out", "--quick", "--seed", "7", "--model", "mnist", "--image", "a b.png"]
    parsed = build_parser().parse_args(words)
    again = build_parser().parse_args(shlex.split(R.lesson_command(A14, parsed))[1:])
    assert vars(again) == vars(parsed) and R.lesson_command(A14, again) == R.lesson_command(A14, parsed)
    assert R.lesson_command(B12, _args(out="out", image="me.png", train=True)) == \
        "minidiff lesson B1.2 --out out --seed 0"  # B1.2 reads none of them: 'lesson all' gave them to others
    assert R.lesson_command(B26, _args(train=True, guidance=2.5)) == \
        "minidiff lesson B2.6 --out out --seed 0 --guidance 2.5 --train"


def test_everything_from_files_and_options_is_escaped():
    entry = {"id": "B1.2", "title": '<script>alert("t")</script>', "idea": "x < y & z > w", "seconds": 2.0,
             "files": ['B1.2/a "b" <c>.png', "B1.2/50% #1?.gif"], "command": "minidiff lesson B1.2 --out '<o>'",
             "when": "now"}
    page = R.lessons_page([entry], "<folder>")
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt;" in page
    assert "x &lt; y &amp; z &gt; w" in page and "&lt;folder&gt;" in page and "--out &#x27;&lt;o&gt;&#x27;" in page
    # a file name is %-encoded in the URL (a '#' or '?' would end the path) and escaped around it
    assert 'src="B1.2/a%20%22b%22%20%3Cc%3E.png"' in page and 'src="B1.2/50%25%20%231%3F.gif"' in page
    run = R.run_page({"recipe": "flow<class>", "kind": "flow", "note": "a & b"}, "r", [], "training", "cmd '<x>'")
    assert "flow&lt;class&gt;" in run and "a &amp; b" in run and "<x>" not in run and "<script" not in run


def test_lessons_run_one_after_another_are_merged_in_curriculum_order(tmp_path):
    page, note = R.record_lessons(tmp_path, [_fake_lesson(tmp_path, B26, ["loss.png", "grid.png"], 12.5)])
    assert note is None and _sections(page.read_text()) == ["B2.6"]
    R.record_lessons(tmp_path, [_fake_lesson(tmp_path, A14, ["compare.png"])])
    R.record_lessons(tmp_path, [_fake_lesson(tmp_path, B12, ["noising.png"])])
    html = page.read_text()
    assert _sections(html) == ["A1.4", "B1.2", "B2.6"]  # the page grew, in the course's order
    assert 'src="B2.6/grid.png"' in html and "12.5 s" in html and "minidiff lesson B2.6 --out" in html
    # the fake figures are 12 pixels wide: shown 16 times larger, pixels kept sharp
    assert html.count('style="width: 192px; image-rendering: pixelated"') == 4
    assert "Gaussian noise" in html  # B1.2's idea: its script's docstring
    # running a lesson again replaces its own entry and no other
    R.record_lessons(tmp_path, [_fake_lesson(tmp_path, B26, ["grid.png"], 3.0)])
    lessons = json.loads((tmp_path / R.MANIFEST).read_text())["lessons"]
    assert [e["id"] for e in lessons] == ["A1.4", "B1.2", "B2.6"] and lessons[2]["files"] == ["B2.6/grid.png"]
    assert "12.5 s" not in page.read_text() and "3.0 s" in page.read_text()


def _record_at_the_barrier(out: Path, entry: dict, barrier) -> None:
    barrier.wait()
    R.record_lessons(out, [entry])


def test_lessons_recorded_into_one_folder_at_the_same_moment_all_stay_on_the_page(tmp_path):
    """Eight processes merge eight lessons into one new folder at once: the lock makes them take turns, so the
    manifest ends with all eight (without it, each reads the manifest before the others write and most are lost)."""
    import multiprocessing

    from minidiff.lessons_index import list_lessons

    infos = list_lessons()[:8]
    entries = [_fake_lesson(tmp_path, info, ["fig.png"]) for info in infos]
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(entries))
    workers = [context.Process(target=_record_at_the_barrier, args=(tmp_path, e, barrier)) for e in entries]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert all(w.exitcode == 0 for w in workers)
    lessons = json.loads((tmp_path / R.MANIFEST).read_text())["lessons"]
    assert [e["id"] for e in lessons] == [i.id for i in infos]
    assert _sections((tmp_path / R.PAGE).read_text()) == [i.id for i in infos]


@pytest.mark.parametrize("damage", [
    "{not json", '{"format": "something else", "lessons": []}',
    '{"format": "minidiff results 1", "lessons": [{"id": 3}]}',
    '{"format": "minidiff results 1", "lessons": [{"id": "A1.1", "title": "t", "files": ["../../secret.png"]}]}',
], ids=["not-json", "other-format", "bad-entry", "file-outside"])
def test_a_damaged_manifest_is_kept_aside_and_the_lessons_found_again_on_disk(tmp_path, damage):
    R.record_lessons(tmp_path, [_fake_lesson(tmp_path, A14, ["compare.png"]),
                                _fake_lesson(tmp_path, B12, ["noising.png"])])
    (tmp_path / R.MANIFEST).write_text(damage)
    page, note = R.record_lessons(tmp_path, [_fake_lesson(tmp_path, B26, ["grid.png"])])
    assert note and "could not be read" in note and "results.json.bad" in note
    assert (tmp_path / "results.json.bad").read_text() == damage  # nothing the user had is deleted
    html = page.read_text()
    assert _sections(html) == ["A1.4", "B1.2", "B2.6"]  # no lesson lost
    assert 'src="A1.4/compare.png"' in html and "time not recorded" in html and "command was not recorded" in html


def test_a_file_gone_from_the_folder_is_said_not_shown_as_a_broken_image(tmp_path):
    entry = _fake_lesson(tmp_path, B12, ["noising.png", "more.png"])
    (tmp_path / "B1.2" / "more.png").unlink()
    html = R.record_lessons(tmp_path, [entry])[0].read_text()
    assert 'src="B1.2/noising.png"' in html and 'src="B1.2/more.png"' not in html
    assert "B1.2/more.png: the file is no longer in this folder" in html


# ----------------------------------------------------------------------------------------
# A training run
# ----------------------------------------------------------------------------------------


def _fake_digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centres = torch.rand(n, 2, generator=g) * 14 + 7
    x = torch.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / 18)
    return x.unsqueeze(1), torch.arange(n) % 10


def test_a_run_refreshes_its_page_at_each_epoch_end(tmp_path):
    cfg = T.recipe_config("flow-time", num_hiddens=4, epochs=2, batch_size=16, save_every=1, snapshot_epochs=[1])
    seen = []

    def on_epoch(out, now):
        seen.append(now["epochs_done"])
        R.write_run_page(out, "minidiff train flow-time", cfg=now)

    T.train(cfg, tmp_path, data=_fake_digits(16), progress=False, on_epoch=on_epoch)
    assert seen == [1.0]  # the end of epoch 1; the end of the run is the caller's to write
    html = (tmp_path / R.PAGE).read_text()
    assert "training, 1 of 2 epochs done" in html and 'src="loss.png"' in html
    assert '<meta http-equiv="refresh" content="30">' in html  # the browser reloads it while the run trains
    assert 'src="snapshots/epoch_001/samples.png"' in html and (tmp_path / "snapshots/epoch_001/samples.png").is_file()


def _fake_mnist(folder: Path) -> Path:
    """An MNIST folder of 40 + 40 fake digits: 80 to train on, as t10k has too few to hold any out."""
    x, y = _fake_digits(40)
    for prefix in ("train5k", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", (x[:, 0] * 255).round().to(torch.uint8).numpy())
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y.numpy().astype(np.uint8))
    return folder


_TINY_RUN = ["--epochs", "2", "--batch-size", "64", "--hidden", "4", "--snapshot-epochs", "1"]  # 1 step an epoch


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """`minidiff train flow-class` for 2 epochs of 1 step on fake digits, a snapshot after epoch 1."""
    folder = _fake_mnist(tmp_path_factory.mktemp("train"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIDIFF_MNIST_DIR", str(folder))
        assert main(["train", "flow-class", "--out", str(folder / "run <1>"), *_TINY_RUN]) == 0
    return folder / "run <1>"


def test_a_page_that_cannot_be_written_is_said_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setenv("MINIDIFF_MNIST_DIR", str(_fake_mnist(tmp_path)))
    monkeypatch.setattr(R, "write_run_page", full_disk)
    assert main(["train", "flow-class", "--out", str(tmp_path / "run"), *_TINY_RUN]) == 0
    said = capsys.readouterr()
    assert said.err.count("could not write") == 2 and "training goes on" in said.err  # epoch 1, and the end
    assert "saved flow-class model" in said.out and (tmp_path / "run" / "model.safetensors").is_file()


def test_the_run_page_shows_the_loss_the_snapshots_and_the_config(cli_run):
    html = (cli_run / R.PAGE).read_text()
    assert "finished: D = 4, 2 epochs" in html and "refresh" not in html
    assert re.findall(r'<img src="([^"]+)"', html) == ["loss.png", "snapshots/epoch_001/samples.png", "samples.png"]
    assert "Epoch 2, the final model" in html and "<td>num_hiddens</td><td>4</td>" in html
    assert "minidiff train flow-class --out " in html and "run &lt;1&gt;" in html


# ----------------------------------------------------------------------------------------
# In a real browser
# ----------------------------------------------------------------------------------------

needs_browser = pytest.mark.skipif(
    find_chromium() is None and not os.environ.get("MINIDIFF_REQUIRE_BROWSER"),
    reason="no chromium on PATH (set MINIDIFF_REQUIRE_BROWSER=1 to make this a failure)")


def _seen_by_a_person(page: Path, shot: Path) -> list[str]:
    """Open the page in Chromium, keep its screenshot, and return what is broken (nothing, we hope)."""
    report = open_page(page)
    shot.write_bytes(report.screenshot)
    assert report.screenshot.startswith(b"\x89PNG") and report.images
    return report.problems()


@needs_browser
def test_the_lesson_page_in_a_browser(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert main(["lesson", "B1.2", "--quick", "--out", str(out)]) == 0
    assert main(["lesson", "A1.4", "--quick", "--model", "mnist", "--out", str(out)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"results page: {out / 'index.html'}")
    report = open_page(out / "index.html")
    (tmp_path / "lessons.png").write_bytes(report.screenshot)
    assert report.problems() == [] and report.title == "minidiff lessons: out"
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*") if p.suffix in (".png", ".gif"))
    assert sorted(i["src"] for i in report.images) == on_disk and len(on_disk) == 4  # B1.2: 1, A1.4: 2 + a GIF


@needs_browser
def test_a_broken_image_fails_the_browser_check(tmp_path):
    R.record_lessons(tmp_path, [_fake_lesson(tmp_path, B12, ["noising.png"])])
    page = tmp_path / R.PAGE
    assert _seen_by_a_person(page, tmp_path / "fine.png") == []
    page.write_text(page.read_text().replace('<img src="B1.2/noising.png"', '<img src="B1.2/nosing.png"'))
    problems = _seen_by_a_person(page, tmp_path / "broken.png")
    assert "image did not load: B1.2/nosing.png" in problems and any("ERR_FILE_NOT_FOUND" in p for p in problems)


@needs_browser
def test_the_run_page_in_a_browser(cli_run, tmp_path):
    assert _seen_by_a_person(cli_run / R.PAGE, tmp_path / "run.png") == []
