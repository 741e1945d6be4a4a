# %% [markdown]
# # B2.6.1 The same with DDPM: a class-conditioned noise predictor with classifier-free guidance
#
# The course's DDPM version of 2.4-2.6: the time-conditioned DDPM UNet of B2.3.1 also gets the
# one-hot digit class $c$ (dropped to zero 10% of the time in training), and sampling guides the
# predicted noise with scale $s = 5$,
#
# $$\hat\epsilon = \epsilon_\theta(x_t, t, 0) + s\,\big(\epsilon_\theta(x_t, t, c) - \epsilon_\theta(x_t, t, 0)\big),$$
#
# inside the strided DDPM sampler.

# %%
"""B2.6.1 The same with DDPM: a class-conditioned noise predictor with classifier-free guidance.

The course's DDPM version of 2.4-2.6: the time-conditioned DDPM UNet of B2.3.1 also gets
the one-hot digit class c (dropped to zero 10% of the time in training), and sampling
guides the predicted noise with scale s = 5,

    eps = eps_theta(x_t, t, 0) + s (eps_theta(x_t, t, c) - eps_theta(x_t, t, 0))

inside the strided DDPM sampler. Figures: the training loss; digits 0-9 from the same
noise after each saved epoch; the 4 x 10 grid of the final model; and a GIF of x_t from
pure noise (t = T - 1) to digits. Titles say how many the judge reads as their class.
"""

import torch

from minidiff.course import LessonContext, class_lesson_start, save_class_grid, save_epoch_rows
from minidiff.guidance import cfg
from minidiff.mnist_pipeline import class_vectors, ddpm_timesteps
from minidiff.samplers import iterative_denoise

OPTIONS = ("train", "guidance")  # the optional flags this lesson reads (see minidiff.lessons_index)


# %% [markdown]
# `run` saves the training loss as `loss.png`; digits 0-9 from the same noise after each saved epoch,
# `samples_by_epoch.png`; the final model's 4 x 10 grid, `cfg_grid.png`; and a GIF of $x_t$ from pure
# noise ($t = T - 1$) to digits, `sampling.gif`. Titles say how many the judge reads as their class.


# %%
def run(ctx: LessonContext) -> None:
    per_class, steps = (1, 3) if ctx.quick else (4, 30)
    guidance, run_dir, labels, noise = class_lesson_start(ctx, "ddpm-class", "class-conditioned DDPM", per_class)

    def sample(model, frames: bool = False):
        timesteps = ddpm_timesteps(model.config["T"], steps)  # 299, ..., 0, then -1: a last step to x0_hat
        den = cfg(model, class_vectors(labels, ctx.device), model.uncond(1), guidance)
        return iterative_denoise(den, noise.to(ctx.device), model.schedule, timesteps, generator=ctx.generator(1),
                                 progress=ctx.progress, return_intermediates=frames)

    model, x = save_epoch_rows(ctx, "samples_by_epoch.png", run_dir, sample, labels=labels,
                               suptitle=f"DDPM, guidance {guidance:g}, {steps} strided steps, same noise in each "
                                        f"column (judge over {labels.shape[0]} samples)")
    save_class_grid(ctx, "cfg_grid.png", x, labels, f"final model, guidance {guidance:g}")
    ctx.save_sampling_gif("sampling.gif", sample(model, frames=True)[1])


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
