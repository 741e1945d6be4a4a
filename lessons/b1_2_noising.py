# %% [markdown]
# # B1.2 Noising MNIST digits: $z = x + \sigma\epsilon$, for growing $\sigma$
#
# The simplest corruption, the one Part B of the course starts with (1.1-1.2): add Gaussian noise of
# standard deviation $\sigma$ to a clean digit $x \in [0, 1]$,
#
# $$z = x + \sigma\,\epsilon, \qquad \epsilon \sim \mathcal N(0, I).$$
#
# A denoiser $D(z)$ is trained to undo it (B1.2.1). At $\sigma = 0.2$ the digit is plain to see, at
# $\sigma = 1$ the noise is as strong as the ink. (Pixels outside $[0, 1]$ are clipped for display.)

# %%
"""B1.2 Noising MNIST digits: z = x + sigma eps, for growing sigma.

The simplest corruption the course starts Part B with (1.1-1.2): add Gaussian noise of
standard deviation sigma to a clean digit x in [0, 1],

    z = x + sigma eps,    eps ~ N(0, I)

A denoiser D(z) is trained to undo it (B1.2.1). At sigma = 0.2 the digit is plain to see,
at sigma = 1 the noise is as strong as the ink. (Pixels outside [0, 1] are clipped for
display.)
"""

import torch

from minidiff.course import LessonContext, sample_digits_real

SIGMAS = [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]
OPTIONS = ("use",)  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("add_noise",)  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` takes test digits 0, 2, 4, 7 and 9 (0, 4 and 7 in quick mode) and noises each with one draw of
# $\epsilon$ at $\sigma$ = 0 to 1, the same draw at every $\sigma$: `noising.png`. With `USE`, your
# `add_noise(x, sigma, noise)` of exercise B1.2 does the noising.


# %%
def run(ctx: LessonContext) -> None:
    images, labels = sample_digits_real()
    classes = [0, 4, 7] if ctx.quick else [0, 2, 4, 7, 9]
    x = torch.stack([images[labels == c][0] for c in classes])

    def add_noise(x_k: torch.Tensor, sigma: float, eps: torch.Tensor) -> torch.Tensor:
        if "add_noise" in ctx.use:  # --use FILE: the learner's add_noise(x, sigma, noise) (exercise B1.2), batch of 1
            return ctx.use["add_noise"](x_k[None], sigma, eps[None])[0]
        return x_k + sigma * eps

    rows = []
    for k, x_k in enumerate(x):
        eps = torch.randn(x_k.shape, generator=ctx.generator(k))  # the same noise at every sigma
        rows.append([add_noise(x_k, sigma, eps) for sigma in SIGMAS])
    titles = [[f"sigma = {sigma:g}" for sigma in SIGMAS]] + [[] for _ in rows[1:]]
    ctx.save_rows("noising.png", rows, titles, value_range=(0.0, 1.0), suptitle="z = x + sigma eps")


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
