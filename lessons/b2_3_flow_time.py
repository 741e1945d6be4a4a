"""B2.3 Flow matching with a time-conditioned UNet: training it, then sampling digits from noise.

Course 2.1-2.3. A straight path joins noise x_0 ~ N(0, I) to a digit x_1 at times t in [0, 1],

    x_t = (1 - t) x_0 + t x_1,    velocity dx_t/dt = x_1 - x_0

and the UNet, told t through two FCBlocks, learns that velocity:

    L = E_{x_1, x_0, t ~ U[0, 1]} |u_theta(x_t, t) - (x_1 - x_0)|^2

Sampling integrates dx/dt = u_theta(x, t) from pure noise at t = 0 to t = 1: Euler steps
x <- x + (t' - t) u_theta(x, t), or Heun steps (two calls per step, second order) as
here. The model has no class input, so it draws digits of every kind. Figures: the
training loss, and samples from the same noise after the epochs the run kept snapshots of.
"""

import torch

from minidiff.course import LessonContext, part_b_run, run_epochs, save_loss_curve, trained_how
from minidiff.mnist_pipeline import flow_time_grid, load_mnist_model
from minidiff.samplers import flow_heun

OPTIONS = ("train",)  # the optional flags this lesson reads (see minidiff.lessons_index)


def run(ctx: LessonContext) -> None:
    run_dir = part_b_run(ctx, "flow-time")
    save_loss_curve(ctx, "loss.png", run_dir, f"time-conditioned flow matching: {trained_how(run_dir)}")

    n, steps = (10, 2) if ctx.quick else (20, 8)
    timesteps = flow_time_grid(steps)  # 0, 1/8, ..., 1: Heun makes 2 * 8 - 1 = 15 network calls
    noise = torch.randn(n, 1, 28, 28, generator=ctx.generator(0))  # the same noise for every epoch
    rows, row_labels = [], []
    for epoch, folder in run_epochs(run_dir).items():
        model = load_mnist_model(folder, device=ctx.device)  # model(x_t, t): a denoiser already
        x = flow_heun(model, noise.to(ctx.device), model.schedule, timesteps, progress=ctx.progress).cpu()
        for i in range(0, n, 10):  # rows of 10
            rows.append(list(x[i : i + 10]))
            row_labels.append(f"epoch {epoch}" if i == 0 else "")
    ctx.save_rows("samples_by_epoch.png", rows, None, row_labels, value_range=(0.0, 1.0), cell=1.2,
                  suptitle=f"flow matching, time-conditioned: Heun, {steps} steps, same noise in each column")


if __name__ == "__main__":
    from minidiff.course import main

    main(run, __doc__)
