"""Data: MNIST digits as tensors, and the image helpers every lesson uses.

MNIST comes from a folder of IDX files (the format of the original distribution, gzipped
or not) or, when online, from torchvision's download. Digits are float tensors in [0, 1]
of shape (N, 1, 28, 28), labels int64 of shape (N,).

The folder is found in this order: the ``root`` argument, the ``MINIDIFF_MNIST_DIR``
environment variable, ``../shared/data/mnist`` next to the repository, and last
torchvision's download into ``~/.cache/minidiff/mnist``.

The splits minidiff trains and evaluates on (``training_set``, ``heldout_set``) come from one
mix, the train split (train5k-*: 5,000 digits, or the official 60,000 train-*) followed by
the 10,000 digits of t10k::

    held-out set = 2,000 digits of the mix drawn at random, never trained on
    training set = the mix minus the held-out set (13,000 digits with train5k, 68,000 with train-*)

The draw is stratified, so the held-out set is a small copy of the mix. MNIST's digits were
written by two populations: t10k[:5000] by Census Bureau employees, t10k[5000:] by
high-school students, and the train split by both. Each stratum (source, class), the source
being the train split, t10k[:5000] or t10k[5000:], gives its share 2,000 n_sc / N of the
held-out set, rounded by largest remainder so that the shares sum to 2,000; its digits are the
first ones of a torch.randperm of the stratum from one torch.Generator seeded with
HOLDOUT_SEED, the strata taken in order (train 0..9, t10k[:5000] 0..9, t10k[5000:] 0..9). The
draw depends only on the labels, so the same files give everyone the same split. With
train5k the three sources give 670, 665 and 665 digits; with the official 60,000 train
digits about 1,714, 143 and 143 (the shares follow the mix, and the draw differs from train5k's).

A t10k of fewer than 10,000 digits (a partial or made-up folder) has no two halves to draw
from: then training_set is the whole mix and heldout_set refuses.

Image helpers: ``load_image`` (any file to a (1, 3, S, S) tensor in [-1, 1], centre crop),
``make_grid``, ``save_grid`` (PNG) and ``save_gif``.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from minidiff.checks import finite_tensor, integer, nonempty_list, value_range as range_of

__all__ = [
    "MNIST_ENV", "HOLDOUT_SIZE", "HOLDOUT_SEED", "T10K_SIZE", "SPLIT", "read_idx", "find_mnist_dir", "load_mnist",
    "mnist_mix", "holdout_mask", "training_set", "heldout_set", "load_image", "sample_photo", "sample_digits_real", "sketch", "to_uint8", "make_grid", "save_grid", "save_gif",
]

MNIST_ENV = "MINIDIFF_MNIST_DIR"
HOLDOUT_SIZE = 2000  # digits of the mix held out, never trained on
HOLDOUT_SEED = 0  # the torch.Generator seed of the draw: changing it changes every shipped number
T10K_SIZE = 10_000  # MNIST's test split: its first half by one population of writers, its second by another
SPLIT = ("the mix of the train split (train-* or train5k-*) and t10k minus 2,000 held-out digits "
         "drawn at random, stratified by class and source (train, t10k[:5000], t10k[5000:]), seed 0")

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

# The names each split goes by, first match wins.
_SPLIT_FILES = {
    "train": ["train", "train5k"],
    "train5k": ["train5k"],
    "t10k": ["t10k"],
    "test": ["t10k"],
}


# ----------------------------------------------------------------------------------------
# IDX files
# ----------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped): 2 zero bytes, a dtype code, the rank, the sizes, the data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable IDX file ({err}); download it again") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number); download it again")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated (incomplete header); download it again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path} is corrupt: its header promises shape {shape} ({expected} bytes) "
            f"but it holds {len(raw) - header} bytes; download it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


# ----------------------------------------------------------------------------------------
# MNIST
# ----------------------------------------------------------------------------------------


def _repo_default_dir() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def find_mnist_dir(root: str | os.PathLike | None = None) -> Path | None:
    """The MNIST folder to read: root, else $MINIDIFF_MNIST_DIR, else ../shared/data/mnist; None if none.

    An explicitly given folder (argument or environment variable) must exist.
    """
    for given, what in ((root, "the given MNIST folder"), (os.environ.get(MNIST_ENV), f"${MNIST_ENV}")):
        if given:
            path = Path(given).expanduser()
            if not path.is_dir():
                raise FileNotFoundError(
                    f"{what} {path} does not exist; point it to a folder holding "
                    "t10k-images-idx3-ubyte.gz and friends, or leave it unset to download MNIST"
                )
            return path
    default = _repo_default_dir()
    return default if default.is_dir() else None


def _find_pair(root: Path, split: str) -> tuple[Path, Path] | None:
    for prefix in _SPLIT_FILES[split]:
        for ext in (".gz", ""):
            images = root / f"{prefix}-images-idx3-ubyte{ext}"
            labels = root / f"{prefix}-labels-idx1-ubyte{ext}"
            if images.is_file() and labels.is_file():
                return images, labels
    return None


def _from_idx(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"{images_path} must hold uint8 images of shape (N, 28, 28), got {images.shape} {images.dtype}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path} must hold one label per image ({images.shape[0]}), got shape {labels.shape}"
        )
    if labels.size and (labels.max() > 9 or labels.min() < 0):
        raise ValueError(
            f"{labels_path} holds labels outside 0..9 (min {labels.min()}, max {labels.max()}); the file is corrupt"
        )
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def _download(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from torchvision.datasets import MNIST
    except ImportError as err:  # pragma: no cover - torchvision is a dependency
        raise FileNotFoundError("no MNIST folder found and torchvision is not installed to download it") from err
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minidiff" / "mnist"
    try:
        ds = MNIST(str(cache), train=(split == "train"), download=True)
    except Exception as err:  # network errors come in many types
        # torchvision's message lists every mirror it tried over several lines; its first line says enough
        first = str(err).strip().splitlines()[0].rstrip(":") if str(err).strip() else type(err).__name__
        raise FileNotFoundError(
            f"no MNIST folder found and downloading MNIST failed ({first}; are you offline?); connect to the "
            f"internet, or give --data / set ${MNIST_ENV} to a folder of IDX files "
            "(t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, train-*.gz or train5k-*.gz)"
        ) from None
    return ds.data.unsqueeze(1).float() / 255.0, ds.targets.long()


def load_mnist(
    split: str = "train", root: str | os.PathLike | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """One MNIST split: images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64.

    split: "train" (official train-* if present, else train5k-*), "train5k", "t10k" or "test".
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; choose one of {sorted(_SPLIT_FILES)}")
    folder = find_mnist_dir(root)
    if folder is not None:
        pair = _find_pair(folder, split)
        if pair is not None:
            return _from_idx(*pair)
        if root is not None or os.environ.get(MNIST_ENV) or not download:
            names = " or ".join(f"{p}-images-idx3-ubyte[.gz]" for p in _SPLIT_FILES[split])
            raise FileNotFoundError(
                f"MNIST folder {folder} has no {split!r} split: expected {names} with its labels file"
            )
    if not download:
        raise FileNotFoundError(f"no MNIST folder found; set ${MNIST_ENV} or pass root=")
    if split == "train5k":
        raise FileNotFoundError(f"train5k exists only as IDX files; set ${MNIST_ENV} to their folder")
    return _download("train" if split == "train" else "test")


