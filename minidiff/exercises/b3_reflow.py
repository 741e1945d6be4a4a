"""B3.1 Reflow, the distillation loss on a teacher's pairs: starter, checks, known mistakes."""

from __future__ import annotations

import torch
from torch import nn

from minidiff.exercises import reference as R
from minidiff.exercises.b2_class import class_batch, class_model
from minidiff.exercises.fixtures import expect_same_gradients, first_model_call, seeds, st
from minidiff.exercises.harness import Mistake, call, check, expect, expect_close
from minidiff.exercises.starters import NOT_YET, exercise

__all__ = ["B3_1"]


# ========================================================================================
# B3.1 Reflow: the flow loss on a teacher's pairs, weighted towards t = 0
# ========================================================================================


def _reflow_with(times, target=lambda x1, x0: x1 - x0, fresh_noise=False, drop=0.0, reduce=lambda d: (d**2).mean()):
    """A wrong reflow_loss: t from times(B, p_zero, generator), then (optionally) fresh noise and
    class dropout drawn from the same generator, the path, the target and the reduction."""

    def reflow_loss(model, x1, x0, c, p_zero, generator):
        t = times(x1.shape[0], p_zero, generator)
        if fresh_noise:
            x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype)
        if drop:
            c = c * (torch.rand(c.shape[0], generator=generator) >= drop).to(c.dtype)[:, None]
        tt = t.reshape(-1, 1, 1, 1).to(x1.dtype)
        return reduce(model((1 - tt) * x0 + tt * x1, t, c) - target(x1, x0))

    return reflow_loss


def _times(at=0.0, zero_if=lambda r, p: r < p):
    """t = `at` where zero_if(r, p_zero) for r ~ U[0, 1), else t ~ U[0, 1): minidiff's draws, or a wrong rule."""

    def times(batch, p_zero, generator):
        chosen = zero_if(torch.rand(batch, generator=generator), p_zero)
        return torch.rand(batch, generator=generator).masked_fill(chosen, at)

    return times


_UNIFORM = lambda batch, p_zero, generator: torch.rand(batch, generator=generator)  # noqa: E731
REFLOW_MISTAKES = (
    Mistake("fresh-noise", "reflow_loss",
            "The pairs are coupled: x0 is the noise the teacher started from and x1 where its sampler ended. Fresh "
            "noise makes this plain flow matching again, whose lines from noise to digits cross; use the x0 given.",
            _reflow_with(_times(), fresh_noise=True)),
    Mistake("class-dropped", "reflow_loss",
            "Reflow keeps every class vector: the student learns the teacher's guided map and samples without "
            "guidance, so it needs no unconditional model.",
            _reflow_with(_times(), drop=0.1)),
    Mistake("no-zero-share", "reflow_loss",
            "Put t = 0 in a share p_zero of the draws: a one-step sampler asks the model at t = 0 only. "
            "at_zero = torch.rand(B, generator=generator) < p_zero, then t = torch.rand(B, generator=generator), "
            "t = 0 where at_zero.",
            _reflow_with(_UNIFORM)),
    Mistake("zero-share-inverted", "reflow_loss",
            "at_zero = torch.rand(B, generator=generator) < p_zero: a share p_zero at t = 0, not 1 - p_zero.",
            _reflow_with(_times(zero_if=lambda r, p: r >= p))),
    Mistake("t-at-one", "reflow_loss",
            "The one step starts from the noise, at t = 0 (x_0 = x0), not at the data end t = 1.",
            _reflow_with(_times(at=1.0))),
    Mistake("target-reversed", "reflow_loss",
            "The straight line runs from x0 (t = 0) to x1 (t = 1): its velocity is x1 - x0, not x0 - x1.",
            _reflow_with(_times(), target=lambda x1, x0: x0 - x1)),
    Mistake("sum-not-mean", "reflow_loss",
            "Average the squared errors (F.mse_loss, or .mean()).",
            _reflow_with(_times(), reduce=lambda d: (d**2).sum())),
)
_HINTS = {m.key: m.hint for m in REFLOW_MISTAKES}


