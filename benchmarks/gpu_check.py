"""Every CUDA path of minidiff in one command: its figures in one JSON file and one Markdown table.

    python3 benchmarks/gpu_check.py --device cuda --out gpu_out --diffusers-path benchmarks/.gpu_deps
    python3 benchmarks/gpu_check.py --device cpu --out /tmp/gpu_check        # tiny sizes: what CI runs
    python3 benchmarks/gpu_check.py --prepare-diffusers benchmarks/.gpu_deps  # wheels to carry (needs PyPI)

The cases (on a CPU the same code runs on tiny networks and data, so every path is tested):

  stage1            IF-I-XL with random fp16 weights made on the GPU: its forward against the same
                    weights in float32, if_stage1 steps/s at 64 x 64 with CFG, peak memory beside
                    the README's meta-device count (benchmarks/bench_if_memory.py)
  stage1_diffusers  the same weights in diffusers' UNet2DConditionModel (only where diffusers can be
                    imported): the ratio of forward times and the largest output difference
  stage2            IF-II-L: if_stage2 64 -> 256 steps/s, peak memory beside the meta-device count
  cascade           stage I, then stage II through minidiff.if_cascade.Stage2Upscaler as the lessons
                    use it (the two networks take turns on the GPU), against both resident
  mnist             `minidiff train flow-class` in float32 and with --amp bf16 (images/s, final
                    loss), `minidiff sample-digits` for 1,000 digits, channels_last and inference mode
  torchrun          torchrun, one process per GPU (nccl; gloo on a CPU): a run stopped half way and
                    resumed, world_size recorded; a one-step check of the collectives and DDP

Each case runs in a process of its own, so a crash, an out-of-memory error or a hang ends that
case only, and each starts with empty GPU memory; a case past its time limit is stopped and
recorded as "timed out" with what it had measured so far. OUT/gpu_check.json and
OUT/gpu_check.md are rewritten whole (atomically) every second while a case records figures,
so a run that is cut off still leaves them; OUT/gpu_check.log holds the cases' stderr. The whole
run keeps to --budget seconds (default 300). No T5 is needed: the prompt embeddings are random,
(1, 77, 4096) as T5-XXL's. See benchmarks/README.md, "Running the GPU check".
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (ROOT, HERE):  # minidiff from this checkout (a GPU machine may not have it installed); bench_if_memory
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

GiB = 2**30
DIFFUSERS_VERSION = "0.42.1"  # the version the tests' fixtures were made with
BUDGET_S = 300  # the five minutes, start-up of each case included
MIN_CASE_S = 15  # a case is not started with less time left than this
HANG_LIMIT_S = 4  # the time limit of a case given --hang-case


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    limit_s: dict[str, int]  # by device; the CUDA limits add up to BUDGET_S


CASES = [
    Case("stage1", "IF-I-XL fp16: forward against float32, if_stage1 steps/s, peak memory",
         {"cuda": 70, "cpu": 150}),
    Case("stage1_diffusers", "IF-I-XL fp16 in diffusers: forward time ratio, largest output difference",
         {"cuda": 45, "cpu": 150}),
    Case("stage2", "IF-II-L fp16: if_stage2 64 -> 256 steps/s, peak memory", {"cuda": 35, "cpu": 150}),
    Case("cascade", "stage I then stage II via if_cascade (one network at a time) against both resident",
         {"cuda": 65, "cpu": 150}),
    Case("mnist", "minidiff train flow-class fp32 and --amp bf16, sample-digits 1,000 digits",
         {"cuda": 45, "cpu": 150}),
    Case("torchrun", "torchrun, one process per GPU: a run stopped half way, resumed; collectives",
         {"cuda": 40, "cpu": 150}),
]
CASE_NAMES = [c.name for c in CASES]


class Skip(Exception):
    """A case that cannot run here (diffusers not importable): recorded as "skipped: <reason>"."""


# ----------------------------------------------------------------------------------------
# What each case runs: IF at full size on a GPU, tiny networks on a CPU
# ----------------------------------------------------------------------------------------


def _fixture(name: str) -> dict:
    """A config the tests use (data files only: nothing is imported from tests/)."""
    data = json.loads((ROOT / "tests" / "fixtures" / name).read_text())
    return data.get("config", data)


@dataclass(frozen=True)
class Sizes:
    stage1: dict  # IF stage-1 config
    stage2: dict  # IF stage-2 config
    stage1_px: int  # stage 1's image side; stage 2 upscales it 4x (the cascade always to 256, as the lessons)
    stage1_stride: int  # if_stage1 timesteps: strided_timesteps(990, stride)
    stage2_timesteps: list[int]
    repeats: int  # timed forwards of each implementation in stage1_diffusers
    train_steps: int
    train_hidden: int | None  # None: the recipe's width
    train_batch: int
    per_class: int  # sample-digits --per-class
    digit_steps: int | None  # sample-digits --steps (None: the model's own)
    fake_digits: tuple[int, int]  # (train5k, t10k) sizes of the fake MNIST written when the real one is not used
    real_mnist: bool  # train on ../shared/data/mnist where it is (on a CPU: always the small fake set, for speed)


def sizes(device: str) -> Sizes:
    if device == "cuda":
        return Sizes(stage1=_fixture("if_keys_xl.json"), stage2=_fixture("if_keys_ii_l.json"), stage1_px=64,
                     stage1_stride=90, stage2_timesteps=[980, 784, 588, 392, 196, 0], repeats=5,
                     train_steps=600, train_hidden=None, train_batch=64, per_class=100, digit_steps=None,
                     fake_digits=(5000, 2000), real_mnist=True)
    # The tiny stage-2 fixture cut to two levels (one plain, one cross-attention only: per-level options
    # kept), with the tiny stage 1's text width so one embedding serves both; 256 px is slow on a CPU.
    tiny2 = {**_fixture("if2_tiny/config.json"), "encoder_hid_dim": 64, "block_out_channels": [4, 8],
             "down_block_types": ["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
             "up_block_types": ["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"],
             "layers_per_block": [1, 1], "only_cross_attention": [False, True]}
    return Sizes(stage1=_fixture("if_tiny/config.json"), stage2=tiny2, stage1_px=16, stage1_stride=330,
                 stage2_timesteps=[980, 490, 0], repeats=2, train_steps=4, train_hidden=4, train_batch=16,
                 per_class=1, digit_steps=2, fake_digits=(256, 64), real_mnist=False)


# ----------------------------------------------------------------------------------------
# Helpers the cases share
# ----------------------------------------------------------------------------------------


class Record:
    """One case's figures, printed and written to its file (atomically) as each is measured."""

    def __init__(self, path: Path, case: str):
        self.path, self.case = path, case
        self.data: dict[str, Any] = {"status": "running", "figures": {}}

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, float):
            value = float(f"{value:.6g}")  # six significant digits: a relative error of 1e-7 stays 1e-7
        self.data["figures"][key] = value
        print(f"  {self.case}.{key} = {value}", flush=True)
        self.save()

    def update(self, figures: dict[str, Any]) -> None:
        for key, value in figures.items():
            self[key] = value

    def save(self) -> None:
        write_atomically(self.path, json.dumps(self.data, indent=1))


