"""What the lessons share: where figures go, and which model plays Part A.

Part A of the course runs on DeepFloyd IF stage 1. Its weights are gated and large, so a
lesson asks ``part_a(ctx)`` for a backend: IF when its UNet and prompt embeddings are on
this machine, otherwise the shipped class-conditional MNIST DDPM model, where a digit
class plays the role of a prompt. Both are models ``model(x_t, t, cond)`` with a
DDPMSchedule, so the lesson's code is the same for both; only the pictures differ.

    ctx = LessonContext(out=Path("out/A1.7"), quick=False, seed=0)
    a = part_a(ctx)                               # IF, or MNIST with a note saying why
    cond = a.cond("a high quality photo", digit=3)
    den = cfg(a.model, cond, a.uncond(), a.guidance_scale)
    x = iterative_denoise(den, x_T, a.schedule, a.timesteps)
    ctx.save_row("samples.png", [x], ["sample"], a)

IF is found through $MINIDIFF_IF_UNET (a folder with config.json and the safetensors
file) or the Hugging Face cache after ``minidiff fetch if-i-xl``; prompt embeddings come
from the cache that ``minidiff embed`` fills (or T5, if it is on this machine).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from minidiff.data import sample_digits_real, sample_photo  # the lessons' test images
from minidiff.schedule import DDPMSchedule, strided_timesteps

__all__ = [
    "LessonContext",
    "PartA",
    "part_a",
    "find_if_unet",
    "IF_PROMPTS",
    "I_STARTS",
    "sdedit_levels",
    "main",
]

# The course's prompts, and the digit that stands in for each on the MNIST path.
IF_PROMPTS = {
    "photo": "a high quality photo",
    "village": "an oil painting of a snowy mountain village",
    "man": "a photo of a man",
    "rocket": "a rocket ship",
    "hat": "a man wearing a hat",
    "old_man": "an oil painting of an old man",
    "campfire": "an oil painting of people around a campfire",
    "skull": "a lithograph of a skull",
    "waterfalls": "a lithograph of waterfalls",
    "dog": "a photo of a dog",
    "pencil": "a pencil",
}


# ----------------------------------------------------------------------------------------
# The lesson's context: options and figures
# ----------------------------------------------------------------------------------------


@dataclass
class LessonContext:
    """Options of one lesson run and the list of files it wrote."""

    out: Path
    quick: bool = False
    seed: int = 0
    device: str = "cpu"
    model: str = "auto"  # "auto", "if" or "mnist"
    progress: bool = True
    image: str | None = None  # a user's image file, for the lessons that edit one
    guidance: float | None = None  # classifier-free guidance scale; None: the model's own
    train: bool = False  # Part B: retrain instead of showing the shipped checkpoints
    written: list[Path] = field(default_factory=list)
    said: set[str] = field(default_factory=set)  # notes already printed in this run of lessons

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh CPU generator seeded with seed + offset: every figure is reproducible."""
        return torch.Generator().manual_seed(self.seed + offset)

    def path(self, name: str) -> Path:
        p = self.out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        self.written.append(p)
        return p

    def say(self, text: str) -> None:
        print(text, flush=True)

    def say_once(self, text: str) -> None:
        """Say text unless a lesson of this run said it already (``said`` is shared by 'lesson all')."""
        if text not in self.said:
            self.said.add(text)
            self.say(text)

    def save_grid(self, name: str, images: torch.Tensor, nrow: int = 8, value_range=(-1.0, 1.0)) -> Path:
        from minidiff.data import save_grid

        return save_grid(images, self.path(name), nrow=nrow, value_range=value_range)

    def save_gif(self, name: str, frames: Sequence[torch.Tensor], nrow: int = 8, value_range=(-1.0, 1.0),
                 duration_ms: int = 80) -> Path:
        from minidiff.data import save_gif

        return save_gif(frames, self.path(name), nrow=nrow, value_range=value_range, duration_ms=duration_ms)

    def save_rows(
        self,
        name: str,
        rows: Sequence[Sequence[torch.Tensor]],
        titles: Sequence[Sequence[str]] | None = None,
        row_labels: Sequence[str] | None = None,
        value_range: tuple[float, float] = (-1.0, 1.0),
        suptitle: str | None = None,
        cell: float = 1.6,
    ) -> Path:
        """A titled figure of rows of single images (see minidiff.figures.rows_figure)."""
        from minidiff.figures import rows_figure

        return rows_figure(self.path(name), rows, titles, row_labels, value_range, suptitle, cell)

    def save_sampling_gif(self, name: str, states: Sequence[torch.Tensor], nrow: int = 10,
                          value_range: tuple[float, float] = (0.0, 1.0)) -> Path:
        """A sampler's states x_t from noise to image as a GIF (see minidiff.figures.sampling_gif)."""
        from minidiff.figures import sampling_gif

        return sampling_gif(self.path(name), states, nrow=nrow, value_range=value_range)


