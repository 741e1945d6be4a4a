"""A1.7 SDEdit: noise an image part of the way, then denoise. The starter and its checks."""

from __future__ import annotations

import math

import torch

from minidiff.analytic import finite_data_denoiser
from minidiff.exercises import reference as R
from minidiff.exercises.a1_loop import expect_visits
from minidiff.exercises.fixtures import IF, SpyDen, ab_of, pm_one_data, randn, seeds, st, timesteps_for
from minidiff.exercises.harness import CheckFailed, call, check, expect, expect_close
from minidiff.exercises.starters import NOT_YET, exercise

__all__ = ["A1_7"]


def _noise_level_hint(x, image, first_t: int, ts: list, i_start: int):
    """(hint, key) for where a learner's first noisy image x stands: the clean image, noised to
    timesteps[i_start] or to timesteps[0] (whichever its residual |x - sqrt(ab) image|^2 fits
    best), or at some other noise level."""
    if float(((x - image) ** 2).mean()) < 1e-10:
        return "Noise the image first: x = forward(image, timesteps[i_start], noise), then denoise.", "not-noised"

    def misfit(t: int) -> float:  # |log| of the mean squared residual over the variance forward(image, t) has
        ab = ab_of(IF, t)
        return abs(math.log(float(((x - math.sqrt(ab) * image) ** 2).mean()) / (1 - ab)))

    if first_t == ts[0] and i_start > 0:
        if misfit(ts[i_start]) < misfit(ts[0]):
            return ("You noised the image to timesteps[i_start] but started the loop at index 0: start it at "
                    "i_start too.", "loop-from-zero")
        return ("Noise the image to timesteps[i_start], not timesteps[0], and denoise from there: i_start sets how "
                "much of the image survives.", "noised-to-start")
    return ("x = sqrt(ab_t) image + sqrt(1 - ab_t) noise at t = timesteps[i_start]: the forward process of A1.1.",
            "noise-level")


def _expect_noised_to_start(spy: SpyDen, image, ts, i_start, inputs):
    """den's first call sees the image at timesteps[i_start], noised as forward(image, t, noise) would:
    a mean squared residual |x - sqrt(ab_t) image|^2 within 25% of 1 - ab_t."""
    expect(bool(spy.calls), "den was never called", inputs=inputs, key="den-not-called")
    x, first_t = spy.calls[0][0], spy.times[0]
    ab_here = ab_of(IF, ts[i_start])
    m = float(((x - math.sqrt(ab_here) * image) ** 2).mean())
    if not (first_t == ts[i_start] and abs(m / (1 - ab_here) - 1) < 0.25):
        hint, key = _noise_level_hint(x, image, first_t, ts, i_start)
        raise CheckFailed(f"den first saw x at t = {first_t} with a mean squared residual |x - sqrt(ab_t) image|^2 "
                          f"of {m:.3f}, expected t = {ts[i_start]} and {1 - ab_here:.3f} (= 1 - ab_t)",
                          inputs=inputs, hint=hint, key=key)


def _sdedit_inputs(seed, batch=16):
    data = pm_one_data(4, seed % 5)
    image = (data[torch.arange(batch) % 4] + 0.3 * randn((batch, 1, 8, 8), seed)).clamp(-1, 1)
    return data, image


@check(cases=lambda: st.tuples(seeds(), st.floats(0, 0.999)), examples=5)
def check_sdedit_noises_then_denoises(sdedit, case):
    """noises the image to timesteps[i_start] and denoises from there to the end

    Hint: x = forward(image, timesteps[i_start], noise); then the loop from index i_start.
    """
    seed, u = case
    data, image = _sdedit_inputs(seed)
    ts = timesteps_for(IF, 90)
    choices = [i for i, t in enumerate(ts[:-1]) if 0.2 < ab_of(IF, t) < 0.9]
    i_start = choices[int(u * len(choices))]
    spy = SpyDen(finite_data_denoiser(data, IF))
    inputs = f"timesteps = {ts}, i_start = {i_start} (t = {ts[i_start]}), 16 images of 8x8"
    call(sdedit, spy, image, ts, IF.alphas_cumprod, i_start, torch.Generator().manual_seed(seed), like=image,
         like_name="image", inputs=inputs)
    _expect_noised_to_start(spy, image, ts, i_start, inputs)
    expect_visits(spy, ts, i_start, inputs)


