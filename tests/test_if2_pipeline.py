"""IF stage-2 upscaling end to end on the tiny random stage-2 checkpoint (8x8 -> 16x16).

tests/fixtures/if2_pipeline.safetensors holds the outputs of diffusers' IFSuperResolutionPipeline
(schedulers as scripts/convert_if.py builds them) on tests/fixtures/if2_tiny, for the same
embeddings, low-res images and generator seed (tools/make_if2_fixtures.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import minidiff
from minidiff.if_pipeline import if_stage2
from minidiff.models.if_unet import IFUNet

FIXTURES = Path(__file__).parent / "fixtures"

# (name, timesteps, noise level, guidance scale, tolerance). From t = 990 the clean-image
# estimate multiplies float32 rounding by 1/sqrt(ab_990) (about 150): there our own float32
# and float64 runs already differ by 3e-4, so that run is held to 5e-4.
RUNS = [
    ("steps4", [900, 600, 300, 0], 250, 4.0, 1e-4),
    ("default50", None, 100, 7.0, 1e-4),
    ("steps4_from990", [990, 660, 330, 0], 250, 4.0, 5e-4),
]


@pytest.fixture(scope="module")
def unet() -> IFUNet:
    return IFUNet.from_pretrained(FIXTURES / "if2_tiny")


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_file(str(FIXTURES / "if2_pipeline.safetensors"))


def _upscale(unet, golden, **kwargs) -> torch.Tensor:
    args = dict(height=16, width=16, generator=torch.Generator().manual_seed(7), progress=False)
    args.update(kwargs)
    return if_stage2(unet, golden["low_res"], golden["prompt_embeds"], golden["negative_embeds"], **args)


@pytest.mark.parametrize("name, timesteps, level, scale, tol", RUNS)
def test_matches_diffusers_super_resolution_pipeline(unet, golden, name, timesteps, level, scale, tol):
    out = _upscale(unet, golden, timesteps=timesteps, noise_level=level, guidance_scale=scale)
    ref = golden[f"out_{name}"]
    assert out.shape == ref.shape == (2, 3, 16, 16) and out.dtype == torch.float32
    assert (out - ref).abs().max().item() <= tol


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


def test_hybrid_far_prompt_owns_the_low_band(unet, golden, monkeypatch):
    """eps = low_pass(eps_far) + high_pass(eps_near). With a delta low-pass (sigma -> 0) all of
    eps is low band, so it is the far prompt's guided eps, not the near one's; swapping the
    prompts swaps it. (Only eps: the variance half is the mean over both prompts.)"""
    pe = golden["prompt_embeds"]
    far, near = (_eps_of_stage2(unet, golden, monkeypatch, pe[k:k + 1]) for k in (0, 1))
    assert not torch.allclose(far, near, atol=1e-3)
    delta = (3, 0.01)
    assert (_eps_of_stage2(unet, golden, monkeypatch, pe[:2], hybrid=delta) - far).abs().max().item() <= 1e-5
    assert (_eps_of_stage2(unet, golden, monkeypatch, pe[[1, 0]], hybrid=delta) - near).abs().max().item() <= 1e-5
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
