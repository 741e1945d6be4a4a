"""Training loops: targets match their definitions, a step lowers the loss, checkpoints
round-trip bit for bit, and a resumed run repeats the uninterrupted one exactly."""

from __future__ import annotations

import csv
import json
import os
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from minidiff import losses as L
from minidiff import recipes as R
from minidiff import run_folder as RF
from minidiff import train as T
from minidiff.cli import build_parser, main
from minidiff.models.mnist import class_vector
from minidiff.schedule import DDPMSchedule, FlowSchedule

from idx_files import write_idx


def fake_digits(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright blobs on black at random places, labels 0..9 cycling."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centres = torch.rand(n, 2, generator=g) * 14 + 7
    x = torch.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / 18)
    return x.unsqueeze(1), torch.arange(n) % 10


def tiny(recipe: str, **kw):
    base = dict(num_hiddens=4, epochs=2, batch_size=16, save_every=2, snapshot_epochs=[1])
    if recipe == "judge":
        base.pop("num_hiddens")
        base["width"] = 4
    base.update(kw)
    return T.recipe_config(recipe, **base)


def test_ddpm_targets_match_the_definition():
    """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps with t ~ U{0..T-1}, ab from linear betas 1e-4..0.02."""
    x0, _ = fake_digits(8)
    s = DDPMSchedule.linear(300)
    (x_t, t), eps = L.ddpm_example(s, x0, None, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t_ref = torch.randint(0, 300, (8,), generator=g)
    eps_ref = torch.randn(x0.shape, generator=g)
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 300, dtype=torch.float64), 0)[t_ref].view(-1, 1, 1, 1)
    assert torch.equal(t, t_ref.float() / 300) and torch.equal(eps, eps_ref)  # the network's t: t / T
    torch.testing.assert_close(x_t.double(), ab.sqrt() * x0.double() + (1 - ab).sqrt() * eps.double(), rtol=0, atol=1e-5)

    seen = {}

    def model(x, tn, c):
        seen.update(x=x, t=tn, c=c)
        return torch.zeros_like(x)

    c = class_vector(torch.arange(8))
    cfg = R.recipe_config("ddpm-class", p_uncond=0.0, channels_last=False)
    loss = T.batch_loss(cfg, model, s, x0, torch.arange(8), torch.Generator().manual_seed(3))
    torch.testing.assert_close(seen["t"], t_ref.float() / 300)  # the network sees t / T
    assert torch.equal(seen["c"], c) and torch.equal(seen["x"], x_t)
    torch.testing.assert_close(loss, (eps_ref**2).mean())  # zero prediction: L = mean eps^2


def test_flow_targets_match_the_definition():
    """x_t = (1 - t) x0 + t x1, u = x1 - x0, x0 ~ N(0, I), t ~ U[0, 1]; so x_t + (1 - t) u = x1."""
    x1, y = fake_digits(8)
    (x_t, t), u = L.flow_example(FlowSchedule(), x1, None, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(x1.shape, generator=g)
    t_ref = torch.rand(8, generator=g)
    assert torch.equal(t, t_ref)
    tt = t.view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, (1 - tt) * x0 + tt * x1)
    torch.testing.assert_close(u, x1 - x0)
    torch.testing.assert_close(x_t + (1 - tt) * u, x1)

    seen = {}

    def model(x, tn):
        seen.update(x=x, t=tn)
        return torch.zeros_like(x)

    cfg = R.recipe_config("flow-time", channels_last=False)
    loss = T.batch_loss(cfg, model, FlowSchedule(), x1, y, torch.Generator().manual_seed(5))
    assert torch.equal(seen["t"], t_ref) and torch.equal(seen["x"], x_t)  # the flow network sees t itself
    torch.testing.assert_close(loss, (u**2).mean())


@pytest.mark.parametrize("power", [0.5, 2.0, 3.0])
def test_flow_times_with_a_power_are_one_minus_the_power_of_uniform_draws(power):
    """time_power p: t = 1 - (1 - r)^p for the very r the uniform draw would use; x0 is unchanged."""
    x1, _ = fake_digits(8)
    (_, t1), u1 = L.flow_example(FlowSchedule(), x1, None, torch.Generator().manual_seed(5))
    (x_tp, tp), up = L.flow_example(FlowSchedule(), x1, None, torch.Generator().manual_seed(5), time_power=power)
    torch.testing.assert_close(tp, 1 - (1 - t1) ** power)
    assert torch.equal(up, u1)  # the same noise: only where on the path each digit sits changes
    tt = tp.view(-1, 1, 1, 1)
    torch.testing.assert_close(x_tp + (1 - tt) * up, x1)


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0])
def test_the_share_of_flow_times_above_1_minus_eps_is_eps_to_the_1_over_p(power):
    """P(t > 1 - eps) = P((1 - r)^p < eps) = eps^(1/p): the data end gets eps^(1/p) of the training."""
    x1 = torch.zeros(100_000, 1, 1, 1)
    (_, t), _ = L.flow_example(FlowSchedule(), x1, None, torch.Generator().manual_seed(0), time_power=power)
    for eps in (0.025, 0.1, 0.5):
        share = (t > 1 - eps).float().mean().item()
        assert abs(share - eps ** (1 / power)) < 0.006, (eps, share)


