"""Tests for incremental.data: every format is written here, in tmp_path, in its standard layout."""

from __future__ import annotations

import gc
import gzip
import importlib.util
import os
import pickle
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from energymodel.errors import UserError
from incremental.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ROOT,
    DataError,
    ImageArrays,
    TensorImageDataset,
    cifar_augment,
    class_order,
    dataset_names,
    dataset_stats,
    holdout_split,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_idx_dataset,
    load_imagefolder,
    make_tasks,
    parse_task_sizes,
    per_channel_mean_std,
    read_idx,
    subsample,
)
from incremental.data import idx as idx_module
from incremental.data import imagefolder as imagefolder_module
from incremental.data.cifar import load_pickle

# --------------------------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file: magic 00 00 <type> <ndim>, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> Path:
    data = idx_bytes(array, type_code)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def make_idx_set(
    folder: Path, n: int, gz: bool, seed: int = 0, prefix: str = "t10k"
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return images, labels


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """N x 3 x 32 x 32 -> N x 3072 rows: red plane, green plane, blue plane, each row-major."""
    rows = np.empty((len(images), 3072), dtype=np.uint8)
    for i, img in enumerate(images):
        for c in range(3):
            for y in range(32):
                rows[i, c * 1024 + y * 32 : c * 1024 + y * 32 + 32] = img[c, y]
    return rows


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle (protocol 2) wrote for the original CIFAR files.

    ``str`` and ``bytes`` become 8-bit strings (SHORT_BINSTRING / BINSTRING) and numpy globals are named
    ``numpy.core.multiarray`` as numpy 1.x named them.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_string(self, obj: str | bytes) -> None:
        raw = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<I", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_string
    dispatch[bytes] = save_py2_string

    def save_global(self, obj, name=None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__name__}\n".encode())
        self.memoize(obj)


def dump(path: Path, obj: object, protocol: int | str = 2) -> None:
    """Pickle ``obj`` to ``path``; protocol "py2" imitates the original Python 2 files."""
    with open(path, "wb") as fh:
        if protocol == "py2":
            Py2Pickler(fh, protocol=2).dump(obj)
        else:
            pickle.dump(obj, fh, protocol=protocol)


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar10(
    parent: Path, per_batch: int = 6, protocol: int | str = "py2", seed: int = 0
) -> dict[str, tuple]:
    """cifar-10-batches-py/ with 5 training batches, test_batch and batches.meta, standard dict keys."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out: dict[str, tuple] = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": cifar_rows(images),
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        dump(folder / name, batch, protocol)
        out[name] = (images, labels)
    meta = {
        b"num_cases_per_batch": per_batch,
        b"label_names": [n.encode() for n in CIFAR10_NAMES],
        b"num_vis": 3072,
    }
    dump(folder / "batches.meta", meta, protocol)
    return out


def make_cifar100(parent: Path, n: int = 12, seed: int = 1) -> dict[str, tuple]:
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("train", "test"):
        images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        coarse = [f // 5 for f in fine]
        batch = {
            b"filenames": [b"x.png"] * n,
            b"batch_label": split.encode(),
            b"fine_labels": fine,
            b"coarse_labels": coarse,
            b"data": cifar_rows(images),
        }
        dump(folder / split, batch, "py2")
        out[split] = (images, fine, coarse)
    meta = {
        b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)],
    }
    dump(folder / "meta", meta, "py2")
    return out


def make_imagefolder(root: Path, ext: str = "png", per_class: int = 3, side: int = 8, seed: int = 0) -> dict:
    """root/train/<class>/<files> for classes 'cat', 'ant', 'bee' (so sorting matters)."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {}
    for cls in ("cat", "ant", "bee"):
        folder = root / "train" / cls
        folder.mkdir(parents=True)
        written[cls] = []
        for i in range(per_class):
            if ext == "jpg":  # smooth images so that JPEG loses little
                base = rng.integers(40, 216, size=3)
                img = np.broadcast_to(base, (side, side, 3)).astype(np.uint8)
            else:
                img = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
            Image.fromarray(img, "RGB").save(folder / f"{i:03d}.{ext}")
            written[cls].append(img.transpose(2, 0, 1))
    return written


def tiny_arrays(per_class: list[int], side: int = 4, channels: int = 3, seed: int = 0) -> ImageArrays:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    rng.shuffle(labels)
    images = rng.integers(0, 256, size=(len(labels), channels, side, side), dtype=np.uint8)
    return ImageArrays(images, labels, [f"c{i}" for i in range(len(per_class))], "tiny")


# ------------------------------------------------------------------------------------------ ImageArrays


def test_image_arrays_validation_and_subset():
    a = tiny_arrays([3, 2, 4])
    assert a.num_classes == 3 and a.shape == (3, 4, 4) and len(a) == 9
    assert a.labels.dtype == np.int64
    sub = a.subset([0, 2])
    assert len(sub) == 2 and np.array_equal(sub.images, a.images[[0, 2]]) and sub.class_names == a.class_names
    assert list(a.class_counts()) == [3, 2, 4]
    with pytest.raises(DataError, match="src: label 3 out of range"):
        ImageArrays(a.images, np.full(9, 3), ["a", "b", "c"], "src")
    with pytest.raises(DataError, match="uint8"):
        ImageArrays(a.images.astype(np.float32), a.labels, a.class_names, "src")
    with pytest.raises(DataError, match="9 images but 8 labels"):
        ImageArrays(a.images, a.labels[:8], a.class_names, "src")


def test_tensor_dataset_normalises_and_maps_labels():
    a = tiny_arrays([2, 2], channels=3)
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)
    ds = TensorImageDataset(a, mean, std, label_map={0: 1, 1: 0})
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 4, 4) and y.dtype == torch.int64
    expected = (a.images[0].astype(np.float32) / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[
        :, None, None
    ]
    assert np.allclose(x.numpy(), expected, atol=1e-6)
    assert int(y) == 1 - int(a.labels[0])
    with pytest.raises(ValueError, match="not in the label map"):
        TensorImageDataset(a, mean, std, label_map={0: 0})


def test_cifar_augment_is_seeded_crop_and_flip():
    img = torch.arange(2 * 6 * 6, dtype=torch.float32).view(2, 6, 6) + 1.0
    out1 = [cifar_augment(2, generator=torch.Generator().manual_seed(3))(img) for _ in range(1)]
    aug_a = cifar_augment(2, generator=torch.Generator().manual_seed(3))
    aug_b = cifar_augment(2, generator=torch.Generator().manual_seed(3))
    seq_a = [aug_a(img) for _ in range(20)]
    seq_b = [aug_b(img) for _ in range(20)]
    assert all(torch.equal(p, q) for p, q in zip(seq_a, seq_b))
    assert torch.equal(out1[0], seq_a[0])
    assert all(t.shape == img.shape for t in seq_a)
    # Some output differs from the input, and every output is a (possibly flipped) shifted window of the
    # zero-padded image.
    assert any(not torch.equal(t, img) for t in seq_a)
    padded = torch.nn.functional.pad(img, (2, 2, 2, 2))
    windows = {(i, j, f): padded[:, i : i + 6, j : j + 6] for i in range(5) for j in range(5) for f in (0, 1)}
    windows = {k: (w.flip(-1) if k[2] else w) for k, w in windows.items()}
    found = [[k for k, w in windows.items() if torch.equal(t, w)] for t in seq_a]
    assert all(len(ks) == 1 for ks in found)  # each output is exactly one (shifted, maybe flipped) window
    offsets = [ks[0] for ks in found]
    assert any(i != j for i, j, _ in offsets) and len({(i, j) for i, j, _ in offsets}) > 3
    assert 0 < sum(f for _, _, f in offsets) < 20


def test_per_channel_mean_std_matches_numpy():
    a = tiny_arrays([5, 5, 5], side=6)
    mean, std = per_channel_mean_std(a, chunk=4)
    x = a.images.astype(np.float64) / 255.0
    assert np.allclose(mean, x.mean(axis=(0, 2, 3)))
    assert np.allclose(std, x.std(axis=(0, 2, 3)))


# ------------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    images, labels = make_idx_set(tmp_path, 20, gz)
    a = load_idx_dataset(tmp_path, kind="fashion-mnist", split="test")
    assert a.images.shape == (20, 1, 28, 28) and a.images.dtype == np.uint8
    assert np.array_equal(a.images[:, 0], images) and np.array_equal(a.labels, labels)
    assert a.class_names == list(FASHION_MNIST_CLASSES) and a.class_names[0] == "T-shirt/top"
    m = load_idx_dataset(tmp_path, kind="mnist", split="test")
    assert m.class_names == [str(d) for d in range(10)]


def test_read_idx_other_dtypes(tmp_path):
    arr = np.array([[1, -2, 300], [40000, -5, 6]], dtype=np.int32)
    out = read_idx(write_idx(tmp_path / "a.idx", arr, 0x0C))
    assert out.dtype == np.int32 and np.array_equal(out, arr)
    f = np.array([1.5, -2.25], dtype=np.float64)
    assert np.array_equal(read_idx(write_idx(tmp_path / "f.idx.gz", f, 0x0E)), f)


def test_idx_corruption_names_file(tmp_path):
    make_idx_set(tmp_path, 20, gz=True)
    img = tmp_path / "t10k-images-idx3-ubyte.gz"
    lab = tmp_path / "t10k-labels-idx1-ubyte.gz"
    good = gzip.decompress(img.read_bytes())

    img.write_bytes(gzip.compress(good[:1016]))  # header + 1000 bytes of the 15680 announced
    with pytest.raises(DataError) as err:
        load_idx_dataset(tmp_path, split="test")
    msg = str(err.value)
    assert str(img) in msg and "expected 15680 bytes of image data" in msg and "found 1000" in msg
    assert "\n" not in msg

    img.write_bytes(gzip.compress(b"\x08\x03\x08\x03" + good[4:]))
    with pytest.raises(DataError, match="bad magic number") as err:
        load_idx_dataset(tmp_path, split="test")
    assert str(img) in str(err.value)

    img.write_bytes(gzip.compress(good[:2] + b"\x07" + good[3:]))
    with pytest.raises(DataError, match="unknown data type code 0x07"):
        load_idx_dataset(tmp_path, split="test")

    img.write_bytes(gzip.compress(good)[:100])  # truncated gzip stream
    with pytest.raises(DataError, match="bad gzip stream") as err:
        load_idx_dataset(tmp_path, split="test")
    assert str(img) in str(err.value)

    img.write_bytes(good)  # not gzip despite .gz
    with pytest.raises(DataError, match="not a gzip stream"):
        load_idx_dataset(tmp_path, split="test")

    img.write_bytes(gzip.compress(good + b"\x00"))  # one byte too many
    with pytest.raises(DataError, match="found 15681"):
        load_idx_dataset(tmp_path, split="test")

    img.write_bytes(gzip.compress(good))
    write_idx(lab, np.zeros(19, dtype=np.uint8))
    with pytest.raises(DataError, match="20 images") as err:
        load_idx_dataset(tmp_path, split="test")
    assert str(lab) in str(err.value)

    write_idx(lab, np.full(20, 10, dtype=np.uint8))
    with pytest.raises(DataError, match="label 10 out of range") as err:
        load_idx_dataset(tmp_path, split="test")
    assert str(lab) in str(err.value)

    lab.unlink()
    with pytest.raises(DataError, match="missing IDX file") as err:
        load_idx_dataset(tmp_path, split="test")
    assert "t10k-labels-idx1-ubyte" in str(err.value)


def test_fashion_default_root_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(idx_module, "FASHION_MNIST_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as err:
        load_idx_dataset(None, "fashion-mnist", "test")
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-root" in msg and "nowhere" in msg
    with pytest.raises(DataError, match="--data-root"):
        load_idx_dataset(None, "mnist", "test")


@pytest.mark.skipif(
    not os.path.isdir(FASHION_MNIST_ROOT), reason="Debian package dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_test_split():
    a = load_idx_dataset(None, "fashion-mnist", "test")
    assert a.images.shape == (10000, 1, 28, 28)
    assert list(np.bincount(a.labels, minlength=10)) == [1000] * 10


# ----------------------------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("protocol", ["py2", 2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_round_trip(tmp_path, protocol):
    written = make_cifar10(tmp_path, protocol=protocol)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        train = load_cifar10(root, "train")
        assert train.images.shape == (30, 3, 32, 32) and train.class_names == CIFAR10_NAMES
        expected = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
        assert np.array_equal(train.images, expected)
        assert train.labels.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
        test = load_cifar10(root, "test")
        assert np.array_equal(test.images, written["test_batch"][0])
        assert test.labels.tolist() == written["test_batch"][1]


def test_cifar_row_layout_is_rgb_planes(tmp_path):
    """Pixel (c, y, x) of an image is byte c*1024 + y*32 + x of its row (checked without cifar_rows)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    row = (np.arange(3072) % 251).astype(np.uint8)[None, :]
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        dump(folder / name, {b"data": row, b"labels": [7]})
    dump(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES]})
    img = load_cifar10(tmp_path, "test").images[0]
    assert (
        img[0, 0, 1] == 1
        and img[0, 1, 0] == 32
        and img[1, 0, 0] == 1024 % 251
        and img[2, 31, 31] == 3071 % 251
    )


def test_cifar100_fine_and_coarse(tmp_path):
    written = make_cifar100(tmp_path)
    fine = load_cifar100(tmp_path, "train")
    assert fine.num_classes == 100 and fine.class_names[3] == "fine03"
    assert np.array_equal(fine.images, written["train"][0]) and fine.labels.tolist() == written["train"][1]
    coarse = load_cifar100(tmp_path / "cifar-100-python", "test", label_type="coarse")
    assert coarse.num_classes == 20 and coarse.labels.tolist() == written["test"][2]


def test_cifar_corruption_names_file(tmp_path):
    make_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    batch3 = folder / "data_batch_3"
    good = batch3.read_bytes()

    batch3.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt CIFAR file") as err:
        load_cifar10(tmp_path, "train")
    assert str(batch3) in str(err.value) and "\n" not in str(err.value)

    batch3.write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match="corrupt CIFAR file") as err:
        load_cifar10(tmp_path, "train")
    assert str(batch3) in str(err.value)

    dump(batch3, {b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match=r"'data' must be N x 3072 uint8") as err:
        load_cifar10(tmp_path, "train")
    assert str(batch3) in str(err.value)

    dump(batch3, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
    with pytest.raises(DataError, match="label 10 out of range 0..9"):
        load_cifar10(tmp_path, "train")

    dump(batch3, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})
    with pytest.raises(DataError, match="2 images but 1 labels"):
        load_cifar10(tmp_path, "train")

    dump(batch3, [1, 2, 3])
    with pytest.raises(DataError, match="expected a dict"):
        load_cifar10(tmp_path, "train")

    batch3.unlink()
    with pytest.raises(DataError, match="missing CIFAR file") as err:
        load_cifar10(tmp_path, "train")
    assert str(batch3) in str(err.value)

    with pytest.raises(DataError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere", "train")
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="missing CIFAR file .*batches.meta"):
        load_cifar10(tmp_path / "other", "test")


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    dump(path, {b"data": _Evil(str(target))})
    with pytest.raises(DataError, match="refusing to unpickle") as err:
        load_pickle(path)
    assert str(path) in str(err.value) and "mkdir" in str(err.value)
    assert not target.exists()
    # the protocol-2 bytes helper only encodes latin-1, nothing else
    path.write_bytes(pickle.dumps({b"k": b"\x00\xff"}, protocol=2))
    assert load_pickle(path) == {b"k": b"\x00\xff"}


# ----------------------------------------------------------------------------------------- ImageFolder


def test_imagefolder_png_round_trip_exact(tmp_path):
    written = make_imagefolder(tmp_path, "png")
    a = load_imagefolder(tmp_path, "train", progress=False)
    assert a.class_names == ["ant", "bee", "cat"]  # sorted folder names -> label ids
    assert a.images.shape == (9, 3, 8, 8) and a.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    expected = np.stack(written["ant"] + written["bee"] + written["cat"])
    assert np.array_equal(a.images, expected)
    grey = load_imagefolder(tmp_path, "train", mode="L", progress=False)
    assert grey.shape == (1, 8, 8)
    pil_grey = np.asarray(Image.fromarray(written["bee"][1].transpose(1, 2, 0)).convert("L"))
    assert np.array_equal(grey.images[4, 0], pil_grey)


def test_imagefolder_jpeg_approximate_and_resize(tmp_path):
    written = make_imagefolder(tmp_path, "jpg", side=16)
    a = load_imagefolder(tmp_path, "train", progress=False)
    expected = np.stack(written["ant"] + written["bee"] + written["cat"]).astype(int)
    assert np.abs(a.images.astype(int) - expected).mean() < 3.0
    small = load_imagefolder(tmp_path, "train", size=4, progress=False)
    assert small.shape == (3, 4, 4)
    assert load_imagefolder(tmp_path, "train", size=(4, 6), progress=False).shape == (3, 4, 6)


def test_imagefolder_errors_name_file(tmp_path):
    make_imagefolder(tmp_path, "png")
    odd = tmp_path / "train" / "bee" / "001.png"
    Image.fromarray(np.zeros((5, 8, 3), np.uint8)).save(odd)
    with pytest.raises(DataError, match="pass size= to resize") as err:
        load_imagefolder(tmp_path, "train", progress=False)
    assert str(odd) in str(err.value) and "8x5" in str(err.value)
    assert load_imagefolder(tmp_path, "train", size=8, progress=False).shape == (3, 8, 8)

    bad = tmp_path / "train" / "ant" / "002.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="corrupt image file") as err:
        load_imagefolder(tmp_path, "train", size=8, progress=False)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)

    with pytest.raises(DataError, match="missing ImageFolder split folder"):
        load_imagefolder(tmp_path, "test", progress=False)
    (tmp_path / "empty" / "train" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files"):
        load_imagefolder(tmp_path / "empty", "train", progress=False)
    with pytest.raises(DataError, match="does not exist"):
        load_imagefolder(tmp_path / "nope", "train", progress=False)


def test_imagefolder_cache_hit_stale_and_corrupt(tmp_path, monkeypatch):
    root, cache = tmp_path / "tree", tmp_path / "cache"
    make_imagefolder(root, "png")
    first = load_imagefolder(root, "train", cache_dir=cache, progress=False)
    (cache_file,) = list(cache.glob("*.npz"))

    real_decode = imagefolder_module.decode_image
    calls = []

    def counting_decode(*args, **kw):
        calls.append(args[0])
        return real_decode(*args, **kw)

    monkeypatch.setattr(imagefolder_module, "decode_image", counting_decode)
    hit = load_imagefolder(root, "train", cache_dir=cache, progress=False)
    assert calls == [] and np.array_equal(hit.images, first.images) and hit.class_names == first.class_names
    assert np.array_equal(hit.labels, first.labels) and hit.source == first.source

    # stale: one image replaced (new content, new mtime) -> rebuilt with the new pixels
    changed = root / "train" / "cat" / "000.png"
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(changed)
    os.utime(changed, ns=(10**18, 10**18))
    stale = load_imagefolder(root, "train", cache_dir=cache, progress=False)
    assert len(calls) == 9 and (stale.images[6] == 7).all()
    assert list(cache.glob("*.npz")) == [cache_file]  # rewritten in place, no temp files left
    calls.clear()
    assert np.array_equal(
        load_imagefolder(root, "train", cache_dir=cache, progress=False).images, stale.images
    )
    assert calls == []

    # stale: same content, only the modification time changed -> rebuilt
    os.utime(changed, ns=(10**18 + 5, 10**18 + 5))
    load_imagefolder(root, "train", cache_dir=cache, progress=False)
    assert len(calls) == 9
    calls.clear()
    assert np.array_equal(
        load_imagefolder(root, "train", cache_dir=cache, progress=False).images, stale.images
    )
    assert calls == []

    # corrupt cache -> rebuilt
    cache_file.write_bytes(b"PK\x03\x04 not really a zip")
    again = load_imagefolder(root, "train", cache_dir=cache, progress=False)
    assert len(calls) == 9 and np.array_equal(again.images, stale.images)
    calls.clear()
    load_imagefolder(root, "train", cache_dir=cache, progress=False)
    assert calls == []

    # other settings use another cache file
    load_imagefolder(root, "train", cache_dir=cache, mode="L", progress=False)
    assert len(list(cache.glob("*.npz"))) == 2


def test_imagefolder_parallel_matches_serial(tmp_path, monkeypatch):
    monkeypatch.setattr(imagefolder_module, "_CHUNK", 2)
    make_imagefolder(tmp_path, "png", per_class=4)
    serial = load_imagefolder(tmp_path, "train", progress=False)
    parallel = load_imagefolder(tmp_path, "train", workers=2, progress=False)
    assert np.array_equal(serial.images, parallel.images) and np.array_equal(serial.labels, parallel.labels)


# ---------------------------------------------------------------------------------------------- splits


@pytest.mark.parametrize(
    ("spec", "sizes"),
    [
        ("5+5", [5, 5]),
        ("50+10x5", [50, 10, 10, 10, 10, 10]),
        ("2x5", [2, 2, 2, 2, 2]),
        (" 3 + 1x2 ", [3, 1, 1]),
        ("7", [7]),
    ],
)
def test_parse_task_sizes(spec, sizes):
    assert parse_task_sizes(spec) == sizes


@pytest.mark.parametrize("spec", ["", "5+", "+5", "a+b", "5x", "0+5", "5x0", "-1+3", "5+5.5", "5xx2"])
def test_parse_task_sizes_rejects(spec):
    with pytest.raises(UserError) as err:
        parse_task_sizes(spec)
    assert repr(spec) in str(err.value)


def test_class_order():
    assert class_order(5) == [0, 1, 2, 3, 4]
    seeded = class_order(10, seed=1)
    assert sorted(seeded) == list(range(10)) and seeded != list(range(10))
    assert class_order(10, seed=1) == seeded and class_order(10, seed=2) != seeded
    assert class_order(3, order=[2, 0, 1]) == [2, 0, 1]
    for bad in ([0, 0, 1], [0, 1], [1, 2, 3]):
        with pytest.raises(UserError, match="not a permutation"):
            class_order(3, order=bad)


def test_make_tasks_label_maps_and_disjoint_classes():
    train, test = tiny_arrays([4] * 6, seed=1), tiny_arrays([2] * 6, seed=2)
    order = [5, 3, 0, 1, 4, 2]
    tasks = make_tasks(train, test, [2, 3], order)
    assert [t.classes for t in tasks] == [[5, 3], [0, 1, 4]]
    assert tasks[0].label_map == {5: 0, 3: 1} and tasks[1].label_map == {0: 0, 1: 1, 4: 2}
    assert tasks[1].class_names == ["c0", "c1", "c4"]
    assert not set(tasks[0].classes) & set(tasks[1].classes)
    for t in tasks:
        assert set(t.train.labels.tolist()) == set(t.classes) and set(t.test.labels.tolist()) == set(
            t.classes
        )
        assert len(t.train) == 4 * len(t.classes) and len(t.test) == 2 * len(t.classes)
        ds = TensorImageDataset(t.train, (0.5,) * 3, (0.5,) * 3, label_map=t.label_map)
        assert sorted(set(ds.labels.tolist())) == list(range(len(t.classes)))
    # images stay with their labels and in original order
    idx = np.flatnonzero(np.isin(train.labels, [5, 3]))
    assert np.array_equal(tasks[0].train.images, train.images[idx])

    with pytest.raises(UserError, match="need 7 classes"):
        make_tasks(train, test, [5, 2], order)
    with pytest.raises(UserError, match="not a permutation"):
        make_tasks(train, test, [2], [0, 1])
    missing = train.subset(train.labels != 4)
    with pytest.raises(DataError, match=r"class 4 \('c4'\) has no images"):
        make_tasks(missing, test, [6], None)


def test_holdout_split_is_stratified():
    a = tiny_arrays([9, 20, 30, 1, 2])
    train, val = holdout_split(a, 0.3, seed=0)
    assert list(val.class_counts()) == [3, 6, 9, 0, 1]  # round(0.3 n); a lone image stays in train
    assert list(train.class_counts()) == [6, 14, 21, 1, 1]
    # disjoint, together everything: compare images as bytes (they are random, hence distinct)
    keys = {im.tobytes() for im in a.images}
    tk, vk = {im.tobytes() for im in train.images}, {im.tobytes() for im in val.images}
    assert len(keys) == len(a) and not tk & vk and tk | vk == keys
    again_train, again_val = holdout_split(a, 0.3, seed=0)
    assert np.array_equal(again_val.images, val.images)
    assert not np.array_equal(holdout_split(a, 0.3, seed=1)[1].images, val.images)
    with pytest.raises(UserError, match="between 0 and 1"):
        holdout_split(a, 1.0, seed=0)


def test_subsample():
    a = tiny_arrays([10, 3, 6])
    s = subsample(a, 4, seed=0)
    assert list(s.class_counts()) == [4, 3, 4]
    positions = [int(np.flatnonzero((a.images == im).all(axis=(1, 2, 3)))[0]) for im in s.images]
    assert positions == sorted(positions)
    assert subsample(a, None, seed=0) is a
    with pytest.raises(UserError):
        subsample(a, 0, seed=0)


# -------------------------------------------------------------------------------------------- registry


def test_registry_names_and_stats(tmp_path):
    assert set(dataset_names()) == {"fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder", "digits"}
    with pytest.raises(UserError) as err:
        load_dataset("imagenet", None, "train")
    assert "imagenet" in str(err.value) and "cifar100" in str(err.value) and "fashion-mnist" in str(err.value)
    mean, std = dataset_stats("cifar10")
    assert len(mean) == len(std) == 3
    make_imagefolder(tmp_path, "png")
    train = load_dataset("imagefolder", tmp_path, "train", progress=False)
    assert dataset_stats("imagefolder", train) == per_channel_mean_std(train)
    with pytest.raises(UserError, match="training set"):
        dataset_stats("imagefolder")
    with pytest.raises(DataError, match="--data-root"):
        load_dataset("cifar10", None, "train")


def test_registry_loads_each_format(tmp_path):
    make_cifar10(tmp_path / "c10")
    make_cifar100(tmp_path / "c100")
    make_idx_set(tmp_path / "fm", 10, gz=True, prefix="train")
    assert load_dataset("cifar10", tmp_path / "c10", "test").shape == (3, 32, 32)
    assert load_dataset("cifar100", tmp_path / "c100", "train", label_type="coarse").num_classes == 20
    assert len(load_dataset("fashion-mnist", tmp_path / "fm", "train")) == 10
    assert len(load_dataset("mnist", tmp_path / "fm", "train")) == 10


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed")
def test_digits():
    train, test = load_dataset("digits", None, "train"), load_dataset("digits", None, "test")
    assert train.shape == (1, 8, 8) and len(train) + len(test) == 1797
    assert train.images.max() == 255 and train.images.dtype == np.uint8
    assert abs(len(test) - 0.2 * 1797) < 10
    assert set(np.unique(train.images // 1).tolist()) <= {round(v * 255 / 16) for v in range(17)}


# ------------------------------------------------------------- hostile or odd input: one line, bounded


def gzip_of_zeros(path: Path, idx_header: bytes, zero_blocks: int, block: int = 64 << 20) -> int:
    """Write a real gzip file that expands to ``idx_header`` + ``zero_blocks * block`` zero bytes; its size.

    One compressed block of zeros is repeated: each ends with a full flush (byte-aligned, no reference to
    earlier data), so the copies form one valid deflate stream, and 6 GiB take about 6 MB of disk.
    """
    zeros = bytes(block)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; the gzip header and trailer are ours
    first = comp.compress(idx_header) + comp.flush(zlib.Z_FULL_FLUSH)
    middle = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    last = comp.flush()
    crc = zlib.crc32(idx_header)
    for _ in range(zero_blocks):
        crc = zlib.crc32(zeros, crc)
    total = len(idx_header) + zero_blocks * block
    with open(path, "wb") as fh:
        fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # magic, deflate, no flags, mtime 0, OS unknown
        fh.write(first)
        for _ in range(zero_blocks):
            fh.write(middle)
        fh.write(last)
        fh.write(struct.pack("<II", crc, total % 2**32))
    return path.stat().st_size


def test_idx_gzip_bomb_is_refused_in_bounded_memory(tmp_path):
    # Header: 60000 x 28 x 28 uint8 images (47,040,000 bytes); the stream holds 6 GiB of zeros after it.
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    size = gzip_of_zeros(bomb, bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 28, 28), 96)
    assert size < 8 << 20
    with open(bomb, "rb") as fh:  # the first bytes inflate to the header, as a reader sees them
        assert gzip.GzipFile(fileobj=fh).read(16) == bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 28, 28)
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as err:
            read_idx(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(err.value)
    # the trailer says (16 + 6 GiB) mod 2**32, not 16 + 47,040,000: counted a chunk past the header's size
    assert msg == (
        f"corrupt IDX file {bomb}: expected 47040000 bytes of image data (shape 60000x28x28), "
        f"found more than {47040000 + (1 << 20)}"
    )
    assert peak < 16 << 20  # a few 1 MiB chunks, never the 47 MB the header announces, let alone 6 GiB


def test_idx_header_larger_than_the_gzip_can_hold(tmp_path):
    # 10 GiB announced (10 x 1024^3 uint8), 6 GiB inside: the trailer's size mod 2**32 agrees with the
    # header, but a file of about 6 MB cannot inflate to 10 GiB (deflate expands at most 1032-fold).
    lie = tmp_path / "lie.gz"
    size = gzip_of_zeros(lie, bytes([0, 0, 8, 4]) + struct.pack(">4I", 10, 1024, 1024, 1024), 96)
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as err:
            read_idx(lie)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(err.value) == (
        f"corrupt IDX file {lie}: expected 10737418240 bytes of array data (shape 10x1024x1024x1024), "
        f"found a {size}-byte gzip file, which cannot hold that many"
    )
    assert peak < 4 << 20
    # A small lying header: 60000 images announced in a 62-byte file.
    small = write_idx(tmp_path / "small.gz", np.zeros((2, 28, 28), np.uint8))
    data = bytearray(gzip.decompress(small.read_bytes()))
    data[4:8] = struct.pack(">I", 60000)
    small.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DataError, match=r"expected 47040000 bytes .* found a \d+-byte gzip file"):
        read_idx(small)
    # Several gzip members (ISIZE is the last one's): read when they hold exactly what the header says.
    members = tmp_path / "members.gz"
    images = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    whole = idx_bytes(images)
    members.write_bytes(gzip.compress(whole[:100]) + gzip.compress(whole[100:]))
    assert np.array_equal(read_idx(members), images)
    members.write_bytes(gzip.compress(whole[:100]) + gzip.compress(whole[100:-1]))
    with pytest.raises(DataError, match="expected 1568 bytes of image data .*found 1567$"):
        read_idx(members)
    members.write_bytes(gzip.compress(whole)[:17])
    with pytest.raises(DataError, match=r"bad gzip stream \(17 bytes, too short for gzip\)"):
        read_idx(members)
    # Raw files are measured with stat before they are read.
    raw = tmp_path / "raw.idx"
    raw.write_bytes(bytes(data))
    with pytest.raises(DataError, match="expected 47040000 bytes of image data .*found 1568$"):
        read_idx(raw)


def test_read_idx_closes_its_file(tmp_path):
    images, _ = make_idx_set(tmp_path, 3, gz=True)
    make_idx_set(tmp_path / "raw", 3, gz=False)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abc"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)  # an unclosed file warns when it is collected
        assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), images)
        assert np.array_equal(read_idx(tmp_path / "raw" / "t10k-images-idx3-ubyte"), images)
        with pytest.raises(DataError, match="found 3"):
            read_idx(bad)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_data_root_that_is_a_file(tmp_path):
    afile = tmp_path / "data.tar"
    afile.write_bytes(b"x")
    with pytest.raises(DataError) as err:
        load_idx_dataset(afile, "fashion-mnist", "test")
    assert str(err.value) == (
        f"fashion-mnist data folder {afile} is a file, not a folder (pass the folder that holds the IDX files)"
    )
    with pytest.raises(DataError) as err:
        load_idx_dataset(tmp_path / "nowhere", "mnist", "test")
    assert "nowhere does not exist" in str(err.value)
    with pytest.raises(DataError) as err:
        load_cifar10(afile, "train")
    assert str(err.value) == f"CIFAR data folder {afile} is a file, not a folder"
    with pytest.raises(DataError) as err:
        load_imagefolder(afile, "train", progress=False)
    assert str(err.value) == f"ImageFolder root {afile} is a file, not a folder"
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "train").write_bytes(b"x")
    with pytest.raises(DataError) as err:
        load_imagefolder(tmp_path / "tree", "train", progress=False)
    assert str(err.value) == f"ImageFolder split folder {tmp_path / 'tree' / 'train'} is a file, not a folder"


def test_unreadable_files_say_so(tmp_path, monkeypatch):
    # Tests run as root, for whom chmod 000 changes nothing: the OS's refusal is raised where it would be.
    make_idx_set(tmp_path, 4, gz=True)
    make_imagefolder(tmp_path / "tree", "png", per_class=1)

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_file", denied)
    with pytest.raises(DataError) as err:
        load_idx_dataset(tmp_path, split="test")
    assert str(err.value) == f"cannot read IDX file {tmp_path / 't10k-images-idx3-ubyte'}: Permission denied"
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path, "test")
    assert str(err.value) == f"cannot read CIFAR folder {tmp_path / 'cifar-10-batches-py'}: Permission denied"
    monkeypatch.undo()

    monkeypatch.setattr(Image, "open", lambda path, *a, **k: denied(path))
    with pytest.raises(DataError) as err:
        load_imagefolder(tmp_path / "tree", "train", progress=False)
    assert str(err.value) == f"cannot read image file {tmp_path / 'tree/train/ant/000.png'}: Permission denied"


def test_imagefolder_larger_than_memory_is_refused(tmp_path, monkeypatch):
    make_imagefolder(tmp_path, "png", per_class=3, side=8)  # 9 images of 3 x 8 x 8: 1728 bytes in all
    monkeypatch.setattr(imagefolder_module, "_memory_bytes", lambda: 1727)
    with pytest.raises(DataError) as err:
        load_imagefolder(tmp_path, "train", progress=False)
    assert str(err.value) == (
        f"9 images of 8x8x3 in ImageFolder {tmp_path / 'train'} need 0.0 GiB, more than this machine's "
        "0.0 GiB: pass size= to resize"
    )
    monkeypatch.setattr(imagefolder_module, "_memory_bytes", lambda: 1728)
    assert len(load_imagefolder(tmp_path, "train", progress=False)) == 9


def test_parse_task_sizes_bounds_before_building_lists():
    with pytest.raises(UserError) as err:
        parse_task_sizes("1+1x999999999999")
    assert str(err.value) == "bad task sizes '1+1x999999999999': more than 100000 classes in all"
    with pytest.raises(UserError) as err:
        parse_task_sizes("50000x2+1")
    assert str(err.value) == "bad task sizes '50000x2+1': 100001 classes in all, more than 100000"
    assert parse_task_sizes("50000x2") == [50000, 50000]
    with pytest.raises(UserError) as err:  # int() refuses strings of more than 4300 digits
        parse_task_sizes("1" * 5000)
    assert str(err.value) == f"bad task sizes {'1' * 50!r}... (5000 characters): more than 100000 classes in all"


def test_cli_task_sizes_too_large_is_one_line(capsys):
    from incremental.cli import main

    code = main(["run", "--dataset", "digits", "--model", "smallcnn", "--tasks", "1+1x999999999999"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "more than 100000 classes in all" in err
