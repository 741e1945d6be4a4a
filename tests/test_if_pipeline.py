"""IF stage-1 sampling end to end on the tiny random checkpoint (16x16, 4 steps)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minidiff.guidance import cfg
from minidiff.if_pipeline import IFDenoiser, if_stage1
from minidiff.models.if_unet import IFUNet

TINY = Path(__file__).parent / "fixtures" / "if_tiny"
STEPS = [990, 660, 330, 0]


@pytest.fixture(scope="module")
def unet() -> IFUNet:
    return IFUNet.from_pretrained(TINY)


def _embeds(seed: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 7, 64, generator=torch.Generator().manual_seed(seed))


def test_adapter_keeps_fp32_state_with_fp16_weights(unet):
    half = IFUNet.from_pretrained(TINY, dtype=torch.float16)
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([500, 500])
    out32 = IFDenoiser(unet)(x, t, _embeds(0))
    out16 = IFDenoiser(half)(x, t, _embeds(0))
    assert out16.dtype == torch.float32 and out16.shape == (2, 6, 16, 16)
    assert (out16 - out32).abs().max() < 0.05


def test_cfg_on_the_adapter_is_the_guidance_formula(unet):
    """Identity: cfg(model)(x, t) == eps_u + s (eps_c - eps_u) on the eps half, variance from cond."""
    model = IFDenoiser(unet)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([700, 700])
    c, u = _embeds(1), _embeds(2, batch=1)
    guided = cfg(model, c, u, 7.0)(x, t)
    out_c, out_u = model(x, t, c), model(x, t, u.expand(2, -1, -1))
    assert torch.allclose(guided[:, :3], out_u[:, :3] + 7.0 * (out_c[:, :3] - out_u[:, :3]), atol=1e-4)
    assert torch.allclose(guided[:, 3:], out_c[:, 3:], atol=1e-5)


def test_if_stage1_samples_images_reproducibly(unet):
    kwargs = dict(timesteps=STEPS, height=16, width=16, progress=False)
    a = if_stage1(unet, _embeds(3), _embeds(4, batch=1), generator=torch.Generator().manual_seed(0), **kwargs)
    b = if_stage1(unet, _embeds(3), _embeds(4, batch=1), generator=torch.Generator().manual_seed(0), **kwargs)
    c = if_stage1(unet, _embeds(5), _embeds(4, batch=1), generator=torch.Generator().manual_seed(0), **kwargs)
    assert a.shape == (2, 3, 16, 16) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and a.abs().max() <= 1.0
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # the prompt matters


def test_if_stage1_calls_back_once_per_step_and_checks_inputs(unet):
    seen = []
    x_T = torch.randn(1, 3, 16, 16)
    if_stage1(unet, _embeds(6, 1)[0], _embeds(7, 1), timesteps=STEPS, x_T=x_T, progress=False,
              callback=lambda i, t, x, x0: seen.append((i, int(t), tuple(x0.shape))))
    assert seen == [(0, 990, (1, 3, 16, 16)), (1, 660, (1, 3, 16, 16)), (2, 330, (1, 3, 16, 16))]
    with pytest.raises(ValueError, match="x_T has batch"):
        if_stage1(unet, _embeds(6), _embeds(7, 1), timesteps=STEPS, x_T=x_T, progress=False)
    with pytest.raises(ValueError, match="prompt_embeds"):
        if_stage1(unet, torch.zeros(7), _embeds(7, 1), timesteps=STEPS, progress=False)