def _reflow_run(reflow_loss, batch, p_zero, seed):
    """The learner's loss on `batch` pairs with the stand-in class model: (x1, x0, c, what the model
    saw first: x_t, t, c, a line that names the inputs)."""
    x1, x0, _, c = class_batch(batch, seed)
    inputs = f"p_zero = {p_zero}, a batch of {batch} pairs, generator seed {seed}"
    args = (x1, x0, c, p_zero, torch.Generator().manual_seed(seed))
    _, first = first_model_call(reflow_loss, class_model, args, inputs)
    expect(len(first) == 3, f"the model was called with {len(first)} arguments; it takes (x_t, t, c)", inputs=inputs,
           key="model-args", hint="Call the student as model(x_t, t, c): the teacher's class is its input too.")
    return x1, x0, c, *first, inputs


@check(cases=seeds, examples=3)
def check_reflow_path(reflow_loss, seed):
    """the model sees x_t = (1 - t) x0 + t x1 on the line of each pair, with the x0 given, and t as a (B,) tensor

    Hint: x_t = (1 - t) x0 + t x1 with the pair's own x0 (no new noise) and t reshaped to (B, 1, 1, 1);
    the model takes t itself, shape (B,).
    """
    x1, x0, _, x_seen, t_seen, _, inputs = _reflow_run(reflow_loss, 16, 0.5, seed)
    expect(isinstance(t_seen, torch.Tensor) and t_seen.shape == (16,),
           f"the model was called with t of shape {tuple(getattr(t_seen, 'shape', ()))}, not (16,)", inputs=inputs,
           key="t-shape", hint="Give the model t as drawn, a (B,) tensor; reshape only the copy that multiplies "
           "the images.")
    tt = t_seen.reshape(-1, 1, 1, 1).to(x1.dtype)
    want = (1 - tt) * x0 + tt * x1
    key = "path-reversed" if torch.allclose(x_seen, tt * x0 + (1 - tt) * x1, atol=1e-6) else None
    early = t_seen < 0.9
    if key is None and isinstance(x_seen, torch.Tensor) and x_seen.shape == x0.shape and int(early.sum()) >= 4:
        # the noise each x_t starts from, read back off the line to x1: unrelated to x0 when it was drawn anew
        start = (x_seen - tt * x1)[early] / (1 - tt[early])
        if float(torch.corrcoef(torch.stack([start.flatten(), x0[early].flatten()]))[0, 1]) < 0.5:
            key = "fresh-noise"
    hint = {"path-reversed": "x_t = (1 - t) x0 + t x1: the noise at t = 0, the teacher's digit at t = 1."}.get(
        key, _HINTS.get(key))
    expect_close(x_seen, want, "the model's input against x_t = (1 - t) x0 + t x1 at the t it was given", atol=1e-6,
                 inputs=inputs, hint=hint, key=key)


@check(cases=seeds, examples=2)
def check_reflow_keeps_class(reflow_loss, seed):
    """the model sees every class vector as given: no class dropout

    Hint: Pass c to the model unchanged: model(x_t, t, c).
    """
    _, _, c, _, _, c_seen, inputs = _reflow_run(reflow_loss, 64, 0.5, seed)
    same = isinstance(c_seen, torch.Tensor) and c_seen.shape == c.shape and torch.equal(c_seen.to(c.dtype), c)
    # rows of the right shape but changed: dropped to zeros, or F.dropout's zeros and 1 / (1 - p) in one-hot rows
    dropped = isinstance(c_seen, torch.Tensor) and c_seen.shape == c.shape and not same
    expect(same, "the model did not see the class vectors it was given", inputs=inputs,
           expected="c, (64, 10), every row one-hot", got=f"{tuple(getattr(c_seen, 'shape', ()))}" + (
               f", {int((c_seen.to(c.dtype) != c).any(1).sum())} rows changed, {int((c_seen == 0).all(1).sum())} "
               "of them all zeros" if dropped else ""),
           hint=_HINTS["class-dropped"] if dropped else None, key="class-dropped" if dropped else None)


