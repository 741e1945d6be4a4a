"""The exercises: minidiff passes its own checks, typical mistakes fail them with their hint,
starters fail with "not implemented yet", and whatever a learner's code does is one line.

The wrong implementations below are written as a learner would write them (not taken from
the checker's catalogue of mistakes), so that a hint shown here is one a learner would get.
"""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minidiff import exercises as E
from minidiff.exercises import reference as R

IDS = list(E.EXERCISES)


def run(ex_id: str, **impl) -> E.Report:
    """The exercise's checks on minidiff's implementation with some names replaced by impl."""
    ex = E.get_exercise(ex_id)
    return E.run_checks(ex, {**ex.reference, **impl})


def first_failure(report: E.Report) -> E.CheckResult:
    assert report.failed, f"every check passed:\n{report.format()}"
    return report.failed[0]


# ----------------------------------------------------------------------------------------
# minidiff passes its own checks, in seconds
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ex_id", IDS)
def test_minidiff_passes_every_check_of_every_exercise_within_seconds(ex_id):
    start = time.perf_counter()
    report = E.check_reference(ex_id)
    took = time.perf_counter() - start
    assert report.ok, report.format()
    assert report.exit_code == 0 and len(report.passed) == len(E.EXERCISES[ex_id].checks)
    assert took < 10, f"{ex_id}'s checks took {took:.1f} s"


@pytest.mark.parametrize("ex_id", IDS)
def test_every_exercise_knows_its_lesson_file_and_names(ex_id):
    ex = E.EXERCISES[ex_id]
    assert ex.file_name.endswith(".py") and ex.file_name.startswith(ex_id.lower().replace(".", "_"))
    assert set(ex.reference) == set(ex.names)
    assert ex.checks and all(set(c.uses) <= set(ex.names) for c in ex.checks)
    assert f'EXERCISE = "{ex_id}"' in ex.starter
    for m in ex.mistakes:
        assert m.function in ex.names and m.hint


def test_the_four_course_signatures_are_kept():
    sigs = {ex.id: ex.signatures for ex in E.EXERCISES.values()}
    assert sigs["A1.1"] == "forward(im, t, alphas_cumprod, noise)"
    assert sigs["A1.6"] == "cfg_eps(eps_uncond, eps_cond, scale)"
    assert sigs["A1.9"] == "hybrid_eps(eps_a, eps_b, kernel_size, sigma)"
    assert sigs["B2.3"] == "flow_sample(velocity, x0, num_steps)"


# ----------------------------------------------------------------------------------------
# Starters
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ex_id", IDS)
def test_a_starter_as_written_fails_every_check_with_not_implemented_yet(ex_id, tmp_path):
    path = E.write_starter(ex_id, tmp_path / "my")
    assert path == tmp_path / "my" / E.EXERCISES[ex_id].file_name
    report = E.check_file(path)
    assert report.error is None, report.error
    assert report.results and not report.passed and report.exit_code == 1
    assert all(r.mistake == "not-implemented" and "not implemented yet" in r.problem for r in report.results)


def test_write_starter_never_overwrites_the_learners_work(tmp_path):
    path = E.write_starter("A1.4", tmp_path)
    assert E.write_starter("a1.4", tmp_path) == path  # untouched: written again, any case of id
    path.write_text(path.read_text() + "\n# my work\n")
    with pytest.raises(ValueError, match="holds your changes"):
        E.write_starter("A1.4", tmp_path)
    assert path.read_text().endswith("# my work\n")
    with pytest.raises(ValueError, match="unknown exercise"):
        E.write_starter("A9.9", tmp_path)


# ----------------------------------------------------------------------------------------
# Typical mistakes fail with the hint written for them
# ----------------------------------------------------------------------------------------


def forward_no_sqrt(im, t, alphas_cumprod, noise):
    ab = alphas_cumprod[t]
    return ab * im + (1 - ab) * noise


def forward_noise_wrong_side(im, t, alphas_cumprod, noise):
    ab = alphas_cumprod[t]
    return torch.sqrt(1 - ab) * im + torch.sqrt(ab) * noise


def forward_alpha_not_cumprod(im, t, alphas_cumprod, noise):
    alpha = alphas_cumprod[t] / (alphas_cumprod[t - 1] if t > 0 else 1.0)  # 1 - beta_t of one step
    return alpha.sqrt() * im + (1 - alpha).sqrt() * noise


