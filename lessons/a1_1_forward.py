# %% [markdown]
# # A1.1 The forward process: an image noised to t = 250, 500 and 750
#
# DDPM defines how a clean image $x_0$ becomes noise in closed form, at any $t$ at once:
#
# $$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon, \qquad \epsilon \sim \mathcal N(0, I),
# \qquad \bar\alpha_t = \prod_{s=0}^{t} (1 - \beta_s)$$
#
# $\bar\alpha_t$ (`alphas_cumprod[t]`) falls from 1 to almost 0 as $t$ goes from 0 to $T - 1$, so the
# signal fades and the noise takes over. Denoising is learning to run this backwards.

# %%
"""A1.1 The forward process: an image noised to t = 250, 500 and 750.

DDPM defines how a clean image x_0 becomes noise in closed form, at any t at once:

    x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps,     eps ~ N(0, I),  ab_t = alphas_cumprod[t]

ab_t falls from 1 to almost 0 as t goes from 0 to T - 1, so the signal fades and the
noise takes over. Denoising is learning to run this backwards.
"""

from minidiff.course import LessonContext, part_a

OPTIONS = ("image", "use")  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("forward",)  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` noises the test image (a photo on IF, a 7 on MNIST, or your `IMAGE`) to $t$ = 250, 500 and
# 750 of 1000 (the same fractions of the model's $T$), each with its own draw of $\epsilon$, and saves
# them beside the original as `forward.png`, each titled with its $\sqrt{\bar\alpha_t}$. With `USE`, your
# `forward(im, t, alphas_cumprod, noise)` of exercise A1.1 does the noising.


# %%
def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    x0 = a.test_image()
    ts = [a.scale_t(t) for t in (250, 500, 750)]
    # --use FILE: the learner's forward(im, t, alphas_cumprod, noise) (minidiff exercise A1.1)
    forward = ctx.use.get("forward", lambda im, t, alphas_cumprod, noise: a.schedule.add_noise(im, noise, t))
    noisy = []
    for i, t in enumerate(ts):
        eps = a.noise(1, ctx.generator(i))
        noisy.append(forward(x0, t, a.schedule.alphas_cumprod, eps))
    titles = ["original"] + [f"t = {t}, sqrt(ab) = {a.schedule.alphas_cumprod[t].sqrt():.2f}" for t in ts]
    ctx.save_rows("forward.png", [[x0, *noisy]], [titles], value_range=a.value_range, cell=2.2)


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
