"""Properties of the math that the other tests left open: each one a change would break.

Each test here kills mutants of the math modules (``python tools/mutation.py``) that every
other test let through: a change to what a method computes that no test noticed. Each states
the property the change breaks, where it can with the exact denoisers of minidiff.analytic.
The first two are mistakes students make:

- inpainting pastes the known pixels noised to the schedule's level of the step it reached,
  with fresh noise each step (not the clean image);
- DDIM with eta > 0 lands on the moments of the closed-form recursion for Gaussian data, and
  eta = 1 is DDPM's step, draw for draw.

Then, module by module: guidance, views, filters, edits, the Part B losses, beta schedules and
thresholding, the samplers' loop contract (callbacks, time types, NaN reports, generators), the
schedules (construction, dtypes, checks, time grids) and the MNIST UNet against its architecture
written out. Objects whose construction is under test are built inside the test, not at import.

Statistical tolerance as in test_samplers.py: 5 standard errors of the sample mean and variance.
"""

from __future__ import annotations

import io
import math
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minidiff.analytic import finite_data_denoiser, gaussian_denoiser
from minidiff.betas import cosine_betas, dynamic_threshold, linear_betas
from minidiff.edit import image_to_image, inpaint, sdedit
from minidiff.filters import gaussian_blur, gaussian_kernel1d, high_pass, low_pass
from minidiff.guidance import cfg, factorized, hybrid
from minidiff.losses import ddpm_example, denoiser_example, flow_example, judge_example, pure_noise_example
from minidiff.models.if_blocks import AttentionPooling, ResnetBlock, SimpleCrossAttention, timestep_embedding
from minidiff.models.mnist import (
    ClassConditionalUNet, TimeConditionalUNet, UnconditionalUNet, build_model, drop_class, fold_batchnorm,
)
from minidiff.samplers import ddim, ddim_step, flow_euler, flow_heun, iterative_denoise, one_step_denoise, run_denoiser
from minidiff.schedule import DDPMSchedule, FlowSchedule, check_schedule, strided_timesteps
from minidiff.views import get_view

IF = DDPMSchedule.deepfloyd()
LIN = DDPMSchedule.linear()
FLOW = FlowSchedule()
SCHEDULES = {"deepfloyd": IF, "linear": LIN}
seeds = st.integers(0, 2**31 - 1)


