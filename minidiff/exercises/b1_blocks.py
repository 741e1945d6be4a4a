"""B1.1 The UNet's operations and blocks (Conv ... UpBlock): the starter and its checks.

Each block the learner writes is built next to the course's (``minidiff.models.mnist``) and
compared with it: output shape, layers, parameter count, then the output with the course's
weights copied in (``copy_weights``, which B2.1's FCBlock uses too).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from minidiff.exercises.harness import Check, call, expect, expect_close
from minidiff.exercises.starters import NOT_YET, exercise
from minidiff.models import mnist

__all__ = ["B1_1", "copy_weights", "activation_hint"]


# name: (constructor arguments, input shape, output shape, what gets the shape right)
BLOCKS: dict[str, tuple[tuple, tuple, tuple, str]] = {
    "Conv": ((3, 5), (2, 3, 28, 28), (2, 5, 28, 28),
             "nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1) keeps H and W."),
    "DownConv": ((3, 5), (2, 3, 28, 28), (2, 5, 14, 14),
                 "nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1) halves H and W: 28 -> 14."),
    "UpConv": ((3, 5), (2, 3, 7, 7), (2, 5, 14, 14),
               "nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1) doubles H and W: "
               "7 -> 14."),
    "Flatten": ((), (2, 6, 7, 7), (2, 6, 1, 1),
                "nn.AvgPool2d(7) averages the whole 7x7 map into one number per channel: (B, C, 7, 7) -> "
                "(B, C, 1, 1). A smaller pool leaves a map, not a vector."),
    "Unflatten": ((6,), (2, 6, 1, 1), (2, 6, 7, 7),
                  "nn.ConvTranspose2d(in_channels, in_channels, kernel_size=7, stride=7, padding=0) turns the 1x1 "
                  "vector back into a 7x7 map."),
    "ConvBlock": ((3, 5), (2, 3, 14, 14), (2, 5, 14, 14), "ConvBlock is Conv(in, out) then Conv(out, out)."),
    "DownBlock": ((3, 5), (2, 3, 14, 14), (2, 5, 7, 7), "DownBlock is DownConv(in, out) then ConvBlock(out, out)."),
    "UpBlock": ((3, 5), (2, 3, 7, 7), (2, 5, 14, 14), "UpBlock is UpConv(in, out) then ConvBlock(out, out)."),
}


def _count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def _randomise_batchnorm(module: nn.Module, seed: int) -> None:
    """Give every BatchNorm trained-looking statistics and affine weights, so that eval mode means something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
            n = bn.num_features
            bn.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            bn.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
            bn.bias.copy_(torch.rand(n, generator=g) - 0.5)


