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
from typing import BinaryIO

import numpy as np

from incremental.data.arrays import DataError, ImageArrays, folder_problem, one_line

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
#: Deflate's largest expansion: one compressed byte never stands for more than 1032 bytes of output.
_DEFLATE_MAX_RATIO = 1032
_CHUNK = 1 << 20  # bytes decompressed per step


def _open_stream(path: Path) -> tuple[BinaryIO, BinaryIO, int | None, int]:
    """``(open file, readable stream of its IDX bytes, gzip ISIZE or None when not gzipped, file size)``.

    The stream is the file itself or a ``GzipFile`` over it (which does not close it: close both).

    ISIZE, the gzip trailer's last 4 bytes (little-endian), is the uncompressed size modulo 2**32 of the
    file's last gzip member (of the whole file for the usual single-member ``.gz``).
    """
    try:
        raw = open(path, "rb")  # returned open: the caller closes it
    except FileNotFoundError:
        raise DataError(f"missing IDX file {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc.strerror or one_line(exc)}") from None
    try:
        size = os.fstat(raw.fileno()).st_size
        magic = raw.read(2)
        if magic != _GZIP_MAGIC:
            if path.suffix == ".gz":
                raise DataError(f"corrupt IDX file {path}: named .gz but not a gzip stream")
            raw.seek(0)
            return raw, raw, None, size
        if size < 18:  # 10-byte gzip header + 8-byte trailer
            raise DataError(f"corrupt IDX file {path}: bad gzip stream ({size} bytes, too short for gzip)")
        raw.seek(-4, os.SEEK_END)
        isize = int.from_bytes(raw.read(4), "little")
        raw.seek(0)
        return raw, gzip.GzipFile(fileobj=raw, mode="rb"), isize, size
    except OSError as exc:
        raw.close()
        raise DataError(f"cannot read IDX file {path}: {exc.strerror or one_line(exc)}") from None
    except BaseException:
        raw.close()
        raise


def _read_some(stream: BinaryIO, out: memoryview, path: Path) -> int:
    """Fill ``out`` from ``stream`` until it is full or the stream ends; the number of bytes read."""
    done = 0
    try:
        while done < len(out):
            n = stream.readinto(out[done : done + _CHUNK])
            if not n:
                break
            done += n
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"corrupt IDX file {path}: bad gzip stream ({one_line(exc)})") from None
    return done


def _count_rest(stream: BinaryIO, limit: int, path: Path) -> int:
    """Decompress and discard up to ``limit`` bytes, in chunks; how many there were (at most ``limit``)."""
    buf = memoryview(bytearray(min(_CHUNK, max(limit, 1))))
    total = 0
    while total < limit:
        want = min(len(buf), limit - total)
        got = _read_some(stream, buf[:want], path)
        total += got
        if got < want:
            break
    return total