def write_atomically(path: Path, text: str) -> None:
    """The whole file or the previous one, never half: a reader (or a cut-off run) sees one or the other."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def environment(device: str) -> dict[str, Any]:
    import torch

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cpu_threads": torch.get_num_threads()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpus=torch.cuda.device_count(), gpu_memory_gib=round(props.total_memory / GiB, 1),
                   cuda=torch.version.cuda, capability=f"{props.major}.{props.minor}")
    return env


def sync(device) -> None:
    """Wait for the GPU: CUDA calls return before their kernels end, so a timer must wait too."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - t0


def reset_peak(device) -> None:
    """Start a memory measurement: cached blocks given back, the peak counters set to what is allocated now."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device, prefix: str = "") -> dict[str, float]:
    """torch.cuda's peaks since reset_peak (none on a CPU): tensors allocated, and what the caching
    allocator reserved from the driver (the closer figure to what nvidia-smi shows, less the context)."""
    import torch

    if device.type != "cuda":
        return {}
    return {f"{prefix}peak_allocated_gib": torch.cuda.max_memory_allocated(device) / GiB,
            f"{prefix}peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GiB}


@contextmanager
def counting_calls(module) -> Iterator[list[int]]:
    """[number of forward calls of module] while inside: one per guided sampling step."""
    calls = [0]
    hook = module.register_forward_pre_hook(lambda m, args: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        hook.remove()


@contextmanager
def ieee_fp32() -> Iterator[None]:
    """float32 matmuls and convolutions in full float32: CUDA convolutions default to TF32 (10-bit
    mantissa), which would make the float32 reference itself only about as exact as fp16."""
    import torch

    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        old = matmul.fp32_precision, conv.fp32_precision
        matmul.fp32_precision, conv.fp32_precision = "ieee", "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = old
    else:
        old = matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def relative_error(a, b) -> float:
    """||a - b|| / ||b|| over the whole tensor, in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def check_finite(name: str, x) -> None:
    import torch

    if not bool(torch.isfinite(x).all()):
        raise AssertionError(f"{name} holds NaN or inf")


# ----------------------------------------------------------------------------------------
# IF networks with random weights, made where they run
# ----------------------------------------------------------------------------------------


def build_unet(config: dict, dtype, device, seed: int):
    """The IF UNet of config with seeded random weights, made directly on device in dtype.

    Built on the meta device (shapes only, no memory), given uninitialised storage on device by
    to_empty, then filled from a generator of that device: IF-I-XL's 4.3B parameters never exist
    in float32 or on the CPU (8.6 GB in place of 17.2 GB, and no minutes of CPU initialisation).
    """
    import torch

    from minidiff.models.if_unet import IFUNet

    unet = IFUNet.from_config(config, device="meta").to(dtype).to_empty(device=device)
    g = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.ndim >= 2:  # std 1/sqrt(fan_in): unit-variance outputs for unit-variance inputs, no fp16 overflow
                p.normal_(0.0, p[0].numel() ** -0.5, generator=g)
            elif name.endswith("weight"):  # norm scales near 1 but not 1, so that each one matters
                p.normal_(1.0, 0.1, generator=g)
            else:  # biases
                p.normal_(0.0, 0.02, generator=g)
        # A trained IF predicts eps of size about 1 and variance values v in [-1, 1]. Random outputs of
        # size 1 to 5 would take the learned-range variance far outside [beta~_t, beta_t] and the samples
        # into the thousands, beyond what fp16 holds at the next step: a small last layer keeps them tame.
        unet.conv_out.weight.mul_(0.1)
        unet.conv_out.bias.mul_(0.1)
    return unet.eval().requires_grad_(False)


