"""Reading model files safely: the one check every minidiff loader runs before trusting a file.

Both loaders, the DeepFloyd IF UNet (``IFUNet.from_pretrained``) and the MNIST models
(``load_checkpoint``, behind ``load_mnist_model``), read a ``config.json`` and a
``.safetensors`` file and fill a freshly built network with it. Whatever can be wrong with
such a folder is caught here, with the file named and a few lines saying what is wrong:

- config.json that is not JSON, not a JSON object, or lacks a key the loader needs;
- a .safetensors file that is truncated or is not safetensors at all;
- tensor names or shapes that do not match the network the config describes (the first
  few offenders, not a hundred lines of ``load_state_dict`` output);
- (MNIST) weights holding NaN or inf, which would only ever sample NaN images;
- a device this machine does not have (``check_device``), before anything is read.

Writing is the other half: every file minidiff saves goes through ``atomic_write`` (a
temporary name, then a rename), so a reader, or a run killed mid-save, never sees half a
file; ``writable_folder`` proves a destination writable before any work.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

__all__ = [
    "read_json_config",
    "check_safetensors_file",
    "load_safetensors",
    "check_state_dict",
    "nonfinite_keys",
    "check_finite_state",
    "check_device",
    "atomic_write",
    "writable_folder",
]

DOWNLOAD_AGAIN = "delete it and download it again"


def _shown(items: list[str], limit: int = 5) -> str:
    """The first few items, and how many more there are."""
    return "; ".join(items[:limit]) + (f"; ... ({len(items) - limit} more)" if len(items) > limit else "")


def read_json_config(path: str | Path, required: Iterable[str] = (), advice: str = DOWNLOAD_AGAIN) -> dict[str, Any]:
    """The JSON object in `path`; ValueError naming the file if it is not JSON, not an object, or lacks a key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); {advice}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object {{...}}, got a {type(config).__name__}; {advice}")
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(f"{path} lacks the key(s) {', '.join(missing)}; {advice}")
    return config


def check_safetensors_file(path: str | Path, advice: str = DOWNLOAD_AGAIN) -> None:
    """Catch truncated or corrupt files with a clear message before memory-mapping them.

    Layout: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
    data_offsets: [begin, end]}}, then the tensor bytes.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is truncated ({size} bytes, not even a safetensors header); {advice}")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise ValueError(
                f"{path} is not a safetensors file or is truncated (header of {n} bytes in a {size}-byte file); {advice}"
            )
        try:
            header = json.loads(fh.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, IndexError) as err:
            raise ValueError(f"{path} has a corrupt safetensors header ({err!r}); {advice}") from err
    if 8 + n + end > size:
        raise ValueError(f"{path} is truncated: its header needs {8 + n + end} bytes but the file has {size}; {advice}")


def load_safetensors(path: str | Path, advice: str = DOWNLOAD_AGAIN) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file, memory-mapped (no copy until used), after ``check_safetensors_file``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    check_safetensors_file(path, advice)
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise ValueError(f"{path} could not be read as safetensors ({err}); {advice}") from err


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: Any, described: str) -> None:
    """Strict key and shape check with a readable error: the file, the first few offenders, the config.

    described: the network the config describes, e.g. "the UNet its config.json describes (...)".
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k}: file {tuple(state[k].shape)} vs model {expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    problems = [
        f"{len(items)} {label} key(s): {_shown(items)}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if items
    ]
    if problems:
        raise ValueError(
            f"{source} does not match {described}: " + " | ".join(problems)
            + ". Check that config.json and the weights come from the same checkpoint."
        )


def nonfinite_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in `state` that hold a NaN or an inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_finite_state(state: Mapping[str, torch.Tensor], source: Any, advice: str) -> None:
    """ValueError naming the file and the first tensors that hold NaN or inf (a diverged run's weights)."""
    bad = nonfinite_keys(state)
    if bad:
        raise ValueError(f"{source} holds NaN or inf weights in {len(bad)} tensor(s): {_shown(bad, 3)}; {advice}")


def check_device(device: str | torch.device) -> torch.device:
    """device as a torch.device, if this machine has it: ValueError before any work otherwise.

    Only cpu, cuda[:N] and mps are accepted; "cuda" on a machine without a usable GPU is an
    error here rather than a CUDA traceback halfway through loading.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this machine (or this torch build) has no CUDA GPU; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"numbered from 0; use cuda:0")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r}: Apple's MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: minidiff runs on cpu, cuda or mps")
    return dev


def _umask() -> int:
    """The process's umask (os.umask can only be read by setting it: set a safe one for that instant)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file.

    The temporary name keeps path's suffix, for writers that go by it (np.savez adds ".npz" to a
    name without it; matplotlib picks the format from it). The file gets the mode a plain open()
    gives, 0o666 less the umask: some writers (safetensors) create 0o600 files, which the user's
    group could not read.
    """
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(str(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def writable_folder(folder: Any, what: str) -> Path:
    """folder as a Path, if it is or can become a folder we can write in: ValueError otherwise, before any work."""
    if not isinstance(folder, (str, os.PathLike)) or not str(folder):
        raise ValueError(f"the {what} must be a folder path, got {folder!r}")
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the {what} {folder} is a file; give a folder (it is made if missing)")
    parent = folder
    while not parent.exists():  # the nearest part of the path that exists must be a folder we may write in
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"the {what} {folder} cannot be made: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"the {what} {folder} is not writable (no write permission in {parent}); choose another folder")
    return folder
