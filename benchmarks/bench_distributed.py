"""One epoch of training: one process on every core against one process per core (torchrun).

    python benchmarks/bench_distributed.py [--data DIR] [--recipe flow-class] [--epochs 1] [--cores 2]

Runs `minidiff train RECIPE --epochs E` twice, as fresh processes, on the same data, global
batch and seed: once as 1 process x CORES threads, once under torchrun as CORES processes
x 1 thread. Reports, for each, the wall time from launch to exit, the training loop's own
wall time (config.json's wall_s: without start-up and data loading), and the CPU seconds
all its processes spent (user + system, from the children's resource usage), so the cost
of the messages between processes shows beside the time saved.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(processes: int, threads: int, args: argparse.Namespace, out: Path) -> dict:
    train = ["-m", "minidiff", "train", args.recipe, "--epochs", str(args.epochs), "--out", str(out),
             "--snapshot-epochs", ""]
    if args.data:
        train += ["--data", args.data]
    if processes > 1:
        train = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
                 "--master_port", str(_free_port())] + train
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    subprocess.run([sys.executable] + train, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    config = json.loads((out / "config.json").read_text())
    return {"processes": processes, "threads": threads, "wall_s": wall, "loop_s": config["wall_s"], "cpu_s": cpu,
            "steps": config["steps"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="flow-class")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--data", default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(1, args.cores, args, Path(tmp) / "one"), run(args.cores, 1, args, Path(tmp) / "many")]
    print(f"{args.recipe}, {args.epochs:g} epoch(s), {rows[0]['steps']} steps")
    print("| processes x threads | wall, launch to exit | training loop | CPU seconds, all processes |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['processes']} x {r['threads']} | {r['wall_s']:.1f} s | {r['loop_s']:.1f} s | {r['cpu_s']:.1f} s |")


if __name__ == "__main__":
    main()
