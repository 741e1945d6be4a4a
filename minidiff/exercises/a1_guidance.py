"""The rules that combine noise estimates (``minidiff.guidance``): A1.6 classifier-free
guidance, A1.8 visual anagrams, A1.9 hybrid images. Starters, checks, known mistakes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minidiff import guidance
from minidiff.analytic import finite_data_model
from minidiff.exercises import reference as R
from minidiff.exercises.fixtures import IF, image_shapes, labelled_model, pm_one_data, randn, seeds, st, timesteps_for
from minidiff.exercises.harness import Mistake, call, check, describe, expect_close
from minidiff.exercises.starters import NOT_YET, exercise
from minidiff.filters import gaussian_blur
from minidiff.samplers import iterative_denoise as lib_iterative_denoise
from minidiff.views import get_view

__all__ = ["A1_6", "A1_8", "A1_9"]


# ========================================================================================
# A1.6 Classifier-free guidance
# ========================================================================================


CFG_MISTAKES = (
    Mistake("difference-reversed", "cfg_eps",
            "The guidance direction is eps_cond - eps_uncond, from the unconditional prediction towards the "
            "conditional one: eps = eps_uncond + scale (eps_cond - eps_uncond).",
            lambda u, c, s: c + s * (u - c)),
    Mistake("scale-on-cond-only", "cfg_eps",
            "Scale the difference, not eps_cond alone: eps = eps_uncond + scale (eps_cond - eps_uncond). At scale 1 "
            "that is eps_cond.",
            lambda u, c, s: u + s * c),
    Mistake("other-convention", "cfg_eps",
            "This course's scale starts from the unconditional prediction: eps_uncond + scale (eps_cond - "
            "eps_uncond), so scale 1 is eps_cond and scale 0 is eps_uncond (the w + 1 convention of Ho & "
            "Salimans starts from eps_cond instead).",
            lambda u, c, s: c + s * (c - u)),
)


def _eps_pair(shape, seed):
    return randn(shape, seed), randn(shape, seed + 1)


@check(cases=lambda: st.tuples(image_shapes(), seeds()), examples=10)
def check_cfg_ends(cfg_eps, case):
    """scale 1 gives eps_cond, scale 0 gives eps_uncond

    Hint: eps = eps_uncond + scale (eps_cond - eps_uncond): at scale 1 the conditional prediction, at 0 the
    unconditional one.
    """
    shape, seed = case
    e_u, e_c = _eps_pair(shape, seed)
    for scale, want, name in ((1.0, e_c, "eps_cond"), (0.0, e_u, "eps_uncond")):
        inputs = f"scale = {scale}, " + describe(eps_uncond=e_u, eps_cond=e_c)
        out = call(cfg_eps, e_u, e_c, scale, like=e_c, like_name="eps_cond", inputs=inputs)
        expect_close(out, want, f"at scale {scale:g} the result should be {name}", atol=1e-9, inputs=inputs)


@check(cases=lambda: st.tuples(image_shapes(), seeds(), st.floats(-2, 10)), examples=25)
def check_cfg_matches(cfg_eps, case):
    """eps_uncond + scale (eps_cond - eps_uncond) for any scale (minidiff's cfg)

    Hint: eps = eps_uncond + scale * (eps_cond - eps_uncond).
    """
    shape, seed, scale = case
    e_u, e_c = _eps_pair(shape, seed)
    inputs = f"scale = {scale:.4g}, " + describe(eps_uncond=e_u, eps_cond=e_c)
    out = call(cfg_eps, e_u, e_c, scale, like=e_c, like_name="eps_cond", inputs=inputs)
    expect_close(out, R.cfg_eps(e_u, e_c, scale), "the guided noise estimate", atol=1e-9, inputs=inputs)


@check(cases=lambda: st.tuples(st.integers(0, 1), seeds()), examples=3)
def check_cfg_guides(cfg_eps, case):
    """guided sampling with an exact class-conditional model ends on images of the asked class

    Hint: A guided denoiser is eps_uncond + scale (eps_cond - eps_uncond); with scale > 1 it pushes towards the class.
    """
    k, seed = case
    data, labels, model = labelled_model(IF)
    null = torch.zeros(1, 2, dtype=torch.float64)
    cond = F.one_hot(torch.tensor([k]), 2).double()

    def den(x, t):
        e_u, e_c = model(x, t, null.expand(x.shape[0], 2)), model(x, t, cond.expand(x.shape[0], 2))
        return call(cfg_eps, e_u, e_c, 3.0, like=e_c, like_name="eps_cond", inputs=f"class {k}, scale 3")

    ts = timesteps_for(IF, 90)
    out = lib_iterative_denoise(den, randn((6, 1, 8, 8), seed), IF, ts,
                                generator=torch.Generator().manual_seed(seed), progress=False)
    members = data[labels == k]
    nearest = members[torch.cdist(out.flatten(1), members.flatten(1)).argmin(1)]
    expect_close(out, nearest, f"samples guided to class {k} against the nearest image of class {k}", atol=1e-3,
                 inputs=f"class {k}, scale 3, 6 samples, timesteps {ts}")


A1_6 = exercise(
    "A1.6", "classifier-free guidance of the noise estimate", lesson="A1.6", file_name="a1_6_cfg_eps.py",
    checks=(check_cfg_ends, check_cfg_matches, check_cfg_guides), mistakes=CFG_MISTAKES,
    heading="Classifier-free guidance", intro="""
        One model, asked twice: with the prompt (eps_cond) and with the empty prompt (eps_uncond).
        Going past the conditional prediction, away from the unconditional one, trades variety
        for fidelity to the prompt (Ho & Salimans, 2022):

            eps = eps_uncond + scale (eps_cond - eps_uncond)         (IF: scale = 7)
        """, imports="import torch", body=f'''
        def cfg_eps(eps_uncond, eps_cond, scale):
            """The guided noise estimate eps_uncond + scale (eps_cond - eps_uncond).

            eps_uncond  (B, C, H, W) the model's prediction with the empty prompt
            eps_cond    (B, C, H, W) its prediction with the prompt
            scale       the guidance scale, a float (1: the prompt alone, 0: no prompt)
            returns     (B, C, H, W), eps_cond's shape and dtype
            """
            # TODO: one line
            {NOT_YET}
        ''')


# ========================================================================================
# A1.8 Visual anagrams
# ========================================================================================


VIEWS = {"flip": {}, "rot90": {}, "hflip": {}, "rot270": {}, "negate": {}, "patch_permute": {"patch_size": 4}}


def _predictor(model, k: int, t: int = 400, scale: float = 2.0):
    """predict(x): the CFG noise estimate of class k at timestep t, for a batch of any size."""
    rule = guidance.cfg(model, F.one_hot(torch.tensor([k]), 2).double(), torch.zeros(1, 2, dtype=torch.float64), scale)
    return lambda x: rule(x, torch.full((x.shape[0],), t))


def _anagram_with(combine):
    def anagram_eps(predict_a, predict_b, x_t, view, inverse):
        return combine(predict_a, predict_b, x_t, view, inverse)

    return anagram_eps


ANAGRAM_MISTAKES = (
    Mistake("sum-not-mean", "anagram_eps",
            "Average the two predictions, (eps_a + eps_b) / 2: their sum is a noise estimate twice too large.",
            _anagram_with(lambda pa, pb, x, v, i: pa(x) + i(pb(v(x))))),
    Mistake("not-inverted", "anagram_eps",
            "Map the viewed prediction back with the inverse: eps_b = inverse(predict_b(view(x_t))). Without it, "
            "eps_b is the noise of the viewed image, in the wrong place for x_t.",
            _anagram_with(lambda pa, pb, x, v, i: (pa(x) + pb(v(x))) / 2)),
    Mistake("view-not-applied", "anagram_eps",
            "Show prompt B the viewed image: eps_b = inverse(predict_b(view(x_t))).",
            _anagram_with(lambda pa, pb, x, v, i: (pa(x) + i(pb(x))) / 2)),
    Mistake("inverse-first", "anagram_eps",
            "The view goes first and the inverse last: inverse(predict_b(view(x_t))). For a flip they are the same "
            "map; for a quarter turn they are not.",
            _anagram_with(lambda pa, pb, x, v, i: (pa(x) + v(pb(i(x)))) / 2)),
)


def _anagram_case():
    return st.tuples(st.sampled_from(list(VIEWS)), st.integers(1, 3), seeds())


def _view(name):
    v = get_view(name, **VIEWS[name])
    return v.view, v.inverse


@check(cases=_anagram_case, examples=6)
def check_anagram_identity(anagram_eps, case):
    """with one prompt and the identity view, it is that prompt's prediction

    Hint: eps = (predict_a(x_t) + inverse(predict_b(view(x_t)))) / 2: the mean of two estimates, not their sum.
    """
    _, batch, seed = case
    p = _predictor(labelled_model(IF, seed % 5)[2], 0)
    x = randn((batch, 1, 8, 8), seed)
    same = lambda y: y  # noqa: E731
    inputs = "predict_a = predict_b, view = inverse = identity, " + describe(x_t=x)
    out = call(anagram_eps, p, p, x, same, same, like=x, like_name="x_t", inputs=inputs)
    expect_close(out, p(x), "the result against predict_a(x_t)", atol=1e-9, inputs=inputs)


@check(cases=_anagram_case, examples=12)
def check_anagram_maps_back(anagram_eps, case):
    """when prompt B's images are prompt A's seen through the view, the anagram is prompt A's prediction

    Hint: eps_b = inverse(predict_b(view(x_t))): show prompt B the viewed image and map its prediction back.
    """
    name, batch, seed = case
    view, inverse = _view(name)
    a = pm_one_data(3, seed % 5)
    data, labels = torch.cat([a, view(a)]), torch.tensor([0, 0, 0, 1, 1, 1])
    model = finite_data_model(data, IF, labels, 2)
    # scale 1: the conditional predictions alone (the unconditional set {A, view(A)} is not
    # mapped onto itself by a view that is not its own inverse, such as a quarter turn)
    pa, pb = _predictor(model, 0, scale=1.0), _predictor(model, 1, scale=1.0)
    x = randn((batch, 1, 8, 8), seed)
    inputs = f"view = {name}, class B = view(class A), " + describe(x_t=x)
    out = call(anagram_eps, pa, pb, x, view, inverse, like=x, like_name="x_t", inputs=inputs)
    expect_close(out, pa(x), "the result against predict_a(x_t)", atol=1e-8, inputs=inputs)


@check(cases=_anagram_case, examples=10)
def check_anagram_matches(anagram_eps, case):
    """equals minidiff's anagram rule for two unrelated prompts

    Hint: eps = (predict_a(x_t) + inverse(predict_b(view(x_t)))) / 2.
    """
    name, batch, seed = case
    view, inverse = _view(name)
    model = labelled_model(IF, seed % 5)[2]
    pa, pb = _predictor(model, 0), _predictor(model, 1)
    x = randn((batch, 1, 8, 8), seed)
    inputs = f"view = {name}, " + describe(x_t=x)
    out = call(anagram_eps, pa, pb, x, view, inverse, like=x, like_name="x_t", inputs=inputs)
    expect_close(out, R.anagram_eps(pa, pb, x, view, inverse), "the anagram's noise estimate", atol=1e-8,
                 inputs=inputs)


A1_8 = exercise(
    "A1.8", "visual anagrams: one image, a second prompt under a view", lesson="A1.8", file_name="a1_8_anagram_eps.py",
    checks=(check_anagram_identity, check_anagram_maps_back, check_anagram_matches), mistakes=ANAGRAM_MISTAKES,
    heading="Visual anagrams", intro="""
        One image that reads as prompt A as it is and as prompt B upside down (Geng et al.,
        2024). At every step, the noise estimate averages prompt A's on x_t and prompt B's on
        the viewed image, mapped back:

            eps = ( eps_A(x_t) + view^-1( eps_B( view(x_t) ) ) ) / 2

        This works for views that keep Gaussian noise Gaussian: flips, rotations, pixel shuffles.
        """, imports="import torch", body=f'''
        def anagram_eps(predict_a, predict_b, x_t, view, inverse):
            """The anagram's noise estimate (predict_a(x_t) + inverse(predict_b(view(x_t)))) / 2.

            predict_a   callable: predict_a(x) -> the guided noise estimate of prompt A for images x
                        (at the current timestep), x's shape
            predict_b   the same for prompt B
            x_t         (B, C, H, W) the current noisy images
            view        callable on (B, C, H, W) images, e.g. an upside-down flip: x.flip(-2)
            inverse     its inverse: inverse(view(x)) == x
            returns     (B, C, H, W), x_t's shape and dtype
            """
            # TODO: prompt A on x_t; prompt B on the viewed x_t, mapped back; their mean
            {NOT_YET}
        ''')


# ========================================================================================
# A1.9 Hybrid images
# ========================================================================================


def _hybrid_with(combine):
    def hybrid_eps(eps_a, eps_b, kernel_size, sigma):
        low = lambda e: gaussian_blur(e, kernel_size, sigma)  # noqa: E731
        return combine(eps_a, eps_b, low)

    return hybrid_eps


HYBRID_MISTAKES = (
    Mistake("bands-swapped", "hybrid_eps",
            "eps_a gives the low frequencies (what you see from afar) and eps_b the high ones: low_pass(eps_a) + "
            "high_pass(eps_b), not the other way round.",
            _hybrid_with(lambda a, b, low: low(b) + (a - low(a)))),
    Mistake("high-pass-sign", "hybrid_eps",
            "high_pass(e) = e - low_pass(e): the image minus its blur, so that low_pass(e) + high_pass(e) = e.",
            _hybrid_with(lambda a, b, low: low(a) + (low(b) - b))),
    Mistake("no-high-pass", "hybrid_eps",
            "Keep only the high frequencies of eps_b: high_pass(eps_b) = eps_b - low_pass(eps_b). Added whole, "
            "eps_b's low frequencies pile onto eps_a's.",
            _hybrid_with(lambda a, b, low: low(a) + b)),
    Mistake("low-plus-low", "hybrid_eps",
            "The second term is the high-pass of eps_b, eps_b - low_pass(eps_b), not its low-pass.",
            _hybrid_with(lambda a, b, low: low(a) + low(b))),
)


def _hybrid_case():
    odd = st.integers(1, 7).map(lambda h: 2 * h + 1)  # 3 ... 15, radius < 16
    return st.tuples(st.integers(1, 2), st.integers(1, 3), odd, st.floats(0.5, 4.0), seeds())


@check(cases=_hybrid_case, examples=10)
def check_hybrid_same(hybrid_eps, case):
    """the same prediction twice comes back unchanged (low_pass + high_pass = everything)

    Hint: hybrid_eps(e, e) = low_pass(e) + high_pass(e) = e, since high_pass(e) = e - low_pass(e).
    """
    b, c, k, sigma, seed = case
    e = randn((b, c, 16, 16), seed)
    inputs = f"kernel_size = {k}, sigma = {sigma:.3g}, eps_a = eps_b of shape {tuple(e.shape)}"
    out = call(hybrid_eps, e, e, k, sigma, like=e, like_name="eps_a", inputs=inputs)
    expect_close(out, e, "hybrid_eps(e, e) against e", atol=1e-6, inputs=inputs)


@check(cases=_hybrid_case, examples=6)
def check_hybrid_bands(hybrid_eps, case):
    """the low frequencies come from eps_a, the high ones from eps_b

    Hint: low_pass(eps_a) + high_pass(eps_b): a flat eps_b has no high frequencies, so a flat eps_a must come back.
    """
    b, c, k, sigma, seed = case
    e_a = torch.full((b, c, 16, 16), 0.5, dtype=torch.float64)
    e_b = torch.full((b, c, 16, 16), -1.0, dtype=torch.float64)
    inputs = f"kernel_size = {k}, sigma = {sigma:.3g}, eps_a = 0.5 and eps_b = -1 everywhere"
    out = call(hybrid_eps, e_a, e_b, k, sigma, like=e_a, like_name="eps_a", inputs=inputs)
    expect_close(out, e_a, "the hybrid of two flat predictions against eps_a", atol=1e-6, inputs=inputs)


@check(cases=_hybrid_case, examples=15)
def check_hybrid_matches(hybrid_eps, case):
    """equals low_pass(eps_a) + high_pass(eps_b) of minidiff (Gaussian of that size and sigma, reflect padding)

    Hint: Use the Gaussian blur of A1.2 (or minidiff.filters.gaussian_blur) with the kernel_size and sigma given.
    """
    b, c, k, sigma, seed = case
    e_a, e_b = randn((b, c, 16, 16), seed), randn((b, c, 16, 16), seed + 1)
    inputs = f"kernel_size = {k}, sigma = {sigma:.3g}, " + describe(eps_a=e_a, eps_b=e_b)
    out = call(hybrid_eps, e_a, e_b, k, sigma, like=e_a, like_name="eps_a", inputs=inputs)
    expect_close(out, R.hybrid_eps(e_a, e_b, k, sigma), "the hybrid noise estimate", atol=1e-5, inputs=inputs)


A1_9 = exercise(
    "A1.9", "hybrid images: low frequencies of one prompt, high of another", lesson="A1.9",
    file_name="a1_9_hybrid_eps.py",
    checks=(check_hybrid_same, check_hybrid_bands, check_hybrid_matches), mistakes=HYBRID_MISTAKES,
    heading="Hybrid images", intro="""
        An image that reads as prompt A from afar and as prompt B up close (factorized
        diffusion, Geng et al., 2024): at every step the noise estimate takes its low
        frequencies from prompt A's and its high frequencies from prompt B's,

            eps = low_pass(eps_A) + high_pass(eps_B),     high_pass(e) = e - low_pass(e)

        with low_pass a Gaussian blur (the course: kernel 33, sigma 2).
        """, imports="""
        import torch

        from minidiff.filters import gaussian_blur  # or your blur_denoise from A1.2
        """, body=f'''
        def hybrid_eps(eps_a, eps_b, kernel_size, sigma):
            """low_pass(eps_a) + high_pass(eps_b), low_pass the Gaussian blur of that size and sigma.

            eps_a        (B, C, H, W) the guided noise estimate of prompt A (seen from afar)
            eps_b        (B, C, H, W) that of prompt B (seen up close)
            kernel_size  the blur's odd kernel size
            sigma        the blur's standard deviation in pixels
            returns      (B, C, H, W), eps_a's shape and dtype
            """
            # TODO: blur eps_a; take eps_b minus its blur; add
            {NOT_YET}
        ''')
