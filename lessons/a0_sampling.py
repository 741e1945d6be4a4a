# %% [markdown]
# # A0 Sampling: prompts in, images out, at several numbers of denoising steps
#
# The whole pipeline in one picture before we take it apart. Start from pure noise
# $x_T \sim \mathcal N(0, I)$ and walk a strided list of timesteps $t_0 > t_1 > \dots > 0$. At each
# step the model predicts the noise in $x_t$ twice, with the prompt $c$ and with the empty prompt
# $\varnothing$; classifier-free guidance combines the two, and a DDPM step moves to the next timestep $t'$:
#
# $$\hat\epsilon = \epsilon_\theta(x_t, t, \varnothing) + s\,\big(\epsilon_\theta(x_t, t, c) - \epsilon_\theta(x_t, t, \varnothing)\big),
# \qquad x_{t'} = \mathrm{DDPM\ step}(x_t, \hat\epsilon, t \to t')$$
#
# Fewer steps (a bigger stride) is faster and rougher; more steps is slower and finer.
#
# Part A runs on DeepFloyd IF stage I when its weights are on this machine (`minidiff fetch if-i-xl`);
# otherwise on the shipped class-conditional MNIST model, with a digit class standing in for each
# prompt. With IF stage II here too, the last row is also upscaled from 64 to 256 pixels.

# %%
"""A0 Sampling: prompts in, images out, at several numbers of denoising steps.

The whole pipeline in one picture before we take it apart. Start from pure noise
x_T ~ N(0, I), then walk a strided list of timesteps [t_0 > t_1 > ... > 0], each step
asking the model for eps and moving to the next timestep with classifier-free guidance:

    eps = eps_u + s (eps_c - eps_u),    x_{t'} = DDPM step(x_t, eps, t -> t')

Fewer steps (a bigger stride) is faster and rougher; more steps is slower and finer.

With IF stage II on this machine, the last row is also upscaled 64 -> 256 (IF's cascade:
stage II denoises a 256 x 256 image while seeing the 64 x 64 one and the prompt).
"""

import torch

from minidiff.course import IF_PROMPTS, LessonContext, part_a
from minidiff.guidance import cfg
from minidiff.samplers import iterative_denoise
from minidiff.schedule import strided_timesteps

OPTIONS = ("guidance",)  # the optional flags this lesson reads (see minidiff.lessons_index)


# %% [markdown]
# `run` takes three prompts (digits 2, 5 and 8 on MNIST) and samples each from the same noise at
# strides 50, 30 and 10 of the course's 1000-step schedule (scaled to the model's $T$; quick mode:
# stride 50 only). `samples_by_steps.png` has one row per number of steps.


# %%
def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    prompts = [(IF_PROMPTS["village"], 2), (IF_PROMPTS["hat"], 5), (IF_PROMPTS["rocket"], 8)]
    # strides of the course's 1000-step schedule: 20, 34 and 100 steps (scaled to T)
    strides = [50] if ctx.quick else [50, 30, 10]
    rows, titles, labels = [], [], []
    for stride in strides:
        step = max(1, round(stride * a.T / 1000))
        ts = strided_timesteps(step * ((a.T - 1) // step), step)
        row = []
        for k, (prompt, digit) in enumerate(prompts):
            den = cfg(a.model, a.cond(prompt, digit), a.uncond(), a.guidance_scale)
            x_T = a.noise(1, ctx.generator(k))  # same noise for every step count: compare like with like
            row.append(iterative_denoise(den, x_T, a.schedule, ts, generator=ctx.generator(100 + k), progress=ctx.progress))
        rows.append(row)
        titles.append([a.label(p, d) for p, d in prompts])
        labels.append(f"{len(ts) - 1} steps")
    ctx.save_rows("samples_by_steps.png", rows, titles, labels, a.value_range,
                  suptitle=f"{a.name}: the same noise, guided by each prompt (scale {a.guidance_scale})")
    if a.upscale is not None:
        conds = torch.cat([a.cond(p, d) for p, d in prompts])
        big = a.upscale(torch.cat(row), conds, a.uncond(), generator=ctx.generator(200))
        ctx.save_rows("samples_64_256.png", [row, list(big)], titles[-1:] * 2,
                      ["64 x 64 (stage I)", "256 x 256 (stage II)"], a.value_range, cell=2.8,
                      suptitle=f"{labels[-1]} at stage I, then upscaled by stage II")
        ctx.save_grid("samples_256.png", big, nrow=len(prompts), value_range=a.value_range)  # at full size


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
