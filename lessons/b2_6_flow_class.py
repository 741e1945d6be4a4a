# %% [markdown]
# # B2.6 Class-conditioned flow matching with classifier-free guidance
#
# Course 2.4-2.6. The UNet also gets the digit class $c$ as a one-hot vector, which scales its decoder
# features ($c \cdot h + t$). In training, $c$ is replaced by the zero vector 10% of the time, so the same
# network also learns the unconditional velocity $u_\theta(x_t, t, 0)$. Sampling then guides with scale $s = 5$,
#
# $$u = u_\theta(x_t, t, 0) + s\,\big(u_\theta(x_t, t, c) - u_\theta(x_t, t, 0)\big),$$
#
# both halves in one batched call, inside the Heun sampler of B2.3.

# %%
"""B2.6 Class-conditioned flow matching with classifier-free guidance.

Course 2.4-2.6. The UNet also gets the digit class c as a one-hot vector, which scales its
decoder features (c * h + t). In training, c is replaced by the zero vector 10% of the
time, so the same network also learns the unconditional velocity u(x_t, t, 0). Sampling
then uses classifier-free guidance with scale s = 5:

    u = u(x_t, t, 0) + s (u(x_t, t, c) - u(x_t, t, 0))

(both halves in one batched call) inside the Heun sampler of B2.3. Figures: the training
loss; digits 0-9 from the same noise after each saved epoch; the 4 x 10 grid of the final
model; samples at several guidance scales; and a GIF of x_t going from noise (t = 0) to
digits (t = 1). Titles say how many samples the judge classifier reads as their class.
"""

import torch

from minidiff.course import LessonContext, class_lesson_start, judge_says, save_class_grid, save_epoch_rows
from minidiff.guidance import cfg
from minidiff.mnist_pipeline import class_vectors, flow_time_grid
from minidiff.samplers import flow_heun

OPTIONS = ("train", "guidance", "use")  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("cfg_flow_sample",)  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` saves the training loss as `loss.png`; digits 0-9 from the same noise after each saved epoch,
# `samples_by_epoch.png`; the final model's 4 x 10 grid, `cfg_grid.png`; a GIF of $x_t$ going from noise
# ($t = 0$) to digits ($t = 1$), `sampling.gif`; and samples at several guidance scales,
# `guidance_scales.png`. Titles say how many samples the judge classifier reads as their class. With
# `USE`, your Euler `cfg_flow_sample(model, x0, c, num_steps, guidance_scale)` of exercise B2.6 samples.


# %%
def run(ctx: LessonContext) -> None:
    per_class, steps = (1, 2) if ctx.quick else (4, 8)
    guidance, run_dir, labels, noise = class_lesson_start(ctx, "flow-class", "class-conditioned flow matching",
                                                          per_class)
    timesteps = flow_time_grid(steps)

    def learners_sample(model, x0: torch.Tensor, c: torch.Tensor, scale: float, frames: bool):
        """--use FILE: the learner's cfg_flow_sample(model, x0, c, num_steps, guidance_scale) (exercise B2.6), Euler
        on the same grid; for the GIF, the states are the x_t the model is asked about, one per time, then the end."""
        states: dict[float, torch.Tensor] = {}

        def watched(x_t, t, cond):
            states.setdefault(round(float(torch.as_tensor(t).reshape(-1)[0]), 6), x_t[: x0.shape[0]])
            return model(x_t, t, cond)

        x = ctx.use["cfg_flow_sample"](watched if frames else model, x0, c, steps, scale)
        return (x, [states[k] for k in sorted(states)] + [x]) if frames else x

    def sample(model, scale: float = guidance, n: int | None = None, frames: bool = False):
        y = labels[:n]
        if "cfg_flow_sample" in ctx.use:
            return learners_sample(model, noise[: y.shape[0]].to(ctx.device), class_vectors(y, ctx.device), scale,
                                   frames)
        den = cfg(model, class_vectors(y, ctx.device), model.uncond(1), scale)
        return flow_heun(den, noise[: y.shape[0]].to(ctx.device), model.schedule, timesteps,
                         progress=ctx.progress, return_intermediates=frames)

    model, x = save_epoch_rows(ctx, "samples_by_epoch.png", run_dir, sample, labels=labels,
                               suptitle=f"guidance {guidance:g}, {'your Euler' if ctx.use else 'Heun'} {steps} steps, "
                                        "same noise in each column "
                                        f"(judge over {labels.shape[0]} samples)")
    save_class_grid(ctx, "cfg_grid.png", x, labels, f"final model, guidance {guidance:g}")
    ctx.save_sampling_gif("sampling.gif", sample(model, frames=True)[1])

    rows, row_labels = [], []
    for scale in (sorted({1.0, guidance}) if ctx.quick else sorted({0.0, 1.0, 3.0, guidance})):
        x = sample(model, scale, n=10).cpu()
        rows.append(list(x))
        name = "scale 0 (no class)" if scale == 0 else f"scale {scale:g}"
        row_labels.append(f"{name}\n{judge_says(x, labels[:10])}")
    ctx.save_rows("guidance_scales.png", rows, None, row_labels, value_range=(0.0, 1.0), cell=1.5,
                  suptitle="classifier-free guidance: same noise in each column")


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
