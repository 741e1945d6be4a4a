"""The one-step student (minidiff.distill, losses.reflow_example, the flow-class-1step recipe), on tiny teachers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minidiff import distill, guidance, mnist_pipeline as P, recipes as R
from minidiff.losses import reflow_example
from minidiff.run_folder import load_checkpoint, read_run_config, save_checkpoint
from minidiff.samplers import flow_euler, flow_heun
from minidiff.schedule import FlowSchedule
from minidiff.train import train

WIDTH = 4


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny class-conditioned flow teacher (width 4), trained 40 steps on 128 fake digits so that it draws
    something other than its random start."""
    folder = tmp_path_factory.mktemp("teacher") / "flow-class"
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(128, 1, 28, 28, generator=g) > 0.8).float()
    y = torch.arange(128) % 10
    cfg = R.recipe_config("flow-class", num_hiddens=WIDTH, batch_size=32, epochs=10, lr=1e-2, snapshot_epochs=[])
    train(cfg, folder, data=(x, y), progress=False)
    return folder


def _student_cfg(teacher: Path, **kw) -> dict:
    settings_ = dict(teacher=str(teacher), num_hiddens=WIDTH, pairs=40, teacher_steps=2, batch_size=20, epochs=1,
                     snapshot_epochs=[])
    return R.recipe_config("flow-class-1step", **{**settings_, **kw})


# ----------------------------------------------------------------------------------------
# The loss
# ----------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), p_zero=st.sampled_from([0.0, 0.3, 1.0]))
def test_reflow_example_puts_x_t_on_the_line_from_x0_to_x1_with_target_x1_minus_x0(seed, p_zero):
    """x_t = (1 - t) x0 + t x1 for the drawn t in [0, 1], the target is x1 - x0 whatever t, and p_zero 1 draws
    only t = 0 (x_t = x0: direct distillation), p_zero 0 no t = 0 at all (almost surely)."""
    g = torch.Generator().manual_seed(seed)
    x1, x0 = torch.rand(16, 1, 28, 28, generator=g), torch.randn(16, 1, 28, 28, generator=g)
    c = torch.eye(10)[torch.arange(16) % 10]
    (x_t, t, c_in), target = reflow_example(FlowSchedule(), x1, x0, c, torch.Generator().manual_seed(seed), p_zero)
    assert torch.equal(target, x1 - x0) and torch.equal(c_in, c)
    assert t.shape == (16,) and bool(((t >= 0) & (t <= 1)).all())  # one time per row
    tt = t.view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, (1 - tt) * x0 + tt * x1, rtol=0, atol=1e-6)
    if p_zero == 1.0:
        assert bool((t == 0).all()) and torch.equal(x_t, x0)
    if p_zero == 0.0:
        assert bool((t > 0).all()) and len(set(t.tolist())) == 16  # drawn for each row apart


def test_reflow_draws_t_zero_at_the_rate_p_zero():
    """Over 20,000 draws the share of t = 0 is p_zero within 4 standard deviations."""
    n, p = 20_000, 0.5
    x = torch.zeros(n, 1, 2, 2)
    (_, t, _), _ = reflow_example(FlowSchedule(), x, x, torch.zeros(n, 10), torch.Generator().manual_seed(0), p)
    share = float((t == 0).float().mean())
    assert abs(share - p) < 4 * (p * (1 - p) / n) ** 0.5, share


# ----------------------------------------------------------------------------------------
# Pairs, the student's start, training
# ----------------------------------------------------------------------------------------


def test_teacher_pairs_are_what_the_teachers_sampler_makes_from_seeded_noise(teacher):
    """x0 ~ N(0, I) from seed; x1 = the teacher's guided sampler from x0, its own method (here, without a
    config["sampler"], Heun) at teacher_steps and teacher_guidance; labels 0..9 in turn."""
    cfg = _student_cfg(teacher, pairs=13, teacher_steps=3, teacher_guidance=1.5, seed=7)
    x1, labels, x0 = distill.teacher_pairs(cfg, progress=False)
    assert x1.shape == x0.shape == (13, 1, 28, 28) and labels.tolist() == [i % 10 for i in range(13)]
    assert torch.equal(x0, torch.randn(13, 1, 28, 28, generator=torch.Generator().manual_seed(7)))
    model = P.load_mnist_model(teacher)
    den = guidance.cfg(model, P.class_vectors(labels), model.uncond(1), 1.5)
    expected = flow_heun(den, x0, model.schedule, P.flow_time_grid(3), progress=False).clamp(0, 1)
    torch.testing.assert_close(x1, expected, rtol=0, atol=1e-5)
    assert float(x1.min()) >= 0 and float(x1.max()) <= 1
    again = distill.teacher_pairs(cfg, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(again, (x1, labels, x0)))  # what resume relies on


