"""The Part B blocks and UNets: shapes, conditioning, class dropout, FLOP count, bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minidiff.models import mnist as M

D = 8


@pytest.mark.parametrize(
    "block,shape_in,shape_out",
    [
        (M.Conv(3, 5), (2, 3, 28, 28), (2, 5, 28, 28)),
        (M.DownConv(3, 5), (2, 3, 28, 28), (2, 5, 14, 14)),
        (M.UpConv(3, 5), (2, 3, 7, 7), (2, 5, 14, 14)),
        (M.Flatten(), (2, 6, 7, 7), (2, 6, 1, 1)),
        (M.Unflatten(6), (2, 6, 1, 1), (2, 6, 7, 7)),
        (M.ConvBlock(3, 5), (2, 3, 14, 14), (2, 5, 14, 14)),
        (M.DownBlock(3, 5), (2, 3, 14, 14), (2, 5, 7, 7)),
        (M.UpBlock(3, 5), (2, 3, 14, 14), (2, 5, 28, 28)),
        (M.FCBlock(4, 6), (2, 4), (2, 6)),
    ],
)
def test_block_shapes(block, shape_in, shape_out):
    assert block(torch.randn(shape_in)).shape == shape_out


def test_model_shapes():
    x, t, y = torch.randn(3, 1, 28, 28), torch.rand(3), torch.tensor([0, 4, 9])
    assert M.UnconditionalUNet(num_hiddens=D)(x).shape == x.shape
    assert M.TimeConditionalUNet(num_hiddens=D)(x, t).shape == x.shape
    assert M.ClassConditionalUNet(num_hiddens=D)(x, t, y).shape == x.shape
    assert M.ClassConditionalUNet(num_hiddens=D)(x, 0.5, M.class_vector(y)).shape == x.shape


def test_time_and_class_change_the_output():
    torch.manual_seed(0)
    net = M.ClassConditionalUNet(num_hiddens=D).eval()
    x = torch.randn(2, 1, 28, 28)
    base = net(x, torch.tensor([0.2, 0.2]), torch.tensor([1, 1]))
    assert not torch.allclose(base, net(x, torch.tensor([0.9, 0.9]), torch.tensor([1, 1])))
    assert not torch.allclose(base, net(x, torch.tensor([0.2, 0.2]), torch.tensor([7, 7])))
    assert not torch.allclose(base, net(x, torch.tensor([0.2, 0.2]), torch.zeros(2, 10)))


def test_class_vector_is_one_hot_and_checks_labels():
    v = M.class_vector(torch.tensor([0, 3, 9]))
    assert v.shape == (3, 10) and v.sum(1).tolist() == [1, 1, 1] and v[1, 3] == 1
    with pytest.raises(ValueError, match="0..9"):
        M.class_vector(torch.tensor([10]))
    with pytest.raises(ValueError, match="0..9"):
        M.class_vector(torch.tensor([-1]))
    with pytest.raises(ValueError, match="class vector"):
        M.class_vector(torch.zeros(2, 7))


def test_class_dropout_zeroes_whole_rows_at_the_stated_rate():
    """drop_class: each row is either untouched or all zeros, zeros with frequency p_uncond."""
    c = M.class_vector(torch.arange(20000) % 10)
    g = torch.Generator().manual_seed(0)
    dropped = M.drop_class(c, 0.1, g)
    zero_rows = dropped.abs().sum(1) == 0
    kept = ~zero_rows
    assert torch.equal(dropped[kept], c[kept])
    rate = float(zero_rows.float().mean())
    assert abs(rate - 0.1) < 0.01  # binomial std is 0.002 at n = 20000
    assert torch.equal(M.drop_class(c, 0.0, g), c)
    assert float(M.drop_class(c, 1.0, g).abs().sum()) == 0.0
    with pytest.raises(ValueError):
        M.drop_class(c, 1.5)


def test_wrong_image_size_is_a_clear_error():
    net = M.TimeConditionalUNet(num_hiddens=D)
    with pytest.raises(ValueError, match="28x28"):
        net(torch.randn(2, 1, 32, 32), torch.rand(2))
    with pytest.raises(ValueError, match=r"\(B,\)"):
        net(torch.randn(2, 1, 28, 28), torch.rand(3))
    with pytest.raises(ValueError, match="rows"):
        M.ClassConditionalUNet(num_hiddens=D)(torch.randn(2, 1, 28, 28), torch.rand(2), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="architecture"):
        M.build_model("nope", 8)


def test_forward_flops_match_a_count_by_hooks():
    """forward_flops equals 2 x the multiply-adds of every conv layer, counted from the layers' outputs."""
    net = M.UnconditionalUNet(num_hiddens=D)
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.ConvTranspose2d):
            # every input pixel meets every kernel tap once
            total += 2 * inp[0][0].numel() * mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            total += 2 * out[0].numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]

    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.register_forward_hook(hook)
    net(torch.randn(1, 1, 28, 28))
    assert total == M.forward_flops(D)
    assert 0.53e9 < M.forward_flops(64) < 0.55e9


@pytest.mark.parametrize("arch", ["unconditional", "time", "class"])
def test_folding_batchnorm_into_the_convolutions_keeps_the_outputs(arch):
    """BN(W * x + b) == (s W) * x + s (b - mu) + beta with s = gamma / sqrt(var + eps): the folded
    copy (no BatchNorm left, Conv2d and ConvTranspose2d alike) gives the eval network's outputs."""
    from minidiff.models.mnist import build_model, fold_batchnorm

    torch.manual_seed(0)
    net = build_model(arch, 8)
    with torch.no_grad():  # trained-looking statistics, so that folding has something to do
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    net.eval()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    x, t, c = torch.randn(4, 1, 28, 28), torch.rand(4), torch.eye(10)[:4]
    args = {"unconditional": (x,), "time": (x, t), "class": (x, t, c)}[arch]
    with torch.no_grad():
        torch.testing.assert_close(folded(*args), net(*args), atol=1e-5, rtol=1e-5)
