# %% [markdown]
# # A1.7 Image-to-image translation: SDEdit (Meng et al., 2022)
#
# Noise a real image to $t$ = `timesteps[i_start]`,
#
# $$x_t = \sqrt{\bar\alpha_t}\,x_{\mathrm{orig}} + \sqrt{1 - \bar\alpha_t}\,\epsilon,$$
#
# then denoise it iteratively with classifier-free guidance from `i_start` on. A small `i_start` (much
# noise) lets the model invent; a large one keeps the original. The course's levels are
# `i_start` = 1, 3, 5, 7, 10, 20. The prompt is the generic "a high quality photo"; on MNIST its
# stand-in is no class at all, so the model may pick any digit. With IF stage II on this machine,
# the results are also shown upscaled to 256 x 256.

# %%
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

OPTIONS = ("image", "guidance", "use")  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("sdedit",)  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` edits the test image (or your `IMAGE`) at each level (quick mode: 1 and 10) and saves the
# results, then the original, as one row: `sdedit.png`. With `USE`, your
# `sdedit(den, image, timesteps, alphas_cumprod, i_start, generator)` of exercise A1.7 edits.


# %%
def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    image = a.test_image()
    den = cfg(a.model, a.cond(IF_PROMPTS["photo"], None), a.uncond(), a.guidance_scale)
    i_starts = [1, 10] if ctx.quick else I_STARTS
    if "sdedit" in ctx.use:
        # --use FILE: the learner's sdedit(den, image, timesteps, alphas_cumprod, i_start, generator) (exercise A1.7),
        # with the generators and titles of sdedit_levels
        from minidiff.exercises.lesson_use import eps_denoiser

        eps, ab = eps_denoiser(den, a.device), a.schedule.alphas_cumprod.cpu()
        row = [ctx.use["sdedit"](eps, image.cpu(), a.timesteps, ab, i, ctx.generator(k)).to(a.device)
               for k, i in enumerate(i_starts)] + [image]
        titles = [f"i_start {i} (t {a.timesteps[i]})" for i in i_starts] + ["original"]
    else:
        row, titles = sdedit_levels(ctx, a, image, den, i_starts)
    ctx.save_rows("sdedit.png", [row], [titles], value_range=a.value_range, cell=1.8)
    save_upscaled(ctx, a, "sdedit_256.png", torch.cat(row[:-1]), a.cond(IF_PROMPTS["photo"], None), titles[:-1],
                  "SDEdit", seed=100)


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
