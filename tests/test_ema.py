"""The exponential moving average of the weights (recipes.ema_update) and its setting."""

from __future__ import annotations

import pytest
import torch

from minidiff.recipes import ema_update, recipe_config


def _pair():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema.load_state_dict(model.state_dict())
    return ema, model


@pytest.mark.parametrize("step, decay", [(0, 0.999), (5000, 0.999), (5000, 0.9)])
def test_ema_is_the_weighted_average_with_the_warmed_up_decay(step, decay):
    """ema <- d ema + (1 - d) model with d = min(decay, (1 + step) / (10 + step)); buffers copied."""
    ema, model = _pair()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(0.5)
    before = [p.clone() for p in ema.parameters()]
    ema_update(ema, model, decay, step)
    d = min(decay, (1 + step) / (10 + step))
    for b, p, p_ema in zip(before, model.parameters(), ema.parameters()):
        torch.testing.assert_close(p_ema, d * b + (1 - d) * p)
    assert torch.equal(ema[1].running_mean, model[1].running_mean)


def test_ema_of_a_constant_model_is_that_model():
    ema, model = _pair()
    for step in range(20):
        ema_update(ema, model, 0.999, step)
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        torch.testing.assert_close(p_ema, p)


@pytest.mark.parametrize("decay", [1.0, 1.5, -0.1, float("nan")])
def test_a_bad_ema_decay_is_refused(decay):
    with pytest.raises(ValueError, match="ema_decay"):
        recipe_config("flow-class", ema_decay=decay)


@pytest.mark.parametrize("recipe", ["flow-class", "ddpm-time", "denoiser", "judge"])
def test_every_recipe_takes_an_average_and_none_has_one_by_default(recipe):
    assert "ema_decay" not in recipe_config(recipe)
    assert recipe_config(recipe, ema_decay=0.999)["ema_decay"] == 0.999


def _fake_digits(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g) ** 4, torch.arange(n) % 10


def _tiny_ema(**kw):
    return recipe_config("flow-class", **{**dict(num_hiddens=4, epochs=2, batch_size=16, save_every=2,
                                                     snapshot_epochs=[1], ema_decay=0.9), **kw})


def test_a_run_with_an_average_ships_the_average_and_resumes_exactly(tmp_path):
    """model.safetensors holds the EMA, not the last trained weights; stopping after 4 of 6 steps
    and resuming gives the uninterrupted run's losses, average and trained weights bit for bit."""
    from safetensors.torch import load_file

    from minidiff import run_folder as RF
    from minidiff import train as T

    data, cfg = _fake_digits(), _tiny_ema()
    returned = T.train(cfg, tmp_path / "a", data=data, progress=False)
    T.train(cfg, tmp_path / "b", data=data, progress=False, max_steps=4)
    T.train(cfg, tmp_path / "b", data=data, progress=False, resume=True)
    assert RF.read_loss_log(tmp_path / "a") == RF.read_loss_log(tmp_path / "b")
    for name in ("model.safetensors", "train_state.safetensors"):
        wa, wb = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    shipped = load_file(str(tmp_path / "a" / "model.safetensors"))
    trained = {k[len("trained."):]: v for k, v in load_file(str(tmp_path / "a" / "train_state.safetensors")).items()
               if k.startswith("trained.")}
    assert shipped.keys() == trained.keys()
    weights = [k for k in shipped if k.endswith("weight")]
    assert any(not torch.equal(shipped[k], trained[k]) for k in weights)  # an average, not the last step
    assert all(torch.equal(shipped[k], v.contiguous()) for k, v in returned.state_dict().items())
    net, _ = RF.load_checkpoint(tmp_path / "a")  # the pipelines load the average like any checkpoint
    assert not net.training
