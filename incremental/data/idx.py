"""IDX files (the MNIST / Fashion-MNIST format), raw or gzipped.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then
the values, big-endian, in row-major order. MNIST and Fashion-MNIST ship four of them per data set:
``{train,t10k}-images-idx3-ubyte`` (``N x 28 x 28`` uint8) and ``{train,t10k}-labels-idx1-ubyte`` (``N``
uint8), usually with a ``.gz`` suffix.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .arrays import DataError, ImageArrays, one_line

__all__ = [
    "FASHION_MNIST_ROOT",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "IDX_KINDS",
    "read_idx",
    "find_idx_file",
    "load_idx_dataset",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

#: Data sets in IDX format, with their class names.
IDX_KINDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"fashion-mnist": FASHION_MNIST_CLASSES, "mnist": MNIST_CLASSES}
)

# IDX type byte -> numpy dtype (big-endian where it matters).
_IDX_DTYPES: Mapping[int, np.dtype] = MappingProxyType(
    {
        0x08: np.dtype(np.uint8),
        0x09: np.dtype(np.int8),
        0x0B: np.dtype(">i2"),
        0x0C: np.dtype(">i4"),
        0x0D: np.dtype(">f4"),
        0x0E: np.dtype(">f8"),
    }
)
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is a gzip stream (detected by its magic bytes)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DataError(f"missing IDX file {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc.strerror or one_line(exc)}") from None
    if raw[:2] != _GZIP_MAGIC:
        if path.suffix == ".gz":
            raise DataError(f"corrupt IDX file {path}: named .gz but not a gzip stream")
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"corrupt IDX file {path}: bad gzip stream ({one_line(exc)})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (raw or gzipped) into a native-endian numpy array.

    Raises :class:`DataError` naming the file when it is missing, not gzip despite a ``.gz`` name, has a
    bad magic number or type code, or holds more or fewer bytes than its header announces.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"corrupt IDX file {path}: {len(data)} bytes, too short for a header")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"corrupt IDX file {path}: bad magic number 0x{data[:4].hex()} (must start 0x0000)")
    type_code, ndim = data[2], data[3]
    dtype = _IDX_DTYPES.get(type_code)
    if dtype is None:
        raise DataError(f"corrupt IDX file {path}: unknown data type code 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"corrupt IDX file {path}: zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"corrupt IDX file {path}: truncated header ({len(data)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        what = "image" if ndim == 3 else "label" if ndim == 1 else "array"
        raise DataError(
            f"corrupt IDX file {path}: expected {expected} bytes of {what} data "
            f"(shape {'x'.join(map(str, dims))}), found {found}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def find_idx_file(folder: Path, stem: str) -> Path:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists (raw preferred), also under ``raw/``.

    Raises :class:`DataError` naming the missing ``.gz`` file when neither exists.
    """
    for base in (folder, folder / "raw"):
        for name in (stem, stem + ".gz"):
            candidate = base / name
            if candidate.is_file():
                return candidate
    raise DataError(f"missing IDX file {folder / (stem + '.gz')} (or uncompressed {stem})")


def _resolve_root(root: str | os.PathLike | None, kind: str) -> Path:
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DataError(f"{kind} data folder {path} does not exist")
        return path
    if kind != "fashion-mnist":
        raise DataError(f"no data folder for {kind}: pass --data-root pointing at its IDX files")
    path = Path(FASHION_MNIST_ROOT)
    if not path.is_dir():
        raise DataError(
            f"Fashion-MNIST not found at {path}: run `apt-get install dataset-fashion-mnist` "
            "or pass --data-root pointing at its IDX files"
        )
    return path


def load_idx_dataset(
    root: str | os.PathLike | None = None, kind: str = "fashion-mnist", split: str = "train"
) -> ImageArrays:
    """Load the ``split`` ("train" or "test") of an IDX data set ("fashion-mnist" or "mnist").

    The folder ``root`` (for Fashion-MNIST it defaults to :data:`FASHION_MNIST_ROOT`, where Debian's
    ``dataset-fashion-mnist`` package puts it) must hold ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``,
    each optionally gzipped; a ``raw/`` subfolder (torchvision's layout) is searched too. Images come back
    as ``N x 1 x H x W`` uint8.
    """
    if kind not in IDX_KINDS:
        raise DataError(f"unknown IDX data set {kind!r}: use one of {', '.join(IDX_KINDS)}")
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r} for {kind}: use train or test")
    folder = _resolve_root(root, kind)
    prefix = "train" if split == "train" else "t10k"
    image_path = find_idx_file(folder, f"{prefix}-images-idx3-ubyte")
    label_path = find_idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"corrupt IDX file {image_path}: expected N x H x W uint8 images, got "
            f"{images.ndim}-d {images.dtype}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"corrupt IDX file {label_path}: expected N uint8 labels, got {labels.ndim}-d {labels.dtype}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"IDX files disagree: {image_path} has {len(images)} images, {label_path} has {len(labels)} labels"
        )
    classes = IDX_KINDS[kind]
    if labels.size and int(labels.max()) >= len(classes):
        raise DataError(
            f"corrupt IDX file {label_path}: label {int(labels.max())} out of range 0..{len(classes) - 1}"
        )
    return ImageArrays(images[:, None, :, :], labels.astype(np.int64), list(classes), str(image_path))
