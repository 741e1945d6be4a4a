"""The IF stage-1 UNet: parity with the reference on a tiny random checkpoint, loading, errors.

tests/fixtures/if_tiny holds a checkpoint and outputs made by diffusers' UNet2DConditionModel
(tools/make_if_fixtures.py) for a config with every stage-1 block type.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from minidiff.models.if_blocks import AttentionPooling, FoldedAttentionPooling, timestep_embedding
from minidiff.models.if_config import IFUNetConfig
from minidiff.models.if_loading import find_weights_file
from minidiff.models.if_unet import IFUNet
from parity import assert_parity

TINY = Path(__file__).parent / "fixtures" / "if_tiny"
TIMESTEPS = [0, 1, 250, 500, 999]


@pytest.fixture(scope="module")
def io() -> dict:
    return load_file(str(TINY / "io.safetensors"))


@pytest.fixture(scope="module")
def io64() -> dict:
    return load_file(str(TINY / "io64.safetensors"))


@pytest.fixture(scope="module")
def unet() -> IFUNet:
    return IFUNet.from_pretrained(TINY)


@pytest.fixture(scope="module")
def unet64(unet) -> IFUNet:
    return copy.deepcopy(unet).double()


def _both(unet, unet64, sample, t, text) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return unet(sample, t, text), unet64(sample.double(), t, text.double())


def _copy_tiny(tmp_path: Path, state: dict | None = None) -> Path:
    """A copy of the tiny checkpoint folder, optionally with a modified state dict."""
    folder = tmp_path / "unet"
    folder.mkdir()
    shutil.copy(TINY / "config.json", folder / "config.json")
    if state is None:
        shutil.copy(TINY / "diffusion_pytorch_model.safetensors", folder / "diffusion_pytorch_model.safetensors")
    else:
        save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    return folder


@pytest.mark.parametrize("t", TIMESTEPS)
def test_matches_diffusers_outputs(unet, unet64, io, io64, t):
    """float64 to 1e-6, float32 within 10x diffusers' own float32 error (tests/parity.py)."""
    ours32, ours64 = _both(unet, unet64, io["sample"], t, io["encoder_hidden_states"])
    assert ours32.shape == (2, 6, 16, 16)
    assert_parity(ours32, ours64, io[f"out_t{t}"], io64[f"out_t{t}"])


def test_matches_diffusers_with_one_timestep_per_sample(unet, unet64, io, io64):
    ours32, ours64 = _both(unet, unet64, io["sample"], io["timesteps_per_sample"], io["encoder_hidden_states"])
    assert_parity(ours32, ours64, io["out_per_sample"], io64["out_per_sample"])


def test_output_depends_on_text_and_time(unet, io):
    x, text = io["sample"], io["encoder_hidden_states"]
    with torch.no_grad():
        base = unet(x, 500, text)
        assert (unet(x, 500, text.flip(0)) - base).abs().max() > 1e-3
        assert (unet(x, 10, text) - base).abs().max() > 1e-3


def test_loaded_parameters_are_real_and_frozen(unet):
    params = list(unet.parameters())
    assert params and all(p.device.type == "cpu" and not p.requires_grad for p in params)
    assert not unet.training


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_loading_keeps_dtype(io, dtype):
    unet = IFUNet.from_pretrained(TINY, dtype=dtype)
    assert {p.dtype for p in unet.parameters()} == {dtype}
    with torch.no_grad():
        out = unet(io["sample"], 500, io["encoder_hidden_states"])  # fp32 inputs are cast
    assert out.dtype == dtype
    err = (out.float() - io["out_t500"]).abs().max().item()
    assert err < (0.05 if dtype == torch.float16 else 0.2)


def test_fp32_forward_after_fp16_load(tmp_path, io):
    state = {k: v.half() for k, v in load_file(str(TINY / "diffusion_pytorch_model.safetensors")).items()}
    folder = _copy_tiny(tmp_path)
    save_file(state, str(folder / "diffusion_pytorch_model.fp16.safetensors"))
    unet = IFUNet.from_pretrained(folder)  # the fp16 variant is preferred when no dtype is asked
    assert unet.dtype == torch.float16
    unet = unet.float()
    with torch.no_grad():
        out = unet(io["sample"], 250, io["encoder_hidden_states"])
    assert out.dtype == torch.float32
    assert (out - io["out_t250"]).abs().max().item() < 0.05  # only fp16 rounding of the weights
    assert find_weights_file(folder, prefer_fp16=False).name == "diffusion_pytorch_model.safetensors"


def test_missing_key_is_named(tmp_path):
    state = load_file(str(TINY / "diffusion_pytorch_model.safetensors"))
    del state["mid_block.attentions.0.to_q.weight"]
    with pytest.raises(ValueError, match=r"1 missing key\(s\): mid_block\.attentions\.0\.to_q\.weight"):
        IFUNet.from_pretrained(_copy_tiny(tmp_path, state))


def test_unexpected_key_is_named(tmp_path):
    state = load_file(str(TINY / "diffusion_pytorch_model.safetensors"))
    state["class_embedding.linear_1.weight"] = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=r"unexpected key\(s\): class_embedding\.linear_1\.weight"):
        IFUNet.from_pretrained(_copy_tiny(tmp_path, state))


