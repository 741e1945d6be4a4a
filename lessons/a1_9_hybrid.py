# %% [markdown]
# # A1.9 Hybrid images (factorized diffusion, Geng et al., 2024)
#
# A hybrid image reads as one thing from afar and another up close (Oliva et al., 2006). Build it
# during denoising: the low frequencies of the noise estimate for prompt A, the high frequencies of
# the one for prompt B,
#
# $$\hat\epsilon = \mathrm{lowpass}(\hat\epsilon_A) + \mathrm{highpass}(\hat\epsilon_B),
# \qquad \mathrm{highpass}(x) = x - \mathrm{lowpass}(x),$$
#
# with a Gaussian low-pass of kernel 33 and $\sigma$ = 2 for IF (9 and 1.5 for MNIST's 28 x 28 digits).
# With IF stage II on this machine, each hybrid is also upscaled to 256 x 256 with the same rule at
# stage II (the Gaussian widened 4x), so the two readings hold at full size.

# %%
"""A1.9 Hybrid images (factorized diffusion, Geng et al., 2024).

A hybrid image reads as one thing from afar and another up close (Oliva et al., 2006).
Build it during denoising: low frequencies of the noise estimate for prompt A, high
frequencies for prompt B,

    eps = low_pass(eps_A) + high_pass(eps_B),     Gaussian kernel 33, sigma 2 for IF

The figure shows each result large (the close reading) and small (the far one). With IF
stage II on this machine, each hybrid is also upscaled to 256 x 256 with the same rule at
stage II (the Gaussian widened 4x), so the two readings hold at full size.
"""

import torch
import torch.nn.functional as F

from minidiff.course import IF_PROMPTS, LessonContext, part_a
from minidiff.guidance import hybrid
from minidiff.samplers import iterative_denoise

OPTIONS = ("guidance", "use")  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("hybrid_eps",)  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` samples a hybrid of a skull (far) and waterfalls (close), on MNIST a 0 and a 1; outside quick
# mode also an old man and a campfire (an 8 and a 4). `hybrids.png` shows each result large (the close
# reading) and averaged down 4x (the far one). With `USE`, your
# `hybrid_eps(eps_a, eps_b, kernel_size, sigma)` of exercise A1.9 combines the estimates.


# %%
def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    pairs = [((IF_PROMPTS["skull"], 0), (IF_PROMPTS["waterfalls"], 1))]
    if not ctx.quick:
        pairs += [((IF_PROMPTS["old_man"], 8), (IF_PROMPTS["campfire"], 4))]
    kernel, sigma = a.hybrid_kernel
    rows, titles, big_rows = [], [], []
    for k, (low, high) in enumerate(pairs):
        den = hybrid(a.model, a.cond(*low), a.cond(*high), a.uncond(), a.guidance_scale,
                     kernel_size=kernel, sigma=sigma)
        if "hybrid_eps" in ctx.use:  # --use FILE: the learner's hybrid_eps(eps_a, eps_b, kernel_size, sigma) (A1.9)
            from minidiff.exercises.lesson_use import hybrid_denoiser

            den = hybrid_denoiser(a.model, a.cond(*low), a.cond(*high), a.uncond(), a.guidance_scale, kernel, sigma,
                                  ctx.use["hybrid_eps"])
        x = iterative_denoise(den, a.noise(1, ctx.generator(10 * k)), a.schedule, a.timesteps,
                              generator=ctx.generator(10 * k + 1), progress=ctx.progress)
        rows.append([x, from_afar(x, 4)])
        titles.append([f"up close: {a.label(*high)}", f"from afar: {a.label(*low)}"])
        if a.upscale is not None:
            big = a.upscale(x, torch.cat([a.cond(*low), a.cond(*high)]), a.uncond(), hybrid=(kernel, sigma),
                            generator=ctx.generator(10 * k + 2))
            big_rows.append([big, from_afar(big, 16)])  # the same far size as the 64 px row
    ctx.save_rows("hybrids.png", rows, titles, value_range=a.value_range, cell=2.4,
                  suptitle=f"low-pass kernel {kernel}, sigma {sigma}")
    if big_rows:
        ctx.save_rows("hybrids_256.png", big_rows, titles, value_range=a.value_range, cell=2.8,
                      suptitle="upscaled to 256 x 256 by stage II, with the hybrid rule at 4x the kernel and sigma")


def from_afar(x: torch.Tensor, factor: int) -> torch.Tensor:
    """x (B, C, H, W) as seen from afar: averaged down by factor, shown at its size again (blocky)."""
    h, w = x.shape[-2:]
    return F.interpolate(F.interpolate(x, scale_factor=1 / factor, mode="area"), size=(h, w), mode="nearest")


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
