# %% [markdown]
# # A1.5 Sampling from pure noise: iterative denoising from i_start = 0
#
# Start from $x_T \sim \mathcal N(0, I)$ at the first timestep and apply the update of A1.4 all the way
# down to $t = 0$:
#
# $$x_{t'} = \frac{\sqrt{\bar\alpha_{t'}}\,\beta_t}{1 - \bar\alpha_t}\,\hat x_0
#   + \frac{\sqrt{\alpha_t}\,(1 - \bar\alpha_{t'})}{1 - \bar\alpha_t}\,x_t + \sigma_t z.$$
#
# With the conditional model alone ("a high quality photo", or a digit class), samples are valid
# but often dull or broken; lesson A1.6 fixes that with guidance. With IF stage II on this machine,
# the samples are also shown upscaled to 256 x 256.

# %%
"""A1.5 Sampling from pure noise: iterative denoising from i_start = 0.

Start from x = N(0, I) at the first timestep and denoise all the way. With the
conditional model alone ("a high quality photo", or a digit class), samples are valid
but often dull or broken; lesson A1.6 fixes that with guidance. With IF stage II on
this machine, the samples are also shown upscaled to 256 x 256.
"""

from minidiff.course import IF_PROMPTS, LessonContext, part_a, save_upscaled
from minidiff.samplers import iterative_denoise


OPTIONS = ("use",)  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("sample_from_noise",)  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` draws 5 samples (2 in quick mode) for "a high quality photo" (the digit 3 on MNIST) with the
# plain conditional model. One generator draws $x_T$, then every step's noise $z$. The samples are
# `samples.png`. With `USE`, your `sample_from_noise(den, shape, timesteps, alphas_cumprod, generator)`
# of exercise A1.5 samples.


# %%
def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    n = 2 if ctx.quick else 5
    den = a.conditional(a.cond(IF_PROMPTS["photo"], 3))
    g = ctx.generator(0)  # draws x_T, then every step's noise
    if "sample_from_noise" in ctx.use:
        # --use FILE: the learner's sample_from_noise(den, shape, timesteps, alphas_cumprod, generator) (exercise A1.5)
        from minidiff.exercises.lesson_use import eps_denoiser

        x = ctx.use["sample_from_noise"](eps_denoiser(den, a.device), (n, *a.image_shape), a.timesteps,
                                         a.schedule.alphas_cumprod.cpu(), g).to(a.device)
    else:
        x = iterative_denoise(den, a.noise(n, g), a.schedule, a.timesteps, generator=g, progress=ctx.progress)
    label = a.label(IF_PROMPTS["photo"], 3)
    ctx.save_rows("samples.png", [list(x)], [[f"sample {i + 1}" for i in range(n)]], value_range=a.value_range,
                  suptitle=f"no guidance: '{label}'")
    save_upscaled(ctx, a, "samples_256.png", x, a.cond(IF_PROMPTS["photo"], 3),
                  [f"sample {i + 1}" for i in range(n)], f"no guidance: '{label}'", seed=2)


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
