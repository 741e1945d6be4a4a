"""A1.7.2 Inpainting and A1.7.2b RePaint's resampling: starters, checks, known mistakes."""

from __future__ import annotations

import math

import torch

from minidiff.analytic import finite_data_denoiser
from minidiff.exercises import reference as R
from minidiff.exercises.a1_loop import stride_alpha
from minidiff.exercises.fixtures import (
    IF, SpyDen, ab_of, expect_noise_term, image_shapes, pm_one_data, randn, seeds, st, timesteps_for,
)
from minidiff.exercises.harness import CheckFailed, Mistake, call, check, describe, expect, expect_close
from minidiff.exercises.starters import NOT_YET, exercise

__all__ = ["A1_7_2", "A1_7_2B"]


# ========================================================================================
# A1.7.2 Inpainting
# ========================================================================================


def hole_mask() -> torch.Tensor:
    """An 8x8 mask with a 4x5 hole (1: regenerate) in the middle: 20 of 64 pixels."""
    mask = torch.zeros(8, 8, dtype=torch.float64)
    mask[2:6, 2:7] = 1
    return mask


class _Hole:
    """An inpainting problem for the checks: six +-1 data images and their exact denoiser, batch
    members of them shown with uniform garbage in [-1, 1] in a 4x5 hole (the 44 kept pixels
    identify the member), and the course's timesteps at a stride."""

    def __init__(self, seed: int, batch: int = 24, stride: int = 165, clean_end: bool = True) -> None:
        self.seed = seed
        self.data = pm_one_data(6, seed % 5)
        self.members = self.data[torch.arange(batch) % 6]
        g = torch.Generator().manual_seed(seed)
        garbage = torch.rand(self.members.shape, generator=g, dtype=torch.float64) * 2 - 1
        self.mask = hole_mask()
        self.image = self.members * (1 - self.mask) + garbage * self.mask
        self.timesteps = timesteps_for(IF, stride, clean_end)
        self.den = finite_data_denoiser(self.data, IF)

    def args(self, den, *resample_steps) -> tuple:
        """inpaint's arguments (repaint's, with resample_steps), the generator seeded with the case's seed."""
        return (den, self.image, self.mask, self.timesteps, IF.alphas_cumprod, *resample_steps,
                torch.Generator().manual_seed(self.seed))

    def run(self, fn, inputs: str, *resample_steps, den=None) -> torch.Tensor:
        """The learner's fn on this problem, watched; den is the exact denoiser unless given."""
        args = self.args(self.den if den is None else den, *resample_steps)
        return call(fn, *args, like=self.image, like_name="image", inputs=inputs)


def _check_kept_exactly(out, hole: _Hole, inputs):
    image, mask = hole.image, hole.mask
    keep, fill = (mask == 0).expand_as(image), (mask == 1).expand_as(image)
    if torch.equal(out[fill], image[fill]) and not torch.allclose(out[keep], image[keep], atol=1e-6):
        raise CheckFailed("the hole came back as the image's own pixels and the kept pixels were regenerated",
                          inputs=inputs, key="inverted-mask", hint="mask == 1 marks the pixels to regenerate: "
                          "x = mask * x + (1 - mask) * forward(image, t', noise), the model's pixels inside the hole.")
    expect_close(out[keep], image[keep], "the kept pixels (mask == 0) against the image's", atol=1e-6, inputs=inputs,
                 hint="After the last step, paste the image itself (not a noised copy) into the kept pixels: "
                      "x = mask * x + (1 - mask) * image.", key="kept-not-exact")


def _check_filled(out, hole: _Hole, inputs):
    expect_close(out, hole.members, "the result against the data image the kept pixels belong to", atol=1e-3,
                 inputs=inputs)


@check(cases=seeds, examples=2)
def check_inpaint_keeps_pixels(inpaint, seed):
    """returns the kept pixels (mask == 0) exactly and regenerates the hole

    Hint: x = mask * x + (1 - mask) * (the image noised to t'), with the image itself after the last step.
    """
    hole = _Hole(seed, batch=6)
    inputs = f"timesteps = {hole.timesteps}, a 4x5 hole in 8x8 images"
    _check_kept_exactly(hole.run(inpaint, inputs), hole, inputs)


