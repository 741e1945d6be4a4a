# %% [markdown]
# # A1.2 The classical baseline: denoising by Gaussian blur
#
# Before any network: noise is high-frequency, so a low-pass filter removes much of it,
#
# $$\hat x_0 = G_\sigma * x_t,$$
#
# but it removes the image's own edges with it, and it cannot undo the $\sqrt{\bar\alpha_t}$ fading.
# Each title gives the peak signal-to-noise ratio against the clean image, for images in $[lo, hi]$,
#
# $$\mathrm{PSNR} = 10 \log_{10} \frac{(hi - lo)^2}{\operatorname{mean}\,(\hat x_0 - x_0)^2}\ \text{dB};$$
#
# the diffusion model must beat it.

# %%
"""A1.2 The classical baseline: denoising by Gaussian blur.

Before any network: noise is high-frequency, so a low-pass filter removes much of it,

    x0_hat = G_sigma * x_t

but it removes the image's own edges with it, and it cannot undo the sqrt(ab_t) fading.
The PSNR against the clean image is in each title; the diffusion model must beat it.
"""

import torch

from minidiff.course import LessonContext, part_a
from minidiff.filters import gaussian_blur


def psnr(x: torch.Tensor, ref: torch.Tensor, value_range: tuple[float, float]) -> float:
    """Peak signal-to-noise ratio in dB, for images in value_range."""
    lo, hi = value_range
    mse = ((x - ref) ** 2).mean().clamp(min=1e-12)
    return float(10 * torch.log10((hi - lo) ** 2 / mse))

OPTIONS = ("image", "use")  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("blur_denoise",)  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` noises the test image to $t$ = 250, 500 and 750 of 1000, blurs each noisy image (kernel 5,
# $\sigma$ = 2 on IF, 1 on MNIST) and saves the pairs as `blur_denoising.png`, with the PSNR of both.
# With `USE`, your `blur_denoise(x_t, kernel_size, sigma)` of exercise A1.2 blurs.


# %%
def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    x0 = a.test_image()
    kernel, sigma = (5, 2.0) if a.is_if else (5, 1.0)
    # --use FILE: the learner's blur_denoise(x_t, kernel_size, sigma) (exercise A1.2)
    blur = ctx.use.get("blur_denoise", gaussian_blur)
    rows, titles = [], []
    for i, t in enumerate(a.scale_t(t) for t in (250, 500, 750)):
        x_t = a.schedule.add_noise(x0, a.noise(1, ctx.generator(i)), t)
        blurred = blur(x_t, kernel, sigma)
        rows.append([x_t, blurred])
        titles.append([f"t = {t}: {psnr(x_t, x0, a.value_range):.1f} dB",
                       f"blurred: {psnr(blurred, x0, a.value_range):.1f} dB"])
    ctx.save_rows("blur_denoising.png", rows, titles, value_range=a.value_range, cell=2.2,
                  suptitle=f"Gaussian blur, kernel {kernel}, sigma {sigma}")


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