def _randn(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def assert_standard_normal(z: torch.Tensor, what: str) -> None:
    """Sample mean 0 and variance 1, within 5 standard errors of n values."""
    n = z.numel()
    mean, var = z.double().mean().item(), z.double().var().item()
    assert abs(mean) < 5 / math.sqrt(n), f"{what}: mean {mean:.4f}, expected 0"
    assert abs(var - 1) < 5 * math.sqrt(2 / (n - 1)), f"{what}: variance {var:.4f}, expected 1"


# ----------------------------------------------------------------------------------------
# Inpainting: the known pixels carry the schedule's noise at every step
# ----------------------------------------------------------------------------------------

INPAINT_SETUPS = {
    "ddpm-deepfloyd": (IF, strided_timesteps(990, 90)),
    "ddpm-linear": (LIN, strided_timesteps(299, 30)),
    "flow": (FLOW, FlowSchedule.timesteps(10)),
}


@pytest.mark.parametrize("resample_steps", [1, 2])
@pytest.mark.parametrize("setup", list(INPAINT_SETUPS))
def test_inpainting_known_pixels_are_the_image_noised_to_each_step_with_fresh_noise(setup, resample_steps):
    """After every step to t' but the last, the known pixels are add_noise(image, eps', t'):

        (x_{t'} - a_{t'} image) / b_{t'} ~ N(0, 1)   over the known pixels,

    (a, b) = (sqrt(ab), sqrt(1 - ab)) or (t, 1 - t), with eps' drawn afresh at each step
    (uncorrelated from one step to the next). Pasting the clean image, noising to t instead
    of t', or reusing one eps' breaks it; the last step pastes the image itself."""
    schedule, ts = INPAINT_SETUPS[setup]
    data = _randn((6, 1, 8, 8), 0, torch.float32).sign()
    image = data[torch.arange(48) % 6]
    mask = torch.zeros(8, 8)
    mask[2:6, 2:7] = 1
    known = (mask == 0).expand_as(image)
    _, xs = inpaint(finite_data_denoiser(data, schedule), image, mask, schedule, ts,
                    generator=torch.Generator().manual_seed(1), resample_steps=resample_steps,
                    progress=False, return_intermediates=True)
    residuals = []
    for x, t in zip(xs[1:-1], ts[1:-1]):
        a, b = schedule.signal_and_noise(t, x)
        residuals.append(((x - a * image) / b)[known])
        assert_standard_normal(residuals[-1], f"{setup}: the known pixels' noise at t' = {t}")
    for r, r_next, t in zip(residuals, residuals[1:], ts[2:]):
        corr = torch.corrcoef(torch.stack([r, r_next]).double())[0, 1].item()
        assert abs(corr) < 5 / math.sqrt(r.numel()), f"{setup}: the known pixels' noise at t' = {t} is reused"
    assert torch.equal(xs[-1][known], image[known])


# ----------------------------------------------------------------------------------------
# DDIM with eta > 0
# ----------------------------------------------------------------------------------------


@given(name=st.sampled_from(list(SCHEDULES)), seed=seeds, data=st.data())
def test_ddim_step_with_eta_one_is_the_ddpm_step(name, seed, data):
    """With eta = 1, sigma^2 = beta~_t and 1 - ab_t' - sigma^2 = alpha_t (1 - ab_t')^2 / (1 - ab_t), so

        sqrt(ab_t') x0_hat + sqrt(1 - ab_t' - sigma^2) eps + sigma z == DDPM's step with the same z

    for any x_t, eps and z (Song et al., 2021, sec. 4.1: eta = 1 is DDPM)."""
    s = SCHEDULES[name]
    t = data.draw(st.integers(1, s.num_timesteps - 1), label="t")
    t_prev = data.draw(st.integers(-1, t - 1), label="t_prev")
    x_t, eps, z = _randn((2, 3, 4, 4), seed), _randn((2, 3, 4, 4), seed + 1), _randn((2, 3, 4, 4), seed + 2)
    atol = 1e-9 / s.alphas_cumprod[t].sqrt().item()
    torch.testing.assert_close(ddim_step(s, x_t, eps, t, t_prev, eta=1.0, noise=z),
                               s.step(x_t, eps, t, t_prev, noise=z), atol=atol, rtol=1e-9)


MU, STD, N_IMAGES = 0.5, 0.3, 512


def ddim_chain_moments(schedule: DDPMSchedule, ts: list[int], eta: float, mean: float, var: float) -> list:
    """[(mean, variance)] after each DDIM step of ts from N(mean, var) at ts[0], with the exact
    Gaussian denoiser, written out from Song et al.'s eq. 12: each step is x' = A x + c + sigma z with

        x0_hat = k x + MU (1 - k sqrt(ab_t)),     k = sqrt(ab_t) STD^2 / (ab_t STD^2 + 1 - ab_t)
        x' = sqrt(ab_t') x0_hat + r (x - sqrt(ab_t) x0_hat) + sigma z,
        r = sqrt((1 - ab_t' - sigma^2) / (1 - ab_t))."""
    ab = schedule.alphas_cumprod.double()
    moments = []
    for t, tp in zip(ts[:-1], ts[1:]):
        a, ap = float(ab[t]), float(ab[tp]) if tp >= 0 else 1.0
        k = math.sqrt(a) * STD**2 / (a * STD**2 + 1 - a)
        sigma2 = eta**2 * (1 - ap) / (1 - a) * (1 - a / ap)
        r = math.sqrt((1 - ap - sigma2) / (1 - a))
        c_x0 = math.sqrt(ap) - r * math.sqrt(a)
        A, c = c_x0 * k + r, c_x0 * MU * (1 - k * math.sqrt(a))
        mean, var = A * mean + c, A * A * var + sigma2
        moments.append((mean, var))
    return moments


@pytest.mark.parametrize("eta", [0.5, 1.0])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_ddim_with_eta_gaussian_data_moments_follow_the_closed_form_at_every_step(name, eta):
    """Started on the forward marginal q(x_{t0}) = N(sqrt(ab) MU, ab STD^2 + 1 - ab), every DDIM
    state with eta > 0 has the mean and variance of the recursion; the recursion itself stays
    near the forward marginal q(x_t') (within 0.05 in mean and 25 % in variance: the exact
    denoiser's x0_hat is a posterior mean, which a strided chain does not undo entirely)."""
    schedule = SCHEDULES[name]
    ts = strided_timesteps(schedule.num_timesteps - 10, schedule.num_timesteps // 33)
    ab0 = float(schedule.alphas_cumprod[ts[0]])
    x = schedule.add_noise(MU + STD * _randn((N_IMAGES, 1, 8, 8), 0), _randn((N_IMAGES, 1, 8, 8), 1), ts[0])
    _, xs = ddim(gaussian_denoiser(MU, STD, schedule), x, schedule, ts, generator=torch.Generator().manual_seed(2),
                 progress=False, return_intermediates=True, eta=eta)
    moments = ddim_chain_moments(schedule, ts, eta, math.sqrt(ab0) * MU, ab0 * STD**2 + 1 - ab0)
    n = xs[0].numel()
    for x, t, (mean, var) in zip(xs[1:], ts[1:], moments):
        ab = float(schedule.alphas_cumprod[t])
        assert abs(mean - math.sqrt(ab) * MU) < 0.05 and abs(var / (ab * STD**2 + 1 - ab) - 1) < 0.25
        assert abs(x.mean().item() - mean) < 5 * math.sqrt(var / n), (t, x.mean().item(), mean)
        assert abs(x.var().item() - var) < 5 * var * math.sqrt(2 / (n - 1)), (t, x.var().item(), var)


# ----------------------------------------------------------------------------------------
# Guidance
# ----------------------------------------------------------------------------------------


def toy_2c_model(x, t, cond):
    """An IF-shaped model: 2C channels, eps = x * w(cond), variance values v = tanh(w(cond) x^2)."""
    w = cond.reshape(cond.shape[0], -1).sum(1).reshape(-1, 1, 1, 1) + 0.5
    return torch.cat([x * w, torch.tanh(w * x**2)], dim=1)


C1, C2, NULL = (torch.full((1, 2), v, dtype=torch.float64) for v in (1.0, 2.0, 0.0))


def test_cfg_interval_is_closed_and_reads_the_time_of_a_single_image():
    """interval = (t_lo, t_hi) guides at t_lo <= t <= t_hi, both ends included, also for a batch of
    one image; outside it the denoiser is the conditional model, variance half included."""
    x = _randn((1, 1, 8, 8), 3)
    t = torch.full((1,), 0.5)
    guided, conditional = cfg(toy_2c_model, C1, NULL, 3.0)(x, t), toy_2c_model(x, t, C1)
    for interval in [(0.5, 0.75), (0.25, 0.5), (0.5, 0.5)]:
        torch.testing.assert_close(cfg(toy_2c_model, C1, NULL, 3.0, interval=interval)(x, t), guided, atol=0, rtol=0)
    outside = cfg(toy_2c_model, C1, NULL, 3.0, interval=(0.6, 0.9))(x, t)
    torch.testing.assert_close(outside, conditional, atol=0, rtol=0)
    assert not torch.allclose(guided, conditional)


def test_hybrid_is_low_pass_of_one_guided_eps_plus_high_pass_of_the_other_and_averages_the_variances():
    """hybrid on 2C outputs: eps = low_pass(cfg(cond_low)) + high_pass(cfg(cond_high)) and the variance
    half (v(cond_low) + v(cond_high)) / 2."""
    x, t = _randn((2, 1, 8, 8), 4), torch.full((2,), 400)
    out = hybrid(toy_2c_model, C1, C2, NULL, 3.0, kernel_size=5, sigma=1.0)(x, t)
    low, high = cfg(toy_2c_model, C1, NULL, 3.0)(x, t), cfg(toy_2c_model, C2, NULL, 3.0)(x, t)
    torch.testing.assert_close(out[:, :1], low_pass(low[:, :1], 5, 1.0) + high_pass(high[:, :1], 5, 1.0),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(out[:, 1:], (low[:, 1:] + high[:, 1:]) / 2, atol=1e-12, rtol=0)


def test_factorized_with_one_identity_component_is_cfg_and_refuses_a_filter_that_is_not_callable():
    """sum_k f_k(cfg_k) with the one filter f = identity is cfg, 2C outputs included; a filter that
    cannot be called is refused when the rule is built, not at the first step."""
    x, t = _randn((2, 1, 8, 8), 5), torch.full((2,), 400)
    for model in (toy_2c_model, lambda x, t, c: toy_2c_model(x, t, c)[:, :1]):
        torch.testing.assert_close(factorized(model, [(lambda e: e, C1)], NULL, 3.0)(x, t),
                                   cfg(model, C1, NULL, 3.0)(x, t), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"components_and_conds\[0\] must be a \(filter function, condition\) pair"):
        factorized(toy_2c_model, [("low", C1)], NULL, 3.0)


# ----------------------------------------------------------------------------------------
# Views
# ----------------------------------------------------------------------------------------


def test_views_carry_their_names_and_the_default_parameters():
    """get_view(name).name is the name, with the parameters for the parametrised views, and the
    defaults are the documented ones (patch_size=8, pieces=4, seed=0)."""
    for name in ["identity", "flip", "vflip", "hflip", "rot90", "rot180", "rot270", "negate"]:
        assert get_view(name).name == name
    assert get_view("patch_permute").name == "patch_permute(patch_size=8, seed=0)"
    assert get_view("jigsaw").name == "jigsaw(pieces=4, seed=0)"
    x = _randn((1, 1, 16, 16), 0)
    assert torch.equal(get_view("patch_permute")(x), get_view("patch_permute", patch_size=8, seed=0)(x))
    assert torch.equal(get_view("jigsaw")(x), get_view("jigsaw", pieces=4, seed=0)(x))


def test_views_take_integer_images_and_only_quarter_turns_need_a_square():
    """Views permute pixels, so an integer image (a label map) is fine; rot180 and the flips work on
    any H x W, rot90 and rot270 (and their inverses) need H == W."""
    x = torch.arange(24).reshape(1, 1, 4, 6)
    for name in ["flip", "hflip", "rot180", "negate"]:
        v = get_view(name)
        assert torch.equal(v.inverse(v(x)), x) and v(x).dtype == x.dtype
    for name in ["rot90", "rot270"]:
        for fn in (get_view(name).view, get_view(name).inverse):
            with pytest.raises(ValueError, match="square"):
                fn(x)


@pytest.mark.parametrize("name, size_name", [("patch_permute", "patch_size"), ("jigsaw", "pieces")])
def test_parametrised_views_take_a_size_from_one_and_a_seed_from_zero(name, size_name):
    """patch_size = 1 (a pixel shuffle) and pieces = 1 (one tile, turned) are views; 0 and a negative
    seed are refused."""
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    v = get_view(name, **{size_name: 1})
    assert torch.equal(v.inverse(v(x)), x)
    assert torch.equal(v(x).flatten().sort().values, x.flatten())
    with pytest.raises(ValueError, match=size_name):
        get_view(name, **{size_name: 0})
    with pytest.raises(ValueError, match="seed"):
        get_view(name, seed=-1)


def _tile_turns(pieces: int, seed: int) -> list[int]:
    """The quarter turns the jigsaw gives each of its tiles, read off its action on pixel indices."""
    n = 2 * pieces
    x = torch.arange(n * n).reshape(1, 1, n, n)
    y = get_view("jigsaw", pieces=pieces, seed=seed)(x)[0, 0]
    tiles_in = x[0, 0].reshape(pieces, 2, pieces, 2).permute(0, 2, 1, 3).reshape(-1, 2, 2)
    turns = []
    for tile in y.reshape(pieces, 2, pieces, 2).permute(0, 2, 1, 3).reshape(-1, 2, 2):
        source = tiles_in[[int(tile.min()) in t for t in tiles_in].index(True)]
        turns += [k for k in range(4) if torch.equal(torch.rot90(source, k), tile)]
    return turns


def test_jigsaw_turns_each_tile_by_a_uniform_quarter_turn():
    """Each tile is a whole tile of the input turned by k * 90 degrees, k uniform in {0, 1, 2, 3}:
    over 800 tiles every k holds a quarter of them, within 5 standard deviations."""
    turns = [k for seed in range(50) for k in _tile_turns(4, seed)]
    assert len(turns) == 800
    counts = torch.bincount(torch.tensor(turns), minlength=4)
    assert (counts - 200).abs().max() < 5 * math.sqrt(800 * 0.25 * 0.75), counts.tolist()


# ----------------------------------------------------------------------------------------
# Filters
# ----------------------------------------------------------------------------------------


def reference_blur(x: torch.Tensor, kernel_size: int, sigma: float, mode: str) -> torch.Tensor:
    """One 2-D convolution of the padded image with G[i, j] ~ exp(-(i^2 + j^2) / (2 sigma^2)), written out here."""
    i = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    g = torch.exp(-(i[:, None] ** 2 + i[None, :] ** 2) / (2 * sigma**2))
    r = kernel_size // 2
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x.double().reshape(b * c, 1, h, w), (r, r, r, r), mode=mode)
    return torch.nn.functional.conv2d(padded, (g / g.sum())[None, None]).reshape(b, c, h, w).to(x.dtype)


@given(k=st.sampled_from([1, 3, 5, 9]), sigma=st.floats(0.3, 5.0))
def test_gaussian_kernel1d_is_the_normalised_exp_of_minus_i_squared_over_two_sigma_squared(k, sigma):
    """g_i = exp(-i^2 / (2 sigma^2)) / sum_j exp(-j^2 / (2 sigma^2)), i = -k//2 .. k//2, for any sigma."""
    i = torch.arange(k, dtype=torch.float64) - k // 2
    g = torch.exp(-(i**2) / (2 * sigma**2))
    torch.testing.assert_close(gaussian_kernel1d(k, sigma, torch.float64), g / g.sum(), atol=1e-12, rtol=0)


def test_filter_defaults_are_the_course_gaussian_and_padding_reaches_the_blur():
    """low_pass(x) == G * x with the course's kernel 33, sigma 2 and reflect padding, so do gaussian_blur(x)
    and x - high_pass(x); a padding given to low_pass or high_pass is the blur's."""
    x = _randn((1, 2, 40, 40), 6)
    course = reference_blur(x, 33, 2.0, "reflect")
    for blurred in (low_pass(x), gaussian_blur(x), x - high_pass(x)):
        torch.testing.assert_close(blurred, course, atol=1e-10, rtol=0)
    zeros = reference_blur(x, 5, 1.5, "constant")
    torch.testing.assert_close(low_pass(x, 5, 1.5, "zeros"), zeros, atol=1e-10, rtol=0)
    torch.testing.assert_close(x - high_pass(x, 5, 1.5, "zeros"), zeros, atol=1e-10, rtol=0)


def test_blur_of_a_half_precision_image_is_computed_in_float32():
    """float16 and bfloat16 images are blurred in float32 and rounded once, at the end."""
    x = _randn((1, 1, 16, 16), 7, torch.float32)
    for dtype in (torch.float16, torch.bfloat16):
        low = x.to(dtype)
        assert torch.equal(gaussian_blur(low, 9, 2.0), gaussian_blur(low.float(), 9, 2.0).to(dtype))


# ----------------------------------------------------------------------------------------
# Edits: what they are made of, and what they refuse
# ----------------------------------------------------------------------------------------

EDIT_DATA = _randn((6, 1, 8, 8), 0, torch.float32).sign()
HOLE = torch.zeros(8, 8)
HOLE[2:6, 2:7] = 1


def test_sdedit_is_iterative_denoising_from_the_image_noised_with_the_first_draw_and_image_to_image_guides_it():
    """sdedit(den, image, ..., i_start) == iterative_denoise(den, add_noise(image, eps, t_start), ...)
    with eps the generator's first N(0, I) draw in the image's dtype; image_to_image is sdedit of cfg,
    draw for draw; the callback is called at every step from i_start."""
    image = EDIT_DATA[:2].double()
    den = finite_data_denoiser(EDIT_DATA.double(), IF)
    ts = strided_timesteps(990, 90)
    seen = []
    out = sdedit(den, image, IF, ts, 4, generator=torch.Generator().manual_seed(3), progress=False,
                 callback=lambda i, t, x, x0: seen.append((i, t)))
    g = torch.Generator().manual_seed(3)
    eps = torch.randn(image.shape, generator=g, dtype=torch.float64)
    expected = iterative_denoise(den, IF.add_noise(image, eps, ts[4]), IF, ts, 4, generator=g, progress=False)
    assert torch.equal(out, expected)
    assert seen == [(i, ts[i]) for i in range(4, len(ts) - 1)]
    model = lambda x, t, c: den(x, t) * (1 + c.sum())  # noqa: E731
    cond, uncond = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    guided = image_to_image(model, image, cond, uncond, 2.0, IF, ts, 4, generator=torch.Generator().manual_seed(3),
                            progress=False)
    assert torch.equal(guided, sdedit(cfg(model, cond, uncond, 2.0), image, IF, ts, 4,
                                      generator=torch.Generator().manual_seed(3), progress=False))


@pytest.mark.parametrize("edit", ["sdedit", "inpaint"])
def test_edits_check_the_image_against_the_schedules_range_or_the_one_given(edit):
    """An image outside data_range (by more than 5 %) is refused, naming that range; with value_range given
    it is checked against value_range instead; check_range=False edits it as it is."""
    def run(image, **kwargs):
        den = finite_data_denoiser(EDIT_DATA, LIN)
        ts = strided_timesteps(299, 60)
        if edit == "sdedit":
            return sdedit(den, image, LIN, ts, 3, progress=False, **kwargs)
        return inpaint(den, image, HOLE, LIN, ts, progress=False, **kwargs)

    image = EDIT_DATA[:1] * 2  # known pixels at -2 and 2: outside LIN's (-1, 1)
    with pytest.raises(ValueError, match=r"DDPMSchedule.data_range \[-1.0, 1.0\]"):
        run(image)
    with pytest.raises(ValueError, match=r"the value_range given \[0.0, 2.0\]"):
        run(image, value_range=(0.0, 2.0))
    run(image, value_range=(-2.0, 2.0))
    run(image, check_range=False)
    run(EDIT_DATA[:1] / 2 + 0.5, value_range=(0.0, 1.0))


@pytest.mark.parametrize("edit", ["sdedit", "inpaint"])
def test_edits_refuse_a_bad_generator_callback_or_image_by_name(edit):
    """The loop's checks run at the edit's entry: a seed for a generator, a callback that cannot be
    called and an image that is not (B, C, H, W) are ValueErrors that name them."""
    den = finite_data_denoiser(EDIT_DATA, IF)
    ts = strided_timesteps(990, 90)
    run = (lambda image, **kw: sdedit(den, image, IF, ts, 3, progress=False, **kw)) if edit == "sdedit" else \
        (lambda image, **kw: inpaint(den, image, HOLE, IF, ts, progress=False, **kw))
    with pytest.raises(ValueError, match="generator"):
        run(EDIT_DATA[:1], generator=0)
    with pytest.raises(ValueError, match="callback"):
        run(EDIT_DATA[:1], callback=1)
    with pytest.raises(ValueError, match=r"image must be an image batch \(B, C, H, W\)"):
        run(EDIT_DATA[0])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("edit, label", [("sdedit", "denoising"), ("inpaint", "inpainting")])
def test_edits_show_a_progress_bar_on_a_terminal_by_default(edit, label, monkeypatch):
    den = finite_data_denoiser(EDIT_DATA, FLOW)
    ts = FlowSchedule.timesteps(3)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    if edit == "sdedit":
        sdedit(den, EDIT_DATA[:1], FLOW, ts, 0)
    else:
        inpaint(den, EDIT_DATA[:1], HOLE, FLOW, ts)
    assert label in sys.stderr.getvalue()


@pytest.mark.parametrize("setup", ["ddpm-deepfloyd", "flow"])
@pytest.mark.parametrize("resample_steps", [None, 3])
def test_inpainting_calls_the_model_at_each_time_resample_steps_times_but_the_last(setup, resample_steps):
    """The model sees t = timesteps[i] resample_steps times for every step but the last, which is
    taken once (RePaint); resample_steps defaults to 1. The callback gets (i, t, x_t, x0_hat) with
    x_t the state at timesteps[i] and x0_hat = predict_data(x_t, den(x_t, t), t)."""
    schedule, ts = INPAINT_SETUPS[setup]
    den = finite_data_denoiser(EDIT_DATA, schedule)
    calls, seen = [], []
    counting = lambda x, t: calls.append(t[0].item()) or den(x, t)  # noqa: E731
    kwargs = {} if resample_steps is None else {"resample_steps": resample_steps}
    _, xs = inpaint(counting, EDIT_DATA[:2] * (1 - HOLE), HOLE, schedule, ts,
                    generator=torch.Generator().manual_seed(0), progress=False, return_intermediates=True,
                    callback=lambda *a: seen.append(a), **kwargs)
    u = resample_steps or 1
    assert calls == pytest.approx([t for t in ts[:-2] for _ in range(u)] + [ts[-2]])
    assert [(i, t) for i, t, *_ in seen] == [(i, ts[i]) for i in range(len(ts) - 1)]
    for (i, t, x, x0_hat), state in zip(seen, xs):
        assert torch.equal(x, state)
        torch.testing.assert_close(x0_hat, schedule.predict_data(x, den(x, torch.full((2,), t)), t), atol=1e-6, rtol=0)


def test_repaint_draws_every_jump_back_from_the_generator():
    """Two runs with the same generator seed are bit-identical whatever the global random state."""
    den = finite_data_denoiser(EDIT_DATA, IF)
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(inpaint(den, EDIT_DATA[:2], HOLE, IF, strided_timesteps(990, 90), resample_steps=2,
                            generator=torch.Generator().manual_seed(5), progress=False))
    assert torch.equal(*runs)


# ----------------------------------------------------------------------------------------
# Part B losses: every draw from the run's generator, in the batch's dtype
# ----------------------------------------------------------------------------------------

DIGITS = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
CLASSES = torch.nn.functional.one_hot(torch.arange(4) % 10, 10).double()


def test_denoiser_and_pure_noise_examples_are_the_digit_plus_sigma_times_the_generators_draw():
    """denoiser_example: ((x + sigma eps,), x); pure_noise_example: ((eps,), x); eps the generator's first
    N(0, I) draw in x's dtype."""
    eps = torch.randn(DIGITS.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (z,), target = denoiser_example(DIGITS, torch.Generator().manual_seed(1), 0.5)
    assert torch.equal(z, DIGITS + 0.5 * eps) and torch.equal(target, DIGITS)
    (noise,), target = pure_noise_example(DIGITS, torch.Generator().manual_seed(1))
    assert torch.equal(noise, eps) and torch.equal(target, DIGITS)


def test_ddpm_example_is_add_noise_at_a_uniform_step_with_the_noise_as_target():
    """ddpm_example: t ~ U{0..T-1} then eps, both from the generator; inputs (add_noise(x0, eps, t), t / T, c)
    with c as given (p_uncond 0 by default draws nothing), target eps; without c the inputs have no c."""
    g = torch.Generator().manual_seed(2)
    t = torch.randint(0, LIN.num_timesteps, (4,), generator=g)
    eps = torch.randn(DIGITS.shape, generator=g, dtype=torch.float64)
    (x_t, time, c), target = ddpm_example(LIN, DIGITS, CLASSES, torch.Generator().manual_seed(2))
    assert torch.equal(x_t, LIN.add_noise(DIGITS, eps, t)) and torch.equal(target, eps)
    assert torch.equal(time, t.float() / LIN.num_timesteps) and torch.equal(c, CLASSES)
    inputs, _ = ddpm_example(LIN, DIGITS, None, torch.Generator().manual_seed(2), p_uncond=0.5)
    assert len(inputs) == 2


@pytest.mark.parametrize("example", ["ddpm", "flow"])
def test_class_dropout_drops_every_row_at_p_uncond_one(example):
    """p_uncond = 1: every class vector becomes the null class 0."""
    if example == "ddpm":
        (_, _, c), _ = ddpm_example(LIN, DIGITS, CLASSES, torch.Generator().manual_seed(0), p_uncond=1.0)
    else:
        (_, _, c), _ = flow_example(FLOW, DIGITS, CLASSES, torch.Generator().manual_seed(0), p_uncond=1.0)
    assert torch.equal(c, torch.zeros_like(CLASSES))


def test_flow_example_is_the_path_at_a_uniform_time_with_the_velocity_as_target():
    """flow_example: x0 = N(0, I) then t ~ U[0, 1], both from the generator (p_uncond 0 draws nothing);
    inputs ((1 - t) x0 + t x1, t, c), target x1 - x0; without c, no c."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(DIGITS.shape, generator=g, dtype=torch.float64)
    t = torch.rand(4, generator=g)
    (x_t, time, c), u = flow_example(FLOW, DIGITS, CLASSES, torch.Generator().manual_seed(3))
    assert torch.equal(x_t, FLOW.add_noise(DIGITS, x0, t)) and torch.equal(u, DIGITS - x0)
    assert torch.equal(time, t) and torch.equal(c, CLASSES)
    inputs, _ = flow_example(FLOW, DIGITS, None, torch.Generator().manual_seed(3), p_uncond=0.5)
    assert len(inputs) == 2


def test_judge_example_shifts_with_the_generator():
    """Two calls with the same seed shift alike whatever the global random state."""
    y = torch.arange(4)
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        (shifted,), labels = judge_example(DIGITS, y, torch.Generator().manual_seed(4), 2)
        runs.append(shifted)
        assert torch.equal(labels, y)
    assert torch.equal(*runs) and not torch.equal(runs[0], DIGITS)


# ----------------------------------------------------------------------------------------
# Beta schedules and dynamic thresholding (built inside each test, where a change to them shows)
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("T, s", [(1, 0.008), (10, 0.008), (1000, 0.008), (50, 0.0), (50, 0.1)])
def test_cosine_betas_are_one_minus_the_ratio_of_consecutive_squared_cosines(T, s):
    """beta_i = min(1 - f((i + 1) / T) / f(i / T), 0.999), f(u) = cos^2((u + s) / (1 + s) pi / 2), s = 0.008
    by default; float32 of length T."""
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float32)
    betas = cosine_betas(T, s=s) if s != 0.008 else cosine_betas(T)
    assert betas.dtype == torch.float32 and torch.equal(betas, expected)


def test_linear_betas_are_evenly_spaced_from_1e4_to_002_by_default_and_refuse_what_is_not_a_schedule():
    """linear_betas(T) == linspace(1e-4, 0.02, T) in float32, T = 1 included; 0 < beta_start < beta_end < 1
    and T >= 1, s >= 0 for the cosine schedule, or a ValueError."""
    assert torch.equal(linear_betas(300), torch.linspace(1e-4, 0.02, 300, dtype=torch.float32))
    assert torch.equal(linear_betas(1, 0.1, 0.2), torch.tensor([0.1]))
    for start, end in [(0.0, 0.5), (0.3, 0.3), (0.1, 1.0), (0.1, 1.5)]:
        with pytest.raises(ValueError, match="0 < beta_start < beta_end < 1"):
            linear_betas(10, start, end)
    with pytest.raises(ValueError, match="num_timesteps"):
        linear_betas(0)
    with pytest.raises(ValueError, match="s must be"):
        cosine_betas(10, s=-0.1)


def reference_threshold(x: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Imagen's rule written out per sample, in float64: s = clamp(quantile(|x_b|, ratio), 1, max_value)."""
    out = []
    for sample in x.double():
        s = min(max(torch.quantile(sample.abs().flatten(), ratio).item(), 1.0), max_value)
        out.append(sample.clamp(-s, s) / s)
    return torch.stack(out)


def test_dynamic_threshold_is_imagens_rule_per_sample_with_the_documented_defaults():
    """Per sample b: s_b = clamp(quantile(|x_b|, ratio), 1, max_value), x_b -> clamp(x_b, -s_b, s_b) / s_b;
    ratio 0.995 and max_value 1 by default; (B, N) batches too; float16 and float64 kept."""
    x = _randn((3, 2, 4, 4), 8) * torch.tensor([0.5, 1.5, 4.0], dtype=torch.float64).reshape(3, 1, 1, 1)
    torch.testing.assert_close(dynamic_threshold(x), reference_threshold(x, 0.995, 1.0), atol=1e-12, rtol=0)
    torch.testing.assert_close(dynamic_threshold(x, 0.9, 2.5), reference_threshold(x, 0.9, 2.5), atol=1e-12, rtol=0)
    flat = x.reshape(3, -1)
    torch.testing.assert_close(dynamic_threshold(flat, 0.9, 2.5), reference_threshold(flat, 0.9, 2.5), atol=1e-12,
                               rtol=0)
    half = dynamic_threshold(x.half(), 0.9, 2.5)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half, reference_threshold(x.half(), 0.9, 2.5).half(), atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------------------
# Samplers: what every loop promises besides its update
# ----------------------------------------------------------------------------------------

LOOPS = {  # sampler, schedule, timesteps, its progress label
    "ddpm": (iterative_denoise, IF, strided_timesteps(990, 110), "denoising"),
    "ddim": (ddim, IF, strided_timesteps(990, 110), "DDIM"),
    "euler": (flow_euler, FLOW, FlowSchedule.timesteps(8), "denoising"),
    "heun": (flow_heun, FLOW, FlowSchedule.timesteps(8), "Heun"),
}
loops = pytest.mark.parametrize("loop", list(LOOPS))


class SpyDenoiser:
    """The exact denoiser of EDIT_DATA, recording the dtype of every t it is given."""

    def __init__(self, schedule):
        self.den, self.t_dtypes = finite_data_denoiser(EDIT_DATA, schedule), []

    def __call__(self, x, t):
        self.t_dtypes.append(t.dtype)
        return self.den(x, t)


@loops
def test_samplers_call_back_with_each_state_and_its_clean_estimate_and_give_the_model_its_time_type(loop):
    """callback(i, t, x_t, x0_hat) once per step from i_start (0 by default), with x_t the state at
    timesteps[i] and x0_hat = predict_data(x_t, den(x_t, t), t); the denoiser gets t as long for DDPM
    and float32 for the flow."""
    sampler, schedule, ts, _ = LOOPS[loop]
    den = SpyDenoiser(schedule)
    seen = []
    x = _randn((2, 1, 8, 8), 9, torch.float32)
    _, xs = sampler(den, x, schedule, ts, generator=torch.Generator().manual_seed(0), progress=False,
                    return_intermediates=True, callback=lambda *a: seen.append(a))
    assert [(i, t) for i, t, *_ in seen] == [(i, ts[i]) for i in range(len(ts) - 1)]
    for (i, t, x_t, x0_hat), state in zip(seen, xs):
        assert torch.equal(x_t, state)
        torch.testing.assert_close(x0_hat, schedule.predict_data(x_t, den.den(x_t, torch.full((2,), t)), t))
    assert set(den.t_dtypes) == {torch.float32 if schedule is FLOW else torch.long}


def test_one_step_denoise_and_ddpm_on_the_flow_give_the_model_its_time_type():
    """However t is given (a float64 tensor, one time per image, an int flow time or a float DDPM step), the
    denoiser gets float32 flow times and long DDPM steps;
    iterative_denoise on a FlowSchedule is flow_euler."""
    x = _randn((2, 1, 8, 8), 1, torch.float32)
    for schedule, t in [(FLOW, torch.tensor(0.25, dtype=torch.float64)), (FLOW, torch.tensor([0.25, 0.5])),
                        (IF, torch.tensor(500.0).long()), (FLOW, 0.5)]:
        den = SpyDenoiser(schedule)
        one_step_denoise(den, x, schedule, t)
        assert den.t_dtypes == [torch.float32 if schedule is FLOW else torch.long]
    for schedule, t in [(FLOW, 1), (IF, 500.0)]:
        den = SpyDenoiser(schedule)
        run_denoiser(den, x, schedule, t)
        assert den.t_dtypes == [torch.float32 if schedule is FLOW else torch.long]
    x, ts = _randn((2, 1, 8, 8), 2, torch.float32), FlowSchedule.timesteps(8)
    den = finite_data_denoiser(EDIT_DATA, FLOW)
    euler = flow_euler(den, x, FLOW, ts, progress=False)
    assert torch.equal(iterative_denoise(den, x, FLOW, ts, progress=False), euler)


@loops
def test_samplers_refuse_a_bad_generator_or_callback_and_the_wrong_schedule_by_name(loop):
    sampler, schedule, ts, _ = LOOPS[loop]
    den = finite_data_denoiser(EDIT_DATA, schedule)
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="generator"):
        sampler(den, x, schedule, ts, generator=0, progress=False)
    with pytest.raises(ValueError, match="callback"):
        sampler(den, x, schedule, ts, callback=1, progress=False)
    if loop != "ddpm":
        other = IF if schedule is FLOW else FLOW
        name = {"ddim": "DDIM", "euler": "flow_euler", "heun": "flow_heun"}[loop]
        with pytest.raises(ValueError, match=f"{name} needs a {type(schedule).__name__}"):
            sampler(finite_data_denoiser(EDIT_DATA, other), x, other, LOOPS["ddpm" if other is IF else "euler"][2],
                    progress=False)


@loops
def test_a_sampler_whose_state_turns_nan_names_the_step_where_it_did(loop):
    """A denoiser that returns NaN from its third call on: RuntimeError naming the sampler, step 2 and its t.
    (Heun calls the model twice a step, so its state first turns NaN at step 1.)"""
    sampler, schedule, ts, label = LOOPS[loop]
    den, calls = finite_data_denoiser(EDIT_DATA, schedule), []

    def failing(x, t):
        calls.append(1)
        return den(x, t) * (float("nan") if len(calls) > 2 else 1.0)

    step = 1 if loop == "heun" else 2
    where = rf"at step {step} \(t = {ts[step]} -> {ts[step + 1]}\)"
    with pytest.raises(RuntimeError, match=rf"^{label} produced NaN .* {where}"):
        sampler(failing, torch.zeros(1, 1, 8, 8), schedule, ts, i_start=0, progress=False)


def test_one_step_denoise_of_a_nan_model_is_a_runtime_error_naming_t():
    with pytest.raises(RuntimeError, match=r"^one-step denoising produced NaN .* at step 0 \(t = 500 -> the clean"):
        one_step_denoise(lambda x, t: x * float("nan"), torch.zeros(1, 1, 8, 8), IF, 500)


@loops
def test_samplers_show_their_progress_bar_on_a_terminal_by_default(loop, monkeypatch):
    sampler, schedule, ts, label = LOOPS[loop]
    monkeypatch.setattr(sys, "stderr", _Terminal())
    sampler(finite_data_denoiser(EDIT_DATA, schedule), torch.zeros(1, 1, 8, 8), schedule, ts)
    assert label in sys.stderr.getvalue()


def test_ddim_step_defaults_to_eta_zero_draws_nothing_then_and_refuses_a_negative_eta():
    """ddim_step without eta is the deterministic step add_noise(x0_hat, eps, t'); a ddim run with eta = 0
    leaves its generator untouched; eta < 0 is refused by ddim and ddim_step."""
    x_t, eps = _randn((2, 1, 4, 4), 10), _randn((2, 1, 4, 4), 11)
    x0_hat = IF.predict_x0(x_t, eps, 600)
    torch.testing.assert_close(ddim_step(IF, x_t, eps, 600, 300), IF.add_noise(x0_hat, eps, 300), atol=1e-9, rtol=0)
    g = torch.Generator().manual_seed(12)
    ddim(finite_data_denoiser(EDIT_DATA, IF), torch.zeros(1, 1, 8, 8), IF, strided_timesteps(990, 110), generator=g,
         progress=False)
    assert torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=torch.Generator().manual_seed(12)))
    with pytest.raises(ValueError, match="eta"):
        ddim_step(IF, x_t, eps, 600, 300, eta=-0.5)
    with pytest.raises(ValueError, match="eta"):
        ddim(finite_data_denoiser(EDIT_DATA, IF), torch.zeros(1, 1, 8, 8), IF, [990, 0], eta=-0.5, progress=False)


