# %% [markdown]
# # B3 Fewer steps: a digit in one network evaluation
#
# Beyond the course. The guided flow model of B2.6 follows a curved path from noise $x_0$ ($t = 0$) to a
# digit $x_1$ ($t = 1$), so Euler needs several steps. One step goes straight along the first velocity and
# lands on its estimate of the end,
#
# $$\hat{x}_1 = x_t + (1 - t)\,u_\theta(x_t, t, c),$$
#
# which at $t = 0$ is the average of every digit that noise could become: a blur. Reflow (Liu et al.,
# 2023) straightens the path. The teacher (`flow-class-ema`, guided) writes pairs: from noise $x_0$, the
# digit $x_1 = \Phi(x_0, c)$ its sampler ends at. A student, started from the teacher's weights, learns the
# straight line between each pair,
#
# $$x_t = (1 - t)\,x_0 + t\,x_1, \qquad L = \big\| u_\theta(x_t, t, c) - (x_1 - x_0) \big\|^2,$$
#
# with half the draws at $t = 0$, where a one-step sampler asks. One Euler step $x_0 + u_\theta(x_0, 0, c)$
# then lands on the teacher's digit, without guidance: one network evaluation of batch $B$, where the
# teacher spends a guided pair on each of its 9.
#
# Exercise B3.1 is this loss: `minidiff exercise B3.1 --out my/` writes the starter of `reflow_loss`,
# `minidiff check my/b3_1_reflow_loss.py` tests it, and `minidiff lesson B3 --use my/b3_1_reflow_loss.py`
# trains with it.

# %%
"""B3 Fewer steps: a digit in one network evaluation.

Beyond the course. The guided flow model follows a curved path from noise x0 (t = 0) to a
digit x1 (t = 1); one Euler step lands on its estimate of the end, x1_hat = x_t + (1 - t) u,
which at t = 0 is a blur. Reflow (Liu et al., 2023): the teacher (flow-class-ema, guided)
writes pairs (x0, x1 = Phi(x0, c)); a student, started from its weights, learns the straight
line between each pair,

    x_t = (1 - t) x0 + t x1,   L = ||u_theta(x_t, t, c) - (x1 - x0)||^2

with half the draws at t = 0 (exercise B3.1 is this loss). One Euler step x0 + u_theta(x0, 0, c)
then makes a digit, without guidance. Figures: the training loss; the paths of teacher and
student (x_t and x1_hat at each step, and how straight each path is); the teacher at 1, 2, 4
and 8 steps beside the student at 1 and 2 from the same noise; the teacher's weights trained a
few steps with the reflow loss (yours with --use), then one step; and the frontier: accuracy on
both judges and FD against held-out digits, against network evaluations per digit.
"""

import matplotlib
import torch

from minidiff import mnist_pipeline
from minidiff.course import LessonContext, judge_says, part_b_run, save_loss
from minidiff.data import find_mnist_dir, heldout_set, sample_digits_real, training_set
from minidiff.guidance import cfg
from minidiff.metrics import frechet_distance, judge_accuracy, judge_features
from minidiff.mnist_pipeline import class_vectors, flow_time_grid, load_mnist_model
from minidiff.samplers import flow_euler

OPTIONS = ("train", "use")  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("reflow_loss",)  # what --use FILE draws this lesson with: the learner's functions of these names
JUDGES = ("judge", "judge2")


# %% [markdown]
# `run` saves the student's training loss as `loss.png`. `paths.png` follows two digits along 8 Euler
# steps: the teacher's $x_t$ and its estimate $\hat{x}_1$ at each step, and the student's $\hat{x}_1$, with
# each path's straightness $S = \frac{1}{n}\sum_i \|(x_1 - x_0) - u(x_{t_i}, t_i)\|^2 / \|x_1 - x_0\|^2$
# (0: a straight line). `steps.png` shows the teacher at 1, 2, 4 and 8 steps and the student at 1 and 2,
# from the same noise. `frontier.png` plots, against network evaluations per digit, the share each judge
# reads as the class asked for and the Frechet distance in each judge's features to held-out digits,
# divided by the distance between two real samples (the floor); without MNIST here, or in quick mode, the
# reference is the 40 test digits that ship with minidiff and the distance is not divided.
# `fine_tune.png` makes a student of its own: the teacher's weights, trained for a few steps with the
# reflow loss on fresh teacher pairs, then one step from the same noise as `steps.png`. With `--use FILE`
# your `reflow_loss` of exercise B3.1 trains it: a loss that equals minidiff's draws the same figure.


# %%
def _paths(den, x0: torch.Tensor, schedule, steps: int) -> tuple[list, list, torch.Tensor, float]:
    """(x_t at each time, x1_hat at each time, the end x1, straightness S) of Euler on `steps` intervals."""
    states, estimates, velocities = [], [], []

    def watch(i, t, x_t, x1_hat):
        states.append(x_t.cpu())
        estimates.append(x1_hat.cpu())
        velocities.append((x1_hat - x_t).cpu() / (1 - float(t)))  # x1_hat = x_t + (1 - t) u

    x1 = flow_euler(den, x0, schedule, flow_time_grid(steps), callback=watch, progress=False).cpu()
    line = x1 - x0.cpu()
    straightness = sum(float(((line - u) ** 2).sum() / (line**2).sum()) for u in velocities) / len(velocities)
    return states + [x1], estimates + [x1], x1, straightness