def same_weights(unet, dtype):
    """A second IFUNet on unet's device holding unet's weights in dtype (fp16 values, cast exactly)."""
    from minidiff.models.if_unet import IFUNet

    device = next(unet.parameters()).device
    other = IFUNet.from_config(unet.config, device="meta").to(dtype).to_empty(device=device)
    other.load_state_dict(unet.state_dict())
    return other.eval().requires_grad_(False)


def prompt_pair(config: dict, seed: int = 1):
    """(cond, uncond) random prompt embeddings (1, 77, D) in float32 on the CPU, as the cache hands them over."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, 77, config["encoder_hid_dim"], generator=g) for _ in range(2))


def unet_inputs(config: dict, px: int, device, dtype):
    """(x_t, t, text) of one guided stage-1 call: batch 2, as classifier-free guidance makes it."""
    import torch

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, config["in_channels"], px, px, generator=g)
    text = torch.randn(2, 77, config["encoder_hid_dim"], generator=g)
    return x.to(device, dtype), torch.tensor([900, 100], device=device), text.to(device, dtype)


def meta_count(config: dict, px: int, stage2: bool) -> dict[str, float]:
    """The README's memory figure for the same call, counted as benchmarks/bench_if_memory.py counts it:
    the network in fp16 on the meta device, one guided step of batch 1 (2 with CFG), MemTracker's peak."""
    import torch

    import bench_if_memory as M
    from minidiff.if_pipeline import IFDenoiser, IFUpscaleDenoiser
    from minidiff.models.if_unet import IFUNet

    unet = M._built(lambda: IFUNet.from_config(config, device="meta"), torch.float16)
    x_t, t = torch.randn(2, 3, px, px, device="meta"), torch.full((2,), 500, device="meta")
    embeds = torch.randn(2, 77, config["encoder_hid_dim"], device="meta")
    if stage2:
        model = IFUpscaleDenoiser(unet, torch.randn(1, 3, px, px, device="meta"), noise_level=250)
    else:
        model = IFDenoiser(unet)
    weights, peak = M._peak(unet, lambda: model(x_t, t, embeds))
    return {"meta_weights_gib": weights, "meta_peak_gib": peak}


# ----------------------------------------------------------------------------------------
# The cases: each takes its Record and the command's arguments
# ----------------------------------------------------------------------------------------


def case_stage1(rec: Record, args: argparse.Namespace) -> None:
    import torch

    from minidiff import if_stage1
    from minidiff.schedule import strided_timesteps

    device, s = torch.device(args.device), sizes(args.device)
    rec.update(meta_count(s.stage1, s.stage1_px, stage2=False))
    unet, rec["build_s"] = timed(lambda: build_unet(s.stage1, torch.float16, device, seed=0), device)
    rec["parameters"] = sum(p.numel() for p in unet.parameters())
    cond, uncond = prompt_pair(s.stage1)

    def sample(timesteps: list[int]):
        return if_stage1(unet, cond, uncond, timesteps=timesteps, generator=torch.Generator().manual_seed(0),
                         height=s.stage1_px, width=s.stage1_px, progress=False)

    sample([990, 0])  # warm-up: kernels chosen, weights laid out channels_last at the first forward
    reset_peak(device)
    with counting_calls(unet) as calls:
        images, seconds = timed(lambda: sample(strided_timesteps(990, s.stage1_stride)), device)
    rec.update({"steps": calls[0], "steps_per_s": calls[0] / seconds, **peak_memory(device)})
    check_finite("if_stage1's images", images)

    x, t, text = unet_inputs(s.stage1, s.stage1_px, device, torch.float16)
    with torch.no_grad():
        out16 = unet(x, t, text).float()
        reference = same_weights(unet, torch.float32)  # about 17 GB for IF-I-XL: beside the fp16 copy on an H200
        with ieee_fp32():
            out32 = reference(x.float(), t, text.float())
    check_finite("the fp16 forward", out16)
    rec["fp16_vs_fp32_rel_error"] = relative_error(out16, out32)
    rec["fp16_vs_fp32_max_abs"] = float((out16 - out32).abs().max())
    rec["fp32_output_std"] = float(out32.std())
    if rec.data["figures"]["fp16_vs_fp32_rel_error"] > 0.05:
        raise AssertionError("the fp16 forward is more than 5% (relative) from the float32 one on the same weights")


