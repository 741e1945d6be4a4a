"""MNIST models behind the model(x_t, t, cond) contract; sample-digits; the shipped weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from minidiff import mnist_pipeline as P
from minidiff.cli import main
from minidiff.metrics import faint_share, judge_accuracy
from minidiff.recipes import recipe_config
from tiny_models import tiny_checkpoints as make_tiny_checkpoints


class Recorder(torch.nn.Module):
    """Stands in for a UNet: remembers its inputs, returns zeros."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, x, t=None, c=None):
        self.calls.append((x, t, c))
        return torch.zeros_like(x)


def test_ddpm_adapter_divides_t_by_T_and_passes_the_class():
    rec = Recorder()
    m = P.MNISTModel(rec, recipe_config("ddpm-class"))
    x, cond = torch.randn(3, 1, 28, 28), P.class_vectors([1, 2, 3])
    m(x, torch.tensor([0, 150, 299]), cond)
    _, t, c = rec.calls[-1]
    torch.testing.assert_close(t, torch.tensor([0.0, 0.5, 299 / 300]))
    assert torch.equal(c, cond)
    with pytest.raises(ValueError, match="cond"):
        m(x, torch.tensor([1, 2, 3]))


def test_flow_adapter_passes_t_and_time_models_ignore_cond():
    rec = Recorder()
    m = P.MNISTModel(rec, recipe_config("flow-time"))
    m(torch.randn(2, 1, 28, 28), torch.tensor([0.25, 0.75]), m.uncond(2))
    x, t, c = rec.calls[-1]
    torch.testing.assert_close(t, torch.tensor([0.25, 0.75]))
    assert c is None
    assert torch.equal(m.uncond(2), torch.zeros(2, 10))


def test_time_grids_and_ddpm_timesteps():
    for grid in ("uniform", "late", "early"):
        ts = P.flow_time_grid(8, grid)
        assert len(ts) == 9 and ts[0] == 0.0 and ts[-1] == pytest.approx(1.0)
        assert all(a < b for a, b in zip(ts, ts[1:]))
    ts = P.ddpm_timesteps(300, 30)
    assert ts[0] == 299 and ts[-2] == 0 and ts[-1] == -1 and len(ts) == 31
    with pytest.raises(ValueError):
        P.ddpm_timesteps(300, 0)
    assert P.function_evaluations("heun", 8) == 15 and P.function_evaluations("euler", 16) == 16


@pytest.fixture
def tiny_checkpoints(tmp_path):
    return make_tiny_checkpoints(tmp_path)


@pytest.mark.parametrize("recipe,method,steps", [("flow-class", "heun", 3), ("flow-class", "euler", 4), ("ddpm-class", "ddpm", 5)])
def test_sample_digits_format_and_seed(tiny_checkpoints, recipe, method, steps):
    kw = dict(per_class=2, guidance=5.0, steps=steps, method=method, progress=False)
    images, labels = P.sample_digits(tiny_checkpoints[recipe], seed=1, **kw)
    assert images.shape == (20, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [c for c in range(10) for _ in range(2)]
    again, _ = P.sample_digits(tiny_checkpoints[recipe], seed=1, **kw)
    other, _ = P.sample_digits(tiny_checkpoints[recipe], seed=2, **kw)
    assert np.array_equal(images, again) and not np.array_equal(images, other)


def test_sample_digits_bad_input(tiny_checkpoints, tmp_path):
    with pytest.raises(ValueError, match="per_class"):
        P.sample_digits(tiny_checkpoints["flow-class"], per_class=0)
    with pytest.raises(ValueError, match="does not fit"):
        P.sample_digits(tiny_checkpoints["flow-class"], per_class=1, method="ddim", progress=False)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        P.load_mnist_model(tmp_path / "nothing")


def test_cli_sample_digits_writes_the_npz(tiny_checkpoints, tmp_path):
    out = tmp_path / "d.npz"
    rc = main(["sample-digits", "--per-class", "1", "--steps", "2", "--seed", "0", "--out", str(out),
               "--model", str(tiny_checkpoints["flow-class"])])
    assert rc == 0
    with np.load(out) as f:
        assert f["images"].shape == (10, 28, 28) and f["images"].dtype == np.uint8
        assert f["labels"].tolist() == list(range(10)) and f["labels"].dtype == np.int64
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the digits to look at, beside them
    assert main(["sample-digits", "--out", str(tmp_path / "d.png"), "--model", str(tiny_checkpoints["flow-class"])]) == 2


def test_class_vectors_take_whole_labels_and_refuse_fractions():
    assert torch.equal(P.class_vectors(torch.tensor([2, 0])), torch.eye(10)[[2, 0]])
    assert torch.equal(P.class_vectors([2.0, 0.0]), torch.eye(10)[[2, 0]])
    for bad in ([1.5], torch.tensor([True]), ["1"]):
        with pytest.raises(ValueError, match="labels"):
            P.class_vectors(bad)


def test_the_digit_grid_has_one_row_per_class_and_at_most_the_columns_asked(tmp_path):
    from PIL import Image

    images = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 3)
    few = Image.open(P.save_digit_grid(tmp_path / "few.png", images, labels, columns=2))
    more = Image.open(P.save_digit_grid(tmp_path / "more.png", images, labels, columns=3))
    assert few.height == more.height and few.width < more.width