def _balanced(x: torch.Tensor, y: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """per_class digits of each class, drawn at random with `seed`."""
    order = torch.randperm(y.shape[0], generator=torch.Generator().manual_seed(seed))
    return torch.cat([x[order[y[order] == c][:per_class]] for c in range(10)])


def _frontier(ctx: LessonContext, teacher, student, guidance: float) -> None:
    """frontier.png: accuracy and FD / floor against evaluations per digit, teacher and student, both judges."""
    per_class = 2 if ctx.quick else 50
    judges = {j: load_mnist_model(mnist_pipeline.WEIGHTS_DIR / j).net for j in JUDGES}
    if ctx.quick or find_mnist_dir() is None:
        reference, floors = sample_digits_real()[0], None
    else:
        reference = _balanced(*heldout_set(), per_class, seed=0)
        real = _balanced(*training_set(), per_class, seed=1)
        floors = {j: frechet_distance(judge_features(n, real), judge_features(n, reference)) for j, n in judges.items()}
    ref_features = {j: judge_features(n, reference) for j, n in judges.items()}
    labels = torch.arange(10).repeat_interleave(per_class)
    noise = torch.randn(labels.shape[0], 1, 28, 28, generator=ctx.generator(1))
    budgets = {"teacher": [1, 2, 4] if ctx.quick else [1, 2, 4, 8, 16], "student": [1, 2] if ctx.quick else [1, 2, 4]}
    points = {}
    for name, model, scale in (("teacher", teacher, guidance), ("student", student, 1.0)):
        for evals in budgets[name]:
            settings = mnist_pipeline.SamplerSettings(flow_euler, flow_time_grid(evals), scale, None, 0.0)
            x = mnist_pipeline.guided_samples(model, noise, labels, settings, progress=False)
            for j, net in judges.items():
                fd = frechet_distance(judge_features(net, x), ref_features[j])
                points[name, j, evals] = (100 * judge_accuracy(net, x, labels), fd / floors[j] if floors else fd)
            fd = "FD / floor" if floors else "FD"
            ctx.say(f"{name}, {evals} evaluation(s): " + ", ".join(
                f"{j} {points[name, j, evals][0]:.1f}%, {fd} {points[name, j, evals][1]:.2f}" for j in JUDGES))

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, color in (("teacher", "tab:blue"), ("student", "tab:orange")):
        for j, style in zip(JUDGES, ("o-", "s--")):
            evals = budgets[name]
            for k, ax in enumerate(axes):
                ax.plot(evals, [points[name, j, e][k] for e in evals], style, color=color, label=f"{name}, {j}")
    where = "held-out digits / the real-vs-real floor" if floors else "the 40 shipped test digits (no floor)"
    for ax, label in zip(axes, ("read as the class asked for (%)", f"FD to {where}")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("network evaluations per digit (Euler steps)")
        ax.set_ylabel(label, fontsize=9)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    fig.suptitle(f"{labels.shape[0]} digits per point: teacher guided at {guidance:g} (a batched pair counts once), "
                 "student unguided", fontsize=10)
    fig.tight_layout()
    ctx.save("frontier.png", lambda path: fig.savefig(path, dpi=100))
    plt.close(fig)


def _fine_tune(ctx: LessonContext, student, noise: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               teacher_one_step: torch.Tensor) -> None:
    """fine_tune.png: the teacher's weights trained a few steps with the reflow loss (the learner's with --use) on
    pairs of their own, then one step from `noise`, beside the teacher's digits `target` and its own one step."""
    from minidiff.distill import student_from_teacher, teacher_pairs
    from minidiff.exercises.reference import reflow_loss as minidiffs_loss

    reflow_loss = ctx.use.get("reflow_loss", minidiffs_loss)  # --use FILE: the learner's (exercise B3.1)
    steps, batch, pairs = (10, 32, 64) if ctx.quick else (60, 64, 512)  # the pairs cost the most: 9 calls each
    config = {**student.config, "seed": ctx.seed + 2, "pairs": pairs}
    if ctx.quick:
        config["teacher_steps"] = 2
    x1, y, x0 = (a.to(ctx.device) for a in teacher_pairs(config, ctx.device, progress=False))
    c = class_vectors(y, ctx.device)
    net = student_from_teacher(config).to(ctx.device)  # a fresh copy of the teacher, in training mode
    opt = torch.optim.Adam(net.parameters(), lr=config["lr"])
    generator = ctx.generator(3)  # the draws of t, which a loss equal to minidiff's makes in the same order
    losses = []
    for i in range(steps):
        rows = (torch.arange(batch) + i * batch) % pairs  # the pairs in turn, again and again
        loss = reflow_loss(net, x1[rows], x0[rows], c[rows], config["p_zero"], generator)
        if not (isinstance(loss, torch.Tensor) and loss.ndim == 0 and loss.requires_grad):  # backward() needs one
            got = (type(loss).__name__ if not isinstance(loss, torch.Tensor) else
                   f"a tensor of shape {tuple(loss.shape)}" + ("" if loss.requires_grad else " without a gradient"))
            raise RuntimeError(f"your reflow_loss returned {got}; it returns the loss, a 0-d tensor computed from "
                               "the model's output (minidiff check <your file> says more)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        net.eval()
        zero = torch.zeros(noise.shape[0], device=ctx.device)
        one_step = (noise + net(noise, zero, class_vectors(labels, ctx.device))).clamp(0, 1).cpu()  # x0 + u(x0, 0, c)
    distance = float(((one_step - target) ** 2).mean())
    whose = "your reflow_loss" if ctx.use else "minidiff's reflow_loss"
    ctx.say(f"{steps} steps of {whose}: loss {losses[0]:.4f} -> {losses[-1]:.4f}; one step lands {distance:.4f} "
            f"(mean squared) from the teacher's digits, the teacher's own one step "
            f"{float(((teacher_one_step - target) ** 2).mean()):.4f}")
    ctx.save_rows("fine_tune.png", [list(target), list(teacher_one_step), list(one_step)],
                  [[str(int(d)) for d in labels], [], []],
                  ["teacher,\n8 steps", "teacher,\n1 step", f"after {steps} steps\nof reflow, 1 step"],
                  value_range=(0.0, 1.0), cell=1.2,
                  suptitle=f"the teacher's weights trained {steps} steps of {batch} of {pairs} pairs with the reflow "
                           f"loss: one step lands {distance:.4f} from the teacher's digits (mean squared)")


def run(ctx: LessonContext) -> None:
    run_dir = part_b_run(ctx, "flow-class-1step")
    save_loss(ctx, run_dir, "reflow distillation")
    student = load_mnist_model(run_dir, device=ctx.device)
    teacher = load_mnist_model(student.config["teacher"], device=ctx.device)
    guidance = student.config["teacher_guidance"]
    labels = torch.arange(10)
    noise = torch.randn(10, 1, 28, 28, generator=ctx.generator(0)).to(ctx.device)

    def teacher_den(y):
        return cfg(teacher, class_vectors(y, ctx.device), teacher.uncond(1), guidance)

    def student_den(y):
        return cfg(student, class_vectors(y, ctx.device), student.uncond(1), 1.0)  # scale 1: one call of batch B

    # The paths: the teacher's bends (its x1_hat drifts from a blur to the digit); the student's is straight.
    steps, shown = 8, labels[[3, 5]]
    rows, row_labels = [], []
    _, _, _, s_teacher = _paths(teacher_den(labels), noise, teacher.schedule, steps)
    _, _, _, s_student = _paths(student_den(labels), noise, student.schedule, steps)
    for d in shown:
        states, estimates, _, _ = _paths(teacher_den(labels[d : d + 1]), noise[d : d + 1], teacher.schedule, steps)
        _, student_estimates, _, _ = _paths(student_den(labels[d : d + 1]), noise[d : d + 1], student.schedule, steps)
        rows += [[s[0] for s in states], [e[0] for e in estimates], [e[0] for e in student_estimates]]
        row_labels += [f"digit {int(d)}\nteacher x_t", "teacher\nx1_hat", "student\nx1_hat"]
    times = [f"t = {t:.3g}" for t in flow_time_grid(steps)]
    ctx.save_rows("paths.png", rows, [times] + [[] for _ in rows[1:]], row_labels, value_range=(0.0, 1.0), cell=1.2,
                  suptitle=f"8 Euler steps from the same noise; straightness S over 10 digits: teacher "
                           f"{s_teacher:.3f}, student {s_student:.3f} (0: straight)")

    # The same noise through the teacher at 1, 2, 4, 8 steps and the student at 1 and 2.
    rows, row_labels, shown_x = [], [], {}
    for name, model, den, counts in (("teacher", teacher, teacher_den, (1, 2, 4, 8)),
                                     ("student", student, student_den, (1, 2))):
        for n in counts:
            x = flow_euler(den(labels), noise, model.schedule, flow_time_grid(n), progress=False).clamp(0, 1).cpu()
            rows.append(list(x))
            row_labels.append(f"{name}, {n} step{'s' * (n > 1)}\n{judge_says(x, labels)}")
            shown_x[name, n] = x
    ctx.save_rows("steps.png", rows, [[str(d) for d in range(10)]] + [[] for _ in rows[1:]], row_labels,
                  value_range=(0.0, 1.0), cell=1.2,
                  suptitle=f"Euler from the same noise in each column: teacher guided at {guidance:g} "
                           "(one batched pair per step), student unguided (one call per step)")

    _fine_tune(ctx, student, noise, labels, shown_x["teacher", 8], shown_x["teacher", 1])
    _frontier(ctx, teacher, student, guidance)


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
