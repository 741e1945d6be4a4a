"""B2.4 Class conditioning with unconditional dropout and B2.6 sampling with classifier-free
guidance: starters, checks, known mistakes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minidiff.exercises import reference as R
from minidiff.exercises.b2_flow import flow_batch
from minidiff.exercises.fixtures import FLOW, SpyModel, first_model_call, labelled_model, randn, seeds, st
from minidiff.exercises.harness import Mistake, call, check, expect, expect_close
from minidiff.exercises.starters import NOT_YET, exercise

__all__ = ["B2_4", "B2_6", "class_batch", "class_model"]


# ========================================================================================
# B2.4 Class conditioning with unconditional dropout
# ========================================================================================


def class_batch(batch, seed, k=10):
    """(x1, x0, t, c): flow_batch's 3 x 3 digits, noise and times, and one-hot classes 0, 1, ..., k - 1, 0, ..."""
    x1, x0, t = flow_batch(batch, seed, side=3)
    labels = torch.arange(batch) % k
    return x1, x0, t, F.one_hot(labels, k).double()


def class_model(x, t, c):
    """A stand-in class-conditional velocity: u = 0.3 x_t + t + 0.1 (class index + 1), 0 for no class."""
    idx = (c * torch.arange(1, c.shape[1] + 1, dtype=c.dtype)).sum(1)
    return 0.3 * x + (t.to(x.dtype) + 0.1 * idx.to(x.dtype)).reshape(-1, 1, 1, 1)


def _class_run(class_flow_loss, batch, p, seed):
    x1, x0, t, c = class_batch(batch, seed)
    inputs = f"p_uncond = {p}, a batch of {batch}, generator seed {seed}"
    args = (x1, c, x0, t, p, torch.Generator().manual_seed(seed))
    loss, first = first_model_call(class_flow_loss, class_model, args, inputs)
    x_seen, t_seen, c_seen = first[:3]
    return x1, x0, t, c, loss, x_seen, t_seen, c_seen, inputs


@check(cases=seeds, examples=2)
def check_class_keeps_images(class_flow_loss, seed):
    """the model sees every x_t = (1 - t) x0 + t x1, whichever classes are dropped

    Hint: Dropout acts on the class vector only: the image batch goes to the model whole.
    """
    x1, x0, t, c, _, x_seen, _, _, inputs = _class_run(class_flow_loss, 64, 0.5, seed)
    tt = t.reshape(-1, 1, 1, 1)
    want = (1 - tt) * x0 + tt * x1
    zeroed = bool((x_seen.flatten(1).abs().sum(1) == 0).any())
    expect_close(x_seen, want, "the images the model saw against x_t", atol=1e-9, inputs=inputs,
                 hint="Drop the class, not the image: zero rows of c (c * keep), and give the model every x_t."
                 if zeroed else None, key="zeroes-image" if zeroed else None)


@check(cases=seeds, examples=2)
def check_class_drops_rows(class_flow_loss, seed):
    """each class vector is kept whole or replaced by zeros

    Hint: c_in = c * keep[:, None] with keep a (B,) mask of 0 and 1: a row is one-hot or all zeros.
    """
    _, _, _, c, _, _, _, c_seen, inputs = _class_run(class_flow_loss, 64, 0.5, seed)
    expect(isinstance(c_seen, torch.Tensor) and c_seen.shape == c.shape, f"the model saw a class input of shape "
           f"{tuple(getattr(c_seen, 'shape', ()))}, not the (B, 10) class vectors", inputs=inputs, key="c-shape")
    kept = (c_seen == c).all(1)
    dropped = (c_seen == 0).all(1)
    entrywise = bool(((c_seen != 0) & (c_seen != c)).any()) or bool((~kept & ~dropped).any())
    expect(bool((kept | dropped).all()), "some class vectors were neither kept nor all zeros", inputs=inputs,
           expected="rows equal to c or all zeros", got=_show_rows(c_seen, ~(kept | dropped)),
           hint="Drop whole rows: keep = (torch.rand(B, generator=generator) >= p_uncond), c * keep[:, None]. "
                "F.dropout drops single entries and scales the others by 1 / (1 - p).",
           key="entrywise-dropout" if entrywise else None)


