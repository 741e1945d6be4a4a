"""Make the IF stage-1 parity fixtures with the reference implementation (needs diffusers).

Not run in CI: it needs ``diffusers`` (never a dependency of minidiff). Run it in a venv
that has both, from the repository root:

    python tools/make_if_fixtures.py            # writes tests/fixtures/if_tiny/ and if_keys_xl.json

Writes:
  tests/fixtures/if_tiny/config.json                         a tiny config using every stage-1 block type
  tests/fixtures/if_tiny/diffusion_pytorch_model.safetensors its random weights (fp32)
  tests/fixtures/if_tiny/io.safetensors                      fixed inputs and diffusers' outputs
  tests/fixtures/if_tiny/io64.safetensors                    the same outputs with the UNet in float64
  tests/fixtures/if_keys_xl.json                             IF-I-XL's parameter names and shapes
                                                             (built on the meta device, no memory)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

_STAGE1 = dict(
    down_block_types=[
        "ResnetDownsampleBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
    ],
    up_block_types=[
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "ResnetUpsampleBlock2D",
    ],
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    addition_embed_type="text",
    encoder_hid_dim_type="text_proj",
    resnet_time_scale_shift="scale_shift",
    cross_attention_norm="group_norm",
    act_fn="gelu",
    in_channels=3,
    out_channels=6,
)

# DeepFloyd/IF-I-XL-v1.0 unet/config.json (the architecture entries; the rest are defaults).
XL_CONFIG = dict(
    _STAGE1,
    block_out_channels=[704, 1408, 2112, 2816],
    layers_per_block=3,
    attention_head_dim=64,
    cross_attention_dim=2816,
    encoder_hid_dim=4096,
    addition_embed_type_num_heads=64,
    sample_size=64,
)

# Every stage-1 block type, small enough to commit (fp32, under 1 MB).
TINY_CONFIG = dict(
    _STAGE1,
    block_out_channels=[8, 16, 16, 24],
    layers_per_block=1,
    attention_head_dim=8,
    cross_attention_dim=32,  # the text GroupNorm has 32 groups, so a multiple of 32
    encoder_hid_dim=64,
    addition_embed_type_num_heads=4,
    norm_num_groups=4,
    sample_size=16,
)

TIMESTEPS = [0, 1, 250, 500, 999]


def _randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Move every 1-D parameter (norm scales, biases) and the pooling position off its default.

    Default init leaves GroupNorm/LayerNorm at weight 1, bias 0, which would hide a swapped
    or missing affine transform; parity on these weights proves every parameter is used.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or "positional_embedding" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=generator))
            else:
                p.mul_(1.0 + 0.5 * torch.rand(p.shape, generator=generator))


def make_tiny() -> None:
    out = FIXTURES / "if_tiny"
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_CONFIG).eval()
    _randomise(unet, g)
    unet.save_pretrained(out, safe_serialization=True)

    B, T = 2, 7
    sample = torch.randn(B, 3, 16, 16, generator=g)
    text = torch.randn(B, T, TINY_CONFIG["encoder_hid_dim"], generator=g)
    io = {"sample": sample, "encoder_hidden_states": text}
    with torch.no_grad():
        for t in TIMESTEPS:
            io[f"out_t{t}"] = unet(sample, t, encoder_hidden_states=text).sample
        per_sample = torch.tensor([10, 990])
        io["timesteps_per_sample"] = per_sample
        io["out_per_sample"] = unet(sample, per_sample, encoder_hidden_states=text).sample
    save_file({k: v.contiguous() for k, v in io.items()}, str(out / "io.safetensors"))
    n = sum(p.numel() for p in unet.parameters())
    print(f"if_tiny: {n:,} parameters, outputs at t={TIMESTEPS} and per-sample {per_sample.tolist()}")


def make_float64_outputs(folder: str) -> None:
    """``folder/io64.safetensors``: every ``out_*`` of io.safetensors again, the UNet and its inputs in float64.

    A float32 output carries the rounding of the CPU that made it (1e-6 to 1e-5 on these
    configs); the float64 one is the network's value, the same on any CPU to 1e-12, so the
    tests can hold a float64 forward to it exactly and a float32 one to a stated multiple of
    diffusers' own float32 error.
    """
    path = FIXTURES / folder
    unet = UNet2DConditionModel.from_pretrained(path).eval().double()
    io = load_file(str(path / "io.safetensors"))
    sample, text = io["sample"].double(), io["encoder_hidden_states"].double()
    io64 = {}
    with torch.no_grad():
        for key in io:
            if not key.startswith("out_"):
                continue
            if key == "out_per_sample":
                t, level = io["timesteps_per_sample"], io.get("noise_level_per_sample")
            else:  # out_t{t} (stage 1) or out_t{t}_s{level} (stage 2)
                t, *level = (int(part[1:]) for part in key[4:].split("_"))
                level = torch.tensor(level * sample.shape[0]) if level else None
            extra = {} if level is None else {"class_labels": level}
            io64[key] = unet(sample, t, encoder_hidden_states=text, **extra).sample
            print(f"{folder} {key}: float32 is {(io[key].double() - io64[key]).abs().max():.1e} from float64")
    save_file(io64, str(path / "io64.safetensors"))


def make_keys(name: str, config: dict) -> None:
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    state = unet.state_dict()
    n = sum(v.numel() for v in state.values())
    record = {
        "config": {k: v for k, v in unet.config.items() if not k.startswith("_")},
        "num_tensors": len(state),
        "num_parameters": n,
        "keys": [[k, list(v.shape)] for k, v in state.items()],
    }
    path = FIXTURES / f"if_keys_{name}.json"
    path.write_text(json.dumps(record, indent=0) + "\n")
    print(f"{path.name}: {len(state)} tensors, {n:,} parameters")


if __name__ == "__main__":
    make_tiny()
    make_float64_outputs("if_tiny")
    make_keys("xl", XL_CONFIG)
