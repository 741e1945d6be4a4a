# %% [markdown]
# # A1.4 Iterative denoising: many small steps beat one big one
#
# One-step denoising (A1.3) jumps from $x_t$ straight to a guess $\hat x_0$, and at a large $t$ that guess
# is blurry. Iterative denoising commits only a little of it at a time: from $x_t$ at
# `timesteps[i_start]`, the strided DDPM update moves to the next, smaller timestep $t'$,
#
# $$x_{t'} = \frac{\sqrt{\bar\alpha_{t'}}\,\beta_t}{1 - \bar\alpha_t}\,\hat x_0
#   + \frac{\sqrt{\alpha_t}\,(1 - \bar\alpha_{t'})}{1 - \bar\alpha_t}\,x_t + \sigma_t z,
#   \qquad \alpha_t = \frac{\bar\alpha_t}{\bar\alpha_{t'}},\quad \beta_t = 1 - \alpha_t,$$
#
# with $\hat x_0$ the one-step guess of A1.3 and $z \sim \mathcal N(0, I)$. The first term pulls towards the
# guess, the second keeps part of where we are. Each step commits a little; the result is sharper
# than the one-step guess and far better than a blur.

# %%
"""A1.4 Iterative denoising: many small steps beat one big one.

From x_t at timesteps[i_start], the strided DDPM update moves to the next timestep t':

    x_{t'} = sqrt(ab_{t'}) beta_t / (1 - ab_t) x0_hat + sqrt(alpha_t) (1 - ab_{t'}) / (1 - ab_t) x_t + sigma z

with alpha_t = ab_t / ab_{t'} and beta_t = 1 - alpha_t. Each step commits a little;
the result is sharper than the one-step guess and far better than a blur.
"""

from minidiff.course import IF_PROMPTS, LessonContext, part_a
from minidiff.filters import gaussian_blur
from minidiff.samplers import iterative_denoise, one_step_denoise

OPTIONS = ("image", "use")  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("iterative_denoise",)  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` noises the test image to $t$ = `timesteps[10]`, then denoises it step by step with
# `iterative_denoise`, keeping every state $x_t$ of the loop. It saves every 5th state as
# `trajectory.png`; then `compare.png`, the original and the noisy image beside the three ways back
# (iterative, one step, Gaussian blur); and the whole loop as `denoising.gif`. With `USE`, your
# `iterative_denoise` of exercise A1.4 (with your `ddpm_step` inside) runs the loop.


# %%
def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    x0 = a.test_image()
    i_start = 10
    t_start = a.timesteps[i_start]
    x_t = a.schedule.add_noise(x0, a.noise(1, ctx.generator(0)), t_start)
    den = a.conditional(a.cond(IF_PROMPTS["photo"], None))
    if "iterative_denoise" in ctx.use:
        # --use FILE: the learner's iterative_denoise(den, x, timesteps, alphas_cumprod, i_start, generator), with
        # their ddpm_step inside (exercise A1.4); the states shown are the x_t their loop hands the denoiser
        from minidiff.exercises.lesson_use import eps_denoiser

        eps, states, ts = eps_denoiser(den, a.device), [], []
        seen = lambda x, t: (states.append(x.to(a.device)), ts.append(int(t.reshape(-1)[0])), eps(x, t))[2]  # noqa
        x = ctx.use["iterative_denoise"](seen, x_t.cpu(), a.timesteps, a.schedule.alphas_cumprod.cpu(), i_start,
                                         ctx.generator(1)).to(a.device)
        states.append(x)
        ts.append(a.timesteps[-1])
    else:
        x, states = iterative_denoise(den, x_t, a.schedule, a.timesteps, i_start=i_start, generator=ctx.generator(1),
                                      progress=ctx.progress, return_intermediates=True)
        ts = a.timesteps[i_start:]
    # every 5th state of the loop, as the course shows it
    shown = list(range(0, len(states), 5))
    ctx.save_rows("trajectory.png", [[states[k] for k in shown]], [[f"t = {ts[k]}" for k in shown]],
                  value_range=a.value_range, cell=1.8)
    kernel, sigma = (5, 2.0) if a.is_if else (5, 1.0)
    ctx.save_rows(
        "compare.png",
        [[x0, x_t, x, one_step_denoise(den, x_t, a.schedule, t_start), gaussian_blur(x_t, kernel, sigma)]],
        [["original", f"noisy, t = {t_start}", "iterative", "one step", "Gaussian blur"]],
        value_range=a.value_range, cell=2.0,
    )
    ctx.save_gif("denoising.gif", [s.clamp(*a.value_range) for s in states], value_range=a.value_range)


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
