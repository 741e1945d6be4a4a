"""Training on two processes with torch.distributed (gloo), as `torchrun --nproc_per_node 2` runs it.

Each test starts real processes with torchrun on tiny data (48 fake digits, D = 4). The
child script spies on batch_loss to record which digits each process trained on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minidiff import distributed
from minidiff import train as T
from minidiff.run_folder import read_loss_log

CHILD = textwrap.dedent('''
    import json, os, sys, time
    import torch
    import minidiff.train as T

    torch.set_num_threads(1)
    out, steps, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume"
    fail_at = int(os.environ.get("FAIL_AT_STEP", "-1"))
    rank = int(os.environ.get("RANK", "0"))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(48, 1, 28, 28, generator=g) ** 4, torch.arange(48) % 10
    seen, real = [], T.batch_loss

    def spy(cfg, model, schedule, xb, yb, generator, rows=None):
        if len(seen) == fail_at and rank == 1:
            raise RuntimeError("rank 1 fails on purpose")
        mine = xb if rows is None else xb[rows]
        seen.append([round(float(v), 3) for v in mine.flatten(1).sum(1)])  # which digits, by their sums
        return real(cfg, model, schedule, xb, yb, generator, rows)

    T.batch_loss = spy
    cfg = T.recipe_config("flow-class", num_hiddens=4, epochs=2, batch_size=16, save_every=4, snapshot_epochs=[])
    T.train(cfg, out, data=(x, y), progress=False, max_steps=steps or None, resume=resume)
    returned = time.time()
    with open(os.path.join(out, f"seen_{rank}.json"), "w") as f:
        json.dump(seen, f)
    with open(os.path.join(out, f"returned_{rank}.json"), "w") as f:
        json.dump(returned, f)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path: Path, out: Path, processes: int, steps: int = 0, resume: bool = False,
         env: dict | None = None) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = [str(script), str(out), str(steps), "resume" if resume else "new"]
    if processes > 1:
        args = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port())] + args
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable] + args, env=environment, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    """The same run (global batch 16, seed 0, 6 steps) on one process and on two."""
    tmp = tmp_path_factory.mktemp("dist")
    for n in (1, 2):
        done = _run(tmp, tmp / f"p{n}", n)
        assert done.returncode == 0, done.stderr[-3000:]
    return tmp


def test_two_processes_train_the_model_one_process_trains(one_and_two):
    """Gradients averaged by DDP and BatchNorm statistics taken over both processes: the logged
    (global-batch) losses, the weights and the network's training-mode outputs equal one
    process's up to float rounding.

    Left out of the weight comparison: the bias of each convolution that feeds a BatchNorm, and
    the running means that absorb it. BatchNorm subtracts any per-channel constant, so their
    exact gradient is 0 and what they get is rounding noise, which Adam scales up to steps of
    size lr: they differ as much between one process on 1 and on 2 threads (0.037 against 0.035
    here), and the training-mode function does not depend on them.
    """
    from minidiff.run_folder import load_checkpoint

    one, two = load_file(str(one_and_two / "p1" / "model.safetensors")), load_file(str(one_and_two / "p2" / "model.safetensors"))
    assert one.keys() == two.keys()
    free = {k for k in one if k.endswith(".0.bias") and k[: -len("0.bias")] + "1.running_mean" in one}
    free |= {k.replace(".0.bias", ".1.running_mean") for k in free}
    assert len(free) > 20 and all("weight" not in k for k in free)
    for k in sorted(set(one) - free):
        torch.testing.assert_close(two[k], one[k], rtol=1e-3, atol=1e-3, msg=k)  # lr is 1e-2
    l1, l2 = read_loss_log(one_and_two / "p1"), read_loss_log(one_and_two / "p2")
    assert [s for s, _ in l1] == [s for s, _ in l2] == list(range(6))
    for (_, a), (_, b) in zip(l1, l2):
        assert b == pytest.approx(a, rel=1e-5)
    nets = [load_checkpoint(one_and_two / f"p{n}")[0].train() for n in (1, 2)]
    g = torch.Generator().manual_seed(1)
    x, t, c = torch.randn(16, 1, 28, 28, generator=g), torch.rand(16, generator=g), torch.eye(10)[torch.arange(16) % 10]
    with torch.no_grad():
        torch.testing.assert_close(nets[1](x, t, c), nets[0](x, t, c), rtol=1e-3, atol=1e-4)
    config = json.loads((one_and_two / "p2" / "config.json").read_text())
    assert config["world_size"] == 2 and json.loads((one_and_two / "p1" / "config.json").read_text())["world_size"] == 1


def test_each_process_trains_on_its_half_of_every_global_batch(one_and_two):
    whole = json.loads((one_and_two / "p1" / "seen_0.json").read_text())
    first, second = (json.loads((one_and_two / "p2" / f"seen_{r}.json").read_text()) for r in (0, 1))
    assert len(whole) == len(first) == len(second) == 6
    for batch, a, b in zip(whole, first, second):
        assert len(batch) == 16 and len(a) == len(b) == 8
        assert a + b == batch  # rank 0 the first half, rank 1 the second: together the one-process batch


def test_only_rank_0_writes(one_and_two):
    names = {p.name for p in (one_and_two / "p2").iterdir()}
    assert {"model.safetensors", "config.json", "loss.csv", "loss.png"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind


def test_no_process_leaves_before_rank_0_has_saved_the_run(one_and_two):
    """train() returns on every rank only after rank 0 wrote the model and its loss plot: a process that left
    the group earlier would close its connections under a peer still at work, which gloo may answer with SIGABRT."""
    saved = max((one_and_two / "p2" / name).stat().st_mtime for name in ("model.safetensors", "loss.png"))
    for rank in (0, 1):
        assert json.loads((one_and_two / "p2" / f"returned_{rank}.json").read_text()) >= saved


def test_two_processes_resume_exactly(tmp_path, one_and_two):
    """Stopped after the step-4 checkpoint and resumed on two processes: the uninterrupted run, bit for bit."""
    out = tmp_path / "r"
    first = _run(tmp_path, out, 2, steps=4)
    assert first.returncode == 0, first.stderr[-3000:]
    done = _run(tmp_path, out, 2, resume=True)
    assert done.returncode == 0, done.stderr[-3000:]
    full, resumed = load_file(str(one_and_two / "p2" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert read_loss_log(out) == read_loss_log(one_and_two / "p2")


def test_a_process_that_dies_stops_the_run_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "d"
    first = _run(tmp_path, out, 2, steps=4)
    assert first.returncode == 0, first.stderr[-3000:]
    before = (out / "model.safetensors").read_bytes()
    t0 = time.perf_counter()
    done = _run(tmp_path, out, 2, resume=True, env={"FAIL_AT_STEP": "1"})
    assert done.returncode != 0 and time.perf_counter() - t0 < 120
    assert "rank 1 fails on purpose" in done.stderr
    assert (out / "model.safetensors").read_bytes() == before


def test_the_global_batch_must_split_evenly():
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        distributed.rows(distributed.Processes(rank=0, world_size=3), 16)
    assert distributed.rows(distributed.Processes(rank=1, world_size=2), 16) == slice(8, 16)
    assert distributed.rows(distributed.Processes(), 16) is None


def test_bf16_autocast_trains_and_is_recorded(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(32, 1, 28, 28, generator=g), torch.arange(32) % 10)
    cfg = T.recipe_config("flow-class", num_hiddens=4, epochs=1, batch_size=16, snapshot_epochs=[])
    model = T.train(cfg, tmp_path, data=data, progress=False, amp="bf16")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert json.loads((tmp_path / "config.json").read_text())["amp"] == "bf16"
    with pytest.raises(ValueError, match="--amp"):
        T.train(cfg, tmp_path / "x", data=data, progress=False, amp="fp8")
