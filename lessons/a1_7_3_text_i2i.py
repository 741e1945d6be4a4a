# %% [markdown]
# # A1.7.3 Text-conditional image-to-image translation
#
# SDEdit again, but guided towards a different prompt $c_{\mathrm{new}}$ ("a rocket ship"; on MNIST another
# digit): noise the image to $t$ = `timesteps[i_start]`,
#
# $$x_t = \sqrt{\bar\alpha_t}\,x_{\mathrm{orig}} + \sqrt{1 - \bar\alpha_t}\,\epsilon,$$
#
# and denoise it iteratively with $\hat\epsilon = \epsilon_u + s\,(\epsilon_{c_{\mathrm{new}}} - \epsilon_u)$. With much noise the result
# follows the prompt, with little it keeps the image. With IF stage II on this machine, the results
# are also shown upscaled to 256 x 256.

# %%
"""A1.7.3 Text-conditional image-to-image translation.

SDEdit again, but guided towards a different prompt ("a rocket ship"; on MNIST another
digit): with much noise the result follows the prompt, with little it keeps the image.

    x = iterative_denoise(cfg(model, cond_new, uncond, s), add_noise(x_orig, eps, t_{i_start}))

With IF stage II on this machine, the results are also shown upscaled to 256 x 256.
"""

import torch

from minidiff.course import I_STARTS, IF_PROMPTS, LessonContext, part_a, save_upscaled, sdedit_levels
from minidiff.guidance import cfg

OPTIONS = ("image", "guidance")  # the optional flags this lesson reads (see minidiff.lessons_index)


# %% [markdown]
# `run` edits the test image (a photo on IF, a 7 on MNIST, or your `IMAGE`) towards "a rocket ship"
# (the digit 1 on MNIST) at `i_start` = 1, 3, 5, 7, 10, 20 (quick mode: 1 and 10): `text_i2i.png`.


# %%
def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    image = a.test_image()  # a photo (IF) or a 7 (MNIST)
    target = (IF_PROMPTS["rocket"], 1)
    den = cfg(a.model, a.cond(*target), a.uncond(), a.guidance_scale)
    i_starts = [1, 10] if ctx.quick else I_STARTS
    row, titles = sdedit_levels(ctx, a, image, den, i_starts)
    ctx.save_rows("text_i2i.png", [row], [titles], value_range=a.value_range, cell=1.8,
                  suptitle=f"towards '{a.label(*target)}'")
    save_upscaled(ctx, a, "text_i2i_256.png", torch.cat(row[:-1]), a.cond(*target), titles[:-1],
                  f"towards '{a.label(*target)}'", seed=100)


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
