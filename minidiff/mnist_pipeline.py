"""The shipped MNIST models as minidiff models, and sampling digits with them.

A trained Part B network takes its own inputs: a normalised time t / T in [0, 1] for DDPM,
the flow time for flow matching, a one-hot (B, 10) class vector. ``MNISTModel`` wraps it
into the library's model contract, ``model(x_t, t, cond) -> output``, so that the shared
samplers and guidance rules drive it exactly as they drive DeepFloyd IF::

    m = load_mnist_model("flow-class")            # weights/mnist/flow-class
    den = cfg(m, class_vectors(labels), m.uncond(len(labels)), 5.0)
    x = flow_heun(den, noise, m.schedule, flow_time_grid(8))

- DDPM models: t is the integer step (B,) long in [0, T); the network sees t / T.
- Flow models: t is the float time in [0, 1] (0 = noise, 1 = data), passed through.
- cond: (B, 10) class vectors (one-hot for a digit), ``uncond`` is all zeros; models
  without a class input ignore it.
- Images are in the model's own range, [0, 1] for every shipped MNIST model (the course
  trains on raw MNIST pixels), with N(0, I) noise; the model's schedule says so in its
  ``data_range``, which the edits of minidiff.edit check images against.

``sample_digits`` checks every size it is given against the limits below before it builds
anything of that size, so that a typo is a one-line error, never a hang or an allocator's
message; the command line's options say the same limits.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from minidiff.checks import integer, real_number, seed as check_seed
from minidiff.guidance import cfg
from minidiff.models.mnist import class_vector, fold_batchnorm, unet_time
from minidiff.paths import shipped_dir, weights_dir
from minidiff.recipes import schedule_of
from minidiff.run_folder import load_checkpoint
from minidiff.samplers import ddim, flow_euler, flow_heun, iterative_denoise, one_step_denoise
from minidiff.schedule import DDPMSchedule, FlowSchedule, strided_timesteps

__all__ = [
    "WEIGHTS_DIR",
    "SHIPPED",
    "MNISTModel",
    "load_mnist_model",
    "compile_for_inference",
    "cpp_compiler",
    "class_vectors",
    "flow_time_grid",
    "ddpm_timesteps",
    "SamplerSettings",
    "sampler_settings",
    "sample_digits",
    "guided_samples",
    "save_digit_grid",
]

WEIGHTS_DIR = shipped_dir("weights") / "mnist"  # weights/mnist of a checkout, or of the installed package
GUIDANCE = 5.0  # the classifier-free guidance scale of the course's class-conditioned models
DEFAULT_MODEL = "flow-class-ema"  # what sample_digits and `minidiff sample-digits` use unless told
SHIPPED = ["flow-class-ema", "flow-class-1step", "flow-class", "flow-time", "ddpm-class", "denoiser", "judge", "judge2"]
DATA_RANGE = (0.0, 1.0)  # raw MNIST pixels, what every shipped model was trained on

# The largest sizes sample_digits takes (and `minidiff sample-digits`, whose parser repeats them):
MAX_STEPS = 10_000  # sampler steps: 600x the default model's; the states of one batch only are kept
MAX_PER_CLASS = 10_000  # 100,000 digits: their noise and images take about 400 MB
MAX_BATCH = 1_000  # digits per batch: a guided batch of 1,000 holds about 2 GB of activations
GRID_COLUMNS = 16  # the PNG beside sample-digits' .npz shows at most this many digits of each class
FLOW_SAMPLERS = {"euler": flow_euler, "heun": flow_heun}  # the methods sample_digits takes, by model kind
DDPM_SAMPLERS = {"ddpm": iterative_denoise, "ddim": ddim}


def _resolve(name_or_dir: str | os.PathLike) -> Path:
    """The checkpoint folder of a shipped name or a path: one holding config.json (load_checkpoint checks the rest)."""
    if not isinstance(name_or_dir, (str, os.PathLike)) or not str(name_or_dir):
        raise ValueError(f"give a shipped model name ({', '.join(SHIPPED)}) or a checkpoint folder, got {name_or_dir!r}")
    path = Path(name_or_dir).expanduser()
    if (path / "config.json").is_file():
        return path
    shipped = weights_dir() / "mnist" / str(name_or_dir)  # $MINIDIFF_WEIGHTS as it is now, named if it is no folder
    if (shipped / "config.json").is_file():
        return shipped
    if path.is_file():
        raise ValueError(f"{path} is a file; give the folder holding model.safetensors and config.json")
    where = f"{path} holds no config.json" if path.is_dir() else f"no MNIST checkpoint at {str(name_or_dir)!r}"
    raise FileNotFoundError(
        f"{where}: give a folder holding model.safetensors and config.json (as minidiff train writes), "
        f"or a shipped name ({', '.join(SHIPPED)}, or e.g. flow-class/snapshots/epoch_001) under {shipped.parent}"
    )


class MNISTModel:
    """A trained MNIST network behind the ``model(x_t, t, cond)`` contract (see the module docstring)."""

    def __init__(self, net: torch.nn.Module, config: dict[str, Any]) -> None:
        self.net = net.eval()
        self.channels_last = config.get("kind") != "judge"  # the layout oneDNN's convolutions prefer
        self.config = config
        # A distilled student (kind "reflow") is a flow model: only the way it was trained differs.
        self.kind = "flow" if config["kind"] == "reflow" else config["kind"]
        self.schedule: DDPMSchedule | FlowSchedule | None = schedule_of(config)
        if self.schedule is not None:
            self.schedule.data_range = DATA_RANGE
        self.conditional = config["arch"] == "class"

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def uncond(self, batch: int) -> torch.Tensor:
        """The "no class" condition: (batch, 10) zeros."""
        return torch.zeros(batch, 10, device=self.device)

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor | float | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        if self.kind in ("denoiser", "pure-noise", "judge"):
            return self.net(x_t)
        if t is None:
            raise ValueError(f"a {self.kind} model needs a timestep t")
        t = unet_time(torch.as_tensor(t, device=x_t.device), self.schedule)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        if not self.conditional:
            return self.net(x_t, t)
        if cond is None:
            raise ValueError("a class-conditioned model needs cond: (B, 10) class vectors (zeros = no class)")
        return self.net(x_t, t, cond)


def load_mnist_model(name_or_dir: str | os.PathLike = "flow-class", device: str | torch.device = "cpu",
                     compile: bool = False) -> MNISTModel:
    """A shipped model by name (weights/mnist/<name>) or any checkpoint folder, wrapped as an MNISTModel.

    Made for inference: BatchNorm is folded into the convolutions (``fold_batchnorm``) and
    the UNets are stored channels_last; the outputs equal the trained network's up to
    float rounding (a few 1e-6), in about half the time on a CPU. For training further,
    load the checkpoint itself with ``minidiff.run_folder.load_checkpoint``.

    compile: also compile the network for inference (``compile_for_inference``).
    """
    net, config = load_checkpoint(_resolve(name_or_dir), device=device)
    model = MNISTModel(fold_batchnorm(net), config)
    if model.channels_last:
        model.net = model.net.to(memory_format=torch.channels_last)
    if compile:
        model.net = compile_for_inference(model.net)
    return model


def compile_for_inference(net: torch.nn.Module) -> torch.nn.Module:
    """net under ``torch.compile`` with inductor's freezing, for no-grad calls only.

    Inductor keeps oneDNN for the convolutions and the linear layers, and fuses the
    elementwise work between them (each GELU with the skip concatenation, the time and class
    modulation, the pooling before it) into one vectorised C++ loop each, where the eager
    network reads and writes every activation once per operation. Freezing makes the weights
    constants of the graph. The outputs equal the eager network's up to float rounding.
    The first call for each batch shape compiles (about 25 s on a 2-core CPU, 8 s when
    inductor's cache already holds the graph); after it, sampling digits ran 1.0-1.4x faster
    than eager (weights/README.md, "The default model"), so it pays from a few thousand digits.
    On a CPU this needs a C++ compiler; the check below names it before any work.
    """
    if next(net.parameters()).device.type == "cpu" and cpp_compiler() is None:
        raise RuntimeError("compiling the network on the CPU needs a C++ compiler (g++ or clang++, or $CXX) "
                           "on PATH; install one, or sample without compiling")
    return torch.compile(net, dynamic=False, options={"freezing": True})


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would find on PATH ($CXX first), or None: CPU compilation needs one."""
    for name in (os.environ.get("CXX"), "g++", "clang++", "c++"):
        if name and shutil.which(name):
            return name
    return None


def class_vectors(labels: torch.Tensor | Sequence[int], device: str | torch.device = "cpu") -> torch.Tensor:
    """Digit labels (B,) -> one-hot (B, 10) float class vectors.

    Labels are whole numbers 0..9 (a float 3.0 is class 3); 1.5, True or "3" is refused
    rather than rounded to a class.
    """
    try:
        y = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"labels must be class indices 0..9 (ints or an integer tensor), got {labels!r:.60}") from None
    whole = not y.is_floating_point() or bool((y == y.round()).all())
    if y.dtype == torch.bool or y.is_complex() or not whole:
        raise ValueError(f"labels must be whole class indices 0..9, got {y.flatten()[:6].tolist()} ({y.dtype})")
    return class_vector(y.long()).to(device)