def diffusers_unet_class(path: str | None):
    """diffusers' UNet2DConditionModel: from this environment, or from --diffusers-path (a folder of
    wheels, unpacked into a temporary folder, or of unpacked packages), appended to sys.path so that
    the packages already installed win. Skip without diffusers and without a path."""
    if path:
        folder = Path(path)
        wheels = sorted(folder.glob("*.whl"))
        if wheels:
            folder = Path(tempfile.mkdtemp(prefix="gpu_check_site_"))
            atexit.register(shutil.rmtree, folder, True)
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as z:
                    z.extractall(folder)
        sys.path.append(str(folder))
    try:
        import diffusers
        from diffusers import UNet2DConditionModel
    except ImportError as err:
        if not path:
            raise Skip(f"diffusers not available ({err}); pass --diffusers-path, see benchmarks/README.md") from None
        raise
    return UNet2DConditionModel, diffusers.__version__


def case_stage1_diffusers(rec: Record, args: argparse.Namespace) -> None:
    import torch

    UNet2DConditionModel, version = diffusers_unet_class(args.diffusers_path)
    rec["diffusers"] = version
    device, s = torch.device(args.device), sizes(args.device)
    ours = build_unet(s.stage1, torch.float16, device, seed=0)
    with torch.device("meta"):
        theirs = UNet2DConditionModel(**{k: v for k, v in s.stage1.items() if not k.startswith("_")})
    theirs = theirs.to(torch.float16).to_empty(device=device)
    theirs.load_state_dict(ours.state_dict())  # the same names: IFUNet's are the checkpoint's keys
    theirs.eval().requires_grad_(False)
    x, t, text = unet_inputs(s.stage1, s.stage1_px, device, torch.float16)
    runs = {"minidiff": lambda: ours(x, t, text), "diffusers": lambda: theirs(x, t, encoder_hidden_states=text).sample}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        a, b = runs["minidiff"]().float(), runs["diffusers"]().float()  # also the warm-up of both
        for _ in range(s.repeats):  # alternating, so that whatever else the machine does hits both alike
            for name, run in runs.items():
                times[name].append(timed(run, device)[1])
    check_finite("minidiff's output", a)
    check_finite("diffusers' output", b)
    median = {name: statistics.median(v) for name, v in times.items()}
    rec.update({"minidiff_forward_ms": 1e3 * median["minidiff"], "diffusers_forward_ms": 1e3 * median["diffusers"],
                "time_ratio_minidiff_over_diffusers": median["minidiff"] / median["diffusers"],
                "max_abs_difference": float((a - b).abs().max()), "rel_difference": relative_error(a, b)})
    if rec.data["figures"]["rel_difference"] > 0.05:
        raise AssertionError("minidiff's and diffusers' fp16 outputs differ by more than 5% (relative)")


def case_stage2(rec: Record, args: argparse.Namespace) -> None:
    import torch

    from minidiff import if_stage2

    device, s = torch.device(args.device), sizes(args.device)
    px = 4 * s.stage1_px
    rec.update(meta_count(s.stage2, px, stage2=True))
    unet, rec["build_s"] = timed(lambda: build_unet(s.stage2, torch.float16, device, seed=1), device)
    rec["parameters"] = sum(p.numel() for p in unet.parameters())
    cond, uncond = prompt_pair(s.stage2)
    low_res = torch.rand(1, 3, s.stage1_px, s.stage1_px, generator=torch.Generator().manual_seed(3)) * 2 - 1

    def upscale(timesteps: list[int]):
        return if_stage2(unet, low_res, cond, uncond, timesteps=timesteps, height=px, width=px,
                         generator=torch.Generator().manual_seed(0), progress=False)

    upscale([980])  # warm-up (and the final step to the clean image)
    reset_peak(device)
    with counting_calls(unet) as calls:
        images, seconds = timed(lambda: upscale(s.stage2_timesteps), device)
    rec.update({"steps": calls[0], "steps_per_s": calls[0] / seconds, **peak_memory(device)})
    check_finite("if_stage2's images", images)
    if tuple(images.shape) != (1, 3, px, px):
        raise AssertionError(f"if_stage2 returned {tuple(images.shape)}, not (1, 3, {px}, {px})")


def save_stage2_checkpoint(config: dict, device, folder: Path) -> None:
    """A random IF-II-L-config checkpoint in diffusers' layout (config.json, fp16 safetensors), as
    `minidiff fetch if-ii-l` leaves one: the cascade then loads it as the lessons do."""
    import torch
    from safetensors.torch import save_file

    unet = build_unet(config, torch.float16, device, seed=1)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **config}))
    save_file({k: v.contiguous().cpu() for k, v in unet.state_dict().items()},
              str(folder / "diffusion_pytorch_model.fp16.safetensors"))


