"""Tests for eqprop.model.data (bundled MNIST, error paths, Fashion-MNIST)."""

import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from eqprop.model import data
from eqprop.model.data import DataError, MNIST_DIR, Split, load_idx, load_split, one_hot, verify

# ../shared beside the repository (the CI layout), else the one of this machine.
FASHION_DIR = next((d for d in (Path(__file__).resolve().parents[2] / "shared/data/fashion-mnist",
                                Path("/work/shared/data/fashion-mnist")) if d.is_dir()),
                   Path("/work/shared/data/fashion-mnist"))
SUMS = "SHA256SUMS.uncompressed"
LABELS = "t10k-labels-idx1-ubyte"


@pytest.fixture(scope="module")
def train():
    return load_split("mnist", "train")


@pytest.fixture(scope="module")
def validation():
    return load_split("mnist", "validation")


@pytest.fixture(scope="module")
def test_split():
    return load_split("mnist", "test")


def _raises(fn, *needles):
    """Call fn, expect a one-line DataError containing every needle."""
    with pytest.raises(DataError) as ei:
        fn()
    msg = str(ei.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert msg.strip(), "empty message"
    for n in needles:
        assert str(n) in msg, f"{n!r} not in {msg!r}"
    return msg


def _write_sums(directory, entries):
    (directory / SUMS).write_text(
        "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in entries.items()))


def _copy_bundle(dst, names=None, sums=True):
    for p in MNIST_DIR.iterdir():
        if p.name == SUMS:
            if sums:
                shutil.copy(p, dst / p.name)
        elif names is None or p.name in names:
            shutil.copy(p, dst / p.name)
    return dst


# ---------------------------------------------------------------- bundled MNIST

def test_split_shapes_dtypes_ranges(train, validation, test_split):
    for s, n in ((train, 50_000), (validation, 10_000), (test_split, 10_000)):
        assert isinstance(s, Split)
        assert len(s) == n
        assert s.x.shape == (n, 784) and s.x.dtype == np.float32
        assert s.y.shape == (n,) and s.y.dtype == np.int64
        assert s.side == 28
        assert float(s.x.min()) == 0.0 and float(s.x.max()) == 1.0
        assert s.y.min() == 0 and s.y.max() == 9
    assert train.name == "mnist/train"
    assert validation.name == "mnist/validation"
    assert test_split.name == "mnist/test"


def test_validation_is_last_10000_training_images(validation, train):
    imgs = load_idx(MNIST_DIR / "train-images-idx3-ubyte.gz")
    lbls = load_idx(MNIST_DIR / "train-labels-idx1-ubyte.gz")
    assert imgs.shape == (60_000, 28, 28) and imgs.dtype == np.uint8
    assert lbls.shape == (60_000,) and lbls.dtype == np.uint8
    want = imgs[50_000:].reshape(10_000, 784)
    assert np.array_equal(np.rint(validation.x * 255).astype(np.uint8), want)
    assert np.array_equal(validation.y, lbls[50_000:])
    assert np.array_equal(np.rint(train.x * 255).astype(np.uint8), imgs[:50_000].reshape(50_000, 784))
    assert np.array_equal(train.y, lbls[:50_000])
    # pixel/255 exactly, row-major flattening
    assert np.array_equal(validation.x[3], imgs[50_003].ravel().astype(np.float32) / np.float32(255))


def test_test_split_is_t10k(test_split):
    imgs = load_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    assert np.array_equal(np.rint(test_split.x * 255).astype(np.uint8), imgs.reshape(10_000, 784))
    assert not np.array_equal(test_split.x, load_split("mnist", "validation").x)


def test_label_histogram(train, validation, test_split):
    for s in (train, validation, test_split):
        counts = np.bincount(s.y, minlength=10)
        assert counts.size == 10 and (counts > 0).all()
        frac = counts / len(s)
        assert frac.min() > 0.07 and frac.max() < 0.13, counts


def test_size_takes_prefix(validation):
    s = load_split("mnist", "validation", size=123)
    assert len(s) == 123 and s.x.shape == (123, 784)
    assert np.array_equal(s.x, validation.x[:123])
    assert np.array_equal(s.y, validation.y[:123])
    assert len(load_split("mnist", "validation", size=10_000)) == 10_000


def test_downsample_14_is_2x2_mean(validation):
    s = load_split("mnist", "validation", size=5, downsample=14)
    assert s.x.shape == (5, 196) and s.x.dtype == np.float32 and s.side == 14
    for i in range(5):
        img = validation.x[i].reshape(28, 28).astype(np.float64)
        want = np.empty((14, 14))
        for r in range(14):
            for c in range(14):
                want[r, c] = (img[2 * r, 2 * c] + img[2 * r, 2 * c + 1]
                              + img[2 * r + 1, 2 * c] + img[2 * r + 1, 2 * c + 1]) / 4
        np.testing.assert_allclose(s.x[i].reshape(14, 14), want, rtol=0, atol=1e-6)


def test_downsample_7_and_28(validation):
    s7 = load_split("mnist", "validation", size=4, downsample=7)
    assert s7.x.shape == (4, 49) and s7.side == 7
    want = validation.x[:4].reshape(4, 7, 4, 7, 4).mean(axis=(2, 4)).reshape(4, 49)
    np.testing.assert_allclose(s7.x, want, atol=1e-6)
    s28 = load_split("mnist", "validation", size=4, downsample=28)
    assert np.array_equal(s28.x, validation.x[:4])


def test_load_idx_cached_and_readonly():
    a = load_idx(MNIST_DIR / f"{LABELS}.gz")
    b = load_idx(str(MNIST_DIR / ".." / "mnist" / f"{LABELS}.gz"))
    assert a is b
    assert not a.flags.writeable


def test_verify_bundled():
    lines = verify("mnist")
    assert lines == [
        "train-images-idx3-ubyte: 60000x28x28 ok",
        "train-labels-idx1-ubyte: 60000 ok",
        "t10k-images-idx3-ubyte: 10000x28x28 ok",
        "t10k-labels-idx1-ubyte: 10000 ok",
    ]


def test_one_hot():
    y = np.array([0, 3, 9, 3])
    oh = one_hot(y)
    assert oh.shape == (4, 10) and oh.dtype == np.float32
    assert np.array_equal(oh.argmax(1), y)
    assert np.array_equal(oh.sum(1), np.ones(4))
    assert oh[1, 3] == 1 and oh[1].sum() == 1
    assert one_hot([1, 2], n_classes=3, dtype=np.int8).tolist() == [[0, 1, 0], [0, 0, 1]]
    assert one_hot([2], n_classes=3, dtype=np.int8).dtype == np.int8
    with pytest.raises(ValueError):
        one_hot([10])
    with pytest.raises(ValueError):
        one_hot([-1])


# ---------------------------------------------------------------- raw files

def test_uncompressed_file_accepted(tmp_path):
    raw = gzip.decompress((MNIST_DIR / f"{LABELS}.gz").read_bytes())
    (tmp_path / LABELS).write_bytes(raw)
    shutil.copy(MNIST_DIR / SUMS, tmp_path / SUMS)
    assert np.array_equal(load_idx(tmp_path / LABELS), load_idx(MNIST_DIR / f"{LABELS}.gz"))


def test_load_split_from_raw_dir(tmp_path):
    for n in ("t10k-images-idx3-ubyte", LABELS):
        (tmp_path / n).write_bytes(gzip.decompress((MNIST_DIR / f"{n}.gz").read_bytes()))
    shutil.copy(MNIST_DIR / SUMS, tmp_path / SUMS)
    s = load_split("mnist", "test", size=50, data_dir=tmp_path)
    assert np.array_equal(s.x, load_split("mnist", "test", size=50).x)


# ---------------------------------------------------------------- error paths

def test_missing_file(tmp_path):
    _copy_bundle(tmp_path, names={"t10k-images-idx3-ubyte.gz"})
    _raises(lambda: load_split("mnist", "test", data_dir=tmp_path), LABELS, str(tmp_path))
    _raises(lambda: load_idx(tmp_path / "nope-idx1-ubyte.gz"), "nope-idx1-ubyte.gz")


def test_truncated_gz(tmp_path):
    blob = (MNIST_DIR / f"{LABELS}.gz").read_bytes()
    (tmp_path / f"{LABELS}.gz").write_bytes(blob[: len(blob) // 2])
    shutil.copy(MNIST_DIR / SUMS, tmp_path / SUMS)
    msg = _raises(lambda: load_idx(tmp_path / f"{LABELS}.gz"), f"{LABELS}.gz")
    assert "truncated" in msg


def test_not_gzip(tmp_path):
    (tmp_path / f"{LABELS}.gz").write_bytes(b"this is not gzip data at all" * 10)
    shutil.copy(MNIST_DIR / SUMS, tmp_path / SUMS)
    msg = _raises(lambda: load_idx(tmp_path / f"{LABELS}.gz"), f"{LABELS}.gz")
    assert "gzip" in msg


def test_corrupt_contents_checksum_mismatch(tmp_path):
    raw = bytearray(gzip.decompress((MNIST_DIR / f"{LABELS}.gz").read_bytes()))
    raw[100] ^= 0x01
    (tmp_path / f"{LABELS}.gz").write_bytes(gzip.compress(bytes(raw)))
    shutil.copy(MNIST_DIR / SUMS, tmp_path / SUMS)
    expected = next(l.split()[0] for l in (MNIST_DIR / SUMS).read_text().splitlines()
                    if l.endswith(LABELS))
    actual = hashlib.sha256(bytes(raw)).hexdigest()
    msg = _raises(lambda: load_idx(tmp_path / f"{LABELS}.gz"),
                  f"{LABELS}.gz", expected[:12], actual[:12])
    assert "mismatch" in msg.lower()


def test_missing_checksum_file(tmp_path):
    shutil.copy(MNIST_DIR / f"{LABELS}.gz", tmp_path / f"{LABELS}.gz")
    _raises(lambda: load_idx(tmp_path / f"{LABELS}.gz"), f"{LABELS}.gz", SUMS)


def test_checksum_file_lacks_entry(tmp_path):
    shutil.copy(MNIST_DIR / f"{LABELS}.gz", tmp_path / f"{LABELS}.gz")
    (tmp_path / SUMS).write_text(
        "".join(l + "\n" for l in (MNIST_DIR / SUMS).read_text().splitlines()
                if not l.endswith(LABELS)))
    _raises(lambda: load_idx(tmp_path / f"{LABELS}.gz"), f"{LABELS}.gz", SUMS)


def test_bad_idx_magic(tmp_path):
    blob = struct.pack(">BBBBI", 0, 0, 0x0D, 1, 3) + b"\x00" * 12  # float type code
    (tmp_path / "bad-idx1-ubyte").write_bytes(blob)
    _write_sums(tmp_path, {"bad-idx1-ubyte": blob})
    msg = _raises(lambda: load_idx(tmp_path / "bad-idx1-ubyte"), "bad-idx1-ubyte")
    assert "magic" in msg


def test_truncated_idx_data_with_valid_checksum(tmp_path):
    blob = struct.pack(">BBBBI", 0, 0, 8, 1, 100) + bytes(50)
    (tmp_path / "short-idx1-ubyte.gz").write_bytes(gzip.compress(blob))
    _write_sums(tmp_path, {"short-idx1-ubyte": blob})
    msg = _raises(lambda: load_idx(tmp_path / "short-idx1-ubyte.gz"), "short-idx1-ubyte.gz")
    assert "truncated" in msg


def test_small_valid_idx(tmp_path):
    payload = np.arange(24, dtype=np.uint8)
    blob = struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 3, 4) + payload.tobytes()
    (tmp_path / "tiny-idx3-ubyte.gz").write_bytes(gzip.compress(blob))
    _write_sums(tmp_path, {"tiny-idx3-ubyte": blob})
    arr = load_idx(tmp_path / "tiny-idx3-ubyte.gz")
    assert arr.dtype == np.uint8 and arr.shape == (2, 3, 4)
    assert np.array_equal(arr, payload.reshape(2, 3, 4))


@pytest.mark.parametrize("bad", [13, 0, 5, 56, -14, 14.0])
def test_bad_downsample(bad):
    _raises(lambda: load_split("mnist", "validation", downsample=bad), repr(bad))


@pytest.mark.parametrize("split,bad", [("validation", 10_001), ("train", 50_001),
                                       ("test", 10_001), ("test", 0), ("test", -5)])
def test_bad_size(split, bad):
    _raises(lambda: load_split("mnist", split, size=bad), str(bad))


def test_bad_split_and_dataset():
    _raises(lambda: load_split("mnist", "valid"), "valid")
    _raises(lambda: load_split("cifar10"), "cifar10")
    _raises(lambda: verify("cifar10"), "cifar10")


def test_fashion_not_found(monkeypatch, tmp_path):
    monkeypatch.delenv(data.FASHION_ENV, raising=False)
    monkeypatch.setattr(data, "_SYSTEM_FASHION_DIR", tmp_path / "absent")
    _raises(lambda: load_split("fashion-mnist", "test"), str(tmp_path / "absent"))


# ---------------------------------------------------------------- Fashion-MNIST

def _need_fashion():
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} not present")


def test_fashion_mnist_loads_and_differs():
    _need_fashion()
    f = load_split("fashion-mnist", "test", data_dir=FASHION_DIR)
    m = load_split("mnist", "test")
    assert f.name == "fashion-mnist/test"
    assert f.x.shape == (10_000, 784) and f.x.dtype == np.float32 and f.y.dtype == np.int64
    assert 0.0 <= f.x.min() and f.x.max() <= 1.0
    assert (np.bincount(f.y, minlength=10) == 1000).all()  # Fashion-MNIST test is balanced
    assert not np.array_equal(f.x, m.x)
    assert abs(float(f.x.mean()) - float(m.x.mean())) > 0.05
    v = load_split("fashion-mnist", "validation", size=100, downsample=14, data_dir=FASHION_DIR)
    assert v.x.shape == (100, 196)


def test_fashion_mnist_found_via_env(monkeypatch, tmp_path):
    _need_fashion()
    monkeypatch.setenv(data.FASHION_ENV, str(FASHION_DIR))
    monkeypatch.setattr(data, "_SYSTEM_FASHION_DIR", tmp_path / "absent")
    f = load_split("fashion-mnist", "test", size=10)
    assert np.array_equal(f.x, load_split("fashion-mnist", "test", size=10,
                                          data_dir=FASHION_DIR).x)


def test_fashion_mnist_found_in_system_dir(monkeypatch):
    _need_fashion()
    monkeypatch.delenv(data.FASHION_ENV, raising=False)
    monkeypatch.setattr(data, "_SYSTEM_FASHION_DIR", FASHION_DIR)
    assert len(load_split("fashion-mnist", "test", size=3)) == 3