def _gauss_kernel(k, sigma, two=2.0, normalise=True, dtype=torch.float64):
    i = torch.arange(k, dtype=dtype) - k // 2
    g = torch.exp(-i**2 / (two * sigma**2))
    g = g / g.sum() if normalise else g
    return g[:, None] * g[None, :]


def blur_zero_padding(x_t, kernel_size, sigma):
    c = x_t.shape[1]
    w = _gauss_kernel(kernel_size, sigma, dtype=x_t.dtype).repeat(c, 1, 1, 1)
    return F.conv2d(x_t, w, padding=kernel_size // 2, groups=c)


def _blur_reflect(x_t, kernel_size, sigma, **kw):
    c, r = x_t.shape[1], kernel_size // 2
    w = _gauss_kernel(kernel_size, sigma, dtype=x_t.dtype, **kw).repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x_t, (r, r, r, r), mode="reflect"), w, groups=c)


def blur_unnormalised(x_t, kernel_size, sigma):
    return _blur_reflect(x_t, kernel_size, sigma, normalise=False)


def blur_sigma_convention(x_t, kernel_size, sigma):
    return _blur_reflect(x_t, kernel_size, sigma, two=1.0)


def one_step_no_division(den, x_t, t, alphas_cumprod):
    eps = den(x_t, torch.full((x_t.shape[0],), t))
    return x_t - (1 - alphas_cumprod[t]).sqrt() * eps


def one_step_int_t(den, x_t, t, alphas_cumprod):
    eps = den(x_t, t)  # a Python int, not a (B,) tensor
    ab = alphas_cumprod[t]
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def _step(x_t, eps, t, t_prev, alphas_cumprod, z, alpha_is_ab=False, beta_variance=False, wrap=False):
    ab_t = alphas_cumprod[t].double()
    ab_prev = alphas_cumprod[t_prev].double() if (t_prev >= 0 or wrap) else torch.tensor(1.0, dtype=torch.float64)
    alpha = ab_t if alpha_is_ab else ab_t / ab_prev
    beta = 1 - alpha
    x0 = (x_t - torch.sqrt(1 - ab_t) * eps) / torch.sqrt(ab_t)
    mean = torch.sqrt(ab_prev) * beta / (1 - ab_t) * x0 + torch.sqrt(alpha) * (1 - ab_prev) / (1 - ab_t) * x_t
    var = beta if beta_variance else (1 - ab_prev) / (1 - ab_t) * beta
    return (mean + torch.sqrt(var) * z).to(x_t.dtype)


def step_alpha_is_ab(*a):
    return _step(*a, alpha_is_ab=True)


def step_last_adds_noise(*a):
    return _step(*a, beta_variance=True)


def step_minus_one_wraps(*a):
    return _step(*a, wrap=True)


def loop_one_step_short(den, x, timesteps, alphas_cumprod, i_start, generator):
    for i in range(i_start, len(timesteps) - 2):  # a stride off by one: the last step is never taken
        t = torch.full((x.shape[0],), timesteps[i])
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = R.ddpm_step(x, den(x, t), timesteps[i], timesteps[i + 1], alphas_cumprod, z)
    return x


def loop_global_rng(den, x, timesteps, alphas_cumprod, i_start, generator):
    for i in range(i_start, len(timesteps) - 1):
        t = torch.full((x.shape[0],), timesteps[i])
        z = torch.randn_like(x)  # not from the generator
        x = R.ddpm_step(x, den(x, t), timesteps[i], timesteps[i + 1], alphas_cumprod, z)
    return x


def sample_from_zeros(den, shape, timesteps, alphas_cumprod, generator):
    return R.iterative_denoise(den, torch.zeros(shape), timesteps, alphas_cumprod, 0, generator)


def sample_from_uniform(den, shape, timesteps, alphas_cumprod, generator):
    return R.iterative_denoise(den, torch.rand(shape, generator=generator), timesteps, alphas_cumprod, 0, generator)


def sdedit_ignores_i_start(den, image, timesteps, alphas_cumprod, i_start, generator):
    noise = torch.randn(image.shape, generator=generator, dtype=image.dtype)
    x = R.forward(image, timesteps[0], alphas_cumprod, noise)
    return R.iterative_denoise(den, x, timesteps, alphas_cumprod, 0, generator)


def sdedit_no_noise(den, image, timesteps, alphas_cumprod, i_start, generator):
    return R.iterative_denoise(den, image, timesteps, alphas_cumprod, i_start, generator)


