"""Runaway sizes and odd values: refused at the door in one line, never a hang, an allocator's
message, a traceback from deep inside torch or PIL, or an all-NaN result said nothing about.

Two tables in the style of tests/test_refuse_api.py and tests/test_refuse_cli.py: the library
(id, call, exception type, regex on the message, the culprit the message must name) and the
command line (id, argv, regex on stderr; exit code 2, no traceback). The command line's rows
run behind tripwires on loading a model and on sampling, so "refused before the work" is
checked, not assumed. Below the tables: what still works at the edges (the largest seed, a
hole of any values, check_range=False), sampling runs whose denoiser returns NaN, and the
files sample-digits writes (the .npz with the user's umask, the PNG beside it).
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from minidiff import checks, cli, data
from minidiff import mnist_pipeline as P
from minidiff.cli import main
from minidiff.edit import image_to_image, inpaint, sdedit
from minidiff.figures import grid_figure, rows_figure
from minidiff.if_pipeline import if_stage1
from minidiff.recipes import recipe_config
from tiny_models import tiny_checkpoints
from minidiff.samplers import ddim, flow_euler, flow_heun, iterative_denoise, one_step_denoise
from minidiff.schedule import DDPMSchedule, FlowSchedule, strided_timesteps

NAN = float("nan")
IF = DDPMSchedule.deepfloyd()
FLOW = FlowSchedule()
MNIST_FLOW = FlowSchedule(data_range=(0.0, 1.0))
TS = strided_timesteps(990, 330)  # [990, 660, 330, 0]
FTS = FlowSchedule.timesteps(4)  # [0, 0.25, 0.5, 0.75, 1]
X = torch.zeros(2, 1, 8, 8)
IMG = torch.zeros(1, 3, 8, 8)
C, U = torch.eye(2)[:1], torch.zeros(1, 2)


def den(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def nan_den(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(x, NAN)


def nan_when(late):
    """A denoiser that is fine until late(t) holds, then returns NaN."""
    return lambda x, t: torch.full_like(x, NAN) if late(float(t[0])) else torch.zeros_like(x)


def tripwire(*args, **kwargs):
    raise AssertionError("the bad input was not refused before the work started")


def huge_png(path: Path, width: int, height: int) -> Path:
    """A black 1-bit PNG of width x height pixels: a few KB on disk, 400 MB of pixels at 20000 x 20000."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row, z = b"\x00" * (1 + (width + 7) // 8), zlib.compressobj(9)
    pixels = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Width-4 flow-class and ddpm-class checkpoints (random weights): fast stand-ins for the shipped ones."""
    return tiny_checkpoints(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def files(tmp_path):
    (tmp_path / "plain_file").write_text("x")
    huge_png(tmp_path / "bomb.png", 20000, 20000)
    return tmp_path


def load_tiny_unet():
    import json

    from minidiff.models.if_unet import IFUNet

    config = json.loads((Path(__file__).parent / "fixtures" / "if_tiny" / "config.json").read_text())
    return IFUNet.from_config(config).eval()


EMB = torch.zeros(2, 7, 64)

# (id, call(tmp, tiny), exception type, message regex, the argument the message must name)
API_CASES = [
    # -- sample_digits: every size and the seed, before the model is even loaded -----------------
    ("digits-seed-float", lambda tmp, tiny: P.sample_digits(tiny["flow-class"], seed=1.5), ValueError,
     r"must be an int, got 1.5", "seed"),
    ("digits-seed-string", lambda tmp, tiny: P.sample_digits(tiny["flow-class"], seed="0"), ValueError,
     r"must be an int, got '0'", "seed"),
    ("digits-seed-huge", lambda tmp, tiny: P.sample_digits(tiny["flow-class"], seed=10**23), ValueError,
     r"<= 9223372036854775807 .*2\*\*63 - 1.*manual_seed", "seed"),
    ("digits-seed-negative", lambda tmp, tiny: P.sample_digits(tiny["flow-class"], seed=-1), ValueError,
     r">= 0 \(allowed: \[0, 9223372036854775807\]\), got -1", "seed"),
    ("digits-per-class-huge", lambda tmp, tiny: P.sample_digits(tiny["flow-class"], per_class=10**12), ValueError,
     r"<= 10000 \(allowed: \[1, 10000\]\), got 1000000000000; at most 100,000 digits", "per_class"),
    ("digits-steps-huge", lambda tmp, tiny: P.sample_digits(tiny["flow-class"], steps=10**20), ValueError,
     r"\[1, 10000\]\), got 100000000000000000000", "steps"),
    ("digits-steps-googol", lambda tmp, tiny: P.sample_digits(tiny["flow-class"], steps=10**100), ValueError,
     r"\[1, 10000\]\), got 100000000000\.\.\. \(101 digits\)", "steps"),
    ("digits-steps-ddpm-above-T", lambda tmp, tiny: P.sample_digits(tiny["ddpm-class"], per_class=1, steps=301,
                                                                    progress=False), ValueError, r"\[1, 300\]",
     "steps"),
    ("digits-batch-huge", lambda tmp, tiny: P.sample_digits(tiny["flow-class"], batch_size=10**6), ValueError,
     r"\[1, 1000\]", "batch_size"),
    ("digits-batch-zero", lambda tmp, tiny: P.sample_digits(tiny["flow-class"], batch_size=0), ValueError,
     r">= 1 \(allowed: \[1, 1000\]\), got 0", "batch_size"),
    ("time-grid-huge", lambda tmp, tiny: P.flow_time_grid(10**20), ValueError, r"\[1, 10000\]", "steps"),
    ("time-grid-float", lambda tmp, tiny: P.flow_time_grid(8.0), ValueError, r"must be an int", "steps"),
    ("flow-timesteps-huge", lambda tmp, tiny: FlowSchedule.timesteps(10**12), ValueError, r"\[1, 100000\]",
     "num_steps"),
    ("strided-start-huge", lambda tmp, tiny: strided_timesteps(10**12, 1), ValueError, r"\[0, 100000\]", "start"),
    # -- class labels ----------------------------------------------------------------------------
    ("class-fraction", lambda tmp, tiny: P.class_vectors([1.5]), ValueError, r"whole class indices 0..9, got \[1.5\]",
     "labels"),
    ("class-bool", lambda tmp, tiny: P.class_vectors(torch.tensor([True])), ValueError, r"whole class indices",
     "labels"),
    ("class-nan", lambda tmp, tiny: P.class_vectors([NAN]), ValueError, r"whole class indices", "labels"),
    ("class-string", lambda tmp, tiny: P.class_vectors(["3"]), ValueError, r"class indices 0..9", "labels"),
    ("class-ten", lambda tmp, tiny: P.class_vectors([10]), ValueError, r"0..9", "10"),
    # -- where figures are written ---------------------------------------------------------------
    ("grid-under-a-file", lambda tmp, tiny: data.save_grid(IMG, tmp / "plain_file" / "x.png"), ValueError,
     r"cannot write .*: .*plain_file is a file, not a folder", "x.png"),
    ("grid-deep-under-a-file", lambda tmp, tiny: data.save_grid(IMG, tmp / "plain_file" / "a" / "x.png"),
     ValueError, r"plain_file is a file, not a folder", "plain_file"),
    ("gif-under-a-file", lambda tmp, tiny: data.save_gif([IMG], tmp / "plain_file" / "a.gif"), ValueError,
     r"plain_file is a file", "a.gif"),
    ("figure-under-a-file", lambda tmp, tiny: rows_figure(tmp / "plain_file" / "f.png", [[IMG[0]]]), ValueError,
     r"plain_file is a file", "f.png"),
    ("figure-nan", lambda tmp, tiny: rows_figure(tmp / "f.png", [[IMG[0]], [IMG[0] * NAN]]), ValueError,
     r"NaN.*drawn as black", "rows[1][0]"),
    ("figure-no-images", lambda tmp, tiny: rows_figure(tmp / "f.png", [[]]), ValueError, r"at least one image",
     "figure"),
    ("grid-figure-nan", lambda tmp, tiny: grid_figure(tmp / "g.png", [[IMG[0], IMG[0] / 0]]), ValueError, r"NaN",
     "rows[0][1]"),
    ("grid-figure-under-a-file", lambda tmp, tiny: grid_figure(tmp / "plain_file" / "g.png", [[IMG[0]]]),
     ValueError, r"plain_file is a file", "g.png"),
    # -- images read -----------------------------------------------------------------------------
    ("image-400-megapixels", lambda tmp, tiny: data.load_image(huge_png(tmp / "bomb.png", 20000, 20000)),
     ValueError, r"has 400.0 megapixels, more than the 89.5 megapixels .*decompression bombs", "bomb.png"),
    ("image-100-megapixels", lambda tmp, tiny: data.load_image(huge_png(tmp / "big.png", 10000, 10000)),
     ValueError, r"has 100.0 megapixels, more than the 89.5", "big.png"),
    ("image-size-huge", lambda tmp, tiny: data.load_image(tmp / "x.png", size=10**6), ValueError, r"\[1, 4096\]",
     "size"),
    # -- IF stage 1 at the door ------------------------------------------------------------------
    ("stage1-not-a-unet", lambda tmp, tiny: if_stage1(torch.nn.Linear(2, 2), EMB, EMB[:1], progress=False),
     ValueError, r"must be an IF stage-1 UNet .*got a Linear", "unet"),
    ("stage1-height-huge", lambda tmp, tiny: if_stage1(load_tiny_unet(), EMB, EMB[:1], height=10**6,
                                                       progress=False), ValueError, r"\[1, 2048\]", "height"),
    # -- schedules' data range -------------------------------------------------------------------
    ("data-range-reversed", lambda tmp, tiny: DDPMSchedule(IF.betas, data_range=(1, 0)),
     ValueError, r"high > low", "data_range"),
    ("data-range-nan", lambda tmp, tiny: FlowSchedule(data_range=(0, NAN)), ValueError, r"finite", "data_range"),
    # -- edits: an image outside the model's range -----------------------------------------------
    ("sdedit-5x-range", lambda tmp, tiny: sdedit(tripwire, X + 5, IF, TS, 1, progress=False), ValueError,
     r"DDPMSchedule.data_range \[-1.0, 1.0\], got \[5, 5\].*check_range=False", "image"),
    ("sdedit-flow-range", lambda tmp, tiny: sdedit(tripwire, X - 5, FLOW, FTS, 1, progress=False), ValueError,
     r"FlowSchedule.data_range \[-1.0, 1.0\], got \[-5, -5\]", "image"),
    ("sdedit-if-image-to-mnist", lambda tmp, tiny: sdedit(tripwire, X - 1, MNIST_FLOW, FTS, 1, progress=False),
     ValueError, r"\[0.0, 1.0\], got \[-1, -1\]", "rescale"),
    ("sdedit-mnist-model", lambda tmp, tiny: sdedit(tripwire, X - 1, P.load_mnist_model(tiny["flow-class"]).schedule,
                                                    FTS, 1, progress=False), ValueError, r"\[0.0, 1.0\]", "image"),
    ("sdedit-byte-image", lambda tmp, tiny: sdedit(tripwire, X + 255, IF, TS, 1, progress=False), ValueError,
     r"got \[255, 255\]", "rescale the image"),
    ("i2i-range", lambda tmp, tiny: image_to_image(tripwire, X + 5, C, U, 1.0, IF, TS, 1, progress=False),
     ValueError, r"data_range", "image"),
    ("inpaint-kept-pixels-range", lambda tmp, tiny: inpaint(tripwire, X + 5, torch.zeros(8, 8), IF, TS,
                                                            progress=False), ValueError, r"got \[5, 5\]", "image"),
    # -- samplers and edits whose denoiser returns NaN -------------------------------------------
    ("nan-ddpm-first-step", lambda tmp, tiny: iterative_denoise(nan_den, X, IF, TS, progress=False), RuntimeError,
     r"non-finite at step 0 \(t = 990 -> 660\)", "denoiser"),
    ("nan-ddpm-late-step", lambda tmp, tiny: iterative_denoise(nan_when(lambda t: t < 500), X, IF, TS,
                                                               progress=False), RuntimeError,
     r"step 2 \(t = 330 -> 0\)", "NaN"),
    ("nan-ddim", lambda tmp, tiny: ddim(nan_when(lambda t: t < 700), X, IF, TS, progress=False), RuntimeError,
     r"DDIM produced NaN.*step 1 \(t = 660 -> 330\)", "denoiser"),
    ("nan-flow-euler", lambda tmp, tiny: flow_euler(nan_when(lambda t: t >= 0.5), X, FLOW, FTS, progress=False),
     RuntimeError, r"step 2 \(t = 0.5 -> 0.75\)", "denoiser"),
    ("nan-flow-heun-corrector", lambda tmp, tiny: flow_heun(nan_when(lambda t: t >= 0.5), X, FLOW, FTS,
                                                            progress=False), RuntimeError,
     r"Heun produced NaN.*step 1 \(t = 0.25 -> 0.5\)", "denoiser"),
    ("nan-one-step", lambda tmp, tiny: one_step_denoise(nan_den, X, IF, 500), RuntimeError,
     r"one-step denoising produced NaN.*t = 500", "denoiser"),
    ("nan-sdedit", lambda tmp, tiny: sdedit(nan_den, X, IF, TS, 1, progress=False), RuntimeError,
     r"step 1 \(t = 660 -> 330\)", "denoiser"),
    ("nan-inpaint", lambda tmp, tiny: inpaint(nan_den, X, torch.ones(8, 8), IF, TS, resample_steps=2,
                                              progress=False), RuntimeError, r"inpainting produced NaN.*step 0",
     "denoiser"),
    ("inf-flow", lambda tmp, tiny: flow_euler(lambda x, t: torch.full_like(x, float("inf")), X, FLOW, FTS,
                                              progress=False), RuntimeError, r"NaN or inf.*step 0", "denoiser"),
]


@pytest.mark.parametrize("call, error, pattern, culprit", [pytest.param(*c[1:], id=c[0]) for c in API_CASES])
def test_bad_size_or_value_is_refused_with_a_message_naming_it(tmp_path, tiny, call, error, pattern, culprit):
    (tmp_path / "plain_file").write_text("x")
    with pytest.raises(error) as info:
        call(tmp_path, tiny)
    message = str(info.value)
    assert type(info.value) is error, f"{type(info.value).__name__}: {message}"
    assert re.search(pattern, message), message
    assert culprit in message, f"the message does not name {culprit!r}: {message}"
    assert "\n" not in message


# (id, argv with {tmp} for the temporary folder, regex the error must match)
CLI_CASES = [
    ("steps-huge", ["--steps", "100000000000000000000"], r"--steps: must be at most 10000 \(allowed: 1\.\.10000\)"),
    ("steps-just-above", ["--steps", "10001"], r"--steps: must be at most 10000"),
    ("steps-5000-digits", ["--steps", "9" * 5000], r"--steps: expected a whole number >= 1, got 5000 digits"),
    ("per-class-huge", ["--per-class", str(10**12)], r"--per-class: must be at most 10000 \(allowed: 1\.\.10000\)"),
    ("per-class-float", ["--per-class", "2.5"], r"--per-class: expected a whole number"),
    ("seed-huge", ["--seed", "99999999999999999999999"],
     r"--seed: must be at most 9223372036854775807 \(allowed: 0\.\.9223372036854775807 = 2\*\*63 - 1"),
    ("seed-negative", ["--seed", "-1"], r"--seed: must be at least 0 \(allowed: 0\.\.9223372036854775807 = 2\*\*63 - 1"),
    ("seed-float", ["--seed", "1.5"], r"--seed: expected a whole number >= 0, got '1.5'"),
    ("out-empty", ["--out", ""], r"--out: must not be empty"),
    ("out-blank", ["--out", "  "], r"--out: must not be empty"),
    ("model-empty", ["--model", ""], r"--model: must not be empty"),
    ("png-empty", ["--png", ""], r"--png: must not be empty"),
    ("png-not-png", ["--png", "{tmp}/d.jpg"], r"--png must name a \.png file"),
    ("png-under-a-file", ["--png", "{tmp}/plain_file/d.png"], r"--png .*plain_file.*(is a file|cannot be written)"),
]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [pytest.param(*c[1:], id=c[0]) for c in CLI_CASES])
def test_sample_digits_refuses_a_bad_size_or_value_at_once(argv, message, files, monkeypatch, capsys):
    monkeypatch.setattr(P, "sample_digits", tripwire)
    monkeypatch.setattr(P, "load_mnist_model", tripwire)
    argv = [a.format(tmp=files) for a in argv]
    base = [] if "--out" in argv else ["--out", str(files / "d.npz")]
    code, err = _run(["sample-digits", *argv, *base], capsys)
    assert code == 2, f"exit code {code}, stderr: {err}"
    assert "Traceback" not in err and "alloc" not in err
    assert re.search(message, err), f"{err!r} does not match {message!r}"


def test_a_lesson_refuses_a_400_megapixel_image_in_one_line(files, monkeypatch, capsys):
    monkeypatch.setattr("minidiff.lessons_index.load_lesson", tripwire)
    code, err = _run(["lesson", "A1.7", "--image", str(files / "bomb.png"), "--out", str(files / "out")], capsys)
    assert code == 2 and "Traceback" not in err
    assert re.search(r"bomb\.png has 400\.0 megapixels, more than the 89\.5 megapixels", err), err
    assert len(err.strip().splitlines()) == 1


def test_the_command_lines_limits_are_the_librarys():
    assert (cli.MAX_STEPS, cli.MAX_PER_CLASS, cli.SEED_MAX) == (P.MAX_STEPS, P.MAX_PER_CLASS, checks.SEED_MAX)


# ----------------------------------------------------------------------------------------
# What still works at the edges
# ----------------------------------------------------------------------------------------


def test_the_edges_of_the_ranges_are_accepted(tiny):
    kw = dict(per_class=1, steps=1, method="euler", progress=False)
    a, _ = P.sample_digits(tiny["flow-class"], seed=checks.SEED_MAX, **kw)
    b, _ = P.sample_digits(tiny["flow-class"], seed=np.int64(checks.SEED_MAX), **kw)
    assert np.array_equal(a, b)
    assert P.class_vectors([3.0, 4]).argmax(1).tolist() == [3, 4]  # a whole float is its class
    assert len(P.flow_time_grid(P.MAX_STEPS)) == P.MAX_STEPS + 1


def test_the_mnist_models_schedules_know_their_data_range(tiny):
    for recipe in ("flow-class", "ddpm-class"):
        assert P.load_mnist_model(tiny[recipe]).schedule.data_range == (0.0, 1.0)
    assert IF.data_range == FLOW.data_range == (-1.0, 1.0)


def test_edits_take_a_little_overshoot_the_hole_of_any_values_and_check_range_false():
    overshoot = X + 1.04  # within 5% of the width of [-1, 1]: what a bicubic resize may ring to
    assert sdedit(den, overshoot, IF, TS, 1, progress=False).shape == X.shape
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1
    holey = X.clone()
    holey[..., 2:6, 2:6] = 100.0  # regenerated anyway: never read
    assert torch.isfinite(inpaint(den, holey, mask, IF, TS, progress=False)).all()
    assert sdedit(den, X + 5, IF, TS, 1, progress=False, check_range=False).shape == X.shape
    assert sdedit(den, X + 5, IF, TS, 1, progress=False, value_range=(0, 10)).shape == X.shape


def test_samplers_return_no_intermediates_unless_asked_and_all_of_them_when_asked():
    seen = []
    x = flow_euler(den, X, FLOW, FTS, progress=False, callback=lambda i, t, x, x0: seen.append(i))
    assert isinstance(x, torch.Tensor) and seen == [0, 1, 2, 3]
    x, xs = flow_euler(den, X, FLOW, FTS, progress=False, return_intermediates=True)
    assert len(xs) == len(FTS) and xs[-1] is x


# ----------------------------------------------------------------------------------------
# What sample-digits writes
# ----------------------------------------------------------------------------------------


class NaNNet(torch.nn.Module):
    """A class-conditional network whose weights went bad: every output is NaN."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t=None, c=None):
        return torch.full_like(x, NAN)