def copy_weights(src: nn.Module, dst: nn.Module) -> str | None:
    """Load src's parameters and buffers into dst, paired in order (or, when the orders differ, each of
    dst's with the next of src's of the same shape). None when done, else why they do not pair."""
    def items(m: nn.Module) -> list[tuple[str, torch.Tensor]]:
        return [(k, v) for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")]

    ours, theirs = items(src), items(dst)
    if len(ours) != len(theirs):
        return (f"your module holds {len(theirs)} weight and statistics tensors, the course's {len(ours)}: "
                f"yours {[tuple(v.shape) for _, v in theirs]}, the course's {[tuple(v.shape) for _, v in ours]}")
    pool, state = list(ours), {}
    for key, value in theirs:
        j = next((i for i, (_, v) in enumerate(pool) if v.shape == value.shape), None)
        if j is None:
            return f"your tensor {key} of shape {tuple(value.shape)} has no counterpart in the course's block"
        state[key] = pool.pop(j)[1].clone()
    dst.load_state_dict(state, strict=False)
    return None


def activation_hint(module: nn.Module) -> tuple[str, str] | None:
    """(hint, key) when the learner's module uses another activation than the course's GELU, else None."""
    others = (nn.ReLU, nn.SiLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.ELU)
    if any(isinstance(m, others) for m in module.modules()):
        return ("The course's activation is GELU (nn.GELU()), after every BatchNorm.", "activation")
    return None


def _check_block(name: str, cls: type) -> None:
    args, shape_in, shape_out, shape_hint = BLOCKS[name]
    what = f"{name}({', '.join(map(str, args))})"
    block = call(cls, *args, name=what)
    expect(isinstance(block, nn.Module), f"{what} is a {type(block).__name__}, not an nn.Module",
           key="not-module", hint=f"Make {name} a subclass of nn.Module (or nn.Sequential).")
    course = getattr(mnist, name)(*args)
    torch.manual_seed(0)
    x = torch.randn(shape_in)
    inputs = f"{what} on x of shape {shape_in}"
    block.train()
    out = call(block, x, name=what, inputs=inputs)
    expect(isinstance(out, torch.Tensor) and tuple(out.shape) == shape_out,
           f"{what} maps {shape_in} to {tuple(getattr(out, 'shape', ()))}, the course's to {shape_out}",
           inputs=inputs, expected=f"shape {shape_out}", got=f"shape {tuple(getattr(out, 'shape', ()))}",
           hint=shape_hint, key="flatten-pool" if name == "Flatten" else f"{name.lower()}-shape")
    bn_ours, bn_theirs = _count(course, nn.BatchNorm2d), _count(block, nn.BatchNorm2d)
    expect(bn_theirs >= bn_ours, f"{what} has {bn_theirs} BatchNorm2d layers, the course's {bn_ours}", inputs=inputs,
           hint="Every convolution of the course's blocks is followed by nn.BatchNorm2d(out_channels), then GELU.",
           key="missing-batchnorm")
    n_ours = sum(p.numel() for p in course.parameters())
    n_theirs = sum(p.numel() for p in block.parameters())
    bias_hint = ("The course's convolutions keep their bias (the nn.Conv2d default)."
                 if 0 < n_ours - n_theirs and (n_ours - n_theirs) % args[-1] == 0 else
                 "Count the layers and their kernel sizes against the docstring.")
    expect(n_theirs == n_ours, f"{what} has {n_theirs:,} parameters, the course's {n_ours:,}", inputs=inputs,
           expected=f"{n_ours:,} parameters", got=f"{n_theirs:,} parameters", hint=bias_hint, key="param-count")
    _randomise_batchnorm(course, 1)
    problem = copy_weights(course, block)
    expect(problem is None, f"the course's weights do not fit {what}: {problem}", inputs=inputs, key="weights",
           hint="Keep the layers of the docstring, in its order (convolution, BatchNorm2d, GELU).")
    course.eval()
    block.eval()
    with torch.no_grad():
        want = course(x)
        got = call(block, x, name=what, inputs=inputs)
    activation = activation_hint(block)
    expect_close(got, want, f"{what} with the course's weights copied in, in eval mode", atol=1e-5, inputs=inputs,
                 hint=activation[0] if activation else "Apply the layers in the docstring's order: the convolution, "
                 "then BatchNorm2d, then GELU.", key=activation[1] if activation else "block-output")


def _block_check(name: str) -> Check:
    args, shape_in, shape_out, _ = BLOCKS[name]
    what = f"{name}({', '.join(map(str, args))})"

    def fn(**implementation: Any) -> None:
        _check_block(name, implementation[name])

    fn.__name__ = f"check_{name.lower()}"
    return Check(f"{what}: {shape_in} -> {shape_out}, the course's layers and parameter count", fn,
                 f"Build {name} from the layers its docstring names, in that order.", names=(name,))


_CONV_DOC = '''
    """{what}

    {shape}
    Built from the layers named, in that order (nn.Sequential is the shortest way).
    """

    def __init__(self{params}):
        super().__init__()
        # TODO: the layers
        {not_yet}
'''


def _block_starter(name: str, base: str, what: str, shape: str, params: str, forward: bool) -> str:
    body = f"class {name}({base}):" + _CONV_DOC.format(what=what, shape=shape, params=params, not_yet=NOT_YET)
    if forward:
        body += f'''
    def forward(self, x):
        # TODO: apply the layers (or make the class an nn.Sequential and delete this method)
        {NOT_YET}
'''
    return body


_BLOCK_STARTERS = "\n\n".join([
    _block_starter("Conv", "nn.Module", "Conv2d(in, out, kernel_size=3, stride=1, padding=1), BatchNorm2d(out), GELU.",
                   "(B, in, H, W) -> (B, out, H, W)", ", in_channels, out_channels", True),
    _block_starter("DownConv", "nn.Module", "Conv2d(in, out, kernel_size=3, stride=2, padding=1), BatchNorm2d(out), "
                   "GELU.", "(B, in, H, W) -> (B, out, H / 2, W / 2)", ", in_channels, out_channels", True),
    _block_starter("UpConv", "nn.Module", "ConvTranspose2d(in, out, kernel_size=4, stride=2, padding=1), "
                   "BatchNorm2d(out), GELU.", "(B, in, H, W) -> (B, out, 2 H, 2 W)", ", in_channels, out_channels",
                   True),
    _block_starter("Flatten", "nn.Module", "AvgPool2d(7), GELU: the 7x7 map averaged into a vector.",
                   "(B, C, 7, 7) -> (B, C, 1, 1)", "", True),
    _block_starter("Unflatten", "nn.Module", "ConvTranspose2d(C, C, kernel_size=7, stride=7, padding=0), "
                   "BatchNorm2d(C), GELU.", "(B, C, 1, 1) -> (B, C, 7, 7)", ", in_channels", True),
    _block_starter("ConvBlock", "nn.Module", "Conv(in, out), then Conv(out, out).",
                   "(B, in, H, W) -> (B, out, H, W)", ", in_channels, out_channels", True),
    _block_starter("DownBlock", "nn.Module", "DownConv(in, out), then ConvBlock(out, out).",
                   "(B, in, H, W) -> (B, out, H / 2, W / 2)", ", in_channels, out_channels", True),
    _block_starter("UpBlock", "nn.Module", "UpConv(in, out), then ConvBlock(out, out).",
                   "(B, in, H, W) -> (B, out, 2 H, 2 W)", ", in_channels, out_channels", True),
])

B1_1 = exercise(
    "B1.1", "the UNet's operations and blocks (Conv ... UpBlock)", lesson="B1.2.1", file_name="b1_1_unet_blocks.py",
    checks=tuple(_block_check(name) for name in BLOCKS),
    heading="The UNet's operations and blocks", intro="""
        The course's UNet (Part B 1.1) is built from eight small modules. Operations: Conv,
        DownConv, UpConv (a convolution, BatchNorm2d, GELU), Flatten (7x7 average pool, GELU),
        Unflatten (7x7 transposed convolution, BatchNorm2d, GELU). Blocks: ConvBlock (two
        Convs), DownBlock (DownConv then ConvBlock), UpBlock (UpConv then ConvBlock).

        The checks build each with small sizes, compare its output shape and parameter count
        with the course's (minidiff.models.mnist), then copy the course's weights into yours
        and compare the outputs. Subclassing nn.Sequential saves writing forward().
        """, imports="""
        import torch
        from torch import nn
        """, body=_BLOCK_STARTERS)
