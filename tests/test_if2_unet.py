"""The IF stage-2 (super-resolution) UNet: parity with the reference, IF-II-L's keys, input errors.

tests/fixtures/if2_tiny holds a checkpoint and outputs made by diffusers' UNet2DConditionModel
(tools/make_if2_fixtures.py) for a tiny config that sets every stage-2 option: 6 input
channels, the noise-level ("class") embedding, per-level layers_per_block and
only_cross_attention, a cross-attention-only mid block, resnet_skip_time_act, the 1/0.7071
output scales, time_embedding_dim and time_embedding_act_fn. tests/fixtures/if_keys_ii_l.json
lists the parameter names and shapes of diffusers' network for DeepFloyd/IF-II-L-v1.0's config.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minidiff.models.if_config import IFUNetConfig
from parity import assert_parity
from minidiff.models.if_unet import IFUNet

FIXTURES = Path(__file__).parent / "fixtures"
TINY2 = FIXTURES / "if2_tiny"
CASES = [(0, 0), (1, 999), (250, 250), (500, 100), (999, 0)]  # (timestep, noise level)


@pytest.fixture(scope="module")
def io() -> dict:
    return load_file(str(TINY2 / "io.safetensors"))


@pytest.fixture(scope="module")
def io64() -> dict:
    return load_file(str(TINY2 / "io64.safetensors"))


@pytest.fixture(scope="module")
def unet() -> IFUNet:
    return IFUNet.from_pretrained(TINY2)


@pytest.fixture(scope="module")
def unet64(unet) -> IFUNet:
    return copy.deepcopy(unet).double()


def _both(unet, unet64, sample, t, text, level) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return unet(sample, t, text, level), unet64(sample.double(), t, text.double(), level)


@pytest.fixture(scope="module")
def ii_l_record() -> dict:
    return json.loads((FIXTURES / "if_keys_ii_l.json").read_text())


# -- parity with the reference -----------------------------------------------------------


@pytest.mark.parametrize("t, s", CASES)
def test_matches_diffusers_outputs(unet, unet64, io, io64, t, s):
    """float64 to 1e-6, float32 within 10x diffusers' own float32 error (tests/parity.py)."""
    ours32, ours64 = _both(unet, unet64, io["sample"], t, io["encoder_hidden_states"], torch.tensor([s, s]))
    assert ours32.shape == (2, 6, 16, 16)
    assert_parity(ours32, ours64, io[f"out_t{t}_s{s}"], io64[f"out_t{t}_s{s}"])


def test_matches_diffusers_with_one_timestep_and_noise_level_per_sample(unet, unet64, io, io64):
    ours32, ours64 = _both(unet, unet64, io["sample"], io["timesteps_per_sample"], io["encoder_hidden_states"],
                           io["noise_level_per_sample"])
    assert_parity(ours32, ours64, io["out_per_sample"], io64["out_per_sample"])


def test_scalar_noise_level_is_broadcast_over_the_batch(unet, unet64, io, io64):
    ours32, ours64 = _both(unet, unet64, io["sample"], 250, io["encoder_hidden_states"], 250)
    assert_parity(ours32, ours64, io["out_t250_s250"], io64["out_t250_s250"])


def test_output_depends_on_the_noise_level(unet, io):
    with torch.no_grad():
        a = unet(io["sample"], 500, io["encoder_hidden_states"], torch.tensor([0, 0]))
        b = unet(io["sample"], 500, io["encoder_hidden_states"], torch.tensor([500, 500]))
    assert (a - b).abs().max().item() > 1e-3


def test_only_cross_attention_layers_have_no_pixel_keys(unet):
    # config: only_cross_attention [False, True, False] (down order; reversed for the up blocks),
    # mid_block_only_cross_attention true
    assert unet.down_blocks[1].attentions[0].to_k is None
    assert unet.down_blocks[2].attentions[0].to_k is not None
    assert unet.up_blocks[0].attentions[0].to_k is not None
    assert unet.up_blocks[1].attentions[0].to_v is None
    assert unet.mid_block.attentions[0].to_k is None
    assert unet.class_embedding is not None and unet.conv_in.in_channels == 6