def test_ddim_step_checks_like_step_draws_from_its_generator_and_works_in_the_schedules_dtype():
    """ddim_step refuses a FlowSchedule (naming itself) and noise of the wrong shape; with eta > 0 it draws
    z from the generator given; eps and z are used in the work dtype (float32 for float32 and float16
    x) and the result comes back in x's dtype."""
    x_t, eps = _randn((2, 1, 4, 4), 10, torch.float32), _randn((2, 1, 4, 4), 11, torch.float32)
    with pytest.raises(ValueError, match="ddim_step needs a DDPMSchedule"):
        ddim_step(FLOW, x_t, eps, 0.5, 0.6)
    with pytest.raises(ValueError, match="noise"):
        ddim_step(IF, x_t, eps, 600, 300, eta=1.0, noise=torch.zeros(3, 1, 4, 4))
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(ddim_step(IF, x_t, eps, 600, 300, eta=1.0, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(*runs)
    z = _randn((2, 1, 4, 4), 12)
    wide = ddim_step(IF, x_t, eps.double(), 600, 300, eta=0.5, noise=z)
    assert torch.equal(wide, ddim_step(IF, x_t, eps, 600, 300, eta=0.5, noise=z.float()))
    half = ddim_step(IF, x_t.half(), eps.half(), 600, 300, eta=0.5, noise=z.half())
    assert half.dtype == torch.float16


# ----------------------------------------------------------------------------------------
# Schedules: built inside each test, where a change to their construction shows
# ----------------------------------------------------------------------------------------


def test_a_ddpm_schedule_holds_its_tables_and_diffusers_defaults():
    """alphas = 1 - betas, alphas_cumprod = their running product, ab = 1 at t = -1 (a step to -1 is
    x0_hat); thresholding and clipping off, ratio 0.995, max 1, clip range 1 and data_range (-1, 1) unless
    told; deepfloyd() is 1000 cosine steps with IF's thresholding values, linear() 300 of 1e-4 .. 0.02."""
    betas = cosine_betas(50)
    s = DDPMSchedule(betas)
    assert torch.equal(s.betas, betas) and torch.equal(s.alphas, 1 - betas)
    assert torch.equal(s.alphas_cumprod, torch.cumprod(1 - betas, 0)) and s.num_timesteps == 50
    x, eps = _randn((2, 1, 4, 4), 13), _randn((2, 1, 4, 4), 14)
    assert torch.equal(s.signal_and_noise(7, x)[0], s.alphas_cumprod[7].double().sqrt())
    torch.testing.assert_close(s.step(x, eps, 30, -1), s.predict_x0(x, eps, 30), atol=1e-8, rtol=0)
    assert (s.thresholding, s.dynamic_thresholding_ratio, s.sample_max_value) == (False, 0.995, 1.0)
    assert (s.clip_sample, s.clip_sample_range, s.data_range) == (False, 1.0, (-1.0, 1.0))
    assert torch.equal(s._threshold(3 * x), 3 * x)
    if_ = DDPMSchedule.deepfloyd()
    assert torch.equal(if_.betas, cosine_betas(1000)) and not if_.thresholding
    assert (if_.dynamic_thresholding_ratio, if_.sample_max_value) == (0.95, 1.5)
    assert DDPMSchedule.deepfloyd(thresholding=True).thresholding and DDPMSchedule.deepfloyd(20).num_timesteps == 20
    assert torch.equal(DDPMSchedule.linear().betas, linear_betas(300, 1e-4, 0.02))
    assert torch.equal(DDPMSchedule.linear(40, 1e-3, 0.05).betas, linear_betas(40, 1e-3, 0.05))


def test_a_ddpm_schedule_thresholds_or_clips_x0_hat_as_told_and_refuses_bad_settings():
    betas = cosine_betas(50)
    x = 3 * _randn((3, 2, 4, 4), 15)
    s = DDPMSchedule(betas, thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.5)
    torch.testing.assert_close(s._threshold(x), dynamic_threshold(x, 0.9, 2.5), atol=0, rtol=0)
    assert torch.equal(DDPMSchedule(betas, clip_sample=True)._threshold(x), x.clamp(-1, 1))
    assert torch.equal(DDPMSchedule(betas, clip_sample=True, clip_sample_range=2.0)._threshold(x), x.clamp(-2, 2))
    assert DDPMSchedule(betas, data_range=(0, 1)).data_range == (0.0, 1.0)
    for kwargs, name in [({"clip_sample_range": 0.0}, "clip_sample_range"),
                         ({"sample_max_value": 0.5}, "sample_max_value"),
                         ({"dynamic_thresholding_ratio": 1.5}, "dynamic_thresholding_ratio"),
                         ({"data_range": (1, 0)}, "data_range")]:
        with pytest.raises(ValueError, match=name):
            DDPMSchedule(betas, **kwargs)
    with pytest.raises(ValueError, match="schedule must be a DDPMSchedule or a FlowSchedule"):
        check_schedule("cosine")
    with pytest.raises(ValueError, match="use flow_euler or flow_heun"):
        check_schedule(FLOW, DDPMSchedule, "DDIM")
    with pytest.raises(ValueError, match="use iterative_denoise or ddim"):
        check_schedule(IF, FlowSchedule, "flow_euler")


def _verbs(x, other, t=0.35):
    """Every verb of both schedules on x and a companion tensor (noise, eps, v or model output)."""
    two_c = torch.cat([other, other.clamp(-1, 1)], 1)
    return {
        "ddpm add_noise": IF.add_noise(x, other, 400), "ddpm predict_x0": IF.predict_x0(x, other, 400),
        "ddpm predict_data": IF.predict_data(x, two_c, 400), "ddpm renoise": IF.renoise(x, 400, 200, noise=other),
        "ddpm step": IF.step(x, other, 400, 200, noise=other), "ddpm step 2C": IF.step(x, two_c, 400, 200, noise=other),
        "flow add_noise": FLOW.add_noise(x, other, t), "flow predict_data": FLOW.predict_data(x, other, t),
        "flow renoise": FLOW.renoise(x, t, 0.6, noise=other), "flow step": FLOW.step(x, other, t, 0.6),
    }


def test_every_verb_computes_in_float32_for_half_inputs_and_in_xs_work_dtype_for_a_wider_companion():
    """The arithmetic runs in float32 for float16 inputs (the float32 result rounded once, returned as
    float16), and a float64 noise, eps or v beside a float32 x is used as its float32 copy."""
    x, other = _randn((4, 3, 8, 8), 16, torch.float32), _randn((4, 3, 8, 8), 17, torch.float32)
    half, full = _verbs(x.half(), other.half()), _verbs(x.half().float(), other.half().float())
    for name in half:
        assert half[name].dtype == torch.float16, name
        assert torch.equal(half[name], full[name].half()), name
    other64 = _randn((4, 3, 8, 8), 17)
    wide, narrow = _verbs(x, other64), _verbs(x, other64.float())
    for name in wide:
        assert torch.equal(wide[name], narrow[name]), name


@pytest.mark.parametrize("name", ["ddpm", "flow"])
def test_renoise_adds_the_given_noise_with_a_positive_coefficient_and_draws_it_from_the_generator(name):
    """renoise(0, t, t', noise=z) == b z with b > 0 (sqrt(1 - alpha_t), or the flow's extra noise), and a
    seeded generator gives the same jump back whatever the global random state."""
    s, t, t_prev = (IF, 400, 200) if name == "ddpm" else (FLOW, 0.3, 0.6)
    z = _randn((2, 1, 4, 4), 18)
    fresh = s.renoise(torch.zeros_like(z), t, t_prev, noise=z)
    ratio = fresh / z
    assert float(ratio.min()) > 0 and torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), atol=1e-12)
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(s.renoise(z, t, t_prev, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(*runs)


def test_the_verbs_refuse_companions_of_another_shape_and_name_them():
    x, small = torch.zeros(2, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    cases = [
        (lambda: IF.add_noise(x, small, 10), "x0 and noise"), (lambda: IF.predict_x0(x, small, 10), "x_t and eps"),
        (lambda: FLOW.add_noise(x, small, 0.5), "x1 and x0"),
        (lambda: FLOW.predict_data(x, small, 0.5), "x_t and model_output"),
        (lambda: FLOW.step(x, small, 0.5, 0.6), "x_t and model_output"),
        (lambda: FLOW.renoise(x, 0.5, 0.6, noise=small), "x_prev and noise"),
        (lambda: IF.renoise(x, 10, 5, noise=small), "x_prev and noise"),
        (lambda: FLOW.step(x, x, 0.5, 1.5), "t_prev"), (lambda: FLOW.renoise(x, 0.5, 1.5), "t_prev"),
        (lambda: IF.step(x, x, 10, 2000), "t_prev"), (lambda: IF.predict_x0([0.0], x, 10), "x_t must be a torch"),
        (lambda: IF.step([0.0], x, 10, 5), "x_t must be a torch"),
        (lambda: IF.renoise([0.0], 10, 5), "x_prev must be a torch"),
        (lambda: IF.step(x, x, 10, 5, noise=small), "x_t and noise"), (lambda: FlowSchedule((1, 0)), "data_range"),
    ]
    for call, names in cases:
        with pytest.raises(ValueError, match=names):
            call()


def test_strided_timesteps_defaults_steps_and_bounds():
    """strided_timesteps() is the course's [990, 960, ..., 0]; steps=n gives n rounded, evenly spaced steps
    from start to end (n from 1 to start - end + 1, every integer at the top); start, end, steps out of
    range are refused."""
    assert strided_timesteps() == list(range(990, -1, -30))
    assert strided_timesteps(990, steps=34) == list(range(990, -1, -30))
    assert strided_timesteps(10, steps=4) == [10, 7, 3, 0]
    assert strided_timesteps(10, end=4, steps=7) == [10, 9, 8, 7, 6, 5, 4]
    assert strided_timesteps(10, end=4, steps=1) == [10]
    for kwargs in [{"start": -1}, {"start": 100_001}, {"start": 10, "end": 11}, {"start": 10, "end": -1},
                   {"start": 10, "end": 4, "steps": 8}, {"start": 10, "end": 4, "steps": 0}]:
        with pytest.raises(ValueError):
            strided_timesteps(**kwargs)


def test_flow_time_grids_span_t_start_to_t_end_with_the_documented_warps():
    """t_i = t_start + (t_end - t_start) w(i / n): w(u) = u, 1 - (1 - u)^1.5 ("late") and u^1.5 ("early") by
    default; 0 <= t_start < t_end <= 1, n in [1, 100000] and power > 0, or a ValueError; the repr shows a
    data_range that is not (-1, 1)."""
    assert FlowSchedule.timesteps(4, 0.2, 0.6) == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6], abs=1e-15)
    late = [1 - (1 - i / 4) ** 1.5 for i in range(5)]
    assert FlowSchedule.timesteps(4, grid="late") == pytest.approx(late, abs=1e-15)
    early = [(i / 4) ** 2 for i in range(5)]
    assert FlowSchedule.timesteps(4, grid="early", power=2.0) == pytest.approx(early, abs=1e-15)
    bad = [((4, 0.5, 0.5), {}), ((4, 0.0, 1.5), {}), ((0,), {}), ((100_001,), {}), ((4,), {"power": 0.0})]
    for args, kwargs in bad:
        with pytest.raises(ValueError):
            FlowSchedule.timesteps(*args, **kwargs)
    assert repr(FlowSchedule()) == "FlowSchedule()"
    assert repr(FlowSchedule((0, 1))) == "FlowSchedule(data_range=(0.0, 1.0))"
    assert FlowSchedule().data_range == (-1.0, 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_steps_own_draw_is_the_generators_normal_draw_in_xs_dtype(dtype):
    """Without noise given, step and renoise use z = torch.randn(x.shape, generator=g, dtype=x.dtype)."""
    x, eps = _randn((2, 1, 4, 4), 19, dtype), _randn((2, 1, 4, 4), 20, dtype)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=dtype)
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    assert torch.equal(IF.step(x, eps, 400, 200, generator=g()), IF.step(x, eps, 400, 200, noise=z))
    assert torch.equal(IF.renoise(x, 400, 200, generator=g()), IF.renoise(x, 400, 200, noise=z))
    assert torch.equal(FLOW.renoise(x, 0.35, 0.6, generator=g()), FLOW.renoise(x, 0.35, 0.6, noise=z))


# ----------------------------------------------------------------------------------------
# The MNIST UNet: its forward written out from the course's description, with its own weights
# ----------------------------------------------------------------------------------------


def _randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """net in eval mode with BatchNorm statistics and affine maps that are not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(0.3 * torch.randn(m.num_features, generator=g))
    return net.eval()


def reference_unet(p: dict, x: torch.Tensor, t: torch.Tensor | None = None, c: torch.Tensor | None = None):
    """The course's UNet in functional form, from its state dict p: Conv = 3x3 conv, BN, GELU; DownConv =
    3x3 conv of stride 2, BN, GELU; UpConv = 4x4 transposed conv of stride 2, BN, GELU; Flatten = 7x7
    average pool, GELU; Unflatten = 7x7 transposed conv of stride 7, BN, GELU; FC = Linear, GELU, Linear;
    the conditioning h <- c1 * h + t1 after Unflatten and h <- c2 * h + t2 after the first UpBlock."""
    Fn = torch.nn.functional

    def cna(name, h, conv):
        h = conv(h, p[f"{name}.0.weight"], p[f"{name}.0.bias"])
        h = Fn.batch_norm(h, p[f"{name}.1.running_mean"], p[f"{name}.1.running_var"], p[f"{name}.1.weight"],
                          p[f"{name}.1.bias"], eps=1e-5)
        return Fn.gelu(h)

    conv = lambda stride: lambda h, w, b: Fn.conv2d(h, w, b, stride=stride, padding=1)  # noqa: E731
    block = lambda name, h: cna(f"{name}.1", cna(f"{name}.0", h, conv(1)), conv(1))  # noqa: E731
    up = lambda h, w, b: Fn.conv_transpose2d(h, w, b, stride=2, padding=1)  # noqa: E731
    fc = lambda name, v: Fn.linear(Fn.gelu(Fn.linear(v, p[f"{name}.0.weight"], p[f"{name}.0.bias"])),  # noqa: E731
                                   p[f"{name}.2.weight"], p[f"{name}.2.bias"])
    s0 = block("conv_in", x)
    s1 = block("down1.1", cna("down1.0", s0, conv(2)))
    s2 = block("down2.1", cna("down2.0", s1, conv(2)))
    h = cna("unflatten", Fn.gelu(Fn.avg_pool2d(s2, 7)), lambda h, w, b: Fn.conv_transpose2d(h, w, b, stride=7))
    tc = None if t is None else t.reshape(-1, 1).float().to(x.dtype)  # the time column is float32
    for k, (skip, name) in enumerate([(s2, "up1"), (s1, "up2")], start=1):
        if c is not None:
            h = h * fc(f"fc{k}_c", c)[:, :, None, None]
        if t is not None:
            h = h + fc(f"fc{k}_t", tc)[:, :, None, None]
        h = block(f"{name}.1", cna(f"{name}.0", torch.cat([h, skip], 1), up))
    h = block("conv_mid", torch.cat([h, s0], 1))
    return Fn.conv2d(h, p["conv_out.weight"], p["conv_out.bias"], padding=1)


@pytest.mark.parametrize("arch", ["unconditional", "time", "class"])
def test_the_mnist_unets_are_the_courses_architecture(arch):
    """Each UNet (eval mode, float64, D = 4) equals reference_unet with its own weights, t given as a
    number, a (B,) or a (B, 1) tensor and c as labels or one-hot vectors; folding BatchNorm into the
    convolutions keeps that output (to 1e-9 relative, with variances small enough for eps to matter)."""
    torch.manual_seed(0)
    net = _randomised(build_model(arch, 4), 1).double()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t, labels = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), torch.tensor([0, 3, 9])
    p = {k: v.double() for k, v in net.state_dict().items()}
    c = torch.nn.functional.one_hot(labels, 10).double()
    calls = {"unconditional": [((x,), {})], "time": [((x, t), {"t": t}), ((x, t[:, None]), {"t": t}),
                                                     ((x, 0.5), {"t": torch.full((3,), 0.5)})],
             "class": [((x, t, labels), {"t": t, "c": c}), ((x, t, c), {"t": t, "c": c})]}[arch]
    with torch.no_grad():
        for args, kwargs in calls:
            torch.testing.assert_close(net(*args), reference_unet(p, x, **kwargs), atol=1e-12, rtol=0)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.mul_(1e-4)
        torch.testing.assert_close(fold_batchnorm(net)(*calls[0][0]), net(*calls[0][0]), atol=0, rtol=1e-9)


def test_mnist_unet_defaults_and_what_they_refuse():
    """Widths D = 128 (unconditional) and 64 (time, class), D = 1 allowed; a class count other than 10
    is used for labels, and integer one-hot vectors are class vectors; non-tensor images, a D that is not
    a positive int and a time that is not a number are refused."""
    assert UnconditionalUNet().num_hiddens == 128 and TimeConditionalUNet().num_hiddens == 64
    assert ClassConditionalUNet().num_hiddens == 64 and build_model("time", 1).num_hiddens == 1
    net = ClassConditionalUNet(num_classes=3, num_hiddens=2).eval()
    x, labels = torch.rand(2, 1, 28, 28), torch.tensor([0, 2])
    assert net(x, 0.5, labels).shape == (2, 1, 28, 28)
    assert torch.equal(net(x, 0.5, torch.nn.functional.one_hot(labels, 3)), net(x, 0.5, labels))
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="num_hiddens"):
            build_model("time", bad)
    with pytest.raises(ValueError, match="the MNIST UNet takes x of shape"):
        UnconditionalUNet(num_hiddens=2)([[0.0]])
    with pytest.raises(ValueError, match="t must be a number"):
        TimeConditionalUNet(num_hiddens=2)(torch.rand(1, 1, 28, 28), "0.5")


def test_drop_class_draws_from_the_generator():
    """Two calls with the same seed drop the same rows whatever the global random state."""
    c = torch.ones(64, 10)
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(drop_class(c, 0.5, torch.Generator().manual_seed(3)))
    assert torch.equal(*runs) and 0 < int(runs[0][:, 0].sum()) < 64


# ----------------------------------------------------------------------------------------
# The IF blocks' time embedding and text pooling
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim, flip, shift", [(8, True, 0.0), (7, True, 0.0), (8, False, 1.0)])
def test_timestep_embedding_is_cos_and_sin_of_t_times_geometric_frequencies(dim, flip, shift):
    """emb = [cos(t f), sin(t f)] (sin first without flip_sin_to_cos), f_k = 10000^(-k / (dim // 2 - shift)),
    k = 0 .. dim // 2 - 1, a zero appended for an odd dim; flip_sin_to_cos=True and shift 0 by default."""
    t = torch.tensor([0.0, 3.0, 999.0])
    half = dim // 2
    f = torch.tensor([10000 ** (-k / (half - shift)) for k in range(half)], dtype=torch.float64)
    angles = t.double()[:, None] * f[None, :]
    parts = [angles.cos(), angles.sin()] if flip else [angles.sin(), angles.cos()]
    expected = torch.cat(parts + [torch.zeros(3, dim % 2, dtype=torch.float64)], 1)
    emb = timestep_embedding(t, dim) if (flip, shift) == (True, 0.0) else \
        timestep_embedding(t, dim, flip_sin_to_cos=flip, freq_shift=shift)
    assert emb.shape == (3, dim) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.double(), expected, atol=2e-4, rtol=0)


def test_attention_pooling_starts_its_position_at_std_one_over_sqrt_dim_and_runs_in_bfloat16():
    """A new AttentionPooling draws its learned position from N(0, 1 / dim); in bfloat16 (weights and
    tokens) it pools in bfloat16 and agrees with the float32 pooling to bfloat16's precision."""
    torch.manual_seed(0)
    std = torch.cat([AttentionPooling(4, 1024).positional_embedding.detach() for _ in range(4)]).std().item()
    assert abs(std - 1024**-0.5) < 0.1 * 1024**-0.5
    pool = AttentionPooling(2, 8)
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        low = pool.to(torch.bfloat16)(x.bfloat16())
        full = pool.float()(x.bfloat16().float())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), full, atol=0.05, rtol=0.05)