def flow_time_grid(steps: int, grid: str = "uniform", power: float = 1.5) -> list[float]:
    """steps + 1 increasing times from 0 (noise) to 1 (data).

    uniform: i / steps. "late": 1 - (1 - i / steps)^power, denser near the data end
    (t -> 1), where the guided velocity field bends most for these models.
    """
    steps = integer(steps, "steps", minimum=1, maximum=MAX_STEPS)
    return FlowSchedule.timesteps(steps, grid=grid, power=power)


def ddpm_timesteps(T: int, steps: int) -> list[int]:
    """steps decreasing DDPM timesteps from T - 1 to 0, then -1 (a last noiseless step to x0_hat)."""
    return strided_timesteps(T - 1, end=0, steps=steps) + [-1]


def function_evaluations(method: str, steps: int, final_denoise: float = 0.0) -> int:
    """Network evaluations per sample (a batched CFG pair counts once), the final denoising step included."""
    return (2 * steps - 1 if method == "heun" else steps) + (1 if final_denoise else 0)


@dataclass(frozen=True)
class SamplerSettings:
    """How sample_digits samples: ``sampler`` over ``timesteps``, guided with scale ``guidance`` (at the
    times in ``interval`` only, when set), then a final denoising step at noise level ``final_denoise``
    (0: none)."""

    sampler: Callable
    timesteps: list
    guidance: float
    interval: tuple[float, ...] | None
    final_denoise: float


