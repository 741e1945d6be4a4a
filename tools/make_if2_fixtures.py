"""Make the IF stage-2 (super-resolution UNet) parity fixtures with the reference (needs diffusers).

Not run in CI: it needs ``diffusers`` (never a dependency of minidiff). Run it in a venv
that has both, from the repository root:

    python tools/make_if2_fixtures.py    # writes tests/fixtures/if2_tiny/, if2_pipeline.safetensors, if_keys_ii_l.json

Writes:
  tests/fixtures/if2_tiny/config.json                         a tiny config using every stage-2 option
  tests/fixtures/if2_tiny/diffusion_pytorch_model.safetensors its random weights (fp32)
  tests/fixtures/if2_tiny/io.safetensors                      fixed inputs and diffusers' outputs
  tests/fixtures/if2_tiny/io64.safetensors                    the same outputs with the UNet in float64
  tests/fixtures/if2_pipeline.safetensors                     diffusers' IFSuperResolutionPipeline on
                                                              if2_tiny: embeddings, low-res images, outputs
  tests/fixtures/if2_pipeline_steps.safetensors               the same runs step by step: every UNet call's
                                                              input and output, every step's x (the loop
                                                              replayed without the network)
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

import functools

import torch
from diffusers import DDPMScheduler, IFSuperResolutionPipeline, UNet2DConditionModel
from make_if_fixtures import FIXTURES, _randomise, make_float64_outputs, make_keys
from safetensors.torch import load_file, save_file

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


def _pipeline() -> IFSuperResolutionPipeline:
    """IFSuperResolutionPipeline on if2_tiny, its schedulers as scripts/convert_if.py builds them."""
    unet = UNet2DConditionModel.from_pretrained(FIXTURES / "if2_tiny").eval()
    scheduler = DDPMScheduler(variance_type="learned_range", beta_schedule="squaredcos_cap_v2",
                              prediction_type="epsilon", thresholding=True, dynamic_thresholding_ratio=0.95,
                              sample_max_value=1.0)
    pipe = IFSuperResolutionPipeline(tokenizer=None, text_encoder=None, unet=unet, scheduler=scheduler,
                                     image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
                                     safety_checker=None, feature_extractor=None, watermarker=None,
                                     requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_pipeline_golden() -> None:
    """IFSuperResolutionPipeline (schedulers as scripts/convert_if.py builds them) on if2_tiny."""
    pipe = _pipeline()
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


def _float32_draws(target: torch.dtype):
    """diffusers' randn_tensor drawing float32 and casting to target: a float64 run keeps the float32 run's noise."""
    from diffusers.utils.torch_utils import randn_tensor

    def draw(shape, generator=None, device=None, dtype=None, **kwargs):
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32, **kwargs).to(target)

    return draw


def make_pipeline_steps() -> None:
    """The PIPELINE_RUNS again, recording what passes between diffusers' UNet and its loop.

    For run R: ``R/x_T`` (B, 3, H, W), the start; ``R/upscaled`` (B, 3, H, W), the noised
    upscaled image the UNet sees beside x_t; and for step i ``R/t/i`` and ``R/noise_level/i``
    (2B,), ``R/unet_out/i`` (2B, 6, H, W), rows [uncond, cond] as the pipeline stacks them,
    and ``R/x/i`` (B, 3, H, W), the sample after the scheduler's step. A loop fed
    ``unet_out`` in place of the network must produce every ``x`` from the same generator.

    ``R/out64`` is the same run in float64 (the UNet's weights and the whole loop, the
    random draws made in float32 and cast, so the noise is the float32 run's): it tells how
    far the float32 golden output lies from its own float64 value.
    """
    import diffusers.pipelines.deepfloyd_if.pipeline_if_superresolution as sr
    import diffusers.schedulers.scheduling_ddpm as ddpm

    pipe, record = _pipeline(), load_file(str(FIXTURES / "if2_pipeline.safetensors"))
    B = record["low_res"].shape[0]
    steps, draws = {}, (sr.randn_tensor, ddpm.randn_tensor)
    for name, timesteps, level, scale in PIPELINE_RUNS:
        calls, xs = [], []
        hook = pipe.unet.register_forward_hook(
            lambda m, args, kwargs, out: calls.append((args[0].clone(), args[1], kwargs["class_labels"], out[0].clone())),
            with_kwargs=True)
        step = pipe.scheduler.step

        @functools.wraps(step)  # the pipeline passes the generator only to a step whose signature takes one
        def recording_step(*args, **kwargs):
            result = step(*args, **kwargs)
            xs.append(result[0].clone())
            return result

        pipe.scheduler.step = recording_step
        args = dict(prompt_embeds=record["prompt_embeds"], negative_prompt_embeds=record["negative_embeds"].expand(B, -1, -1),
                    image=record["low_res"], height=16, width=16, timesteps=timesteps, guidance_scale=scale,
                    noise_level=level, output_type="pt")
        out = pipe(**args, generator=torch.Generator().manual_seed(7)).images
        hook.remove()
        pipe.scheduler.step = step
        # The golden outputs may come from another CPU: on this one the run differs by float32 rounding.
        print(f"{name}: {len(calls)} UNet calls, {(out - record[f'out_{name}']).abs().max():.1e} from the golden output")
        steps[f"{name}/x_T"], steps[f"{name}/upscaled"] = calls[0][0][B:, :3], calls[0][0][B:, 3:]
        for i, ((_, t, level_i, unet_out), x) in enumerate(zip(calls, xs)):
            steps[f"{name}/t/{i}"] = torch.as_tensor(t).reshape(-1).expand(2 * B).clone()
            steps[f"{name}/noise_level/{i}"] = level_i.clone()
            steps[f"{name}/unet_out/{i}"], steps[f"{name}/x/{i}"] = unet_out, x

        pipe.unet.double()
        sr.randn_tensor, ddpm.randn_tensor = _float32_draws(torch.float64), _float32_draws(torch.float64)
        args64 = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        out64 = pipe(**args64, generator=torch.Generator().manual_seed(7)).images
        steps[f"{name}/out64"] = out64
        pipe.unet.float()
        sr.randn_tensor, ddpm.randn_tensor = draws
        print(f"{name}: float32 and float64 differ by {(out.double() - out64).abs().max():.1e}")
    save_file({k: v.contiguous() for k, v in steps.items()}, str(FIXTURES / "if2_pipeline_steps.safetensors"))
    print(f"if2_pipeline_steps: {sum(k.count('/x/') for k in steps)} steps over {len(PIPELINE_RUNS)} runs")


if __name__ == "__main__":
    make_tiny()
    make_float64_outputs("if2_tiny")
    make_pipeline_golden()
    make_pipeline_steps()
    make_keys("ii_l", II_L_CONFIG)
