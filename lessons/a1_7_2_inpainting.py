# %% [markdown]
# # A1.7.2 Inpainting (RePaint, Lugmayr et al., 2022): regenerate only inside a mask
#
# Denoise from pure noise as usual, but after every step put the known pixels back, noised to the
# current timestep $t'$, so that the model must fill the hole to agree with them:
#
# $$x_{t'} \leftarrow m \odot x_{t'} + (1 - m) \odot \big(\sqrt{\bar\alpha_{t'}}\,x_{\mathrm{orig}} + \sqrt{1 - \bar\alpha_{t'}}\,\epsilon\big),$$
#
# where the mask $m$ is 1 where the image is regenerated. With IF stage II on this machine, the results
# are also shown upscaled to 256 x 256.

# %%
"""A1.7.2 Inpainting (RePaint, Lugmayr et al., 2022): regenerate only inside a mask.

Denoise from pure noise as usual, but after every step put the known pixels back,
noised to the current timestep, so the model must fill the hole to agree with them:

    x_{t'} <- m * x_{t'} + (1 - m) * add_noise(x_orig, eps, t')      (m = 1: regenerate)

With IF stage II on this machine, the results are also shown upscaled to 256 x 256.
"""

import torch

from minidiff.course import IF_PROMPTS, LessonContext, part_a, save_upscaled
from minidiff.edit import inpaint
from minidiff.guidance import cfg

OPTIONS = ("image", "guidance", "use")  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("inpaint", "repaint")  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` masks the top of the test image (the top half of the digit on MNIST) and inpaints it 3 times
# (once in quick mode), each with its own noise. `inpainting.png` shows the original, the mask, what
# is to be replaced and the results. With `USE`, your `inpaint` of exercise A1.7.2 (or your `repaint`
# of A1.7.2b, with one resampling step) fills the hole.


# %%
def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    image = a.test_image()
    c, h, w = a.image_shape
    mask = torch.zeros(1, 1, h, w, device=image.device)
    if a.is_if:
        mask[..., 2:24, 16:48] = 1  # the top of the picture: a new head, hat or sky
    else:
        mask[..., : h // 2, :] = 1  # the top half of the digit
    den = cfg(a.model, a.cond(IF_PROMPTS["photo"], None), a.uncond(), a.guidance_scale)
    n = 1 if ctx.quick else 3
    fill = lambda k: inpaint(den, image, mask, a.schedule, a.timesteps, generator=ctx.generator(k),  # noqa: E731
                             progress=ctx.progress, value_range=a.value_range)
    if ctx.use:
        # --use FILE: the learner's inpaint(den, image, mask, timesteps, alphas_cumprod, generator) (exercise A1.7.2),
        # or their repaint(..., resample_steps, generator) (A1.7.2b) at resample_steps = 1, plain inpainting
        from minidiff.exercises.lesson_use import eps_denoiser

        learner, args = ctx.use.get("inpaint"), ()
        if learner is None:
            learner, args = ctx.use["repaint"], (1,)
        eps, ab = eps_denoiser(den, a.device), a.schedule.alphas_cumprod.cpu()
        fill = lambda k: learner(eps, image.cpu(), mask.cpu(), a.timesteps, ab, *args,  # noqa: E731
                                 ctx.generator(k)).to(a.device)
    results = [fill(k) for k in range(n)]
    lo, hi = a.value_range
    hole = image * (1 - mask) + lo * mask
    ctx.save_rows(
        "inpainting.png",
        [[image, mask.expand(1, c, h, w) * (hi - lo) + lo, hole, *results]],
        [["original", "mask", "to replace"] + [f"inpainted {k + 1}" for k in range(n)]],
        value_range=a.value_range, cell=1.8,
    )
    save_upscaled(ctx, a, "inpainting_256.png", torch.cat(results), a.cond(IF_PROMPTS["photo"], None),
                  [f"inpainted {k + 1}" for k in range(n)], "inpainting", seed=100)


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