def _check_known_noise_level(spy: SpyDen, image, mask, inputs):
    """Every model call after the first must see the kept pixels at its own noise level:
    mean |x - sqrt(ab_t) image|^2 over them within 25% of 1 - ab_t (1,056 pixels: 5 standard errors)."""
    keep = (mask == 0).expand_as(image)
    for k in range(1, len(spy.calls)):
        x, t = spy.calls[k][0], spy.times[k]
        ab = ab_of(IF, t)
        if 1 - ab < 1e-3:
            continue
        m = float(((x - math.sqrt(ab) * image)[keep] ** 2).mean())
        if abs(m / (1 - ab) - 1) < 0.25:
            continue
        t_before = spy.times[k - 1]
        ab_before = ab_of(IF, t_before)
        m_before = float(((x - math.sqrt(ab_before) * image)[keep] ** 2).mean())
        if torch.allclose(x[keep], image[keep]):
            hint, key = ("Re-noise the kept pixels at every step: paste forward(image, t', fresh noise), not the clean "
                         "image, so that they carry the same amount of noise as the hole.", "not-renoised")
        elif abs(m_before / (1 - ab_before) - 1) < 0.25:
            hint, key = ("Re-noise the kept pixels to t' = timesteps[i + 1], the time the step just reached, not to "
                         "the t it started from.", "renoised-to-t")
        else:
            hint, key = ("The kept pixels must be forward(image, t', noise) with fresh noise: sqrt(ab_t') image + "
                         "sqrt(1 - ab_t') noise.", "kept-noise-level")
        raise CheckFailed(f"at t = {t} the model saw the kept pixels with mean squared residual |x - sqrt(ab_t) "
                          f"image|^2 = {m:.4f}, expected 1 - ab_t = {1 - ab:.4f}", inputs=inputs, hint=hint, key=key)


@check(cases=seeds, examples=2)
def check_inpaint_renoises(inpaint, seed):
    """the model sees the kept pixels noised to its own t at every step

    Hint: After each step to t', paste forward(image, t', fresh noise) into the kept pixels.
    """
    hole = _Hole(seed)
    spy = SpyDen(hole.den)
    inputs = f"timesteps = {hole.timesteps}, 24 images of 8x8 with a 4x5 hole"
    hole.run(inpaint, inputs, den=spy)
    _check_known_noise_level(spy, hole.image, hole.mask, inputs)


@check(cases=seeds, examples=2)
def check_inpaint_fills(inpaint, seed):
    """fills the hole with the data image its kept pixels match (exact denoiser)

    Hint: The model fills the hole to agree with the kept pixels only if they carry the right noise at every step.
    """
    hole = _Hole(seed, batch=6, stride=90)
    inputs = f"timesteps = {hole.timesteps}, a 4x5 hole in each of the 6 data images"
    _check_filled(hole.run(inpaint, inputs), hole, inputs)


@check(cases=lambda: st.tuples(seeds(), st.booleans()), examples=3)
def check_inpaint_matches(inpaint, case):
    """equals minidiff's inpaint draw for draw

    Hint: Draw order: x = forward(image, timesteps[0], randn); then per step z for the DDPM step, then fresh noise for
    the kept pixels (none after the last step, where they are the image itself).
    """
    seed, clean_end = case
    hole = _Hole(seed, batch=3, clean_end=clean_end)
    inputs = f"timesteps = {hole.timesteps}, generator seed {seed}"
    out = hole.run(inpaint, inputs)
    expect_close(out, R.inpaint(*hole.args(hole.den)), "the inpainted image", atol=1e-4, inputs=inputs)


_INPAINT_DOC = """
            den             the denoiser, den(x_t, t_batch) -> eps_hat
            image           (B, C, H, W) images in [-1, 1]; only the kept pixels matter
            mask            (H, W) or (B, C, H, W) of 0 and 1: 1 = regenerate, 0 = keep
            timesteps       decreasing ints, e.g. [990, 960, ..., 30, 0]
            alphas_cumprod  (T,) tensor: alphas_cumprod[t] = ab_t"""

