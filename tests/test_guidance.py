"""Guidance rules (CFG, visual anagrams, hybrid images) checked against exact models.

The class-conditional model is minidiff.analytic.finite_data_model: the optimal denoiser of a
small labelled set of 8x8 images, with one-hot conditions and the zero vector as the null
condition. Identities are checked to float64 rounding (atol 1e-10) unless stated.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minidiff.analytic import finite_data_model
from minidiff.filters import high_pass, low_pass
from minidiff.guidance import anagram, cfg, factorized, frequency_bands, hybrid, hybrid_bands
from minidiff.samplers import flow_euler, iterative_denoise
from minidiff.schedule import DDPMSchedule, FlowSchedule, strided_timesteps
from minidiff.views import get_view

IF = DDPMSchedule.deepfloyd()
FLOW = FlowSchedule()
ATOL = dict(atol=1e-10, rtol=0)


def labelled_data(n_per_class: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of +-1 8x8 images, float64, with labels 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(2 * n_per_class, 1, 8, 8, generator=g, dtype=torch.float64).sign()
    return data, torch.arange(2).repeat_interleave(n_per_class)


def one_hot(k: int, batch: int = 1) -> torch.Tensor:
    return F.one_hot(torch.full((batch,), k), 2).double()


NULL = torch.zeros(1, 2, dtype=torch.float64)


def inputs(schedule, batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A noisy batch x_t and its (B,) timesteps, at a mid noise level."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.full((batch,), 0.5) if schedule is FLOW else torch.full((batch,), 400)
    return x, t


class CountingModel:
    """Wraps a model and records the batch size of every call."""

    def __init__(self, model):
        self.model, self.batches = model, []

    def __call__(self, x, t, cond):
        self.batches.append(x.shape[0])
        return self.model(x, t, cond)


SCHEDULES = pytest.mark.parametrize("schedule", [IF, FLOW], ids=["ddpm", "flow"])

# ----------------------------------------------------------------------------------------
# Classifier-free guidance
# ----------------------------------------------------------------------------------------


@SCHEDULES
def test_cfg_scale_one_is_the_conditional_and_zero_the_unconditional_prediction(schedule):
    data, labels = labelled_data()
    model = finite_data_model(data, schedule, labels, 2)
    x, t = inputs(schedule)
    torch.testing.assert_close(cfg(model, one_hot(1), NULL, 1.0)(x, t), model(x, t, one_hot(1, 3)), **ATOL)
    torch.testing.assert_close(cfg(model, one_hot(1), NULL, 0.0)(x, t), model(x, t, NULL.expand(3, 2)), **ATOL)


@SCHEDULES
@pytest.mark.parametrize("scale", [0.5, 3.0, 7.5])
def test_batched_cfg_is_one_call_and_equals_two_separate_passes(schedule, scale):
    data, labels = labelled_data()
    model = CountingModel(finite_data_model(data, schedule, labels, 2))
    x, t = inputs(schedule)
    guided = cfg(model, one_hot(0), NULL, scale)(x, t)
    assert model.batches == [6], "conditional and unconditional passes must share one call of batch 2B"
    eps_c, eps_u = model.model(x, t, one_hot(0, 3)), model.model(x, t, NULL.expand(3, 2))
    torch.testing.assert_close(guided, eps_u + scale * (eps_c - eps_u), **ATOL)


def test_cfg_condition_of_batch_one_equals_the_condition_repeated():
    data, labels = labelled_data()
    model = finite_data_model(data, IF, labels, 2)
    x, t = inputs(IF)
    a = cfg(model, one_hot(1), NULL, 4.0)(x, t)
    b = cfg(model, one_hot(1, 3), NULL.expand(3, 2), 4.0)(x, t)
    torch.testing.assert_close(a, b, **ATOL)


def test_cfg_per_sample_conditions_guide_each_sample_to_its_own_class():
    """cond of batch B: sample i is guided by cond[i] (class 0, 1, 0)."""
    data, labels = labelled_data()
    model = finite_data_model(data, IF, labels, 2)
    cond = F.one_hot(torch.tensor([0, 1, 0]), 2).double()
    x, t = inputs(IF)
    out = cfg(model, cond, NULL, 2.0)(x, t)
    for i in range(3):
        torch.testing.assert_close(out[i:i + 1], cfg(model, cond[i:i + 1], NULL, 2.0)(x[i:i + 1], t[i:i + 1]), **ATOL)


def toy_2c_model(x, t, cond):
    """An IF-shaped model: 2C channels, eps = x * w(cond), variance values v = tanh(w(cond) x^2)."""
    w = cond.reshape(cond.shape[0], -1).sum(1).reshape(-1, 1, 1, 1) + 0.5
    return torch.cat([x * w, torch.tanh(w * x**2)], dim=1)


def test_cfg_on_2c_outputs_guides_eps_and_keeps_the_conditional_variance():
    x, t = inputs(IF)
    cond, uncond = torch.ones(1, 4, 3, dtype=torch.float64), torch.zeros(1, 4, 3, dtype=torch.float64)
    out = cfg(toy_2c_model, cond, uncond, 7.0)(x, t)
    c, u = toy_2c_model(x, t, cond.expand(3, 4, 3)), toy_2c_model(x, t, uncond.expand(3, 4, 3))
    assert out.shape == (3, 2, 8, 8)
    torch.testing.assert_close(out[:, :1], u[:, :1] + 7.0 * (c[:, :1] - u[:, :1]), **ATOL)
    torch.testing.assert_close(out[:, 1:], c[:, 1:], **ATOL)


def test_cfg_accepts_integer_labels_as_conditions():
    """MNIST-style models may take class labels (B,) with a null label; cat works on them too."""

    def label_model(x, t, labels):
        return x * (labels.to(x.dtype).reshape(-1, 1, 1, 1) + 1)

    x, t = inputs(FLOW)
    out = cfg(label_model, torch.tensor([3]), torch.tensor([10]), 2.0)(x, t)
    torch.testing.assert_close(out, 11 * x + 2.0 * (4 * x - 11 * x), **ATOL)


@settings(max_examples=25)
@given(scale=st.floats(-3, 10), seed=st.integers(0, 2**16))
def test_cfg_is_affine_in_the_scale(scale, seed):
    """cfg(s) == cfg(0) + s (cfg(1) - cfg(0)) for every scale s."""
    data, labels = labelled_data()
    model = finite_data_model(data, FLOW, labels, 2)
    x, t = inputs(FLOW, seed=seed)
    g0, g1 = cfg(model, one_hot(0), NULL, 0.0)(x, t), cfg(model, one_hot(0), NULL, 1.0)(x, t)
    torch.testing.assert_close(cfg(model, one_hot(0), NULL, scale)(x, t), g0 + scale * (g1 - g0), atol=1e-9, rtol=1e-9)


# ----------------------------------------------------------------------------------------
# Visual anagrams
# ----------------------------------------------------------------------------------------


@SCHEDULES
def test_anagram_with_identity_views_and_one_prompt_is_plain_cfg(schedule):
    data, labels = labelled_data()
    model = finite_data_model(data, schedule, labels, 2)
    x, t = inputs(schedule)
    plain = cfg(model, one_hot(1), NULL, 3.0)(x, t)
    torch.testing.assert_close(anagram(model, [("identity", one_hot(1))], NULL, 3.0)(x, t), plain, **ATOL)
    twice = [(get_view("identity"), one_hot(1)), (get_view("identity"), one_hot(1))]
    torch.testing.assert_close(anagram(model, twice, NULL, 3.0)(x, t), plain, **ATOL)


def flip_pair_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class 0: three images A; class 1: the same images upside down, B = flip(A)."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64).sign()
    b = a.flip(-2)
    return torch.cat([a, b]), torch.tensor([0, 0, 0, 1, 1, 1]), a, b


@SCHEDULES
def test_anagram_is_one_call_and_maps_each_view_back_with_its_inverse(schedule):
    """For B = flip(A) the flipped model of class 1 *is* the model of class 0, so averaging
    CFG_A(x) with flip^{-1}(CFG_B(flip x)) must give CFG_A(x) exactly. Leaving out either the
    view or its inverse breaks the identity."""
    data, labels, _, _ = flip_pair_data()
    model = CountingModel(finite_data_model(data, schedule, labels, 2))
    x, t = inputs(schedule)
    out = anagram(model, [("identity", one_hot(0)), ("flip", one_hot(1))], NULL, 2.5)(x, t)
    assert model.batches == [12], "2 views x (cond + uncond) x B = 12 in one call"
    torch.testing.assert_close(out, cfg(model.model, one_hot(0), NULL, 2.5)(x, t), **ATOL)
    guided_a = cfg(model.model, one_hot(0), NULL, 2.5)(x, t)
    no_inverse = (guided_a + cfg(model.model, one_hot(1), NULL, 2.5)(x.flip(-2), t)) / 2
    assert (out - no_inverse).abs().max() > 0.1


@pytest.mark.parametrize("schedule,ts,method", [
    (IF, strided_timesteps(990, 30), "ddpm"),
    (FLOW, FlowSchedule.timesteps(32), "euler"),
], ids=["ddpm", "flow"])
def test_anagram_sample_is_a_member_of_one_class_upright_and_of_the_other_flipped(schedule, ts, method):
    data, labels, a, b = flip_pair_data()
    model = finite_data_model(data, schedule, labels, 2)
    den = anagram(model, [("identity", one_hot(0)), ("flip", one_hot(1))], NULL, 2.0)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(8, 1, 8, 8, generator=generator, dtype=torch.float64)
    sampler = {"ddpm": iterative_denoise, "euler": flow_euler}[method]
    x = sampler(den, noise, schedule, ts, generator=generator, progress=False)
    upright = torch.cdist(x.flatten(1), a.flatten(1)).min(1).values
    flipped = torch.cdist(x.flip(-2).flatten(1), b.flatten(1)).min(1).values
    tol = 0.1 * 8  # L2 over 64 pixels: at most 0.1 per pixel on average
    assert upright.max() < tol and flipped.max() < tol, (upright, flipped)


def test_anagram_maps_2c_variance_back_by_the_pixel_permutation_without_sign():
    """The negate view: an odd eps and an even variance give, after the inverse view, exactly
    the plain CFG output, variance half included (its sign is not flipped)."""
    x, t = inputs(IF)
    cond, uncond = torch.ones(1, 4, 3, dtype=torch.float64), torch.zeros(1, 4, 3, dtype=torch.float64)
    out = anagram(toy_2c_model, [("negate", cond)], uncond, 5.0)(x, t)
    torch.testing.assert_close(out, cfg(toy_2c_model, cond, uncond, 5.0)(x, t), **ATOL)
    out = anagram(toy_2c_model, [("identity", cond), ("rot90", cond)], uncond, 5.0)(x, t)
    torch.testing.assert_close(out[:, 1:], (toy_2c_model(x, t, cond.expand(3, 4, 3))[:, 1:]), **ATOL)


def test_anagram_rejects_empty_and_malformed_view_lists():
    data, labels = labelled_data()
    model = finite_data_model(data, IF, labels, 2)
    with pytest.raises(ValueError, match="empty"):
        anagram(model, [], NULL, 1.0)
    with pytest.raises(ValueError, match="pair"):
        anagram(model, [get_view("flip")], NULL, 1.0)
    with pytest.raises(ValueError, match="unknown view"):
        anagram(model, [("upside-down", one_hot(0))], NULL, 1.0)
    with pytest.raises(ValueError, match="View"):
        anagram(model, [(lambda x: x, one_hot(0))], NULL, 1.0)
    with pytest.raises(ValueError, match="B, C, H, W"):
        anagram(model, [("flip", one_hot(0))], NULL, 1.0)(torch.zeros(64), torch.zeros(1))


# ----------------------------------------------------------------------------------------
# Hybrid images and factorized diffusion
# ----------------------------------------------------------------------------------------

K = dict(kernel_size=5, sigma=1.0)  # the course's 33 / 2.0 needs images larger than 8x8


@SCHEDULES
def test_hybrid_with_the_same_prompt_twice_is_plain_cfg(schedule):
    data, labels = labelled_data()
    model = finite_data_model(data, schedule, labels, 2)
    x, t = inputs(schedule)
    torch.testing.assert_close(hybrid(model, one_hot(1), one_hot(1), NULL, 3.0, **K)(x, t),
                               cfg(model, one_hot(1), NULL, 3.0)(x, t), **ATOL)


def test_hybrid_is_low_pass_of_one_guided_prediction_plus_high_pass_of_the_other_in_one_call():
    data, labels = labelled_data()
    model = CountingModel(finite_data_model(data, IF, labels, 2))
    x, t = inputs(IF)
    out = hybrid(model, one_hot(0), one_hot(1), NULL, 3.0, **K)(x, t)
    assert model.batches == [9], "two prompts and the null condition share one call of batch 3B"
    low = cfg(model.model, one_hot(0), NULL, 3.0)(x, t)
    high = cfg(model.model, one_hot(1), NULL, 3.0)(x, t)
    torch.testing.assert_close(out, low_pass(low, 5, 1.0) + high_pass(high, 5, 1.0), **ATOL)


def test_hybrid_default_filter_matches_the_course_on_a_64px_image():
    """Kernel 33, sigma 2 by default (IF's 64x64 images)."""
    def model(x, t, cond):
        return x * (1 + cond.reshape(-1, 1, 1, 1))

    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    out = hybrid(model, torch.ones(1), 2 * torch.ones(1), torch.zeros(1), 1.0)(x, torch.zeros(1))
    torch.testing.assert_close(out, low_pass(2 * x, 33, 2.0) + high_pass(3 * x, 33, 2.0), **ATOL)


def test_hybrid_bands_with_two_prompts_is_hybrid():
    data, labels = labelled_data()
    model = finite_data_model(data, FLOW, labels, 2)
    x, t = inputs(FLOW)
    bands = hybrid_bands(model, [one_hot(0), one_hot(1)], NULL, 2.0, sigmas=[1.0], kernel_size=5)
    torch.testing.assert_close(bands(x, t), hybrid(model, one_hot(0), one_hot(1), NULL, 2.0, **K)(x, t), **ATOL)


def test_hybrid_bands_with_one_prompt_for_every_band_is_plain_cfg():
    data, labels = labelled_data()
    model = CountingModel(finite_data_model(data, IF, labels, 2))
    x, t = inputs(IF)
    out = hybrid_bands(model, [one_hot(0)] * 3, NULL, 2.0, sigmas=[2.0, 0.7], kernel_size=7)(x, t)
    assert model.batches == [12]
    torch.testing.assert_close(out, cfg(model.model, one_hot(0), NULL, 2.0)(x, t), **ATOL)


@given(seed=st.integers(0, 2**16), n_bands=st.integers(1, 4))
def test_frequency_bands_sum_to_the_image(seed, n_bands):
    """sum(frequency_bands(x, sigmas)) == x for any number of bands."""
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    sigmas = [3.0 / (k + 1) for k in range(n_bands - 1)]
    bands = frequency_bands(x, sigmas, kernel_size=9)
    assert len(bands) == n_bands
    torch.testing.assert_close(sum(bands), x, atol=1e-12, rtol=0)


def test_factorized_averages_the_2c_variance_halves():
    x, t = inputs(IF)
    c1, c2, u = (torch.full((1, 2), v, dtype=torch.float64) for v in (1.0, 2.0, 0.0))
    out = factorized(toy_2c_model, [(lambda e: e, c1), (lambda e: 0 * e, c2)], u, 3.0)(x, t)
    v1, v2 = toy_2c_model(x, t, c1.expand(3, 2))[:, 1:], toy_2c_model(x, t, c2.expand(3, 2))[:, 1:]
    torch.testing.assert_close(out[:, 1:], (v1 + v2) / 2, **ATOL)
    torch.testing.assert_close(out[:, :1], cfg(toy_2c_model, c1, u, 3.0)(x, t)[:, :1], **ATOL)


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------


def test_guidance_input_errors_are_value_errors():
    data, labels = labelled_data()
    model = finite_data_model(data, IF, labels, 2)
    x, t = inputs(IF)  # batch 3
    with pytest.raises(ValueError, match="batch 2"):
        cfg(model, one_hot(0, 2), NULL, 1.0)(x, t)
    with pytest.raises(ValueError, match="tensor"):
        cfg(model, 0, NULL, 1.0)(x, t)
    with pytest.raises(ValueError, match="same shape"):
        cfg(model, one_hot(0), torch.zeros(1, 3, dtype=torch.float64), 1.0)(x, t)
    with pytest.raises(ValueError, match="channels"):
        cfg(lambda x, t, c: torch.cat([x, x, x], 1), one_hot(0), NULL, 1.0)(x, t)
    with pytest.raises(ValueError, match="B, C, H, W"):
        cfg(model, one_hot(0), NULL, 1.0)(x[0], t)
    with pytest.raises(ValueError, match="sigmas"):
        hybrid_bands(model, [one_hot(0)] * 3, NULL, 1.0, sigmas=[1.0])
    with pytest.raises(ValueError, match="decrease"):
        frequency_bands(x, [1.0, 2.0])
    with pytest.raises(ValueError, match="kernel"):
        hybrid(model, one_hot(0), one_hot(1), NULL, 1.0)(x, t)  # kernel 33 on an 8x8 image


# ----------------------------------------------------------------------------------------
# Guidance in a limited interval
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", [FLOW, IF], ids=["flow", "ddpm"])
def test_cfg_interval_inside_is_cfg_and_outside_is_the_conditional_model(schedule):
    """cfg(..., interval=(lo, hi)) == cfg at times in [lo, hi], == model(x_t, t, cond) (one call of
    batch B, the scale unused) outside it."""
    data, labels = labelled_data()
    model = CountingModel(finite_data_model(data, schedule, labels, 2))
    x, t = inputs(schedule)
    cond = one_hot(1, x.shape[0])
    t_value = float(t[0])
    plain = cfg(model, cond, NULL, 4.0)(x, t)
    inside = cfg(model, cond, NULL, 4.0, interval=(t_value - 0.1, t_value + 0.1))(x, t)
    torch.testing.assert_close(inside, plain, **ATOL)
    model.batches.clear()
    outside = cfg(model, cond, NULL, 4.0, interval=(t_value + 0.1, t_value + 1.0))(x, t)
    assert model.batches == [x.shape[0]]
    torch.testing.assert_close(outside, model(x, t, cond), **ATOL)
    assert not torch.allclose(outside, plain)


def test_cfg_interval_changes_a_flow_sample_only_through_the_guided_steps():
    """A guided interval that holds no sampler time gives the conditional sample; one that holds
    every time gives the guided sample."""
    data, labels = labelled_data()
    model = finite_data_model(data, FLOW, labels, 2)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grid = [i / 8 for i in range(9)]
    cond = one_hot(0, 2)
    run = lambda den: flow_euler(den, x.clone(), FLOW, grid, progress=False)  # noqa: E731
    torch.testing.assert_close(run(cfg(model, cond, NULL, 3.0, interval=(0.0, 1.0))), run(cfg(model, cond, NULL, 3.0)),
                               **ATOL)
    torch.testing.assert_close(run(cfg(model, cond, NULL, 3.0, interval=(2.0, 3.0))), run(cfg(model, cond, NULL, 1.0)),
                               **ATOL)


@pytest.mark.parametrize("interval, match", [((0.5, 0.2), "t_lo <= t_hi"), ((0.1,), "pair"), (0.3, "pair"),
                                             ((float("nan"), 1.0), "interval")])
def test_cfg_refuses_a_bad_interval(interval, match):
    data, labels = labelled_data()
    model = finite_data_model(data, FLOW, labels, 2)
    with pytest.raises(ValueError, match=match):
        cfg(model, one_hot(0), NULL, 3.0, interval=interval)
