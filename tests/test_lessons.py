"""Every lesson runs end to end in --quick mode on the MNIST path and writes real figures."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minidiff.cli import main as cli_main
from minidiff.lessons_index import find_lesson, lessons_dir, list_lessons, run_lesson

LESSONS = list_lessons()
README = Path(__file__).resolve().parents[1] / "README.md"


def _frames(path: Path) -> list[np.ndarray]:
    img = Image.open(path)
    frames = []
    for i in range(getattr(img, "n_frames", 1)):
        img.seek(i)
        frames.append(np.asarray(img.convert("L"), dtype=np.float32))
    return frames


@pytest.mark.parametrize("info", LESSONS, ids=[i.id for i in LESSONS])
def test_lesson_runs_quick_and_writes_non_constant_figures(info, tmp_path):
    written = run_lesson(info, tmp_path, quick=True, seed=0, model="mnist", progress=False)
    assert written, f"lesson {info.id} wrote no files"
    for path in written:
        assert path.is_file() and path.stat().st_size > 500, f"{path} missing or tiny"
        assert path.suffix in (".png", ".gif", ".csv", ".json", ".npz"), path
        if path.suffix in (".png", ".gif"):
            frames = _frames(path)
            assert frames[0].shape[0] >= 28 and frames[0].shape[1] >= 28
            assert all(f.std() > 1.0 for f in frames[:1] + frames[-1:]), f"{path} is a constant image"


def test_lesson_ids_follow_the_curriculum():
    ids = [i.id for i in LESSONS]
    for expected in ["A0", "A1.1", "A1.2", "A1.3", "A1.4", "A1.5", "A1.6", "A1.7", "A1.7.1", "A1.7.2",
                     "A1.7.3", "A1.8", "A1.9"]:
        assert expected in ids
    assert any(i.startswith("B") for i in ids)
    assert len(ids) == len(set(ids))
    every_script = sorted(p.name for p in lessons_dir().glob("[ab]*.py"))
    assert sorted(i.path.name for i in LESSONS) == every_script


def test_cli_lists_every_lesson(capsys):
    assert cli_main(["lessons"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if re.match(r"^[AB]\d", line)]
    assert listed == [i.id for i in LESSONS]


def test_readme_table_lists_every_lesson():
    text = README.read_text(encoding="utf-8")
    # the lesson table's rows, told from the exercise table's by their command
    rows = re.findall(r"^\|\s*([AB]\d+(?:\.\d+)*)\s*\|.*`minidiff lesson ", text, flags=re.MULTILINE)
    assert rows == [i.id for i in LESSONS]


def test_unknown_lesson_is_a_clear_error(capsys):
    with pytest.raises(ValueError, match="no lesson"):
        find_lesson("Z9")
    assert cli_main(["lesson", "Z9", "--out", "unused"]) == 2
    assert "no lesson" in capsys.readouterr().err


def test_titles_end_without_a_period_so_the_summary_reads_as_one_sentence():
    """`A1.7 SDEdit (Meng et al., 2022): 1 file in 16.1 s`, not `...2022).: 1 files in ...`."""
    from minidiff.cli.commands import _files

    assert all(not i.title.endswith(".") and i.title for i in LESSONS)
    assert find_lesson("A1.7").title.endswith("(Meng et al., 2022)")
    assert (_files(1), _files(3), _files(0)) == ("1 file", "3 files", "0 files")


def test_lesson_all_banner_says_what_it_costs():
    import argparse

    from minidiff.cli.commands import _how_long

    def banner(**kw):
        return _how_long(argparse.Namespace(**{"quick": False, "train": False, **kw}))

    assert "quick mode" in banner(quick=True) and "minute" in banner(quick=True)
    assert "quick" not in banner() and "minutes" in banner()
    assert "--train adds the training" in banner(train=True) and "--train" not in banner()
