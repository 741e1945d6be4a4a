# %% [markdown]
# # B2.3.1 The same with DDPM: a time-conditioned UNet that predicts the noise, T = 300
#
# The course's DDPM version of 2.1-2.3. Linear betas from $10^{-4}$ to 0.02 over $T = 300$ steps give
# $\bar\alpha_t$, and a digit $x_0$ is noised in one jump,
#
# $$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon, \qquad t \sim U\{0, \dots, T - 1\}.$$
#
# The UNet, told $t / T$, learns the noise:
#
# $$L(\theta) = \mathbb E_{x_0, \epsilon, t}\,\big\|\epsilon_\theta(x_t, t / T) - \epsilon\big\|^2.$$
#
# Sampling starts from pure noise at $t = T - 1$ and applies the DDPM update (Ho et al., 2020) of A1.4
# down to $t = 0$, here on a strided subset of the 300 steps: each strided step uses the exact posterior
# of its jump, so fewer steps stay correct, only coarser. If no time-only DDPM model ships, the
# class-conditioned one (B2.6.1) stands in with its class input set to the zero vector, the
# unconditional case it learned on the 10% of its training batches whose class was dropped.

# %%
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
from minidiff.course import LessonContext, part_b_run, save_epoch_rows, save_loss
from minidiff.mnist_pipeline import ddpm_timesteps
from minidiff.samplers import iterative_denoise

OPTIONS = ("train", "use")  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("ddpm_sample",)  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` saves the training loss as `loss.png`, then samples 20 digits (10 in quick mode) from the same
# noise with the model of each saved epoch, 30 strided steps (3 in quick mode):
# `samples_by_epoch.png`. With `USE`, your `ddpm_sample(model, x, timesteps, alphas_cumprod, generator)`
# of exercise B2.3.1 samples.


# %%
def run(ctx: LessonContext) -> None:
    time_only = ctx.train or (mnist_pipeline.WEIGHTS_DIR / "ddpm-time" / "config.json").is_file()
    run_dir = part_b_run(ctx, "ddpm-time" if time_only else "ddpm-class")
    what = "time-conditioned DDPM" if time_only else "class-conditioned DDPM, class dropped (zero vector)"
    save_loss(ctx, run_dir, what)

    n, steps = (10, 3) if ctx.quick else (20, 30)
    noise = torch.randn(n, 1, 28, 28, generator=ctx.generator(0))  # the same noise for every epoch

    def sample(model):
        timesteps = ddpm_timesteps(model.config["T"], steps)  # 299, ..., 0, then -1: a last step to x0_hat

        def den(x_t, t):
            return model(x_t, t, model.uncond(x_t.shape[0]))  # a time-only model ignores the condition

        if "ddpm_sample" in ctx.use:  # --use FILE: the learner's ddpm_sample(model, x, timesteps, alphas_cumprod,
            # generator) (exercise B2.3.1); its UNet takes t / T, which the MNIST model gets as t and divides by T.
            # The learner's loop runs on the CPU (its z come from a CPU generator), the UNet on ctx.device.
            T = model.config["T"]

            def unet(x_t, t_over_T):
                t = torch.as_tensor(t_over_T, device=ctx.device) * T
                return den(x_t.to(ctx.device), t).to(x_t.device)

            return ctx.use["ddpm_sample"](unet, noise, timesteps, model.schedule.alphas_cumprod.cpu(), ctx.generator(1))
        return iterative_denoise(den, noise.to(ctx.device), model.schedule, timesteps, generator=ctx.generator(1),
                                 progress=ctx.progress)

    save_epoch_rows(ctx, "samples_by_epoch.png", run_dir, sample, rows_per_epoch=n // 10,
                    suptitle=f"{what}: {steps} strided steps, same noise in each column")


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