def mnist_mix(root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The train split followed by t10k: images (N, 1, 28, 28), labels (N,), and each digit's
    source (N,): 0 = train split, 1 = t10k[:5000], 2 = t10k[5000:]."""
    x_tr, y_tr = load_mnist("train", root)
    x_te, y_te = load_mnist("t10k", root)
    source = torch.cat([torch.zeros_like(y_tr), torch.ones_like(y_te)])
    source[y_tr.shape[0] + T10K_SIZE // 2:] = 2
    return torch.cat([x_tr, x_te]), torch.cat([y_tr, y_te]), source


def holdout_mask(labels: torch.Tensor, source: torch.Tensor, size: int = HOLDOUT_SIZE,
                 seed: int = HOLDOUT_SEED) -> torch.Tensor:
    """(N,) bool, True for the `size` digits held out: a stratified random draw (module docstring).

    Stratum k = 10 source + label holds n_k digits and gives q_k = size n_k / N of them,
    floored, plus one for the strata of the largest remainders until the q_k sum to size.
    """
    size = integer(size, "size", minimum=1)
    strata = 10 * source.long() + labels.long()
    counts = torch.bincount(strata, minlength=30).double()
    if size >= labels.shape[0]:
        raise ValueError(f"cannot hold out {size} of {labels.shape[0]} digits: the training set would be empty")
    exact = size * counts / counts.sum()
    quota = exact.floor().long()
    short = size - int(quota.sum())
    order = sorted(range(len(exact)), key=lambda k: (-float(exact[k] - quota[k]), k))  # stable: ties by stratum
    quota[order[:short]] += 1
    generator = torch.Generator().manual_seed(seed)
    held = torch.zeros(labels.shape[0], dtype=torch.bool)
    for k in range(len(counts)):
        members = torch.nonzero(strata == k)[:, 0]
        held[members[torch.randperm(members.numel(), generator=generator)[: int(quota[k])]]] = True
    return held


def _split(root: str | os.PathLike | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The mix and its hold-out mask; None when t10k is too small to have its two halves."""
    x, y, source = mnist_mix(root)
    t10k = int((source > 0).sum())
    return x, y, (holdout_mask(y, source, HOLDOUT_SIZE, HOLDOUT_SEED) if t10k >= T10K_SIZE else None)


def training_set(root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """What minidiff trains on: the mix of the train split and t10k minus the held-out digits
    (the whole mix when t10k has fewer than 10,000 digits)."""
    x, y, held = _split(root)
    return (x, y) if held is None else (x[~held], y[~held])


def heldout_set(root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """What minidiff evaluates on: 2,000 digits of the mix, drawn at random and never trained on."""
    x, y, held = _split(root)
    if held is None:
        t10k = load_mnist("t10k", root)[0].shape[0]
        raise ValueError(f"t10k has only {t10k} digits; the held-out set is drawn from MNIST's whole test split "
                         f"of {T10K_SIZE} (its two halves were written by different people)")
    return x[held], y[held]


# ----------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike, size: int = 64) -> torch.Tensor:
    """Any image file (RGB, RGBA, grayscale, palette; any size) -> (1, 3, size, size) in [-1, 1].

    The largest centred square is cropped, then resized with antialiased bicubic filtering.
    Transparent pixels are composited onto white. A picture of more than PIL's
    Image.MAX_IMAGE_PIXELS (89.5 megapixels unless changed), which PIL treats as a possible
    decompression bomb, is refused before it is decoded.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    size = integer(size, "size", minimum=1, maximum=4096)
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a folder; load_image needs an image file such as a .png or .jpg")
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a warning is a bomb too
            img = Image.open(path)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(_too_large(path, err, Image.MAX_IMAGE_PIXELS)) from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read {path} as an image ({err})") from err
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return (x * 2 - 1).unsqueeze(0)


def _too_large(path: Path, err: Exception, limit: int) -> str:
    """The refusal of a picture over PIL's pixel limit, with its size as PIL's message gives it."""
    import re

    found = re.search(r"\((\d+) pixels\)", str(err))
    size = f" has {int(found.group(1)) / 1e6:.1f} megapixels," if found else " is"
    return (f"{path}{size} more than the {limit / 1e6:.1f} megapixels that load_image takes (PIL's "
            "Image.MAX_IMAGE_PIXELS, its guard against decompression bombs); shrink the picture first")


def _value_range(x: torch.Tensor, value_range: tuple[float, float] | None) -> tuple[float, float]:
    if value_range is not None:
        return range_of(value_range, "value_range")
    return (-1.0, 1.0) if float(x.min()) < 0 else (0.0, 1.0)


def to_uint8(x: torch.Tensor, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Map [low, high] to 0..255 uint8 (clipping). value_range None: [-1, 1] if x has negatives, else [0, 1]."""
    finite_tensor(x, "the image", "would become black pixels")
    lo, hi = _value_range(x, value_range)
    y = (x.detach().float().cpu() - lo) / (hi - lo)
    return (y.clamp(0, 1) * 255).round().to(torch.uint8)


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> torch.Tensor:
    """Tile (B, C, H, W) images into one (C, H', W') image, nrow images per row."""
    _check_images(images, "images")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    nrow, padding = integer(nrow, "nrow", minimum=1), integer(padding, "padding", minimum=0)
    b, c, h, w = images.shape
    ncol = min(nrow, b)
    nrows = (b + ncol - 1) // ncol
    grid = torch.full(
        (c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value, dtype=images.dtype
    )
    for i in range(b):
        r, q = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def _check_images(images: torch.Tensor, name: str) -> None:
    """ValueError unless images is a non-empty (B, C, H, W) or (C, H, W) real tensor."""
    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4) or images.numel() == 0:
        got = f"shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else f"a {type(images).__name__}"
        raise ValueError(f"{name} must be a non-empty (B, C, H, W) batch or one (C, H, W) image tensor, got {got}")
    if images.is_complex():
        raise ValueError(f"{name} must be real, got {images.dtype}")


def _check_saveable(images: torch.Tensor, name: str) -> None:
    """What save_grid and save_gif need of each batch: 1 or 3 channels, finite values."""
    _check_images(images, name)
    if images.shape[-3] not in (1, 3):
        raise ValueError(f"{name} must have 1 (grey) or 3 (RGB) channels, got shape {tuple(images.shape)}")
    finite_tensor(images, name, "would be saved as black pixels")


def _output_path(path: str | os.PathLike) -> Path:
    """path as a Path whose folder exists (created if missing); ValueError when it is a folder,
    when a file stands where a folder of it should be, or when its folder cannot be made."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name such as {path / 'samples.png'}")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ValueError(f"cannot write {path}: {blocker} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot write {path}: its folder cannot be created ({err.strerror})") from None
    return path


def _save(image, path: Path, **kwargs) -> Path:
    """image.save(path, **kwargs) (a PIL image); ValueError naming path when it cannot be written."""
    try:
        image.save(path, **kwargs)
    except OSError as err:
        raise ValueError(f"cannot write {path} ({err.strerror or err})") from None
    return path


def _to_pil(images: torch.Tensor, nrow: int, value_range: tuple[float, float] | None, padding: int):
    from PIL import Image

    lo, hi = _value_range(images, value_range)
    grid = make_grid(images.detach().float().cpu(), nrow=nrow, padding=padding, pad_value=lo)
    arr = to_uint8(grid, (lo, hi)).permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], mode="L")
    return Image.fromarray(arr, mode="RGB")


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8,
              value_range: tuple[float, float] | None = None, padding: int = 2) -> Path:
    """Save (B, C, H, W) images (C = 1 or 3) as one PNG grid. Returns the path."""
    _check_saveable(images, "images")
    value_range = _value_range(images, value_range)
    return _save(_to_pil(images, nrow, value_range, padding), _output_path(path))


def save_gif(frames: Sequence[torch.Tensor] | Iterable[torch.Tensor], path: str | os.PathLike, nrow: int = 8,
             value_range: tuple[float, float] | None = None, duration_ms: int = 80, padding: int = 2,
             hold_last_ms: int = 1000) -> Path:
    """Save a GIF: each frame is a (B, C, H, W) batch (tiled as a grid) or one (C, H, W) image.

    The last frame is held for ``hold_last_ms`` so the result can be seen before it loops.
    """
    frames = nonempty_list(frames, "frames", "image tensors", "save_gif needs at least one frame, got none in frames")
    for k, frame in enumerate(frames):
        _check_saveable(frame, f"frames[{k}]")
        if frame.shape != frames[0].shape:
            raise ValueError(
                f"every frame must have the shape of frames[0] {tuple(frames[0].shape)}, "
                f"got frames[{k}] of shape {tuple(frame.shape)}"
            )
    duration_ms = integer(duration_ms, "duration_ms", minimum=1)
    hold_last_ms = integer(hold_last_ms, "hold_last_ms", minimum=0)
    if value_range is None:  # one range for the whole animation, so brightness does not flicker
        value_range = _value_range(torch.stack([f.detach().float().min() for f in frames]), None)
    pil = [_to_pil(f, nrow, value_range, padding) for f in frames]
    path = _output_path(path)
    durations = [duration_ms] * (len(pil) - 1) + [max(duration_ms, hold_last_ms)]
    return _save(pil[0], path, save_all=True, append_images=pil[1:], duration=durations, loop=0)


# ----------------------------------------------------------------------------------------
# Test images that ship with minidiff
# ----------------------------------------------------------------------------------------

ASSETS = Path(__file__).resolve().parent / "assets"


def _asset(name: str) -> Path:
    path = ASSETS / name
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}: this installation of minidiff is incomplete; reinstall it")
    return path


def sample_photo(size: int = 64) -> torch.Tensor:
    """The default test photo, (1, 3, size, size) in [-1, 1]: Grace Hopper, from matplotlib's sample data."""
    import matplotlib.cbook

    return load_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), size=size)


def sample_digits_real() -> tuple[torch.Tensor, torch.Tensor]:
    """40 real MNIST test digits that ship with minidiff: images (N, 1, 28, 28) in [0, 1], labels (N,)."""
    with np.load(_asset("mnist_t10k_sample.npz")) as f:
        images = torch.from_numpy(f["images"]).float().div(255).unsqueeze(1)
        labels = torch.from_numpy(f["labels"]).long()
    return images, labels


def sketch(kind: str = "house", size: int = 64) -> torch.Tensor:
    """A hand-drawn-looking sketch, (1, 3, size, size) in [-1, 1], from the strokes in assets/sketch_strokes.json.

    kind: "house" (a house under a sun, black on white, for IF) or a digit "0".."9" (white
    on black, like MNIST). Drawn on a 256 x 256 canvas, then resized with antialiasing.
    """
    import json

    from PIL import Image, ImageDraw

    sketches = json.loads(_asset("sketch_strokes.json").read_text(encoding="utf-8"))
    if kind not in sketches or kind.startswith("_"):
        names = [k for k in sketches if not k.startswith("_")]
        raise ValueError(f"unknown sketch {kind!r}: use one of {', '.join(names)}")
    drawing = sketches[kind]
    img = Image.new("RGB", (256, 256), drawing["paper"])
    pen = ImageDraw.Draw(img)
    for stroke in drawing["strokes"]:
        pen.line([tuple(p) for p in stroke], fill=drawing["ink"], width=drawing["width"], joint="curve")
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
    return (x * 2 - 1).unsqueeze(0)
