"""B2.3.1 The same with DDPM: a time-conditioned UNet that predicts the noise, T = 300.

The course's DDPM version of 2.1-2.3. Linear betas from 1e-4 to 0.02 over T = 300 steps
give alphas_cumprod ab_t, and a digit x_0 is noised in one jump,

    x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps,    t ~ U{0, ..., T - 1}

The UNet, told t / T, learns the noise: L = E |eps_theta(x_t, t / T) - eps|^2. Sampling
starts from pure noise at t = T - 1 and applies the DDPM update (Ho et al., 2020) down to
t = 0, here on a strided subset of the 300 steps (each stride step uses the exact
posterior of the jump, so fewer steps stay correct, only coarser):

    x_t' = sqrt(ab_t') beta'_t / (1 - ab_t) x0_hat + sqrt(alpha'_t) (1 - ab_t') / (1 - ab_t) x_t + v_sigma

If no time-only DDPM model is shipped, the class-conditioned one (B2.6.1) stands in with
its class input set to the zero vector: it learned that unconditional case on the 10% of
its training batches whose class was dropped. ``--train`` trains the real time-only model.
"""

import torch

from minidiff import mnist_pipeline
from minidiff.course import LessonContext, part_b_run, run_epochs, save_loss_curve, trained_how
from minidiff.mnist_pipeline import ddpm_timesteps, load_mnist_model
from minidiff.samplers import iterative_denoise

OPTIONS = ("train",)  # the optional flags this lesson reads (see minidiff.lessons_index)


def run(ctx: LessonContext) -> None:
    time_only = ctx.train or (mnist_pipeline.WEIGHTS_DIR / "ddpm-time" / "config.json").is_file()
    run_dir = part_b_run(ctx, "ddpm-time" if time_only else "ddpm-class")
    what = "time-conditioned DDPM" if time_only else "class-conditioned DDPM, class dropped (zero vector)"
    save_loss_curve(ctx, "loss.png", run_dir, f"{what}: {trained_how(run_dir)}")

    n, steps = (10, 3) if ctx.quick else (20, 30)
    noise = torch.randn(n, 1, 28, 28, generator=ctx.generator(0))  # the same noise for every epoch
    rows, row_labels = [], []
    for epoch, folder in run_epochs(run_dir).items():
        model = load_mnist_model(folder, device=ctx.device)
        timesteps = ddpm_timesteps(model.config["T"], steps)  # 299, ..., 0, then -1: a last step to x0_hat

        def den(x_t, t):
            return model(x_t, t, model.uncond(x_t.shape[0]))  # a time-only model ignores the condition

        x = iterative_denoise(den, noise.to(ctx.device), model.schedule, timesteps, generator=ctx.generator(1),
                              progress=ctx.progress).cpu()
        for i in range(0, n, 10):  # rows of 10
            rows.append(list(x[i : i + 10]))
            row_labels.append(f"epoch {epoch}" if i == 0 else "")
    ctx.save_rows("samples_by_epoch.png", rows, None, row_labels, value_range=(0.0, 1.0), cell=1.2,
                  suptitle=f"{what}: {steps} of {model.config['T']} steps, same noise in each column")


if __name__ == "__main__":
    from minidiff.course import main

    main(run, __doc__)