def sampler_settings(model: MNISTModel, method: str | None = None, steps: int | None = None,
                     grid: str | None = None, guidance: float | None = None,
                     guidance_interval: Sequence[float] | None = None,
                     final_denoise: float | None = None) -> SamplerSettings:
    """The model's own sampler settings (its config["sampler"]; without one Heun on 8 intervals for a
    flow model, 300 DDPM steps, guidance GUIDANCE at every step, no final step), each given value in
    its place. Every value is checked here, before anything is sampled."""
    if not model.conditional or model.schedule is None:
        raise ValueError(f"sample_digits needs a class-conditioned DDPM or flow model (shipped: flow-class, "
                         f"ddpm-class), got a {model.kind}/{model.config['arch']} model")
    own, flow = model.config.get("sampler", {}), model.kind == "flow"
    if steps is None:
        steps = own.get("steps", 8 if flow else 300)
    steps = integer(steps, "steps (None for the model's own)", minimum=1, maximum=MAX_STEPS)
    method = method or own.get("method", "heun" if flow else "ddpm")
    sampler = (FLOW_SAMPLERS if flow else DDPM_SAMPLERS).get(method)
    if sampler is None:
        raise ValueError(f"method {method!r} does not fit a {model.kind} model")
    s = real_number(own.get("final_denoise", 0.0) if final_denoise is None else final_denoise, "final_denoise",
                    nonnegative=True)
    if s >= 1:
        raise ValueError(f"final_denoise is a noise level s in [0, 1) (the step is taken at flow time 1 - s), got {s}")
    if s and not flow:
        raise ValueError(f"final_denoise (--final-denoise) needs a flow model; this one is a {model.kind} model: leave it out")
    timesteps = (flow_time_grid(steps, grid or own.get("grid", "uniform")) if flow
                 else ddpm_timesteps(model.config["T"], steps))
    guidance = real_number(own.get("guidance", GUIDANCE) if guidance is None else guidance, "guidance")
    interval = own.get("guidance_interval") if guidance_interval is None else guidance_interval
    return SamplerSettings(sampler, timesteps, guidance, None if interval is None else tuple(interval), s)