# ----------------------------------------------------------------------------------------
# Part A backends
# ----------------------------------------------------------------------------------------


@dataclass
class PartA:
    """The model a Part A lesson uses, with everything that differs between IF and MNIST.

    model(x_t, t, cond) -> eps (or eps + variance for IF); images live in ``value_range``.
    ``cond(prompt, digit)`` gives the condition for a prompt (IF) or digit class (MNIST).
    Timesteps: the course's strided list for IF (990, 960, ..., 0); for MNIST's T = 300
    the same 30-step stride pattern scaled to [290, 280, ..., 0].
    """

    name: str
    model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    schedule: DDPMSchedule
    timesteps: list[int]
    image_shape: tuple[int, int, int]
    value_range: tuple[float, float]
    guidance_scale: float
    encode: Callable[[Sequence[str]], torch.Tensor] | None = None
    device: str = "cpu"
    hybrid_kernel: tuple[int, float] = (33, 2.0)
    user_image: torch.Tensor | None = None  # --image, in this model's range and shape

    @property
    def is_if(self) -> bool:
        return self.name == "if"

    @property
    def T(self) -> int:
        return self.schedule.num_timesteps

    def scale_t(self, t_if: int) -> int:
        """A timestep of the course (out of 1000) on this schedule: the same fraction of T."""
        return min(self.T - 1, round(t_if * self.T / 1000))

    def cond(self, prompt: str, digit: int | None) -> torch.Tensor:
        """(1, ...) condition: the prompt's T5 embedding (IF) or the digit's one-hot vector.

        digit None stands for the course's generic prompt ("a high quality photo"): on MNIST
        it is the zero "no class" vector, so the model may make any digit.
        """
        if self.is_if:
            return self.encode([prompt]).to(self.device)
        if digit is None:
            return self.uncond()
        from minidiff.mnist_pipeline import class_vectors

        return class_vectors([digit], self.device)

    def uncond(self) -> torch.Tensor:
        """(1, ...) unconditional condition: the empty prompt "" (IF) or the zero class vector."""
        if self.is_if:
            return self.encode([""]).to(self.device)
        return torch.zeros(1, 10, device=self.device)

    def label(self, prompt: str, digit: int | None) -> str:
        if self.is_if:
            return prompt
        return "any digit" if digit is None else f"digit {digit}"

    def conditional(self, cond: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The plain conditional denoiser den(x_t, t) = model(x_t, t, cond), without guidance."""

        def den(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.model(x_t, t, cond.expand(x_t.shape[0], *cond.shape[1:]))

        return den

    def test_image(self) -> torch.Tensor:
        """The lessons' clean image in this model's range: --image if given, else a photo (IF) or a real 7 (MNIST)."""
        if self.user_image is not None:
            return self.user_image
        if self.is_if:
            return sample_photo(self.image_shape[-1]).to(self.device)
        images, labels = sample_digits_real()
        return images[labels == 7][:1].to(self.device)

    def noise(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(batch, *self.image_shape, generator=generator).to(self.device)

    def to_model_range(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images (as minidiff.data.load_image gives) to this model's range and shape."""
        lo, hi = self.value_range
        c, h, w = self.image_shape
        if x.shape[1] != c:
            x = x.mean(1, keepdim=True) if c == 1 else x.expand(-1, c, -1, -1)
        if x.shape[-2:] != (h, w):
            x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        return ((x + 1) / 2 * (hi - lo) + lo).to(self.device)


def find_if_unet() -> Path | None:
    """A local IF stage-1 UNet folder: $MINIDIFF_IF_UNET, else the hub cache (no download)."""
    env = os.environ.get("MINIDIFF_IF_UNET")
    if env:
        folder = Path(env).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"MINIDIFF_IF_UNET={env} holds no config.json; point it at IF's unet/ folder")
        return folder
    try:
        from huggingface_hub import try_to_load_from_cache

        from minidiff.hub import REPOS

        for repo in REPOS.values():
            cfg = try_to_load_from_cache(repo, "unet/config.json")
            weights = try_to_load_from_cache(repo, "unet/diffusion_pytorch_model.fp16.safetensors")
            if isinstance(cfg, str) and isinstance(weights, str):
                return Path(cfg).parent
    except Exception:  # an unreadable cache is the same as no cache here
        return None
    return None


