"""minidiff's own implementation of every exercise, in the exercise's signature.

Each function here is a thin adapter: it calls the library's code (``DDPMSchedule``, the
samplers, the edits, the guidance rules, the MNIST blocks), so that ``minidiff check ID
--reference`` and the test suite run the exercise's checks on the very code the lessons use.
A learner may import these as building blocks for a later exercise (the SDEdit exercise
needs a forward process and a loop), e.g. ``from minidiff.exercises.reference import forward``.

The exercises pass a DDPM schedule as its table ``alphas_cumprod``; ``schedule_for`` finds
the DDPMSchedule that table belongs to.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from minidiff import edit, guidance, losses, samplers
from minidiff.filters import gaussian_blur
from minidiff.models import mnist
from minidiff.schedule import DDPMSchedule, FlowSchedule
from minidiff.views import View

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

IF_SCHEDULE = DDPMSchedule.deepfloyd()  # Part A: 1000 cosine steps
MNIST_SCHEDULE = DDPMSchedule.linear(300)  # Part B's DDPM: 300 linear steps
FLOW = FlowSchedule()


def schedule_for(alphas_cumprod: torch.Tensor) -> DDPMSchedule:
    """The DDPMSchedule whose table is alphas_cumprod: IF's or the course's linear one when it is
    theirs, else one rebuilt from the betas the table implies, beta_t = 1 - ab_t / ab_{t-1}."""
    ab = torch.as_tensor(alphas_cumprod)
    for known in (IF_SCHEDULE, MNIST_SCHEDULE):
        if ab.shape == known.alphas_cumprod.shape and torch.equal(ab.to(torch.float32), known.alphas_cumprod):
            return known
    ab = ab.to(torch.float64)
    return DDPMSchedule((1 - ab / torch.cat([ab.new_ones(1), ab[:-1]])).float())


def _table_model(*outputs: torch.Tensor) -> guidance.Model:
    """A model(x, t, cond) that returns outputs[k] for each row whose cond is k (cond: (N, 1) codes).

    It turns fixed predictions into the model a guidance rule of minidiff.guidance drives, so
    that the exercises on guidance run the library's own rule. Rows of the stacked batch a rule
    builds come in blocks of the outputs' batch, hence the row index modulo that batch.
    """
    stacked = torch.stack(outputs)  # (K, B, ...)
    batch = outputs[0].shape[0]

    def model(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(x.shape[0]) % batch
        return stacked[cond[:, 0].long().cpu(), rows].to(x.dtype)

    return model


def _code(k: int) -> torch.Tensor:
    return torch.tensor([[float(k)]])


def _as_image_batch(x: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """x as a (B, 1, 1, N) image batch (what the guidance rules take) and the map back to x's shape."""
    if x.ndim == 4:
        return x, lambda y: y
    return x.reshape(x.shape[0], 1, 1, -1), lambda y: y.reshape(x.shape)


# ----------------------------------------------------------------------------------------
# Part A
# ----------------------------------------------------------------------------------------


