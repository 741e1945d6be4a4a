"""minidiff's DDPM schedule against golden numbers made by diffusers' DDPMScheduler.

The fixture comes from tools/make_schedule_fixtures.py (run once with diffusers in a
scratch environment): for each setting it holds a start x, the model outputs fed at each
strided timestep, the N(0, I) draws diffusers used and every x it produced.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minidiff.schedule import DDPMSchedule, strided_timesteps

FIXTURE = Path(__file__).parent / "fixtures" / "ddpm_scheduler_golden.safetensors"
GOLDEN = load_file(str(FIXTURE))


def test_golden_timesteps_are_the_course_strided_schedule():
    assert GOLDEN["timesteps"].tolist() == strided_timesteps(990, 30)


def test_cosine_alphas_cumprod_equal_diffusers_squaredcos_cap_v2():
    ours = DDPMSchedule.deepfloyd().alphas_cumprod
    assert ours.dtype == torch.float32 and ours.shape == (1000,)
    torch.testing.assert_close(ours, GOLDEN["cosine_alphas_cumprod"], rtol=1e-6, atol=1e-7)


def test_linear_alphas_cumprod_equal_diffusers_linear_T300():
    ours = DDPMSchedule.linear(T=300, beta_start=1e-4, beta_end=0.02).alphas_cumprod
    torch.testing.assert_close(ours, GOLDEN["linear300_alphas_cumprod"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "name, schedule",
    [
        ("learned", DDPMSchedule.deepfloyd()),
        ("fixed", DDPMSchedule.deepfloyd()),
        ("learned_thresh", DDPMSchedule.deepfloyd(thresholding=True)),
    ],
)
def test_strided_steps_equal_diffusers_ddpm_scheduler(name, schedule):
    """Every step of a strided 990 -> 0 run, then the final 0 -> clean step, matches diffusers'
    to float32 rounding: 5e-6 relative (and absolute below 1). One step is a handful of float32
    operations, and CPUs whose kernels round differently (FMA or not, vectorized or not) put
    the results a few units of the last place apart: measured at most 4.4 * 1.19e-7 relative
    with PyTorch's default, AVX2 and AVX512 kernels, on values up to 400 (the random model
    outputs of the unthresholded runs let x grow). A wrong formula is off by 1e-3 or more."""
    timesteps = GOLDEN["timesteps"].tolist()
    x = GOLDEN[f"{name}/x_start"]
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        x = schedule.step(
            x, GOLDEN[f"{name}/model_output/{i}"], t, t_prev, noise=GOLDEN[f"{name}/noise/{i}"]
        )
        # Compare to diffusers' own trajectory at each step, and continue from *its* x so
        # that one early difference cannot hide behind later ones.
        expected = GOLDEN[f"{name}/x/{i}"]
        torch.testing.assert_close(x, expected, rtol=5e-6, atol=5e-6, msg=f"{name}: step {t} -> {t_prev}")
        x = expected


def test_thresholding_fixture_really_exercises_thresholding():
    """Guard for the golden test above: without thresholding the result must differ."""
    timesteps = GOLDEN["timesteps"].tolist()
    x = GOLDEN["learned_thresh/x_start"]
    out = GOLDEN["learned_thresh/model_output/0"]
    noise = GOLDEN["learned_thresh/noise/0"]
    plain = DDPMSchedule.deepfloyd().step(x, out, timesteps[0], timesteps[1], noise=noise)
    assert (plain - GOLDEN["learned_thresh/x/0"]).abs().max() > 1e-3
