"""MNIST / Fashion-MNIST loading with checksum verification.

Data protocol follows the paper (section 3): the 60,000 official training
images are split into the first 50,000 for training and the last 10,000 for
validation; the error the paper reports as "test error" is measured on that
validation set.  The official 10,000 t10k images are available as "test".

Files are IDX (optionally gzipped).  Every file is checked against the
SHA-256 of its *decompressed* bytes listed in ``SHA256SUMS.uncompressed`` in
the same directory before it is parsed.  Every failure raises
:class:`DataError` with a one-line message naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import numbers
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DataError",
    "MNIST_DIR",
    "Split",
    "load_idx",
    "load_split",
    "one_hot",
    "verify",
]

MNIST_DIR: Path = Path(__file__).parent / "datasets" / "mnist"

CHECKSUM_FILE = "SHA256SUMS.uncompressed"
FASHION_ENV = "EQPROP_FASHION_MNIST_DIR"
_SYSTEM_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

DATASETS = ("mnist", "fashion-mnist")
SPLITS = ("train", "validation", "test")
N_TRAIN = 50_000  # paper, section 3: first 50,000 training images
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_HEX_PREFIX = 16

# resolved path -> ((mtime_ns, size), decoded read-only uint8 array)
_CACHE: dict[Path, tuple[tuple[int, int], np.ndarray]] = {}


class DataError(Exception):
    """A dataset file is missing, corrupt or does not match its checksum."""

    def __init__(self, message: object) -> None:
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip())


# --------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------

def _base_name(path: Path) -> str:
    return path.name[:-3] if path.name.endswith(".gz") else path.name


def _expected_sha256(path: Path) -> str:
    sums = path.parent / CHECKSUM_FILE
    name = _base_name(path)
    try:
        text = sums.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: checksum file {sums} is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read checksum file {sums}: {e}") from None
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            continue
        digest, entry = parts
        if entry.lstrip("*") == name:
            digest = digest.lower()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise DataError(f"{path}: malformed SHA-256 entry for {name} in {sums}")
            return digest
    raise DataError(f"{path}: checksum file {sums} has no entry for {name}")


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read file: {e}") from None
    if not path.name.endswith(".gz"):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path}: truncated gzip stream ({len(raw)} bytes on disk)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataError(f"{path}: not a valid gzip file: {e}") from None


def _parse_idx(path: Path, data: bytes) -> np.ndarray:
    if len(data) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(
            f"{path}: bad IDX magic 0x{data[:4].hex()} (expected 0x000008nn, unsigned bytes)")
    ndims = data[3]
    if ndims < 1:
        raise DataError(f"{path}: bad IDX header: 0 dimensions")
    header = 4 + 4 * ndims
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndims, offset=4))
    if any(d == 0 for d in dims):
        raise DataError(f"{path}: bad IDX dims {dims}")
    need = math.prod(dims)
    have = len(data) - header
    if have < need:
        raise DataError(f"{path}: truncated IDX data: dims {dims} need {need} bytes, file has {have}")
    if have > need:
        raise DataError(f"{path}: IDX data has {have - need} trailing bytes beyond dims {dims}")
    arr = np.frombuffer(data, dtype=np.uint8, count=need, offset=header).reshape(dims)
    arr.flags.writeable = False
    return arr


def load_idx(path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw), verify its SHA-256, return uint8 array.

    The result is cached per resolved path and is read-only.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing") from None
    except OSError as e:
        raise DataError(f"{path}: cannot stat file: {e}") from None
    key = path.resolve()
    sig = (st.st_mtime_ns, st.st_size)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]

    expected = _expected_sha256(path)
    data = _read_bytes(path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise DataError(
            f"{path}: SHA-256 mismatch of decompressed data: expected "
            f"{expected[:_HEX_PREFIX]}..., got {actual[:_HEX_PREFIX]}...")
    arr = _parse_idx(path, data)
    _CACHE[key] = (sig, arr)
    return arr


# --------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """One data split: ``x`` float32 (n, d) in [0, 1], ``y`` int64 (n,)."""

    x: np.ndarray
    y: np.ndarray
    name: str

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def side(self) -> int:
        """Image side length, ``int(sqrt(d))``."""
        return math.isqrt(int(self.x.shape[1]))


def _dataset_dir(dataset: str, data_dir) -> Path:
    if dataset == "mnist":
        return Path(data_dir) if data_dir is not None else MNIST_DIR
    # fashion-mnist: an explicit directory is authoritative; otherwise search.
    if data_dir is not None:
        return Path(data_dir)
    candidates = []
    env = os.environ.get(FASHION_ENV)
    if env:
        candidates.append(Path(env))
    candidates.append(_SYSTEM_FASHION_DIR)
    for c in candidates:
        if c.is_dir():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"fashion-mnist: no data directory found (pass data_dir, set {FASHION_ENV}, "
        f"or install dataset-fashion-mnist); tried: {tried}")


def _find_file(directory: Path, name: str) -> Path:
    gz = directory / f"{name}.gz"
    if gz.is_file():
        return gz
    raw = directory / name
    if raw.is_file():
        return raw
    raise DataError(f"{gz}: file is missing (no uncompressed {raw} either)")


def _check_dataset(dataset) -> str:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r} (expected one of {', '.join(DATASETS)})")
    return dataset


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _load_pair(directory: Path, part: str) -> tuple[np.ndarray, np.ndarray, Path, Path]:
    img_name, lbl_name = _FILES[part]
    ip, lp = _find_file(directory, img_name), _find_file(directory, lbl_name)
    images, labels = load_idx(ip), load_idx(lp)
    if images.ndim != 3:
        raise DataError(f"{ip}: expected 3-D images (n, rows, cols), got dims {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{lp}: expected 1-D labels, got dims {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{lp}: {labels.shape[0]} labels but {ip.name} has {images.shape[0]} images")
    if labels.size and int(labels.max()) > 9:
        raise DataError(f"{lp}: label {int(labels.max())} out of range 0-9")
    return images, labels, ip, lp


def load_split(dataset="mnist", split="train", size=None, downsample=None,
               data_dir=None) -> Split:
    """Load one split ("train" 50k / "validation" 10k / "test" 10k).

    ``size`` keeps the first ``size`` examples; ``downsample`` is the target
    image side (must divide 28; average pooling in float32 on pixel/255).
    """
    _check_dataset(dataset)
    if split not in SPLITS:
        raise DataError(f"bad split {split!r} (expected one of {', '.join(SPLITS)})")
    if size is not None and (not _is_int(size) or size < 1):
        raise DataError(f"bad size {size!r}: must be a positive integer or None")
    if downsample is not None and (not _is_int(downsample) or downsample < 1
                                   or 28 % downsample != 0):
        raise DataError(f"bad downsample {downsample!r}: target side must divide 28 (e.g. 14, 7)")

    directory = _dataset_dir(dataset, data_dir)
    images, labels, ip, _ = _load_pair(directory, "test" if split == "test" else "train")
    n_all = images.shape[0]
    if split == "train":
        lo, hi = 0, min(N_TRAIN, n_all)
    elif split == "validation":
        if n_all <= N_TRAIN:
            raise DataError(f"{ip}: only {n_all} training images, need more than {N_TRAIN} "
                            "for a validation split")
        lo, hi = N_TRAIN, n_all
    else:
        lo, hi = 0, n_all
    available = hi - lo
    if size is not None:
        if size > available:
            raise DataError(f"bad size {size}: {dataset}/{split} has only {available} examples")
        hi = lo + size

    side_r, side_c = images.shape[1], images.shape[2]
    x = images[lo:hi].astype(np.float32)
    x /= np.float32(255.0)
    if downsample is not None and downsample != side_r:
        if side_r != side_c or side_r % downsample != 0:
            raise DataError(
                f"bad downsample {downsample}: does not divide image size {side_r}x{side_c} of {ip}")
        f = side_r // downsample
        x = x.reshape(-1, downsample, f, downsample, f).mean(axis=(2, 4), dtype=np.float32)
    x = np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float32)
    y = labels[lo:hi].astype(np.int64)
    return Split(x=x, y=y, name=f"{dataset}/{split}")


def one_hot(labels, n_classes=10, dtype=np.float32) -> np.ndarray:
    """One-hot encode integer ``labels`` of shape (...,) to (..., n_classes)."""
    labels = np.asarray(labels)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"one_hot: labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"one_hot: labels must be in [0, {n_classes}), got range "
            f"[{labels.min()}, {labels.max()}]")
    out = np.zeros(labels.shape + (n_classes,), dtype=dtype)
    np.put_along_axis(out, labels[..., None], 1, axis=-1)
    return out


def verify(dataset="mnist", data_dir=None) -> list[str]:
    """Load and checksum-verify all four files, with the checks training makes (image
    and label dimensions, one label per image, labels 0-9); one summary line each."""
    directory = _dataset_dir(_check_dataset(dataset), data_dir)
    lines = []
    for part in ("train", "test"):
        images, labels, ip, lp = _load_pair(directory, part)
        for path, arr in ((ip, images), (lp, labels)):
            lines.append(f"{_base_name(path)}: {'x'.join(str(d) for d in arr.shape)} ok")
    return lines
