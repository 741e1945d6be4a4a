"""Mutation testing of the math modules: does every change to what a method computes fail a test?

    pip install mutmut                          # 3.x; not needed by pytest
    python tools/mutation.py                    # every module below, one after the other
    python tools/mutation.py guidance views     # some of them
    python tools/mutation.py --list             # the modules and the tests each one runs

mutmut (https://github.com/boxed/mutmut) rewrites one operator, constant or call at a time
(+ for -, 2.0 for 3.0, a dropped argument, ...) in a module's functions and runs the tests
that reach the changed function: a mutant that no test fails is a mistake the tests would let
through. The run works on a snapshot of the working tree under a temporary folder (never on
minidiff/ itself, which others may be importing), module by module, with a small fast test
selection per module, so one module takes minutes rather than the suite's half hour.

Two things to know. mutmut skips decorated functions, so in the snapshot the module's
``@torch.no_grad()`` decorators move to the end of the module (``f = torch.no_grad()(f)``),
where they wrap mutmut's dispatch instead; and mutmut mutates only functions, so module-level
tables (views' factories, the flow's time grids) are checked by the tests only. Mutants are
switched on per test, after the test modules were imported: a test that checks a constructor
(``DDPMSchedule.deepfloyd()``, ``strided_timesteps()``) must call it inside the test, not at
the top of its module.

A surviving mutant is either killed by a new test that states the property it breaks, or, when
it cannot change any result (a device move a CPU run cannot see, an argument equal to its
default, a cast that type promotion makes anyway), listed with its reason in
tools/mutation_equivalent.txt, keyed by module, function and the changed line. A mutant that
changes nothing but the text of strings (a name or a message of a check) is counted equivalent
by the script itself ("text"; --verbose lists them). The script prints a table per module
(killed, timeouts, listed, text, survivors) and exits 1 while a mutant that is not listed
survives. After adding a test, ``--keep DIR`` and then ``--from DIR/<snapshot> --rerun`` run
only the survivors again. A check to run before a release and after a redesign of the math: the
ten modules take about an hour and a half on 2 busy cores (nice it); it is not part of the suite.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQUIVALENT = REPO / "tools" / "mutation_equivalent.txt"

# module -> the fast tests that state its properties (mutmut runs, per mutant, those of them that
# reach the mutated function)
PROPS = "tests/test_math_properties.py"
MODULES = {
    "guidance": ("minidiff/guidance.py", ["tests/test_guidance.py", "tests/test_distill.py", PROPS]),
    "views": ("minidiff/views.py", ["tests/test_views.py", "tests/test_guidance.py", PROPS]),
    "filters": ("minidiff/filters.py", ["tests/test_filters.py", "tests/test_guidance.py", PROPS]),
    "edit": ("minidiff/edit.py", ["tests/test_edit.py", PROPS]),
    "losses": ("minidiff/losses.py", ["tests/test_train.py", "tests/test_distill.py", PROPS]),
    "betas": ("minidiff/betas.py", ["tests/test_schedule.py", PROPS]),
    "samplers": ("minidiff/samplers.py", ["tests/test_samplers.py", "tests/test_schedule.py", PROPS]),
    "schedule": ("minidiff/schedule.py", ["tests/test_schedule.py", "tests/test_samplers.py", PROPS]),
    "mnist": ("minidiff/models/mnist.py", ["tests/test_mnist_models.py", PROPS]),
    "if_blocks": ("minidiff/models/if_blocks.py", ["tests/test_if_unet.py", "tests/test_if2_unet.py", PROPS]),
}

DETECTED = {"killed", "timeout", "segfault"}  # a test failed, hung or crashed: the mutant was seen
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault",
          None: "not run"}  # mutmut's exit codes (mutmut.stats.status_by_exit_code)


def equivalent_mutants(path: Path = EQUIVALENT) -> dict[str, str]:
    """{key: reason} from the listing: one mutant a line, ``key | reason``, # comments."""
    listed = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, reason = line.rpartition(" | ")
            listed[key.strip()] = reason.strip()
    return listed


