# %% [markdown]
# # B1.2.1 Training a one-step denoiser at $\sigma = 0.5$, and how it improves with epochs
#
# A UNet $D_\theta$ (the course's unconditional UNet) learns to remove noise of one fixed level by
# minimising the L2 loss over training digits $x$ and fresh noise $\epsilon$:
#
# $$L(\theta) = \mathbb E_{x, \epsilon}\,\big\|D_\theta(x + \sigma\epsilon) - x\big\|^2, \qquad \sigma = 0.5.$$
#
# The shipped run kept snapshots after some epochs (the course compares epoch 1 and epoch 5); with
# `TRAIN = True` the lesson retrains it here instead.

# %%
"""B1.2.1 Training a one-step denoiser at sigma = 0.5, and how it improves with epochs.

A UNet D (the course's unconditional UNet) learns to remove noise of one fixed level by
minimising the L2 loss over training digits x and fresh noise eps,

    L = E_{x, eps} |D(x + sigma eps) - x|^2,    sigma = 0.5

Figures: the training loss of the shipped run, and its denoised test digits after the
epochs it kept snapshots of (the course compares epoch 1 and epoch 5), with PSNR and how
many of the results the judge classifier reads as the right digit. ``--train`` retrains
here instead (the loss title and the console say how long it took).
"""

import torch

from minidiff.course import LessonContext, judge_says, part_b_run, save_loss
from minidiff.data import sample_digits_real
from minidiff.metrics import psnr
from minidiff.mnist_pipeline import load_mnist_model
from minidiff.run_folder import read_run_config, run_epochs

OPTIONS = ("train",)  # the optional flags this lesson reads (see minidiff.lessons_index)


# %% [markdown]
# `run` saves the run's training loss as `loss.png`; then noises 40 held-out test digits and denoises
# them with each saved epoch's model: `denoised.png`, one row per epoch, with the PSNR and how many
# results the judge classifier reads as the right digit.


# %%
def run(ctx: LessonContext) -> None:
    run_dir = part_b_run(ctx, "denoiser")
    sigma = read_run_config(run_dir)["sigma"]
    save_loss(ctx, run_dir, f"denoiser, sigma = {sigma:g}")

    x, labels = sample_digits_real()  # 40 held-out test digits, 4 of each class
    z = x + sigma * torch.randn(x.shape, generator=ctx.generator(0))
    show = slice(None, 16 if ctx.quick else 40, 4)  # one digit of each class

    rows = [list(x[show]), list(z[show])]
    labels_rows = [f"clean x\n{judge_says(x, labels)}", f"noisy z\nPSNR {psnr(z.clamp(0, 1), x):.1f} dB"]
    for epoch, folder in run_epochs(run_dir).items():
        denoiser = load_mnist_model(folder, device=ctx.device)
        x_hat = denoiser(z.to(ctx.device)).cpu()  # D(z): one network call, no time input
        rows.append(list(x_hat[show]))
        labels_rows.append(f"D(z), epoch {epoch}\nPSNR {psnr(x_hat.clamp(0, 1), x):.1f} dB\n{judge_says(x_hat, labels)}")
    ctx.save_rows("denoised.png", rows, None, labels_rows, value_range=(0.0, 1.0), cell=1.3,
                  suptitle=f"one-step denoiser at sigma = {sigma:g} (PSNR of the shown, clipped images; {x.shape[0]} digits)")


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