def test_mid_block_follows_a_single_only_cross_attention_value():
    config = json.loads((TINY2 / "config.json").read_text())
    del config["mid_block_only_cross_attention"]
    assert IFUNetConfig.from_dict({**config, "only_cross_attention": True}).mid_block_only_cross_attention is True
    listed = IFUNetConfig.from_dict({**config, "only_cross_attention": [True, True, True]})
    assert listed.mid_block_only_cross_attention is False  # a per-level list leaves the mid block as it is
    with pytest.raises(ValueError, match="only_cross_attention has 2 entries"):
        IFUNetConfig.from_dict({**config, "only_cross_attention": [True, False]})


# -- IF-II-L: the real architecture on the meta device -----------------------------------


def test_ii_l_fixture_records_the_published_size(ii_l_record):
    # DeepFloyd/IF-II-L-v1.0: "1.2B" parameters (IF's README).
    assert ii_l_record["num_tensors"] == len(ii_l_record["keys"]) == 939
    assert ii_l_record["num_parameters"] == 1_243_277_190
    assert ii_l_record["config"]["block_out_channels"] == [160, 320, 640, 960, 1280]
    assert ii_l_record["config"]["layers_per_block"] == [2, 2, 3, 5, 5]


def test_ii_l_on_meta_device_has_exactly_the_checkpoint_keys_and_shapes(ii_l_record):
    unet = IFUNet.from_config(ii_l_record["config"], device="meta")
    ours = {k: list(v.shape) for k, v in unet.state_dict().items()}
    theirs = {k: shape for k, shape in ii_l_record["keys"]}
    assert sorted(set(ours) - set(theirs)) == []
    assert sorted(set(theirs) - set(ours)) == []
    assert {k for k in ours if ours[k] != theirs[k]} == set()
    assert sum(p.numel() for p in unet.parameters()) == ii_l_record["num_parameters"]


def test_ii_l_meta_forward_gives_six_channels_at_256(ii_l_record):
    unet = IFUNet.from_config(ii_l_record["config"], device="meta")
    x = torch.empty(2, 6, 256, 256, device="meta")
    text = torch.empty(2, 77, 4096, device="meta")
    level = torch.tensor([250, 250], device="meta")
    out = unet(x, torch.tensor([999, 999], device="meta"), text, level)
    assert out.shape == (2, 6, 256, 256)


# -- refused inputs ----------------------------------------------------------------------


def test_stage2_without_noise_level_is_refused(unet, io):
    with pytest.raises(ValueError, match="needs noise_level"):
        unet(io["sample"], 10, io["encoder_hidden_states"])


@pytest.mark.parametrize("level", [-1, 1000, [0, 1000]])
def test_noise_level_outside_the_schedule_is_refused(unet, io, level):
    with pytest.raises(ValueError, match=r"noise_level must lie in \[0, 999\]"):
        unet(io["sample"], 10, io["encoder_hidden_states"], torch.tensor(level))


def test_noise_level_of_another_batch_size_is_refused(unet, io):
    with pytest.raises(ValueError, match="noise_level must be a scalar or a \\(B,\\) tensor with B=2"):
        unet(io["sample"], 10, io["encoder_hidden_states"], torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="noise_level"):
        unet(io["sample"], 10, io["encoder_hidden_states"], torch.zeros(2, 1))


def test_stage1_unet_given_a_noise_level_is_refused():
    stage1 = IFUNet.from_pretrained(FIXTURES / "if_tiny")
    x, text = torch.randn(1, 3, 16, 16), torch.randn(1, 7, 64)
    with pytest.raises(ValueError, match="only taken by a stage-2"):
        stage1(x, 10, text, torch.tensor([250]))


def test_three_channel_input_to_stage2_is_refused(unet, io):
    with pytest.raises(ValueError, match=r"sample must be \(B, 6, H, W\)"):
        unet(io["sample"][:, :3], 10, io["encoder_hidden_states"], 250)