def _show_rows(c: torch.Tensor, bad: torch.Tensor) -> str:
    return f"rows such as {c[bad][:2].tolist()}"


@check(cases=lambda: st.tuples(st.sampled_from([0.0, 0.1, 1.0, 0.3]), seeds()), examples=4)
def check_class_rate(class_flow_loss, case):
    """drops a class vector with probability p_uncond: none at 0, all at 1, about p in between

    Hint: keep = torch.rand(B, generator=generator) >= p_uncond: each row dropped with probability p_uncond.
    """
    p, seed = case
    _, _, _, c, _, _, _, c_seen, inputs = _class_run(class_flow_loss, 2000, p, seed)
    rate = float((c_seen == 0).all(1).double().mean())
    inverted = abs(rate - (1 - p)) < 0.04 and abs(p - 0.5) > 0.1
    expect(abs(rate - p) < 0.04, f"{rate:.1%} of the class vectors were dropped at p_uncond = {p}", inputs=inputs,
           expected=f"about {p:.0%}", got=f"{rate:.1%}",
           hint="Drop with probability p_uncond and keep with 1 - p_uncond: keep = rand >= p_uncond."
           if inverted else None, key="inverted-keep" if inverted else None)


@check(cases=seeds, examples=3)
def check_class_loss_value(class_flow_loss, seed):
    """L = mean |u_theta(x_t, t, c) - (x1 - x0)|^2 with the class vectors the model saw

    Hint: The loss is B2.2's flow loss, with the (partly dropped) class vectors passed to the model.
    """
    x1, x0, t, _, loss, x_seen, t_seen, c_seen, inputs = _class_run(class_flow_loss, 16, 0.3, seed)
    want = F.mse_loss(class_model(x_seen, t_seen, c_seen), x1 - x0)
    reversed_target = bool(torch.allclose(loss, F.mse_loss(class_model(x_seen, t_seen, c_seen), x0 - x1)))
    expect_close(loss, want, "the loss", atol=1e-9, inputs=inputs,
                 hint="The target is the path's velocity x1 - x0, as in B2.2." if reversed_target else None,
                 key="target-reversed" if reversed_target else None)


@check(cases=lambda: st.tuples(st.sampled_from([0.1, 0.5]), seeds()), examples=4)
def check_class_matches(class_flow_loss, case):
    """equals minidiff's recipe draw for draw (keep = torch.rand(B, generator=generator) >= p_uncond)

    Hint: Draw keep with one torch.rand(B, generator=generator) call, then drop, then the flow loss.
    """
    p, seed = case
    x1, x0, t, c = class_batch(8, seed)
    inputs = f"p_uncond = {p}, a batch of 8, generator seed {seed}"
    loss = call(class_flow_loss, class_model, x1, c, x0, t, p, torch.Generator().manual_seed(seed), scalar=True,
                inputs=inputs)
    want = R.class_flow_loss(class_model, x1, c, x0, t, p, torch.Generator().manual_seed(seed))
    expect_close(loss, want, "the loss", atol=1e-9, inputs=inputs)


B2_4 = exercise(
    "B2.4", "class conditioning: the flow loss with unconditional dropout", lesson="B2.6",
    file_name="b2_4_class_flow_loss.py",
    checks=(check_class_keeps_images, check_class_drops_rows, check_class_rate, check_class_loss_value,
            check_class_matches),
   
    heading="Class conditioning with unconditional dropout", intro="""
        The class-conditioned UNet also takes the digit's class as a one-hot vector c (B, 10).
        For classifier-free guidance it must learn the unconditional model too: in training,
        each class vector is replaced by the zero vector with probability p_uncond = 0.1,

            keep  = (r >= p_uncond),  r ~ U[0, 1) per digit
            L     = mean | u_theta(x_t, t, c * keep) - (x1 - x0) |^2
        """, imports="""
        import torch
        import torch.nn.functional as F
        """, body=f'''
        def class_flow_loss(model, x1, c, x0, t, p_uncond, generator):
            """The flow-matching loss of B2.2 with the class vectors dropped to zero at rate p_uncond.

            model      the UNet: model(x_t, t, c) -> the velocity; t a (B,) tensor, c (B, 10)
            x1         (B, 1, 28, 28) digits (the data, at t = 1)
            c          (B, 10) their one-hot class vectors
            x0         (B, 1, 28, 28) the N(0, I) noise (at t = 0)
            t          (B,) times in [0, 1]
            p_uncond   the probability of dropping a digit's class vector (0.1 in the course)
            generator  a torch.Generator: draw keep = torch.rand(B, generator=generator) >= p_uncond
            returns    the loss, a 0-d tensor
            """
            # TODO: drop whole class vectors, then the flow loss
            {NOT_YET}
        ''')


