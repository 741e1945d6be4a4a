"""IF-I-XL's real architecture: built on the meta device, it has the checkpoint's exact keys.

tests/fixtures/if_keys_xl.json lists the 775 parameter names and shapes of the diffusers
UNet2DConditionModel for DeepFloyd/IF-I-XL-v1.0's config (made by tools/make_if_fixtures.py).
Equal names and shapes mean the real fp16 checkpoint loads with a strict load_state_dict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minidiff.models.if_unet import IFUNet

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def xl_record() -> dict:
    return json.loads((FIXTURES / "if_keys_xl.json").read_text())


def test_xl_fixture_records_the_published_size(xl_record):
    # DeepFloyd/IF-I-XL-v1.0: 4.3B parameters in 775 tensors.
    assert xl_record["num_tensors"] == len(xl_record["keys"]) == 775
    assert xl_record["num_parameters"] == 4_304_695_110
    assert xl_record["config"]["block_out_channels"] == [704, 1408, 2112, 2816]


def test_xl_on_meta_device_has_exactly_the_checkpoint_keys_and_shapes(xl_record):
    unet = IFUNet.from_config(xl_record["config"], device="meta")
    ours = {k: list(v.shape) for k, v in unet.state_dict().items()}
    theirs = {k: shape for k, shape in xl_record["keys"]}
    assert sorted(set(ours) - set(theirs)) == []
    assert sorted(set(theirs) - set(ours)) == []
    assert {k for k in ours if ours[k] != theirs[k]} == set()
    assert sum(p.numel() for p in unet.parameters()) == xl_record["num_parameters"]
    assert all(p.device.type == "meta" for p in unet.parameters())


def test_xl_attention_heads_are_64_wide(xl_record):
    unet = IFUNet.from_config(xl_record["config"], device="meta")
    heads = {m.heads for m in unet.modules() if hasattr(m, "heads")}
    assert heads == {c // 64 for c in (1408, 2112, 2816)}
    assert unet.add_embedding.pool.num_heads == 64


def test_xl_meta_forward_gives_six_channels(xl_record):
    """Shape check of the full XL graph without memory: meta tensors carry shapes only."""
    unet = IFUNet.from_config(xl_record["config"], device="meta")
    x = torch.empty(2, 3, 64, 64, device="meta")
    text = torch.empty(2, 77, 4096, device="meta")
    out = unet(x, torch.tensor([999, 999], device="meta"), text)
    assert out.shape == (2, 6, 64, 64)
