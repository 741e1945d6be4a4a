"""Writing MNIST's IDX files, for the tests' small fake MNIST folders (minidiff only reads them: data.read_idx)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8/int8 array as an IDX file (gzipped when the name ends in .gz)."""
    array = np.ascontiguousarray(array)
    if array.dtype not in _IDX_CODES:
        raise ValueError(f"write_idx writes uint8 or int8 arrays, got {array.dtype}")
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
