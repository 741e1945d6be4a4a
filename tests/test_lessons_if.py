"""The Part A lessons on their IF path, with the tiny random IF UNet of the parity fixture.

No real IF weights can be had in CI, so this checks the plumbing the real run uses:
MINIDIFF_IF_UNET points at a UNet folder, the prompt embeddings come from the cache
that `minidiff embed` fills, and every Part A lesson writes its figures at 64 x 64 RGB.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minidiff.course import IF_PROMPTS, LessonContext, part_a
from minidiff.lessons_index import list_lessons, run_lesson
from minidiff.text import save_embedding_cache

TINY = Path(__file__).parent / "fixtures" / "if_tiny"
PART_A = [i for i in list_lessons() if i.id.startswith("A")]


@pytest.fixture
def tiny_if(tmp_path, monkeypatch):
    width = json.loads((TINY / "config.json").read_text())["encoder_hid_dim"]
    g = torch.Generator().manual_seed(0)
    embeds = {p: torch.randn(77, width, generator=g) for p in [*IF_PROMPTS.values(), ""]}
    cache = tmp_path / "embeds.safetensors"
    save_embedding_cache(embeds, cache)
    monkeypatch.setenv("MINIDIFF_IF_UNET", str(TINY))
    monkeypatch.setenv("MINIDIFF_EMBED_CACHE", str(cache))
    return tmp_path


def test_auto_picks_if_when_its_weights_are_here(tiny_if):
    a = part_a(LessonContext(out=tiny_if / "ctx", model="auto"))
    assert a.is_if and a.image_shape == (3, 64, 64) and a.timesteps[0] == 990 and a.timesteps[-1] == 0
    assert a.cond(IF_PROMPTS["rocket"], 1).shape == (1, 77, 64)


def test_asking_for_if_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDIFF_IF_UNET", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        part_a(LessonContext(out=tmp_path / "ctx", model="if"))


@pytest.mark.parametrize("info", PART_A, ids=[i.id for i in PART_A])
def test_part_a_lesson_runs_on_the_if_path(info, tiny_if):
    written = run_lesson(info, tiny_if / "out", quick=True, model="if", progress=False)
    assert written
    for path in written:
        img = np.asarray(Image.open(path).convert("RGB"))
        assert img.std() > 1.0, f"{path} is constant"
