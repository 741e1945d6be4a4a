"""minidiff: diffusion models built from scratch, to learn them by building them.

The library is small pure functions around one idea: a *denoiser* is a function
``(x_t, t) -> model output``. Schedules (``minidiff.schedule``) say how images are noised,
samplers (``minidiff.samplers``) and edits (``minidiff.edit``) drive a denoiser, and
guidance rules (``minidiff.guidance``) build a denoiser from a conditional model. The
DeepFloyd IF stage-1 UNet and the MNIST UNets are two such models.
"""

__version__ = "0.1.0"
