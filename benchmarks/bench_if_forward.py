"""Forward time of minidiff's IF UNet against diffusers' on the same random weights.

Needs diffusers (run in a venv that has it; not part of CI):

    python benchmarks/bench_if_forward.py [--repeats 7] [--threads 2] [--batch 2]

A mid-size stage-1 config (block_out_channels 128/256/384/512, layers_per_block 3,
cross_attention_dim 512, encoder_hid_dim 4096; ~195M parameters) is built by diffusers with
random weights, saved as safetensors, and loaded by minidiff's ``IFUNet.from_pretrained``.
Both run a CFG-sized batch (2 x 3 x 64 x 64, 77 x 4096 text tokens) in fp32 under
torch.no_grad with the same thread count. Calls alternate between the two models (after
one warm-up each) so background load hits both alike; the median of the repeats is
reported, with min and max (on a shared machine the minimum is the closer estimate of the
unloaded time), and the largest output difference.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

MID_CONFIG = dict(
    down_block_types=["ResnetDownsampleBlock2D"] + ["SimpleCrossAttnDownBlock2D"] * 3,
    up_block_types=["SimpleCrossAttnUpBlock2D"] * 3 + ["ResnetUpsampleBlock2D"],
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    block_out_channels=[128, 256, 384, 512],
    layers_per_block=3,
    attention_head_dim=64,
    cross_attention_dim=512,
    encoder_hid_dim=4096,
    encoder_hid_dim_type="text_proj",
    addition_embed_type="text",
    addition_embed_type_num_heads=64,
    resnet_time_scale_shift="scale_shift",
    cross_attention_norm="group_norm",
    act_fn="gelu",
    in_channels=3,
    out_channels=6,
    sample_size=64,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from diffusers import UNet2DConditionModel

    from minidiff.models.if_unet import IFUNet

    ref = UNet2DConditionModel(**MID_CONFIG).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp, safe_serialization=True)
        ours = IFUNet.from_pretrained(tmp, dtype=torch.float32)
    n_params = sum(p.numel() for p in ours.parameters())

    x = torch.randn(args.batch, 3, 64, 64)
    t = torch.full((args.batch,), 500)
    text = torch.randn(args.batch, 77, 4096)

    def run_ref() -> torch.Tensor:
        return ref(x, t, encoder_hidden_states=text).sample

    def run_ours() -> torch.Tensor:
        return ours(x, t, text)

    times = {"diffusers": [], "minidiff": []}
    with torch.no_grad():
        diff = (run_ours() - run_ref()).abs().max().item()  # also the warm-up of both
        for _ in range(args.repeats):
            for name, fn in (("diffusers", run_ref), ("minidiff", run_ours)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)

    print(f"IF mid-size UNet, {n_params / 1e6:.1f}M parameters, batch {args.batch} x 3 x 64 x 64, fp32, "
          f"{args.threads} threads, torch {torch.__version__}, {args.repeats} alternating repeats")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, v in times.items():
        print(f"  {name:9s} median {med[name]:.3f} s  (min {min(v):.3f}, max {max(v):.3f})")
    print(f"  ratio minidiff / diffusers: medians {med['minidiff'] / med['diffusers']:.3f}, "
          f"minima {min(times['minidiff']) / min(times['diffusers']):.3f}")
    print(f"  max |minidiff - diffusers| output difference: {diff:.2e}")


if __name__ == "__main__":
    main()
