"""Process start -> IF-I-XL fp16 UNet ready, and peak RSS: minidiff against diffusers.

Needs diffusers (run in a venv that has both) and a local XL-size checkpoint:

    python tools/make_if_xl_checkpoint.py /work/scratch/if-xl-random     # 8.6 GB, random weights
    python benchmarks/bench_if_load.py /work/scratch/if-xl-random [--repeats 3]

Each measurement is a fresh Python process that imports what it needs and loads the fp16
UNet (diffusers: ``UNet2DConditionModel.from_pretrained(path, subfolder="unet",
variant="fp16", torch_dtype=torch.float16)``; minidiff: ``IFUNet.from_pretrained(path/unet,
dtype=torch.float16)``), then reports its peak resident set size (ru_maxrss). The time is
the parent's wall clock from spawning the process to the child's "ready" line, so it
includes interpreter start-up and imports. One warm-up run of each fills the page cache;
then the two alternate and the median is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = {
    "diffusers": (
        "import torch\n"
        "from diffusers import UNet2DConditionModel\n"
        "m = UNet2DConditionModel.from_pretrained({path!r}, subfolder='unet', variant='fp16', torch_dtype=torch.float16)\n"
        "n = sum(p.numel() for p in m.parameters())\n"
    ),
    "minidiff": (
        "import torch\n"
        "from minidiff.models.if_unet import IFUNet\n"
        "m = IFUNet.from_pretrained({path!r} + '/unet', dtype=torch.float16)\n"
        "n = sum(p.numel() for p in m.parameters())\n"
    ),
}
REPORT = (
    "import resource, sys\n"
    "assert next(m.parameters()).dtype == torch.float16\n"
    "print('ready', n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\n"
)


def run_once(name: str, path: str, threads: int) -> tuple[float, float, int]:
    """(seconds to ready, peak RSS in GB, parameter count) of one fresh process."""
    code = CHILD[name].format(path=path) + REPORT
    env_threads = {"OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **env_threads})
    for line in proc.stdout:
        if line.startswith("ready"):
            elapsed = time.perf_counter() - start
            _, n, rss_kb = line.split()
            break
    else:
        raise RuntimeError(f"{name} failed:\n{proc.stderr.read()[-2000:]}")
    proc.wait()
    return elapsed, int(rss_kb) / 1e6, int(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="folder holding unet/ (from tools/make_if_xl_checkpoint.py)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    path = str(args.checkpoint.resolve())
    results = {"diffusers": [], "minidiff": []}
    for name in results:  # warm-up: page cache, .pyc files
        run_once(name, path, args.threads)
    for _ in range(args.repeats):
        for name in results:
            results[name].append(run_once(name, path, args.threads))
    print(f"process start -> IF-I-XL fp16 UNet ready ({path}), {args.repeats} alternating runs after a warm-up each")
    med = {}
    for name, runs in results.items():
        times = [r[0] for r in runs]
        rss = [r[1] for r in runs]
        med[name] = statistics.median(times)
        print(f"  {name:9s} median {med[name]:.2f} s (min {min(times):.2f}, max {max(times):.2f}), "
              f"peak RSS {statistics.median(rss):.2f} GB, {runs[0][2]:,} parameters")
    print(f"  ratio minidiff / diffusers (medians): {med['minidiff'] / med['diffusers']:.2f}")


if __name__ == "__main__":
    main()