def forward(im: torch.Tensor, t: int, alphas_cumprod: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A1.1: x_t = sqrt(ab_t) im + sqrt(1 - ab_t) noise (DDPMSchedule.add_noise)."""
    return schedule_for(alphas_cumprod).add_noise(im, noise, t)


def blur_denoise(x_t: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """A1.2: x0_hat = G_sigma * x_t (minidiff.filters.gaussian_blur, reflect padding)."""
    return gaussian_blur(x_t, kernel_size, sigma)


def one_step_denoise(den: Denoiser, x_t: torch.Tensor, t: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """A1.3: x0_hat = (x_t - sqrt(1 - ab_t) eps_hat) / sqrt(ab_t) (minidiff.samplers.one_step_denoise)."""
    return samplers.one_step_denoise(den, x_t, schedule_for(alphas_cumprod), t)


def ddpm_step(x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, alphas_cumprod: torch.Tensor,
              z: torch.Tensor) -> torch.Tensor:
    """A1.4: one strided DDPM step t -> t_prev (DDPMSchedule.step)."""
    return schedule_for(alphas_cumprod).step(x_t, eps, t, t_prev, noise=z)


def iterative_denoise(den: Denoiser, x: torch.Tensor, timesteps: Sequence[int], alphas_cumprod: torch.Tensor,
                      i_start: int, generator: torch.Generator) -> torch.Tensor:
    """A1.4: the strided DDPM loop from timesteps[i_start] (minidiff.samplers.iterative_denoise)."""
    return samplers.iterative_denoise(den, x, schedule_for(alphas_cumprod), list(timesteps), i_start, generator,
                                      progress=False)


def sample_from_noise(den: Denoiser, shape: tuple[int, ...], timesteps: Sequence[int],
                      alphas_cumprod: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A1.5: x ~ N(0, I) from the generator, then the loop from timesteps[0]."""
    x = torch.randn(shape, generator=generator)
    return iterative_denoise(den, x, timesteps, alphas_cumprod, 0, generator)


def cfg_eps(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """A1.6: eps_u + scale (eps_c - eps_u) (minidiff.guidance.cfg on the two predictions)."""
    e_u, back = _as_image_batch(eps_uncond)
    e_c, _ = _as_image_batch(eps_cond)
    den = guidance.cfg(_table_model(e_u, e_c), _code(1), _code(0), scale)
    return back(den(torch.zeros_like(e_c), torch.zeros(e_c.shape[0])))


def sdedit(den: Denoiser, image: torch.Tensor, timesteps: Sequence[int], alphas_cumprod: torch.Tensor,
           i_start: int, generator: torch.Generator) -> torch.Tensor:
    """A1.7: noise the image to timesteps[i_start], then denoise (minidiff.edit.sdedit)."""
    return edit.sdedit(den, image, schedule_for(alphas_cumprod), list(timesteps), i_start, generator,
                       progress=False)


def inpaint(den: Denoiser, image: torch.Tensor, mask: torch.Tensor, timesteps: Sequence[int],
            alphas_cumprod: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A1.7.2: regenerate where mask == 1, re-noised known pixels elsewhere (minidiff.edit.inpaint)."""
    return edit.inpaint(den, image, mask, schedule_for(alphas_cumprod), list(timesteps), generator, progress=False)


def renoise(x_prev: torch.Tensor, t: int, t_prev: int, alphas_cumprod: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A1.7.2b: the jump back t' -> t, sqrt(alpha_t) x_t' + sqrt(1 - alpha_t) z (DDPMSchedule.renoise)."""
    return schedule_for(alphas_cumprod).renoise(x_prev, t, t_prev, noise=z)


def repaint(den: Denoiser, image: torch.Tensor, mask: torch.Tensor, timesteps: Sequence[int],
            alphas_cumprod: torch.Tensor, resample_steps: int, generator: torch.Generator) -> torch.Tensor:
    """A1.7.2b: inpainting with RePaint's resampling (minidiff.edit.inpaint, resample_steps=u)."""
    return edit.inpaint(den, image, mask, schedule_for(alphas_cumprod), list(timesteps), generator,
                        resample_steps=resample_steps, progress=False)


def anagram_eps(predict_a: Callable[[torch.Tensor], torch.Tensor], predict_b: Callable[[torch.Tensor], torch.Tensor],
                x_t: torch.Tensor, view: Callable[[torch.Tensor], torch.Tensor],
                inverse: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """A1.8: (predict_a(x_t) + inverse(predict_b(view(x_t)))) / 2 (minidiff.guidance.anagram)."""
    batch = x_t.shape[0]

    def model(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        code = cond[:, 0].to(x.device).reshape(-1, *[1] * (x.ndim - 1))
        out_a, out_b = predict_a(x), predict_b(x)
        return torch.where(code == 0, out_a, torch.where(code == 1, out_b, torch.zeros_like(out_a)))

    rule = guidance.anagram(model, [(View("identity", lambda x: x, lambda x: x), _code(0)),
                                    (View("the view", view, inverse), _code(1))], _code(2), 1.0)
    return rule(x_t, torch.zeros(batch))


def hybrid_eps(eps_a: torch.Tensor, eps_b: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """A1.9: low_pass(eps_a) + high_pass(eps_b) (minidiff.guidance.hybrid on the two predictions)."""
    rule = guidance.hybrid(_table_model(eps_a, eps_b, torch.zeros_like(eps_a)), _code(0), _code(1), _code(2), 1.0,
                           kernel_size, sigma)
    return rule(torch.zeros_like(eps_a), torch.zeros(eps_a.shape[0]))


# ----------------------------------------------------------------------------------------
# Part B
# ----------------------------------------------------------------------------------------

Conv, DownConv, UpConv = mnist.Conv, mnist.DownConv, mnist.UpConv  # B1.1: the course's blocks
Flatten, Unflatten = mnist.Flatten, mnist.Unflatten
ConvBlock, DownBlock, UpBlock = mnist.ConvBlock, mnist.DownBlock, mnist.UpBlock
FCBlock = mnist.FCBlock  # B2.1


def add_noise(x: torch.Tensor, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """B1.2: z = x + sigma eps."""
    return x + sigma * noise


def denoiser_loss(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, sigma: float,
                  noise: torch.Tensor) -> torch.Tensor:
    """B1.2.1: L = mean |D(x + sigma eps) - x|^2 (minidiff.losses.denoiser_example with the noise given)."""
    return F.mse_loss(model(add_noise(x, sigma, noise)), x)


def condition(h: torch.Tensor, t1: torch.Tensor, c1: torch.Tensor | None = None) -> torch.Tensor:
    """B2.1: h <- c1 * h + t1 over every pixel (the modulation of the UNet's decoder)."""
    return mnist._modulate(h, c1, t1)


def flow_loss(model: Callable, x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """B2.2: L = mean |u_theta(x_t, t) - (x1 - x0)|^2, x_t = (1 - t) x0 + t x1 (FlowSchedule.add_noise)."""
    return F.mse_loss(model(FLOW.add_noise(x1, x0, t), t), x1 - x0)


def flow_sample(velocity: Callable, x0: torch.Tensor, num_steps: int) -> torch.Tensor:
    """B2.3: Euler from t = 0 to 1 in num_steps equal steps (minidiff.samplers.flow_euler)."""
    return samplers.flow_euler(velocity, x0, FLOW, FlowSchedule.timesteps(num_steps), progress=False)


def class_flow_loss(model: Callable, x1: torch.Tensor, c: torch.Tensor, x0: torch.Tensor, t: torch.Tensor,
                    p_uncond: float, generator: torch.Generator) -> torch.Tensor:
    """B2.4: the flow loss with the class vector c dropped to zero with probability p_uncond
    (minidiff.models.mnist.drop_class, then the flow loss)."""
    c_in = mnist.drop_class(c, p_uncond, generator)
    return F.mse_loss(model(FLOW.add_noise(x1, x0, t), t, c_in), x1 - x0)


def cfg_flow_sample(model: Callable, x0: torch.Tensor, c: torch.Tensor, num_steps: int,
                    guidance_scale: float) -> torch.Tensor:
    """B2.6: Euler on v_u + s (v_c - v_u) (minidiff.guidance.cfg driving minidiff.samplers.flow_euler)."""
    den = guidance.cfg(model, c, torch.zeros_like(c[:1]), guidance_scale)
    return samplers.flow_euler(den, x0, FLOW, FlowSchedule.timesteps(num_steps), progress=False)


def ddpm_loss(model: Callable, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
              alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """B2.3.1: L = mean |eps_theta(x_t, t / T) - eps|^2 (the DDPM recipe with t and eps given)."""
    schedule = schedule_for(alphas_cumprod)
    return F.mse_loss(model(schedule.add_noise(x0, eps, t), mnist.unet_time(t, schedule)), eps)


def ddpm_sample(model: Callable, x: torch.Tensor, timesteps: Sequence[int], alphas_cumprod: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
    """B2.3.1: the DDPM loop from pure noise with a UNet that takes t / T (iterative_denoise)."""
    schedule = schedule_for(alphas_cumprod)
    den = lambda x_t, t: model(x_t, mnist.unet_time(t, schedule))  # noqa: E731
    return samplers.iterative_denoise(den, x, schedule, list(timesteps), 0, generator, progress=False)


def reflow_loss(model: Callable, x1: torch.Tensor, x0: torch.Tensor, c: torch.Tensor, p_zero: float,
                generator: torch.Generator) -> torch.Tensor:
    """B3.1: the flow loss on a teacher's pairs (x0, x1), t = 0 in a share p_zero of the draws
    (minidiff.losses.reflow_example)."""
    (x_t, t, c_in), u = losses.reflow_example(FLOW, x1, x0, c, generator, p_zero)
    return F.mse_loss(model(x_t, t, c_in), u)
