# %% [markdown]
# # A1.3 One-step denoising: the model's guess of $x_0$ from a single call
#
# The network predicts the noise $\hat\epsilon = \epsilon_\theta(x_t, t)$ in $x_t$; inverting the forward process
# $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon$ gives
#
# $$\hat x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\,\hat\epsilon}{\sqrt{\bar\alpha_t}}.$$
#
# Good at small $t$. At large $t$ the guess is a blurry average of every image that could have
# produced $x_t$: one step cannot commit to details.

# %%
"""A1.3 One-step denoising: the model's guess of x_0 from a single call.

The network predicts the noise eps_hat in x_t; inverting the forward process gives

    x0_hat = (x_t - sqrt(1 - ab_t) eps_hat) / sqrt(ab_t)

Good at small t. At large t the guess is a blurry average of every image that could
have produced x_t: one step cannot commit to details.
"""

from minidiff.course import IF_PROMPTS, LessonContext, part_a
from minidiff.samplers import one_step_denoise

OPTIONS = ("image", "use")  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("one_step_denoise",)  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` noises the test image to $t$ = 250, 500 and 750 of 1000 and asks the model, conditioned on
# "a high quality photo" (on MNIST: no class), for its one-step estimate. `one_step.png` shows each
# row as original, noisy, estimate. With `USE`, your `one_step_denoise(den, x_t, t, alphas_cumprod)` of
# exercise A1.3 makes the estimate.


# %%
def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    x0 = a.test_image()
    den = a.conditional(a.cond(IF_PROMPTS["photo"], None))
    estimate = lambda x_t, t: one_step_denoise(den, x_t, a.schedule, t)  # noqa: E731
    if "one_step_denoise" in ctx.use:  # --use FILE: the learner's one_step_denoise(den, x_t, t, alphas_cumprod) (A1.3)
        from minidiff.exercises.lesson_use import eps_denoiser

        learner, eps = ctx.use["one_step_denoise"], eps_denoiser(den, a.device)
        estimate = lambda x_t, t: learner(eps, x_t.cpu(), t, a.schedule.alphas_cumprod.cpu()).to(a.device)  # noqa: E731
    rows, titles = [], []
    for i, t in enumerate(a.scale_t(t) for t in (250, 500, 750)):
        x_t = a.schedule.add_noise(x0, a.noise(1, ctx.generator(i)), t)
        rows.append([x0, x_t, estimate(x_t, t)])
        titles.append(["original", f"noisy, t = {t}", "one-step estimate"])
    ctx.save_rows("one_step.png", rows, titles, value_range=a.value_range, cell=2.0)


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