@check(cases=lambda: st.tuples(st.sampled_from([0.0, 0.5, 1.0, 0.2]), seeds()), examples=4)
def check_reflow_zero_share(reflow_loss, case):
    """t = 0 in a share p_zero of the draws (none at 0, all at 1), the rest uniform on [0, 1)

    Hint: at_zero = torch.rand(B, generator=generator) < p_zero; t = torch.rand(B, generator=generator);
    t = 0 where at_zero.
    """
    p, seed = case
    x1, _, _, _, t_seen, _, inputs = _reflow_run(reflow_loss, 2000, p, seed)
    t_seen = t_seen.double()
    rate, at_one = float((t_seen == 0).double().mean()), float((t_seen == 1).double().mean())
    key = ("t-at-one" if p > 0 and abs(at_one - p) < 0.04 else
           "no-zero-share" if p > 0 and rate == 0 else
           "zero-share-inverted" if abs(p - 0.5) > 0.1 and abs(rate - (1 - p)) < 0.04 else None)
    expect(abs(rate - p) < 0.04, f"{rate:.1%} of the times were t = 0 at p_zero = {p}", inputs=inputs,
           expected=f"about {p:.0%}", got=f"{rate:.1%}" + (f", and {at_one:.1%} at t = 1" if at_one else ""),
           hint=_HINTS.get(key), key=key)
    rest = t_seen[t_seen != 0]
    if rest.numel() >= 500:  # the others: uniform on [0, 1), so in range with mean 1/2 (its sd here is at most 0.013)
        expect(bool(((rest >= 0) & (rest < 1)).all()) and abs(float(rest.mean()) - 0.5) < 0.06,
               f"the times not at 0 are not uniform on [0, 1): mean {float(rest.mean()):.3f}, from "
               f"{float(rest.min()):.3f} to {float(rest.max()):.3f}", inputs=inputs,
               hint="The other times are t ~ U[0, 1): torch.rand(B, generator=generator).")


@check(cases=lambda: st.tuples(seeds(), st.sampled_from([0.0, 0.1, 1.0])), examples=6)
def check_reflow_straight_line(reflow_loss, case):
    """a student whose velocity is each pair's line x1 - x0 plus d has loss mean(d^2): 0 on the straight line

    Hint: L = mean |model(x_t, t, c) - (x1 - x0)|^2: F.mse_loss(model(x_t, t, c), x1 - x0).
    """
    seed, scale = case
    x1, x0, _, c = class_batch(6, seed)
    d = scale * torch.randn(x1.shape, generator=torch.Generator().manual_seed(seed + 7), dtype=x1.dtype)

    def student(x_t, t, c_in):  # knows the pairs in the order given: u = x1 - x0 + d wherever it is asked
        return x1 - x0 + d

    inputs = f"a student u(x_t, t, c) = (x1 - x0) + d with |d| about {scale}, a batch of 6 pairs, seed {seed}"
    loss = call(reflow_loss, student, x1, x0, c, 0.5, torch.Generator().manual_seed(seed), scalar=True,
                inputs=inputs)
    expect_close(loss, (d**2).mean(), "the loss against mean(d^2)", atol=1e-9, inputs=inputs)


