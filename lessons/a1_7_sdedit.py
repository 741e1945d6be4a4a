"""A1.7 Image-to-image translation: SDEdit (Meng et al., 2022).

Noise a real image to timesteps[i_start] and denoise it with CFG:

    x_t = sqrt(ab_t) x_orig + sqrt(1 - ab_t) eps,   then iterative denoising from i_start

Small i_start (much noise) lets the model invent; large i_start keeps the original.
The course's levels are i_start = 1, 3, 5, 7, 10, 20. The prompt is the generic "a high
quality photo"; on MNIST its stand-in is no class at all, so the model may pick any digit.

With IF stage II on this machine, the results are also shown upscaled to 256 x 256.
"""

import torch

from minidiff.course import I_STARTS, IF_PROMPTS, LessonContext, part_a, save_upscaled, sdedit_levels
from minidiff.guidance import cfg

OPTIONS = ("image", "guidance")  # the optional flags this lesson reads (see minidiff.lessons_index)


def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    image = a.test_image()
    den = cfg(a.model, a.cond(IF_PROMPTS["photo"], None), a.uncond(), a.guidance_scale)
    i_starts = [1, 10] if ctx.quick else I_STARTS
    row, titles = sdedit_levels(ctx, a, image, den, i_starts)
    ctx.save_rows("sdedit.png", [row], [titles], value_range=a.value_range, cell=1.8)
    save_upscaled(ctx, a, "sdedit_256.png", torch.cat(row[:-1]), a.cond(IF_PROMPTS["photo"], None), titles[:-1],
                  "SDEdit", seed=100)


if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