def _inpaint(den, image, mask, timesteps, alphas_cumprod, generator, u=1, renoise=True, invert=False,
             resample_last=False):
    m = 1 - mask if invert else mask
    draw = lambda: torch.randn(image.shape, generator=generator, dtype=image.dtype)  # noqa: E731
    x = R.forward(image, timesteps[0], alphas_cumprod, draw())
    for i in range(len(timesteps) - 1):
        t, t_prev = timesteps[i], timesteps[i + 1]
        last = i == len(timesteps) - 2
        for k in range(u if (resample_last or not last) else 1):
            if k:
                x = R.renoise(x, t, t_prev, alphas_cumprod, draw())
            x = R.ddpm_step(x, den(x, torch.full((x.shape[0],), t)), t, t_prev, alphas_cumprod, draw())
            known = image if (last or not renoise) else R.forward(image, t_prev, alphas_cumprod, draw())
            x = m * x + (1 - m) * known
    return x


def inpaint_no_renoise(*a):
    return _inpaint(*a, renoise=False)


def inpaint_inverted_mask(*a):
    return _inpaint(*a, invert=True)


def repaint_resamples_last_step(den, image, mask, timesteps, alphas_cumprod, u, generator):
    return _inpaint(den, image, mask, timesteps, alphas_cumprod, generator, u=u, resample_last=True)


def renoise_from_clean(x_prev, t, t_prev, alphas_cumprod, z):
    ab = alphas_cumprod[t]
    return ab.sqrt() * x_prev + (1 - ab).sqrt() * z


def anagram_not_inverted(predict_a, predict_b, x_t, view, inverse):
    return (predict_a(x_t) + predict_b(view(x_t))) / 2


def anagram_sum(predict_a, predict_b, x_t, view, inverse):
    return predict_a(x_t) + inverse(predict_b(view(x_t)))


def anagram_inverse_first(predict_a, predict_b, x_t, view, inverse):
    return (predict_a(x_t) + view(predict_b(inverse(x_t)))) / 2


def _low(e, k, s):
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur(e, [k, k], [s, s])


def hybrid_swapped(eps_a, eps_b, kernel_size, sigma):
    return _low(eps_b, kernel_size, sigma) + eps_a - _low(eps_a, kernel_size, sigma)


def hybrid_high_pass_sign(eps_a, eps_b, kernel_size, sigma):
    return _low(eps_a, kernel_size, sigma) + _low(eps_b, kernel_size, sigma) - eps_b


class FlattenPool2(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(2)  # pools the wrong size: 7x7 -> 3x3

    def forward(self, x):
        return F.gelu(self.pool(x))


class DownConvNoNorm(nn.Sequential):
    def __init__(self, in_channels, out_channels):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, 2, 1), nn.GELU())


class ConvReLU(nn.Sequential):
    def __init__(self, in_channels, out_channels):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels), nn.ReLU())


def add_noise_variance(x, sigma, noise):
    return x + sigma**2 * noise


def add_noise_ddpm(x, sigma, noise):
    return math.sqrt(1 - sigma**2) * x + sigma * noise


def denoiser_loss_noise_target(model, x, sigma, noise):
    return F.mse_loss(model(x + sigma * noise), noise)


def denoiser_loss_item(model, x, sigma, noise):
    return torch.tensor(F.mse_loss(model(x + sigma * noise), x).item(), dtype=x.dtype)


class FCBlockReLU(nn.Sequential):
    def __init__(self, in_features, out_features):
        super().__init__(nn.Linear(in_features, out_features), nn.ReLU(), nn.Linear(out_features, out_features))


def condition_swapped(h, t1, c1=None):
    if c1 is None:
        return h + t1[:, :, None, None]
    return t1[:, :, None, None] * h + c1[:, :, None, None]


def flow_loss_reversed_target(model, x1, x0, t):
    tt = t.view(-1, 1, 1, 1)
    return F.mse_loss(model((1 - tt) * x0 + tt * x1, t), x0 - x1)


def flow_loss_reversed_path(model, x1, x0, t):
    tt = t.view(-1, 1, 1, 1)
    return F.mse_loss(model(tt * x0 + (1 - tt) * x1, t), x1 - x0)


def euler_backwards(velocity, x0, num_steps):
    x, dt = x0, 1 / num_steps
    for i in range(num_steps):
        x = x - dt * velocity(x, torch.full((x.shape[0],), 1 - i * dt))
    return x


