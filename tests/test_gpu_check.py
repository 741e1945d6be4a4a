"""benchmarks/gpu_check.py on the CPU, run as a user runs it (tiny networks, fake digits).

One run of every case, with stage2 made to fail after its own work and stage1_diffusers made to
hang: the other cases must pass with finite figures, the failure and the time-out must be recorded
with what was measured, and the run must go on after each.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
CASES = ["stage1", "stage1_diffusers", "stage2", "cascade", "mnist", "torchrun"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, str]:
    out = tmp_path_factory.mktemp("gpu_check")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(out), "--fail-case", "stage2",
         "--hang-case", "stage1_diffusers"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    report = json.loads((out / "gpu_check.json").read_text())
    return done, report, (out / "gpu_check.md").read_text()


def _numbers(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    return []


def test_every_case_runs_on_the_cpu_with_finite_figures(run):
    done, report, _ = run
    cases = report["cases"]
    assert list(cases) == CASES
    for name in ("stage1", "cascade", "mnist", "torchrun"):
        assert cases[name]["status"] == "ok", (name, cases[name].get("error"), cases[name].get("log_tail"))
    for name, entry in cases.items():
        assert all(math.isfinite(n) for n in _numbers(entry.get("figures", {}))), (name, entry["figures"])

    stage1 = cases["stage1"]["figures"]
    assert stage1["steps"] == 3 and stage1["steps_per_s"] > 0
    assert 0 < stage1["fp16_vs_fp32_rel_error"] < 0.05
    assert stage1["meta_peak_gib"] > stage1["meta_weights_gib"] > 0
    assert cases["cascade"]["figures"]["meta_both_resident_gib"] > cases["cascade"]["figures"]["meta_one_at_a_time_gib"]
    mnist = cases["mnist"]["figures"]
    assert mnist["digits"] == 10 and abs(mnist["bf16_vs_fp32_final_loss"]) < 0.1
    seen = ("inference_mode", "on_device", "input_channels_last", "weights_channels_last")
    assert all(mnist[k] is True for k in seen)
    torchrun = cases["torchrun"]["figures"]
    assert (torchrun["first_half_steps"], torchrun["resumed_steps"], torchrun["world_size"]) == (2, 4, 1)
    assert torchrun["backend"] == "gloo" and torchrun["all_reduce"] == 1.0
    assert report["environment"]["torch"] and report["elapsed_s"] < report["budget_s"]
    assert "stage1.steps_per_s = " in done.stdout  # printed as it is measured


def test_a_case_that_raises_is_recorded_with_its_figures_and_the_run_goes_on(run):
    done, report, _ = run
    entry = report["cases"]["stage2"]
    assert entry["status"] == "error" and "injected failure" in entry["error"]
    assert "Traceback" in entry["traceback"]
    assert {"meta_peak_gib", "steps", "steps_per_s"} <= set(entry["figures"])  # measured before the failure
    assert report["cases"]["cascade"]["status"] == "ok"
    assert done.returncode == 1


def test_a_case_past_its_time_limit_is_stopped_and_the_run_goes_on(run):
    _, report, _ = run
    entry = report["cases"]["stage1_diffusers"]
    assert entry["status"] == "timed out after 4 s" and entry["injected"] == "hang"
    assert entry["seconds"] < 20  # stopped at its limit, not at the end of its sleep
    assert report["cases"]["stage2"]["figures"]


def test_the_markdown_table_has_a_row_per_case(run):
    _, report, md = run
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| case")]
    assert [row.split(" | ")[0][2:] for row in rows] == CASES
    for row, name in zip(rows, CASES):
        assert report["cases"][name]["status"] in row


def test_without_diffusers_the_comparison_is_skipped_with_the_reason(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look their module up there
    monkeypatch.setattr(sys, "path", list(sys.path))  # it puts the checkout and benchmarks/ on the path
    spec.loader.exec_module(gpu_check)
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` fails, as where it is not installed
    with pytest.raises(gpu_check.Skip, match="diffusers not available.*--diffusers-path"):
        gpu_check.diffusers_unet_class(None)


def test_cuda_asked_on_a_machine_without_it_is_one_line(tmp_path):
    """--device cuda where PyTorch sees no GPU (hidden here on any machine): refused before any case runs."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2 and "no CUDA device" in done.stderr and "--device cpu" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