# ========================================================================================
# B2.6 Sampling with classifier-free guidance
# ========================================================================================


def _cfg_sample_with(combine, uncond_of=torch.zeros_like):
    def cfg_flow_sample(model, x0, c, num_steps, guidance_scale):
        x = x0
        for i in range(num_steps):
            t = torch.full((x.shape[0],), i / num_steps, dtype=torch.float32)
            v_c, v_u = model(x, t, c), model(x, t, uncond_of(c))
            x = x + (1 / num_steps) * combine(v_u, v_c, guidance_scale)
        return x

    return cfg_flow_sample


CFG_SAMPLE_MISTAKES = (
    Mistake("difference-reversed", "cfg_flow_sample",
            "v = v_uncond + s (v_cond - v_uncond): from the unconditional velocity towards the conditional one.",
            _cfg_sample_with(lambda u, c, s: c + s * (u - c))),
    Mistake("scale-on-cond-only", "cfg_flow_sample",
            "Scale the difference: v = v_uncond + s (v_cond - v_uncond); s = 1 is the conditional model.",
            _cfg_sample_with(lambda u, c, s: u + s * c)),
)


@check
def check_cfg_sample_calls(cfg_flow_sample):
    """asks the model for v_cond with c and v_uncond with the zero class vector, at t = i / N

    Hint: At each step: v_c = model(x, t, c), v_u = model(x, t, torch.zeros_like(c)), t a (B,) tensor of i / N.
    """
    spy = SpyModel(labelled_model(FLOW)[2])
    c = F.one_hot(torch.tensor([0, 1]), 2).double()
    x0 = randn((2, 1, 8, 8), 1)
    inputs = "num_steps = 3, classes [0, 1], guidance_scale = 2"
    call(cfg_flow_sample, spy, x0, c, 3, 2.0, like=x0, like_name="x0", inputs=inputs)
    conds = [call_args[2] for call_args in spy.calls]
    zero_rows = sum(int((cc == 0).all(1).sum()) for cc in conds)
    cond_rows = sum(int(((cc[:, None, :] == c[None]).all(-1).any(1) & (cc != 0).any(1)).sum()) for cc in conds)
    expect(zero_rows >= 2 * 3, f"the model saw the zero class vector {zero_rows} times in 3 steps of 2 images",
           inputs=inputs, expected="2 images x 3 steps = 6 unconditional rows", got=f"{zero_rows}",
           key="uncond-not-zero", hint="The unconditional velocity is the model's with the class vector set to zeros: "
                "model(x, t, torch.zeros_like(c)), the input it learned with p_uncond.")
    expect(cond_rows >= 2 * 3, f"the model saw the asked class vectors {cond_rows} times in 3 steps of 2 images",
           inputs=inputs, key="cond-missing", hint="The conditional velocity is model(x, t, c).")
    times = sorted({round(float(call_args[1].reshape(-1)[0]), 6) for call_args in spy.calls})
    expect(times == [0.0, round(1 / 3, 6), round(2 / 3, 6)], f"the model was called at t = {times}", inputs=inputs,
           expected="t = [0, 1/3, 2/3]", key="times", hint="t_i = i / N for i = 0, ..., N - 1, as in B2.3.")


