"""Samplers driven by exact denoisers (minidiff.analytic): no trained network anywhere.

Two kinds of data whose ideal denoiser is known in closed form:
- a finite set D of 8x8 images with +-1 pixels: every sampler must end on a member of D;
- Gaussian pixels N(mu, s^2): every step of every sampler is affine in x plus Gaussian
  noise, so the mean and variance of the output follow a recursion written out here from
  the papers' update rules, and the Monte Carlo statistics of the real sampler must match.

Statistical tolerance: n = 512 images x 64 pixels = 32768 independent values (the denoiser
acts per pixel and the noise is i.i.d.). The output is Gaussian, so the standard error of
the sample mean is sqrt(v / n) and that of the sample variance v sqrt(2 / (n - 1)) (0.78 %
of v); we allow 5 standard errors (two-sided false-alarm rate ~6e-7 per check).
"""

from __future__ import annotations

import io
import math
import sys

import pytest
import torch

from minidiff.analytic import finite_data_denoiser, finite_data_model, gaussian_denoiser
from minidiff.samplers import ddim, flow_euler, flow_heun, iterative_denoise, one_step_denoise
from minidiff.schedule import DDPMSchedule, FlowSchedule, strided_timesteps

IF = DDPMSchedule.deepfloyd()
LIN = DDPMSchedule.linear()
FLOW = FlowSchedule()


SAMPLERS = {"ddpm": iterative_denoise, "ddim": ddim, "euler": flow_euler, "heun": flow_heun}


def sample(den, shape, schedule, timesteps, generator, method="ddpm", dtype=torch.float32, **kwargs):
    """Images from pure noise: x = N(0, I) of ``shape`` at timesteps[0], drawn from the generator,
    then the sampler named by method down to timesteps[-1]."""
    x = torch.randn(shape, generator=generator, dtype=dtype)
    return SAMPLERS[method](den, x, schedule, timesteps, generator=generator, **kwargs)


def make_data(n: int = 4, seed: int = 0) -> torch.Tensor:
    """n distinct 1x8x8 images of +-1 pixels (pairwise distance >= 4)."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(n, 1, 8, 8, generator=g).sign()
    dist = torch.cdist(data.flatten(1), data.flatten(1)) + 100 * torch.eye(n)
    assert dist.min() >= 4
    return data


def distance_to_nearest(x: torch.Tensor, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max |x - nearest member| per sample, index of the nearest member)."""
    d = torch.cdist(x.flatten(1).double(), data.flatten(1).double())
    idx = d.argmin(1)
    return (x - data[idx]).abs().flatten(1).amax(1), idx


# ----------------------------------------------------------------------------------------
# The exact denoisers themselves
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0, 300, 990])
def test_finite_data_denoiser_of_one_point_returns_the_true_noise_ddpm(t):
    """With D = {d}, x0_hat = d, so eps_hat(add_noise(d, eps, t)) == eps."""
    d = make_data(1).double()
    eps = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    den = finite_data_denoiser(d, IF)
    x_t = IF.add_noise(d.expand(3, -1, -1, -1), eps, t)
    torch.testing.assert_close(den(x_t, torch.full((3,), t)), eps, atol=1e-8, rtol=0)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.9])
def test_finite_data_denoiser_of_one_point_returns_the_true_velocity_flow(t):
    """With D = {d}, x1_hat = d, so v_hat((1 - t) z + t d) == d - z."""
    d = make_data(1).double()
    z = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    den = finite_data_denoiser(d, FLOW)
    x_t = FLOW.add_noise(d.expand(3, -1, -1, -1), z, t)
    torch.testing.assert_close(den(x_t, torch.full((3,), t)), d - z, atol=1e-8, rtol=0)


def test_finite_data_model_condition_sets_the_prior_over_members():
    """At pure noise x0_hat is the prior mean: the class mean for a one-hot cond, the mean of
    all of D for the zero (null) cond."""
    data = make_data(4).double()
    labels = torch.tensor([0, 0, 1, 1])
    model = finite_data_model(data, FLOW, labels, num_classes=2)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    t = torch.zeros(2)
    v_class1 = model(x, t, torch.tensor([[0.0, 1.0]]).expand(2, 2))
    v_null = model(x, t, torch.zeros(2, 2))
    torch.testing.assert_close(FLOW.predict_data(x, v_class1, 0.0), data[2:].mean(0, keepdim=True).expand(2, -1, -1, -1))
    torch.testing.assert_close(FLOW.predict_data(x, v_null, 0.0), data.mean(0, keepdim=True).expand(2, -1, -1, -1))


