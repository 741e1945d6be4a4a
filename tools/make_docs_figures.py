"""Run every lesson and copy one figure of each into docs/lessons/ for the README table.

    python tools/make_docs_figures.py [--out out/] [--quick]

The lessons write their figures to OUT/<id>/; the first PNG a lesson writes (or the one
named in FIGURE below) becomes docs/lessons/<id>.png, shrunk to at most 900 pixels wide.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image

from minidiff.lessons_index import list_lessons, run_lesson

DOCS = Path(__file__).resolve().parents[1] / "docs" / "lessons"
MAX_WIDTH = 900
# lesson id -> file name of the figure to show, where the first PNG is not the best one
FIGURE = {
    "A1.4": "compare.png",
    "A1.7.1": "sdedit_drawn.png",
    "B1.2.1": "denoised.png",
    "B1.2.3": "pure_noise.png",
    "B2.3": "samples_by_epoch.png",
    "B2.3.1": "samples_by_epoch.png",
    "B2.6": "cfg_grid.png",
    "B2.6.1": "cfg_grid.png",
    "B3": "steps.png",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="*", default=None, help="lesson ids to run (default: all)")
    args = p.parse_args()
    DOCS.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for info in list_lessons():
        if args.only and info.id not in args.only:
            continue
        start = time.perf_counter()
        written = run_lesson(info, Path(args.out), quick=args.quick, progress=False)
        pngs = [w for w in written if w.suffix == ".png"]
        chosen = next((w for w in pngs if w.name == FIGURE.get(info.id)), pngs[0] if pngs else None)
        if chosen is None:
            print(f"{info.id}: no PNG written")
            continue
        img = Image.open(chosen).convert("RGB")
        if img.width > MAX_WIDTH:
            img = img.resize((MAX_WIDTH, round(img.height * MAX_WIDTH / img.width)), Image.Resampling.LANCZOS)
        target = DOCS / f"{info.id}.png"
        # grey figures (every MNIST one) as 8-bit grey, colour ones as a 128-colour palette: small files
        r, g, b = img.split()
        if r.tobytes() == g.tobytes() == b.tobytes():
            img = img.convert("L")
        else:
            img = img.quantize(colors=128)
        img.save(target, optimize=True)
        print(f"{info.id}: {time.perf_counter() - start:.1f} s, {chosen.name} -> {target}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