def euler_wrong_dt(velocity, x0, num_steps):
    x, dt = x0, 1 / (num_steps + 1)
    for i in range(num_steps):
        x = x + dt * velocity(x, torch.full((x.shape[0],), i * dt))
    return x


def euler_float_t(velocity, x0, num_steps):
    x = x0
    for i in range(num_steps):
        x = x + velocity(x, i / num_steps) / num_steps
    return x


def _keep(c, p_uncond, generator):
    return (torch.rand(c.shape[0], generator=generator) >= p_uncond).to(c.dtype)


def class_loss_zeroes_image(model, x1, c, x0, t, p_uncond, generator):
    keep = _keep(c, p_uncond, generator)
    tt = t.view(-1, 1, 1, 1)
    x_t = ((1 - tt) * x0 + tt * x1) * keep.view(-1, 1, 1, 1)  # drops the image, not the class
    return F.mse_loss(model(x_t, t, c), x1 - x0)


def class_loss_f_dropout(model, x1, c, x0, t, p_uncond, generator):
    tt = t.view(-1, 1, 1, 1)
    return F.mse_loss(model((1 - tt) * x0 + tt * x1, t, F.dropout(c, p_uncond)), x1 - x0)


def _cfg_euler(model, x0, c, num_steps, guidance_scale, rule, uncond):
    x = x0
    for i in range(num_steps):
        t = torch.full((x.shape[0],), i / num_steps)
        v_c, v_u = model(x, t, c), model(x, t, uncond(c))
        x = x + rule(v_u, v_c, guidance_scale) / num_steps
    return x


def cfg_sample_reversed(model, x0, c, num_steps, guidance_scale):
    return _cfg_euler(model, x0, c, num_steps, guidance_scale, lambda u, v, s: v + s * (u - v), torch.zeros_like)


def cfg_sample_uncond_is_cond(model, x0, c, num_steps, guidance_scale):
    return _cfg_euler(model, x0, c, num_steps, guidance_scale, lambda u, v, s: u + s * (v - u), lambda c: c)


def ddpm_loss_raw_t(model, x0, t, eps, alphas_cumprod):
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    return F.mse_loss(model(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t), eps)  # t, not t / T


def ddpm_sample_last_step_noisy(model, x, timesteps, alphas_cumprod, generator):
    T = len(alphas_cumprod)
    for t, t_prev in zip(timesteps[:-1], timesteps[1:]):
        eps = model(x, torch.full((x.shape[0],), t / T))
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = step_last_adds_noise(x, eps, t, t_prev, alphas_cumprod, z)  # sigma^2 = beta_t: noise at the end too
    return x


def _reflow_times(batch, p_zero, generator, at=0.0):
    at_zero = torch.rand(batch, generator=generator) < p_zero
    return torch.where(at_zero, torch.full((batch,), at), torch.rand(batch, generator=generator))


def reflow_global_noise(model, x1, x0, c, p_zero, generator):
    t = _reflow_times(x1.shape[0], p_zero, generator).double()
    noise = torch.randn_like(x1)  # new noise, from the global RNG: the pair's coupling is lost
    return F.mse_loss(model((1 - t[:, None, None, None]) * noise + t[:, None, None, None] * x1, t, c), x1 - noise)