A1_7_2 = exercise(
    "A1.7.2", "inpainting: regenerate inside a mask, keep the rest", lesson="A1.7.2", file_name="a1_7_2_inpaint.py",
    checks=(check_inpaint_keeps_pixels, check_inpaint_renoises, check_inpaint_fills, check_inpaint_matches),
    heading="Inpainting", intro="""
        Regenerate the pixels where mask == 1 and keep the others (the course's replacement
        method; RePaint, Lugmayr et al., 2022). After every DDPM step to t', the kept pixels
        are replaced by the image noised to t', so that the model fills the hole to match them:

            x_t' = ddpm_step(x_t, den(x_t, t), t, t', ...)
            x_t' = mask * x_t' + (1 - mask) * forward(image, t', fresh noise)
        """, imports="""
        import torch

        from minidiff.exercises.reference import ddpm_step, forward  # or your A1.1 and A1.4
        """, body=f'''
        def inpaint(den, image, mask, timesteps, alphas_cumprod, generator):
            """The image with its masked pixels regenerated and the others kept exactly.
            {_INPAINT_DOC}
            generator       a torch.Generator, drawn in this order (so the checker can replay you):
                            x = forward(image, timesteps[0], randn) to start; then at each step
                            z for ddpm_step, then the fresh noise for the kept pixels; after
                            the last step the kept pixels are the image itself (no draw).
                            Each draw: torch.randn(image.shape, generator=generator, dtype=image.dtype)
            returns         the inpainted images, image's shape and dtype
            """
            # TODO: start, then loop: step, paste the noised image into the kept pixels
            {NOT_YET}
        ''')


# ========================================================================================
# A1.7.2b RePaint's resampling
# ========================================================================================


def _renoise_with(from_clean=False, root=True):
    """A wrong jump back: from_clean takes alpha_t = ab_t (as if x_t' were clean), root=False drops the roots."""

    def renoise(x_prev, t, t_prev, alphas_cumprod, z):
        alpha = stride_alpha(alphas_cumprod, t, t_prev, "cumprod" if from_clean else "stride")[2]
        a, b = (alpha.sqrt(), (1 - alpha).sqrt()) if root else (alpha, 1 - alpha)
        return (a * x_prev + b * z).to(x_prev.dtype)

    return renoise


RENOISE_MISTAKES = (
    Mistake("jump-from-clean", "renoise",
            "Jump back over this stride only: alpha_t = ab_t / ab_t', the forward transition q(x_t | x_t'). "
            "sqrt(ab_t) x + sqrt(1 - ab_t) z would treat x_t' as a clean image.",
            _renoise_with(from_clean=True)),
    Mistake("missing-sqrt", "renoise",
            "The coefficients are square roots: x_t = sqrt(alpha_t) x_t' + sqrt(1 - alpha_t) z.",
            _renoise_with(root=False)),
)


def _renoise_case():
    def build(c):
        u, v, shape, seed = c
        t = 1 + int(u * 998)
        return t, int(v * (t + 1)) - 1, shape, seed

    return st.tuples(st.floats(0, 1), st.floats(0, 0.999), image_shapes(), seeds()).map(build)


def _renoise_inputs(case):
    """(t, t_prev, x_prev, z) of a drawn jump back, x_prev and z N(0, I)."""
    t, t_prev, shape, seed = case
    return t, t_prev, randn(shape, seed), randn(shape, seed + 1)


@check(cases=_renoise_case, examples=20)
def check_renoise_signal(renoise, case):
    """renoise keeps the signal: from sqrt(ab_t') x0 it gives sqrt(ab_t) x0 when z = 0

    Hint: x_t = sqrt(alpha_t) x_t' + sqrt(1 - alpha_t) z with alpha_t = ab_t / ab_t' (ab = 1 at t' = -1).
    """
    t, t_prev, shape, seed = case
    x0 = randn(shape, seed)
    x_prev = math.sqrt(ab_of(IF, t_prev)) * x0
    inputs = f"t = {t}, t_prev = {t_prev}, z = 0, " + describe(x_prev=x_prev)
    out = call(renoise, x_prev, t, t_prev, IF.alphas_cumprod, torch.zeros_like(x0), like=x_prev,
               like_name="x_prev", inputs=inputs)
    expect_close(out, math.sqrt(ab_of(IF, t)) * x0, "the signal part, sqrt(ab_t) x0", atol=1e-6, inputs=inputs)


