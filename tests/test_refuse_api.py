"""Every bad input to the public library API is refused at its entry, with a ValueError (or
FileNotFoundError for a missing file) whose message names the argument and what was wrong.

One table: (id, call, exception type, regex on the message, the culprit the message must
name). Each call gets a scratch folder ``tmp`` for the cases that touch files. The models
are tiny stand-ins (a zero denoiser, the 16x16 random IF UNet, a width-4 MNIST UNet), so
the whole table runs in a few seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from minidiff import data
from minidiff.betas import cosine_betas, dynamic_threshold, linear_betas
from minidiff.analytic import finite_data_model, gaussian_denoiser
from minidiff.edit import check_mask, image_to_image, inpaint, sdedit
from minidiff.filters import gaussian_blur, gaussian_kernel1d, high_pass, low_pass
from minidiff.guidance import anagram, cfg, factorized, frequency_bands, hybrid, hybrid_bands
from minidiff.if_pipeline import if_stage1
from minidiff.metrics import MNISTJudge, frechet_distance, judge_accuracy, psnr
from minidiff.models.if_unet import IFUNet
from minidiff.models.mnist import ClassConditionalUNet, TimeConditionalUNet, class_vector
from minidiff.samplers import ddim, ddim_step, flow_euler, flow_heun, iterative_denoise, one_step_denoise
from minidiff.schedule import DDPMSchedule, FlowSchedule, strided_timesteps
from minidiff.text import encode_prompts, load_embedding_cache, prompt_embeddings
from minidiff.views import get_view

NAN, INF = float("nan"), float("inf")
IF = DDPMSchedule.deepfloyd()
LIN = DDPMSchedule.linear(300)
FLOW = FlowSchedule()
TS = strided_timesteps(990, 330)  # [990, 660, 330, 0]
FTS = FlowSchedule.timesteps(3)

X = torch.zeros(2, 1, 8, 8)  # a (B, C, H, W) batch
IMG = torch.zeros(1, 3, 8, 8)
C, U = torch.eye(2)[:1], torch.zeros(1, 2)  # a class condition and the null condition


def den(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def model(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def nan_at(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y.view(-1)[0] = NAN
    return y


TINY_CONFIG = json.loads((Path(__file__).parent / "fixtures" / "if_tiny" / "config.json").read_text())
torch.manual_seed(0)
UNET = IFUNet.from_config(TINY_CONFIG).eval()  # 3 -> 6 channels, text width 64, sizes multiple of 8
EMB = torch.zeros(2, 7, 64)
MNIST = ClassConditionalUNet(num_hiddens=4).eval()
TIME_UNET = TimeConditionalUNet(num_hiddens=4).eval()
DIGITS = torch.zeros(2, 1, 28, 28)


def write(tmp: Path, name: str, content: bytes) -> Path:
    path = tmp / name
    path.write_bytes(content)
    return path


# (id, call(tmp), exception type, message regex, the argument the message must name)
CASES = [
    # -- schedules -------------------------------------------------------------------------
    ("linear-T-zero", lambda tmp: linear_betas(0), ValueError, r">= 1, got 0", "num_timesteps"),
    ("linear-T-float", lambda tmp: linear_betas(10.5), ValueError, r"must be an int, got 10.5", "num_timesteps"),
    ("linear-betas-reversed", lambda tmp: linear_betas(10, 0.02, 1e-4), ValueError, r"beta_start < beta_end",
     "beta_start"),
    ("linear-betas-equal", lambda tmp: DDPMSchedule.linear(10, 0.01, 0.01), ValueError, r"beta_start < beta_end",
     "beta_end"),
    ("linear-beta-nan", lambda tmp: linear_betas(10, NAN, 0.02), ValueError, r"finite", "beta_start"),
    ("linear-beta-end-one", lambda tmp: linear_betas(10, 1e-4, 1.0), ValueError, r"< 1", "beta_end"),
    ("cosine-T-negative", lambda tmp: cosine_betas(-3), ValueError, r">= 1, got -3", "num_timesteps"),
    ("cosine-max-beta", lambda tmp: cosine_betas(10, max_beta=1.5), ValueError, r"\(0, 1\), got 1.5", "max_beta"),
    ("betas-outside-0-1", lambda tmp: DDPMSchedule(torch.tensor([0.1, 1.2])), ValueError, r"\(0, 1\), got e.g. \[1.2",
     "beta"),
    ("betas-nan", lambda tmp: DDPMSchedule(torch.tensor([0.1, NAN])), ValueError, r"\(0, 1\)", "beta"),
    ("betas-2d", lambda tmp: DDPMSchedule(torch.full((2, 2), 0.1)), ValueError, r"1-D", "betas"),
    ("threshold-ratio", lambda tmp: DDPMSchedule(cosine_betas(10), dynamic_thresholding_ratio=0.0), ValueError,
     r"\(0, 1\]", "dynamic_thresholding_ratio"),
    ("clip-range-negative", lambda tmp: DDPMSchedule(cosine_betas(10), clip_sample_range=-1.0), ValueError, r"> 0",
     "clip_sample_range"),
    ("dynamic-threshold-max", lambda tmp: dynamic_threshold(X, 0.9, max_value=0.5), ValueError, r">= 1", "max_value"),
    ("t-too-large", lambda tmp: IF.add_noise(X, X, 1000), ValueError, r"out of range.*\[0, 999\]", "t"),
    ("t-negative", lambda tmp: IF.add_noise(X, X, -1), ValueError, r"out of range", "t"),
    ("t-not-integer", lambda tmp: IF.add_noise(X, X, 10.5), ValueError, r"integer", "t"),
    ("t-inf", lambda tmp: IF.add_noise(X, X, INF), ValueError, r"integer", "t"),
    ("t-bool", lambda tmp: IF.add_noise(X, X, torch.tensor([True, False])), ValueError, r"real number", "t"),
    ("t-batch-mismatch", lambda tmp: IF.add_noise(X, X, torch.tensor([1, 2, 3])), ValueError, r"3 entries", "t"),
    ("noise-shape", lambda tmp: IF.add_noise(X, torch.zeros(2, 1, 8, 7), 5), ValueError, r"same shape", "noise"),
    ("noise-none", lambda tmp: IF.add_noise(X, None, 5), ValueError, r"torch.Tensor", "noise"),
    ("step-t-prev-not-smaller", lambda tmp: IF.step(X, X, 500, 600), ValueError, r"smaller than t", "t_prev"),
    ("step-output-channels", lambda tmp: IF.step(X, torch.zeros(2, 3, 8, 8), 500, 400), ValueError,
     r"1 channels|2 channels|\(2, 1, 8, 8\)", "model_output"),
    ("step-noise-shape", lambda tmp: IF.step(X, X, 500, 400, noise=torch.zeros(1, 1, 8, 8)), ValueError,
     r"same shape", "noise"),
    ("flow-t-above-one", lambda tmp: FLOW.add_noise(X, X, 1.5), ValueError, r"\[0, 1\]", "t"),
    ("flow-t-nan", lambda tmp: FLOW.step(X, X, NAN, 0.5), ValueError, r"\[0, 1\]", "t"),
    ("flow-timesteps-steps", lambda tmp: FlowSchedule.timesteps(2.5), ValueError, r"int", "num_steps"),
    ("flow-timesteps-range", lambda tmp: FlowSchedule.timesteps(4, 0.5, 0.2), ValueError, r"t_start < t_end",
     "t_start"),
    ("strided-stride-zero", lambda tmp: strided_timesteps(990, 0), ValueError, r"positive", "stride"),
    ("strided-stride-negative", lambda tmp: strided_timesteps(990, -30), ValueError, r"positive", "stride"),
    ("strided-start-negative", lambda tmp: strided_timesteps(-5, 30), ValueError, r">= 0", "start"),
    ("strided-start-float", lambda tmp: strided_timesteps(990.5, 30), ValueError, r"int", "start"),
    ("strided-end-above-start", lambda tmp: strided_timesteps(10, 3, end=20), ValueError, r"end <= start", "end"),
    # -- samplers --------------------------------------------------------------------------
    ("timesteps-empty", lambda tmp: iterative_denoise(den, X, IF, [], progress=False), ValueError, r"two entries",
     "timesteps"),
    ("timesteps-one-entry", lambda tmp: iterative_denoise(den, X, IF, [990], progress=False), ValueError,
     r"two entries", "timesteps"),
    ("timesteps-increasing-ddpm", lambda tmp: iterative_denoise(den, X, IF, [0, 500, 990], progress=False),
     ValueError, r"decrease strictly", "timesteps"),
    ("timesteps-repeated", lambda tmp: iterative_denoise(den, X, IF, [990, 500, 500, 0], progress=False),
     ValueError, r"timesteps\[1\] = 500 then", "timesteps"),
    ("timesteps-decreasing-flow", lambda tmp: flow_euler(den, X, FLOW, [1.0, 0.5, 0.0], progress=False),
     ValueError, r"increase strictly", "timesteps"),
    ("timesteps-beyond-T", lambda tmp: iterative_denoise(den, X, LIN, [990, 0], progress=False), ValueError,
     r"\[0, 299\]", "timesteps"),
    ("timesteps-below-minus-one", lambda tmp: iterative_denoise(den, X, IF, [990, -5], progress=False), ValueError,
     r"ending at -1", "timesteps"),
    ("timesteps-flow-above-one", lambda tmp: flow_heun(den, X, FLOW, [0.0, 1.5], progress=False), ValueError,
     r"\[0, 1\]", "timesteps"),
    ("timesteps-flow-nan", lambda tmp: flow_euler(den, X, FLOW, [0.0, NAN, 1.0], progress=False), ValueError,
     r"finite", "timesteps[1]"),
    ("timesteps-ddpm-fraction", lambda tmp: iterative_denoise(den, X, IF, [990.5, 0], progress=False), ValueError,
     r"integer DDPM timestep, got 990.5", "timesteps[0]"),
    ("timesteps-string", lambda tmp: iterative_denoise(den, X, IF, "990", progress=False), ValueError,
     r"list of numbers", "timesteps"),
    ("timesteps-2d-tensor", lambda tmp: ddim(den, X, IF, torch.zeros(2, 2), progress=False), ValueError, r"1-D",
     "timesteps"),
    ("i-start-too-large", lambda tmp: iterative_denoise(den, X, IF, TS, i_start=3, progress=False), ValueError,
     r"\[0, 2\].*got 3", "i_start"),
    ("i-start-negative", lambda tmp: ddim(den, X, IF, TS, i_start=-1, progress=False), ValueError, r"got -1",
     "i_start"),
    ("i-start-float", lambda tmp: flow_euler(den, X, FLOW, FTS, i_start=1.0, progress=False), ValueError,
     r"got 1.0", "i_start"),
    ("x-3d", lambda tmp: iterative_denoise(den, X[0], IF, TS, progress=False), ValueError, r"\(B, C, H, W\)", "x"),
    ("x-integer", lambda tmp: iterative_denoise(den, X.long(), IF, TS, progress=False), ValueError, r"float", "x"),
    ("x-nan", lambda tmp: flow_heun(den, nan_at(X), FLOW, FTS, progress=False), ValueError, r"NaN", "x"),
    ("x-t-3d", lambda tmp: one_step_denoise(den, X[0], IF, 500), ValueError, r"\(B, C, H, W\)", "x_t"),
    ("one-step-t-range", lambda tmp: one_step_denoise(den, X, IF, 1000), ValueError, r"out of range", "t"),
    ("one-step-flow-t", lambda tmp: one_step_denoise(den, X, FLOW, -0.5), ValueError, r"\[0, 1\]", "t"),
    ("den-not-callable", lambda tmp: iterative_denoise(None, X, IF, TS, progress=False), ValueError, r"callable",
     "den"),
    ("den-wrong-shape", lambda tmp: iterative_denoise(lambda x, t: x[:, :, :4], X, IF, TS, progress=False),
     ValueError, r"returned shape \(2, 1, 4, 8\)", "denoiser"),
    ("den-2c-for-flow", lambda tmp: flow_euler(lambda x, t: torch.cat([x, x], 1), X, FLOW, FTS, progress=False),
     ValueError, r"returned shape \(2, 2, 8, 8\)", "denoiser"),
    ("den-returns-tuple", lambda tmp: ddim(lambda x, t: (x,), X, IF, TS, progress=False), ValueError, r"tuple",
     "denoiser"),
    ("generator-seed", lambda tmp: iterative_denoise(den, X, IF, TS, generator=0, progress=False), ValueError,
     r"torch.Generator", "generator"),
    ("callback-not-callable", lambda tmp: iterative_denoise(den, X, IF, TS, callback=1, progress=False), ValueError,
     r"callable", "callback"),
    ("schedule-wrong-type", lambda tmp: iterative_denoise(den, X, "ddpm", TS, progress=False), ValueError,
     r"DDPMSchedule or a FlowSchedule", "schedule"),
    ("ddim-flow-schedule", lambda tmp: ddim(den, X, FLOW, FTS, progress=False), ValueError, r"needs a DDPMSchedule",
     "DDIM"),
    ("euler-ddpm-schedule", lambda tmp: flow_euler(den, X, IF, TS, progress=False), ValueError,
     r"needs a FlowSchedule", "flow_euler"),
    ("heun-ddpm-schedule", lambda tmp: flow_heun(den, X, IF, TS, progress=False), ValueError,
     r"needs a FlowSchedule", "flow_heun"),
    ("ddim-eta-negative", lambda tmp: ddim(den, X, IF, TS, eta=-0.1, progress=False), ValueError, r">= 0", "eta"),
    ("ddim-eta-nan", lambda tmp: ddim(den, X, IF, TS, eta=NAN, progress=False), ValueError, r"finite", "eta"),
    ("ddim-step-t-prev", lambda tmp: ddim_step(IF, X, X, 500, 1000), ValueError, r"out of range.*the clean image",
     "t_prev"),
    ("ddim-step-t-prev-not-smaller", lambda tmp: ddim_step(IF, X, X, 500, 600), ValueError, r"smaller than t",
     "t_prev"),
    ("ddim-step-eta-negative", lambda tmp: ddim_step(IF, X, X, 500, 400, eta=-1.0), ValueError, r">= 0", "eta"),
    ("ddim-flow-ddpm-timesteps", lambda tmp: ddim(den, X, FLOW, TS, progress=False), ValueError,
     r"needs a DDPMSchedule", "DDIM"),
    ("renoise-t-prev-not-smaller", lambda tmp: IF.renoise(X, 400, 500), ValueError, r"smaller than t", "t_prev"),
    ("renoise-flow-backwards", lambda tmp: FLOW.renoise(X, 0.5, 0.25), ValueError, r"larger than t", "t_prev"),
    ("renoise-noise-shape", lambda tmp: IF.renoise(X, 500, 400, noise=X[:1]), ValueError, r"same shape", "noise"),
    # -- guidance --------------------------------------------------------------------------
    ("cfg-scale-nan", lambda tmp: cfg(model, C, U, NAN), ValueError, r"finite", "scale"),
    ("cfg-scale-inf", lambda tmp: cfg(model, C, U, INF), ValueError, r"finite", "scale"),
    ("cfg-scale-string", lambda tmp: cfg(model, C, U, "7"), ValueError, r"real number", "scale"),
    ("cfg-scale-bool", lambda tmp: cfg(model, C, U, True), ValueError, r"real number", "scale"),
    ("cfg-model-not-callable", lambda tmp: cfg(None, C, U, 1.0), ValueError, r"callable", "model"),
    ("cfg-cond-not-tensor", lambda tmp: cfg(model, 3, U, 1.0), ValueError, r"tensor", "cond"),
    ("cfg-cond-uncond-shapes", lambda tmp: cfg(model, C, torch.zeros(1, 3), 1.0), ValueError, r"same shape",
     "uncond"),
    ("cfg-cond-batch", lambda tmp: cfg(model, torch.eye(3)[:, :2], U, 1.0)(X, torch.zeros(2)), ValueError,
     r"batch 3.*batch 2", "cond"),
    ("cfg-model-output-size", lambda tmp: cfg(lambda x, t, c: x[..., :4], C, U, 1.0)(X, torch.zeros(2)),
     ValueError, r"image size \(8, 8\)", "model"),
    ("anagram-scale-inf", lambda tmp: anagram(model, [("flip", C)], U, INF), ValueError, r"finite", "scale"),
    ("anagram-unknown-view", lambda tmp: anagram(model, [("spin", C)], U, 1.0), ValueError, r"identity, flip",
     "spin"),
    ("anagram-empty", lambda tmp: anagram(model, [], U, 1.0), ValueError, r"empty", "anagram"),
    ("hybrid-scale-nan", lambda tmp: hybrid(model, C, C, U, NAN), ValueError, r"finite", "scale"),
    ("hybrid-kernel-even", lambda tmp: hybrid(model, C, C, U, 1.0, kernel_size=4), ValueError, r"odd",
     "kernel_size"),
    ("hybrid-sigma-zero", lambda tmp: hybrid(model, C, C, U, 1.0, sigma=0.0), ValueError, r"> 0", "sigma"),
    ("hybrid-sigma-inf", lambda tmp: hybrid(model, C, C, U, 1.0, sigma=INF), ValueError, r"finite", "sigma"),
    ("factorized-scale-inf", lambda tmp: factorized(model, [(lambda e: e, C)], U, -INF), ValueError, r"finite",
     "scale"),
    ("factorized-not-pair", lambda tmp: factorized(model, [C], U, 1.0), ValueError, r"pair",
     "components_and_conds[0]"),
    ("bands-scale-nan", lambda tmp: hybrid_bands(model, [C, C], U, NAN, sigmas=[2.0]), ValueError, r"finite",
     "scale"),
    ("bands-sigma-negative", lambda tmp: hybrid_bands(model, [C, C], U, 1.0, sigmas=[-2.0]), ValueError, r"> 0",
     "sigmas[0]"),
    ("bands-sigma-nan", lambda tmp: frequency_bands(IMG, [NAN], kernel_size=3), ValueError, r"finite", "sigmas[0]"),
    ("bands-count", lambda tmp: hybrid_bands(model, [C, C, C], U, 1.0, sigmas=[2.0]), ValueError, r"N - 1",
     "sigmas"),
    # -- edits -----------------------------------------------------------------------------
    ("i2i-scale-nan", lambda tmp: image_to_image(model, X, C, U, NAN, IF, TS, 1, progress=False), ValueError,
     r"finite", "scale"),
    ("sdedit-image-3d", lambda tmp: sdedit(den, X[0], IF, TS, 1, progress=False), ValueError, r"image\[None\]",
     "image"),
    ("sdedit-image-nan", lambda tmp: sdedit(den, nan_at(X), IF, TS, 1, progress=False), ValueError, r"NaN", "image"),
    ("sdedit-image-range", lambda tmp: sdedit(den, X + 255, IF, TS, 1, value_range=(-1, 1), progress=False),
     ValueError, r"\[-1.0, 1.0\], got \[255, 255\]", "value_range"),
    ("sdedit-i-start", lambda tmp: sdedit(den, X, IF, TS, 3, progress=False), ValueError, r"got 3", "i_start"),
    ("sdedit-schedule", lambda tmp: sdedit(den, X, None, TS, 1, progress=False), ValueError, r"DDPMSchedule",
     "schedule"),
    ("inpaint-mask-size", lambda tmp: inpaint(den, X, torch.ones(7, 8), IF, TS, progress=False), ValueError,
     r"8 x 8.*torch.zeros\(8, 8\)", "mask"),
    ("inpaint-mask-channels", lambda tmp: inpaint(den, X, torch.ones(1, 3, 8, 8), IF, TS, progress=False),
     ValueError, r"does not fit", "mask"),
    ("inpaint-mask-batch", lambda tmp: inpaint(den, X, torch.ones(3, 1, 8, 8), IF, TS, progress=False), ValueError,
     r"does not fit", "mask"),
    ("inpaint-mask-half", lambda tmp: inpaint(den, X, torch.full((8, 8), 0.5), IF, TS, progress=False),
     ValueError, r"0 \(keep\) or 1", "mask"),
    ("inpaint-mask-above-one", lambda tmp: check_mask(torch.full((8, 8), 2.0), X), ValueError, r"found e.g. \[2.0",
     "mask"),
    ("inpaint-mask-nan", lambda tmp: check_mask(torch.full((8, 8), NAN), X), ValueError, r"0 \(keep\) or 1", "mask"),
    ("inpaint-mask-list", lambda tmp: inpaint(den, X, [[1]], IF, TS, progress=False), ValueError, r"tensor", "mask"),
    ("inpaint-i-start", lambda tmp: inpaint(den, X, torch.ones(8, 8), IF, TS, i_start=-1, progress=False),
     ValueError, r"got -1", "i_start"),
    ("inpaint-resample-zero", lambda tmp: inpaint(den, X, torch.ones(8, 8), IF, TS, resample_steps=0, progress=False),
     ValueError, r">= 1, got 0", "resample_steps"),
    ("inpaint-resample-float", lambda tmp: inpaint(den, X, torch.ones(8, 8), IF, TS, resample_steps=2.5,
                                                   progress=False), ValueError, r"int", "resample_steps"),
    ("inpaint-image-integer", lambda tmp: inpaint(den, X.long(), torch.ones(8, 8), IF, TS, progress=False),
     ValueError, r"float", "image"),
    # -- views -----------------------------------------------------------------------------
    ("view-unknown", lambda tmp: get_view("spin"), ValueError, r"choose one of identity, flip", "spin"),
    ("view-not-string", lambda tmp: get_view(None), ValueError, r"unknown view", "None"),
    ("view-bad-param", lambda tmp: get_view("flip", angle=3), ValueError, r"bad parameters", "flip"),
    ("view-patch-size-float", lambda tmp: get_view("patch_permute", patch_size=2.5), ValueError, r"int",
     "patch_size"),
    ("view-patch-size-zero", lambda tmp: get_view("patch_permute", patch_size=0), ValueError, r">= 1", "patch_size"),
    ("view-patch-not-dividing", lambda tmp: get_view("patch_permute", patch_size=3)(IMG), ValueError,
     r"multiple of patch_size=3, got 8x8", "patch_size"),
    ("view-jigsaw-not-dividing", lambda tmp: get_view("jigsaw", pieces=3)(IMG), ValueError,
     r"multiple of pieces=3", "pieces"),
    ("view-image-rank", lambda tmp: get_view("flip").view(IMG[0]), ValueError, r"\(B, C, H, W\)", "x"),
    ("view-rot-not-square", lambda tmp: get_view("rot90")(torch.zeros(1, 3, 8, 6)), ValueError, r"got 8x6",
     "square image x"),
    # -- filters ---------------------------------------------------------------------------
    ("blur-kernel-even", lambda tmp: gaussian_blur(IMG, 4, 1.0), ValueError, r"odd", "kernel_size"),
    ("blur-kernel-zero", lambda tmp: gaussian_kernel1d(0, 1.0), ValueError, r"odd", "kernel_size"),
    ("blur-kernel-float", lambda tmp: low_pass(IMG, 3.0, 1.0), ValueError, r"int", "kernel_size"),
    ("blur-sigma-zero", lambda tmp: gaussian_blur(IMG, 3, 0.0), ValueError, r"> 0", "sigma"),
    ("blur-sigma-nan", lambda tmp: high_pass(IMG, 3, NAN), ValueError, r"finite", "sigma"),
    ("blur-sigma-inf", lambda tmp: low_pass(IMG, 3, INF), ValueError, r"finite", "sigma"),
    ("blur-input-3d", lambda tmp: gaussian_blur(IMG[0], 3, 1.0), ValueError, r"\(B, C, H, W\)", "x"),
    ("blur-padding", lambda tmp: gaussian_blur(IMG, 3, 1.0, "mirror"), ValueError, r"reflect", "padding"),
    ("blur-kernel-too-big", lambda tmp: gaussian_blur(IMG, 17, 2.0), ValueError, r"smaller kernel", "kernel_size"),
    # -- MNIST models ----------------------------------------------------------------------
    ("mnist-size", lambda tmp: MNIST(torch.zeros(2, 1, 32, 32), torch.zeros(2), torch.zeros(2, dtype=torch.long)),
     ValueError, r"\(B, 1, 28, 28\)", "x"),
    ("mnist-channels", lambda tmp: TIME_UNET(torch.zeros(2, 3, 28, 28), torch.zeros(2)), ValueError,
     r"\(B, 1, 28, 28\)", "x"),
    ("mnist-integer-image", lambda tmp: TIME_UNET(DIGITS.long(), torch.zeros(2)), ValueError, r"float", "x"),
    ("mnist-t-shape", lambda tmp: TIME_UNET(DIGITS, torch.zeros(3)), ValueError, r"B = 2", "t"),
    ("mnist-t-string", lambda tmp: TIME_UNET(DIGITS, "0.5"), ValueError, r"number", "t"),
    ("mnist-class-out-of-range", lambda tmp: MNIST(DIGITS, torch.zeros(2), torch.tensor([3, 10])), ValueError,
     r"0..9", "c"),
    ("mnist-class-vector-size", lambda tmp: MNIST(DIGITS, torch.zeros(2), torch.zeros(2, 9)), ValueError,
     r"\(B, 10\)", "c"),
    ("mnist-class-batch", lambda tmp: MNIST(DIGITS, torch.zeros(2), torch.tensor([1, 2, 3])), ValueError,
     r"3 rows", "c"),
    ("class-vector-negative", lambda tmp: class_vector(torch.tensor([-1])), ValueError, r"0..9", "c"),
    # -- IF UNet and stage 1 ---------------------------------------------------------------
    ("unet-channels", lambda tmp: UNET(torch.zeros(2, 4, 16, 16), 500, EMB), ValueError, r"\(B, 3, H, W\)",
     "sample"),
    ("unet-size", lambda tmp: UNET(torch.zeros(2, 3, 12, 12), 500, EMB), ValueError, r"multiples of 8", "sample"),
    ("unet-text-width", lambda tmp: UNET(torch.zeros(2, 3, 16, 16), 500, torch.zeros(2, 7, 32)), ValueError,
     r"\(B, T, 64\)", "encoder_hidden_states"),
    ("unet-text-rank", lambda tmp: UNET(torch.zeros(2, 3, 16, 16), 500, torch.zeros(2, 64)), ValueError,
     r"\(B, T, 64\)", "encoder_hidden_states"),
    ("unet-text-batch", lambda tmp: UNET(torch.zeros(2, 3, 16, 16), 500, torch.zeros(3, 7, 64)), ValueError,
     r"B=2", "encoder_hidden_states"),
    ("unet-timestep-batch", lambda tmp: UNET(torch.zeros(2, 3, 16, 16), torch.zeros(3), EMB), ValueError,
     r"B=2", "timestep"),
    ("stage1-scale-nan", lambda tmp: if_stage1(UNET, EMB, EMB[:1], NAN, progress=False), ValueError, r"finite",
     "guidance_scale"),
    ("stage1-height", lambda tmp: if_stage1(UNET, EMB, EMB[:1], height=20, width=16, progress=False), ValueError,
     r"multiples of 8", "height"),
    ("stage1-width-zero", lambda tmp: if_stage1(UNET, EMB, EMB[:1], height=16, width=0, progress=False), ValueError,
     r">= 1", "width"),
    ("stage1-embeds-rank", lambda tmp: if_stage1(UNET, torch.zeros(64), EMB[:1], progress=False), ValueError,
     r"\(B, 77, D\)", "prompt_embeds"),
    ("stage1-negative-shape", lambda tmp: if_stage1(UNET, EMB, torch.zeros(1, 7, 32), progress=False), ValueError,
     r"like prompt_embeds", "negative_embeds"),
    ("stage1-x-t-channels", lambda tmp: if_stage1(UNET, EMB, EMB[:1], x_T=torch.zeros(2, 1, 16, 16), progress=False),
     ValueError, r"3 channels", "x_T"),
    ("stage1-flow-schedule", lambda tmp: if_stage1(UNET, EMB, EMB[:1], schedule=FLOW, progress=False), ValueError,
     r"DDPMSchedule", "schedule"),
    # -- data ------------------------------------------------------------------------------
    ("load-image-missing", lambda tmp: data.load_image(tmp / "nope.png"), FileNotFoundError, r"not found",
     "nope.png"),
    ("load-image-not-image", lambda tmp: data.load_image(write(tmp, "notes.png", b"not a picture")), ValueError,
     r"cannot read", "notes.png"),
    ("load-image-folder", lambda tmp: data.load_image(tmp), ValueError, r"is a folder", "load_image"),
    ("load-image-size", lambda tmp: data.load_image(tmp / "x.png", size=0), ValueError, r">= 1", "size"),
    ("save-grid-nan", lambda tmp: data.save_grid(nan_at(IMG), tmp / "g.png"), ValueError, r"NaN", "images"),
    ("save-grid-inf", lambda tmp: data.save_grid(IMG + INF, tmp / "g.png"), ValueError, r"NaN or inf", "images"),
    ("save-grid-nrow", lambda tmp: data.save_grid(IMG, tmp / "g.png", nrow=0), ValueError, r">= 1", "nrow"),
    ("save-grid-channels", lambda tmp: data.save_grid(torch.zeros(1, 2, 8, 8), tmp / "g.png"), ValueError,
     r"1 \(grey\) or 3", "images"),
    ("save-grid-value-range", lambda tmp: data.save_grid(IMG, tmp / "g.png", value_range=(1, 0)), ValueError,
     r"high > low", "value_range"),
    ("save-grid-folder", lambda tmp: data.save_grid(IMG, tmp), ValueError, r"is a folder", "samples.png"),
    ("save-grid-not-tensor", lambda tmp: data.save_grid(np.zeros((1, 3, 8, 8)), tmp / "g.png"), ValueError,
     r"ndarray", "images"),
    ("save-gif-nan", lambda tmp: data.save_gif([IMG, nan_at(IMG)], tmp / "a.gif"), ValueError, r"NaN",
     "frames[1]"),
    ("save-gif-empty", lambda tmp: data.save_gif([], tmp / "a.gif"), ValueError, r"at least one", "frames"),
    ("save-gif-shapes", lambda tmp: data.save_gif([IMG, X], tmp / "a.gif"), ValueError, r"shape of frames\[0\]",
     "frames[1]"),
    ("save-gif-duration", lambda tmp: data.save_gif([IMG], tmp / "a.gif", duration_ms=0), ValueError, r">= 1",
     "duration_ms"),
    ("to-uint8-nan", lambda tmp: data.to_uint8(nan_at(IMG)), ValueError, r"NaN", "image"),
    ("mnist-folder-missing", lambda tmp: data.load_mnist("t10k", root=tmp / "none"), FileNotFoundError,
     r"does not exist", "none"),
    ("mnist-split-unknown", lambda tmp: data.load_mnist("validation", root=tmp), ValueError, r"choose one of",
     "validation"),
    ("mnist-split-missing", lambda tmp: data.load_mnist("t10k", root=tmp), FileNotFoundError, r"has no 't10k'",
     "t10k-images-idx3-ubyte"),
    ("idx-corrupt", lambda tmp: data.read_idx(write(tmp, "t10k-images-idx3-ubyte", b"\x00\x00\x08\x03\x00")),
     ValueError, r"truncated|corrupt", "t10k-images-idx3-ubyte"),
    # -- text ------------------------------------------------------------------------------
    ("prompts-empty", lambda tmp: prompt_embeddings([], cache=tmp / "c.safetensors"), ValueError, r"empty",
     "prompts"),
    ("prompts-single-string", lambda tmp: prompt_embeddings("a cat", cache=tmp / "c.safetensors"), ValueError,
     r"single string", "prompts"),
    ("prompts-not-strings", lambda tmp: encode_prompts(["a", 3], None, None), ValueError, r"string", "prompts[1]"),
    ("cache-corrupt", lambda tmp: load_embedding_cache(write(tmp, "c.safetensors", b"garbage")), ValueError,
     r"corrupt", "c.safetensors"),
    ("cache-folder", lambda tmp: load_embedding_cache(tmp), ValueError, r"not a file", "embedding cache"),
    # -- metrics and exact denoisers -------------------------------------------------------
    ("psnr-shapes", lambda tmp: psnr(X, X[:1]), ValueError, r"equal shapes", "ref"),
    ("psnr-empty", lambda tmp: psnr(torch.zeros(0), torch.zeros(0)), ValueError, r"non-empty", "x"),
    ("psnr-range", lambda tmp: psnr(X, X, data_range=0.0), ValueError, r"> 0", "data_range"),
    ("frechet-widths", lambda tmp: frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4)), ValueError,
     r"same F", "feats_b"),
    ("frechet-one-sample", lambda tmp: frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3)), ValueError,
     r"covariance needs at least 2", "feats_a"),
    ("frechet-nan", lambda tmp: frechet_distance(torch.zeros(5, 3), torch.full((5, 3), NAN)), ValueError, r"NaN",
     "feats_b"),
    ("judge-range", lambda tmp: judge_accuracy(MNISTJudge(4), DIGITS - 1, torch.zeros(2)), ValueError,
     r"\(x \+ 1\) / 2", "images"),
    ("judge-labels", lambda tmp: judge_accuracy(MNISTJudge(4), DIGITS, torch.zeros(3)), ValueError,
     r"one label per digit", "labels"),
    ("gaussian-std-inf", lambda tmp: gaussian_denoiser(0.0, INF, IF), ValueError, r"finite", "std"),
    ("gaussian-mean-nan", lambda tmp: gaussian_denoiser(NAN, 1.0, IF), ValueError, r"finite", "mean"),
    ("finite-data-schedule", lambda tmp: finite_data_model(X, "flow"), ValueError, r"FlowSchedule", "schedule"),
]


@pytest.mark.parametrize("call, error, pattern, culprit", [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_input_is_refused_with_a_message_naming_it(tmp_path, call, error, pattern, culprit):
    with pytest.raises(error) as info:
        call(tmp_path)
    message = str(info.value)
    assert type(info.value) is error, f"{type(info.value).__name__}: {message}"
    assert re.search(pattern, message), message
    assert culprit in message, f"the message does not name {culprit!r}: {message}"


def test_case_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))


def test_refused_images_write_no_file(tmp_path):
    """A NaN image is refused before anything is written (no black picture left behind)."""
    for call in (lambda: data.save_grid(nan_at(IMG), tmp_path / "sub" / "g.png"),
                 lambda: data.save_gif([nan_at(IMG)], tmp_path / "sub" / "a.gif")):
        with pytest.raises(ValueError, match="NaN"):
            call()
    assert not (tmp_path / "sub").exists()