def case_cascade(rec: Record, args: argparse.Namespace) -> None:
    import torch

    from minidiff import if_stage1, if_stage2
    from minidiff.if_cascade import Stage2Upscaler
    from minidiff.schedule import strided_timesteps

    device, s = torch.device(args.device), sizes(args.device)
    one, two = meta_count(s.stage1, s.stage1_px, False), meta_count(s.stage2, 256, True)  # the upscaler's size
    # bench_if_memory.py's two rows of the README: the larger step alone, or each step beside the other's weights
    rec["meta_one_at_a_time_gib"] = max(one["meta_peak_gib"], two["meta_peak_gib"])
    rec["meta_both_resident_gib"] = max(one["meta_peak_gib"] + two["meta_weights_gib"],
                                        one["meta_weights_gib"] + two["meta_peak_gib"])
    dtype = torch.float16 if device.type == "cuda" else torch.float32  # as the lessons (course._if_backend)
    stage1 = build_unet(s.stage1, dtype, device, seed=0)
    cond, uncond = prompt_pair(s.stage1)
    timesteps = strided_timesteps(990, s.stage1_stride)

    def draft():
        return if_stage1(stage1, cond, uncond, timesteps=timesteps, generator=torch.Generator().manual_seed(0),
                         height=s.stage1_px, width=s.stage1_px, progress=False)

    with tempfile.TemporaryDirectory(prefix="gpu_check_if2_") as tmp:
        folder = Path(tmp) / "unet"
        _, rec["stage2_checkpoint_s"] = timed(lambda: save_stage2_checkpoint(s.stage2, device, folder), device)
        upscale = Stage2Upscaler(folder, stage1, device=args.device, quick=True, progress=False)
        reset_peak(device)
        images = draft()
        big, rec["upscale_s"] = timed(lambda: upscale(images, cond, uncond, generator=torch.Generator().manual_seed(0)),
                                      device)
        rec.update(peak_memory(device, "one_at_a_time_"))
        check_finite("the upscaled images", big)
        if tuple(big.shape[-2:]) != (256, 256) or big.device != images.device:
            raise AssertionError(f"the upscaler returned {tuple(big.shape)} on {big.device}")
        stage2 = upscale.unet
        if next(stage1.parameters()).device.type != device.type or next(stage2.parameters()).device.type != "cpu":
            raise AssertionError("after upscaling, stage I is not back on the device or stage II not back on the CPU")

        stage2.to(device)  # now both resident, as a pipeline that keeps them would
        reset_peak(device)
        images = draft()
        # one stage-2 step and the final one: a step keeps nothing from the last but x_t, so its peak is the loop's
        if_stage2(stage2, images, cond, uncond, timesteps=[980], generator=torch.Generator().manual_seed(0),
                  progress=False)
        rec.update(peak_memory(device, "both_resident_"))
    figures = rec.data["figures"]
    turns, both = figures.get("one_at_a_time_peak_allocated_gib"), figures.get("both_resident_peak_allocated_gib")
    if device.type == "cuda" and turns >= both:
        raise AssertionError("taking turns did not lower the peak: the swap keeps both networks on the GPU")


def mnist_folder(tmp: Path, s: Sizes) -> tuple[Path, str]:
    """(an MNIST folder, what it is): ../shared/data/mnist (or $MINIDIFF_MNIST_DIR) when there and
    s.real_mnist, else fake digits written as IDX files (a GPU machine has no MNIST; speed does not
    depend on the digits)."""
    import numpy as np

    from minidiff.data import find_mnist_dir

    found = find_mnist_dir() if s.real_mnist else None
    if found is not None:
        return found, f"MNIST from {found}"
    rng = np.random.default_rng(0)
    n_train, n_test = s.fake_digits
    for split, n in (("train5k", n_train), ("t10k", n_test)):
        images = (rng.random((n, 28, 28)) ** 4 * 255).astype(np.uint8)  # mostly dark, a few bright strokes
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)  # IDX, uint8
            (tmp / f"{split}-{kind}-ubyte").write_bytes(header + array.tobytes())
    return tmp, f"{n_train + n_test} fake digits (no MNIST folder here)"


def training_words(s: Sizes, data: Path, steps: int, out: Path, device: str) -> list[str]:
    """`minidiff train flow-class` for `steps` steps of s.train_batch digits (--epochs as a fraction)."""
    from minidiff.data import training_set

    steps_per_epoch = len(training_set(data)[0]) // s.train_batch
    words = ["train", "flow-class", "--out", str(out), "--data", str(data), "--device", device,
             "--epochs", repr(steps / steps_per_epoch), "--batch-size", str(s.train_batch), "--snapshot-epochs", ""]
    return words + (["--hidden", str(s.train_hidden)] if s.train_hidden else [])


