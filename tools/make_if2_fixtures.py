"""Make the IF stage-2 (super-resolution UNet) parity fixtures with the reference (needs diffusers).

Not run in CI: it needs ``diffusers`` (never a dependency of minidiff). Run it in a venv
that has both, from the repository root:

    python tools/make_if2_fixtures.py    # writes tests/fixtures/if2_tiny/, if2_pipeline.safetensors, if_keys_ii_l.json

Writes:
  tests/fixtures/if2_tiny/config.json                         a tiny config using every stage-2 option
  tests/fixtures/if2_tiny/diffusion_pytorch_model.safetensors its random weights (fp32)
  tests/fixtures/if2_tiny/io.safetensors                      fixed inputs and diffusers' outputs
  tests/fixtures/if2_pipeline.safetensors                     diffusers' IFSuperResolutionPipeline on
                                                              if2_tiny: embeddings, low-res images, outputs
  tests/fixtures/if_keys_ii_l.json                            IF-II-L's parameter names and shapes
                                                              (built on the meta device, no memory)

The IF-II-L config is what diffusers' scripts/convert_if.py builds from IF's own model
config (get_super_res_unet / superres_create_unet_diffusers_config): model_channels 160,
channel_mult 1,2,4,6,8, num_res_blocks 2,2,3,5,5, attention at the two lowest resolutions,
num_head_channels 64, encoder_channels 1280, encoder_dim 4096, and on top of that
time_embedding_dim = model_channels * channel_mult[-1], class_embed_type "timestep",
time_embedding_act_fn gelu, resnet_skip_time_act, 1/0.7071 output scales.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, IFSuperResolutionPipeline, UNet2DConditionModel
from make_if_fixtures import FIXTURES, _randomise, make_keys
from safetensors.torch import save_file

_STAGE2 = dict(
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    addition_embed_type="text",
    encoder_hid_dim_type="text_proj",
    resnet_time_scale_shift="scale_shift",
    cross_attention_norm="group_norm",
    act_fn="gelu",
    in_channels=6,  # x_t and the upscaled, noised low-res image
    out_channels=6,
    class_embed_type="timestep",  # the low-res image's noise level
    time_embedding_act_fn="gelu",
    resnet_skip_time_act=True,
    resnet_out_scale_factor=1 / 0.7071,
    mid_block_scale_factor=1 / 0.7071,
)

# DeepFloyd/IF-II-L-v1.0 unet/config.json (the architecture entries; the rest are defaults).
II_L_CONFIG = dict(
    _STAGE2,
    down_block_types=["ResnetDownsampleBlock2D"] * 3 + ["SimpleCrossAttnDownBlock2D"] * 2,
    up_block_types=["SimpleCrossAttnUpBlock2D"] * 2 + ["ResnetUpsampleBlock2D"] * 3,
    block_out_channels=[160, 320, 640, 960, 1280],
    layers_per_block=[2, 2, 3, 5, 5],
    attention_head_dim=64,
    cross_attention_dim=1280,
    encoder_hid_dim=4096,
    addition_embed_type_num_heads=64,
    time_embedding_dim=1280,
    only_cross_attention=False,
    sample_size=256,
)

# Every stage-2 option, small enough to commit: per-level layers, a per-level
# only_cross_attention (reversed for the up blocks), a self-attending-less mid block,
# a time embedding width other than 4 * block_out_channels[0].
TINY_CONFIG = dict(
    _STAGE2,
    down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D"],
    up_block_types=["SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"],
    block_out_channels=[8, 16, 16],
    layers_per_block=[1, 2, 1],
    only_cross_attention=[False, True, False],
    mid_block_only_cross_attention=True,
    attention_head_dim=8,
    cross_attention_dim=32,  # the text GroupNorm has 32 groups, so a multiple of 32
    encoder_hid_dim=48,
    addition_embed_type_num_heads=4,
    time_embedding_dim=24,
    norm_num_groups=4,
    sample_size=16,
)

# (timestep, noise level) pairs the outputs are recorded at.
CASES = [(0, 0), (1, 999), (250, 250), (500, 100), (999, 0)]


def make_tiny() -> None:
    out = FIXTURES / "if2_tiny"
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    unet = UNet2DConditionModel(**TINY_CONFIG).eval()
    _randomise(unet, g)
    unet.save_pretrained(out, safe_serialization=True)

    B, T = 2, 5
    sample = torch.randn(B, 6, 16, 16, generator=g)
    text = torch.randn(B, T, TINY_CONFIG["encoder_hid_dim"], generator=g)
    io = {"sample": sample, "encoder_hidden_states": text}
    with torch.no_grad():
        for t, s in CASES:
            noise = torch.tensor([s] * B)
            io[f"out_t{t}_s{s}"] = unet(sample, t, encoder_hidden_states=text, class_labels=noise).sample
        per_t, per_s = torch.tensor([10, 990]), torch.tensor([999, 20])
        io["timesteps_per_sample"], io["noise_level_per_sample"] = per_t, per_s
        io["out_per_sample"] = unet(sample, per_t, encoder_hidden_states=text, class_labels=per_s).sample
    save_file({k: v.contiguous() for k, v in io.items()}, str(out / "io.safetensors"))
    n = sum(p.numel() for p in unet.parameters())
    print(f"if2_tiny: {n:,} parameters, outputs at (t, noise level) {CASES} and per sample")


# (name, timesteps, noise level, guidance scale) of the recorded pipeline runs on if2_tiny.
# Starting at t = 990, x0_hat = (x - sqrt(1 - ab) eps) / sqrt(ab) multiplies float32 rounding
# by 1/sqrt(ab_990) (about 150), so that run is recorded to a looser tolerance in the test.
PIPELINE_RUNS = [
    ("steps4", [900, 600, 300, 0], 250, 4.0),
    ("default50", None, 100, 7.0),
    ("steps4_from990", [990, 660, 330, 0], 250, 4.0),
]


def make_pipeline_golden() -> None:
    """IFSuperResolutionPipeline (schedulers as scripts/convert_if.py builds them) on if2_tiny."""
    unet = UNet2DConditionModel.from_pretrained(FIXTURES / "if2_tiny").eval()
    scheduler = DDPMScheduler(variance_type="learned_range", beta_schedule="squaredcos_cap_v2",
                              prediction_type="epsilon", thresholding=True, dynamic_thresholding_ratio=0.95,
                              sample_max_value=1.0)
    pipe = IFSuperResolutionPipeline(tokenizer=None, text_encoder=None, unet=unet, scheduler=scheduler,
                                     image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
                                     safety_checker=None, feature_extractor=None, watermarker=None,
                                     requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(2)
    B, T, D = 2, 5, TINY_CONFIG["encoder_hid_dim"]
    record = {
        "prompt_embeds": torch.randn(B, T, D, generator=g),
        "negative_embeds": torch.randn(1, T, D, generator=g),
        "low_res": torch.rand(B, 3, 8, 8, generator=g) * 2 - 1,
    }
    for name, timesteps, level, scale in PIPELINE_RUNS:
        negative = record["negative_embeds"].expand(B, -1, -1)  # the pipeline wants one per prompt
        out = pipe(prompt_embeds=record["prompt_embeds"], negative_prompt_embeds=negative,
                   image=record["low_res"], height=16, width=16, timesteps=timesteps, guidance_scale=scale,
                   noise_level=level, generator=torch.Generator().manual_seed(7), output_type="pt").images
        record[f"out_{name}"] = out
    save_file({k: v.contiguous() for k, v in record.items()}, str(FIXTURES / "if2_pipeline.safetensors"))
    print(f"if2_pipeline: runs {[r[0] for r in PIPELINE_RUNS]}, output range {out.min():.3f}..{out.max():.3f}")


if __name__ == "__main__":
    make_tiny()
    make_pipeline_golden()
    make_keys("ii_l", II_L_CONFIG)
