"""IF's cascade for the Part A lessons: the stage-1 64 x 64 images upscaled to 256 x 256 by stage 2.

When IF stage 2 (IF-II-L/M) is on this machine (``minidiff fetch if-ii-l``, or
$MINIDIFF_IF2_UNET), the IF backend of ``minidiff.course.part_a`` sets ``a.upscale`` to a
``Stage2Upscaler``; on MNIST, and without stage-2 weights, ``a.upscale`` is None.

    x = iterative_denoise(den, a.noise(1, g), a.schedule, a.timesteps)     # (1, 3, 64, 64)
    if a.upscale is not None:
        big = a.upscale(x, a.cond(prompt, digit), a.uncond(), generator=g)  # (1, 3, 256, 256)

Memory: stage 1 and stage 2 are never on the GPU together. Stage 2 is loaded (fp16 on
CUDA, as stage 1) on its first call, into CPU memory. On CUDA each call moves the stage-1
UNet to the CPU, stage 2 to the GPU, upscales, then moves stage 2 back to the CPU and
stage 1 back to the GPU; so one call per figure (a batch of images) is cheaper than one
per image. The sampling state stays float32, as for stage 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from minidiff.if_pipeline import if_stage2
from minidiff.schedule import strided_timesteps
from minidiff.views import View

__all__ = ["Stage2Upscaler"]


class Stage2Upscaler:
    """``upscale(images, cond, uncond, views=None, hybrid=None, generator=None) -> (B, 3, 256, 256)``.

    images (B, 3, 64, 64) in [-1, 1]; cond (B, 77, D) one prompt per image, or with views
    (visual anagrams) one prompt per view, or with hybrid=(kernel_size, sigma) at 64 px the
    far and the near prompt (the kernel is widened 4x for 256 px); uncond (1, 77, D). The
    result is on the images' device. quick: 3 stage-2 steps instead of diffusers' 50, to check the path in seconds.
    """

    def __init__(self, folder: Path, stage1: torch.nn.Module, device: str = "cpu", quick: bool = False,
                 progress: bool = True):
        self.folder, self.stage1, self.device = Path(folder), stage1, device
        self.timesteps = strided_timesteps(980, 490) if quick else None  # None: if_stage2's default 50 steps
        self.progress = progress
        self.unet: torch.nn.Module | None = None  # loaded on the first call

    def __call__(self, images: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
                 views: Sequence[View | str] | None = None, hybrid: tuple[int, float] | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        from minidiff.models.if_unet import IFUNet

        if hybrid is not None:  # the same frequency split on the 4x finer grid
            factor = 256 // images.shape[-1]
            hybrid = (factor * (hybrid[0] - 1) + 1, factor * hybrid[1])
        on_gpu = self.device.startswith("cuda")
        if self.unet is None:
            self.unet = IFUNet.from_pretrained(self.folder, dtype=torch.float16 if on_gpu else torch.float32)
        if on_gpu:
            self.stage1.to("cpu")
            torch.cuda.empty_cache()
            self.unet.to(self.device)
        try:
            out = if_stage2(self.unet, images.float().cpu(), cond.float().cpu(), uncond.float().cpu(),
                            timesteps=self.timesteps, generator=generator, progress=self.progress, views=views,
                            hybrid=hybrid)
        finally:
            if on_gpu:
                self.unet.to("cpu")
                torch.cuda.empty_cache()
                self.stage1.to(self.device)
        return out.to(images.device)