_IF_HOWTO = (
    "DeepFloyd IF weights not found, so this lesson runs the same technique on the shipped "
    "MNIST class-conditional model (digits play the prompts). For IF: accept the licence at "
    "huggingface.co/DeepFloyd/IF-I-XL-v1.0, set HF_TOKEN, run 'minidiff fetch if-i-xl' and "
    "'minidiff embed' for the prompts (or set MINIDIFF_IF_UNET), then rerun with --model if."
)


def _if_backend(ctx: LessonContext, folder: Path) -> PartA:
    from minidiff.if_pipeline import GUIDANCE_SCALE, IFDenoiser
    from minidiff.models.if_unet import IFUNet
    from minidiff.text import prompt_embeddings

    dtype = torch.float16 if ctx.device.startswith("cuda") else torch.float32
    unet = IFUNet.from_pretrained(folder, dtype=dtype, device=ctx.device)
    return PartA(
        name="if",
        model=IFDenoiser(unet),
        schedule=DDPMSchedule.deepfloyd(),
        # quick mode strides by 90 (12 steps) so a check of the whole path takes seconds
        timesteps=strided_timesteps(990, 90 if ctx.quick else 30),
        image_shape=(3, 64, 64),
        value_range=(-1.0, 1.0),
        guidance_scale=GUIDANCE_SCALE,
        encode=lambda prompts: prompt_embeddings(list(prompts), device="cpu"),
        device=ctx.device,
    )