def snapshot(module: str, tests: list[str], into: Path) -> None:
    """The working tree's package and tests under ``into``, with mutmut's configuration."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "mutants", ".hypothesis")
    shutil.copytree(REPO / "minidiff", into / "minidiff", ignore=ignore)
    shutil.copytree(REPO / "tests", into / "tests", ignore=ignore)
    target = into / module
    source = target.read_text()
    no_grad = re.findall(r"^@torch\.no_grad\(\)\ndef (\w+)\(", source, flags=re.M)
    source = re.sub(r"^@torch\.no_grad\(\)\n(?=def )", "", source, flags=re.M)
    target.write_text(source + "".join(f"{name} = torch.no_grad()({name})\n" for name in no_grad))
    selection = "\n    ".join(tests)
    (into / "setup.cfg").write_text(
        (REPO / "setup.cfg").read_text() + f"""
[mutmut]
source_paths = minidiff
only_mutate = {module}
pytest_add_cli_args_test_selection =
    {selection}
pytest_add_cli_args = -p no:cacheprovider
use_git_change_detection = false
""")


def changed_lines(diff: str) -> tuple[str, str]:
    """(old, new): the lines a mutant changes, stripped, joined with " / " when several."""
    old = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    new = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return " / ".join(old), " / ".join(new)


def mutant_key(diff: str, module: str, name: str) -> str:
    """``module::function | old line -> new line``: what the mutant changes, stable while that line is."""
    function = name.split("__mutmut_")[0].rsplit(".", 1)[-1]  # x_name, or xǁClassǁmethod
    function = function[2:].replace("ǁ", ".").strip(".")
    old, new = changed_lines(diff)
    return f"{module}::{function} | {old} -> {new}"


def _tokens(line: str) -> list[tuple[int, str]]:
    """The tokens of one source line (a line of a longer statement too: its tokens up to where it stops)."""
    tokens = []
    try:
        for t in tokenize.generate_tokens(io.StringIO(line).readline):
            if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.COMMENT):
                tokens.append((t.type, t.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return tokens


def text_only(old: str, new: str) -> bool:
    """Whether a mutant changes nothing but the text of string literals (a name or a message of a check):
    the same tokens before and after, except strings whose text changed or that became None."""
    before, after = _tokens(old), _tokens(new)
    if not before or not after or len(before) != len(after) or before == after:
        return False
    return all(a == b or (a[0] == tokenize.STRING and (b[0] == tokenize.STRING or b == (tokenize.NAME, "None")))
               for a, b in zip(before, after))


def run_module(name: str, jobs: int, keep: Path | None) -> dict:
    """mutmut over one module in a fresh snapshot; its mutants classified (``classify``)."""
    module, tests = MODULES[name]
    work = Path(tempfile.mkdtemp(prefix=f"minidiff-mutation-{name}-", dir=keep))
    snapshot(module, tests, work)
    print(f"== {name}: mutating {module} in {work}, against {' '.join(tests)}", flush=True)
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs)], cwd=work, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not (work / "mutants" / (module + ".meta")).exists():
        sys.exit(f"mutmut failed on {name} (exit {run.returncode}):\n{run.stdout[-3000:]}")
    result = classify(name, work)
    print(f"   {name}: {result['total']} mutants in {(time.monotonic() - start) / 60:.1f} min", flush=True)
    if keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


def rerun_survivors(name: str, work: Path, jobs: int) -> None:
    """In a kept snapshot: take the working tree's tests again and run the mutants no test detected."""
    module = MODULES[name][0]
    shutil.rmtree(work / "tests")
    shutil.copytree(REPO / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    config = (work / "setup.cfg").read_text()
    selection = "\n    ".join(MODULES[name][1])
    (work / "setup.cfg").write_text(re.sub(r"(pytest_add_cli_args_test_selection =\n)(    .*\n)+",
                                           lambda m: m.group(1) + f"    {selection}\n", config))
    codes = json.loads((work / "mutants" / (module + ".meta")).read_text())["exit_code_by_key"]
    alive = [m for m, code in sorted(codes.items()) if STATUS.get(code, "suspicious") not in DETECTED]
    print(f"== {name}: running the {len(alive)} undetected mutants again in {work}", flush=True)
    if alive:
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *alive], cwd=work,
                       env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    # a changed test selection makes mutmut forget every result; the mutants detected before stay detected
    # (more tests can only detect more), so their codes are put back
    meta = json.loads((work / "mutants" / (module + ".meta")).read_text())
    for mutant, code in codes.items():
        if meta["exit_code_by_key"].get(mutant) is None:
            meta["exit_code_by_key"][mutant] = code
    (work / "mutants" / (module + ".meta")).write_text(json.dumps(meta, indent=4))


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the snapshot's minidiff, nothing else
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