def test_the_student_starts_from_the_teachers_weights(teacher):
    net, _ = load_checkpoint(teacher)
    student = distill.student_from_teacher(_student_cfg(teacher))
    assert student.training
    for (name, a), (_, b) in zip(net.state_dict().items(), student.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_teacher_of_another_width_or_kind_is_refused(teacher, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="width must be the teacher's: D = 4"):
        distill.student_from_teacher(_student_cfg(teacher, num_hiddens=8))
    cfg = R.recipe_config("flow-time", num_hiddens=WIDTH)
    save_checkpoint(R.build_from_config(cfg).eval(), cfg, tmp_path / "flow-time")
    with pytest.raises(ValueError, match="needs a class-conditioned flow teacher"):
        distill.teacher_pairs(_student_cfg(tmp_path / "flow-time"), progress=False)
    monkeypatch.setenv("MINIDIFF_WEIGHTS", str(tmp_path / "weights"))  # no shipped model of that name either
    (tmp_path / "weights" / "mnist").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no MNIST checkpoint at '.*nowhere'"):
        distill.teacher_pairs(_student_cfg(tmp_path / "nowhere"), progress=False)


@pytest.mark.parametrize("override, message", [
    (dict(ema_decay=0.999), r"ema_decay \(--ema\): a reflow student"),
    (dict(data="somewhere"), r"data \(--data\): a reflow student"),
    (dict(pairs=0), r"pairs \(--pairs\) must be an int from 1 to 1000000"),
    (dict(teacher_steps=0), r"teacher_steps must be an int from 1"),
    (dict(p_zero=1.5), r"p_zero is the share of training times at t = 0"),
    (dict(teacher=""), r"teacher \(--teacher\) must be a shipped model name"),
    (dict(time_power=2.0), r"time_power .* leave it out"),
])
def test_wrong_reflow_settings_are_refused_with_the_reason(override, message):
    with pytest.raises(ValueError, match=message):
        R.recipe_config("flow-class-1step", **override)


def test_distillation_brings_one_step_closer_to_the_teachers_many_steps(teacher, tmp_path):
    """After 60 steps on 40 pairs, one Euler step of the student lands nearer the teacher's 2-step digits than one
    step of the teacher does (mean squared error on the pairs): what the student is trained for."""
    cfg = _student_cfg(teacher, epochs=30, lr=1e-2)
    x1, labels, x0 = distill.teacher_pairs(cfg, progress=False)
    student = train(cfg, tmp_path / "student", progress=False)
    before = P.load_mnist_model(teacher)
    after = P.load_mnist_model(tmp_path / "student")
    one_step = {}
    for name, model, scale in (("teacher", before, 2.0), ("student", after, 1.0)):
        den = guidance.cfg(model, P.class_vectors(labels), model.uncond(1), scale)
        one_step[name] = float(((flow_euler(den, x0, model.schedule, [0.0, 1.0], progress=False).clamp(0, 1)
                                 - x1) ** 2).mean())
    assert one_step["student"] < 0.7 * one_step["teacher"], one_step
    assert student is not None


def test_a_resumed_reflow_run_ends_where_the_uninterrupted_one_does(teacher, tmp_path):
    """The pairs are written again from the config on resume; the fingerprint finds them equal, and the loss
    trajectory and weights match the run that was never stopped."""
    cfg = _student_cfg(teacher, epochs=3, save_every=2)
    train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "parts", progress=False, max_steps=2)
    train(cfg, tmp_path / "parts", progress=False, resume=True)
    assert (tmp_path / "whole" / "loss.csv").read_text() == (tmp_path / "parts" / "loss.csv").read_text()
    a, _ = load_checkpoint(tmp_path / "whole")
    b, _ = load_checkpoint(tmp_path / "parts")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    saved = read_run_config(tmp_path / "whole")
    assert saved["kind"] == "reflow" and saved["train_images"] == 40 and saved["sampler"]["steps"] == 1


