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
    ctx.save_rows("samples.png", [[x]], [["sample"]], value_range=a.value_range)

IF is found through $MINIDIFF_IF_UNET (a folder with config.json and the safetensors
file) or the Hugging Face cache after ``minidiff fetch if-i-xl``; prompt embeddings come
from the cache that ``minidiff embed`` fills (or T5, if it is on this machine).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from minidiff.data import sample_digits_real, sample_photo  # the lessons' test images
from minidiff.schedule import DDPMSchedule, strided_timesteps

__all__ = [
    "LessonContext", "PartA", "part_a", "IF_PROMPTS", "I_STARTS", "sdedit_levels", "part_b_run", "save_loss",
    "class_lesson_start", "save_epoch_rows", "save_class_grid", "judge_says",
]

# The course's prompts, and the digit that stands in for each on the MNIST path.
IF_PROMPTS = {
    "photo": "a high quality photo", "village": "an oil painting of a snowy mountain village",
    "man": "a photo of a man", "rocket": "a rocket ship", "hat": "a man wearing a hat",
    "old_man": "an oil painting of an old man", "campfire": "an oil painting of people around a campfire",
    "skull": "a lithograph of a skull", "waterfalls": "a lithograph of waterfalls", "dog": "a photo of a dog",
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
    use: dict = field(default_factory=dict)  # --use FILE: the learner's functions by name, in place of minidiff's
    written: list[Path] = field(default_factory=list)
    said: set[str] = field(default_factory=set)  # notes already printed in this run of lessons
    show: Callable[[Path], None] | None = None  # in a notebook: shows each file under the cell once saved

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
        """Print one line of the lesson's story (above a progress bar, if one is showing)."""
        from tqdm import tqdm

        tqdm.write(text)
        sys.stdout.flush()  # in order with what goes to stderr, in a log of both

    def say_once(self, text: str) -> None:
        """Say text unless a lesson of this run said it already (``said`` is shared by 'lesson all')."""
        if text not in self.said:
            self.said.add(text)
            self.say(text)

    def save(self, name: str, write: Callable[[Path], Any]) -> Path:
        """Every figure's way out: write(out/name), recorded in ``written`` and shown in a notebook."""
        p = self.path(name)
        write(p)
        if self.show is not None:
            self.show(p)
        return p

    def save_grid(self, name: str, images: torch.Tensor, nrow: int = 8, value_range=(-1.0, 1.0)) -> Path:
        from minidiff.data import save_grid

        return self.save(name, lambda p: save_grid(images, p, nrow=nrow, value_range=value_range))

    def save_gif(self, name: str, frames: Sequence[torch.Tensor], nrow: int = 8, value_range=(-1.0, 1.0),
                 duration_ms: int = 80) -> Path:
        from minidiff.data import save_gif

        return self.save(name, lambda p: save_gif(frames, p, nrow=nrow, value_range=value_range,
                                                  duration_ms=duration_ms))

    def save_rows(self, name: str, rows: Sequence[Sequence[torch.Tensor]], *args, **kwargs) -> Path:
        """A titled figure of rows of single images: minidiff.figures.rows_figure into out/name."""
        from minidiff.figures import rows_figure

        return self.save(name, lambda p: rows_figure(p, rows, *args, **kwargs))

    def save_sampling_gif(self, name: str, states: Sequence[torch.Tensor], nrow: int = 10,
                          value_range: tuple[float, float] = (0.0, 1.0)) -> Path:
        """A sampler's states x_t from noise to image as a GIF (see minidiff.figures.sampling_gif)."""
        from minidiff.figures import sampling_gif

        return self.save(name, lambda p: sampling_gif(p, states, nrow=nrow, value_range=value_range))


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
    ``upscale``: IF stage 2, 64 -> 256 (minidiff.if_cascade), when its weights are here; else None.
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
    upscale: Callable[..., torch.Tensor] | None = None

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
        return self.encode([""]).to(self.device) if self.is_if else torch.zeros(1, 10, device=self.device)

    def label(self, prompt: str, digit: int | None) -> str:
        return prompt if self.is_if else "any digit" if digit is None else f"digit {digit}"

    def conditional(self, cond: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The plain conditional denoiser den(x_t, t) = model(x_t, t, cond), without guidance."""
        return lambda x_t, t: self.model(x_t, t, cond.expand(x_t.shape[0], *cond.shape[1:]))

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


# Said once per command, in one line; the README ("Running Part A on DeepFloyd IF") has the steps.
_IF_HOWTO = ("DeepFloyd IF weights not found, so Part A runs on the shipped MNIST model (digits for prompts); "
             "for IF: minidiff fetch if-i-xl")


def _if_backend(ctx: LessonContext, folder: Path) -> PartA:
    from minidiff.hub import find_if_unet
    from minidiff.if_cascade import Stage2Upscaler
    from minidiff.if_pipeline import GUIDANCE_SCALE, IFDenoiser
    from minidiff.models.if_unet import IFUNet
    from minidiff.text import prompt_embeddings

    dtype = torch.float16 if ctx.device.startswith("cuda") else torch.float32
    unet = IFUNet.from_pretrained(folder, dtype=dtype, device=ctx.device)
    folder2 = find_if_unet(stage=2)
    if folder2 is None:
        ctx.say_once("IF stage II not found: images stay 64 x 64 ('minidiff fetch if-ii-l' for 256 x 256).")
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
        upscale=Stage2Upscaler(folder2, unet, ctx.device, ctx.quick, ctx.progress) if folder2 else None,
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
        from minidiff.hub import find_if_unet

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


def save_upscaled(ctx: LessonContext, a: PartA, name: str, images: torch.Tensor, cond: torch.Tensor,
                  titles: Sequence[str], suptitle: str, seed: int) -> None:
    """With IF stage 2 on this machine, upscale images (N, 3, 64, 64), all with the prompt
    cond (1, 77, D), to 256 x 256 and save them as one row; without it (or on MNIST), nothing."""
    if a.upscale is None:
        return
    big = a.upscale(images, cond.expand(len(images), *cond.shape[1:]), a.uncond(), generator=ctx.generator(seed))
    ctx.save_rows(name, [list(big)], [list(titles)], value_range=a.value_range, cell=2.8,
                  suptitle=f"{suptitle}, upscaled to 256 x 256 by stage II")


def sdedit_levels(ctx: LessonContext, a: PartA, image: torch.Tensor, den, i_starts: Sequence[int] = I_STARTS):
    """SDEdit of one image at each i_start, then the original: a row of images and their titles."""
    from minidiff.edit import sdedit

    row, titles = [], []
    for k, i_start in enumerate(i_starts):
        row.append(sdedit(den, image, a.schedule, a.timesteps, i_start, generator=ctx.generator(k),
                          progress=ctx.progress, value_range=a.value_range))
        titles.append(f"i_start {i_start} (t {a.timesteps[i_start]})")
    return row + [image], titles + ["original"]


# ----------------------------------------------------------------------------------------
# Part B: training runs (shipped, or retrained with --train), loss curves, the judge
# ----------------------------------------------------------------------------------------


def part_b_run(ctx: LessonContext, name: str) -> Path:
    """The folder of a Part B training run: model.safetensors + config.json, loss.csv, snapshots/epoch_NNN.

    By default the shipped run weights/mnist/<name>. With ctx.train, a fresh run of the
    recipe <name> (``minidiff.train.RECIPES``) into ctx.out/train/<name>, timed (or the same
    run made by an earlier lesson into the same --out); in quick mode on 256 digits at
    width D = 8, only to show that the path works. A reflow student (flow-class-1step) trains on
    its teacher's pairs instead (in quick mode 64 pairs of 2 teacher steps, at the teacher's width).
    """
    import time

    from minidiff import mnist_pipeline

    if not ctx.train:
        folder = mnist_pipeline.WEIGHTS_DIR / name
        if not (folder / "config.json").is_file():
            where = " ($MINIDIFF_WEIGHTS)" if os.environ.get("MINIDIFF_WEIGHTS") else ""
            raise FileNotFoundError(
                f"no shipped MNIST run {name!r} in {mnist_pipeline.WEIGHTS_DIR}{where}: use a complete checkout, "
                f"or rerun with --train to train it here (minidiff train {name})"
            )
        return folder
    from minidiff.data import training_set
    from minidiff.run_folder import read_run_config, trained_how
    from minidiff.train import RECIPES, recipe_config, train

    overrides: dict = {"seed": ctx.seed}
    if RECIPES[name]["kind"] == "reflow":  # a student learns from its teacher's pairs, made by train()
        data, n = None, RECIPES[name]["pairs"]
        if ctx.quick:  # the teacher's width, which the student starts from; few pairs of few steps
            n = 64
            overrides.update(pairs=n, teacher_steps=2, batch_size=32, epochs=2)
    else:
        data = training_set()
        if ctx.quick:
            data = data[0][:256], data[1][:256]
            overrides.update(num_hiddens=8, batch_size=32)
        n = data[0].shape[0]
    cfg = recipe_config(name, **overrides)
    # A lesson run earlier into the same --out (lesson all --train) may have trained it already.
    for earlier in sorted(ctx.out.parent.glob(f"*/train/{name}/config.json")):
        if earlier.parents[2] == ctx.out:
            continue  # this lesson's own run from before: --train means train again
        done = read_run_config(earlier.parent)
        if all(done.get(k) == cfg[k] for k in ("recipe", "num_hiddens", "batch_size", "epochs", "seed")) and \
                done.get("train_images") == n and done.get("epochs_done") == cfg["epochs"]:
            ctx.say(f"using {name} as retrained by lesson {earlier.parents[2].name} ({trained_how(earlier.parent)})")
            return earlier.parent
    folder = ctx.out / "train" / name
    start = time.perf_counter()
    train(cfg, folder, data=data, device=ctx.device, progress=ctx.progress, overwrite=True)  # --train: train again
    what = f"{n} teacher pairs" if data is None else f"{n} digits"
    ctx.say(f"retrained {name}: {cfg['epochs']} epochs on {what} (D = {cfg['num_hiddens']}) "
            f"in {time.perf_counter() - start:.0f} s on this machine")
    return folder


def class_lesson_start(ctx: LessonContext, recipe: str, what: str, per_class: int) -> tuple:
    """(guidance, run folder, labels, noise) of a class-conditioned Part B lesson: --guidance or the shipped
    models' scale; the run, its loss curve saved; labels 0..9 repeated per_class times (a grid row per
    repeat) and one starting noise per label, the same for every model and epoch."""
    from minidiff.mnist_pipeline import GUIDANCE

    run_dir = part_b_run(ctx, recipe)
    save_loss(ctx, run_dir, what)
    labels = torch.arange(10).repeat(per_class)
    noise = torch.randn(labels.shape[0], 1, 28, 28, generator=ctx.generator(0))
    return (GUIDANCE if ctx.guidance is None else ctx.guidance), run_dir, labels, noise


def save_loss(ctx: LessonContext, run_dir: Path, what: str, name: str = "loss.png") -> Path:
    """The run's training loss curve, titled "<what>: <how it was trained>"."""
    from minidiff.run_folder import plot_loss, trained_how

    return ctx.save(name, lambda p: plot_loss(run_dir, p, f"{what}: {trained_how(run_dir)}"))