@check(cases=seeds, examples=3)
def check_sdedit_projects(sdedit, seed):
    """with little noise, returns the data image nearest the input (exact denoiser)

    Hint: SDEdit from a low noise level projects the image onto the data: noise to timesteps[i_start], then denoise.
    """
    data, image = _sdedit_inputs(seed, batch=8)
    ts = timesteps_for(IF, 90)
    i_start = next(i for i, t in enumerate(ts) if ab_of(IF, t) > 0.75)
    inputs = f"timesteps = {ts}, i_start = {i_start}, 8 images near the data"
    out = call(sdedit, finite_data_denoiser(data, IF), image, ts, IF.alphas_cumprod, i_start,
               torch.Generator().manual_seed(seed), like=image, like_name="image", inputs=inputs)
    nearest = data[torch.cdist(image.flatten(1), data.flatten(1)).argmin(1)]
    expect_close(out, nearest, "the result against the data image nearest the input", atol=1e-3, inputs=inputs)


@check(cases=lambda: st.tuples(seeds(), st.floats(0, 0.999), st.booleans()), examples=5)
def check_sdedit_matches(sdedit, case):
    """equals minidiff's sdedit draw for draw (the noise first, then one z per step)

    Hint: noise = torch.randn(image.shape, generator=generator, dtype=image.dtype) first, then the loop's draws.
    """
    seed, u, clean_end = case
    data, image = _sdedit_inputs(seed, batch=3)
    ts = timesteps_for(IF, 90, clean_end)
    i_start = int(u * (len(ts) - 1))
    den = finite_data_denoiser(data, IF)
    inputs = f"timesteps = {ts}, i_start = {i_start}, generator seed {seed}"
    out = call(sdedit, den, image, ts, IF.alphas_cumprod, i_start, torch.Generator().manual_seed(seed), like=image,
               like_name="image", inputs=inputs)
    want = R.sdedit(den, image, ts, IF.alphas_cumprod, i_start, torch.Generator().manual_seed(seed))
    expect_close(out, want, "the edited image", atol=1e-4, inputs=inputs)


A1_7 = exercise(
    "A1.7", "SDEdit: noise an image part of the way, then denoise", lesson="A1.7", file_name="a1_7_sdedit.py",
    checks=(check_sdedit_noises_then_denoises, check_sdedit_projects, check_sdedit_matches),
    heading="SDEdit (image-to-image)", intro="""
        Noise a real image part of the way and let the model denoise it (Meng et al., 2022):
        the less noise, the closer the result stays to the image. With the course's timesteps
        [990, 960, ..., 0], i_start = 1, 3, 5, 7, 10, 20 start at t = 960, 900, 840, 780, 690, 390.

            x_t = sqrt(ab_t) image + sqrt(1 - ab_t) eps,   t = timesteps[i_start]
            then the DDPM loop from index i_start
        """, imports="""
        import torch

        from minidiff.exercises.reference import forward, iterative_denoise  # or your A1.1 and A1.4
        """, body=f'''
        def sdedit(den, image, timesteps, alphas_cumprod, i_start, generator):
            """The image, noised to timesteps[i_start] and denoised back.

            den             the denoiser, den(x_t, t_batch) -> eps_hat
            image           (B, C, H, W) images in [-1, 1]
            timesteps       decreasing ints, e.g. [990, 960, ..., 30, 0]
            alphas_cumprod  (T,) tensor: alphas_cumprod[t] = ab_t
            i_start         the index in timesteps to noise to (larger: less noise)
            generator       a torch.Generator: draw the noise first,
                            torch.randn(image.shape, generator=generator, dtype=image.dtype),
                            then let the loop draw its own
            returns         the edited images, image's shape and dtype
            """
            # TODO: noise with forward(...), then iterative_denoise(..., i_start, generator)
            {NOT_YET}
        ''')