def test_given_data_must_carry_the_noise(teacher, tmp_path):
    cfg = _student_cfg(teacher)
    x1, labels, x0 = distill.teacher_pairs(cfg, progress=False)
    with pytest.raises(ValueError, match=r"a triple \(images, labels, noise\)"):
        train(cfg, tmp_path / "a", data=(x1, labels), progress=False)
    with pytest.raises(ValueError, match="the noise must be finite and of the images' shape"):
        train(cfg, tmp_path / "b", data=(x1, labels, x0[:, :, :5]), progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ----------------------------------------------------------------------------------------
# Sampling: one evaluation of batch B per step
# ----------------------------------------------------------------------------------------


class _Counting:
    """A model that counts its calls and the rows they hold."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.schedule = model.schedule

    def __call__(self, x_t, t, cond):
        self.calls.append(x_t.shape[0])
        return self.model(x_t, t, cond)


def test_guidance_scale_one_calls_the_model_once_with_the_conditional_batch(teacher):
    """At scale 1 eps_u cancels: cfg calls the model once with the B conditional rows, and returns its output."""
    model = P.load_mnist_model(teacher)
    counting = _Counting(model)
    c = P.class_vectors([1, 2, 3])
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = guidance.cfg(counting, c, model.uncond(1), 1.0)(x, torch.tensor(0.3))
    assert counting.calls == [3]
    torch.testing.assert_close(out, model(x, 0.3, c), rtol=0, atol=0)
    guidance.cfg(counting, c, model.uncond(1), 1.5)(x, torch.tensor(0.3))
    assert counting.calls == [3, 6]  # any other scale: the batched pair


def test_the_shipped_settings_of_a_student_sample_in_one_unguided_call(teacher, tmp_path):
    """A flow-class-1step run samples with its config's sampler: Euler 1 step at scale 1, one call per batch."""
    train(_student_cfg(teacher), tmp_path / "s", progress=False)
    student = P.load_mnist_model(tmp_path / "s")
    assert student.kind == "flow" and student.config["kind"] == "reflow"
    settings_ = P.sampler_settings(student)
    assert settings_.timesteps == [0.0, 1.0] and settings_.guidance == 1.0 and settings_.final_denoise == 0.0
    assert P.function_evaluations("euler", 1) == 1
    counting = _Counting(student)
    counting.conditional, counting.device, counting.uncond = True, student.device, student.uncond
    x = P.guided_samples(counting, torch.randn(30, 1, 28, 28), torch.arange(30) % 10, settings_, batch_size=10,
                         progress=False)
    assert counting.calls == [10, 10, 10] and x.shape == (30, 1, 28, 28)


def test_minidiff_train_and_sample_digits_on_the_command_line(teacher, tmp_path):
    """`minidiff train flow-class-1step --teacher T --pairs N` then `minidiff sample-digits --model RUN`."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "minidiff", "train", "flow-class-1step", "--teacher", str(teacher), "--pairs", "20",
           "--hidden", str(WIDTH), "--batch-size", "10", "--epochs", "1", "--snapshot-epochs", "", "--out", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    saved = json.loads((run / "config.json").read_text())
    assert saved["pairs"] == 20 and saved["teacher"] == str(teacher) and "teacher" in saved["train_data"]
    out = tmp_path / "digits.npz"
    done = subprocess.run([sys.executable, "-m", "minidiff", "sample-digits", "--model", str(run), "--per-class", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and out.with_suffix(".png").is_file()
    wrong = subprocess.run(cmd[:-2] + ["--pairs", "0", "--out", str(tmp_path / "x")], capture_output=True, text=True,
                           timeout=300)
    assert wrong.returncode != 0 and "pairs (--pairs) must be an int from 1 to 1000000" in wrong.stderr
