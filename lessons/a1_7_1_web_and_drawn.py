# %% [markdown]
# # A1.7.1 SDEdit on web and hand-drawn images: projecting onto the image manifold
#
# The same SDEdit as A1.7, now on images that are not photos of the model's world: a picture from
# the web and a hand-drawn sketch. Each is noised to $t$ = `timesteps[i_start]`,
#
# $$x_t = \sqrt{\bar\alpha_t}\,x_{\mathrm{orig}} + \sqrt{1 - \bar\alpha_t}\,\epsilon,$$
#
# and denoised with guidance. Noising washes out what is "wrong" about the picture; denoising fills
# in what the model believes belongs there. With IF stage II on this machine, the results are also
# shown upscaled to 256 x 256.

# %%
"""A1.7.1 SDEdit on web and hand-drawn images: projecting onto the image manifold.

The same SDEdit as A1.7, now on images that are not photos of the model's world: a
picture from the web (any file with --image; by default a picture that ships with
matplotlib) and a hand-drawn sketch. Noising washes out what is "wrong" about them;
denoising fills in what the model believes belongs there.

With IF stage II on this machine, the results are also shown upscaled to 256 x 256.
"""

import matplotlib.cbook
import torch

from minidiff.course import I_STARTS, IF_PROMPTS, LessonContext, part_a, save_upscaled, sdedit_levels
from minidiff.data import load_image, sketch
from minidiff.guidance import cfg

OPTIONS = ("image", "guidance")  # the optional flags this lesson reads (see minidiff.lessons_index)


# %% [markdown]
# `run` takes a picture that ships with matplotlib (or your `IMAGE`) and a drawn sketch (a house on
# IF, a 4 on MNIST) and saves the SDEdit of each at `i_start` = 1, 3, 5, 7, 10, 20 (quick mode: 1 and
# 10): `sdedit_web.png` and `sdedit_drawn.png`.


# %%
def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    web = matplotlib.cbook.get_sample_data("Minduka_Present_Blue_Pack.png", asfileobj=False)
    images = {
        "web": a.test_image() if ctx.image else a.to_model_range(load_image(web, 64)),  # --image takes its place
        "drawn": a.to_model_range(sketch("house" if a.is_if else "4", 64)),
    }
    den = cfg(a.model, a.cond(IF_PROMPTS["photo"], None), a.uncond(), a.guidance_scale)
    i_starts = [1, 10] if ctx.quick else I_STARTS
    for name, image in images.items():
        row, titles = sdedit_levels(ctx, a, image, den, i_starts)
        ctx.save_rows(f"sdedit_{name}.png", [row], [titles], value_range=a.value_range, cell=1.8)
        save_upscaled(ctx, a, f"sdedit_{name}_256.png", torch.cat(row[:-1]), a.cond(IF_PROMPTS["photo"], None),
                      titles[:-1], f"SDEdit of the {name} image", seed=100)


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
