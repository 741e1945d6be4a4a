"""B2.6.1 The same with DDPM: a class-conditioned noise predictor with classifier-free guidance.

The course's DDPM version of 2.4-2.6: the time-conditioned DDPM UNet of B2.3.1 also gets
the one-hot digit class c (dropped to zero 10% of the time in training), and sampling
guides the predicted noise with scale s = 5,

    eps = eps_theta(x_t, t, 0) + s (eps_theta(x_t, t, c) - eps_theta(x_t, t, 0))

inside the strided DDPM sampler. Figures: the training loss; digits 0-9 from the same
noise after each saved epoch; the 4 x 10 grid of the final model; and a GIF of x_t from
pure noise (t = T - 1) to digits. Titles say how many the judge reads as their class.
"""

import torch

from minidiff.course import (LessonContext, judge_says, part_b_run, run_epochs, save_loss_curve,
                             trained_how)
from minidiff.guidance import cfg
from minidiff.mnist_pipeline import GUIDANCE, class_vectors, ddpm_timesteps, load_mnist_model
from minidiff.samplers import iterative_denoise

OPTIONS = ("train", "guidance")  # the optional flags this lesson reads (see minidiff.lessons_index)


def run(ctx: LessonContext) -> None:
    guidance = GUIDANCE if ctx.guidance is None else ctx.guidance  # --guidance, or the shipped models' scale
    run_dir = part_b_run(ctx, "ddpm-class")
    save_loss_curve(ctx, "loss.png", run_dir, f"class-conditioned DDPM: {trained_how(run_dir)}")

    per_class, steps = (1, 3) if ctx.quick else (4, 30)
    labels = torch.arange(10).repeat(per_class)  # 0..9, 0..9, ...: one row of the grid per repeat
    noise = torch.randn(labels.shape[0], 1, 28, 28, generator=ctx.generator(0))

    rows, row_labels = [], []
    for epoch, folder in run_epochs(run_dir).items():
        model = load_mnist_model(folder, device=ctx.device)
        timesteps = ddpm_timesteps(model.config["T"], steps)  # 299, ..., 0, then -1: a last step to x0_hat
        den = cfg(model, class_vectors(labels, ctx.device), model.uncond(1), guidance)
        x, path = iterative_denoise(den, noise.to(ctx.device), model.schedule, timesteps, generator=ctx.generator(1),
                                    progress=ctx.progress, return_intermediates=True)
        rows.append(list(x[:10].cpu()))
        row_labels.append(f"epoch {epoch}\n{judge_says(x, labels)}")
    digit_titles = [[str(d) for d in range(10)]] + [[] for _ in rows[1:]]
    ctx.save_rows("samples_by_epoch.png", rows, digit_titles, row_labels, value_range=(0.0, 1.0), cell=1.5,
                  suptitle=f"DDPM, guidance {guidance:g}, {steps} of {model.config['T']} steps, same noise in each "
                           f"column (judge over {labels.shape[0]} samples)")

    # The last epoch's samples: the grid and the GIF.
    grid = x.cpu().view(per_class, 10, 1, 28, 28)
    grid_titles = [digit_titles[0]] + [[]] * (per_class - 1)
    ctx.save_rows("cfg_grid.png", [list(r) for r in grid], grid_titles, None, value_range=(0.0, 1.0), cell=1.0,
                  suptitle=f"epoch {epoch}, guidance {guidance:g}: {judge_says(x, labels)}")
    ctx.save_sampling_gif("sampling.gif", path)


if __name__ == "__main__":
    from minidiff.course import main

    main(run, __doc__)