@check(cases=_renoise_case, examples=15)
def check_renoise_noise(renoise, case):
    """renoise adds sqrt(1 - alpha_t) z, bringing the noise up to that of timestep t

    Hint: The added noise is sqrt(1 - alpha_t) z, alpha_t = ab_t / ab_t'.
    """
    t, t_prev, x_prev, z = _renoise_inputs(case)
    alpha = ab_of(IF, t) / ab_of(IF, t_prev)
    inputs = f"t = {t}, t_prev = {t_prev}, " + describe(x_prev=x_prev, z=z)
    expect_noise_term(renoise, (x_prev, t, t_prev, IF.alphas_cumprod), z, math.sqrt(1 - alpha), "x_prev", inputs,
                      "renoise(z) - renoise(0), which must be sqrt(1 - alpha_t) z")


@check(cases=_renoise_case, examples=20)
def check_renoise_matches(renoise, case):
    """renoise equals minidiff's DDPMSchedule.renoise

    Hint: x_t = sqrt(alpha_t) x_t' + sqrt(1 - alpha_t) z, alpha_t = ab_t / ab_t'.
    """
    t, t_prev, x_prev, z = _renoise_inputs(case)
    inputs = f"t = {t}, t_prev = {t_prev}, " + describe(x_prev=x_prev, z=z)
    out = call(renoise, x_prev, t, t_prev, IF.alphas_cumprod, z, like=x_prev, like_name="x_prev", inputs=inputs)
    expect_close(out, IF.renoise(x_prev, t, t_prev, noise=z), "x_t", atol=1e-6, inputs=inputs)


@check(cases=seeds, examples=2)
def check_repaint_one_is_inpaint(repaint, seed):
    """repaint with resample_steps = 1 is plain inpainting (minidiff's, draw for draw)

    Hint: With u = 1 there is no jump back: every step is the inpainting step of A1.7.2.
    """
    hole = _Hole(seed, batch=3)
    inputs = f"timesteps = {hole.timesteps}, resample_steps = 1, generator seed {seed}"
    out = hole.run(repaint, inputs, 1)
    expect_close(out, R.inpaint(*hole.args(hole.den)), "the result against plain inpainting", atol=1e-4,
                 inputs=inputs)


def _calls_hint(got: int, n: int, u: int) -> tuple[str | None, str | None]:
    """(hint, key) for a repaint that called the model got times in n steps of u passes, when the
    count names a known mistake."""
    patterns = {
        n * u: ("Take the last step once, without resampling (as RePaint does): the jumps back are there to let "
                "the hole and the kept pixels agree before the end.", "resamples-last-step"),
        (n - 1) * (u + 1) + 1: ("Jump back resample_steps - 1 times per step: the first pass is the step itself.",
                                "one-jump-too-many"),
        n: ("Resample: after each step but the last, jump back with renoise and take the step again, "
            "resample_steps - 1 times.", "no-resampling"),
    }
    return patterns.get(got, (None, None))


@check(cases=lambda: st.tuples(seeds(), st.integers(2, 4)), examples=3)
def check_repaint_calls(repaint, case):
    """calls the model resample_steps times per step, and once at the last step

    Hint: Per step: step, paste; then resample_steps - 1 times: renoise back to t, step again, paste. The last step is
    taken once.
    """
    seed, u = case
    hole = _Hole(seed, batch=2)
    n = len(hole.timesteps) - 1
    spy = SpyDen(hole.den)
    inputs = f"timesteps = {hole.timesteps} ({n} steps), resample_steps = {u}"
    hole.run(repaint, inputs, u, den=spy)
    got, want = len(spy.calls), (n - 1) * u + 1
    hint, key = _calls_hint(got, n, u) if got != want else (None, None)
    expect(got == want, f"the model was called {got} times", inputs=inputs,
           expected=f"{want} calls = ({n} - 1) * {u} + 1", got=f"{got} calls", hint=hint, key=key)


