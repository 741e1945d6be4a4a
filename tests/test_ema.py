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


def _batchnorms(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_recomputed_batchnorm_statistics_are_the_average_of_the_batches_statistics():
    """running_mean = mean over the batches of each batch's channel means, and running_var
    likewise of the unbiased batch variances (momentum None), whatever the statistics were before;
    the weights, the momenta and eval mode are as they were."""
    from minidiff.recipes import build_from_config, recompute_batchnorm, schedule_of

    cfg = _tiny_ema()
    torch.manual_seed(0)
    net = build_from_config(cfg)
    norms = _batchnorms(net)
    for m in norms:
        m.running_mean.fill_(7.0)
        m.running_var.fill_(7.0)
    seen = {m: [] for m in norms}
    hooks = [m.register_forward_pre_hook(lambda m, inp: seen[m].append(inp[0].detach().clone())) for m in norms]
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    x, y = _fake_digits()
    out = recompute_batchnorm(net, cfg, schedule_of(cfg), x, y, batches=3)
    for h in hooks:
        h.remove()
    assert out is net and not net.training
    for m in norms:
        assert len(seen[m]) == 3 and m.momentum == 0.1
        means = torch.stack([a.mean(dim=(0, 2, 3)) for a in seen[m]])
        variances = torch.stack([a.transpose(0, 1).flatten(1).var(dim=1) for a in seen[m]])
        torch.testing.assert_close(m.running_mean, means.mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m.running_var, variances.mean(0), rtol=1e-4, atol=1e-6)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())


def test_recomputed_statistics_depend_on_the_weights_only():
    """The same weights get the same statistics (the draws have a generator of their own, seeded
    with cfg's seed), and the global RNG is left alone."""
    from minidiff.recipes import build_from_config, recompute_batchnorm, schedule_of

    cfg = _tiny_ema()
    torch.manual_seed(1)
    a = build_from_config(cfg)
    b = build_from_config(cfg)
    b.load_state_dict(a.state_dict())
    x, y = _fake_digits()
    state = torch.get_rng_state()
    recompute_batchnorm(a, cfg, schedule_of(cfg), x, y, batches=2)
    assert torch.equal(torch.get_rng_state(), state)
    recompute_batchnorm(b, cfg, schedule_of(cfg), x, y, batches=2)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_a_run_with_an_average_ships_it_with_its_own_batchnorm_statistics(tmp_path):
    """The saved average (and its snapshot) carry statistics recomputed for the average's weights,
    not the trained model's copied ones."""
    from safetensors.torch import load_file

    from minidiff import train as T
    from minidiff.recipes import build_from_config, recompute_batchnorm, schedule_of

    data, cfg = _fake_digits(), _tiny_ema()
    T.train(cfg, tmp_path / "a", data=data, progress=False)
    shipped = load_file(str(tmp_path / "a" / "model.safetensors"))
    trained = {k[len("trained."):]: v for k, v in load_file(str(tmp_path / "a" / "train_state.safetensors")).items()
               if k.startswith("trained.")}
    net = build_from_config(cfg)
    net.load_state_dict(shipped)
    for m in _batchnorms(net):
        m.reset_running_stats()
    recompute_batchnorm(net, cfg, schedule_of(cfg), *data)
    stats = [k for k in shipped if "running_" in k]
    assert stats
    for k in stats:  # the run's network is channels_last: equal up to the order of float sums
        torch.testing.assert_close(shipped[k], net.state_dict()[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(shipped[k], trained[k]) for k in stats)
    snap = load_file(str(tmp_path / "a" / "snapshots" / "epoch_001" / "model.safetensors"))
    assert any(not torch.equal(snap[k], trained[k]) for k in stats)