def reflow_drops_class(model, x1, x0, c, p_zero, generator):
    t = _reflow_times(x1.shape[0], p_zero, generator).double()
    c = F.dropout(c, 0.1)  # B2.4's habit carried over
    return F.mse_loss(model((1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * x1, t, c), x1 - x0)


def reflow_ignores_p_zero(model, x1, x0, c, p_zero, generator):
    t = torch.rand(x1.shape[0], generator=generator, dtype=x1.dtype)
    return F.mse_loss(model((1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * x1, t, c), x1 - x0)


def reflow_zero_share_at_one(model, x1, x0, c, p_zero, generator):
    t = _reflow_times(x1.shape[0], p_zero, generator, at=1.0).double()
    return F.mse_loss(model((1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * x1, t, c), x1 - x0)


WRONG = [
    ("A1.1", "missing-sqrt", {"forward": forward_no_sqrt}),
    ("A1.1", "noise-wrong-side", {"forward": forward_noise_wrong_side}),
    ("A1.1", "alpha-not-cumprod", {"forward": forward_alpha_not_cumprod}),
    ("A1.2", "zero-padding", {"blur_denoise": blur_zero_padding}),
    ("A1.2", "unnormalised", {"blur_denoise": blur_unnormalised}),
    ("A1.2", "sigma-convention", {"blur_denoise": blur_sigma_convention}),
    ("A1.3", "no-division", {"one_step_denoise": one_step_no_division}),
    ("A1.3", "t-not-tensor", {"one_step_denoise": one_step_int_t}),
    ("A1.4", "alpha-is-cumprod", {"ddpm_step": step_alpha_is_ab}),
    ("A1.4", "beta-variance", {"ddpm_step": step_last_adds_noise}),
    ("A1.4", "minus-one-wraps", {"ddpm_step": step_minus_one_wraps}),
    ("A1.4", "stops-early", {"iterative_denoise": loop_one_step_short}),
    ("A1.4", "global-rng", {"iterative_denoise": loop_global_rng}),
    ("A1.5", "zeros", {"sample_from_noise": sample_from_zeros}),
    ("A1.5", "uniform-noise", {"sample_from_noise": sample_from_uniform}),
    ("A1.6", "difference-reversed", {"cfg_eps": lambda u, c, s: c + s * (u - c)}),
    ("A1.6", "scale-on-cond-only", {"cfg_eps": lambda u, c, s: u + s * c}),
    ("A1.7", "noised-to-start", {"sdedit": sdedit_ignores_i_start}),
    ("A1.7", "not-noised", {"sdedit": sdedit_no_noise}),
    ("A1.7.2", "not-renoised", {"inpaint": inpaint_no_renoise}),
    ("A1.7.2", "inverted-mask", {"inpaint": inpaint_inverted_mask}),
    ("A1.7.2b", "jump-from-clean", {"renoise": renoise_from_clean}),
    ("A1.7.2b", "resamples-last-step", {"repaint": repaint_resamples_last_step}),
    ("A1.8", "not-inverted", {"anagram_eps": anagram_not_inverted}),
    ("A1.8", "sum-not-mean", {"anagram_eps": anagram_sum}),
    ("A1.8", "inverse-first", {"anagram_eps": anagram_inverse_first}),
    ("A1.9", "bands-swapped", {"hybrid_eps": hybrid_swapped}),
    ("A1.9", "high-pass-sign", {"hybrid_eps": hybrid_high_pass_sign}),
    ("B1.1", "flatten-pool", {"Flatten": FlattenPool2}),
    ("B1.1", "missing-batchnorm", {"DownConv": DownConvNoNorm}),
    ("B1.1", "activation", {"Conv": ConvReLU}),
    ("B1.2", "sigma-squared", {"add_noise": add_noise_variance}),
    ("B1.2", "ddpm-scaling", {"add_noise": add_noise_ddpm}),
    ("B1.2.1", "target-is-noise", {"denoiser_loss": denoiser_loss_noise_target}),
    ("B1.2.1", "no-grad", {"denoiser_loss": denoiser_loss_item}),
    ("B2.1", "activation", {"FCBlock": FCBlockReLU}),
    ("B2.1", "scale-and-shift-swapped", {"condition": condition_swapped}),
    ("B2.2", "target-reversed", {"flow_loss": flow_loss_reversed_target}),
    ("B2.2", "path-reversed", {"flow_loss": flow_loss_reversed_path}),
    ("B2.3", "wrong-direction", {"flow_sample": euler_backwards}),
    ("B2.3", "dt-one-over-n-plus-one", {"flow_sample": euler_wrong_dt}),
    ("B2.3", "t-not-tensor", {"flow_sample": euler_float_t}),
    ("B2.3.1", "t-not-normalised", {"ddpm_loss": ddpm_loss_raw_t}),
    ("B2.3.1", "beta-variance", {"ddpm_sample": ddpm_sample_last_step_noisy}),
    ("B2.4", "zeroes-image", {"class_flow_loss": class_loss_zeroes_image}),
    ("B2.4", "entrywise-dropout", {"class_flow_loss": class_loss_f_dropout}),
    ("B2.6", "difference-reversed", {"cfg_flow_sample": cfg_sample_reversed}),
    ("B2.6", "uncond-not-zero", {"cfg_flow_sample": cfg_sample_uncond_is_cond}),
    ("B3.1", "fresh-noise", {"reflow_loss": reflow_global_noise}),
    ("B3.1", "class-dropped", {"reflow_loss": reflow_drops_class}),
    ("B3.1", "no-zero-share", {"reflow_loss": reflow_ignores_p_zero}),
    ("B3.1", "t-at-one", {"reflow_loss": reflow_zero_share_at_one}),
]


@pytest.mark.parametrize("ex_id,key,impl", WRONG, ids=[f"{e}-{k}" for e, k, _ in WRONG])
def test_a_typical_mistake_fails_with_the_hint_written_for_it(ex_id, key, impl):
    first = first_failure(run(ex_id, **impl))
    assert first.mistake == key, f"{ex_id}: expected the hint for {key}, got {first.mistake}: {first.hint}"
    catalogue = {m.key: m.hint for m in E.EXERCISES[ex_id].mistakes}
    if key in catalogue:
        assert first.hint == catalogue[key]
    else:  # a hint the check writes itself, not its general one
        assert first.hint and first.hint != first.check.hint


def test_every_exercise_has_at_least_two_mistakes_tested_here():
    counts = {ex_id: sum(e == ex_id for e, _, _ in WRONG) for ex_id in IDS}
    assert all(n >= 2 for n in counts.values()), counts


def test_the_first_failure_shows_the_smallest_input_expected_got_and_hint():
    report = run("A1.1", forward=forward_noise_wrong_side)
    text = report.format()
    for part in ("FAIL", "smallest failing input:", "expected:", "got:", "hint:", "The image goes with sqrt(ab_t)"):
        assert part in text, text
    first = first_failure(report)
    assert "(1, 1, 1, 1)" in first.inputs  # hypothesis shrank the image to one pixel
    assert report.exit_code == 1 and len(report.passed) + len(report.failed) == len(report.results)


# ----------------------------------------------------------------------------------------
# Whatever the learner's code does, the report is one line per check
# ----------------------------------------------------------------------------------------


def forward_mutates(im, t, alphas_cumprod, noise):
    im.mul_(alphas_cumprod[t].sqrt())
    return im + (1 - alphas_cumprod[t]).sqrt() * noise


def forward_float32(im, t, alphas_cumprod, noise):
    return R.forward(im, t, alphas_cumprod, noise).float()


def forward_nan(im, t, alphas_cumprod, noise):
    return R.forward(im, t, alphas_cumprod, noise) / 0 * 0


def forward_first_image(im, t, alphas_cumprod, noise):
    return R.forward(im, t, alphas_cumprod, noise)[0]


def forward_no_return(im, t, alphas_cumprod, noise):
    R.forward(im, t, alphas_cumprod, noise)


@pytest.mark.parametrize("impl,key,words", [
    (forward_mutates, "mutated", "changed its argument `im` in place"),
    (forward_float32, "dtype", "dtype torch.float32"),
    (forward_nan, "nan", "NaN"),
    (forward_first_image, "shape", "returned shape"),
    (forward_no_return, "type", "forget the `return`"),
])
def test_bad_results_are_reported_in_one_line(impl, key, words):
    first = first_failure(run("A1.1", forward=impl))
    assert first.mistake == key and words in first.problem and "\n" not in first.problem
    assert "Traceback" not in run("A1.1", forward=impl).format()


def test_a_hang_is_stopped_by_the_time_limit():
    def forward_hangs(im, t, alphas_cumprod, noise):
        while True:
            pass

    ex = E.get_exercise("A1.1")
    start = time.perf_counter()
    report = E.run_checks(ex, {"forward": forward_hangs}, time_limit=0.5)
    assert time.perf_counter() - start < 10
    assert all(r.mistake == "timeout" and "still running" in r.problem for r in report.results)


def test_an_exception_in_the_learners_file_names_its_line(tmp_path):
    path = E.write_starter("A1.6", tmp_path)
    path.write_text(path.read_text().replace('raise NotImplementedError("not implemented yet")',
                                             "return eps_uncond + scale * (eps_cond - eps_unconditional)"))
    first = first_failure(E.check_file(path))
    assert first.mistake == "raised" and "NameError" in first.problem
    assert "a1_6_cfg_eps.py" in first.problem and "eps_unconditional" in first.problem


def test_files_that_do_not_import_or_lack_a_name_are_one_line_errors(tmp_path):
    broken = tmp_path / "a1_6_cfg_eps.py"
    broken.write_text('EXERCISE = "A1.6"\ndef cfg_eps(eps_uncond, eps_cond, scale)\n    return 1\n')
    report = E.check_file(broken)
    assert report.error and "does not parse" in report.error and report.exit_code == 1
    assert "FAIL" in report.format()

    raising = tmp_path / "raising.py"
    raising.write_text('EXERCISE = "A1.6"\nimport not_a_module_anywhere\n')
    assert "does not import" in E.check_file(raising).error

    renamed = tmp_path / "renamed.py"
    renamed.write_text('EXERCISE = "A1.6"\ndef my_cfg(eps_uncond, eps_cond, scale):\n    return eps_cond\n')
    assert "defines no cfg_eps" in E.check_file(renamed).error

    with pytest.raises(FileNotFoundError):
        E.check_file(tmp_path / "missing.py")
    unknown = tmp_path / "notes.py"
    unknown.write_text("x = 1\n")
    with pytest.raises(ValueError, match="does not say which exercise"):
        E.check_file(unknown)


def test_the_exercise_is_read_from_the_file_or_else_from_its_name(tmp_path):
    body = "def cfg_eps(eps_uncond, eps_cond, scale):\n    return eps_uncond + scale * (eps_cond - eps_uncond)\n"
    by_name = tmp_path / "a1_6_cfg_eps.py"
    by_name.write_text(body)
    assert E.check_file(by_name).ok
    by_line = tmp_path / "guidance_attempt.py"
    by_line.write_text('EXERCISE = "A1.6"\n' + body)
    report = E.check(by_line)
    assert report.ok and report.exercise.id == "A1.6" and report.exit_code == 0
    assert E.check("A1.6", reference=True).ok and E.check(by_line, reference=True).ok


def test_the_list_says_where_each_exercise_stands_in_a_folder(tmp_path):
    def status(ex_id):
        return next(r.status for r in E.list_exercises(tmp_path) if r.exercise.id == ex_id)

    assert status("A1.6") == "not started"
    path = E.write_starter("A1.6", tmp_path)
    assert status("A1.6") == "starter, untouched"
    E.check_file(path)
    path.write_text(path.read_text().replace('raise NotImplementedError("not implemented yet")',
                                             "return eps_cond"))
    assert status("A1.6") == "changed since its last check"
    E.check_file(path)
    assert status("A1.6").startswith("failing: ")
    path.write_text(path.read_text().replace("return eps_cond", "return eps_uncond + scale * (eps_cond - eps_uncond)"))
    E.check_file(path)
    assert status("A1.6") == "passed"
    table = E.format_exercises(E.list_exercises(tmp_path))
    assert all(ex_id in table for ex_id in IDS) and "passed" in table


@pytest.mark.parametrize("damaged", ["{not json", "[1, 2]"])
def test_a_damaged_record_is_written_again_by_the_next_check(tmp_path, damaged):
    """The record only remembers outcomes: a damaged one must not stop every later check being kept."""
    (tmp_path / E.RECORD_FILE).write_text(damaged)
    path = tmp_path / "a1_6_cfg_eps.py"
    path.write_text("def cfg_eps(eps_uncond, eps_cond, scale):\n    return eps_uncond + scale * (eps_cond - eps_uncond)\n")
    assert E.check_file(path).ok
    assert next(r.status for r in E.list_exercises(tmp_path) if r.exercise.id == "A1.6") == "passed"
    assert json.loads((tmp_path / E.RECORD_FILE).read_text())["a1_6_cfg_eps.py"]["ok"] is True


def test_a_function_with_the_wrong_parameters_is_a_one_line_error(tmp_path):
    path = tmp_path / "a1_6_cfg_eps.py"
    path.write_text("def cfg_eps(eps_uncond, eps_cond):\n    return eps_cond\n")
    report = E.check_file(path)
    assert "cfg_eps(eps_uncond, eps_cond) must take (eps_uncond, eps_cond, scale)" in report.error
    assert report.exit_code == 1


def test_the_command_functions_print_and_return_the_exit_status(tmp_path, capsys):
    assert E.print_exercises(tmp_path) == 0
    assert "A1.4" in capsys.readouterr().out
    assert E.print_starter("A1.6", tmp_path) == 0
    path = tmp_path / "a1_6_cfg_eps.py"
    assert f"minidiff check {path}" in capsys.readouterr().out
    assert E.print_check(path) == 1
    assert "not implemented yet" in capsys.readouterr().out
    assert E.print_check("A1.6", reference=True) == 0
    assert "every check passed." in capsys.readouterr().out
