"""Run the whole test suite as other CPUs would: PyTorch's CPU kernels x thread counts.

    python tools/test_matrix.py                  # every setting this CPU can take, 1 and 2 threads
    python tools/test_matrix.py --threads 1      # one thread count only
    python tools/test_matrix.py -- -k golden     # anything after -- goes to pytest

A golden output made on one CPU differs from what another computes by float32 rounding,
because their kernels differ (vectorized or not, with or without FMA, another summation
order). A test whose limit sits just above what one machine measured fails on the next.
This script is how that is checked without the other machine: ``ATEN_CPU_CAPABILITY`` makes
PyTorch take its plain (``default``), AVX2 or AVX512 kernels, and ``ONEDNN_MAX_CPU_ISA``
caps oneDNN (convolutions, bf16 matmuls) at the same level, as a CPU without the newer
instructions would. Each setting gets a fresh torch.compile cache, since compiled code is
cached per machine. It takes about 5 minutes per setting on 2 cores, so it is a check to run
before a release and after changing a tolerance, not part of ``pytest``.

Prints one line per setting and a table at the end; exit code 0 only when every run passed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, the /proc/cpuinfo flag the setting needs)
KERNELS = [
    ("default", "SSE41", None),
    ("avx2", "AVX2", "avx2"),
    ("avx512", "ALL", "avx512f"),
]


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def run(capability: str, isa: str, threads: int, pytest_args: list[str]) -> tuple[int, float, str]:
    """Run pytest with these kernels and threads; (exit code, seconds, pytest's last line)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, ONEDNN_MAX_CPU_ISA=isa,
                   OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TORCHINDUCTOR_CACHE_DIR=cache)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *pytest_args],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    summary = "; ".join(failed) if failed else (lines[-1] if lines else proc.stderr.strip()[-200:])
    return proc.returncode, seconds, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (put them after --)")
    args = parser.parse_args(argv)
    flags = cpu_flags()
    settings = [(cap, isa) for cap, isa, flag in KERNELS if flag is None or flag in flags]
    skipped = [cap for cap, _, flag in KERNELS if flag is not None and flag not in flags]
    if skipped:
        print(f"this CPU lacks {', '.join(skipped)}: those kernels are not run")
    rows = []
    for cap, isa in settings:
        for threads in args.threads:
            code, seconds, summary = run(cap, isa, threads, args.pytest_args)
            rows.append((cap, threads, code, seconds, summary))
            print(f"{cap:8s} {threads} thread(s): {'passed' if code == 0 else 'FAILED'} in {seconds:.0f} s  {summary}",
                  flush=True)
    print("\n| kernels | threads | result | time |\n|---|---|---|---|")
    for cap, threads, code, seconds, summary in rows:
        print(f"| {cap} | {threads} | {'passed' if code == 0 else 'failed: ' + summary} | {seconds:.0f} s |")
    return 0 if all(code == 0 for _, _, code, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