def test_sample_digits_from_a_nan_model_stops_naming_the_step_and_writes_nothing(tmp_path, monkeypatch, capsys):
    model = P.MNISTModel(NaNNet(), recipe_config("flow-class"))
    monkeypatch.setattr(P, "load_mnist_model", lambda *a, **k: model)
    code, err = _run(["sample-digits", "--per-class", "1", "--steps", "2", "--out", str(tmp_path / "d.npz")], capsys)
    assert code == 2 and "Traceback" not in err
    assert re.search(r"NaN or inf values: x first went non-finite at step 0 \(t = 0.0 -> 0.5\)", err), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_sample_digits_writes_the_npz_with_the_users_umask_and_a_png_beside_it(tiny, tmp_path, umask, capsys):
    from PIL import Image

    old = os.umask(umask)
    try:
        code = main(["sample-digits", "--per-class", "2", "--steps", "1", "--model", str(tiny["flow-class"]),
                     "--out", str(tmp_path / "d.npz")])
    finally:
        os.umask(old)
    assert code == 0
    for name in ("d.npz", "d.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "d.png"]  # no temporary file left
    with Image.open(tmp_path / "d.png") as png:
        assert png.format == "PNG" and png.height > png.width / 2  # ten rows of two digits
    assert "and a grid of them to" in capsys.readouterr().out


def test_sample_digits_png_goes_where_asked_and_shows_at_most_16_per_class(tiny, tmp_path, capsys):
    out, png = tmp_path / "d.npz", tmp_path / "figs" / "grid.png"
    code = main(["sample-digits", "--per-class", "17", "--steps", "1", "--model", str(tiny["flow-class"]),
                 "--out", str(out), "--png", str(png)])
    assert code == 0 and out.is_file() and png.is_file() and not out.with_suffix(".png").exists()
    assert "a grid of the first 16 of each class" in capsys.readouterr().out
    with np.load(out) as f:
        assert f["images"].shape == (170, 28, 28)


def test_a_failed_png_leaves_no_temporary_file(tiny, tmp_path, monkeypatch, capsys):
    def broken(path, *args, **kwargs):
        Path(path).write_bytes(b"half a PNG")
        raise RuntimeError("the figure could not be drawn")

    monkeypatch.setattr(P, "save_digit_grid", broken)
    code, err = _run(["sample-digits", "--per-class", "1", "--steps", "1", "--model", str(tiny["flow-class"]),
                      "--out", str(tmp_path / "d.npz")], capsys)
    assert code == 2 and "could not be drawn" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]  # the digits kept, no half-written PNG
