# %% [markdown]
# # A1.8 Visual anagrams (Geng et al., 2024): one image, two readings
#
# At each step, denoise $x_t$ as prompt A, and the flipped image $v(x_t)$ as prompt B, flip that
# prediction back, and average:
#
# $$\hat\epsilon = \tfrac12\Big(\hat\epsilon_A(x_t) + v^{-1}\big(\hat\epsilon_B(v(x_t))\big)\Big),$$
#
# where $\hat\epsilon_A$ and $\hat\epsilon_B$ are the guided estimates for each prompt. Any orthogonal view $v$
# works (flips, rotations, negation, pixel permutations): the "other views" figure uses a quarter
# turn, negation and a jigsaw. With IF stage II on this machine, each anagram is also upscaled to
# 256 x 256 with the same rule at stage II, so the illusion holds at full size.

# %%
"""A1.8 Visual anagrams (Geng et al., 2024): one image, two readings.

At each step, denoise x_t as prompt A, and the flipped image view(x_t) as prompt B,
flip that prediction back, and average:

    eps = ( cfg(x_t, A) + view^-1( cfg(view(x_t), B) ) ) / 2

Any orthogonal view works (flips, rotations, negation, pixel permutations): the
"other views" figure uses a quarter turn, negation and a jigsaw.

With IF stage II on this machine, each anagram is also upscaled to 256 x 256 with the
same rule at stage II (each view applied to x_t and to the 64 x 64 image it sees), so
the illusion holds at full size.
"""

import torch

from minidiff.course import IF_PROMPTS, LessonContext, part_a
from minidiff.guidance import anagram
from minidiff.samplers import iterative_denoise
from minidiff.views import get_view


def make(ctx: LessonContext, a, view, first, second, seed: int) -> torch.Tensor:
    den = anagram(a.model, [(get_view("identity"), a.cond(*first)), (view, a.cond(*second))], a.uncond(),
                  a.guidance_scale)
    if "anagram_eps" in ctx.use:
        # --use FILE: the learner's anagram_eps(predict_a, predict_b, x_t, view, inverse) (exercise A1.8)
        from minidiff.exercises.lesson_use import anagram_denoiser

        den = anagram_denoiser(a.model, view, a.cond(*first), a.cond(*second), a.uncond(), a.guidance_scale,
                               ctx.use["anagram_eps"])
    return iterative_denoise(den, a.noise(1, ctx.generator(seed)), a.schedule, a.timesteps,
                             generator=ctx.generator(seed + 1), progress=ctx.progress)


def upscale(ctx: LessonContext, a, view, first, second, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The anagram x at 256 x 256 by IF stage II, guided by the anagram rule with the same views and prompts."""
    conds = torch.cat([a.cond(*first), a.cond(*second)])
    return a.upscale(x, conds, a.uncond(), views=[get_view("identity"), view], generator=ctx.generator(seed + 2))


OPTIONS = ("guidance", "use")  # the optional flags this lesson reads (see minidiff.lessons_index)
USES = ("anagram_eps",)  # what --use FILE draws this lesson with: the learner's functions of these names


# %% [markdown]
# `run` samples anagrams of prompt pairs (an old man and people around a campfire; on MNIST a 4 that
# reads as a 7 upside down; two more pairs outside quick mode) with the vertical flip, and saves each
# beside its flipped self: `anagrams_flip.png`. Outside quick mode it then makes the first pair with a
# quarter turn, negation and a jigsaw: `anagrams_other_views.png`. With `USE`, your
# `anagram_eps(predict_a, predict_b, x_t, view, inverse)` of exercise A1.8 combines the estimates.


# %%
def run(ctx: LessonContext) -> None:
    a = part_a(ctx)
    # MNIST pairs are chosen so the answer is not trivial: a flipped 4 is not a 7.
    pairs = [((IF_PROMPTS["old_man"], 4), (IF_PROMPTS["campfire"], 7))]
    if not ctx.quick:
        pairs += [((IF_PROMPTS["skull"], 3), (IF_PROMPTS["waterfalls"], 1)),
                  ((IF_PROMPTS["dog"], 2), (IF_PROMPTS["man"], 5))]
    flip = get_view("flip")
    rows, titles, big_rows = [], [], []
    for k, (first, second) in enumerate(pairs):
        x = make(ctx, a, flip, first, second, 10 * k)
        rows.append([x, flip(x)])
        titles.append([a.label(*first), f"flipped: {a.label(*second)}"])
        if a.upscale is not None:
            big = upscale(ctx, a, flip, first, second, x, 10 * k)
            big_rows.append([big, flip(big)])
    ctx.save_rows("anagrams_flip.png", rows, titles, value_range=a.value_range, cell=2.2)
    if big_rows:
        ctx.save_rows("anagrams_flip_256.png", big_rows, titles, value_range=a.value_range, cell=2.8,
                      suptitle="upscaled to 256 x 256 by stage II, with the same views")

    others = [] if ctx.quick else ["rot90", "negate", "jigsaw"]
    rows, titles, big_rows = [], [], []
    for k, name in enumerate(others):
        view = get_view(name, **({"pieces": 4} if name == "jigsaw" else {}))
        first, second = pairs[0]
        x = make(ctx, a, view, first, second, 100 + 10 * k)
        rows.append([x, view(x)])
        titles.append([a.label(*first), f"{name}: {a.label(*second)}"])
        if a.upscale is not None:
            big = upscale(ctx, a, view, first, second, x, 100 + 10 * k)
            big_rows.append([big, view(big)])
    if rows:
        ctx.save_rows("anagrams_other_views.png", rows, titles, value_range=a.value_range, cell=2.2)
    if big_rows:
        ctx.save_rows("anagrams_other_views_256.png", big_rows, titles, value_range=a.value_range, cell=2.8,
                      suptitle="upscaled to 256 x 256 by stage II, with the same views")


# %%
if __name__ == "__main__":
    from minidiff.cli import lesson_script as main

    main(run, __doc__)
