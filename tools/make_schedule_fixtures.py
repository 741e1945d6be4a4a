"""Golden numbers for minidiff.schedule, made with diffusers' DDPMScheduler.

NEEDS diffusers (not a dependency of minidiff; run it in a scratch environment):

    python -m venv /tmp/dvenv && /tmp/dvenv/bin/pip install torch diffusers safetensors
    /tmp/dvenv/bin/python tools/make_schedule_fixtures.py

It writes tests/fixtures/ddpm_scheduler_golden.safetensors: the alphas_cumprod of IF's
cosine schedule and of the linear T=300 schedule, and, for three scheduler settings, a
run of step() over the course's strided timesteps [990, 960, ..., 30, 0] from a fixed
x_T with fixed model outputs, together with every N(0, I) draw diffusers made (so that
minidiff can be handed the same noise). tests/test_schedule_golden.py compares to it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMScheduler
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "ddpm_scheduler_golden.safetensors"
TIMESTEPS = list(range(990, -1, -30))
SHAPE = (2, 3, 8, 8)

# name -> DDPMScheduler settings; "learned" runs get 2C-channel model outputs.
SETTINGS = {
    "learned": dict(variance_type="learned_range", thresholding=False, clip_sample=False),
    "fixed": dict(variance_type="fixed_small", thresholding=False, clip_sample=False),
    "learned_thresh": dict(
        variance_type="learned_range",
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.5,
        clip_sample=True,
    ),
}


def run(name: str, kwargs: dict, tensors: dict) -> None:
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", **kwargs)
    sched.set_timesteps(timesteps=TIMESTEPS)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=g)
    tensors[f"{name}/x_start"] = x.clone()
    channels = 6 if kwargs["variance_type"] == "learned_range" else 3
    for i, t in enumerate(TIMESTEPS):
        out = torch.randn(SHAPE[0], channels, *SHAPE[2:], generator=g)
        if channels == 6:
            out[:, 3:] = out[:, 3:].tanh()  # variance values roughly in [-1, 1], as IF's are
        if name == "learned_thresh":
            out[:, :3] *= 3.0  # big eps -> x0_hat beyond [-1.5, 1.5], so thresholding acts
        seed = 1000 + i
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
        x = sched.step(out, t, x, generator=torch.Generator().manual_seed(seed)).prev_sample
        tensors[f"{name}/model_output/{i}"] = out
        tensors[f"{name}/noise/{i}"] = noise
        tensors[f"{name}/x/{i}"] = x.clone()


def main() -> None:
    tensors = {
        "timesteps": torch.tensor(TIMESTEPS),
        "cosine_alphas_cumprod": DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod,
        "linear300_alphas_cumprod": DDPMScheduler(
            num_train_timesteps=300, beta_start=1e-4, beta_end=0.02, beta_schedule="linear"
        ).alphas_cumprod,
    }
    for name, kwargs in SETTINGS.items():
        run(name, kwargs, tensors)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT))
    print(f"wrote {len(tensors)} tensors to {OUT}")


if __name__ == "__main__":
    main()
