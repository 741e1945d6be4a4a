# %% [markdown]
# # B1.2.3 Denoising pure noise: trained to turn noise into digits, a UNet outputs the mean digit
#
# Train the denoiser of B1.2.1 with its input replaced by pure noise, $z = \epsilon$:
#
# $$L(\theta) = \mathbb E_{x, \epsilon}\,\big\|D_\theta(\epsilon) - x\big\|^2.$$
#
# $\epsilon$ says nothing about which digit $x$ it is paired with, so for every input the loss is lowest at
# the value closest to all digits at once, in the mean-squared sense,
#
# $$\arg\min_c\ \mathbb E_x\,\|c - x\|^2 = \mathbb E[x] \quad \text{(the mean digit)},$$
#
# and the least loss reachable is the digits' variance, $\mathbb E\,\|x - \mathbb E[x]\|^2$. The trained UNet indeed
# draws the same blurry average of every digit for every noise input. A single network call cannot
# generate; the diffusion models of Part B 2 get there step by step.

# %%
"""B1.2.3 Denoising pure noise: trained to turn noise into digits, a UNet outputs the mean digit.

Train the denoiser of B1.2.1 with its input replaced by pure noise, z = eps:

    L = E_{x, eps} |D(eps) - x|^2

eps says nothing about which digit x it is paired with, so for every input the loss is
lowest at the value that is closest to all digits at once, in the mean-squared sense:

    argmin_c E_x |c - x|^2 = E[x]    (the mean digit)

and the least loss reachable is the digits' variance, E|x - E[x]|^2. The trained UNet
indeed draws the same blurry average of every digit for every noise input. A single
network call cannot generate; the diffusion models of Part B 2 get there step by step.

No pure-noise model ships with minidiff, so the lesson trains a small one (D = 8, 100
steps of 64; about 20 s on a 2-core CPU) on 2,000 training digits, or on the 40 shipped
test digits in quick mode and where no MNIST data is found.
"""

import torch

from minidiff import mnist_pipeline
from minidiff.course import LessonContext
from minidiff.data import find_mnist_dir, sample_digits_real, training_set
from minidiff.mnist_pipeline import load_mnist_model
from minidiff.run_folder import plot_loss, read_run_config, trained_how
from minidiff.train import recipe_config, train


def training_digits(ctx: LessonContext) -> tuple[torch.Tensor, torch.Tensor]:
    if ctx.quick or find_mnist_dir() is None:
        return sample_digits_real()
    x, y = training_set()
    return x[:2000], y[:2000]

OPTIONS = ("train",)  # the optional flags this lesson reads (see minidiff.lessons_index)


# %% [markdown]
# `run` uses the shipped pure-noise model when it ships and MNIST's training set is here; otherwise it
# trains a small one (width 8, about 100 steps of 64 digits; 15 steps in quick mode) on 2,000 training
# digits, or on the 40 shipped test digits. It saves the loss curve, with the least possible loss in
# its title, as `loss.png`, and `pure_noise.png`: noise inputs, the model's outputs and the mean digit.


# %%
def run(ctx: LessonContext) -> None:
    shipped = mnist_pipeline.WEIGHTS_DIR / "pure-noise"
    if (shipped / "config.json").is_file() and not ctx.train and find_mnist_dir() is not None:
        run_dir = shipped
        x, _ = training_set()  # the shipped model saw the whole training set
    else:
        x, y = training_digits(ctx)
        batch = min(64, x.shape[0])
        steps = 15 if ctx.quick else 100  # the loss levels off after about 50 steps
        cfg = recipe_config("pure-noise", num_hiddens=8, batch_size=batch, lr=3e-3, seed=ctx.seed,
                            epochs=max(1, round(steps * batch / x.shape[0])), snapshot_epochs=[])
        run_dir = ctx.out / "train" / "pure-noise"
        train(cfg, run_dir, data=(x, y), device=ctx.device, progress=ctx.progress, overwrite=True)
    mean_digit = x.mean(dim=0)
    variance = float(((x - mean_digit) ** 2).mean())  # the least loss any D can reach
    title = (f"D(eps) -> x on {read_run_config(run_dir)['train_images']} digits: {trained_how(run_dir)}\n"
             f"least possible loss: the digits' variance, {variance:.4f}")
    ctx.save("loss.png", lambda path: plot_loss(run_dir, path, title))

    model = load_mnist_model(run_dir, device=ctx.device)
    n = 3 if ctx.quick else 6
    eps = torch.randn(n, 1, 28, 28, generator=ctx.generator(0))
    outputs = model(eps.to(ctx.device)).cpu()
    gap = [float((o - mean_digit).abs().max()) for o in outputs]
    rows = [list(eps) + [mean_digit], list(outputs) + [mean_digit]]
    titles = [[f"noise {i + 1}" for i in range(n)] + ["mean digit"],
              [f"max |D - mean| {g:.2f}" for g in gap] + ["E[x]"]]
    ctx.save_rows("pure_noise.png", rows, titles, ["input eps", "output D(eps)"], value_range=(0.0, 1.0),
                  suptitle=f"a UNet trained to map pure noise to digits outputs their mean ({x.shape[0]} digits)")


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
