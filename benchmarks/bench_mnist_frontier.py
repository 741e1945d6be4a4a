"""Quality against cost on two judges: accuracy, Frechet distance and faint pixels at 1 to 16 evaluations.

    python benchmarks/bench_mnist_frontier.py [--models flow-class,ddpm-class] [--evals 1,2,4,8,16]
                                              [--guidance 1.5,2] [--final-denoise 0.025]
                                              [--per-class 100] [--json frontier.json]

For every class-conditioned model and each of its samplers, 1,000 digits (100 per class,
seed 0) at each budget of network evaluations per digit (a batched guidance pair counts
once; Heun's k steps cost 2k - 1, so a budget of 8 runs 4 Heun steps for 7 evaluations).
Each model samples with its own guidance settings (config["sampler"], else scale 5 at
every step), so the course's models are measured at the course's settings; --guidance and
--final-denoise replace them, for a sweep. A model whose settings end with a final
denoising step (flow-class-ema) spends one evaluation of each budget on it, except a
budget of 1, which is one plain step.

Every set is measured as bench_mnist_quality.py measures (its docstring): accuracy on both
judges, FD on both judges' features as the mean against five draws of 1,000 held-out
digits, its ratio to each judge's real-vs-real floor, and the faint share beside real digits'.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bench_mnist_quality import JUDGES, measure, row, yardsticks

from minidiff.data import heldout_set
from minidiff.metrics import faint_share
from minidiff.mnist_pipeline import WEIGHTS_DIR, function_evaluations, load_mnist_model, sample_digits

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


def _floats(text: str | None) -> list[float | None]:
    return [None] if not text else [float(v) for v in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="flow-class-ema,flow-class-1step,flow-class,ddpm-class",
                   help="shipped names or checkpoint folders")
    p.add_argument("--methods", default=None, help="samplers to run (default: both of each model's kind)")
    p.add_argument("--evals", default="1,2,4,8,16")
    p.add_argument("--guidance", default=None, help="guidance scales to sweep (default: each model's own)")
    p.add_argument("--final-denoise", default=None, help="final-step levels s to sweep (default: each model's own)")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--weights", default=str(WEIGHTS_DIR), help="where the judges are")
    p.add_argument("--data", default=None, help="MNIST folder (default: the usual search)")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    sticks = yardsticks(Path(args.weights), args.data)
    real_faint = faint_share(heldout_set(args.data)[0])
    for s in sticks:
        print(f"{s.name}: real-vs-real floor {s.floor:.2f} (draws {min(s.floors):.2f}-{max(s.floors):.2f})")
    print(f"real held-out digits: {100 * real_faint:.2f}% faint pixels", flush=True)
    head = ["model", "sampler", "steps", "evaluations", "guidance"] + [f"accuracy ({j})" for j in JUDGES]
    head += [f"FD ({j}, x floor)" for j in JUDGES] + ["faint pixels", "seconds"]
    print("| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
    rows, measured = [], set()
    for name in args.models.split(","):
        model = load_mnist_model(name)
        own = model.config.get("sampler", {})
        methods = args.methods.split(",") if args.methods else SAMPLERS[model.kind]
        for guidance in _floats(args.guidance):
            for level in _floats(args.final_denoise):
                for method in methods:
                    for budget in (int(e) for e in args.evals.split(",")):
                        final_own = own.get("final_denoise", 0.0) if level is None else level
                        steps, final = plan(method, budget, final_own if model.kind == "flow" else 0.0)
                        key = (name, method, steps, final, guidance)
                        if key in measured:
                            continue  # the same run as a smaller budget (Heun at 1 and 2)
                        measured.add(key)
                        t0 = time.perf_counter()
                        images, labels = sample_digits(model, per_class=args.per_class, steps=steps, method=method,
                                                       guidance=guidance, seed=0, progress=False,
                                                       final_denoise=final if model.kind == "flow" else None)
                        seconds = time.perf_counter() - t0
                        m = measure(sticks, images, labels)
                        scale = guidance if guidance is not None else own.get("guidance", 5.0)
                        sampler = f"{method} + final step {final:g}" if final else method
                        evals = function_evaluations(method, steps, final)
                        rows.append({"model": name, "sampler": sampler, "steps": steps, "evaluations": evals,
                                     "guidance": scale, **m, "seconds": round(seconds, 1)})
                        print(f"| {name} | {sampler} | {steps} | {evals} | {scale:g} | {row(m)} | {seconds:.0f} |",
                              flush=True)
    if args.json:
        floors = {s.name: {"mean": s.floor, "draws": s.floors} for s in sticks}
        with open(args.json, "w") as f:
            json.dump({"floors": floors, "real_faint": real_faint, "digits": 10 * args.per_class, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
