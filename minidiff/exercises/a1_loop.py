"""A1.4 The strided DDPM step and the iterative denoising loop: the starter, its checks, known mistakes.

alpha_t over a stride (``stride_alpha``), the wrong steps (``step_with``) and the check of
the timesteps a loop visits (``expect_visits``) serve the later loops and jumps too: A1.7's
SDEdit, A1.7.2b's jump back and B2.3.1's DDPM sampler.
"""

from __future__ import annotations

import math

import torch

from minidiff.analytic import finite_data_denoiser
from minidiff.exercises import reference as R
from minidiff.exercises.fixtures import (
    IF, SCHEDULES, SpyDen, ab_of, expect_noise_term, image_shapes, pm_one_data, randn, same_with_generator, seeds, st,
    timesteps_for, x0_atol,
)
from minidiff.exercises.harness import Mistake, call, check, describe, expect, expect_close
from minidiff.exercises.starters import NOT_YET, exercise

__all__ = ["A1_4", "stride_alpha", "step_with", "expect_visits"]


def stride_alpha(alphas_cumprod, t, t_prev, alpha_mode="stride", wrap=False):
    """(ab_t, ab_t', alpha_t) in float64, alpha_t = ab_t / ab_t' the signal kept over the stride
    from t' = t_prev to t, with ab_t' = 1 at t_prev = -1 (the clean image). The knobs make the
    mistakes: alpha_mode "cumprod" takes ab_t itself; wrap reads ab_t' = alphas_cumprod[-1]."""
    ab = alphas_cumprod.double()
    ab_prev = ab[t_prev] if (t_prev >= 0 or wrap) else torch.tensor(1.0, dtype=torch.float64)
    return ab[t], ab_prev, (ab[t] / ab_prev if alpha_mode == "stride" else ab[t])


