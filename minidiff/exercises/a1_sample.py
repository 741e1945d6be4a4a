"""A1.5 Sampling from pure noise: the starter and its checks."""

from __future__ import annotations

import torch

from minidiff.analytic import finite_data_denoiser
from minidiff.exercises import reference as R
from minidiff.exercises.fixtures import IF, SpyDen, pm_one_data, same_with_generator, seeds, st, timesteps_for
from minidiff.exercises.harness import call, check, expect, expect_close
from minidiff.exercises.starters import NOT_YET, exercise

__all__ = ["A1_5"]


def _start_hint(mean: float, std: float) -> tuple[str, str]:
    """(hint, key) for a starting x whose mean and std are not those of N(0, 1)."""
    if abs(mean - 0.5) < 0.1 and abs(std - 0.29) < 0.05:
        return ("x_T is Gaussian noise, torch.randn: torch.rand draws uniformly from [0, 1) (mean 0.5, std 0.29).",
                "uniform-noise")
    if std < 0.05:
        return "Start from noise, not from zeros: x = torch.randn(shape, generator=generator).", "zeros"
    return "x_T ~ N(0, I): torch.randn(shape, generator=generator), unscaled.", "noise-scale"


@check(cases=seeds, examples=3)
def check_sample_starts_from_noise(sample_from_noise, seed):
    """starts from N(0, I) noise of the given shape at timesteps[0]

    Hint: x = torch.randn(shape, generator=generator), then the loop from index 0.
    """
    data = pm_one_data(4, seed % 5, dtype=torch.float32)
    ts = timesteps_for(IF, 165)
    spy = SpyDen(finite_data_denoiser(data, IF))
    shape = (16, 1, 8, 8)
    inputs = f"shape = {shape}, timesteps = {ts}"
    call(sample_from_noise, spy, shape, ts, IF.alphas_cumprod, torch.Generator().manual_seed(seed), inputs=inputs)
    expect(bool(spy.calls), "den was never called", inputs=inputs, key="den-not-called")
    x, _ = spy.calls[0]
    expect(tuple(x.shape) == shape, f"den first saw x of shape {tuple(x.shape)}, not the shape asked for",
           inputs=inputs, key="wrong-shape", hint="Draw the noise with the shape you were given.")
    expect(spy.times[0] == ts[0], f"the first step is at t = {spy.times[0]}, not at timesteps[0] = {ts[0]}",
           inputs=inputs, key="wrong-start", hint="Pure noise is the state at timesteps[0]: start the loop there "
           "(i_start = 0).")
    mean, std = float(x.mean()), float(x.std())
    hint, key = _start_hint(mean, std)
    expect(abs(mean) < 0.15 and abs(std - 1) < 0.15, f"the starting x has mean {mean:.3f} and std {std:.3f}, "
           "not those of N(0, 1)", inputs=inputs, expected="mean 0, std 1", got=f"mean {mean:.3f}, std {std:.3f}",
           hint=hint, key=key)


@check(cases=seeds, examples=3)
def check_sample_ends_on_data(sample_from_noise, seed):
    """every sample lands on a data image (exact denoiser), and not all on the same one

    Hint: Sampling is the loop of A1.4 run from timesteps[0] on pure noise.
    """
    data = pm_one_data(4, seed % 5, dtype=torch.float32)
    ts = timesteps_for(IF, 90)
    shape = (12, 1, 8, 8)
    inputs = f"shape = {shape}, timesteps = {ts}"
    out = call(sample_from_noise, finite_data_denoiser(data, IF), shape, ts, IF.alphas_cumprod,
               torch.Generator().manual_seed(seed), inputs=inputs)
    expect(isinstance(out, torch.Tensor) and tuple(out.shape) == shape, f"the samples have shape "
           f"{tuple(getattr(out, 'shape', ()))}, not {shape}", inputs=inputs, key="shape")
    idx = torch.cdist(out.flatten(1).double(), data.flatten(1).double()).argmin(1)
    expect_close(out, data[idx], "the samples against their nearest data images", atol=1e-3, inputs=inputs)
    expect(len(set(idx.tolist())) >= 2, "all 12 samples are the same data image", inputs=inputs,
           key="no-variety", hint="Each sample needs its own noise: draw the whole batch with "
           "torch.randn(shape, generator=generator).")


@check
def check_sample_generator(sample_from_noise):
    """draws from the generator only: the same seed gives the same samples

    Hint: Draw the starting noise and every step's z from the generator you are given.
    """
    data = pm_one_data(4, dtype=torch.float32)
    den, ts, shape = finite_data_denoiser(data, IF), timesteps_for(IF, 165), (2, 1, 8, 8)
    args = lambda: (den, shape, ts, IF.alphas_cumprod, torch.Generator().manual_seed(9))  # noqa: E731
    same_with_generator(sample_from_noise, args(), args(), f"shape = {shape}, timesteps = {ts}")


@check(cases=lambda: st.tuples(st.sampled_from([90, 165]), seeds()), examples=4)
def check_sample_matches(sample_from_noise, case):
    """equals minidiff's sampler draw for draw (the noise first, then one z per step)

    Hint: x = torch.randn(shape, generator=generator) first; then at each step z = torch.randn(x.shape,
    generator=generator, dtype=x.dtype).
    """
    stride, seed = case
    data = pm_one_data(4, seed % 5, dtype=torch.float32)
    den, ts, shape = finite_data_denoiser(data, IF), timesteps_for(IF, stride, clean_end=False), (3, 1, 8, 8)
    inputs = f"shape = {shape}, timesteps = {ts}, generator seed {seed}"
    out = call(sample_from_noise, den, shape, ts, IF.alphas_cumprod, torch.Generator().manual_seed(seed),
               inputs=inputs)
    want = R.sample_from_noise(den, shape, ts, IF.alphas_cumprod, torch.Generator().manual_seed(seed))
    expect(isinstance(out, torch.Tensor), f"sample_from_noise returned a {type(out).__name__}", key="type")
    expect_close(out, want, "the samples", atol=1e-4, inputs=inputs)


A1_5 = exercise(
    "A1.5", "sampling from pure noise", lesson="A1.5", file_name="a1_5_sample_from_noise.py",
    checks=(check_sample_starts_from_noise, check_sample_ends_on_data, check_sample_generator, check_sample_matches),
    heading="Sampling from pure noise", intro="""
        At timesteps[0] = 990 an image is almost pure noise, so iterative denoising from pure
        noise, x_T ~ N(0, I), draws a new image: the model's idea of what an image is.
        """, imports="""
        import torch

        from minidiff.exercises.reference import iterative_denoise  # or paste your A1.4 loop here
        """, body=f'''
        def sample_from_noise(den, shape, timesteps, alphas_cumprod, generator):
            """Images drawn from noise: x_T = torch.randn(shape, generator=generator), then the
            DDPM loop from timesteps[0] to the end.

            den             the denoiser, den(x_t, t_batch) -> eps_hat
            shape           (B, C, H, W) of the images to draw
            timesteps       decreasing ints, e.g. [990, 960, ..., 30, 0]
            alphas_cumprod  (T,) tensor: alphas_cumprod[t] = ab_t
            generator       a torch.Generator: the noise and every step's z come from it
            returns         (B, C, H, W) float32 images
            """
            # TODO: draw x_T first, then iterative_denoise(den, x, timesteps, alphas_cumprod, i_start, generator)
            {NOT_YET}
        ''')
