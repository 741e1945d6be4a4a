"""Peak memory of IF's cascade at full size: T5-XXL, then IF-I-XL at 64 px, then IF-II-L at 256 px.

    python benchmarks/bench_if_memory.py [--batch 1]

No weights are needed, and no memory is spent: every network is built with its real
configuration (IF-I-XL and IF-II-L from tests/fixtures/if_keys_*.json, T5 v1.1 XXL from its
published sizes) on the meta device, where tensors carry shapes and dtypes but no data,
and runs there. torch's MemTracker (a TorchDispatchMode) then counts the bytes of
every tensor alive at each moment of one guided forward pass (the batch doubled for
classifier-free guidance), which gives the peak of that step: weights, inputs, activations
and temporaries. One sampling step is the peak of a whole sampling loop, since a step
keeps nothing from the previous one but x_t.

What it counts is what PyTorch allocates for tensors, the quantity that
torch.cuda.max_memory_allocated reports. A real GPU adds the CUDA context (a few hundred MB)
and the caching allocator's rounding on top; torch.cuda.max_memory_reserved is the closer
figure there. On the meta device attention runs as plain matmul and softmax, which holds
the (heads, tokens, tokens) score matrix that a fused GPU kernel does not, so the
activation figures are upper bounds. ``--check`` measures the same way on a mid-size
stage-1 UNet (194.6M parameters, float32) run for real on the CPU and on the meta device:
the real run's activations are the smaller.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.distributed._tools.mem_tracker import MemTracker

from minidiff.if_pipeline import IFDenoiser, IFUpscaleDenoiser
from minidiff.models.if_unet import IFUNet

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
GiB = 2**30

# google/t5-v1_1-xxl, the encoder DeepFloyd IF ships in text_encoder/ (facts from its config.json)
T5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, vocab_size=32128,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, is_encoder_decoder=False)


def _built(make, dtype: torch.dtype) -> torch.nn.Module:
    """make() with its parameters created directly in dtype (no float32 copy first)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return make().eval()  # requires_grad stays on: MemTracker hooks every parameter; calls run under no_grad
    finally:
        torch.set_default_dtype(previous)


def _peak(module: torch.nn.Module, call) -> tuple[float, float]:
    """(weights GiB, peak GiB of tensors alive during call()) after one warm-up call."""
    with torch.no_grad():
        call()  # warm-up: one-time layout changes happen here, not in the measured pass
        tracker = MemTracker()
        tracker.track_external(module)
        with tracker:
            call()
    weights = sum(p.numel() * p.element_size() for p in module.parameters()) / GiB
    return weights, tracker.get_tracker_snapshot("peak")[torch.device(_DEVICE)]["Total"] / GiB


def t5_xxl(batch: int, dtype: torch.dtype) -> tuple[float, float]:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(**T5_XXL)
    def make():
        with torch.device(_DEVICE):
            return T5EncoderModel(config)

    encoder = _built(make, dtype)
    ids = torch.zeros(batch, 77, dtype=torch.long, device=_DEVICE)
    # No attention mask: transformers inspects its values, which meta tensors lack; a (B, 77) mask is a few bytes.
    return _peak(encoder, lambda: encoder(input_ids=ids).last_hidden_state)


def stage(name: str, batch: int, dtype: torch.dtype) -> tuple[float, float]:
    """One CFG step of IF-I-XL (64 px) or IF-II-L (256 px): a UNet call of batch 2 * batch,
    fp16 weights, float32 sampling state and embeddings (as the pipelines keep them)."""
    config = json.loads((FIXTURES / f"if_keys_{name}.json").read_text())["config"]
    unet = _built(lambda: IFUNet.from_config(config, device=_DEVICE), dtype)
    size = config["sample_size"]
    x_t = torch.randn(2 * batch, 3, size, size, device=_DEVICE)
    embeds = torch.randn(2 * batch, 77, 4096, device=_DEVICE)
    t = torch.full((2 * batch,), 500, device=_DEVICE)
    if name == "xl":
        model = IFDenoiser(unet)
    else:
        model = IFUpscaleDenoiser(unet, torch.randn(batch, 3, size, size, device=_DEVICE), noise_level=250)
    return _peak(unet, lambda: model(x_t, t, embeds))


def check_against_a_real_run() -> None:
    """The meta-device count against a real CPU forward of a mid-size UNet, measured alike."""
    global _DEVICE
    from bench_if_forward import MID_CONFIG

    for _DEVICE in ("cpu", "meta"):
        unet = _built(lambda: IFUNet.from_config(MID_CONFIG, device=_DEVICE), torch.float32)
        x_t, t = torch.randn(2, 3, 64, 64, device=_DEVICE), torch.full((2,), 500, device=_DEVICE)
        embeds = torch.randn(2, 77, 4096, device=_DEVICE)
        weights, peak = _peak(unet, lambda: IFDenoiser(unet)(x_t, t, embeds))
        print(f"mid-size UNet on {_DEVICE}: weights {weights:.3f} GiB, activations {peak - weights:.3f} GiB")
    _DEVICE = "meta"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="images per prompt batch (CFG doubles it)")
    parser.add_argument("--check", action="store_true", help="also compare with a real CPU run of a mid-size UNet")
    args = parser.parse_args()
    if args.check:
        check_against_a_real_run()
    rows = [
        ("T5 v1.1 XXL encoder, 77 tokens", *t5_xxl(args.batch, torch.float16)),
        ("IF-I-XL, one CFG step at 64 x 64", *stage("xl", args.batch, torch.float16)),
        ("IF-II-L, one CFG step at 256 x 256", *stage("ii_l", args.batch, torch.float16)),
    ]
    print(f"batch {args.batch} (x2 for guidance), fp16 weights, fp32 sampling state")
    print(f"| network | weights | peak of one call | activations beyond the weights |")
    print("|---|---|---|---|")
    for name, weights, peak in rows:
        print(f"| {name} | {weights:.2f} GiB | {peak:.2f} GiB | {peak - weights:.2f} GiB |")
    t5, s1, s2 = (peak for _, _, peak in rows)
    w1, w2 = rows[1][1], rows[2][1]
    print(f"one at a time (minidiff: cached embeddings, stage I moved off the GPU for stage II): {max(s1, s2):.2f} GiB")
    print(f"stages I and II resident together, T5 unloaded: {max(s1 + w2, w1 + s2):.2f} GiB")
    print(f"everything resident together (T5, stage I, stage II): {max(t5 + w1 + w2, rows[0][1] + s1 + w2, rows[0][1] + w1 + s2):.2f} GiB")


_DEVICE = "meta"

if __name__ == "__main__":
    main()