def test_time_power_is_a_flow_setting_and_must_be_positive():
    assert "time_power" not in R.recipe_config("flow-class-ema")
    assert R.recipe_config("flow-class", time_power=2)["time_power"] == 2.0
    with pytest.raises(ValueError, match="time_power.*flow recipe"):
        R.recipe_config("ddpm-class", time_power=2)
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="time_power"):
            R.recipe_config("flow-class", time_power=bad)


def test_a_time_power_changes_the_loss_a_batch_trains_on():
    """batch_loss passes the config's time_power on: the same seed, other times, another loss."""
    cfg = tiny("flow-class")
    torch.manual_seed(0)
    model = R.build_from_config(cfg).eval()
    x, y = fake_digits(16)
    losses = [T.batch_loss({**cfg, "time_power": p}, model, FlowSchedule(), x, y, torch.Generator().manual_seed(0))
              for p in (1.0, 1.0, 3.0)]
    assert losses[0] == losses[1] and losses[0] != losses[2]


@pytest.mark.parametrize("recipe", ["denoiser", "pure-noise", "ddpm-class", "flow-time", "judge"])
def test_one_step_lowers_the_loss_on_a_fixed_batch(recipe):
    cfg = tiny(recipe, lr=1e-3, channels_last=False)
    torch.manual_seed(0)
    model = R.build_from_config(cfg)
    x, y = fake_digits(16)
    schedule = R.schedule_of(cfg)
    cfg["p_uncond"] = 0.0

    def loss():
        return T.batch_loss(cfg, model, schedule, x, y, torch.Generator().manual_seed(0))

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    assert float(loss().detach()) < float(before.detach())


@pytest.mark.parametrize("recipe", ["flow-class", "ddpm-time", "denoiser", "judge"])
def test_checkpoint_round_trip_is_bit_exact(tmp_path, recipe):
    cfg = tiny(recipe)
    torch.manual_seed(1)
    model = R.build_from_config(cfg)
    RF.save_checkpoint(model, cfg, tmp_path)
    loaded, cfg2 = RF.load_checkpoint(tmp_path)
    assert cfg2["recipe"] == recipe
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    RF.save_checkpoint(model, cfg, tmp_path / "half", dtype=torch.float16)
    half, _ = RF.load_checkpoint(tmp_path / "half")
    w = "conv1.weight" if recipe == "judge" else "conv_out.weight"
    assert torch.equal(half.state_dict()[w], a[w].half().float())


@pytest.mark.parametrize("recipe", ["flow-class", "ddpm-class"])
def test_resume_repeats_the_uninterrupted_run(tmp_path, recipe):
    """Stopping after 4 of 6 steps and resuming gives the same losses and weights bit for bit."""
    data = fake_digits(48)
    cfg = tiny(recipe)
    T.train(cfg, tmp_path / "a", data=data, progress=False)
    T.train(cfg, tmp_path / "b", data=data, progress=False, max_steps=4)
    assert [s for s, _ in RF.read_loss_log(tmp_path / "b")] == [0, 1, 2, 3]
    T.train(cfg, tmp_path / "b", data=data, progress=False, resume=True)
    log_a, log_b = RF.read_loss_log(tmp_path / "a"), RF.read_loss_log(tmp_path / "b")
    assert len(log_a) == 6 and log_a == log_b
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for f in ("loss.png", "config.json", "snapshots/epoch_001/model.safetensors"):
        assert (tmp_path / "b" / f).is_file()
    assert json.loads((tmp_path / "b" / "config.json").read_text())["steps"] == 6


def test_a_run_folder_reads_back(tmp_path):
    """read_run_config, run_epochs, trained_how and plot_loss read what train() wrote."""
    T.train(tiny("flow-class"), tmp_path, data=fake_digits(48), progress=False)
    cfg = RF.read_run_config(tmp_path)
    assert cfg["steps"] == 6 and cfg["steps_per_epoch"] == 3 and cfg["epochs_done"] == 2
    assert RF.run_epochs(tmp_path) == {1: tmp_path / "snapshots" / "epoch_001", 2: tmp_path}
    assert RF.trained_how(tmp_path).startswith("D = 4, 2 epochs, 6 steps of 16, ")
    title = "flow matching, class-conditioned: " + RF.trained_how(tmp_path) + " on fake digits, for the test"
    path = RF.plot_loss(tmp_path, tmp_path / "curve.png", title)
    assert path == tmp_path / "curve.png" and path.stat().st_size > 0
    with pytest.raises(FileNotFoundError, match="loss.csv"):
        RF.plot_loss(tmp_path / "snapshots" / "epoch_001")


def test_resume_needs_a_checkpoint_with_the_same_settings(tmp_path):
    data = fake_digits(48)
    with pytest.raises(FileNotFoundError, match="resume"):
        T.train(tiny("flow-time"), tmp_path, data=data, resume=True, progress=False)
    T.train(tiny("flow-time"), tmp_path, data=data, progress=False, max_steps=2)
    with pytest.raises(ValueError, match="lr"):
        T.train(tiny("flow-time", lr=0.5), tmp_path, data=data, resume=True, progress=False)


