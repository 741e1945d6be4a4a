"""Measure the MNIST models: judge accuracy, Frechet distance, steps table, denoiser PSNR.

    python benchmarks/bench_mnist_quality.py [--weights weights/mnist] [--json out.json] [--quick]

Data: the held-out digits t10k[8000:] (2,000; never trained on) and, for the real-vs-real
reference, 1,000 training digits (100 per class, seeded). Generated sets are 100 per class
(1,000 digits) with CFG 5 unless stated; the Frechet distance (judge features) of every set
is taken against the 2,000 held-out digits, so all FD figures share one reference and
one sample size (1,000), and can be compared with each other.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from minidiff.data import heldout_set, training_set
from minidiff.metrics import faint_share, frechet_distance, judge_accuracy, judge_features, psnr
from minidiff.mnist_pipeline import DEFAULT_MODEL, function_evaluations, load_mnist_model, sample_digits

SIGMAS = [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]


def balanced_real(x: torch.Tensor, y: torch.Tensor, per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in range(10):
        pool = torch.nonzero(y == c)[:, 0]
        idx.append(pool[torch.randperm(pool.numel(), generator=g)[:per_class]])
    idx = torch.cat(idx)
    return x[idx], y[idx]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default="weights/mnist")
    p.add_argument("--json", default=None)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--table-per-class", type=int, default=20, help="digits per class for the steps table")
    p.add_argument("--parts", default="judge,default,flow,table,snapshots,flow-time,ddpm,denoiser")
    args = p.parse_args()
    w = Path(args.weights)
    parts = set(args.parts.split(","))
    res: dict = {}

    x_ho, y_ho = heldout_set()
    judge = load_mnist_model(w / "judge").net
    f_ho = judge_features(judge, x_ho)

    def fd(images) -> float:
        return frechet_distance(judge_features(judge, images), f_ho)

    def report(key, value):
        res[key] = value
        print(f"{key}: {value}", flush=True)

    if "judge" in parts:
        report("judge_heldout_accuracy", judge_accuracy(judge, x_ho, y_ho))
        x_tr, y_tr = training_set()
        xr, _ = balanced_real(x_tr, y_tr, 100)
        report("fd_real_train1000_vs_heldout", fd(xr))

    def run(model, per_class, seed=0, **kw):
        t0 = time.perf_counter()
        images, labels = sample_digits(model, per_class=per_class, guidance=kw.pop("guidance", 5.0), seed=seed,
                                       progress=False, **kw)
        dt = time.perf_counter() - t0
        return images, labels, dt

    if "default" in parts:  # what `minidiff sample-digits` gives when told nothing
        m = load_mnist_model(w / DEFAULT_MODEL)
        s = m.config["sampler"]
        t0 = time.perf_counter()
        images, labels = sample_digits(m, per_class=args.per_class, progress=False)
        dt = time.perf_counter() - t0
        report("default_model", {
            "model": DEFAULT_MODEL, "sampler": s,
            "nfe": function_evaluations(s["method"], s["steps"], s.get("final_denoise", 0.0)),
            "digits": int(labels.shape[0]), "judge_accuracy": judge_accuracy(judge, images, labels),
            "fd_vs_heldout": fd(images), "faint": faint_share(images), "seconds": round(dt, 1)})
        small, small_labels = sample_digits(m, per_class=5, progress=False)
        report("default_test_sample", {"model": DEFAULT_MODEL, "per_class": 5, "seed": 0,
                                       "judge_accuracy": judge_accuracy(judge, small, small_labels)})

    if "flow" in parts:
        m = load_mnist_model(w / "flow-class")
        images, labels, dt = run(m, args.per_class)
        s = m.config.get("sampler", {})
        report("flow_class_default", {
            "sampler": s, "nfe": function_evaluations(s.get("method", "heun"), s.get("steps", 8)),
            "digits": int(labels.shape[0]), "judge_accuracy": judge_accuracy(judge, images, labels),
            "fd_vs_heldout": fd(images), "seconds": round(dt, 1), "digits_per_s": round(labels.shape[0] / dt, 1)})
        small, small_labels, _ = run(m, 5)
        report("test_sample", {"per_class": 5, "guidance": 5.0, "seed": 0,
                               "judge_accuracy": judge_accuracy(judge, small, small_labels)})

    if "table" in parts:
        m = load_mnist_model(w / "flow-class")
        rows = []
        for method, steps, grid in [("euler", 4, "uniform"), ("euler", 8, "uniform"), ("euler", 16, "uniform"),
                                    ("heun", 4, "uniform"), ("heun", 8, "uniform"), ("heun", 8, "late"),
                                    ("euler", 16, "late")]:
            images, labels, dt = run(m, args.table_per_class, seed=1, method=method, steps=steps, grid=grid)
            row = {"method": method, "steps": steps, "grid": grid, "nfe": function_evaluations(method, steps),
                   "judge_accuracy": judge_accuracy(judge, images, labels), "digits": int(labels.shape[0]),
                   "seconds": round(dt, 1)}
            rows.append(row)
            print(row, flush=True)
        res["flow_class_steps_table"] = rows

    if "snapshots" in parts:
        for snap in sorted((w / "flow-class" / "snapshots").glob("epoch_*")):
            m = load_mnist_model(snap)
            images, labels, _ = run(m, args.table_per_class, seed=1)
            report(f"flow_class_{snap.name}", {"judge_accuracy": judge_accuracy(judge, images, labels),
                                               "digits": int(labels.shape[0])})

    if "ddpm" in parts and (w / "ddpm-class").is_dir():
        m = load_mnist_model(w / "ddpm-class")
        for method, steps in [("ddpm", 30), ("ddim", 20)]:
            per = args.table_per_class
            images, labels, dt = run(m, per, seed=2, method=method, steps=steps)
            report(f"ddpm_class_{method}_{steps}", {"judge_accuracy": judge_accuracy(judge, images, labels),
                                                   "digits": int(labels.shape[0]), "seconds": round(dt, 1)})

    if "flow-time" in parts and (w / "flow-time").is_dir():
        from minidiff.samplers import flow_heun
        from minidiff.mnist_pipeline import flow_time_grid

        m = load_mnist_model(w / "flow-time")
        g = torch.Generator().manual_seed(3)
        x = flow_heun(lambda x, t: m(x, t), torch.randn(1000, 1, 28, 28, generator=g), m.schedule,
                      flow_time_grid(8), progress=False)
        report("flow_time_heun8_fd_vs_heldout_1000", fd(x.clamp(0, 1)))

    if "denoiser" in parts:
        g = torch.Generator().manual_seed(4)
        noise = torch.randn(x_ho.shape, generator=g)
        for name in ["denoiser", "denoiser/snapshots/epoch_001", "denoiser/snapshots/epoch_005"]:
            if not (w / name).is_dir():
                continue
            m = load_mnist_model(w / name)
            curve = {}
            with torch.no_grad():
                for s in SIGMAS:
                    z = x_ho + s * noise
                    out = torch.cat([m(z[i : i + 500]) for i in range(0, z.shape[0], 500)])
                    curve[str(s)] = round(psnr(out.clamp(0, 1), x_ho), 2)
            report(f"psnr_{name.replace('/snapshots/', '_')}", curve)
        report("psnr_noisy_input", {str(s): round(psnr((x_ho + s * noise).clamp(0, 1), x_ho), 2) for s in SIGMAS})

    if args.json:
        old = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else {}
        old.update(res)
        Path(args.json).write_text(json.dumps(old, indent=2) + "\n")


if __name__ == "__main__":
    main()