@check(cases=lambda: st.tuples(st.sampled_from([0.3, 0.5]), seeds()), examples=4)
def check_reflow_matches(reflow_loss, case):
    """equals minidiff's reflow_example draw for draw (at_zero first, then t, from the generator)

    Hint: Draw at_zero = torch.rand(B, generator=generator) < p_zero, then t = torch.rand(B, generator=generator),
    then t = 0 where at_zero; the flow loss with c as given.
    """
    p, seed = case
    x1, x0, _, c = class_batch(8, seed)
    inputs = f"p_zero = {p}, a batch of 8 pairs, generator seed {seed}"
    loss = call(reflow_loss, class_model, x1, x0, c, p, torch.Generator().manual_seed(seed), scalar=True,
                inputs=inputs)
    want = R.reflow_loss(class_model, x1, x0, c, p, torch.Generator().manual_seed(seed))
    expect_close(loss, want, "the loss", atol=1e-6, inputs=inputs)  # minidiff draws t in float32


class _TinyStudent(nn.Module):
    """u(x, t, c) = conv(x) + w t + a . c: a student with weights, for the gradient check."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 1, 3, padding=1).double()
        self.w = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
        self.a = nn.Parameter(torch.linspace(-1, 1, 10, dtype=torch.float64))

    def forward(self, x, t, c):
        return self.conv(x) + (self.w * t.to(x.dtype) + c.to(x.dtype) @ self.a).reshape(-1, 1, 1, 1)


@check
def check_reflow_gradient(reflow_loss):
    """the loss carries gradients to the student's weights

    Hint: Return the loss as a tensor built from the model's output, so that loss.backward() reaches the weights.
    """
    x1, x0, _, c = class_batch(4, 0)
    args = (x1, x0, c, 1.0, torch.Generator().manual_seed(0))  # p_zero 1: every t is 0, in any order of draws
    expect_same_gradients(reflow_loss, R.reflow_loss, _TinyStudent, args,
                          "p_zero = 1, a 3x3 convolution plus w t + a . c as the model")


B3_1 = exercise(
    "B3.1", "reflow: the flow loss on a teacher's pairs, for one-step sampling", lesson="B3",
    file_name="b3_1_reflow_loss.py",
    checks=(check_reflow_path, check_reflow_keeps_class, check_reflow_zero_share, check_reflow_straight_line,
            check_reflow_matches, check_reflow_gradient),
    mistakes=REFLOW_MISTAKES,
    heading="Reflow: the flow loss on a teacher's pairs", intro="""
        A guided flow model's path from noise to digit bends, so one Euler step lands on a blur.
        Reflow (Liu et al., 2023) straightens it. The teacher (B2.6's model, guided) writes pairs:
        from noise x0 and a class c, the digit x1 its sampler ends at. The student learns the
        straight line between each pair, with a share p_zero of the times at t = 0, where a
        one-step sampler asks:

            t   = 0 with probability p_zero, else t ~ U[0, 1)
            x_t = (1 - t) x0 + t x1,      L = mean | u_theta(x_t, t, c) - (x1 - x0) |^2

        One Euler step x0 + u_theta(x0, 0, c) then lands on the teacher's digit, without guidance.
        """, imports="""
        import torch
        import torch.nn.functional as F
        """, body=f'''
        def reflow_loss(model, x1, x0, c, p_zero, generator):
            """The flow loss on the teacher's pairs (x0, x1), with t = 0 in a share p_zero of the draws.

            model      the student: model(x_t, t, c) -> the velocity; t a (B,) tensor, c (B, 10)
            x1         (B, 1, 28, 28) the teacher's digits, each made from its x0 and class c
            x0         (B, 1, 28, 28) the noise the teacher started each digit from
            c          (B, 10) the one-hot classes the teacher was asked for
            p_zero     the share of times drawn at exactly t = 0 (0.5 in minidiff's recipe)
            generator  a torch.Generator: at_zero = torch.rand(B, generator=generator) < p_zero first,
                       then t = torch.rand(B, generator=generator), and t = 0 where at_zero
            returns    the loss, a 0-d tensor
            """
            # TODO: t with its share of zeros, x_t on each pair's line, the L2 loss to x1 - x0 (no class dropout)
            {NOT_YET}
        ''')