@check(cases=seeds, examples=2)
def check_repaint_fills(repaint, seed):
    """with resample_steps = 3, keeps the kept pixels exactly and fills the hole from the matching data image

    Hint: The kept pixels are pasted after every step (and are the image itself after the last).
    """
    hole = _Hole(seed, batch=6)
    inputs = f"timesteps = {hole.timesteps}, resample_steps = 3, a 4x5 hole in each of the 6 data images"
    out = hole.run(repaint, inputs, 3)
    _check_kept_exactly(out, hole, inputs)
    _check_filled(out, hole, inputs)


@check(cases=lambda: st.tuples(seeds(), st.integers(2, 3)), examples=2)
def check_repaint_matches(repaint, case):
    """equals minidiff's inpaint(resample_steps=u) draw for draw

    Hint: Draw order per pass: the jump back's z (from the second pass on), the step's z, then the kept pixels' noise.
    """
    seed, u = case
    hole = _Hole(seed, batch=3)
    inputs = f"timesteps = {hole.timesteps}, resample_steps = {u}, generator seed {seed}"
    out = hole.run(repaint, inputs, u)
    expect_close(out, R.repaint(*hole.args(hole.den, u)), "the result", atol=1e-4, inputs=inputs)


A1_7_2B = exercise(
    "A1.7.2b", "RePaint: inpainting with resampling (jump back, step again)", lesson="A1.7.2",
    file_name="a1_7_2b_repaint.py",
    checks=(check_renoise_signal, check_renoise_noise, check_renoise_matches, check_repaint_one_is_inpaint,
            check_repaint_calls, check_repaint_fills, check_repaint_matches),
    mistakes=RENOISE_MISTAKES,
    heading="RePaint's resampling", intro="""
        Plain replacement (A1.7.2) pastes the kept pixels after every step, but the model sees
        them only once per step, and the hole may not agree with them. RePaint (Lugmayr et al.,
        2022, Alg. 1) takes every step u times: after stepping t -> t' and pasting, it jumps back
        with the forward transition q(x_t | x_t'),

            x_t = sqrt(alpha_t) x_t' + sqrt(1 - alpha_t) z,       alpha_t = ab_t / ab_t'

        and steps again. The last step is taken once.
        """, imports="""
        import torch

        from minidiff.exercises.reference import ddpm_step, forward  # or your A1.1 and A1.4
        """, body=f'''
        def renoise(x_prev, t, t_prev, alphas_cumprod, z):
            """The jump back from t' = t_prev to t > t': sqrt(alpha_t) x_prev + sqrt(1 - alpha_t) z.

            x_prev          (B, C, H, W) images at t_prev
            t, t_prev       ints, -1 <= t_prev < t; t_prev = -1 is the clean image (ab = 1)
            alphas_cumprod  (T,) tensor: alphas_cumprod[t] = ab_t
            z               (B, C, H, W) the N(0, I) draw to use
            returns         x at t, x_prev's shape and dtype
            """
            # TODO: alpha_t over the stride, then the two square roots
            {NOT_YET}


        def repaint(den, image, mask, timesteps, alphas_cumprod, resample_steps, generator):
            """Inpainting (A1.7.2) where every step but the last is taken resample_steps times.
            {_INPAINT_DOC}
            resample_steps  u >= 1; u = 1 is plain inpainting
            generator       a torch.Generator, drawn in this order: x = forward(image, timesteps[0],
                            randn) to start; then in every pass of a step: the jump back's z
                            (from the second pass on), the step's z, the kept pixels' noise
                            (none after the last step, where they are the image itself).
            returns         the inpainted images, image's shape and dtype
            """
            # TODO: the inpainting loop, with u - 1 jumps back (renoise) and steps again per step
            {NOT_YET}
        ''')