def test_bad_training_inputs(tmp_path):
    x, y = fake_digits(32)
    with pytest.raises(ValueError, match="0..9"):
        T.train(tiny("flow-class"), tmp_path, data=(x, y + 5), progress=False)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        T.train(tiny("flow-class"), tmp_path, data=(torch.rand(32, 1, 32, 32), y), progress=False)
    with pytest.raises(ValueError, match="recipe"):
        T.recipe_config("gan")
    with pytest.raises(ValueError, match="epochs"):
        T.recipe_config("denoiser", epochs=-1)


def test_cli_train_on_an_idx_folder(tmp_path, monkeypatch):
    x, y = fake_digits(40)
    images = (x[:, 0] * 255).round().to(torch.uint8).numpy()
    for prefix in ("train5k", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", y.numpy().astype(np.uint8))
    monkeypatch.setenv("MINIDIFF_MNIST_DIR", str(tmp_path))
    out = tmp_path / "run"
    rc = main(["train", "flow-class", "--out", str(out), "--epochs", "1", "--batch-size", "32", "--hidden", "4"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hiddens"] == 4 and cfg["train_images"] == 80 and cfg["steps"] == 2
    assert cfg["epochs"] == 1 and type(cfg["epochs"]) is int  # --epochs 1 is recorded as 1, not 1.0
    log = (out / "loss.csv").read_bytes()
    assert b"\r" not in log and log.count(b"\n") == 3  # a header and 2 rows, each ending in a bare newline
    with open(out / "loss.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2


def test_a_fraction_of_an_epoch_stays_a_fraction(tmp_path):
    args = build_parser().parse_args(["train", "flow-class", "--out", str(tmp_path), "--epochs", "0.5"])
    assert args.epochs == 0.5 and type(build_parser().parse_args(["train", "judge", "--out", "x", "--epochs", "3"])
                                        .epochs) is int


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_the_files_of_a_run_follow_the_umask(tmp_path, umask):
    """Every file a run writes gets 0o666 less the umask, as a plain open() gives (safetensors alone gave 0o600)."""
    before = os.umask(umask)
    try:
        T.train(tiny("flow-class", epochs=1, save_every=1), tmp_path, data=fake_digits(32), progress=False)
    finally:
        os.umask(before)
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert {f.relative_to(tmp_path).as_posix() for f in files} >= {"model.safetensors", "train_state.safetensors",
                                                                    "config.json", "loss.png", "loss.csv",
                                                                    "snapshots/epoch_001/model.safetensors"}
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o666 & ~umask for f in files}


def test_resume_rewrites_the_log_whole_and_with_bare_newlines(tmp_path):
    """loss.csv of an older run (CR LF rows, rows past its checkpoint) is rewritten: the kept rows, '\\n' endings."""
    data = fake_digits(48)
    T.train(tiny("flow-time"), tmp_path, data=data, progress=False, max_steps=2)
    log = tmp_path / "loss.csv"
    rows = log.read_text().splitlines() + ["2,0,0.01,9.99", "3,1,0.01,9.99"]  # trained after the checkpoint
    log.write_bytes("".join(r + "\r\n" for r in rows).encode())
    T.train(tiny("flow-time"), tmp_path, data=data, progress=False, resume=True)
    text = log.read_text()
    assert "\r" not in text and "9.99" not in text
    assert [s for s, _ in RF.read_loss_log(tmp_path)] == [0, 1, 2, 3, 4, 5]


def test_train_help_shows_each_recipes_defaults():
    """`minidiff train --help` lists what RECIPES says (written out in minidiff/cli/parser.py, so that --help needs no torch)."""
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for recipe, settings in R.RECIPES.items():
        row = next(line.split() for line in help_text.splitlines() if line.startswith(f"  {recipe} "))
        width = settings.get("num_hiddens", settings.get("width"))
        assert row[1:5] == [str(settings["epochs"]), str(settings["batch_size"]), f"{settings['lr']:.0e}".replace(
            "e-0", "e-"), str(width)], row
        assert ("--ema" in " ".join(row)) == ("ema_decay" in settings)
    ranges = {key: high for key, (low, high, _) in R._RANGES.items()}
    assert (f"epochs in (0, {R.MAX_EPOCHS}], batch size 1..{ranges['batch_size']}, width 1..{ranges['num_hiddens']}, "
            f"seed 0..2**63-1") in help_text
    assert ranges["seed"] == 2**63 - 1 and ranges["width"] == ranges["num_hiddens"]
    assert "--seed SEED           seed of every random draw" in help_text


def test_the_epoch_order_of_earlier_seeds_is_kept_and_any_seed_in_range_works():
    n = 48
    expected = torch.randperm(n, generator=torch.Generator().manual_seed(5 * 1_000_003 + 3))
    assert torch.equal(T._epoch_order(5, 3, n), expected)  # seeds below 2**32: the order runs always had
    assert sorted(T._epoch_order(2**63 - 1, 7, n).tolist()) == list(range(n))
