"""Quality against cost: judge accuracy, Frechet distance and faint pixels at 1, 2, 4, 8, 16 evaluations.

    python benchmarks/bench_mnist_frontier.py [--models flow-class,ddpm-class] [--evals 1,2,4,8,16]
                                              [--per-class 100] [--json frontier.json]

For every class-conditioned model and each of its samplers, 1,000 digits (100 per class,
seed 0) at each budget of network evaluations per digit (a batched guidance pair counts
once; Heun's k steps cost 2k - 1, so a budget of 8 runs 4 Heun steps for 7 evaluations).
Each model samples with its own guidance settings (config["sampler"], else scale 5 at
every step), so the course's models are measured at the course's settings. A model whose
settings end with a final denoising step (flow-class-ema) spends one evaluation of each
budget on it, except a budget of 1, which is one plain step.

Every set is compared with the same 2,000 held-out digits (t10k[8000:], never trained on):
- accuracy: the share the shipped judge reads as the class asked for;
- FD: the Frechet distance in the judge's features, beside the real-vs-real floor (1,000
  training digits against the same held-out set), and its ratio to that floor;
- faint: the share of pixels with values 1..40 of 255, beside real digits' share.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_mnist_quality import balanced_real

from minidiff.data import heldout_set, training_set
from minidiff.metrics import faint_share, frechet_distance, judge_accuracy, judge_features
from minidiff.mnist_pipeline import function_evaluations, load_mnist_model, sample_digits

SAMPLERS = {"flow": ["euler", "heun"], "ddpm": ["ddim", "ddpm"]}


def steps_for(method: str, evals: int) -> int | None:
    """The most steps of method that fit in evals evaluations (None if none fit)."""
    steps = (evals + 1) // 2 if method == "heun" else evals
    return steps if steps >= 1 else None


def plan(method: str, budget: int, final_denoise: float) -> tuple[int | None, float]:
    """(steps, final_denoise) within a budget: the final step takes one evaluation when there are two."""
    if final_denoise and budget >= 2:
        return steps_for(method, budget - 1), final_denoise
    return steps_for(method, budget), 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="flow-class-ema,flow-class,ddpm-class", help="shipped names or checkpoint folders")
    p.add_argument("--evals", default="1,2,4,8,16")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--data", default=None, help="MNIST folder (default: the usual search)")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    judge = load_mnist_model("judge").net
    x_ho, _ = heldout_set(args.data)
    f_ho = judge_features(judge, x_ho)
    x_tr, y_tr = training_set(args.data)
    real, _ = balanced_real(x_tr, y_tr, args.per_class)
    floor = frechet_distance(judge_features(judge, real), f_ho)
    real_faint = faint_share(real)
    print(f"real training digits ({real.shape[0]}) vs held-out: FD {floor:.1f} (the floor), "
          f"faint pixels {100 * real_faint:.2f}%", flush=True)
    rows = []
    print("| model | sampler | steps | evaluations | accuracy | FD | FD / floor | faint pixels | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    measured = set()
    for name in args.models.split(","):
        model = load_mnist_model(name)
        for method in SAMPLERS[model.kind]:
            for budget in (int(e) for e in args.evals.split(",")):
                steps, final = plan(method, budget, model.config.get("sampler", {}).get("final_denoise", 0.0))
                evals = function_evaluations(method, steps, final)
                if (name, method, steps, final) in measured:
                    continue  # the same run as a smaller budget (Heun at 1 and 2)
                measured.add((name, method, steps, final))
                t0 = time.perf_counter()
                images, labels = sample_digits(model, per_class=args.per_class, steps=steps, method=method,
                                               seed=0, progress=False, final_denoise=final)
                seconds = time.perf_counter() - t0
                acc = judge_accuracy(judge, images, labels)
                fd = frechet_distance(judge_features(judge, images), f_ho)
                faint = faint_share(images)
                sampler = f"{method} + final step" if final else method
                rows.append([name, sampler, steps, evals, acc, fd, fd / floor, faint, seconds])
                print(f"| {name} | {sampler} | {steps} | {evals} | {100 * acc:.1f}% | {fd:.1f} | {fd / floor:.2f} "
                      f"| {100 * faint:.2f}% | {seconds:.0f} |", flush=True)
    if args.json:
        keys = ["model", "sampler", "steps", "evaluations", "accuracy", "fd", "fd_over_floor", "faint", "seconds"]
        with open(args.json, "w") as f:
            json.dump({"fd_floor": floor, "real_faint": real_faint, "digits": 10 * args.per_class,
                       "rows": [dict(zip(keys, r)) for r in rows]}, f, indent=1)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