def step_with(alpha_mode="stride", sigma_mode="posterior", wrap=False):
    """A DDPM step with the knobs learners get wrong (right with the defaults):
    alpha_mode "stride" (ab_t / ab_t') or "cumprod" (ab_t itself); sigma_mode "posterior"
    (sigma^2 = (1 - ab_t') / (1 - ab_t) beta_t) or "beta" (sigma^2 = beta_t); wrap reads
    ab_t' = alphas_cumprod[-1] at t_prev = -1 instead of 1."""

    def ddpm_step(x_t, eps, t, t_prev, alphas_cumprod, z):
        ab_t, ab_prev, alpha = stride_alpha(alphas_cumprod, t, t_prev, alpha_mode, wrap)
        beta = 1 - alpha
        x0_hat = (x_t - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()
        mean = ab_prev.sqrt() * beta / (1 - ab_t) * x0_hat + alpha.sqrt() * (1 - ab_prev) / (1 - ab_t) * x_t
        var = (1 - ab_prev) / (1 - ab_t) * beta if sigma_mode == "posterior" else beta
        return (mean + var.sqrt() * z).to(x_t.dtype)  # NaN where a learner's would be (wrap: var < 0)

    return ddpm_step


STEP_MISTAKES = (
    Mistake("alpha-is-cumprod", "ddpm_step",
            "alpha_t is the signal kept over this stride, alpha_t = ab_t / ab_t' (and beta_t = 1 - alpha_t), not "
            "ab_t itself: ab_t is the signal kept all the way from the clean image.",
            step_with(alpha_mode="cumprod")),
    Mistake("minus-one-wraps", "ddpm_step",
            "t_prev = -1 stands for the clean image, where ab = 1: alphas_cumprod[-1] is Python's last entry "
            "(ab_(T-1), almost 0), not the one before t = 0. Use ab_t' = 1 when t_prev < 0.",
            step_with(wrap=True)),
    Mistake("beta-variance", "ddpm_step",
            "Use the posterior variance sigma^2 = (1 - ab_t') / (1 - ab_t) beta_t. sigma^2 = beta_t adds too much "
            "noise, and at the last step (t_prev = -1) it adds noise to the finished image, where sigma must be 0.",
            step_with(sigma_mode="beta")),
)


def _step_case():
    """(schedule name, t, t_prev, shape, seed) with -1 <= t_prev < t; shrinks towards t = 0, t_prev = -1."""

    def build(c):
        name, u, v, shape, seed = c
        top = SCHEDULES[name].num_timesteps - 1
        t = int(u * top)
        return name, t, int(v * (t + 1)) - 1, shape, seed

    return st.tuples(st.sampled_from(list(SCHEDULES)), st.floats(0, 1), st.floats(0, 0.999), image_shapes(),
                     seeds()).map(build)


def _step_inputs(case):
    """(schedule, its name, t, t_prev, x_t, eps, z) of a drawn step, the three tensors N(0, I)."""
    name, t, t_prev, shape, seed = case
    return SCHEDULES[name], name, t, t_prev, randn(shape, seed), randn(shape, seed + 1), randn(shape, seed + 2)


@check(cases=_step_case, examples=30)
def check_step_posterior_mean(ddpm_step, case):
    """with the true noise and z = 0, the step lands on the posterior mean of q(x_t' | x_t, x_0)

    Hint: x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t); x_t' = sqrt(ab_t') beta_t / (1 - ab_t) x0_hat +
    sqrt(alpha_t) (1 - ab_t') / (1 - ab_t) x_t + sigma z, with alpha_t = ab_t / ab_t' and beta_t = 1 - alpha_t.
    """
    name, t, t_prev, shape, seed = case
    s = SCHEDULES[name]
    x0, eps = randn(shape, seed), randn(shape, seed + 1)
    x_t = s.add_noise(x0, eps, t)
    ab_t, ab_p = ab_of(s, t), ab_of(s, t_prev)
    alpha = ab_t / ab_p
    # q(x_t' | x_t, x_0) has mean sqrt(ab_t') x0 + sqrt(alpha_t) (1 - ab_t') / sqrt(1 - ab_t) eps
    want = math.sqrt(ab_p) * x0 + math.sqrt(alpha) * (1 - ab_p) / math.sqrt(1 - ab_t) * eps
    inputs = f"schedule {name}, t = {t}, t_prev = {t_prev}, z = 0, " + describe(x_t=x_t)
    out = call(ddpm_step, x_t, eps, t, t_prev, s.alphas_cumprod, torch.zeros_like(x_t), like=x_t,
               like_name="x_t", inputs=inputs)
    expect_close(out, want, "x_t'", atol=x0_atol(s, t), inputs=inputs)


@check(cases=_step_case, examples=15)
def check_step_last(ddpm_step, case):
    """the last step (t_prev = -1) returns x0_hat and adds no noise

    Hint: At t_prev = -1 (the clean image) ab_t' = 1, so x_t' = x0_hat and sigma = 0.
    """
    s, name, t, _, x_t, eps, z = _step_inputs(case)
    ab = ab_of(s, t)
    want = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    inputs = f"schedule {name}, t = {t}, t_prev = -1, " + describe(x_t=x_t, z=z)
    out = call(ddpm_step, x_t, eps, t, -1, s.alphas_cumprod, z, like=x_t, like_name="x_t", inputs=inputs)
    expect_close(out, want, "the last step's result against x0_hat", atol=x0_atol(s, t), inputs=inputs)


@check(cases=_step_case, examples=20)
def check_step_noise(ddpm_step, case):
    """the noise added is sigma z with sigma^2 = (1 - ab_t') / (1 - ab_t) beta_t

    Hint: The step adds sigma * z, sigma = sqrt((1 - ab_t') / (1 - ab_t) * beta_t): the posterior's standard deviation.
    """
    s, name, t, t_prev, x_t, eps, z = _step_inputs(case)
    ab_t, ab_p = ab_of(s, t), ab_of(s, t_prev)
    sigma = math.sqrt(max((1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p), 0.0))
    inputs = f"schedule {name}, t = {t}, t_prev = {t_prev}, " + describe(x_t=x_t, z=z)
    expect_noise_term(ddpm_step, (x_t, eps, t, t_prev, s.alphas_cumprod), z, sigma, "x_t", inputs,
                      f"step(z) - step(0), which must be sigma z with sigma = {sigma:.4g}")


@check(cases=_step_case, examples=30)
def check_step_matches(ddpm_step, case):
    """equals minidiff's DDPMSchedule.step for every stride, both schedules, any z

    Hint: Follow the docstring's equation line by line; compute ab_t' = 1 when t_prev = -1.
    """
    s, name, t, t_prev, x_t, eps, z = _step_inputs(case)
    inputs = f"schedule {name}, t = {t}, t_prev = {t_prev}, " + describe(x_t=x_t, eps=eps, z=z)
    out = call(ddpm_step, x_t, eps, t, t_prev, s.alphas_cumprod, z, like=x_t, like_name="x_t", inputs=inputs)
    expect_close(out, s.step(x_t, eps, t, t_prev, noise=z), "x_t'", atol=x0_atol(s, t), inputs=inputs)


def _loop_case():
    """(schedule name, stride, clean_end, i_start fraction, seed) for the loops."""
    strides = {"IF (cosine, T = 1000)": [90, 165], "linear (T = 300)": [30, 45]}
    return st.sampled_from(list(SCHEDULES)).flatmap(
        lambda name: st.tuples(st.just(name), st.sampled_from(strides[name]), st.booleans(), st.floats(0, 0.999),
                               seeds()))


def _loop_inputs(case, n_data=4, batch=2):
    """(schedule, timesteps, i_start, data, x at timesteps[i_start]) for a loop case."""
    name, stride, clean_end, u, seed = case
    s = SCHEDULES[name]
    ts = timesteps_for(s, stride, clean_end)
    i_start = int(u * (len(ts) - 1))
    data = pm_one_data(n_data, seed % 5)
    x0 = data[torch.arange(batch) % n_data]
    return s, ts, i_start, data, s.add_noise(x0, randn(x0.shape, seed), ts[i_start])


def _visited_hint(visited, ts, i_start):
    """(hint, key) naming the pattern of a wrong list of visited timesteps, or (None, None)."""
    if visited == ts[i_start:-2]:
        return ("Take the last step too: loop over i = i_start, ..., len(timesteps) - 2, each step going from "
                "timesteps[i] to timesteps[i + 1]; the loop ends at timesteps[-1].", "stops-early")
    if i_start > 0 and visited == ts[:-1]:
        return ("Start at timesteps[i_start]: x is already at that time, and the steps before it would "
                "denoise it as if it were far noisier.", "ignores-i-start")
    if visited == ts[i_start + 1:-1]:
        return ("The first step starts at timesteps[i_start], where x is now: go from timesteps[i] to "
                "timesteps[i + 1] for i = i_start, ..., len(timesteps) - 2.", "skips-first")
    if visited and visited[0] == ts[i_start] and len(visited) > 1 and visited[1] == ts[i_start] - 1:
        return ("Step from timesteps[i] to timesteps[i + 1], the next entry of the list: the strides are what "
                "make the loop short.", "unit-strides")
    return None, None


def expect_visits(spy: SpyDen, timesteps, i_start, inputs, who="den"):
    """The loop called the model (spy) once at each of timesteps[i_start], ..., timesteps[-2], in order."""
    want = timesteps[i_start:-1]
    hint, key = _visited_hint(spy.times, timesteps, i_start)
    expect(spy.times == want, f"{who} was called at the wrong times", inputs=inputs, expected=f"t = {want}",
           got=f"t = {spy.times}", hint=hint, key=key)


@check(cases=_loop_case, examples=10)
def check_loop_visits(iterative_denoise, case):
    """visits timesteps[i_start], ..., timesteps[-2] in order, calling den once at each

    Hint: for i in range(i_start, len(timesteps) - 1): t, t_prev = timesteps[i], timesteps[i + 1]; eps = den(x, t); x =
    ddpm_step(x, eps, t, t_prev, ...)
    """
    s, ts, i_start, data, x = _loop_inputs(case)
    spy = SpyDen(finite_data_denoiser(data, s))
    inputs = f"timesteps = {ts}, i_start = {i_start}, " + describe(x=x)
    call(iterative_denoise, spy, x, ts, s.alphas_cumprod, i_start, torch.Generator().manual_seed(0), like=x,
         like_name="x", inputs=inputs)
    expect_visits(spy, ts, i_start, inputs)


@check(cases=lambda: st.tuples(st.sampled_from(list(SCHEDULES)), seeds(), st.booleans()), examples=6)
def check_loop_ends_on_data(iterative_denoise, case):
    """ends on a data image: the nearest one when started close to it (exact denoiser, timesteps ending at -1)

    Hint: Each step must be the DDPM step of A1.4 at (timesteps[i], timesteps[i + 1]); the last, to -1, is x0_hat.
    """
    name, seed, near = case
    s = SCHEDULES[name]
    stride = 90 if s is IF else 30
    ts = timesteps_for(s, stride, clean_end=True)
    data = pm_one_data(4, seed % 5)
    i_start = next(i for i, t in enumerate(ts) if ab_of(s, t) > 0.75) if near else 0
    x0 = data[torch.arange(4)]
    x = s.add_noise(x0, randn(x0.shape, seed), ts[i_start])
    inputs = f"timesteps = {ts}, i_start = {i_start}, " + describe(x=x)
    out = call(iterative_denoise, finite_data_denoiser(data, s), x, ts, s.alphas_cumprod, i_start,
               torch.Generator().manual_seed(seed), like=x, like_name="x", inputs=inputs)
    nearest = data[torch.cdist(out.flatten(1), data.flatten(1)).argmin(1)]
    expect_close(out, x0 if near else nearest, "the result against " + ("the data image it started near" if near
                 else "its nearest data image"), atol=1e-3, inputs=inputs)


@check
def check_loop_generator(iterative_denoise):
    """draws its noise from the generator: the same seed gives the same result

    Hint: Draw z with torch.randn(x.shape, generator=generator, dtype=x.dtype) at every step.
    """
    s = IF
    ts = timesteps_for(s, 165, clean_end=False)
    data = pm_one_data(4)
    den = finite_data_denoiser(data, s)
    x = randn((2, 1, 8, 8), 3)
    inputs = f"timesteps = {ts}, i_start = 0, " + describe(x=x)
    same_with_generator(iterative_denoise, (den, x, ts, s.alphas_cumprod, 0, torch.Generator().manual_seed(5)),
                         (den, x, ts, s.alphas_cumprod, 0, torch.Generator().manual_seed(5)), inputs)


@check(cases=_loop_case, examples=10)
def check_loop_matches(iterative_denoise, case):
    """equals minidiff's iterative_denoise draw for draw (same generator, same result)

    Hint: At every step draw z = torch.randn(x.shape, generator=generator, dtype=x.dtype) once, then take the step.
    """
    s, ts, i_start, data, x = _loop_inputs(case)
    den = finite_data_denoiser(data, s)
    seed = case[-1]
    inputs = f"timesteps = {ts}, i_start = {i_start}, " + describe(x=x)
    out = call(iterative_denoise, den, x, ts, s.alphas_cumprod, i_start, torch.Generator().manual_seed(seed),
               like=x, like_name="x", inputs=inputs)
    want = R.iterative_denoise(den, x, ts, s.alphas_cumprod, i_start, torch.Generator().manual_seed(seed))
    expect_close(out, want, "the final x", atol=1e-4, inputs=inputs)


A1_4 = exercise(
    "A1.4", "the strided DDPM step and the iterative denoising loop", lesson="A1.4",
    file_name="a1_4_iterative_denoise.py",
    checks=(check_step_posterior_mean, check_step_last, check_step_noise, check_step_matches, check_loop_visits,
            check_loop_ends_on_data, check_loop_generator, check_loop_matches),
    mistakes=STEP_MISTAKES,
    heading="Iterative denoising: the strided DDPM step", intro="""
        Many small steps beat one big one. From x_t at timestep t, one step of the DDPM sampler
        (Ho et al., 2020, eq. 7, over a stride from t to the next timestep t' < t) is

            x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)
            x_t'   = sqrt(ab_t') beta_t / (1 - ab_t) x0_hat + sqrt(alpha_t) (1 - ab_t') / (1 - ab_t) x_t + sigma z

        with alpha_t = ab_t / ab_t' and beta_t = 1 - alpha_t (over the stride, not one step),
        sigma^2 = (1 - ab_t') / (1 - ab_t) beta_t and z ~ N(0, I). The loop walks the strided
        timesteps [990, 960, ..., 30, 0]; a last entry -1 means "step to the clean image", where
        ab = 1 and sigma = 0.
        """, imports="import torch", body=f'''
        def ddpm_step(x_t, eps, t, t_prev, alphas_cumprod, z):
            """One strided DDPM step from timestep t to t_prev < t.

            x_t             (B, C, H, W) images at timestep t
            eps             (B, C, H, W) the denoiser's noise estimate at (x_t, t)
            t, t_prev       ints, -1 <= t_prev < t <= T - 1; t_prev = -1 is the clean image (ab = 1)
            alphas_cumprod  (T,) tensor: alphas_cumprod[t] = ab_t
            z               (B, C, H, W) the N(0, I) draw for this step's noise sigma z
            returns         x_t', x_t's shape and dtype
            """
            # TODO: ab_t, ab_t' (1 when t_prev < 0), alpha_t, beta_t, x0_hat, then the update
            {NOT_YET}


        def iterative_denoise(den, x, timesteps, alphas_cumprod, i_start, generator):
            """Denoise x from timesteps[i_start] down to timesteps[-1], one ddpm_step per pair.

            for i = i_start, ..., len(timesteps) - 2:
                t, t' = timesteps[i], timesteps[i + 1]
                eps   = den(x, t as a (B,) tensor)
                z     = torch.randn(x.shape, generator=generator, dtype=x.dtype)   (one draw per step)
                x     = ddpm_step(x, eps, t, t', alphas_cumprod, z)

            den             the denoiser, den(x_t, t_batch) -> eps_hat, t_batch a (B,) tensor
            x               (B, C, H, W) images at timesteps[i_start]
            timesteps       decreasing ints, e.g. [990, 960, ..., 30, 0], maybe ending at -1
            alphas_cumprod  (T,) tensor: alphas_cumprod[t] = ab_t
            i_start         the index in timesteps where x is
            generator       a torch.Generator: draw every random number from it
            returns         x at timesteps[-1], x's shape and dtype
            """
            # TODO: the loop of the docstring
            {NOT_YET}
        ''')