def _read_header(stream: BinaryIO, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """The IDX header: ``(dtype, dims, header length in bytes)``, each part checked."""
    head = bytearray(4)
    got = _read_some(stream, memoryview(head), path)
    if got < 4:
        raise DataError(f"corrupt IDX file {path}: {got} bytes, too short for a header")
    if head[0] != 0 or head[1] != 0:
        raise DataError(f"corrupt IDX file {path}: bad magic number 0x{head.hex()} (must start 0x0000)")
    type_code, ndim = head[2], head[3]
    dtype = _IDX_DTYPES.get(type_code)
    if dtype is None:
        raise DataError(f"corrupt IDX file {path}: unknown data type code 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"corrupt IDX file {path}: zero dimensions")
    header = 4 + 4 * ndim
    sizes = bytearray(4 * ndim)
    got = _read_some(stream, memoryview(sizes), path)
    if got < len(sizes):
        raise DataError(f"corrupt IDX file {path}: truncated header ({4 + got} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(bytes(sizes), dtype=">u4"))
    return dtype, dims, header


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (raw or gzipped) into a native-endian numpy array.

    Raises :class:`DataError` naming the file when it is missing, not gzip despite a ``.gz`` name, has a
    bad magic number or type code, or holds more or fewer bytes than its header announces.

    The header's sizes are checked against the file before the data is read, so a corrupt or hostile
    file cannot make it decompress gigabytes: with ``H`` header bytes and ``E = prod(dims) * itemsize``
    data bytes, a raw file must be ``H + E`` bytes long; a gzipped one must satisfy
    ``H + E <= 1032 * (compressed size)`` (deflate's largest expansion) and, in its trailer,
    ``ISIZE == (H + E) mod 2**32``. Only then are the ``E`` bytes decompressed, chunk by chunk, into one
    buffer of ``E`` bytes (plus one to see that the stream ends there); when the trailer disagrees, at most
    ``E`` + 1 MiB bytes are decompressed, a chunk at a time, to say how many there are (a file of several
    gzip members, whose ISIZE is the last member's, is read when it holds exactly ``E``).
    """
    path = Path(path)
    raw, stream, isize, file_size = _open_stream(path)
    with raw, stream:
        dtype, dims, header = _read_header(stream, path)
        expected = int(np.prod(dims, dtype=object)) * dtype.itemsize
        what = "image" if len(dims) == 3 else "label" if len(dims) == 1 else "array"
        shape = "x".join(map(str, dims))

        def wrong(found: str) -> DataError:
            return DataError(
                f"corrupt IDX file {path}: expected {expected} bytes of {what} data (shape {shape}), found {found}"
            )

        if isize is None:
            if file_size - header != expected:
                raise wrong(str(file_size - header))
        else:
            if header + expected > _DEFLATE_MAX_RATIO * file_size:
                raise wrong(f"a {file_size}-byte gzip file, which cannot hold that many")
            if isize != (header + expected) % 2**32:
                # The trailer disagrees: count the data, never holding more than a chunk (counting up to a
                # chunk past E gives the exact size of a small excess). Exactly E bytes means several gzip
                # members, ISIZE being the last one's: then read it again.
                found = _count_rest(stream, expected + _CHUNK, path)
                if found != expected:
                    raise wrong(f"more than {found}" if found == expected + _CHUNK else str(found))
                stream.seek(header)
        try:
            data = bytearray(expected)
        except MemoryError:
            raise DataError(f"IDX file {path} holds {expected / 2**30:.1f} GiB of {what} data (shape {shape}): "
                            "the data does not fit in this process's memory") from None
        found = _read_some(stream, memoryview(data), path)
        if found < expected:
            raise wrong(str(found))
        if isize is not None and _count_rest(stream, 1, path):
            raise wrong(f"more than {expected}")
    array = np.frombuffer(data, dtype=dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def find_idx_file(folder: Path, stem: str) -> Path:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists (raw preferred), also under ``raw/``.

    Raises :class:`DataError` naming the missing ``.gz`` file when neither exists.
    """
    for base in (folder, folder / "raw"):
        for name in (stem, stem + ".gz"):
            candidate = base / name
            try:
                if candidate.is_file():
                    return candidate
            except OSError as exc:  # e.g. a folder without search permission
                raise DataError(f"cannot read IDX file {candidate}: {exc.strerror or one_line(exc)}") from None
    raise DataError(f"missing IDX file {folder / (stem + '.gz')} (or uncompressed {stem})")


def _resolve_root(root: str | os.PathLike | None, kind: str) -> Path:
    if root is not None:
        path = Path(root).expanduser()
        problem = folder_problem(path)
        if problem is not None:
            raise DataError(f"{kind} data folder {path} {problem} (pass the folder that holds the IDX files)")
        return path
    if kind != "fashion-mnist":
        raise DataError(f"no data folder for {kind}: pass --data-root pointing at its IDX files")
    path = Path(FASHION_MNIST_ROOT)
    if folder_problem(path) is not None:
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
