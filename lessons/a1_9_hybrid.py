"""A1.9 Hybrid images (factorized diffusion, Geng et al., 2024).

A hybrid image reads as one thing from afar and another up close (Oliva et al., 2006).
Build it during denoising: low frequencies of the noise estimate for prompt A, high
frequencies for prompt B,

    eps = low_pass(eps_A) + high_pass(eps_B),     Gaussian kernel 33, sigma 2 for IF

The second figure shows each result small (the low-pass reading) and large.
"""

import torch.nn.functional as F

from minidiff.course import IF_PROMPTS, LessonContext, part_a
from minidiff.guidance import hybrid
from minidiff.samplers import iterative_denoise

OPTIONS = ("guidance",)  # the optional flags this lesson reads (see minidiff.lessons_index)


def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    pairs = [((IF_PROMPTS["skull"], 0), (IF_PROMPTS["waterfalls"], 1))]
    if not ctx.quick:
        pairs += [((IF_PROMPTS["old_man"], 8), (IF_PROMPTS["campfire"], 4))]
    kernel, sigma = a.hybrid_kernel
    rows, titles = [], []
    for k, (low, high) in enumerate(pairs):
        den = hybrid(a.model, a.cond(*low), a.cond(*high), a.uncond(), a.guidance_scale,
                     kernel_size=kernel, sigma=sigma)
        x = iterative_denoise(den, a.noise(1, ctx.generator(10 * k)), a.schedule, a.timesteps,
                              generator=ctx.generator(10 * k + 1), progress=ctx.progress)
        h = x.shape[-1]
        small = F.interpolate(F.interpolate(x, scale_factor=0.25, mode="area"), size=(h, h), mode="nearest")
        rows.append([x, small])
        titles.append([f"up close: {a.label(*high)}", f"from afar: {a.label(*low)}"])
    ctx.save_rows("hybrids.png", rows, titles, value_range=a.value_range, cell=2.4,
                  suptitle=f"low-pass kernel {kernel}, sigma {sigma}")


if __name__ == "__main__":
    from minidiff.lessons_index import main

    main(run, __doc__)
