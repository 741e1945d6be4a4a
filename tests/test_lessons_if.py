"""The Part A lessons on their IF path, with the tiny random IF UNet of the parity fixture.

No real IF weights can be had in CI, so this checks the plumbing the real run uses:
MINIDIFF_IF_UNET points at a UNet folder, the prompt embeddings come from the cache
that `minidiff embed` fills, and every Part A lesson writes its figures at 64 x 64 RGB.
With a tiny stage-II UNet too ($MINIDIFF_IF2_UNET), every lesson that generates images (A0,
A1.5-A1.9) also shows them upscaled to 256 x 256.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from minidiff import hub
from minidiff.course import IF_PROMPTS, LessonContext, part_a
from minidiff.lessons_index import list_lessons, run_lesson
from minidiff.models.if_unet import IFUNet
from minidiff.text import save_embedding_cache

TINY = Path(__file__).parent / "fixtures" / "if_tiny"
TINY2 = Path(__file__).parent / "fixtures" / "if2_tiny"
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
    # No stage II unless a test names one: a real IF-II in this machine's hub cache would not fit the tiny UNet.
    monkeypatch.delenv("MINIDIFF_IF2_UNET", raising=False)
    find = hub.find_if_unet
    monkeypatch.setattr(hub, "find_if_unet",
                        lambda stage=1: find(stage) if stage == 1 or os.environ.get("MINIDIFF_IF2_UNET") else None)
    return tmp_path


@pytest.fixture
def tiny_if2(tiny_if, monkeypatch):
    """A tiny random stage-II UNet beside the stage-I one, as $MINIDIFF_IF2_UNET.

    Both real IF stages read the same T5 embeddings (4096 wide); the tiny fixtures do not
    (if_tiny reads 64, if2_tiny 48), so this is if2_tiny's config at if_tiny's width with
    fresh random weights; cross-attention only, as self-attention over 64 x 64 tokens of a
    256 x 256 image takes seconds per call on a CPU.
    """
    config = json.loads((TINY2 / "config.json").read_text())
    config["encoder_hid_dim"] = json.loads((TINY / "config.json").read_text())["encoder_hid_dim"]
    config["only_cross_attention"] = True
    folder = tiny_if / "if2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        save_file(IFUNet.from_config(config).state_dict(), str(folder / "diffusion_pytorch_model.safetensors"))
    monkeypatch.setenv("MINIDIFF_IF2_UNET", str(folder))
    return tiny_if


def test_auto_picks_if_when_its_weights_are_here(tiny_if):
    a = part_a(LessonContext(out=tiny_if / "ctx", model="auto"))
    assert a.is_if and a.image_shape == (3, 64, 64) and a.timesteps[0] == 990 and a.timesteps[-1] == 0
    assert a.cond(IF_PROMPTS["rocket"], 1).shape == (1, 77, 64)
    assert a.upscale is None  # no stage II here


def test_stage2_upscales_to_256_when_its_weights_are_here(tiny_if2):
    a = part_a(LessonContext(out=tiny_if2 / "ctx", model="auto", quick=True, progress=False))
    assert a.upscale is not None and a.upscale.unet is None  # loaded on first use only
    x = a.noise(2, torch.Generator().manual_seed(0)).clamp(-1, 1)
    cond = torch.cat([a.cond(IF_PROMPTS["rocket"], 1), a.cond(IF_PROMPTS["dog"], 2)])
    big = a.upscale(x, cond, a.uncond(), generator=torch.Generator().manual_seed(1))
    assert big.shape == (2, 3, 256, 256) and big.dtype == torch.float32 and torch.isfinite(big).all()
    assert big.abs().max() <= 1.0 and big.std() > 0.01


@pytest.mark.parametrize("lesson, names", [("A0", ["samples_64_256.png", "samples_256.png"]),
                                           ("A1.5", ["samples_256.png"]), ("A1.6", ["cfg_256.png"]),
                                           ("A1.7", ["sdedit_256.png"]),
                                           ("A1.7.1", ["sdedit_web_256.png", "sdedit_drawn_256.png"]),
                                           ("A1.7.2", ["inpainting_256.png"]), ("A1.7.3", ["text_i2i_256.png"]),
                                           ("A1.8", ["anagrams_flip_256.png"]), ("A1.9", ["hybrids_256.png"])])
def test_lessons_show_256_px_upscales_with_stage2(tiny_if2, lesson, names):
    info = next(i for i in PART_A if i.id == lesson)
    written = run_lesson(info, tiny_if2 / "out", quick=True, model="if", progress=False)
    by_name = {p.name: p for p in written}
    for name in names:
        img = np.asarray(Image.open(by_name[name]).convert("RGB"))
        assert img.std() > 1.0, f"{name} is constant"
        assert min(img.shape[:2]) >= 256, f"{name} is {img.shape[1]} x {img.shape[0]}, too small for 256 px images"
    if lesson == "A0":  # three prompts at full size, side by side
        assert Image.open(by_name["samples_256.png"]).size == (3 * 258 + 2, 260)


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
    assert not [p for p in written if "256" in p.name]  # no stage II here: 64 x 64 only
