"""Training and sampling throughput of the Part B UNet against the plain eager version.

    python benchmarks/bench_mnist_speed.py [--hidden 64] [--batch 64] [--rounds 5]

"plain" is the course's network as written: NCHW tensors, fp32, eager, default threads.
"minidiff" is what `minidiff train` and the samplers run: the same network and weights in
channels_last memory format (oneDNN's preferred layout on CPU; no other change).
Both are timed in alternating rounds, so load from other processes hits them alike, and
the median round is reported. Training = forward + backward + Adam step on the
class-conditioned UNet (3x the forward FLOPs); sampling = one no-grad forward in eval mode.
The roof is this machine's fp32 matmul rate, measured here on 2048 x 2048 matrices.

    python benchmarks/bench_mnist_speed.py --digits 1000 [--model flow-class] [--compile]

times `sample_digits` end to end instead (the CLI's `minidiff sample-digits` at its
defaults: the default model, its sampler, guidance and batch size), alternating with the
roof measurement, and counts every image the network sees (a guided step sees each digit
twice) to give the rate in GFLOP/s and as a share of the roof. --compile adds the network
under ``compile_for_inference`` (`minidiff sample-digits --compile`), timed in alternating
rounds with the eager one after its compilation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from minidiff.models.mnist import ClassConditionalUNet, forward_flops


def matmul_roof(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def make(channels_last: bool, hidden: int, batch: int, seed: int = 0):
    torch.manual_seed(seed)
    net = ClassConditionalUNet(num_hiddens=hidden)
    x = torch.rand(batch, 1, 28, 28)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    t, c = torch.rand(batch), torch.randint(0, 10, (batch,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def train_step():
        net.train()
        loss = F.mse_loss(net(x, t, c), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def sample_step():
        net.eval()
        net(x, t, c)

    return train_step, sample_step


def rate(fn, batch: int, iters: int) -> float:
    fn()  # warm-up: oneDNN picks its kernels on the first call
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return batch * iters / (time.perf_counter() - t0)


class _Counted(torch.nn.Module):
    """The network, counting the images it sees (a compiled network takes no forward hooks)."""

    def __init__(self, net: torch.nn.Module, seen: list[int]) -> None:
        super().__init__()
        self.net, self.seen = net, seen

    def forward(self, x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.shape[0])
        return self.net(x, *args)


def digits_rate(n_digits: int, model_name: str | None, rounds: int, compile: bool) -> None:
    """Time sample_digits for n_digits (median of rounds) against the matmul roof, measured alternately.

    With compile, the eager and the compiled network run in alternating rounds too; the
    compiled one's first call (the compilation) is timed apart, on one batch of 100 digits.
    """
    from minidiff.mnist_pipeline import DEFAULT_MODEL, load_mnist_model, sample_digits

    name = model_name or DEFAULT_MODEL
    per_class = max(1, n_digits // 10)
    models = {"eager": load_mnist_model(name)}
    seen: list[int] = []
    if compile:
        models["compiled"] = load_mnist_model(name, compile=True)
        t0 = time.perf_counter()
        sample_digits(models["compiled"], per_class=10, progress=False)
        print(f"compiled: first 100 digits (compilation included) in {time.perf_counter() - t0:.1f} s")
    for model in models.values():
        model.net = _Counted(model.net, seen)
    times: dict[str, list[float]] = {k: [] for k in models}
    roofs, images_seen = [], 0
    for _ in range(rounds):
        roofs.append(matmul_roof())
        for key, model in models.items():
            seen.clear()
            t0 = time.perf_counter()
            sample_digits(model, per_class=per_class, progress=False)
            times[key].append(time.perf_counter() - t0)
            images_seen = sum(seen)
    roof = statistics.median(roofs)
    print(f"{name}: {10 * per_class} digits, {images_seen} images through the network; matmul roof "
          f"{roof / 1e9:.1f} GFLOP/s (median of {rounds}: {' '.join(f'{r / 1e9:.0f}' for r in roofs)}); "
          f"threads {torch.get_num_threads()}")
    for key, ts in times.items():
        seconds = statistics.median(ts)
        gflops = images_seen * forward_flops(models[key].config["num_hiddens"]) / seconds / 1e9
        print(f"  {key:8s} {seconds:6.2f} s (median; rounds {' '.join(f'{t:.2f}' for t in ts)}) = "
              f"{10 * per_class / seconds:6.1f} digits/s = {gflops:5.1f} GFLOP/s = {100 * gflops * 1e9 / roof:.1f}% of the roof")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--digits", type=int, default=0, help="time sample_digits for this many digits instead")
    p.add_argument("--model", default=None, help="with --digits: the model (default: sample-digits' own)")
    p.add_argument("--compile", action="store_true", help="with --digits: also time the compiled network")
    args = p.parse_args()
    if args.digits:
        return digits_rate(args.digits, args.model, args.rounds, args.compile)

    flops = forward_flops(args.hidden)
    variants = {"plain": make(False, args.hidden, args.batch), "minidiff": make(True, args.hidden, args.batch)}
    rates: dict[str, dict[str, list[float]]] = {k: {"train": [], "sample": []} for k in variants}
    roofs = []
    for _ in range(args.rounds):
        roofs.append(matmul_roof())
        for name, (train_step, sample_step) in variants.items():
            rates[name]["train"].append(rate(train_step, args.batch, args.iters))
            rates[name]["sample"].append(rate(sample_step, args.batch, args.iters))
    roof = statistics.median(roofs)
    result = {"hidden": args.hidden, "batch": args.batch, "threads": torch.get_num_threads(),
              "forward_gflop_per_image": flops / 1e9, "matmul_roof_gflops": roof / 1e9}
    print(f"D={args.hidden} batch={args.batch} threads={torch.get_num_threads()} "
          f"forward {flops / 1e9:.3f} GFLOP/image, matmul roof {roof / 1e9:.1f} GFLOP/s (median of {args.rounds})")
    for name in variants:
        for what, mult in (("train", 3), ("sample", 1)):
            r = statistics.median(rates[name][what])
            gflops = r * mult * flops / 1e9
            result[f"{name}_{what}_img_s"] = r
            result[f"{name}_{what}_fraction_of_roof"] = gflops * 1e9 / roof
            print(f"  {name:9s} {what:6s} {r:8.1f} images/s  {gflops:6.1f} GFLOP/s  {100 * gflops * 1e9 / roof:5.1f}% of roof")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
