# %% [markdown]
# # B2.3 Flow matching with a time-conditioned UNet: training it, then sampling digits from noise
#
# Course 2.1-2.3. A straight path joins noise $x_0 \sim \mathcal N(0, I)$ to a digit $x_1$ at times $t \in [0, 1]$,
#
# $$x_t = (1 - t)\,x_0 + t\,x_1, \qquad \frac{dx_t}{dt} = x_1 - x_0,$$
#
# and the UNet, told $t$ through two FCBlocks, learns that velocity:
#
# $$L(\theta) = \mathbb E_{x_1, x_0,\, t \sim U[0, 1]}\,\big\|u_\theta(x_t, t) - (x_1 - x_0)\big\|^2.$$
#
# Sampling integrates $dx/dt = u_\theta(x, t)$ from pure noise at $t = 0$ to $t = 1$: Euler steps
# $x \leftarrow x + (t' - t)\,u_\theta(x, t)$, or, as here, Heun steps (two calls per step, second order).
# The model has no class input, so it draws digits of every kind.

# %%
"""B2.3 Flow matching with a time-conditioned UNet: training it, then sampling digits from noise.

Course 2.1-2.3. A straight path joins noise x_0 ~ N(0, I) to a digit x_1 at times t in [0, 1],

    x_t = (1 - t) x_0 + t x_1,    velocity dx_t/dt = x_1 - x_0

and the UNet, told t through two FCBlocks, learns that velocity:

    L = E_{x_1, x_0, t ~ U[0, 1]} |u_theta(x_t, t) - (x_1 - x_0)|^2

Sampling integrates dx/dt = u_theta(x, t) from pure noise at t = 0 to t = 1: Euler steps
x <- x + (t' - t) u_theta(x, t), or Heun steps (two calls per step, second order) as
here. The model has no class input, so it draws digits of every kind. Figures: the
training loss, and samples from the same noise after the epochs the run kept snapshots of.
"""

import torch

from minidiff.course import LessonContext, part_b_run, save_epoch_rows, save_loss
from minidiff.mnist_pipeline import flow_time_grid
from minidiff.samplers import flow_heun

OPTIONS = ("train", "use")  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("flow_sample",)  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` saves the training loss as `loss.png`, then samples 20 digits (10 in quick mode) from the same
# noise with the model of each saved epoch, Heun with 8 steps (2 in quick mode):
# `samples_by_epoch.png`. With `USE`, your Euler `flow_sample(velocity, x0, num_steps)` of exercise B2.3
# samples.


# %%
def run(ctx: LessonContext) -> None:
    run_dir = part_b_run(ctx, "flow-time")
    save_loss(ctx, run_dir, "time-conditioned flow matching")

    n, steps = (10, 2) if ctx.quick else (20, 8)
    timesteps = flow_time_grid(steps)  # 0, 1/8, ..., 1: Heun makes 2 * 8 - 1 = 15 network calls
    noise = torch.randn(n, 1, 28, 28, generator=ctx.generator(0))  # the same noise for every epoch

    def sample(model):  # model(x_t, t): a time-only model is a denoiser already
        if "flow_sample" in ctx.use:  # --use FILE: the learner's Euler flow_sample(velocity, x0, num_steps) (B2.3)
            return ctx.use["flow_sample"](model, noise.to(ctx.device), steps)
        return flow_heun(model, noise.to(ctx.device), model.schedule, timesteps, progress=ctx.progress)

    save_epoch_rows(ctx, "samples_by_epoch.png", run_dir, sample, rows_per_epoch=n // 10,
                    suptitle=f"flow matching, time-conditioned: {'your Euler' if ctx.use else 'Heun'}, {steps} steps, "
                             "same noise in each column")


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
