"""Property tests for minidiff.schedule: every identity the forward/reverse math promises."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minidiff.betas import cosine_betas, dynamic_threshold, linear_betas
from minidiff.samplers import ddim_step
from minidiff.schedule import DDPMSchedule, FlowSchedule, strided_timesteps

IF = DDPMSchedule.deepfloyd()
LIN = DDPMSchedule.linear(T=300)
SCHEDULES = {"deepfloyd": IF, "linear300": LIN}

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(lambda rest: tuple(rest))
seeds = st.integers(0, 2**31 - 1)


def _randn(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def predict_eps(s, x_t, x0, t):
    """Invert add_noise given the image: eps_hat = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)."""
    a, b = s.signal_and_noise(t, x_t)
    return (x_t - a * x0) / b


def _pair_of_timesteps(T):
    return st.integers(0, T - 1).flatmap(lambda t: st.tuples(st.just(t), st.integers(-1, t - 1)))


# ----------------------------------------------------------------------------------------
# The tables
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULES)
def test_alphas_cumprod_strictly_decreasing_in_unit_interval(name):
    """0 < ab_{t+1} < ab_t <= 1 for every t."""
    ab = SCHEDULES[name].alphas_cumprod
    assert bool((ab > 0).all()) and bool((ab <= 1).all())
    assert bool((ab[1:] < ab[:-1]).all())


def test_alphas_cumprod_is_cumulative_product_of_alphas():
    """ab_t == prod_{s<=t} (1 - beta_s), computed independently in float64."""
    betas = IF.betas.double()
    expected = torch.tensor([math.prod(1 - b for b in betas[: t + 1].tolist()) for t in range(0, 1000, 97)], dtype=torch.float64)
    torch.testing.assert_close(IF.alphas_cumprod[::97].double(), expected, rtol=1e-5, atol=1e-9)


def test_cosine_betas_follow_the_closed_form_and_cap():
    """ab_t of the cosine schedule equals f(t+1)/f(0), f(u) = cos^2((u/T + s)/(1 + s) pi/2), until the cap."""
    T, s = 1000, 0.008
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900, 990):
        assert IF.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-4)
    assert cosine_betas(1000).max().item() == pytest.approx(0.999)


def test_linear_betas_endpoints():
    b = linear_betas(300, 1e-4, 0.02)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02) and b.shape == (300,)


# ----------------------------------------------------------------------------------------
# Forward process and its inverses
# ----------------------------------------------------------------------------------------


@given(name=st.sampled_from(list(SCHEDULES)), shape=shapes, seed=seeds, data=st.data())
def test_predict_x0_inverts_add_noise_given_true_noise(name, shape, seed, data):
    """predict_x0(add_noise(x0, eps, t), eps, t) == x0 for every t, per-sample t too."""
    s = SCHEDULES[name]
    b = shape[0]
    t = torch.tensor(data.draw(st.lists(st.integers(0, s.num_timesteps - 1), min_size=b, max_size=b)))
    x0, eps = _randn(shape, seed, torch.float32), _randn(shape, seed + 1, torch.float32)
    x_t = s.add_noise(x0, eps, t)
    # near t = T-1 the division by sqrt(ab_t) amplifies float32 rounding by 1/sqrt(ab_t)
    tol = 1e-5 / s.alphas_cumprod[t].sqrt().min().item()
    torch.testing.assert_close(s.predict_x0(x_t, eps, t), x0, rtol=0, atol=max(1e-5, tol * 2))


@given(name=st.sampled_from(list(SCHEDULES)), shape=shapes, seed=seeds, data=st.data())
def test_predict_x0_inverts_add_noise_to_1e5_in_float64(name, shape, seed, data):
    """The same identity to 1e-5 at every t when the arithmetic is float64."""
    s = SCHEDULES[name]
    t = data.draw(st.integers(0, s.num_timesteps - 1))
    x0, eps = _randn(shape, seed), _randn(shape, seed + 1)
    torch.testing.assert_close(s.predict_x0(s.add_noise(x0, eps, t), eps, t), x0, rtol=0, atol=1e-5)


@given(name=st.sampled_from(list(SCHEDULES)), shape=shapes, seed=seeds, data=st.data())
def test_predict_eps_inverts_add_noise_given_true_x0(name, shape, seed, data):
    """predict_eps(add_noise(x0, eps, t), x0, t) == eps."""
    s = SCHEDULES[name]
    t = data.draw(st.integers(0, s.num_timesteps - 1))
    x0, eps = _randn(shape, seed), _randn(shape, seed + 1)
    torch.testing.assert_close(predict_eps(s, s.add_noise(x0, eps, t), x0, t), eps, rtol=0, atol=1e-5)


@given(seed=seeds, t=st.integers(0, 999))
def test_add_noise_matches_closed_form(seed, t):
    """add_noise == sqrt(ab_t) x0 + sqrt(1 - ab_t) eps."""
    x0, eps = _randn((2, 3), seed), _randn((2, 3), seed + 1)
    ab = IF.alphas_cumprod[t].double()
    torch.testing.assert_close(IF.add_noise(x0, eps, t), ab.sqrt() * x0 + (1 - ab).sqrt() * eps)


# ----------------------------------------------------------------------------------------
# The reverse step
# ----------------------------------------------------------------------------------------


def _step_coefficients(s, t, t_prev):
    ab_t = s.alphas_cumprod[t].double()
    ab_prev = s.alphas_cumprod[t_prev].double() if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
    alpha = ab_t / ab_prev
    beta = 1 - alpha
    posterior = (1 - ab_prev) / (1 - ab_t) * beta
    return ab_t, ab_prev, alpha, beta, posterior


@given(name=st.sampled_from(list(SCHEDULES)), seed=seeds, data=st.data())
def test_step_with_true_eps_and_zero_noise_is_posterior_mean(name, seed, data):
    """With the true eps and z = 0 the step lands on the mean of q(x_t' | x_t, x0):

        sqrt(ab_t') x0 + sqrt(alpha_t) (1 - ab_t') / sqrt(1 - ab_t) eps

    (the data coefficient sums to exactly sqrt(ab_t'), so x0 is carried over without loss).
    """
    s = SCHEDULES[name]
    t, t_prev = data.draw(_pair_of_timesteps(s.num_timesteps).filter(lambda p: p[0] > 0))
    x0, eps = _randn((2, 3, 4, 4), seed), _randn((2, 3, 4, 4), seed + 1)
    x_t = s.add_noise(x0, eps, t)
    ab_t, ab_prev, alpha, _, _ = _step_coefficients(s, t, t_prev)
    expected = ab_prev.sqrt() * x0 + alpha.sqrt() * (1 - ab_prev) / (1 - ab_t).sqrt() * eps
    out = s.step(x_t, eps, t, t_prev, noise=torch.zeros_like(x0))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5 / ab_t.sqrt().item())


@given(name=st.sampled_from(list(SCHEDULES)), seed=seeds, data=st.data())
def test_step_with_consistent_noise_lands_on_forward_marginal(name, seed, data):
    """The exact statement: with the true eps and z = k eps, where

        k = (sqrt(1 - ab_t') - sqrt(alpha_t) (1 - ab_t') / sqrt(1 - ab_t)) / sigma_t,

    one step t -> t' gives exactly add_noise(x0, eps, t') = sqrt(ab_t') x0 + sqrt(1 - ab_t') eps.
    (The posterior mean carries sqrt(alpha_t)(1 - ab_t')/sqrt(1 - ab_t) of eps; sigma z adds the rest.)
    """
    s = SCHEDULES[name]
    t, t_prev = data.draw(_pair_of_timesteps(s.num_timesteps).filter(lambda p: p[0] > 0 and p[1] >= 0))
    x0, eps = _randn((2, 3, 4, 4), seed), _randn((2, 3, 4, 4), seed + 1)
    ab_t, ab_prev, alpha, _, posterior = _step_coefficients(s, t, t_prev)
    carried = alpha.sqrt() * (1 - ab_prev) / (1 - ab_t).sqrt()
    k = ((1 - ab_prev).sqrt() - carried) / posterior.sqrt()
    out = s.step(s.add_noise(x0, eps, t), eps, t, t_prev, noise=k * eps)
    torch.testing.assert_close(out, s.add_noise(x0, eps, t_prev), rtol=0, atol=1e-5 / ab_t.sqrt().item())


@given(seed=seeds, t=st.integers(1, 999))
def test_step_to_minus_one_returns_x0_hat(seed, t):
    """t' = -1 means ab_t' = 1: the step is x0_hat, with no noise left to add (sigma = 0)."""
    x_t, eps = _randn((1, 3, 4, 4), seed), _randn((1, 3, 4, 4), seed + 1)
    out = IF.step(x_t, eps, t, -1, noise=_randn((1, 3, 4, 4), seed + 2))
    torch.testing.assert_close(out, IF.predict_x0(x_t, eps, t), rtol=0, atol=1e-6)


def test_step_at_t_zero_adds_no_noise():
    """Noise is added only where t > 0: per-sample, in a batch that mixes t = 0 and t > 0."""
    x_t, eps = _randn((2, 3, 4, 4), 0), _randn((2, 3, 4, 4), 1)
    z = _randn((2, 3, 4, 4), 2)
    t, t_prev = torch.tensor([0, 30]), torch.tensor([-1, 0])
    with_z = IF.step(x_t, eps, t, t_prev, noise=z)
    without = IF.step(x_t, eps, t, t_prev, noise=torch.zeros_like(z))
    assert torch.equal(with_z[0], without[0])
    assert not torch.allclose(with_z[1], without[1])


def _step_variance(s, t, t_prev, v=None):
    """sigma^2 of the step t -> t_prev, measured: with x_t = eps = 0, x(z = 1) - x(z = 0) == sigma.
    v: learned-range values (B, 1, 1, 1) for a 2C output, None for the fixed variance."""
    x_t = torch.zeros(1 if v is None else v.shape[0], 1, 1, 1)
    out = x_t if v is None else torch.cat([x_t, v.float()], 1)
    ones = torch.ones_like(x_t)
    return (s.step(x_t, out, t, t_prev, noise=ones) - s.step(x_t, out, t, t_prev, noise=0 * ones)).flatten() ** 2


@given(name=st.sampled_from(list(SCHEDULES)), data=st.data())
def test_learned_range_variance_between_posterior_and_beta(name, data):
    """For v in [-1, 1]: beta~_t <= sigma^2(v) <= beta_t, = beta~_t at v = -1 and beta_t at v = +1."""
    s = SCHEDULES[name]
    t, t_prev = data.draw(_pair_of_timesteps(s.num_timesteps).filter(lambda p: p[0] > 0))
    v = torch.tensor(data.draw(st.lists(st.floats(-1, 1), min_size=3, max_size=3))).view(3, 1, 1, 1)
    _, _, _, beta, posterior = _step_coefficients(s, t, t_prev)
    var = _step_variance(s, t, t_prev, v).double()
    # float32 arithmetic: beta_t = 1 - ab_t / ab_t' loses about 1e-7 absolute to cancellation
    rel = 1e-5 + 2e-7 / beta.item()
    assert bool((var >= posterior.clamp(min=1e-20) * (1 - rel)).all())
    assert bool((var <= beta * (1 + rel)).all())
    ends = _step_variance(s, t, t_prev, torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1)).double()
    assert ends[0].item() == pytest.approx(max(posterior.item(), 1e-20), rel=rel)
    assert ends[1].item() == pytest.approx(beta.item(), rel=rel)
    assert bool((ends[0] <= var).all()) and bool((var <= ends[1]).all())  # exact in its own arithmetic


def test_fixed_variance_is_posterior_variance():
    """C-channel outputs use beta~_t = (1 - ab_t') / (1 - ab_t) beta_t."""
    _, _, _, _, posterior = _step_coefficients(IF, 990, 960)
    assert _step_variance(IF, 990, 960).item() == pytest.approx(posterior.item(), rel=1e-5)


def test_step_noise_scale_is_sigma():
    """x(z) - x(0) == sigma z: the sampled part of the step is exactly sigma times the draw."""
    x_t, eps = _randn((1, 3, 4, 4), 0, torch.float32), _randn((1, 3, 4, 4), 1, torch.float32)
    v = torch.full((1, 3, 4, 4), 0.3)
    out = torch.cat([eps, v], 1)
    z = _randn((1, 3, 4, 4), 2, torch.float32)
    diff = IF.step(x_t, out, 600, 570, noise=z) - IF.step(x_t, out, 600, 570, noise=torch.zeros_like(z))
    _, _, _, beta, posterior = _step_coefficients(IF, 600, 570)
    sigma = (0.65 * beta.log() + 0.35 * posterior.log()).exp().sqrt().float()  # frac = (v + 1) / 2 = 0.65
    torch.testing.assert_close(diff, sigma * z, rtol=1e-5, atol=1e-6)


def test_step_generator_gives_bit_identical_results():
    x_t, eps = _randn((2, 3, 4, 4), 0, torch.float32), _randn((2, 3, 4, 4), 1, torch.float32)
    a = IF.step(x_t, eps, 500, 470, generator=torch.Generator().manual_seed(7))
    b = IF.step(x_t, eps, 500, 470, generator=torch.Generator().manual_seed(7))
    c = IF.step(x_t, eps, 500, 470, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_step_keeps_half_precision_dtype():
    x_t = _randn((1, 3, 4, 4), 0, torch.float16)
    out = IF.step(x_t, torch.cat([x_t, x_t.clamp(-1, 1)], 1), 500, 470, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def _renoise_pair(name, data):
    """(schedule, t, t_prev) of one step: t_prev < t for DDPM, t < t_prev for the flow."""
    if name == "flow":
        t_prev = data.draw(st.floats(0.01, 1.0))
        return FlowSchedule(), data.draw(st.floats(0.0, t_prev * 0.99)), t_prev
    s = SCHEDULES[name]
    return (s, *data.draw(_pair_of_timesteps(s.num_timesteps).filter(lambda p: p[1] >= 0)))


@given(name=st.sampled_from([*SCHEDULES, "flow"]), data=st.data())
def test_renoise_is_the_forward_transition_back_to_t(name, data):
    """x_{t'} = a' x0 + b' eps taken back to t by renoise is a x0 + (noise of variance b^2),
    with (a, b) = signal_and_noise(t): the signal part scales by a / a', and the carried
    noise b' a / a' and the fresh noise add up to b^2. So a jump back lands on q(x_t | x0)."""
    s, t, t_prev = _renoise_pair(name, data)
    x0 = _randn((1, 1, 2, 2), 0)
    ones, zeros = torch.ones_like(x0), torch.zeros_like(x0)
    a, b = s.signal_and_noise(t, x0)
    signal = s.renoise(s.add_noise(x0, zeros, t_prev), t, t_prev, noise=zeros)
    torch.testing.assert_close(signal, a * x0, rtol=0, atol=1e-9)
    carried = s.renoise(s.add_noise(zeros, ones, t_prev), t, t_prev, noise=zeros)
    fresh = s.renoise(zeros, t, t_prev, noise=ones)
    torch.testing.assert_close(carried**2 + fresh**2, (b**2).expand(1, 1, 2, 2), rtol=0, atol=1e-9)


def test_renoise_refuses_a_jump_the_wrong_way():
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="smaller than t"):
        IF.renoise(x, 500, 600)
    with pytest.raises(ValueError, match="larger than t"):
        FLOW.renoise(x, 0.6, 0.5)


@pytest.mark.parametrize("name", SCHEDULES)
def test_ddim_step_with_eta_one_has_the_posterior_variance_and_eta_zero_none(name):
    """DDIM's sigma = eta sqrt(beta~_t): x(z = 1) - x(z = 0) is sqrt(beta~_t) at eta = 1, 0 at eta = 0."""
    s = SCHEDULES[name]
    x_t, eps = _randn((1, 1, 2, 2), 0), _randn((1, 1, 2, 2), 1)
    ones = torch.ones_like(x_t)
    *_, posterior = _step_coefficients(s, 200, 150)
    for eta, sigma in ((1.0, posterior.sqrt()), (0.0, 0.0)):
        step = lambda z: ddim_step(s, x_t, eps, 200, 150, eta=eta, noise=z)  # noqa: E731
        diff = step(ones) - step(0 * ones)
        torch.testing.assert_close(diff, sigma * ones, rtol=0, atol=1e-9)


@given(seed=seeds, ratio=st.floats(0.5, 1.0), max_value=st.floats(1.0, 3.0))
def test_dynamic_threshold_bounds_output_and_keeps_small_samples(seed, ratio, max_value):
    """Output lies in [-1, 1]; a sample already inside [-1, 1] comes back unchanged (s = 1)."""
    x = _randn((3, 2, 4, 4), seed, torch.float32) * 2
    y = dynamic_threshold(x, ratio, max_value)
    assert bool((y.abs() <= 1 + 1e-6).all())
    small = x.clamp(-1, 1) * 0.999
    torch.testing.assert_close(dynamic_threshold(small, ratio, max_value), small)


# ----------------------------------------------------------------------------------------
# Strided timesteps
# ----------------------------------------------------------------------------------------


def test_strided_timesteps_course_mapping():
    """i_start 1, 3, 5, 7, 10, 20 -> t 960, 900, 840, 780, 690, 390 (the course's SDEdit levels)."""
    ts = strided_timesteps(990, 30)
    assert ts[0] == 990 and ts[-1] == 0 and len(ts) == 34
    assert [ts[i] for i in (1, 3, 5, 7, 10, 20)] == [960, 900, 840, 780, 690, 390]
    assert [ts.index(t) for t in (960, 900, 840, 780, 690, 390)] == [1, 3, 5, 7, 10, 20]


@given(start=st.integers(0, 2000), stride=st.integers(1, 500))
def test_strided_timesteps_strictly_decreasing_and_end_at_zero(start, stride):
    """[start, start - stride, ...] is strictly decreasing, starts at start, ends at 0, gaps <= stride."""
    ts = strided_timesteps(start, stride)
    assert ts[0] == start and ts[-1] == 0
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert all(a - b <= stride for a, b in zip(ts, ts[1:]))


# ----------------------------------------------------------------------------------------
# Flow matching
# ----------------------------------------------------------------------------------------

FLOW = FlowSchedule()


@given(shape=shapes, seed=seeds)
def test_flow_interpolation_hits_its_endpoints(shape, seed):
    """x_t = (1 - t) x0 + t x1 is the noise x0 at t = 0 and the data x1 at t = 1."""
    x0, x1 = _randn(shape, seed), _randn(shape, seed + 1)
    assert torch.equal(FLOW.add_noise(x1, x0, 0.0), x0)
    assert torch.equal(FLOW.add_noise(x1, x0, 1.0), x1)


@given(shape=shapes, seed=seeds, t=st.floats(0.0, 1.0))
def test_flow_predict_data_with_the_true_velocity_is_the_data(shape, seed, t):
    """x1_hat = x_t + (1 - t) u is exact for the true velocity u = x1 - x0, at every t."""
    x0, x1 = _randn(shape, seed), _randn(shape, seed + 1)
    torch.testing.assert_close(FLOW.predict_data(FLOW.add_noise(x1, x0, t), x1 - x0, t), x1)


@given(shape=shapes, seed=seeds, n=st.integers(1, 20))
def test_flow_euler_on_straight_line_field_reaches_x1(shape, seed, n):
    """The true velocity is constant along the path, so n Euler steps from x0 land on x1."""
    x0, x1 = _randn(shape, seed), _randn(shape, seed + 1)
    x = x0
    ts = FLOW.timesteps(n)
    for t, t_prev in zip(ts, ts[1:]):
        x = FLOW.step(x, x1 - x0, t, t_prev)
    torch.testing.assert_close(x, x1, rtol=0, atol=1e-9)


def test_flow_predict_data_is_x1_hat():
    x0, x1 = _randn((2, 3), 0), _randn((2, 3), 1)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    x_t = FLOW.add_noise(x1, x0, t)
    torch.testing.assert_close(FLOW.predict_data(x_t, x1 - x0, t), x1)


# ----------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------


def test_t_out_of_range_is_a_clear_error():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="out of range"):
        IF.add_noise(x, x, 1000)
    with pytest.raises(ValueError, match="out of range"):
        IF.add_noise(x, x, torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="integer"):
        IF.add_noise(x, x, 10.5)
    with pytest.raises(ValueError, match="must lie in"):
        FLOW.add_noise(x, x, 1.5)


def test_t_prev_must_be_smaller_than_t():
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="smaller than t"):
        IF.step(x, x, 500, 500)


def test_negative_or_zero_stride_is_a_clear_error():
    with pytest.raises(ValueError, match="positive"):
        strided_timesteps(990, -30)
    with pytest.raises(ValueError, match="positive"):
        strided_timesteps(990, 0)


def test_wrong_rank_and_shape_are_clear_errors():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="same shape"):
        IF.add_noise(x, torch.zeros(2, 3, 4, 5), 10)
    with pytest.raises(ValueError, match=r"\(B,\) tensor"):
        IF.add_noise(x, x, torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="entries but the batch"):
        IF.add_noise(x, x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="batch dimension"):
        IF.add_noise(torch.tensor(1.0), torch.tensor(1.0), 10)
    with pytest.raises(ValueError, match="channels"):
        IF.step(x, torch.zeros(2, 5, 4, 4), 10, 0)


def test_bad_beta_schedules_are_clear_errors():
    with pytest.raises(ValueError, match="beta_start"):
        linear_betas(10, 0.5, 0.1)
    with pytest.raises(ValueError, match="num_timesteps"):
        cosine_betas(0)
