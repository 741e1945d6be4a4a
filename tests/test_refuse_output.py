"""How a command ends when it is stopped from outside: Ctrl-C, a reader that leaves, a full disk.

Each ends in at most one line on stderr and a fixed exit code, never a traceback:

    Ctrl-C                              "<command>: interrupted; <what was kept>"           130
    standard output closed (| head -1)  nothing                                              141
    standard output full (> /dev/full)  "<command>: cannot write to standard output: ..."    1

Real processes are sent SIGINT or given a closed pipe or /dev/full, with Python's output
buffered and unbuffered (PYTHONUNBUFFERED, where a closed pipe shows up at the first print
rather than at exit); the in-process tests make the work itself raise KeyboardInterrupt.
The last part checks the messages that say what is missing (IF weights, T5, a bad path).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minidiff import lessons_index
from minidiff.cli import lesson_script, main

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hf_thisIsNotARealTokenButMustNeverBePrinted"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIDIFF_", "PYTHONUNBUFFERED"))}
    env.update(HF_HUB_OFFLINE="1", HF_TOKEN=SECRET, **extra)
    return env


def _minidiff(*argv: str) -> list[str]:
    return [sys.executable, "-m", "minidiff", *argv]


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.endswith("\n"), f"not one line: {err!r}"
    return err.strip()


# ----------------------------------------------------------------------------------------
# Ctrl-C
# ----------------------------------------------------------------------------------------


def _interrupt(argv: list[str], tmp_path: Path, ready: str | None, wait_s: float = 6.0) -> tuple[int, str]:
    """Start minidiff, wait for the line ``ready`` on stdout (or wait_s seconds), send SIGINT."""
    # SIGINT back to its default in the child: a test run started in the background (a CI job)
    # has it ignored, and an ignored signal stays ignored across exec.
    proc = subprocess.Popen(_minidiff(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=_env(PYTHONUNBUFFERED="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        if ready is not None:
            for line in proc.stdout:
                if ready in line:
                    break
        else:
            time.sleep(wait_s)
        assert proc.poll() is None, "the command ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    return proc.returncode, err


def test_ctrl_c_during_a_lesson_on_the_mnist_path(tmp_path):
    out = tmp_path / "out"
    code, err = _interrupt(["lesson", "A1.4", "--out", str(out)], tmp_path, ready="IF weights not found")
    assert code == 130, err
    assert _one_line(err) == f"minidiff lesson A1.4: interrupted; figures written so far are in {out / 'A1.4'}"


def test_ctrl_c_during_sample_digits_is_one_line(tmp_path):
    out = tmp_path / "d.npz"
    code, err = _interrupt(["sample-digits", "--per-class", "3000", "--out", str(out)], tmp_path, ready=None)
    assert code == 130, err
    # The sampler's own progress bar may come first (minidiff.samplers draws it even into a pipe): the
    # interruption itself is one line, the last, and no traceback.
    *before, last = err.splitlines()
    assert "Traceback" not in err and all(re.search(r"\d+/\d+ \[|^\s*$", line) for line in before), err
    assert re.fullmatch(r"minidiff sample-digits: interrupted; no file was written .*", last)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_process_for_every_lesson_command(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lessons_index, "run_lesson", interrupted)
    assert main(["lesson", "A1.4", "--out", str(tmp_path)]) == 130
    assert _one_line(capsys.readouterr().err) == \
        f"minidiff lesson A1.4: interrupted; figures written so far are in {tmp_path / 'A1.4'}"


def test_ctrl_c_during_lesson_all_says_which_lesson_and_how_many_were_done(tmp_path, monkeypatch, capsys):
    calls = []

    def third_is_interrupted(info, out, **options):
        calls.append(info.id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return []

    monkeypatch.setattr(lessons_index, "run_lesson", third_is_interrupted)
    assert main(["lesson", "all", "--quick", "--out", str(tmp_path)]) == 130
    captured = capsys.readouterr()
    n = len(lessons_index.list_lessons())
    assert _one_line(captured.err) == (f"minidiff lesson all: interrupted; {calls[2]} was running "
                                       f"(2 of {n} lessons done); figures written so far are in {tmp_path}/")


@pytest.mark.parametrize("command, target, said", [
    ("sample-digits --out {tmp}/d.npz", "minidiff.mnist_pipeline.sample_digits",
     r"minidiff sample-digits: interrupted; no file was written "
     r"\(sample-digits writes its files whole, at the end\)"),
    ("lessons", "minidiff.cli.commands.lessons", r"minidiff lessons: interrupted"),
    ("fetch if-i-xl", "minidiff.cli.commands.fetch",
     r"minidiff fetch: interrupted; files already complete stay in the hub cache and the same command fetches "
     r"the rest"),
    ("embed x", "minidiff.cli.commands.embed", r"minidiff embed: interrupted; the embedding cache .* not changed"),
    # the training command says more in its own handler; this is the fallback for whatever it leaves
    ("train flow-class --out {tmp}/run", "minidiff.cli.training.train", r"minidiff train: interrupted.*"),
], ids=["sample-digits", "lessons", "fetch", "embed", "train"])
def test_ctrl_c_in_process_is_one_line_for_every_command(command, target, said, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    assert main(command.format(tmp=tmp_path).split()) == 130
    assert re.fullmatch(said, _one_line(capsys.readouterr().err))


def test_ctrl_c_in_a_lesson_script(tmp_path, capsys):
    """``python lessons/<script>.py`` ends the same way as ``minidiff lesson``."""
    def run(ctx):
        raise KeyboardInterrupt

    run.__module__ = "minidiff_lesson_test"
    sys.modules["minidiff_lesson_test"] = type(sys)("minidiff_lesson_test")
    sys.modules["minidiff_lesson_test"].__file__ = str(ROOT / "lessons" / "a1_1_forward.py")
    try:
        with pytest.raises(SystemExit) as stop:
            lesson_script(run, argv=["--out", str(tmp_path)])
    finally:
        del sys.modules["minidiff_lesson_test"]
    assert stop.value.code == 130
    assert _one_line(capsys.readouterr().err) == \
        f"lesson A1.1: interrupted; figures written so far are in {tmp_path / 'A1.1'}"


# ----------------------------------------------------------------------------------------
# Standard output closed or full
# ----------------------------------------------------------------------------------------

BUFFERING = pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
QUICK_LESSON = ["lesson", "A1.1", "--quick", "--out", "{tmp}"]


def _with_stdout(argv: list[str], tmp_path: Path, unbuffered: bool, stdout) -> subprocess.CompletedProcess:
    argv = [a.format(tmp=tmp_path) for a in argv]
    env = _env(**({"PYTHONUNBUFFERED": "1"} if unbuffered else {}))
    if stdout == "closed":  # a reader that has left before the first line: every write is EPIPE
        proc = subprocess.Popen(_minidiff(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                                env=env)
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=300)
        return subprocess.CompletedProcess(argv, proc.returncode, "", err)
    return subprocess.run(_minidiff(*argv), stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                          env=env, timeout=300)


@BUFFERING
@pytest.mark.parametrize("argv", [["lessons"], QUICK_LESSON], ids=["lessons", "lesson"])
def test_a_reader_that_leaves_ends_the_command_quietly(argv, unbuffered, tmp_path):
    done = _with_stdout(argv, tmp_path, unbuffered, "closed")
    assert done.returncode == 141, done.stderr  # 128 + SIGPIPE, as `yes | head -1`
    assert done.stderr == ""


def test_head_reads_the_first_line_and_nothing_breaks(tmp_path):
    done = subprocess.run(f"{sys.executable} -u -m minidiff lessons | head -1", shell=True, capture_output=True,
                          text=True, cwd=tmp_path, env=_env(), timeout=120)
    assert done.stdout.startswith("A0 ") and done.stdout.count("\n") == 1
    assert done.stderr == ""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@BUFFERING
@pytest.mark.parametrize("argv", [["lessons"], QUICK_LESSON], ids=["lessons", "lesson"])
def test_a_full_standard_output_is_one_line(argv, unbuffered, tmp_path):
    with open("/dev/full", "w") as full:
        done = _with_stdout(argv, tmp_path, unbuffered, full)
    assert done.returncode == 1, done.stderr
    assert re.fullmatch(r"minidiff lesson(s| A1\.1): cannot write to standard output: No space left on device",
                        _one_line(done.stderr))


def test_a_full_disk_under_a_figure_is_not_blamed_on_standard_output(tmp_path, monkeypatch, capsys):
    """Only a failed write to stdout is reported as one; any other OSError keeps its own story."""
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lessons_index, "run_lesson", disk_full)
    with pytest.raises(OSError, match="No space"):
        main(["lesson", "A1.1", "--out", str(tmp_path)])
    assert "standard output" not in capsys.readouterr().err


def test_a_closed_stdout_in_process(tmp_path, monkeypatch, capsys):
    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["lessons"]) == 141
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------------------
# Progress bars and summary lines
# ----------------------------------------------------------------------------------------


def test_redirected_output_has_no_progress_bars_and_one_line_per_lesson(tmp_path):
    done = subprocess.run(_minidiff("lesson", "A1.4", "--quick", "--out", str(tmp_path)), capture_output=True,
                          text=True, cwd=tmp_path, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # stderr is a pipe, not a terminal: no bars
    lines = done.stdout.splitlines()
    assert not any(line.strip() == "" for line in lines)
    assert re.fullmatch(r"A1\.4 [^\n]*[^.]: 3 files in \d+\.\d s", lines[1])
    assert lines[0].startswith("DeepFloyd IF weights not found") and "minidiff fetch if-i-xl" in lines[0]


def test_lesson_all_says_each_note_once_and_draws_no_bar_off_a_terminal(tmp_path, monkeypatch, capsys):
    two = [lessons_index.find_lesson("A1.1"), lessons_index.find_lesson("A1.2")]
    monkeypatch.setattr(lessons_index, "list_lessons", lambda folder=None: two)
    assert main(["lesson", "all", "--quick", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.count("IF weights not found") == 1
    summaries = [line for line in captured.out.splitlines() if re.match(r"A1\.[12] ", line)]
    assert len(summaries) == 2 and all(re.search(r"[^.]: 1 file in \d+\.\d s$", s) for s in summaries)
    assert "Running all 2 lessons" in captured.out and "in quick mode" in captured.out


# ----------------------------------------------------------------------------------------
# What is missing, named: one row per case (env, command, what the message must say)
# ----------------------------------------------------------------------------------------

MISSING = [
    ("weights-folder-missing-sample-digits", {"MINIDIFF_WEIGHTS": "{tmp}/nowhere"}, "sample-digits --out {tmp}/d.npz",
     r"MINIDIFF_WEIGHTS=.*nowhere is not a folder"),
    ("weights-folder-missing-lesson", {"MINIDIFF_WEIGHTS": "{tmp}/nowhere"}, "lesson B2.6 --quick --out {tmp}/out",
     r"MINIDIFF_WEIGHTS=.*nowhere is not a folder"),
    ("weights-folder-is-a-file", {"MINIDIFF_WEIGHTS": "{tmp}/plain_file"}, "lesson A1.5 --quick --out {tmp}/out",
     r"MINIDIFF_WEIGHTS=.*plain_file is not a folder"),
    ("fetch-cache-dir-is-a-file", {}, "fetch if-i-xl --cache-dir {tmp}/plain_file",
     r"--cache-dir .*plain_file is a file, not a folder"),
    ("fetch-cache-dir-under-a-file", {}, "fetch t5 --cache-dir {tmp}/plain_file/hub",
     r"--cache-dir .*plain_file/hub cannot be written"),
    ("embed-cache-in-a-missing-folder-no-t5", {"MINIDIFF_EMBED_CACHE": "{tmp}/nowhere/embeds.safetensors"},
     "embed pencil",
     r"no embedding of 'pencil' in the prompt-embedding cache MINIDIFF_EMBED_CACHE=.*nowhere/embeds\.safetensors, "
     r"which does not exist \(nor does its folder .*nowhere\), and the T5 prompt text encoder .* not on this "
     r"machine: run 'minidiff fetch t5'"),
]


@pytest.mark.parametrize("case_id, env, command, message", MISSING, ids=[c[0] for c in MISSING])
def test_what_is_missing_is_named(case_id, env, command, message, tmp_path):
    (tmp_path / "plain_file").write_text("x")
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    done = subprocess.run(_minidiff(*command.format(tmp=tmp_path).split()), capture_output=True, text=True,
                          cwd=tmp_path, env=_env(**env), timeout=300)
    assert done.returncode == 2, done.stderr
    err = _one_line(done.stderr)
    assert re.search(message, err), f"{case_id}: {err!r} does not match {message!r}"
    assert SECRET not in done.stderr + done.stdout


def test_if_without_t5_says_the_prompt_encoder_is_missing(tmp_path, monkeypatch, capsys):
    """IF stage I on the machine but neither T5 nor the prompts' embeddings: say so, not only "no hub"."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from minidiff import hub

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.setenv("MINIDIFF_IF_UNET", str(ROOT / "tests" / "fixtures" / "if_tiny"))
    monkeypatch.setenv("MINIDIFF_EMBED_CACHE", str(tmp_path / "embeds.safetensors"))
    monkeypatch.setenv("HF_TOKEN", SECRET)
    find = hub.find_if_unet  # no stage II: a real one in this machine's hub cache would not fit the tiny UNet
    monkeypatch.setattr(hub, "find_if_unet", lambda stage=1: find(stage) if stage == 1 else None)
    monkeypatch.chdir(tmp_path)
    assert main(["lesson", "A1.5", "--model", "if", "--quick", "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    err = _one_line(captured.err)
    assert "T5 prompt text encoder" in err and "is not on this machine" in err
    assert re.search(r"no embedding of '.*' .*in the prompt-embedding cache "
                     r"MINIDIFF_EMBED_CACHE=.*embeds\.safetensors, which does not exist", err)
    assert "minidiff fetch t5" in err and "minidiff embed" in err
    assert SECRET not in captured.err + captured.out
