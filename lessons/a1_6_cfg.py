# %% [markdown]
# # A1.6 Classifier-free guidance (Ho & Salimans, 2022)
#
# Run the model twice, with the prompt $c$ and with the empty prompt $\varnothing$, and extrapolate from
# the unconditional estimate past the conditional one:
#
# $$\hat\epsilon = \epsilon_u + s\,(\epsilon_c - \epsilon_u), \qquad \epsilon_u = \epsilon_\theta(x_t, t, \varnothing),\quad
# \epsilon_c = \epsilon_\theta(x_t, t, c).$$
#
# $s = 1$ is the plain conditional model; $s > 1$ pushes samples towards what makes them match the
# prompt, trading diversity for quality. Both passes go through the network as one batch. With IF
# stage II on this machine, the guided row is also upscaled to 256 x 256.

# %%
"""A1.6 Classifier-free guidance (Ho & Salimans, 2022).

Run the model twice, with the prompt and with the empty prompt, and extrapolate:

    eps = eps_u + s (eps_c - eps_u)

s = 1 is the plain conditional model; s > 1 pushes samples towards what makes them
match the prompt, trading diversity for quality. Both passes go through the network as
one batch. With IF stage II on this machine, the guided row is also upscaled to 256 x 256.
"""

from minidiff.course import IF_PROMPTS, LessonContext, part_a, save_upscaled
from minidiff.guidance import cfg
from minidiff.samplers import iterative_denoise

OPTIONS = ("guidance", "use")  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("cfg_eps",)  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` samples "a high quality photo" (the digit 3 on MNIST) from the same noise at scales $s$ = 1, 3
# and the model's own (7 for IF, 5 for MNIST, or your `GUIDANCE`); quick mode: 1 and the model's.
# `cfg.png` has one row per scale, the same noise in each column. With `USE`, your
# `cfg_eps(eps_uncond, eps_cond, scale)` of exercise A1.6 combines the two estimates.


# %%
def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    n = 2 if ctx.quick else 5
    cond = a.cond(IF_PROMPTS["photo"], 3)
    rows, labels = [], []
    for scale in ([1.0, a.guidance_scale] if ctx.quick else [1.0, 3.0, a.guidance_scale]):
        den = cfg(a.model, cond, a.uncond(), scale)
        if "cfg_eps" in ctx.use:  # --use FILE: the learner's cfg_eps(eps_uncond, eps_cond, scale) (exercise A1.6)
            from minidiff.exercises.lesson_use import cfg_denoiser

            den = cfg_denoiser(a.model, cond, a.uncond(), scale, ctx.use["cfg_eps"])
        x = iterative_denoise(den, a.noise(n, ctx.generator(0)), a.schedule, a.timesteps,
                              generator=ctx.generator(1), progress=ctx.progress)
        rows.append(list(x))
        labels.append(f"scale {scale:g}")
    ctx.save_rows("cfg.png", rows, None, labels, a.value_range,
                  suptitle=f"'{a.label(IF_PROMPTS['photo'], 3)}', same noise per column")
    save_upscaled(ctx, a, "cfg_256.png", x, cond, [f"sample {i + 1}" for i in range(n)],
                  f"guided, {labels[-1]}", seed=2)


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