@pytest.mark.parametrize("schedule,t", [(IF, 500), (LIN, 100), (FLOW, 0.4)])
def test_one_step_denoise_of_single_point_data_is_that_point(schedule, t):
    d = make_data(1)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    x_t = schedule.add_noise(d.expand(2, -1, -1, -1), noise, t)
    x0_hat = one_step_denoise(finite_data_denoiser(d, schedule), x_t, schedule, t)
    torch.testing.assert_close(x0_hat, d.expand(2, -1, -1, -1), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------------------
# Sampling from noise ends on the data
# ----------------------------------------------------------------------------------------

CASES = {
    "ddpm-deepfloyd-strided": (IF, strided_timesteps(990, 30), "ddpm", 0.1),
    "ddpm-linear-stride10": (LIN, strided_timesteps(299, 10), "ddpm", 0.15),
    "ddim-deepfloyd": (IF, strided_timesteps(990, 30), "ddim", 0.1),
    "ddim-linear": (LIN, strided_timesteps(299, 10), "ddim", 0.15),
    "flow-euler": (FLOW, FlowSchedule.timesteps(32), "euler", 1e-5),
    "flow-heun": (FLOW, FlowSchedule.timesteps(16), "heun", 1e-5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sampling_from_noise_ends_on_a_member_of_the_data(case):
    """The ideal denoiser of a finite set memorises it: every sample lands on a member.
    DDPM stops at t = 0, where sqrt(1 - ab_0) of noise is left (0.006 for the cosine schedule,
    0.01 for the linear one), hence the looser tolerance there; the flow ends at t = 1 exactly."""
    schedule, ts, method, tol = CASES[case]
    data = make_data(4)
    x = sample(finite_data_denoiser(data, schedule), (16, 1, 8, 8), schedule, ts,
               generator=torch.Generator().manual_seed(0), method=method, progress=False)
    err, idx = distance_to_nearest(x, data)
    assert err.max() < tol, f"{case}: a sample is {err.max():.3f} away from every member"
    assert len(set(idx.tolist())) >= 2, "16 samples from 4 members should not all be the same member"


def test_final_minus_one_step_gives_the_clean_member_exactly():
    """Appending -1 to the timesteps ends with a noiseless step to x0_hat, like diffusers."""
    data = make_data(4)
    ts = strided_timesteps(990, 30) + [-1]
    x = sample(finite_data_denoiser(data, IF), (8, 1, 8, 8), IF, ts,
               generator=torch.Generator().manual_seed(0), progress=False)
    err, _ = distance_to_nearest(x, data)
    assert err.max() < 1e-4


# ----------------------------------------------------------------------------------------
# Exactness on single-point data
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", [IF, LIN], ids=["deepfloyd", "linear"])
def test_ddim_eta0_with_exact_eps_stays_on_the_forward_process_at_every_step(schedule):
    """With D = {d}, eps_hat is the true eps, and DDIM (eta = 0) gives
    x_{t'} = sqrt(ab_{t'}) d + sqrt(1 - ab_{t'}) eps = add_noise(d, eps, t') at every step."""
    d = make_data(1).double()
    eps = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ts = strided_timesteps(schedule.num_timesteps - 10, 45)
    x_start = schedule.add_noise(d.expand(2, -1, -1, -1), eps, ts[1])
    _, xs = ddim(finite_data_denoiser(d, schedule), x_start, schedule, ts, i_start=1,
                 progress=False, return_intermediates=True)
    assert len(xs) == len(ts) - 1
    for x, t in zip(xs, ts[1:]):
        torch.testing.assert_close(x, schedule.add_noise(d.expand(2, -1, -1, -1), eps, t), atol=1e-9, rtol=0)


@pytest.mark.parametrize("sampler", [flow_euler, flow_heun])
def test_flow_samplers_follow_the_straight_path_of_single_point_data_exactly(sampler):
    """With D = {d} the velocity (d - x_t) / (1 - t) is constant along the straight line
    x_t = (1 - t) z + t d, so Euler and Heun reproduce it at every step, uneven steps too."""
    d = make_data(1).double()
    z = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ts = [0.0, 0.05, 0.3, 0.31, 0.7, 0.95, 1.0]
    _, xs = sampler(finite_data_denoiser(d, FLOW), z, FLOW, ts, progress=False, return_intermediates=True)
    for x, t in zip(xs, ts):
        torch.testing.assert_close(x, FLOW.add_noise(d.expand(2, -1, -1, -1), z, t), atol=1e-9, rtol=0)


def test_heun_is_exact_for_a_velocity_linear_in_t_and_euler_is_not():
    """dx/dt = a + b t integrates to x(1) = x(0) + a + b / 2. Heun (trapezoid rule) is exact;
    Euler with N equal steps is off by exactly b / (2 N)."""
    a, b, n = 0.7, -1.3, 5

    def den(x, t):
        return torch.full_like(x, a) + b * t.to(x.dtype).reshape(-1, 1, 1, 1)

    x0 = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    ts = FlowSchedule.timesteps(n)
    heun = flow_heun(den, x0, FLOW, ts, progress=False, final_euler=False)
    euler = flow_euler(den, x0, FLOW, ts, progress=False)
    torch.testing.assert_close(heun, x0 + a + b / 2, atol=1e-12, rtol=0)
    torch.testing.assert_close(euler - (x0 + a + b / 2), torch.full_like(x0, -b / (2 * n)), atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------------------
# Gaussian data: closed-form statistics of the whole chain
# ----------------------------------------------------------------------------------------

MU, STD, N_IMAGES = 0.5, 0.3, 512


def ddpm_chain_moments(schedule: DDPMSchedule, ts: list[int], ddim_chain: bool) -> tuple[float, float]:
    """Mean and variance after the strided DDPM (Ho et al.) or DDIM (Song et al.) chain from
    N(0, 1) at ts[0], with the exact Gaussian denoiser. Each step is x' = A x + c + sigma z."""
    ab = schedule.alphas_cumprod.double()
    m, v = 0.0, 1.0
    for t, tp in zip(ts[:-1], ts[1:]):
        a, ap = float(ab[t]), float(ab[tp]) if tp >= 0 else 1.0
        k = math.sqrt(a) * STD**2 / (a * STD**2 + 1 - a)  # x0_hat = k x + MU (1 - k sqrt(a))
        if ddim_chain:  # x' = sqrt(ap) x0_hat + sqrt(1 - ap) (x - sqrt(a) x0_hat) / sqrt(1 - a)
            r = math.sqrt((1 - ap) / (1 - a))
            c_x0, c_x, var = math.sqrt(ap) - r * math.sqrt(a), r, 0.0
        else:  # posterior mean coefficients and variance of q(x_{t'} | x_t, x_0)
            alpha = a / ap
            c_x0 = math.sqrt(ap) * (1 - alpha) / (1 - a)
            c_x = math.sqrt(alpha) * (1 - ap) / (1 - a)
            var = (1 - ap) / (1 - a) * (1 - alpha) if t > 0 else 0.0
        A, c = c_x0 * k + c_x, c_x0 * MU * (1 - k * math.sqrt(a))
        m, v = A * m + c, A * A * v + var
    return m, v


def flow_chain_moments(ts: list[float], heun: bool) -> tuple[float, float]:
    """Mean and variance after Euler / Heun (final step Euler) from N(0, 1) at t = 0, with
    v(x, t) = MU + g(t) (x - t MU), g(t) = (t STD^2 - (1 - t)) / ((1 - t)^2 + t^2 STD^2)."""

    def g(t):
        return (t * STD**2 - (1 - t)) / ((1 - t) ** 2 + t**2 * STD**2)

    m, v = 0.0, 1.0
    for t, tn in zip(ts[:-1], ts[1:]):
        dt = tn - t
        # velocity as an affine map of x: v = p x + q
        p1, q1 = g(t), MU - g(t) * t * MU
        A, c = 1 + dt * p1, dt * q1  # Euler predictor
        if heun and tn < 1:
            p2, q2 = g(tn), MU - g(tn) * tn * MU  # v at the predictor x~ = A x + c
            A, c = 1 + dt * (p1 + p2 * A) / 2, dt * (q1 + p2 * c + q2) / 2
        m, v = A * m + c, A * A * v
    return m, v


def assert_moments(x: torch.Tensor, mean: float, var: float, slack_var: float = 0.0) -> None:
    n = x.numel()
    x = x.double().flatten()
    se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2 / (n - 1))
    assert abs(x.mean().item() - mean) < 5 * se_mean, (x.mean().item(), mean, se_mean)
    assert abs(x.var().item() - var) < 5 * se_var + slack_var, (x.var().item(), var, se_var)


GAUSS_CASES = {
    "ddpm-deepfloyd-strided": (IF, strided_timesteps(990, 30), "ddpm"),
    "ddpm-linear-stride10": (LIN, strided_timesteps(299, 10), "ddpm"),
    "ddim-deepfloyd-strided": (IF, strided_timesteps(990, 30), "ddim"),
    "flow-euler": (FLOW, FlowSchedule.timesteps(10), "euler"),
    "flow-heun": (FLOW, FlowSchedule.timesteps(10), "heun"),
}


@pytest.mark.parametrize("case", list(GAUSS_CASES))
def test_gaussian_data_output_moments_match_the_closed_form_recursion(case):
    schedule, ts, method = GAUSS_CASES[case]
    x = sample(gaussian_denoiser(MU, STD, schedule), (N_IMAGES, 1, 8, 8), schedule, ts,
               generator=torch.Generator().manual_seed(0), method=method, progress=False)
    if method in ("ddpm", "ddim"):
        mean, var = ddpm_chain_moments(schedule, ts, ddim_chain=method == "ddim")
    else:
        mean, var = flow_chain_moments(ts, heun=method == "heun")
    assert_moments(x, mean, var)


@pytest.mark.slow  # 1000 steps: about 1.5 s on an idle 2-core CPU
def test_gaussian_data_full_ddpm_chain_reaches_the_data_marginal():
    """All 1000 steps of the cosine schedule: the output should follow q(x_0) =
    N(sqrt(ab_0) MU, ab_0 STD^2 + 1 - ab_0) up to the chain's own discretisation gap (the
    recursion puts the variance 1.2 % low), which is added to the variance tolerance."""
    ts = list(range(999, -1, -1))
    x = sample(gaussian_denoiser(MU, STD, IF), (N_IMAGES, 1, 8, 8), IF, ts,
               generator=torch.Generator().manual_seed(1), progress=False)
    ab0 = float(IF.alphas_cumprod[0])
    true_mean, true_var = math.sqrt(ab0) * MU, ab0 * STD**2 + 1 - ab0
    _, chain_var = ddpm_chain_moments(IF, ts, ddim_chain=False)
    assert abs(chain_var - true_var) < 0.015 * true_var
    assert_moments(x, true_mean, true_var, slack_var=abs(chain_var - true_var))


def test_gaussian_data_heun_reaches_the_data_distribution_where_euler_is_still_off():
    """40 steps: by the closed form Heun's output variance is within 1 % of STD^2 while
    Euler's is more than 5 % low; the Heun samples match N(MU, STD^2) within 5 standard
    errors plus that 1 % gap."""
    ts = FlowSchedule.timesteps(40)
    mean, var = flow_chain_moments(ts, heun=True)
    _, euler_var = flow_chain_moments(ts, heun=False)
    assert abs(mean - MU) < 1e-6 and abs(var - STD**2) < 0.01 * STD**2
    assert abs(euler_var - STD**2) > 0.05 * STD**2
    noise = torch.randn(N_IMAGES, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    x = flow_heun(gaussian_denoiser(MU, STD, FLOW), noise, FLOW, ts, progress=False)
    assert_moments(x, MU, STD**2, slack_var=abs(var - STD**2))


# ----------------------------------------------------------------------------------------
# Reproducibility, callbacks, 2C outputs, progress bars
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,kwargs", [("ddpm", {}), ("ddim", {"eta": 1.0})], ids=["ddpm", "ddim-eta1"])
def test_same_seed_gives_bit_identical_samples(method, kwargs):
    den = finite_data_denoiser(make_data(4), IF)
    ts = strided_timesteps(990, 90)

    def run(seed):
        return sample(den, (3, 1, 8, 8), IF, ts, generator=torch.Generator().manual_seed(seed),
                      method=method, progress=False, **kwargs)

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_callback_sees_every_step_and_intermediates_hold_every_state():
    data = make_data(4)
    ts = strided_timesteps(990, 90)  # 12 entries
    seen = []
    x_start = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x, xs = iterative_denoise(finite_data_denoiser(data, IF), x_start, IF, ts, i_start=3,
                              generator=torch.Generator().manual_seed(0), progress=False,
                              callback=lambda i, t, x_t, x0_hat: seen.append((i, t, x_t.shape, x0_hat.shape)),
                              return_intermediates=True)
    assert [s[0] for s in seen] == list(range(3, len(ts) - 1))
    assert [s[1] for s in seen] == ts[3:-1]
    assert all(s[2] == s[3] == (2, 1, 8, 8) for s in seen)
    assert len(xs) == len(ts) - 3 and xs[0] is x_start and torch.equal(xs[-1], x)


def test_if_style_2c_output_with_v_minus_one_equals_fixed_variance_run():
    """A 2C output whose variance half is v = -1 (learned range at its low end) means the
    fixed posterior variance, so both runs must agree draw for draw."""
    data = make_data(4)
    den = finite_data_denoiser(data, IF)
    den2c = lambda x, t: torch.cat([den(x, t), -torch.ones_like(x)], 1)  # noqa: E731
    ts = strided_timesteps(990, 90)
    kw = dict(generator=None, progress=False)
    a = sample(den, (2, 1, 8, 8), IF, ts, **{**kw, "generator": torch.Generator().manual_seed(4)})
    b = sample(den2c, (2, 1, 8, 8), IF, ts, **{**kw, "generator": torch.Generator().manual_seed(4)})
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_false_prints_nothing_and_true_shows_a_bar_on_a_terminal_only(monkeypatch):
    """progress=True draws a bar where a person watches (a terminal), none into a log or a pipe."""
    data = make_data(2)
    den = finite_data_denoiser(data, FLOW)
    x = torch.zeros(1, 1, 8, 8)
    for stream, progress, drawn in [(_Terminal(), False, False), (_Terminal(), True, True), (io.StringIO(), True, False)]:
        monkeypatch.setattr(sys, "stderr", stream)
        flow_euler(den, x, FLOW, FlowSchedule.timesteps(3), progress=progress)
        assert ("denoising" in stream.getvalue()) == drawn, (progress, type(stream).__name__)


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("i_start", [-1, 11, 12, True, 1.0])
def test_i_start_out_of_range_is_a_value_error(i_start):
    den = finite_data_denoiser(make_data(2), IF)
    with pytest.raises(ValueError, match="i_start"):
        iterative_denoise(den, torch.zeros(1, 1, 8, 8), IF, strided_timesteps(990, 90), i_start=i_start, progress=False)


@pytest.mark.parametrize(
    "schedule,ts",
    [(IF, [0, 30, 60]), (IF, [1000, 500, 0]), (IF, [990]), (FLOW, [1.0, 0.5, 0.0]), (FLOW, [0.0, 0.5, 1.5])],
)
def test_bad_timesteps_are_value_errors(schedule, ts):
    den = finite_data_denoiser(make_data(2), schedule)
    with pytest.raises(ValueError, match="timesteps"):
        iterative_denoise(den, torch.zeros(1, 1, 8, 8), schedule, ts, progress=False)


def test_wrong_sampler_for_the_schedule_and_bad_inputs_are_value_errors():
    den = finite_data_denoiser(make_data(2), IF)
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="DDPMSchedule"):
        ddim(den, x, FLOW, FlowSchedule.timesteps(3), progress=False)
    with pytest.raises(ValueError, match="FlowSchedule"):
        flow_heun(den, x, IF, [990, 0], progress=False)
    with pytest.raises(ValueError, match="FlowSchedule"):
        flow_euler(den, x, IF, [990, 0], progress=False)
    with pytest.raises(ValueError, match="batch"):
        iterative_denoise(den, torch.zeros(8), IF, [990, 0], progress=False)
