"""minidiff: diffusion models built from scratch, to learn them by building them.

The library is small pure functions around one idea: a *denoiser* is a function
``(x_t, t) -> model output``. Schedules (``minidiff.schedule``) say how images are noised,
samplers (``minidiff.samplers``) and edits (``minidiff.edit``) drive a denoiser, and
guidance rules (``minidiff.guidance``) build a denoiser from a conditional model. The
DeepFloyd IF stage-1 UNet and the MNIST UNets are two such models.

Three entry points are re-exported here (imported on first use, so that ``import minidiff``
and the command line stay fast):

    minidiff.if_stage1(unet, prompt_embeds, negative_embeds, ...)   # text -> 64x64 with IF stage 1
    minidiff.if_stage2(unet2, images, prompt_embeds, negative_embeds, ...)  # 64 -> 256 with IF stage 2
    minidiff.sample_digits(per_class=10, guidance=5.0, ...)         # digits from the shipped model
"""

__version__ = "0.1.0"

_LAZY = {
    "if_stage1": "minidiff.if_pipeline",
    "if_stage2": "minidiff.if_pipeline",
    "sample_digits": "minidiff.mnist_pipeline",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'minidiff' has no attribute {name!r}")
