"""Write a random-weight IF-I-XL stage-1 UNet checkpoint (fp16, 8.6 GB) for load benchmarks.

    python tools/make_if_xl_checkpoint.py /work/scratch/if-xl-random

Writes OUT/unet/config.json and OUT/unet/diffusion_pytorch_model.fp16.safetensors, the
layout of DeepFloyd/IF-I-XL-v1.0 (so diffusers' ``from_pretrained(OUT, subfolder="unet",
variant="fp16")`` reads it too). The names and shapes come from minidiff's own XL network
built on the meta device (tests/test_if_keys.py proves they equal the real checkpoint's).
Tensors are generated and written one at a time, so memory stays low. Never commit the
output: keep it outside the repository and delete it after use.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
from pathlib import Path

import torch
from tqdm.auto import tqdm

from minidiff.models.if_unet import IFUNet

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder (outside the repository)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out.resolve()
    if ROOT in out.parents or out == ROOT:
        raise SystemExit(f"refusing to write an 8.6 GB checkpoint inside the repository ({out})")
    record = json.loads((ROOT / "tests" / "fixtures" / "if_keys_xl.json").read_text())
    config = {"_class_name": "UNet2DConditionModel", **record["config"]}
    shapes = {k: tuple(v.shape) for k, v in IFUNet.from_config(config, device="meta").state_dict().items()}

    # safetensors layout: u64 header size, JSON header {name: dtype, shape, data_offsets}, data.
    header, offset = {}, 0
    for name, shape in shapes.items():
        nbytes = 2 * int(torch.Size(shape).numel())
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # align the data section

    folder = out / "unet"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    target = folder / "diffusion_pytorch_model.fp16.safetensors"
    tmp = target.with_suffix(".tmp")
    g = torch.Generator().manual_seed(args.seed)
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name, shape in tqdm(shapes.items(), desc="writing tensors", unit="tensor"):
            w = (0.02 * torch.randn(shape, generator=g)).half()
            fh.write(w.numpy().tobytes())
    os.replace(tmp, target)
    print(f"wrote {target} ({target.stat().st_size / 1e9:.2f} GB, {len(shapes)} tensors)")


if __name__ == "__main__":
    main()