def _mnist_backend(ctx: LessonContext) -> PartA:
    from minidiff.mnist_pipeline import GUIDANCE, load_mnist_model

    m = load_mnist_model("ddpm-class", device=ctx.device)
    T = m.schedule.num_timesteps
    stride = max(1, T // 30)
    return PartA(
        name="mnist",
        model=m,
        schedule=m.schedule,
        timesteps=strided_timesteps(stride * ((T - 1) // stride), stride),
        image_shape=(1, 28, 28),
        value_range=(0.0, 1.0),
        guidance_scale=GUIDANCE,
        device=ctx.device,
        hybrid_kernel=(9, 1.5),
    )


def part_a(ctx: LessonContext) -> PartA:
    """The Part A backend for this run: IF when asked for or available, else MNIST.

    --guidance replaces the backend's own scale, and --image its test image.
    """
    a = None
    if ctx.model in ("auto", "if"):
        folder = find_if_unet()
        if folder is not None:
            a = _if_backend(ctx, folder)
        elif ctx.model == "if":
            raise FileNotFoundError(
                "--model if: no DeepFloyd IF stage-1 UNet on this machine. To get it, accept the licence at "
                "huggingface.co/DeepFloyd/IF-I-XL-v1.0, set HF_TOKEN, run 'minidiff fetch if-i-xl' and "
                "'minidiff embed' for the prompts (or set MINIDIFF_IF_UNET to a unet/ folder); or drop --model if "
                "to run the lesson on the shipped MNIST model"
            )
        else:
            ctx.say_once(_IF_HOWTO)
    a = a or _mnist_backend(ctx)
    if ctx.guidance is not None:
        a.guidance_scale = ctx.guidance
    if ctx.image is not None:
        from minidiff.data import load_image

        a.user_image = a.to_model_range(load_image(ctx.image, size=max(a.image_shape[-2:])))
    return a


I_STARTS = [1, 3, 5, 7, 10, 20]  # the course's SDEdit levels: t = 960, 900, 840, 780, 690, 390 for IF


def sdedit_levels(ctx: LessonContext, a: PartA, image: torch.Tensor, den, i_starts: Sequence[int] = I_STARTS):
    """SDEdit of one image at each i_start, then the original: a row of images and their titles."""
    from minidiff.edit import sdedit

    row, titles = [], []
    for k, i_start in enumerate(i_starts):
        row.append(sdedit(den, image, a.schedule, a.timesteps, i_start, generator=ctx.generator(k),
                          progress=ctx.progress, value_range=a.value_range))
        titles.append(f"i_start {i_start} (t {a.timesteps[i_start]})")
    return row + [image], titles + ["original"]


def main(run: Callable[[LessonContext], None], doc: str | None = None, argv: Sequence[str] | None = None) -> None:
    """``python lessons/<script>.py --out DIR [...]``: the same run, options and folder (DIR/<id>) as
    ``minidiff lesson <id> --out DIR [...]``."""
    import argparse
    import sys

    from minidiff.cli import add_lesson_options, report_errors
    from minidiff.lessons_index import lesson_info, run_lesson

    info = lesson_info(Path(sys.modules[run.__module__].__file__))
    p = argparse.ArgumentParser(prog=info.path.name, description=(doc or "").strip().splitlines()[0] if doc else None)
    add_lesson_options(p)
    args = p.parse_args(argv)

    def go(args: argparse.Namespace) -> int:
        for path in run_lesson(info, Path(args.out), run=run, quick=args.quick, seed=args.seed, device=args.device,
                               model=args.model, image=args.image, guidance=args.guidance, train=args.train):
            print(path)
        return 0

    code = report_errors(f"lesson {info.id}", go, args)
    if code:
        raise SystemExit(code)


# ----------------------------------------------------------------------------------------
# Part B: training runs (shipped, or retrained with --train), loss curves, the judge
# ----------------------------------------------------------------------------------------


def part_b_run(ctx: LessonContext, name: str) -> Path:
    """The folder of a Part B training run: model.safetensors + config.json, loss.csv, snapshots/epoch_NNN.

    By default the shipped run weights/mnist/<name>. With ctx.train, a fresh run of the
    recipe <name> (``minidiff.train.RECIPES``) into ctx.out/train/<name>, timed (or the same
    run made by an earlier lesson into the same --out); in quick mode on 256 digits at
    width D = 8, only to show that the path works.
    """
    import time

    from minidiff import mnist_pipeline

    if not ctx.train:
        folder = mnist_pipeline.WEIGHTS_DIR / name
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"no shipped MNIST run {name!r} in {mnist_pipeline.WEIGHTS_DIR}: use a complete checkout, "
                f"or rerun with --train to train it here (minidiff train {name})"
            )
        return folder
    from minidiff.data import training_set
    from minidiff.train import recipe_config, train

    x, y = training_set()
    overrides: dict = {"seed": ctx.seed}
    if ctx.quick:
        x, y = x[:256], y[:256]
        overrides.update(num_hiddens=8, batch_size=32)
    cfg = recipe_config(name, **overrides)
    # A lesson run earlier into the same --out (lesson all --train) may have trained it already.
    for earlier in sorted(ctx.out.parent.glob(f"*/train/{name}/config.json")):
        if earlier.parents[2] == ctx.out:
            continue  # this lesson's own run from before: --train means train again
        done = run_config(earlier.parent)
        if all(done.get(k) == cfg[k] for k in ("recipe", "num_hiddens", "batch_size", "epochs", "seed")) and \
                done.get("train_images") == x.shape[0] and done.get("epochs_done") == cfg["epochs"]:
            ctx.say(f"using {name} as retrained by lesson {earlier.parents[2].name} ({trained_how(earlier.parent)})")
            return earlier.parent
    folder = ctx.out / "train" / name
    start = time.perf_counter()
    train(cfg, folder, data=(x, y), device=ctx.device, progress=ctx.progress, overwrite=True)  # --train: train again
    ctx.say(f"retrained {name}: {cfg['epochs']} epochs on {x.shape[0]} digits (D = {cfg['num_hiddens']}) "
            f"in {time.perf_counter() - start:.0f} s on this machine")
    return folder


def run_config(folder: Path) -> dict:
    import json

    with open(Path(folder) / "config.json") as f:
        return json.load(f)


def run_epochs(folder: Path) -> dict[int, Path]:
    """{epoch: checkpoint folder} of a run: each snapshots/epoch_NNN, and the final model at its last epoch."""
    found = {}
    for snap in sorted((Path(folder) / "snapshots").glob("epoch_*")):
        if (snap / "config.json").is_file():
            found[int(snap.name.split("_")[1])] = snap
    cfg = run_config(folder)
    found[round(cfg.get("epochs_done", cfg["epochs"]))] = Path(folder)
    return dict(sorted(found.items()))


def trained_how(folder: Path) -> str:
    """'D = 32, 10 epochs, 2030 steps of 64, 14.2 min': what a run's config says about its training."""
    cfg = run_config(folder)
    text = f"{cfg.get('epochs_done', cfg['epochs']):g} epochs, {cfg.get('steps', 0)} steps of {cfg['batch_size']}"
    if cfg.get("num_hiddens"):
        text = f"D = {cfg['num_hiddens']}, " + text
    if cfg.get("wall_s"):
        wall = float(cfg["wall_s"])
        text += f", {wall / 60:.1f} min" if wall >= 120 else f", {wall:.0f} s"
    return text


def save_loss_curve(ctx: LessonContext, name: str, folder: Path, title: str) -> Path:
    """A run's training loss (folder/loss.csv) against epochs, on a log scale, with a running mean."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log_file = Path(folder) / "loss.csv"
    if not log_file.is_file():
        raise FileNotFoundError(f"{log_file} not found: the run's loss log ships with its weights")
    with open(log_file) as f:
        rows = list(csv.DictReader(f))
    steps_per_epoch = run_config(folder).get("steps_per_epoch") or max(1, len(rows))
    epoch = np.array([int(r["step"]) for r in rows]) / steps_per_epoch
    loss = np.array([float(r["loss"]) for r in rows])
    window = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epoch, loss, lw=0.5, alpha=0.4 if window > 1 else 1.0, label="loss per step")
    if window > 1:
        ax.plot(epoch[window - 1 :], smooth, lw=1.5, label=f"mean of {window} steps")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (MSE)")
    if len(title) > 60:  # "what: how it was trained" outgrows one line of a 6-inch figure
        title = title.replace(": ", "\n", 1)
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    path = ctx.path(name)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@functools.cache
def _judge(folder: Path) -> torch.nn.Module:
    from minidiff import mnist_pipeline

    return mnist_pipeline.load_mnist_model(folder).net


def judge_says(images: torch.Tensor, labels: torch.Tensor) -> str:
    """'judge: 97% correct': how many digits (N, 1, 28, 28) in [0, 1] the shipped judge reads as
    their labels (N,), for a figure title; '' when no judge is shipped.

    Only for digits meant to be a class: on noise or scribbles the judge still answers, often
    confidently, so its confidence says nothing about unconditional samples.
    """
    from minidiff import mnist_pipeline
    from minidiff.metrics import judge_accuracy

    folder = mnist_pipeline.WEIGHTS_DIR / "judge"
    if not (folder / "config.json").is_file():
        return ""
    accuracy = judge_accuracy(_judge(folder), images.detach().float().cpu().clamp(0, 1), labels.cpu())
    return f"judge: {accuracy:.0%} correct"