def save_epoch_rows(ctx: LessonContext, name: str, run_dir: Path, sample: Callable[[Any], torch.Tensor],
                    rows_per_epoch: int = 1, labels: torch.Tensor | None = None,
                    suptitle: str | None = None) -> tuple[Any, torch.Tensor]:
    """Samples of every saved epoch of a run: ``rows_per_epoch`` rows of 10 digits for each epoch.

    sample(model) -> (B, 1, 28, 28) in [0, 1], from the same noise for every epoch so that a
    column shows one starting point as training goes on. With ``labels`` (B,), each row label
    adds what the judge reads over all B samples. Returns the last epoch's (model, samples).
    """
    from minidiff.mnist_pipeline import load_mnist_model
    from minidiff.run_folder import run_epochs

    rows, row_labels = [], []
    for epoch, folder in run_epochs(run_dir).items():
        model = load_mnist_model(folder, device=ctx.device)
        x = sample(model).cpu()
        rows += [list(x[10 * r : 10 * (r + 1)]) for r in range(rows_per_epoch)]
        judged = f"\n{judge_says(x, labels)}" if labels is not None else ""  # only digits asked for as a class
        row_labels += [f"epoch {epoch}{judged}"] + [""] * (rows_per_epoch - 1)
    titles = [[str(d) for d in range(10)]] + [[] for _ in rows[1:]] if labels is not None else None
    ctx.save_rows(name, rows, titles, row_labels, value_range=(0.0, 1.0), cell=1.5 if labels is not None else 1.2,
                  suptitle=suptitle)
    return model, x


def save_class_grid(ctx: LessonContext, name: str, x: torch.Tensor, labels: torch.Tensor, title: str) -> Path:
    """Digits sampled as classes 0..9, 0..9, ... ((10 k, 1, 28, 28), labels (10 k,)) as k rows of 10,
    titled with what the judge reads."""
    grid = x.cpu().view(-1, 10, *x.shape[1:])
    titles = [[str(d) for d in range(10)]] + [[] for _ in grid[1:]]
    return ctx.save_rows(name, [list(row) for row in grid], titles, None, value_range=(0.0, 1.0), cell=1.0,
                         suptitle=f"{title}: {judge_says(x, labels)}")


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