@torch.inference_mode()
def sample_digits(
    model: MNISTModel | str | os.PathLike | None = None,
    per_class: int = 10,
    guidance: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    method: str | None = None,
    grid: str | None = None,
    batch_size: int = 100,
    progress: bool = True,
    guidance_interval: Sequence[float] | None = None,
    final_denoise: float | None = None,
    settings: SamplerSettings | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """per_class digits of each class 0..9 with classifier-free guidance.

    Returns images uint8 (10 * per_class, 28, 28), white digit on black, and labels int64,
    in class order (0, 0, ..., 1, 1, ...). The same seed gives the same digits. method, steps,
    grid, guidance, guidance_interval (t_lo, t_hi: guide only the steps at those times, see
    ``minidiff.guidance.cfg``) and final_denoise default to the model's own (``sampler_settings``);
    ``settings``, the result of sampler_settings, takes their place. batch_size: digits per batch
    (the guided call holds twice as many); about 100 keeps a batch's activations in this CPU's caches.
    Limits: per_class in [1, MAX_PER_CLASS], steps in [1, MAX_STEPS] (and at most T for a DDPM
    model), batch_size in [1, MAX_BATCH], seed in [0, 2**63 - 1].

    final_denoise s > 0 (flow models): one more guided evaluation after the sampler, which takes the
    sample for x_t at t = 1 - s and returns the clean estimate x1_hat = x + s v(x, 1 - s), the last
    denoising step of Jolicoeur-Martineau et al. (2021). It removes most of the residual noise of a
    few 1/255 that the velocity, imprecise near t = 1, leaves (faint pixels 24% -> 8.4% on the default
    model at s = 0.025, weights/README.md; real digits have 2.4%, and the README says why the rest stays).
    """
    per_class = integer(per_class, "per_class", minimum=1, maximum=MAX_PER_CLASS,
                        why=f"at most {10 * MAX_PER_CLASS:,} digits in one call")
    batch_size = integer(batch_size, "batch_size", minimum=1, maximum=MAX_BATCH)
    seed = check_seed(seed)
    if not isinstance(model, MNISTModel):
        model = load_mnist_model(model or DEFAULT_MODEL, device=device)
    given = (method, steps, grid, guidance, guidance_interval, final_denoise)
    if settings is not None and any(value is not None for value in given):
        raise ValueError("give settings (from sampler_settings) or the values it holds, not both")
    settings = settings or sampler_settings(model, method, steps, grid, guidance, guidance_interval, final_denoise)

    labels = torch.arange(10).repeat_interleave(per_class)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(labels.shape[0], 1, 28, 28, generator=generator)
    x = guided_samples(model, noise, labels, settings, batch_size, generator, progress)
    return (x * 255).round().to(torch.uint8)[:, 0].numpy(), labels.numpy().astype(np.int64)


@torch.inference_mode()
def guided_samples(model: MNISTModel, noise: torch.Tensor, labels: torch.Tensor, settings: SamplerSettings,
                   batch_size: int = 100, generator: torch.Generator | None = None,
                   progress: bool = True) -> torch.Tensor:
    """Digits of classes labels (B,) from noise (B, 1, 28, 28), as settings sample them: float (B, 1, 28, 28)
    in [0, 1] on the CPU, batch_size digits at a time (what sample_digits rounds to 8 bits)."""
    out = []
    for i in range(0, labels.shape[0], batch_size):
        y = labels[i : i + batch_size]
        den = cfg(model, class_vectors(y, model.device), model.uncond(1), settings.guidance, interval=settings.interval)
        x = settings.sampler(den, noise[i : i + batch_size].to(model.device), model.schedule, settings.timesteps,
                             generator=generator, progress=progress)
        if settings.final_denoise:
            x = one_step_denoise(den, x, model.schedule, 1.0 - settings.final_denoise)
        out.append(x.float().cpu().clamp(0, 1))
    return torch.cat(out)


def save_digit_grid(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray,
                    columns: int = GRID_COLUMNS, title: str | None = None) -> Path:
    """Digits as sample_digits returns them (uint8 (N, 28, 28), labels (N,)) as a PNG, one row per
    class 0..9 with at most ``columns`` digits each (the first ones), like the lessons' grids."""
    from minidiff.figures import grid_figure

    x = torch.from_numpy(np.asarray(images)).float().div(255).unsqueeze(1)
    labels = np.asarray(labels)
    classes = [c for c in range(10) if (labels == c).any()]
    rows = [list(x[np.flatnonzero(labels == c)[:columns]]) for c in classes]
    return grid_figure(path, rows, [f"digit {c}" for c in classes], value_range=(0.0, 1.0), suptitle=title)