def test_resnet_block_without_scale_shift_is_groupnorm_of_h_plus_the_time_projection():
    """scale_shift=False: h = GroupNorm(conv1(act(GroupNorm(x))) + Linear(emb)), out = (shortcut(x) +
    conv2(act(h))) / output_scale, both GroupNorms with the eps given; output_scale is 1 by default."""
    Fn = torch.nn.functional
    torch.manual_seed(0)
    block = ResnetBlock(4, 8, 6, groups=2, eps=0.3, act="silu", scale_shift=False, output_scale=2.0).double()
    x, emb = _randn((2, 4, 5, 5), 21), _randn((2, 6), 22)
    p = dict(block.named_parameters())
    h = Fn.conv2d(Fn.silu(Fn.group_norm(x, 2, p["norm1.weight"], p["norm1.bias"], eps=0.3)), p["conv1.weight"],
                  p["conv1.bias"], padding=1)
    h = Fn.group_norm(h + Fn.linear(emb, p["time_emb_proj.weight"], p["time_emb_proj.bias"])[:, :, None, None], 2,
                      p["norm2.weight"], p["norm2.bias"], eps=0.3)
    h = Fn.conv2d(Fn.silu(h), p["conv2.weight"], p["conv2.bias"], padding=1)
    expected = (Fn.conv2d(x, p["conv_shortcut.weight"], p["conv_shortcut.bias"]) + h) / 2
    with torch.no_grad():
        torch.testing.assert_close(block(x, emb), expected, atol=1e-12, rtol=0)
    assert ResnetBlock(4, 8, 6, groups=2, eps=0.3, act="silu", scale_shift=True).output_scale == 1.0


def test_simple_cross_attention_holds_the_norms_it_was_given_and_attends_to_pixels_by_default():
    """The pixels' GroupNorm has the eps given; norm_context=False means no text norm; the pixels are keys
    and values too unless only_cross."""
    attention = SimpleCrossAttention(8, 32, 4, groups=2, eps=0.3, norm_context=False)
    assert attention.group_norm.eps == 0.3 and attention.norm_cross is None
    assert attention.to_k is not None and attention.to_v is not None