@pytest.mark.skipif(P.cpp_compiler() is None,
                    reason="torch.compile on a CPU needs a C++ compiler; the refusal without one is tested below")
def test_a_compiled_model_gives_the_eager_models_outputs_and_digits(tiny_checkpoints):
    """compile_for_inference changes how the network runs, not what it computes (float rounding aside)."""
    eager = P.load_mnist_model(tiny_checkpoints["flow-class"])
    compiled = P.load_mnist_model(tiny_checkpoints["flow-class"], compile=True)
    assert isinstance(compiled.net, torch._dynamo.eval_frame.OptimizedModule)
    g = torch.Generator().manual_seed(0)
    x, t, c = torch.randn(20, 1, 28, 28, generator=g), torch.rand(20, generator=g), P.class_vectors(torch.arange(20) % 10)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x, t, c), eager(x, t, c), rtol=1e-4, atol=1e-5)
    kw = dict(per_class=2, guidance=3.0, steps=2, method="euler", progress=False, batch_size=10)  # guided: 20 rows, as above
    a, _ = P.sample_digits(eager, **kw)
    b, _ = P.sample_digits(compiled, **kw)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # a pixel may round to the next level


def test_compiling_without_a_cpp_compiler_is_refused_before_any_work(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(P.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler .* or sample without compiling"):
        P.load_mnist_model(tiny_checkpoints["flow-class"], compile=True)
    out = tmp_path / "d.npz"
    assert main(["sample-digits", "--compile", "--out", str(out), "--model", str(tiny_checkpoints["flow-class"])]) == 2
    assert "C++ compiler" in capsys.readouterr().err and not out.exists()


QUALITY = P.WEIGHTS_DIR / "quality.json"


def test_every_shipped_model_loads():
    names = json.loads(QUALITY.read_text())["models"]
    for name in names:
        m = P.load_mnist_model(name)
        assert isinstance(m.net, torch.nn.Module)
        assert m.config["kind"] in ("flow", "reflow", "ddpm", "denoiser", "judge")


def test_the_default_model_at_its_own_settings_gives_the_documented_judge_accuracy():
    """sample_digits told nothing but the count and seed samples flow-class-ema with its config's
    sampler (Euler 8, its guidance, a final denoising step): the judge's accuracy is the one in
    quality.json (one digit of slack), and a final denoising step leaves fewer faint pixels."""
    doc = json.loads(QUALITY.read_text())["default_test_sample"]
    assert doc["model"] == P.DEFAULT_MODEL == "flow-class-ema"
    images, labels = P.sample_digits(per_class=doc["per_class"], seed=doc["seed"], progress=False)
    judge = P.load_mnist_model("judge").net
    acc = judge_accuracy(judge, images, labels)
    assert abs(acc - doc["judge_accuracy"]) <= 1 / labels.shape[0] + 1e-9 and acc >= 0.95
    raw, _ = P.sample_digits(per_class=doc["per_class"], seed=doc["seed"], progress=False, final_denoise=0)
    assert faint_share(images) < 0.6 * faint_share(raw)


def test_the_one_step_model_at_its_own_settings_gives_the_documented_accuracy_in_one_call_per_batch():
    """sample_digits(model="flow-class-1step") samples with its config's sampler, one unguided Euler step: one
    network call of the batch's rows per batch, and both judges read what quality.json says (one digit of slack)."""
    doc = json.loads(QUALITY.read_text())["one_step_test_sample"]
    model = P.load_mnist_model("flow-class-1step")
    calls = []
    model.net.register_forward_pre_hook(lambda net, inputs: calls.append(inputs[0].shape[0]))
    images, labels = P.sample_digits(model, per_class=doc["per_class"], seed=doc["seed"], batch_size=25, progress=False)
    assert calls == [25, 25]
    for name in ("judge", "judge2"):
        acc = judge_accuracy(P.load_mnist_model(name).net, images, labels)
        assert abs(acc - doc[name]) <= 1 / labels.shape[0] + 1e-9 and acc >= 0.95, (name, acc)


def test_final_denoise_is_one_more_clean_estimate_at_time_1_minus_s(tiny_checkpoints):
    """final_denoise = s: the sample x becomes x + s v_guided(x, 1 - s), i.e. one_step_denoise at t = 1 - s."""
    from minidiff.guidance import cfg
    from minidiff.samplers import flow_euler

    m = P.load_mnist_model(tiny_checkpoints["flow-class"])
    images, _ = P.sample_digits(m, per_class=1, guidance=3.0, steps=2, method="euler", progress=False,
                                final_denoise=0.1)
    noise = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    den = cfg(m, P.class_vectors(torch.arange(10)), m.uncond(1), 3.0)
    x = flow_euler(den, noise, m.schedule, P.flow_time_grid(2), progress=False)
    x = x + 0.1 * den(x, torch.full((10,), 0.9))
    expected = (x.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1
    plain, _ = P.sample_digits(m, per_class=1, guidance=3.0, steps=2, method="euler", progress=False)
    assert not np.array_equal(images, plain)
    assert P.function_evaluations("euler", 8, 0.025) == 9 and P.function_evaluations("heun", 4, 0.0) == 7


@pytest.mark.parametrize("s, match", [(1.0, r"\[0, 1\)"), (-0.1, "final_denoise"), (float("nan"), "final_denoise")])
def test_a_bad_final_denoise_is_refused(tiny_checkpoints, s, match):
    with pytest.raises(ValueError, match=match):
        P.sample_digits(tiny_checkpoints["flow-class"], per_class=1, steps=1, progress=False, final_denoise=s)


def test_final_denoise_needs_a_flow_model(tiny_checkpoints):
    with pytest.raises(ValueError, match="needs a flow model"):
        P.sample_digits(tiny_checkpoints["ddpm-class"], per_class=1, steps=2, progress=False, final_denoise=0.05)


def test_shipped_flow_model_gives_the_documented_judge_accuracy():
    """Seeded small sample with the default sampler (Heun, 15 evaluations, CFG 5): the judge's
    accuracy is the one written in weights/mnist/quality.json (one digit of slack for
    floating-point differences between machines)."""
    doc = json.loads(QUALITY.read_text())["test_sample"]
    images, labels = P.sample_digits("flow-class", per_class=doc["per_class"], guidance=doc["guidance"],
                                     seed=doc["seed"], progress=False)
    judge = P.load_mnist_model("judge").net
    acc = judge_accuracy(judge, images, labels)
    assert abs(acc - doc["judge_accuracy"]) <= 1 / labels.shape[0] + 1e-9
    assert acc >= 0.9  # 94.5% on 1,000 digits (weights/README.md); 50 digits read at 0.96 here
