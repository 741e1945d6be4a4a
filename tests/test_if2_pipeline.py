"""IF stage-2 upscaling end to end on the tiny random stage-2 checkpoint (8x8 -> 16x16).

tests/fixtures/if2_pipeline.safetensors holds the outputs of diffusers' IFSuperResolutionPipeline
(schedulers as scripts/convert_if.py builds them) on tests/fixtures/if2_tiny, for the same
embeddings, low-res images and generator seed (tools/make_if2_fixtures.py).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import minidiff
from minidiff.if_pipeline import if_stage2, stage2_schedule
from minidiff.models.if_unet import IFUNet

FIXTURES = Path(__file__).parent / "fixtures"

# (name, timesteps, noise level, guidance scale) of the recorded runs (tools/make_if2_fixtures.py).
RUNS = [
    ("steps4", [900, 600, 300, 0], 250, 4.0),
    ("default50", None, 100, 7.0),
    ("steps4_from990", [990, 660, 330, 0], 250, 4.0),
]


def rounding_allowance(timesteps: list[int] | None) -> float:
    """What float32 rounding of the sampling state may move the output: 1e-5 / sqrt(ab_t0).

    x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t) multiplies a rounding of x_t or eps by
    1 / sqrt(ab_t), about 71 at t = 990, 34 at 980 and 6.5 at 900, so two correct loops whose
    float32 operations round differently (another CPU's kernels) end that far apart. Measured
    with PyTorch's default, AVX2 and AVX512 kernels: at most 1/8 of this allowance.
    """
    return 1e-5 / stage2_schedule().alphas_cumprod[(timesteps or [980])[0]].sqrt().item()


@pytest.fixture(scope="module")
def unet() -> IFUNet:
    return IFUNet.from_pretrained(FIXTURES / "if2_tiny")


@pytest.fixture(scope="module")
def unet64(unet) -> IFUNet:
    return copy.deepcopy(unet).double()


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_file(str(FIXTURES / "if2_pipeline.safetensors"))


@pytest.fixture(scope="module")
def steps() -> dict:
    return load_file(str(FIXTURES / "if2_pipeline_steps.safetensors"))


def _upscale(unet, golden, **kwargs) -> torch.Tensor:
    args = dict(height=16, width=16, generator=torch.Generator().manual_seed(7), progress=False)
    args.update(kwargs)
    return if_stage2(unet, golden["low_res"], golden["prompt_embeds"], golden["negative_embeds"], **args)


@pytest.mark.parametrize("name, timesteps, level, scale", RUNS)
def test_float64_network_matches_diffusers_float64_pipeline(unet64, golden, steps, name, timesteps, level, scale):
    """The network in float64 and the loop in float32 against IFSuperResolutionPipeline wholly in
    float64 (the same random draws): apart from the float32 state's rounding (the allowance
    above), nothing is left that another CPU's kernels could change, so a wrong network, a
    wrong conditioning or a wrong loop shows at once."""
    out = _upscale(unet64, golden, timesteps=timesteps, noise_level=level, guidance_scale=scale)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32
    err = (out.double() - steps[f"{name}/out64"]).abs().max().item()
    assert err <= rounding_allowance(timesteps), f"{name}: {err:.2e} from diffusers in float64"


@pytest.mark.parametrize("name, timesteps, level, scale", RUNS)
def test_float32_run_is_as_close_to_float64_as_diffusers_own(unet, golden, steps, name, timesteps, level, scale):
    """What a user runs, all float32, lies within 5x of the distance from diffusers' own float32
    run (the golden output, made on another CPU) to the float64 pipeline: our rounding is no
    worse than the reference's. Measured here: 0.9-1.5x (from t = 990, 4.5e-4 is diffusers' own)."""
    out = _upscale(unet, golden, timesteps=timesteps, noise_level=level, guidance_scale=scale)
    reference64 = steps[f"{name}/out64"]
    diffusers_own = (golden[f"out_{name}"].double() - reference64).abs().max().item()
    err = (out.double() - reference64).abs().max().item()
    assert 0 < diffusers_own and err <= 5 * diffusers_own, f"{name}: {err:.2e} vs diffusers' own {diffusers_own:.2e}"


def test_noise_level_and_generator_change_the_image(unet, golden):
    steps = [900, 600, 300, 0]
    a = _upscale(unet, golden, timesteps=steps)
    assert torch.equal(a, _upscale(unet, golden, timesteps=steps))
    assert not torch.allclose(a, _upscale(unet, golden, timesteps=steps, noise_level=0))
    assert not torch.allclose(a, _upscale(unet, golden, timesteps=steps, generator=torch.Generator().manual_seed(8)))


def test_if_stage2_is_exported_at_the_top_level():
    assert minidiff.if_stage2 is if_stage2


def test_stage1_unet_is_refused(golden):
    stage1 = IFUNet.from_pretrained(FIXTURES / "if_tiny")
    with pytest.raises(ValueError, match="stage-2"):
        if_stage2(stage1, golden["low_res"], torch.randn(2, 7, 64), torch.randn(1, 7, 64), progress=False)


def test_stage2_unet_is_refused_by_stage1(unet):
    """if_stage1 names the mix-up before its first UNet call, instead of failing inside it."""
    embeds = torch.randn(1, 7, unet.config.encoder_hid_dim)
    with pytest.raises(ValueError, match="stage-2 .*if_stage2"):
        minidiff.if_stage1(unet, embeds, embeds, height=16, width=16, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(noise_level=1000), r"noise_level must lie in \[0, 999\]"),
        (dict(noise_level=-1), "noise_level"),
        (dict(noise_level=2.5), "noise_level"),
        (dict(height=18), "multiples of 4"),
        (dict(guidance_scale=float("nan")), "finite"),
    ],
)
def test_bad_arguments_are_refused(unet, golden, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _upscale(unet, golden, timesteps=[900, 0], **kwargs)


def test_low_res_must_match_the_prompts(unet, golden):
    emb, neg = golden["prompt_embeds"], golden["negative_embeds"]
    with pytest.raises(ValueError, match="low_res has batch 1"):
        if_stage2(unet, golden["low_res"][:1], emb, neg, height=16, width=16, progress=False)
    with pytest.raises(ValueError, match="low_res"):
        if_stage2(unet, golden["low_res"][:, :1], emb, neg, height=16, width=16, progress=False)
    with pytest.raises(ValueError, match="low_res"):
        if_stage2(unet, golden["low_res"] * float("nan"), emb, neg, height=16, width=16, progress=False)



def _views_run(unet, golden, embeds, views, low_res=None):
    low_res = golden["low_res"] if low_res is None else low_res
    return if_stage2(unet, low_res, embeds, golden["negative_embeds"], timesteps=[900, 600, 300, 0], height=16,
                     width=16, generator=torch.Generator().manual_seed(7), progress=False, views=views)


def test_views_with_identity_twice_is_plain_guidance(unet, golden):
    """Anagrams at stage 2 average the views' guided predictions: two identity views with one
    prompt give the plain upscale, for every image of low_res."""
    emb = golden["prompt_embeds"][:1]
    plain = _views_run(unet, golden, emb.expand(2, -1, -1), None)
    two = _views_run(unet, golden, torch.cat([emb, emb]), ["identity", "identity"])
    assert two.shape == plain.shape == (2, 3, 16, 16)
    assert (two - plain).abs().max().item() <= 1e-4


def test_a_flip_view_changes_the_upscale(unet, golden):
    emb = golden["prompt_embeds"][:1]
    plain = _views_run(unet, golden, emb, None, golden["low_res"][:1])
    flipped = _views_run(unet, golden, emb, ["flip"], golden["low_res"][:1])
    assert flipped.shape == plain.shape == (1, 3, 16, 16) and torch.isfinite(flipped).all()
    assert not torch.allclose(flipped, plain, atol=1e-3)


def test_views_need_one_prompt_each(unet, golden):
    with pytest.raises(ValueError, match="one prompt embedding per view"):
        _views_run(unet, golden, golden["prompt_embeds"][:1], ["identity", "flip"])


def _hybrid_run(unet, golden, far, near, hybrid, timesteps=(900, 600, 300, 0)):
    embeds = torch.cat([golden["prompt_embeds"][far:far + 1], golden["prompt_embeds"][near:near + 1]])
    return if_stage2(unet, golden["low_res"][:1], embeds, golden["negative_embeds"], timesteps=timesteps,
                     height=16, width=16, generator=torch.Generator().manual_seed(7), progress=False, hybrid=hybrid)


def _eps_of_stage2(unet, golden, monkeypatch, embeds, **kwargs) -> torch.Tensor:
    """The eps half of the guided denoiser that if_stage2 builds, at one fixed (x_t, t = 500)."""
    import minidiff.if_pipeline as pipeline

    built = []
    monkeypatch.setattr(pipeline, "iterative_denoise", lambda den, x, *a, **k: built.append(den) or x)
    if_stage2(unet, golden["low_res"][:1], embeds, golden["negative_embeds"], height=16, width=16,
              generator=torch.Generator().manual_seed(7), progress=False, **kwargs)
    x_t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    return built[0](x_t, torch.tensor([500]))[:, :3]


def test_hybrid_far_prompt_owns_the_low_band(unet64, golden, monkeypatch):
    """eps = low_pass(eps_far) + high_pass(eps_near). With a delta low-pass (sigma -> 0) all of
    eps is low band, so it is the far prompt's guided eps, not the near one's; swapping the
    prompts swaps it. (Only eps: the variance half is the mean over both prompts.)

    The network runs in float64: the hybrid's UNet batch holds three rows where the plain one
    holds two, and in float32 convolutions of different batches round differently (1e-5 on some
    CPUs). In float64 only the cast of the output to float32 is left: 1e-6 holds anywhere."""
    unet, pe = unet64, golden["prompt_embeds"]
    far, near = (_eps_of_stage2(unet, golden, monkeypatch, pe[k:k + 1]) for k in (0, 1))
    assert not torch.allclose(far, near, atol=1e-3)
    delta = (3, 0.01)
    assert (_eps_of_stage2(unet, golden, monkeypatch, pe[:2], hybrid=delta) - far).abs().max().item() <= 1e-6
    assert (_eps_of_stage2(unet, golden, monkeypatch, pe[[1, 0]], hybrid=delta) - near).abs().max().item() <= 1e-6
    mixed = _eps_of_stage2(unet, golden, monkeypatch, pe[:2], hybrid=(5, 1.0))
    assert not torch.allclose(mixed, far, atol=1e-3) and not torch.allclose(mixed, near, atol=1e-3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(hybrid=(5, 1.0), views=["identity", "flip"]), "give one of them"),
    (dict(hybrid=(4, 1.0)), "odd"),
    (dict(hybrid=(5, -1.0)), "sigma"),
    (dict(hybrid=5), r"\(kernel_size, sigma\)"),
])
def test_bad_hybrid_arguments_are_refused(unet, golden, kwargs, match):
    with pytest.raises(ValueError, match=match):
        if_stage2(unet, golden["low_res"][:1], golden["prompt_embeds"][:2], golden["negative_embeds"], height=16,
                  width=16, progress=False, **kwargs)


def test_hybrid_needs_two_prompts(unet, golden):
    with pytest.raises(ValueError, match="two prompts"):
        if_stage2(unet, golden["low_res"][:1], golden["prompt_embeds"][:1], golden["negative_embeds"], height=16,
                  width=16, progress=False, hybrid=(5, 1.0))


# ----------------------------------------------------------------------------------------
# The loop alone, replayed: diffusers' UNet outputs in place of the network
# ----------------------------------------------------------------------------------------


class ReplayUNet(torch.nn.Module):
    """A stage-2 "UNet" that answers call i with diffusers' recorded output of call i.

    diffusers stacks its batch [uncond, cond], minidiff [cond, uncond]: each of our rows is
    given the recorded row of the same image and the same branch (told apart by the text).
    It also records what our loop fed it ([x_t, upscaled], t, noise level) for the test to compare.
    """

    def __init__(self, steps: dict, run: str, negative: torch.Tensor, unet: IFUNet):
        super().__init__()
        self.config, self.num_upsamplers = unet.config, unet.num_upsamplers
        self.weight = torch.nn.Parameter(torch.zeros(()))  # the adapter reads dtype and device from here
        self.steps, self.run, self.negative, self.seen = steps, run, negative, []

    def forward(self, x_in, t, text, noise_level):
        out = self.steps[f"{self.run}/unet_out/{len(self.seen)}"]
        self.seen.append((x_in.clone(), t.clone(), noise_level.clone()))
        batch = x_in.shape[0] // 2
        uncond = torch.tensor([torch.equal(row, self.negative) for row in text])
        rows = torch.arange(x_in.shape[0]) % batch + torch.where(uncond, 0, batch)
        return out[rows]


@pytest.mark.parametrize("name, timesteps, level, scale", RUNS)
def test_loop_replays_diffusers_steps(unet, golden, steps, name, timesteps, level, scale):
    """Fed diffusers' own UNet outputs, if_stage2 draws x_T and the low-res noise as
    IFSuperResolutionPipeline does, feeds the UNet the same x_t and noised upscaled image at
    every step, with the same t and noise level, and lands on the same x after every step: CFG
    on the eps half, the variance from the conditional half, the learned-range DDPM step and
    dynamic thresholding. No network runs, only float32 elementwise arithmetic: bit for bit
    with the kernels the fixture was made with (AVX512 here, and AVX2), and within the rounding
    allowance with others (PyTorch's default kernels: 1.8e-5 from t = 990)."""
    replay = ReplayUNet(steps, name, golden["negative_embeds"][0], unet)
    out = _upscale(replay, golden, timesteps=timesteps, noise_level=level, guidance_scale=scale)
    n = len(replay.seen)
    assert n == len([k for k in steps if k.startswith(f"{name}/x/")]) and n > 0
    B = out.shape[0]
    tol = rounding_allowance(timesteps)
    for i, (x_in, t, level_i) in enumerate(replay.seen):
        x_t = steps[f"{name}/x_T"] if i == 0 else steps[f"{name}/x/{i - 1}"]
        torch.testing.assert_close(x_in[:, :3], torch.cat([x_t, x_t]), rtol=0, atol=tol, msg=f"{name}: x_t at step {i}")
        torch.testing.assert_close(x_in[:, 3:], steps[f"{name}/upscaled"].repeat(2, 1, 1, 1), rtol=0, atol=1e-6)
        assert t.tolist() == steps[f"{name}/t/{i}"].tolist(), f"{name}: t at step {i}"
        assert level_i.tolist() == steps[f"{name}/noise_level/{i}"].tolist(), f"{name}: noise level at step {i}"
    torch.testing.assert_close(out, steps[f"{name}/x/{n - 1}"][:B].clamp(-1, 1), rtol=0, atol=tol)