_SHOW = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant

def show(name):
    try:
        return get_diff_for_mutant(name)
    except Exception as error:  # a mutant mutmut cannot show (yet): reported with its status
        return f"-{name}\\n+(no diff: {error})"

print(json.dumps({name: show(name) for name in json.load(sys.stdin)}))
"""  # the diffs of mutants, by mutmut itself, in one process


def classify(name: str, work: Path) -> dict:
    """The mutants of a finished mutmut run in ``work``: detected (a test failed, or it hung), listed
    equivalent, text only (``text_only``), or survived."""
    module = MODULES[name][0]
    codes = json.loads((work / "mutants" / (module + ".meta")).read_text())["exit_code_by_key"]
    result = {"module": module, "total": len(codes), "killed": 0, "timeout": 0, "text": [], "equivalent": [],
              "survived": []}
    listed = equivalent_mutants()
    undetected = []
    for mutant, code in sorted(codes.items()):
        status = STATUS.get(code, "suspicious")
        if status in DETECTED:
            result["timeout" if status == "timeout" else "killed"] += 1
        else:
            undetected.append((mutant, status))
    diffs = json.loads(subprocess.run([sys.executable, "-c", _SHOW], input=json.dumps([m for m, _ in undetected]),
                                      cwd=work, env=_env(), capture_output=True, text=True, check=True).stdout)
    for mutant, status in undetected:
        key = mutant_key(diffs[mutant], module, mutant)
        if key in listed:
            result["equivalent"].append((key, listed[key]))
        elif text_only(*changed_lines(diffs[mutant])):
            result["text"].append(key)
        else:
            result["survived"].append((key, status, mutant))
    return result


def report(results: list[dict], verbose: bool = False) -> None:
    """The table: per module, mutants, detected (killed + timeouts), equivalent (listed + text only),
    survivors, and the score, detected / (mutants - equivalent)."""
    print(f"\n{'module':28} {'mutants':>7} {'killed':>7} {'timeout':>7} {'listed':>7} {'text':>5} {'survived':>8}",
          " score")
    for r in results:
        detected = r["killed"] + r["timeout"]
        live = r["total"] - len(r["equivalent"]) - len(r["text"])
        score = f"{detected}/{live} = {100 * detected / live:.1f}%" if live else "-"
        print(f"{r['module']:28} {r['total']:7} {r['killed']:7} {r['timeout']:7} {len(r['equivalent']):7} "
              f"{len(r['text']):5} {len(r['survived']):8}  {score}")
    for r in results:
        if verbose:
            for key in r["text"]:
                print(f"text only: {key}")
            for key, reason in r["equivalent"]:
                print(f"equivalent: {key}  ({reason})")
        for key, status, mutant in r["survived"]:
            print(f"SURVIVED ({status}, {mutant}): {key}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", choices=[[], *MODULES], metavar="module",
                        help=f"modules to mutate (default: all of {', '.join(MODULES)})")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--keep", type=Path, help="keep the snapshots (with mutmut's results) under this folder")
    parser.add_argument("--list", action="store_true", help="print the modules and their tests, run nothing")
    parser.add_argument("--from", dest="done", type=Path, metavar="SNAPSHOT",
                        help="classify a kept snapshot's finished run again (one module), run nothing")
    parser.add_argument("--rerun", action="store_true",
                        help="with --from: first run its undetected mutants again against the current tests")
    parser.add_argument("--verbose", action="store_true", help="also list the equivalent and text-only mutants")
    args = parser.parse_args(argv)
    if args.list:
        for name, (module, tests) in MODULES.items():
            print(f"{name:10} {module:30} {' '.join(tests)}")
        return 0
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("tools/mutation.py needs mutmut 3: pip install mutmut", file=sys.stderr)
        return 2
    if args.done and args.rerun:
        rerun_survivors(args.modules[0], args.done, args.jobs)
    if args.done:
        results = [classify(name, args.done) for name in args.modules]
    else:
        results = [run_module(name, args.jobs, args.keep) for name in args.modules or MODULES]
    report(results, args.verbose)
    return 1 if any(r["survived"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