@check(cases=lambda: st.tuples(st.integers(1, 8), seeds()), examples=5)
def check_cfg_sample_scale_one(cfg_flow_sample, case):
    """guidance_scale 1 is plain conditional Euler (B2.3 on model(x, t, c))

    Hint: v = v_u + s (v_c - v_u) is v_c at s = 1.
    """
    n, seed = case
    model = labelled_model(FLOW, seed % 5)[2]
    c = F.one_hot(torch.tensor([1, 0, 1]), 2).double()
    x0 = randn((3, 1, 8, 8), seed)
    inputs = f"num_steps = {n}, guidance_scale = 1, classes [1, 0, 1]"
    out = call(cfg_flow_sample, model, x0, c, n, 1.0, like=x0, like_name="x0", inputs=inputs)
    want = R.flow_sample(lambda x, t: model(x, t, c), x0, n)
    expect_close(out, want, "the sample against conditional Euler", atol=1e-6, inputs=inputs)


@check(cases=seeds, examples=2)
def check_cfg_sample_classes(cfg_flow_sample, seed):
    """guided samples of an exact class-conditional model end on images of their own class

    Hint: CFG pushes each sample towards its class: v = v_uncond + s (v_cond - v_uncond) with s > 1.
    """
    data, labels, model = labelled_model(FLOW, seed % 5)
    want_class = torch.tensor([0, 1, 0, 1, 0, 1])
    c = F.one_hot(want_class, 2).double()
    x0 = randn((6, 1, 8, 8), seed)
    inputs = "num_steps = 32, guidance_scale = 2, classes [0, 1, 0, 1, 0, 1]"
    out = call(cfg_flow_sample, model, x0, c, 32, 2.0, like=x0, like_name="x0", inputs=inputs)
    nearest = torch.cdist(out.flatten(1), data.flatten(1)).argmin(1)
    expect(bool((labels[nearest] == want_class).all()), "some samples are nearest an image of the other class",
           inputs=inputs, expected=f"classes {want_class.tolist()}", got=f"classes {labels[nearest].tolist()}")
    expect_close(out, data[nearest], "the samples against their nearest data images", atol=0.05, inputs=inputs)


@check(cases=lambda: st.tuples(st.integers(1, 8), seeds(), st.floats(0, 5)), examples=8)
def check_cfg_sample_matches(cfg_flow_sample, case):
    """equals minidiff's flow_euler driven by cfg(model, c, zeros, scale)

    Hint: x <- x + (1 / N) (v_u + s (v_c - v_u)) at t_i = i / N.
    """
    n, seed, scale = case
    model = labelled_model(FLOW, seed % 5)[2]
    c = F.one_hot(torch.tensor([1, 0]), 2).double()
    x0 = randn((2, 1, 8, 8), seed)
    inputs = f"num_steps = {n}, guidance_scale = {scale:.3g}, classes [1, 0]"
    out = call(cfg_flow_sample, model, x0, c, n, scale, like=x0, like_name="x0", inputs=inputs)
    expect_close(out, R.cfg_flow_sample(model, x0, c, n, scale), "the sample", atol=1e-5, inputs=inputs)


B2_6 = exercise(
    "B2.6", "sampling with classifier-free guidance (flow, Euler)", lesson="B2.6", file_name="b2_6_cfg_flow_sample.py",
    checks=(check_cfg_sample_calls, check_cfg_sample_scale_one, check_cfg_sample_classes, check_cfg_sample_matches),
    mistakes=CFG_SAMPLE_MISTAKES,
    heading="Sampling with classifier-free guidance", intro="""
        The class-conditioned flow model is sampled with Euler (B2.3) on the guided velocity

            v = v_uncond + s (v_cond - v_uncond),
            v_cond = model(x, t, c),   v_uncond = model(x, t, 0)     (the course: s = 5)

        where the zero class vector is the "no class" input the model learned with p_uncond.
        """, imports="import torch", body=f'''
        def cfg_flow_sample(model, x0, c, num_steps, guidance_scale):
            """Euler from t = 0 to 1 on the guided velocity v_u + s (v_c - v_u).

            model           the UNet: model(x_t, t, c) -> velocity; t a (B,) tensor, c (B, K)
            x0              (B, 1, 28, 28) the starting noise
            c               (B, K) one-hot class vectors (K = 10 for digits)
            num_steps       N, the number of Euler steps, at t_i = i / N
            guidance_scale  s
            returns         the samples at t = 1, x0's shape and dtype
            """
            # TODO: at each step both velocities, their guided mix, an Euler step
            {NOT_YET}
        ''')