def case_mnist(rec: Record, args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from minidiff.cli import main as minidiff_command
    from minidiff.mnist_pipeline import load_mnist_model, sample_digits
    from minidiff.run_folder import read_run_config
    from minidiff.run_log import read_loss_log

    device, s = torch.device(args.device), sizes(args.device)

    def command(words: list[str]) -> float:
        sys.stderr.flush()
        code, seconds = timed(lambda: minidiff_command(words), device)
        if code != 0:
            raise RuntimeError(f"`minidiff {' '.join(words)}` exited with {code}; its message is in the log")
        return seconds

    with tempfile.TemporaryDirectory(prefix="gpu_check_mnist_") as tmp:
        data, rec["data"] = mnist_folder(Path(tmp), s)
        final = {}
        for amp in ("fp32", "bf16"):
            out = Path(tmp) / f"run_{amp}"
            words = training_words(s, data, s.train_steps, out, args.device)
            words += ["--amp", "bf16"] if amp == "bf16" else []
            rec[f"{amp}_command_s"] = command(words)
            config, losses = read_run_config(out), [loss for _, loss in read_loss_log(out)]
            if config["steps"] != s.train_steps or len(losses) != s.train_steps:
                raise AssertionError(f"{amp}: {config['steps']} steps and {len(losses)} losses, not {s.train_steps}")
            if config["wall_s"] > 0:  # the training loop's own time, to 0.1 s (config.json)
                rec[f"{amp}_images_per_s"] = s.train_steps * s.train_batch / config["wall_s"]
            final[amp] = float(np.mean(losses[-max(1, len(losses) // 4):]))  # the last quarter's mean loss
            rec[f"{amp}_final_loss"] = final[amp]
        rec["bf16_vs_fp32_final_loss"] = final["bf16"] / final["fp32"] - 1
        if not all(np.isfinite(v) for v in final.values()) or abs(final["bf16"] / final["fp32"] - 1) > 0.1:
            raise AssertionError(f"the final losses are not finite and within 10% of each other: {final}")

        npz = Path(tmp) / "digits.npz"
        words = ["sample-digits", "--per-class", str(s.per_class), "--out", str(npz), "--device", args.device]
        seconds = command(words + (["--steps", str(s.digit_steps)] if s.digit_steps else []))
        n = int(np.load(npz)["images"].shape[0])
        rec.update({"digits": n, "sample_digits_s": seconds, "digits_per_s": n / seconds})

    # What sample_digits' network sees on this device: the same as on a CPU (weights and input channels_last,
    # computed in inference mode).
    model = load_mnist_model("flow-class", device=args.device)
    seen: dict[str, bool] = {}

    def look(module, inputs) -> None:
        seen.update(inference_mode=torch.is_inference_mode_enabled(), on_device=inputs[0].device.type == device.type,
                    input_channels_last=inputs[0].is_contiguous(memory_format=torch.channels_last))

    hook = model.net.register_forward_pre_hook(look)
    sample_digits(model, per_class=1, steps=1, device=args.device, progress=False)
    hook.remove()
    seen["weights_channels_last"] = all(p.is_contiguous(memory_format=torch.channels_last)
                                        for p in model.net.parameters() if p.ndim == 4)
    rec.update(seen)
    if not all(seen.values()):
        raise AssertionError(f"sampling on {args.device} differs from the CPU's layout or mode: {seen}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(cmd: list[str]) -> float:
    """Run a torchrun command, its output into this case's log; seconds. A case past its limit is stopped
    by run_all with SIGTERM, which torchrun passes on to its workers."""
    sys.stderr.flush()
    t0 = time.perf_counter()
    code = subprocess.run(cmd, stdout=sys.stderr.fileno(), stderr=sys.stderr.fileno()).returncode
    if code != 0:
        raise RuntimeError(f"torchrun exited with {code}; its output is in the log")
    return time.perf_counter() - t0


def case_torchrun(rec: Record, args: argparse.Namespace) -> None:
    import torch

    from minidiff.run_folder import read_run_config
    from minidiff.run_log import read_loss_log

    s = sizes(args.device)
    nproc = torch.cuda.device_count() if args.device == "cuda" else 1  # one process per GPU
    total = 40 if args.device == "cuda" else 4
    rec["processes"] = nproc
    with tempfile.TemporaryDirectory(prefix="gpu_check_torchrun_") as tmp:
        data, rec["data"] = mnist_folder(Path(tmp), s)
        out = Path(tmp) / "run"
        for name, stop in (("first_half", total // 2), ("resumed", 0)):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                   "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(Path(__file__).resolve()),
                   "--torchrun-child", str(out), "--device", args.device, "--data", str(data),
                   "--child-steps", str(total), "--child-stop", str(stop)]
            rec[f"{name}_s"] = launch(cmd)
            config = read_run_config(out)
            rec[f"{name}_steps"] = config["steps"]
        rec["world_size"] = config["world_size"]
        steps = [step for step, _ in read_loss_log(out)]
        probe = json.loads((Path(tmp) / "probe.json").read_text())
    rec.update(probe)
    if rec.data["figures"]["first_half_steps"] != total // 2 or config["steps"] != total or steps != list(range(total)):
        raise AssertionError(f"the resumed run did not go on from step {total // 2} to {total}: loss.csv has {steps}")
    if config["world_size"] != nproc or probe["all_reduce"] != nproc * (nproc + 1) / 2:
        raise AssertionError(f"world_size {config['world_size']} and all_reduce {probe['all_reduce']} "
                             f"with {nproc} processes")


def torchrun_child(args: argparse.Namespace) -> None:
    """One process of the torchrun case. Before its first run: the collectives minidiff trains with, on
    one rank when there is one GPU (minidiff then joins no process group itself): nccl's all_reduce and one
    DistributedDataParallel step with global-batch BatchNorm. Then the run itself, to --child-stop steps
    (0: --resume to the end)."""
    import torch
    import torch.distributed as dist

    from minidiff import distributed
    from minidiff.recipes import build_from_config, recipe_config, schedule_of
    from minidiff.train import batch_loss, train
    from minidiff.data import training_set

    s, out = sizes(args.device), Path(args.torchrun_child)
    steps_per_epoch = len(training_set(args.data)[0]) // s.train_batch
    width = {"num_hiddens": s.train_hidden} if s.train_hidden else {}
    cfg = recipe_config("flow-class", epochs=args.child_steps / steps_per_epoch, batch_size=s.train_batch,
                        save_every=max(1, args.child_steps // 2), snapshot_epochs=[], data=str(args.data), **width)
    procs = distributed.from_environment()
    if args.child_stop:
        device = torch.device("cuda", procs.local_rank) if args.device == "cuda" else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=distributed.TIMEOUT)
        total = torch.full((1,), float(procs.rank + 1), device=device)
        dist.all_reduce(total)  # 1 + 2 + ... + world_size on every rank
        model = distributed.use_global_batchnorm(build_from_config(cfg).to(device))
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(s.train_batch, 1, 28, 28, generator=g).to(device)
        y = (torch.arange(s.train_batch) % 10).to(device)
        loss = batch_loss(cfg, net, schedule_of(cfg), x, y, g, distributed.rows(procs, s.train_batch))
        loss.backward()
        probe = {"backend": dist.get_backend(), "all_reduce": float(total), "ddp_step_loss": float(loss.detach())}
        if procs.is_main:
            write_atomically(out.parent / "probe.json", json.dumps(probe))
        # the group stays: train() joins it when there are several processes, and leaves it at its end
    train(cfg, out, device=args.device, max_steps=args.child_stop or None, resume=not args.child_stop, progress=False)


CASE_FUNCTIONS: dict[str, Callable[[Record, argparse.Namespace], None]] = {
    "stage1": case_stage1, "stage1_diffusers": case_stage1_diffusers, "stage2": case_stage2,
    "cascade": case_cascade, "mnist": case_mnist, "torchrun": case_torchrun,
}


def run_case(args: argparse.Namespace) -> int:
    """This process runs one case (started by run_all) and leaves its record: status ok, skipped or
    error with the traceback. The injected failures (--fail-case, --hang-case) are for the tests."""
    rec = Record(Path(args.record), args.case)
    try:
        if args.hang_case == args.case:
            rec.data["injected"] = "hang"
            rec.save()
            time.sleep(10**6)
        rec.data["environment"] = environment(args.device)
        rec.save()
        CASE_FUNCTIONS[args.case](rec, args)
        if args.fail_case == args.case:
            raise RuntimeError("injected failure (--fail-case), after the case's own work")
        rec.data["status"] = "ok"
    except Skip as why:
        rec.data["status"] = f"skipped: {why}"
    except Exception as err:  # recorded, not raised: the run goes on with the next case
        rec.data.update(status="error", error=f"{type(err).__name__}: {err}"[:2000], traceback=traceback.format_exc())
    rec.save()
    print(f"  {args.case}: {rec.data['status']}", flush=True)
    return 0


# ----------------------------------------------------------------------------------------
# The run: each case in its own process, the report rewritten as figures arrive
# ----------------------------------------------------------------------------------------


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown(report: dict) -> str:
    env = report.get("environment") or {}
    where = env.get("gpu", "CPU") + (f", CUDA {env['cuda']}" if env.get("cuda") else "")
    lines = [f"# minidiff GPU check, --device {report['device']}", "",
             f"{where}, torch {env.get('torch', '?')}, Python {env.get('python', '?')}; started "
             f"{report['started_utc']}, {report.get('elapsed_s', 0):.0f} s of a {report['budget_s']} s budget.", "",
             "| case | what it checks | status | seconds | figures |", "|---|---|---|---|---|"]
    for name, entry in report["cases"].items():
        figures = "; ".join(f"{k} {_value(v)}" for k, v in entry.get("figures", {}).items())
        status = entry["status"] + (f": {entry['error'][:200]}" if entry.get("error") else "")
        seconds = f"{entry['seconds']:.1f}" if "seconds" in entry else ""
        cells = [name, entry["what"], status, seconds, figures]
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> None:
    write_atomically(out / "gpu_check.json", json.dumps(report, indent=1))
    write_atomically(out / "gpu_check.md", markdown(report))


def read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def stop_group(proc: subprocess.Popen) -> None:
    """End a case's process and what it started: SIGTERM first (torchrun passes it on to its workers),
    SIGKILL to whatever is left after a few seconds."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            pass


def run_case_process(case: Case, limit: float, args: argparse.Namespace, report: dict, workdir: Path) -> dict:
    """Run one case in a fresh process; merge its record into the report every second while it runs."""
    out, record = Path(args.out), workdir / f"{case.name}.json"
    entry = report["cases"][case.name] = {"what": case.what, "status": "running", "limit_s": round(limit)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case.name, "--record", str(record),
           "--device", args.device]
    for flag, value in (("--diffusers-path", args.diffusers_path), ("--fail-case", args.fail_case),
                        ("--hang-case", args.hang_case)):
        cmd += [flag, value] if value else []
    print(f"[{case.name}] {case.what} (at most {limit:.0f} s)", flush=True)
    with open(out / "gpu_check.log", "a") as log:
        log.write(f"\n===== {case.name} =====\n")
        log.flush()
        log_start = log.tell()
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=None, stderr=log, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seen, timed_out = None, False
        while True:
            try:
                proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                pass
            stamp = record.stat().st_mtime_ns if record.exists() else None
            if stamp != seen:  # new figures: into the report now, so that a run cut off keeps them
                seen = stamp
                entry.update(read_record(record), seconds=time.monotonic() - t0)
                write_report(out, report)
            if time.monotonic() - t0 > limit:
                timed_out = True
                stop_group(proc)
                break
    entry.update(read_record(record), seconds=time.monotonic() - t0)
    if timed_out:
        entry["status"] = f"timed out after {limit:.0f} s"
    elif entry.get("status") in (None, "running"):
        entry["status"] = "error"
        entry["error"] = f"its process ended with exit code {proc.returncode} before recording a result"
    if entry["status"] != "ok":
        with open(out / "gpu_check.log") as log:
            log.seek(log_start)
            entry["log_tail"] = log.read()[-3000:]
    print(f"[{case.name}] {entry['status']} in {entry['seconds']:.1f} s", flush=True)
    return entry


def run_all(args: argparse.Namespace) -> int:
    selected = [c for c in CASES if c.name in args.cases.split(",")] if args.cases else CASES
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.log").write_text("")
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name] + sys.argv), "device": args.device,
        "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), "budget_s": args.budget,
        "environment": {}, "cases": {c.name: {"what": c.what, "status": "not run yet"} for c in selected},
    }
    write_report(out, report)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu_check_records_") as workdir:
        for case in selected:
            left = args.budget - (time.monotonic() - t0)
            if left < MIN_CASE_S:
                report["cases"][case.name]["status"] = "skipped: the run's time budget was spent"
                continue
            limit = min(case.limit_s[args.device], left, HANG_LIMIT_S if args.hang_case == case.name else left)
            entry = run_case_process(case, limit, args, report, Path(workdir))
            report["environment"] = report["environment"] or entry.get("environment", {})
            report["elapsed_s"] = round(time.monotonic() - t0, 1)
            write_report(out, report)
    report["elapsed_s"] = round(time.monotonic() - t0, 1)
    write_report(out, report)
    statuses = [e["status"] for e in report["cases"].values()]
    failed = [s for s in statuses if not (s == "ok" or s.startswith("skipped"))]
    print(f"{len(statuses) - len(failed)} of {len(statuses)} cases ok or skipped in {report['elapsed_s']:.0f} s; "
          f"figures in {out / 'gpu_check.json'} and {out / 'gpu_check.md'}", flush=True)
    return 1 if failed else 0


def prepare_diffusers(folder: Path) -> int:
    """Download diffusers and the pure-Python packages it imports as wheels into folder (a GPU machine with
    no network gets them with the working tree), then import diffusers from them here to check."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--platform", "any",
                    "--python-version", "3.12", "--implementation", "py", "-d", str(folder),
                    f"diffusers=={DIFFUSERS_VERSION}", "importlib_metadata", "zipp", "requests", "urllib3", "idna",
                    "certifi", "charset_normalizer"], check=True)
    check = ("import sys; sys.path.insert(0, sys.argv[1]); import gpu_check; "
             "cls, version = gpu_check.diffusers_unet_class(sys.argv[2]); print('diffusers', version, 'imports')")
    subprocess.run([sys.executable, "-c", check, str(HERE), str(folder)], check=True)
    size = sum(p.stat().st_size for p in folder.glob("*.whl")) / 2**20
    print(f"{folder}: {size:.1f} MiB of wheels; carry this folder to the GPU machine")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cuda: full size; cpu: tiny sizes")
    p.add_argument("--out", default="gpu_out", help="folder for gpu_check.json, gpu_check.md and gpu_check.log")
    p.add_argument("--diffusers-path", default=None, metavar="DIR",
                   help="a folder of diffusers' wheels (--prepare-diffusers) or packages, for stage1_diffusers")
    p.add_argument("--cases", default=None, help=f"a comma-separated subset of {','.join(CASE_NAMES)}")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run (default 300)")
    p.add_argument("--prepare-diffusers", type=Path, default=None, metavar="DIR",
                   help="download the wheels stage1_diffusers needs into DIR, and stop")
    p.add_argument("--fail-case", choices=CASE_NAMES, default=None,
                   help="for testing: this case raises an error after its own work")
    p.add_argument("--hang-case", choices=CASE_NAMES, default=None,
                   help=f"for testing: this case hangs, and its time limit is {HANG_LIMIT_S} s")
    # how the run starts its own processes
    p.add_argument("--case", choices=CASE_NAMES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--record", default=None, help=argparse.SUPPRESS)
    p.add_argument("--torchrun-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-steps", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--child-stop", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.cases and not set(args.cases.split(",")) <= set(CASE_NAMES):
        p.error(f"--cases takes names from {','.join(CASE_NAMES)}, got {args.cases!r}")
    if args.prepare_diffusers:
        return prepare_diffusers(args.prepare_diffusers)
    if args.case:
        return run_case(args)
    if args.device == "cuda" and not args.torchrun_child:
        import torch

        if not torch.cuda.is_available():  # six cases failing alike would hide the one reason
            p.error("--device cuda: this machine has no CUDA device that PyTorch can use; "
                    "--device cpu runs the same cases at tiny sizes")
    if args.torchrun_child:
        torchrun_child(args)
        return 0
    return run_all(args)


if __name__ == "__main__":
    raise SystemExit(main())