def test_misshaped_key_is_named_with_both_shapes(tmp_path):
    state = load_file(str(TINY / "diffusion_pytorch_model.safetensors"))
    state["conv_in.weight"] = torch.zeros(8, 3, 5, 5)
    with pytest.raises(ValueError, match=r"conv_in\.weight: file \(8, 3, 5, 5\) vs model \(8, 3, 3, 3\)"):
        IFUNet.from_pretrained(_copy_tiny(tmp_path, state))


def test_truncated_file_is_a_clear_error(tmp_path):
    folder = _copy_tiny(tmp_path)
    path = folder / "diffusion_pytorch_model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        IFUNet.from_pretrained(folder)


def test_corrupt_header_is_a_clear_error(tmp_path):
    folder = _copy_tiny(tmp_path)
    path = folder / "diffusion_pytorch_model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:16] = b"\xff\xfe garbage"[:8]
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt|not a safetensors"):
        IFUNet.from_pretrained(folder)


def test_missing_weights_and_missing_folder(tmp_path):
    folder = tmp_path / "unet"
    folder.mkdir()
    shutil.copy(TINY / "config.json", folder / "config.json")
    with pytest.raises(FileNotFoundError, match="minidiff fetch"):
        IFUNet.from_pretrained(folder)
    with pytest.raises(FileNotFoundError):
        IFUNet.from_pretrained(tmp_path / "nowhere")


def test_repo_folder_with_unet_subfolder_loads(tmp_path, io, unet):
    _copy_tiny(tmp_path)  # tmp_path/unet/...
    loaded = IFUNet.from_pretrained(tmp_path)
    with torch.no_grad():  # the same weights as the fixture's own folder, so the same output bit for bit
        assert torch.equal(loaded(io["sample"], 0, io["encoder_hidden_states"]), unet(io["sample"], 0, io["encoder_hidden_states"]))


def test_unsupported_config_is_rejected():
    config = json.loads((TINY / "config.json").read_text())
    with pytest.raises(ValueError, match="CrossAttnDownBlock2D"):
        IFUNet.from_config({**config, "down_block_types": ["CrossAttnDownBlock2D"] * 4})
    with pytest.raises(ValueError, match="class_embed_type"):
        IFUNet.from_config({**config, "class_embed_type": "projection"})
    with pytest.raises(ValueError, match="block_out_channels"):
        IFUNet.from_config({k: v for k, v in config.items() if k != "block_out_channels"})
    with pytest.raises(ValueError, match="encoder_hid_dim"):
        IFUNet.from_config({**config, "encoder_hid_dim": None})
    with pytest.raises(ValueError, match="layers_per_block has 2 entries"):
        IFUNet.from_config({**config, "layers_per_block": [1, 2]})


def test_config_reads_per_level_values_and_ignores_entries_that_do_not_change_the_network():
    config = json.loads((TINY / "config.json").read_text())
    c = IFUNetConfig.from_dict(config)
    assert c.layers_per_block == (1, 1, 1, 1) and c.attention_head_dim == (8, 8, 8, 8)
    assert c.text_dim == config["encoder_hid_dim"] and c.emb_dim == 4 * config["block_out_channels"][0]
    assert IFUNetConfig.from_dict({**config, "sample_size": 999, "dropout": 0.1}) == c


def test_bad_inputs_are_rejected(unet, io):
    with pytest.raises(ValueError, match="multiples of 8"):
        unet(torch.zeros(2, 3, 12, 12), 0, io["encoder_hidden_states"])
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        unet(io["sample"], 0, io["encoder_hidden_states"][:1])
    with pytest.raises(ValueError, match="timestep"):
        unet(io["sample"], torch.tensor([1, 2, 3]), io["encoder_hidden_states"])


@settings(max_examples=25, deadline=None)
@given(t=st.floats(min_value=0, max_value=1000), dim=st.sampled_from([8, 16, 704]))
def test_timestep_embedding_cos_sin_pairs_have_unit_norm(t, dim):
    """Identity: emb[k]^2 + emb[k + dim/2]^2 == 1 (cos^2 + sin^2 of the same frequency)."""
    emb = timestep_embedding(torch.tensor([t]), dim)
    half = dim // 2
    assert emb.shape == (1, dim)
    assert torch.allclose(emb[0, :half] ** 2 + emb[0, half:] ** 2, torch.ones(half), atol=1e-5)
    assert torch.allclose(emb[0, 0], torch.cos(torch.tensor(t)), atol=1e-4)  # frequency 1 comes first


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folded_attention_pooling_equals_the_plain_formula(seed):
    """The network's folded pooling (W_k^T q, then W_v after the weighted sum) == softmax(q K^T / sqrt(d)) V.

    Equal up to float32 rounding (both take the softmax in float32, as IF does).
    """
    torch.manual_seed(seed)
    plain, folded = AttentionPooling(num_heads=4, dim=32), FoldedAttentionPooling(num_heads=4, dim=32)
    for p in plain.parameters():  # random biases too: the folding must cancel b_k and carry b_v exactly
        torch.nn.init.normal_(p, std=0.5)
    folded.load_state_dict(plain.state_dict())
    x = torch.randn(3, 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), plain(x), rtol=1e-5, atol=1e-5)
