"""B2.1 Time conditioning: FCBlock and c1 * h + t1. The starter, its checks, known mistakes."""

from __future__ import annotations

import torch
from torch import nn

from minidiff.exercises import reference as R
from minidiff.exercises.b1_blocks import activation_hint, copy_weights
from minidiff.exercises.fixtures import randn, seeds, st
from minidiff.exercises.harness import Mistake, call, check, describe, expect, expect_close
from minidiff.exercises.starters import NOT_YET, exercise
from minidiff.models import mnist

__all__ = ["B2_1"]


def _condition_with(combine):
    def condition(h, t1, c1=None):
        shift = t1[:, :, None, None]
        scale = torch.ones_like(shift) if c1 is None else c1[:, :, None, None]
        return combine(h, scale, shift)

    return condition


CONDITION_MISTAKES = (
    Mistake("scale-and-shift-swapped", "condition",
            "The class embedding c1 scales and the time embedding t1 shifts: c1 * h + t1.",
            _condition_with(lambda h, scale, shift: shift * h + scale)),
    Mistake("shift-before-scale", "condition",
            "Scale first, then shift: c1 * h + t1 (not c1 * (h + t1)).",
            _condition_with(lambda h, scale, shift: scale * (h + shift))),
)


@check
def check_fcblock(FCBlock):
    """FCBlock(F_in, F_out): (B, F_in) -> (B, F_out), Linear, GELU, Linear as in the course

    Hint: FCBlock is nn.Linear(F_in, F_out), nn.GELU(), nn.Linear(F_out, F_out).
    """
    for f_in, f_out in ((1, 8), (10, 6)):
        what = f"FCBlock({f_in}, {f_out})"
        block = call(FCBlock, f_in, f_out, name=what)
        expect(isinstance(block, nn.Module), f"{what} is a {type(block).__name__}, not an nn.Module", key="not-module")
        course = mnist.FCBlock(f_in, f_out)
        x = randn((3, f_in), 0, torch.float32)
        inputs = f"{what} on x of shape (3, {f_in})"
        out = call(block, x, name=what, inputs=inputs)
        expect(isinstance(out, torch.Tensor) and tuple(out.shape) == (3, f_out), f"{what} maps (3, {f_in}) to "
               f"{tuple(getattr(out, 'shape', ()))}", inputs=inputs, expected=f"shape (3, {f_out})", key="fc-shape",
               hint="nn.Linear(F_in, F_out), nn.GELU(), nn.Linear(F_out, F_out).")
        n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (course, block))
        expect(n_theirs == n_ours, f"{what} has {n_theirs} parameters, the course's {n_ours}", inputs=inputs,
               key="fc-params", hint="Two Linear layers with bias: F_in -> F_out, then F_out -> F_out.")
        problem = copy_weights(course, block)
        expect(problem is None, f"the course's weights do not fit {what}: {problem}", inputs=inputs, key="weights")
        with torch.no_grad():
            got = call(block, x, name=what, inputs=inputs)
        activation = activation_hint(block)
        expect_close(got, course(x), f"{what} with the course's weights copied in", atol=1e-6, inputs=inputs,
                     hint=activation[0] if activation else "Linear, then GELU, then Linear.",
                     key=activation[1] if activation else "fc-output")


def _condition_case():
    # C, H and W are drawn apart so that a broadcast over the wrong axis cannot pass by chance
    return st.tuples(st.integers(1, 3), st.integers(2, 4), seeds()).map(
        lambda c: (c[0], c[1], c[1] + 1, c[1] + 3, c[2]))


@check(cases=_condition_case, examples=8)
def check_condition_shift(condition, case):
    """condition(h, t1): adds t1[b, c] to every pixel of channel c of image b

    Hint: t1 is (B, C): reshape it to (B, C, 1, 1) so that it broadcasts over H and W: h + t1[:, :, None, None].
    """
    b, c, hh, ww, seed = case
    h, t1 = randn((b, c, hh, ww), seed), randn((b, c), seed + 1)
    inputs = describe(h=h, t1=t1)
    out = call(condition, h, t1, like=h, like_name="h", inputs=inputs)
    expect_close(out, R.condition(h, t1), "h + t1 over every pixel", atol=1e-9, inputs=inputs)


@check(cases=_condition_case, examples=10)
def check_condition_scale(condition, case):
    """condition(h, t1, c1) = c1 * h + t1, per channel (the class-conditioned UNet)

    Hint: Reshape c1 and t1 to (B, C, 1, 1): c1[:, :, None, None] * h + t1[:, :, None, None].
    """
    b, c, hh, ww, seed = case
    h, t1, c1 = randn((b, c, hh, ww), seed), randn((b, c), seed + 1), randn((b, c), seed + 2)
    inputs = describe(h=h, t1=t1, c1=c1)
    out = call(condition, h, t1, c1, like=h, like_name="h", inputs=inputs)
    expect_close(out, R.condition(h, t1, c1), "c1 * h + t1", atol=1e-9, inputs=inputs)


B2_1 = exercise(
    "B2.1", "time conditioning: FCBlock and c1 * h + t1", lesson="B2.3", file_name="b2_1_fcblock.py",
    checks=(check_fcblock, check_condition_shift, check_condition_scale), mistakes=CONDITION_MISTAKES,
    heading="Time (and class) conditioning", intro="""
        The time-conditioned UNet embeds the scalar t in [0, 1] with two FCBlocks (Linear,
        GELU, Linear) and adds the embeddings to the decoder: after Unflatten, and after the
        first UpBlock,

            h <- h + t1,          t1 = fc1_t(t),  a (B, C) vector per image

        The class-conditioned UNet (B2.4) also scales by an embedding c1 of the class vector:
        h <- c1 * h + t1. Each (B, C) vector acts on every pixel of its channel.
        """, imports="""
        import torch
        from torch import nn
        """, body=f'''
        class FCBlock(nn.Module):
            """Linear(in_features, out_features), GELU, Linear(out_features, out_features).

            (B, in_features) -> (B, out_features)
            """

            def __init__(self, in_features, out_features):
                super().__init__()
                # TODO: the three layers (nn.Sequential is the shortest way)
                {NOT_YET}

            def forward(self, x):
                # TODO: apply the layers (or make the class an nn.Sequential and delete this method)
                {NOT_YET}


        def condition(h, t1, c1=None):
            """c1 * h + t1 with the (B, C) vectors acting on every pixel; h + t1 when c1 is None.

            h        (B, C, H, W) a feature map of the decoder
            t1       (B, C) the time embedding (a shift)
            c1       (B, C) the class embedding (a scale), or None for the time-only UNet
            returns  (B, C, H, W), h's shape and dtype
            """
            # TODO: reshape to (B, C, 1, 1) and broadcast
            {NOT_YET}
        ''')
