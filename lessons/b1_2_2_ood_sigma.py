# %% [markdown]
# # B1.2.2 Out-of-distribution noise levels: the $\sigma = 0.5$ denoiser at other $\sigma$
#
# The denoiser of B1.2.1 only ever saw $z = x + 0.5\,\epsilon$. Here it gets $z = x + \sigma\epsilon$ for $\sigma$ from 0 to 1:
#
# $$\hat x = D(x + \sigma\epsilon), \qquad \mathrm{PSNR} = 10 \log_{10} \frac{1}{\operatorname{mean}\,(\hat x - x)^2}\ \text{dB}.$$
#
# Below 0.5 it still cleans up (though it may smear or dim a clean digit it was never shown); above
# 0.5 it leaves noise behind and starts to invent strokes, since it learned to remove exactly the
# amount of noise of its training level. This is why the diffusion models of Part B 2 take the noise
# level (the time $t$) as an input.

# %%
"""B1.2.2 Out-of-distribution noise levels: the sigma = 0.5 denoiser at other sigmas.

The denoiser of B1.2.1 only ever saw z = x + 0.5 eps. Here it gets z = x + sigma eps for
sigma from 0 to 1:

    x_hat = D(x + sigma eps),    PSNR = 10 log10(1 / mean (x_hat - x)^2)

Below 0.5 it still cleans up (though it may smear or dim a clean digit it was never shown);
above 0.5 it leaves noise behind and starts to invent strokes, since it learned to remove
exactly the amount of noise of its training level. This is why the diffusion models of
Part B 2 take the noise level (the time t) as an input.
"""

import matplotlib
import torch

from minidiff.course import LessonContext, judge_says, part_b_run
from minidiff.data import sample_digits_real
from minidiff.metrics import psnr
from minidiff.mnist_pipeline import load_mnist_model
from minidiff.run_folder import read_run_config

OPTIONS = ("train",)  # the optional flags this lesson reads (see minidiff.lessons_index)
SIGMAS = [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]


# %% [markdown]
# `run` noises 40 test digits with one draw of $\epsilon$, scaled to each $\sigma$, and denoises them.
# `ood_sigma.png` shows a digit (two outside quick mode) at each $\sigma$, noisy and denoised, with the
# PSNR and the judge's reading over all 40; `psnr_vs_sigma.png` plots the PSNR of input and output
# against $\sigma$.


# %%
def run(ctx: LessonContext) -> None:
    run_dir = part_b_run(ctx, "denoiser")
    sigma_train = read_run_config(run_dir)["sigma"]
    denoiser = load_mnist_model(run_dir, device=ctx.device)
    x, labels = sample_digits_real()  # 40 held-out test digits
    eps = torch.randn(x.shape, generator=ctx.generator(0))  # one noise draw, scaled for each sigma

    noisy, denoised, psnr_in, psnr_out, judged = [], [], [], [], []
    for sigma in SIGMAS:
        z = x + sigma * eps
        x_hat = denoiser(z.to(ctx.device)).cpu()
        noisy.append(z)
        denoised.append(x_hat)
        psnr_in.append(psnr(z.clamp(0, 1), x))
        psnr_out.append(psnr(x_hat.clamp(0, 1), x))
        judged.append(judge_says(x_hat, labels))

    rows, titles, row_labels = [], [], []
    for k in [7] if ctx.quick else [7, 22]:  # a 1 and a 5
        rows += [[z[k] for z in noisy], [x_hat[k] for x_hat in denoised]]
        titles += [[f"sigma = {s:g}" for s in SIGMAS],
                   [f"{p:.1f} dB\n{j.replace('judge: ', '')}" for p, j in zip(psnr_out, judged)]]
        row_labels += ["noisy z", "D(z)"]
    ctx.save_rows("ood_sigma.png", rows, titles, row_labels, value_range=(0.0, 1.0),
                  suptitle=f"denoiser trained at sigma = {sigma_train:g} "
                           f"(PSNR and judge over {x.shape[0]} test digits)")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    finite_in = [p if p != float("inf") else None for p in psnr_in]
    ax.plot(SIGMAS, finite_in, "o--", label="noisy input z")
    ax.plot(SIGMAS, psnr_out, "o-", label="denoised D(z)")
    ax.axvline(sigma_train, color="gray", lw=0.8, ls=":", label=f"training sigma = {sigma_train:g}")
    ax.set_xlabel("sigma")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"PSNR over {x.shape[0]} test digits", fontsize=10)
    ax.legend()
    fig.tight_layout()
    ctx.save("psnr_vs_sigma.png", lambda path: fig.savefig(path, dpi=100))
    plt.close(fig)


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
