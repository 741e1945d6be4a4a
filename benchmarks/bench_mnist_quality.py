"""Measure the MNIST models on two judges: accuracy, Frechet distance, faint pixels, steps table, denoiser PSNR.

    python benchmarks/bench_mnist_quality.py [--weights weights/mnist] [--json out.json] [--parts ...]

Two judges read every set: ``judge`` (MNISTJudge, a plain CNN) and ``judge2`` (ResNetJudge, a
residual CNN of another shape and seed), both trained on the training set only, so that no
figure rests on one classifier a sampler could be tuned to.

- accuracy: the share of generated digits a judge reads as the class asked for (beside the
  judge's accuracy on the 2,000 held-out digits);
- FD: the Frechet distance in a judge's 128-d features, always between two sets of 1,000
  digits (100 per class). The references R_0..R_4 are 1,000 held-out digits each, drawn
  with seeds 0..4; a generated set's FD is its mean FD against the five. The floor is the
  mean over k of FD(T_k, R_k), T_k 1,000 training digits drawn with seed k: two disjoint
  samples of the same size from the same mix. FD / floor is the scale to read;
- faint: the share of pixels at 1..40 of 255 (real held-out digits beside it).

Generated sets are 100 per class (1,000 digits), seed 0, unless stated.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minidiff.data import SPLIT, heldout_set, training_set
from minidiff.metrics import faint_share, frechet_distance, judge_accuracy, judge_features, psnr
from minidiff.mnist_pipeline import (DEFAULT_MODEL, SHIPPED, WEIGHTS_DIR, function_evaluations, load_mnist_model,
                                     sample_digits)

SIGMAS = [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]
JUDGES = ("judge", "judge2")
DRAWS = 5  # reference draws of held-out digits, and floor draws of training digits


def balanced_real(x: torch.Tensor, y: torch.Tensor, per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """per_class digits of each class, drawn without replacement with torch.Generator seed `seed`."""
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in range(10):
        pool = torch.nonzero(y == c)[:, 0]
        if pool.numel() < per_class:
            raise ValueError(f"class {c} has {pool.numel()} digits, fewer than the {per_class} asked for")
        idx.append(pool[torch.randperm(pool.numel(), generator=g)[:per_class]])
    idx = torch.cat(idx)
    return x[idx], y[idx]


@dataclass
class Yardstick:
    """One judge with its references: features of R_0..R_{k-1} and the floors FD(T_k, R_k)."""

    name: str
    net: torch.nn.Module
    refs: list[torch.Tensor] = field(default_factory=list)
    floors: list[float] = field(default_factory=list)

    def fd(self, images: torch.Tensor) -> float:
        """Mean Frechet distance of a set of digits against the references."""
        f = judge_features(self.net, images)
        return sum(frechet_distance(f, r) for r in self.refs) / len(self.refs)

    @property
    def floor(self) -> float:
        return sum(self.floors) / len(self.floors)


def yardsticks(weights: Path, data: str | None = None, per_class: int = 100, draws: int = DRAWS) -> list[Yardstick]:
    """Both judges, each with its reference features and real-vs-real floors (module docstring)."""
    x_ho, y_ho = heldout_set(data)
    x_tr, y_tr = training_set(data)
    refs = [balanced_real(x_ho, y_ho, per_class, seed=k)[0] for k in range(draws)]
    trains = [balanced_real(x_tr, y_tr, per_class, seed=k)[0] for k in range(draws)]
    sticks = []
    for name in JUDGES:
        net = load_mnist_model(weights / name).net
        s = Yardstick(name, net, [judge_features(net, r) for r in refs])
        s.floors = [frechet_distance(judge_features(net, t), r) for t, r in zip(trains, s.refs)]
        sticks.append(s)
    return sticks


def measure(sticks: list[Yardstick], images, labels=None) -> dict:
    """Accuracy (when labels are given), FD and FD / floor on every judge, and the faint share."""
    out: dict = {"digits": int(images.shape[0])}
    for s in sticks:
        fd = s.fd(images)
        out[s.name] = {"fd": round(fd, 2), "fd_over_floor": round(fd / s.floor, 2)}
        if labels is not None:
            out[s.name]["accuracy"] = judge_accuracy(s.net, images, labels)
    out["faint"] = round(faint_share(images), 4)
    return out


def row(m: dict) -> str:
    """'acc judge | acc judge2 | FD judge (x) | FD judge2 (x) | faint' as markdown cells."""
    acc = [f"{100 * m[j]['accuracy']:.1f}%" if "accuracy" in m[j] else "-" for j in JUDGES]
    fds = [f"{m[j]['fd']:.1f} ({m[j]['fd_over_floor']:.2f}x)" for j in JUDGES]
    return " | ".join(acc + fds + [f"{100 * m['faint']:.1f}%"])


def shipped_models(weights: Path) -> list[str]:
    """Every shipped folder, then every snapshot, as load_mnist_model names them."""
    names = [n for n in SHIPPED if (weights / n / "config.json").is_file()]
    return names + [f"{n}/snapshots/{s.name}" for n in names for s in sorted((weights / n / "snapshots").glob("epoch_*"))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(WEIGHTS_DIR))
    p.add_argument("--data", default=None, help="MNIST folder (default: the usual search)")
    p.add_argument("--json", default=None, help="write the figures here (keys of earlier runs are kept)")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--table-per-class", type=int, default=20, help="digits per class for the steps table")
    p.add_argument("--parts", default="judges,default,one-step,flow,table,snapshots,flow-time,ddpm,denoiser")
    args = p.parse_args()
    w = Path(args.weights)
    parts = set(args.parts.split(","))
    res: dict = {"models": shipped_models(w), "split": SPLIT}

    def report(key, value):
        res[key] = value
        print(f"{key}: {value}", flush=True)

    sticks = yardsticks(w, args.data, args.per_class)
    x_ho, y_ho = heldout_set(args.data)
    report("floors", {s.name: {"mean": round(s.floor, 2), "min": round(min(s.floors), 2), "max": round(max(s.floors), 2),
                               "draws": [round(f, 2) for f in s.floors]} for s in sticks})

    if "judges" in parts:
        report("heldout_accuracy", {s.name: judge_accuracy(s.net, x_ho, y_ho) for s in sticks})
        report("real_faint_heldout", round(faint_share(x_ho), 4))
        x_tr, y_tr = training_set(args.data)
        real, real_labels = balanced_real(x_tr, y_tr, args.per_class, seed=DRAWS)  # not one of the floors' T_k
        report("real_training_digits", measure(sticks, real, real_labels))

    def run(model, per_class, seed=0, **kw):
        t0 = time.perf_counter()
        images, labels = sample_digits(model, per_class=per_class, seed=seed, progress=False, **kw)
        return images, labels, time.perf_counter() - t0

    if "default" in parts:  # what `minidiff sample-digits` gives when told nothing
        m = load_mnist_model(w / DEFAULT_MODEL)
        s = m.config["sampler"]
        images, labels, dt = run(m, args.per_class)
        report("default_model", {"model": DEFAULT_MODEL, "sampler": s,
                                 "nfe": function_evaluations(s["method"], s["steps"], s.get("final_denoise", 0.0)),
                                 **measure(sticks, images, labels), "seconds": round(dt, 1)})
        small, small_labels, _ = run(m, 5)
        report("default_test_sample", {"model": DEFAULT_MODEL, "per_class": 5, "seed": 0,
                                       "judge_accuracy": judge_accuracy(sticks[0].net, small, small_labels)})

    if "one-step" in parts and (w / "flow-class-1step").is_dir():  # the distilled student, at 1 and 2 evaluations
        m = load_mnist_model(w / "flow-class-1step")
        for steps in (1, 2):
            images, labels, dt = run(m, args.per_class, steps=steps)
            report(f"one_step_model_{steps}", {"model": "flow-class-1step", "sampler": {**m.config["sampler"], "steps": steps},
                                               "nfe": steps, **measure(sticks, images, labels), "seconds": round(dt, 1)})
        small, small_labels, _ = run(m, 5)
        report("one_step_test_sample", {"model": "flow-class-1step", "per_class": 5, "seed": 0,
                                        **{s.name: judge_accuracy(s.net, small, small_labels) for s in sticks}})

    if "flow" in parts:  # the course's model at the course's settings
        m = load_mnist_model(w / "flow-class")
        s = m.config.get("sampler", {})
        images, labels, dt = run(m, args.per_class, guidance=5.0)
        report("flow_class_default", {"sampler": s, "guidance": 5.0,
                                      "nfe": function_evaluations(s.get("method", "heun"), s.get("steps", 8)),
                                      **measure(sticks, images, labels), "seconds": round(dt, 1)})
        small, small_labels, _ = run(m, 5, guidance=5.0)
        report("test_sample", {"per_class": 5, "guidance": 5.0, "seed": 0,
                               "judge_accuracy": judge_accuracy(sticks[0].net, small, small_labels)})

    if "table" in parts:  # accuracy only: 200 digits are too few for an FD comparable with the floor
        m = load_mnist_model(w / "flow-class")
        rows = []
        for method, steps, grid in [("euler", 4, "uniform"), ("heun", 4, "uniform"), ("euler", 8, "uniform"),
                                    ("heun", 8, "uniform"), ("heun", 8, "late"), ("euler", 16, "uniform"),
                                    ("euler", 16, "late")]:
            images, labels, dt = run(m, args.table_per_class, seed=1, guidance=5.0, method=method, steps=steps, grid=grid)
            r = {"method": method, "steps": steps, "grid": grid, "nfe": function_evaluations(method, steps),
                 "digits": int(labels.shape[0]), **{s.name: judge_accuracy(s.net, images, labels) for s in sticks},
                 "seconds": round(dt, 1)}
            rows.append(r)
            print(r, flush=True)
        res["flow_class_steps_table"] = rows

    if "snapshots" in parts:
        for snap in sorted((w / "flow-class" / "snapshots").glob("epoch_*")):
            images, labels, _ = run(load_mnist_model(snap), args.table_per_class, seed=1, guidance=5.0)
            report(f"flow_class_{snap.name}", {"digits": int(labels.shape[0]),
                                               **{s.name: judge_accuracy(s.net, images, labels) for s in sticks}})

    if "ddpm" in parts and (w / "ddpm-class").is_dir():
        m = load_mnist_model(w / "ddpm-class")
        for method, steps in [("ddpm", 30), ("ddim", 20)]:
            images, labels, dt = run(m, args.table_per_class, seed=2, guidance=5.0, method=method, steps=steps)
            report(f"ddpm_class_{method}_{steps}", {"digits": int(labels.shape[0]), "seconds": round(dt, 1),
                                                   **{s.name: judge_accuracy(s.net, images, labels) for s in sticks}})

    if "flow-time" in parts and (w / "flow-time").is_dir():
        from minidiff.mnist_pipeline import flow_time_grid
        from minidiff.samplers import flow_heun

        for name in ["flow-time", "flow-time/snapshots/epoch_001"]:
            if not (w / name).is_dir():
                continue
            m = load_mnist_model(w / name)
            g = torch.Generator().manual_seed(3)
            x = flow_heun(lambda x, t: m(x, t), torch.randn(1000, 1, 28, 28, generator=g), m.schedule,
                          flow_time_grid(8), progress=False)
            report(f"{name.replace('/snapshots/', '_')}_heun8".replace("-", "_"), measure(sticks, x.clamp(0, 1)))

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
