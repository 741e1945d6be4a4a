"""Where minidiff reads and writes: the files that ship beside the code, and output paths.

Shipped files are the lesson scripts and the small trained weights.

The repository keeps them at the top level, as ``lessons/`` and ``weights/``, where a reader
finds them first. A wheel (``pip install .``, or ``pip install minidiff``) cannot carry
folders outside its packages, so setup.cfg maps the same two folders into the package:
``lessons/ -> minidiff/lessons`` and ``weights/ -> minidiff/weights``. One lookup serves both
ways of installing:

    installed from a wheel     site-packages/minidiff/lessons, site-packages/minidiff/weights
    a checkout (pip install -e) <repo>/lessons, <repo>/weights, beside the minidiff package

``$MINIDIFF_WEIGHTS`` points at another weights folder (for example a copy of a newer release);
set to a path that is no folder, it is an error that names the variable.

Output paths (``--out``) are checked before any work starts, by writing a probe file: a
figure folder that is really a file, or a folder this user cannot write, is an error in the
first second, not after minutes of sampling.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["shipped_dir", "lessons_dir", "weights_dir", "output_dir", "output_file"]

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """The shipped folder ``name`` ("lessons" or "weights"): inside the package if installed, else beside it.

    $MINIDIFF_WEIGHTS, when set, is the weights folder, and FileNotFoundError naming the variable
    when it names no folder (a typo there would otherwise read as "no such model"). Otherwise
    never raises: when nothing exists it returns the installed location, so that a caller's
    "not found" message names where the file was expected.
    """
    if name == "weights" and os.environ.get("MINIDIFF_WEIGHTS"):
        folder = Path(os.environ["MINIDIFF_WEIGHTS"]).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"MINIDIFF_WEIGHTS={os.environ['MINIDIFF_WEIGHTS']} is not a folder: point it at a weights/ folder "
                "(one holding mnist/), or unset it to use the weights shipped with minidiff"
            )
        return folder
    for folder in (_PACKAGE / name, _PACKAGE.parent / name):
        if folder.is_dir():
            return folder
    return _PACKAGE / name


def _shipped_folder(name: str, missing: str) -> Path:
    """shipped_dir(name), or FileNotFoundError saying ``missing`` (a format of {folder}) when it is not there."""
    folder = shipped_dir(name)
    if not folder.is_dir():
        raise FileNotFoundError(missing.format(folder=folder))
    return folder


def lessons_dir() -> Path:
    """The folder of lesson scripts; FileNotFoundError if this installation has none."""
    return _shipped_folder("lessons", "no lessons folder at {folder}: this installation of minidiff is incomplete; "
                                      "reinstall it (pip install minidiff, or pip install . in a clone of the repository)")


def weights_dir() -> Path:
    """The shipped weights folder, or $MINIDIFF_WEIGHTS when set; FileNotFoundError if it is missing."""
    return _shipped_folder("weights", "no shipped weights at {folder}: this installation of minidiff is incomplete; "
                                      "reinstall it (pip install minidiff, or pip install . in a clone), or set "
                                      "MINIDIFF_WEIGHTS to a weights/ folder")


def output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create the folder ``path`` if needed and prove it writable; ValueError naming ``what`` if not."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is a file, not a folder; give a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # os.access says yes to root even on a read-only mount: only a real write proves it
        tempfile.NamedTemporaryFile(dir=folder, prefix=".minidiff-probe-").close()  # created, then deleted
    except OSError as err:
        raise ValueError(f"{what} {folder} cannot be written to ({err.strerror}); choose another folder") from None
    return folder


def output_file(path: str | os.PathLike, suffix: str, what: str = "--out") -> Path:
    """Check that the file ``path`` (ending in ``suffix``) can be written: its folder is created and probed."""
    file = Path(path).expanduser()
    if file.suffix != suffix:
        raise ValueError(f"{what} must name a {suffix} file, got {file}")
    if file.is_dir():
        raise ValueError(f"{what} {file} is a folder; give a file name ending in {suffix}")
    output_dir(file.parent, what=f"{what} {file}: its folder")
    return file

