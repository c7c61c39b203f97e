"""ImageFolder trees: ``root/<split>/<class>/<image files>``, decoded with Pillow into :class:`ImageArrays`.

Class folders sorted alphabetically give the label ids; files inside a class are sorted by name. Images
are converted to RGB (or greyscale with ``mode="L"``) and resized only when ``size`` is given; otherwise
all images must share one size.

Decoding tens of thousands of files takes a while, so :func:`load_imagefolder` shows a progress bar, can
decode in a process pool (``workers``) and can keep an on-disk cache (``cache_dir``). The cache is one
``.npz`` per (folder, mode, size), written atomically, holding a key that hashes the sorted file list
with each file's size and modification time; when the key no longer matches (files added, removed or
touched) or the cache cannot be read, it is rebuilt.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from energymodel.atomic import atomic_path
from incremental.data.arrays import DataError, ImageArrays, folder_problem, one_line

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFile",
    "ImageFolderIndex",
    "scan_imagefolder",
    "decode_image",
    "load_imagefolder",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_MODES = {"RGB": 3, "L": 1}
_CACHE_VERSION = 1
_CHUNK = 256  # files per pool task


@dataclass(frozen=True)
class ImageFile:
    """One image file of the tree with its label and the stat data that keys the cache."""

    path: Path
    label: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ImageFolderIndex:
    """The scanned tree of one split: its folder, the sorted class names and every image file."""

    folder: Path
    class_names: list[str]
    files: list[ImageFile]

    def cache_key(self, mode: str, size: tuple[int, int] | None) -> str:
        """SHA-256 over the decoding settings and the sorted (relative path, size, mtime) list."""
        record = {
            "version": _CACHE_VERSION,
            "mode": mode,
            "size": list(size) if size else None,
            "classes": self.class_names,
            "files": [[f.path.relative_to(self.folder).as_posix(), f.size, f.mtime_ns] for f in self.files],
        }
        return hashlib.sha256(json.dumps(record, separators=(",", ":")).encode()).hexdigest()


def _visible_sorted(folder: Path) -> Iterator[os.DirEntry]:
    with os.scandir(folder) as entries:
        yield from sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def scan_imagefolder(root: str | os.PathLike, split: str | None = "train") -> ImageFolderIndex:
    """List ``root/split`` (or ``root`` when ``split`` is None): class folders and their image files.

    Raises :class:`DataError` when the folder is missing, has no class folders, or holds no images.
    """
    root = Path(root).expanduser()
    problem = folder_problem(root)
    if problem is not None:
        raise DataError(f"ImageFolder root {root} {problem}")
    folder = root / split if split else root
    problem = folder_problem(folder)
    if problem == "does not exist":
        raise DataError(f"missing ImageFolder split folder {folder}")
    if problem is not None:
        raise DataError(f"ImageFolder split folder {folder} {problem}")
    try:
        class_dirs = [e for e in _visible_sorted(folder) if e.is_dir()]
        if not class_dirs:
            raise DataError(f"no class folders in ImageFolder {folder}")
        files: list[ImageFile] = []
        for label, entry in enumerate(class_dirs):
            for item in _visible_sorted(Path(entry.path)):
                if item.is_file() and os.path.splitext(item.name)[1].lower() in IMAGE_EXTENSIONS:
                    st = item.stat()
                    files.append(ImageFile(Path(item.path), label, st.st_size, st.st_mtime_ns))
    except OSError as exc:
        raise DataError(f"cannot list ImageFolder {folder}: {exc.strerror or one_line(exc)}") from None
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in ImageFolder {folder}")
    return ImageFolderIndex(folder, [e.name for e in class_dirs], files)


def decode_image(
    path: str | os.PathLike, mode: str = "RGB", size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode one image file to a ``C x H x W`` uint8 array (``size`` is ``(height, width)``).

    Raises :class:`DataError` naming the file when Pillow cannot read or decode it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            img = img.convert(mode)
            if size is not None and img.size != (size[1], size[0]):
                resample = getattr(Image, "Resampling", Image).BILINEAR
                img = img.resize((size[1], size[0]), resample)
            array = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"missing image file {path}") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise DataError(f"cannot read image file {path}: {exc.strerror or one_line(exc)}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"corrupt image file {path}: {one_line(exc)}") from None
    if array.ndim == 2:
        return array[None, :, :]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _decode_chunk(paths: Sequence[Path], mode: str, size: tuple[int, int] | None) -> list[np.ndarray]:
    """Decode several files (one pool task)."""
    return [decode_image(p, mode, size) for p in paths]


def _decoded(
    files: list[ImageFile], mode: str, size: tuple[int, int] | None, workers: int
) -> Iterator[np.ndarray]:
    """Decoded images in file order, serially or from a process pool."""
    paths = [f.path for f in files]
    if workers <= 1 or len(paths) <= _CHUNK:
        for path in paths:
            yield decode_image(path, mode, size)
        return
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers)
    try:
        for batch in pool.map(_decode_chunk, chunks, [mode] * len(chunks), [size] * len(chunks)):
            yield from batch
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _memory_bytes() -> int | None:
    """This machine's physical memory in bytes; None where the system does not tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _allocate(index: ImageFolderIndex, shape: tuple[int, ...]) -> np.ndarray:
    """The ``N x C x H x W`` uint8 array for all images, refused with a one-line DataError when its
    ``N * C * H * W`` bytes exceed the machine's physical memory (or the allocation fails)."""
    need = len(index.files) * int(np.prod(shape))
    memory = _memory_bytes()
    c, h, w = shape
    problem = (
        f"{len(index.files)} images of {w}x{h}x{c} in ImageFolder {index.folder} need {need / 2**30:.1f} GiB"
    )
    if memory is not None and need > memory:
        raise DataError(f"{problem}, more than this machine's {memory / 2**30:.1f} GiB: pass size= to resize")
    try:
        return np.empty((len(index.files), *shape), dtype=np.uint8)
    except MemoryError:
        raise DataError(f"{problem}, more than can be allocated: pass size= to resize") from None


def _decode_all(
    index: ImageFolderIndex, mode: str, size: tuple[int, int] | None, workers: int, progress: bool | None
) -> np.ndarray:
    files = index.files
    out: np.ndarray | None = None
    first: Path | None = None
    bar = tqdm(
        total=len(files),
        unit="img",
        desc=f"decoding {index.folder}",
        disable=None if progress is None else not progress,
        leave=False,
    )
    with bar, contextlib.closing(_decoded(files, mode, size, workers)) as decoded:  # closing stops the pool
        for i, array in enumerate(decoded):
            if out is None:
                out = _allocate(index, array.shape)
                first = files[i].path
            elif array.shape != out.shape[1:]:
                h, w = array.shape[1:]
                raise DataError(
                    f"image {files[i].path} is {w}x{h}, unlike {first} ({out.shape[3]}x{out.shape[2]}): "
                    "pass size= to resize"
                )
            out[i] = array
            bar.update(1)
    assert out is not None  # the index holds at least one file
    return out


def _cache_file(cache_dir: Path, index: ImageFolderIndex, mode: str, size: tuple[int, int] | None) -> Path:
    """One cache file per (folder, mode, size); its content key tells whether it is still current."""
    ident = json.dumps([str(index.folder.resolve()), mode, list(size) if size else None])
    tag = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return cache_dir / f"imagefolder-{index.folder.name}-{tag}.npz"


def _read_cache(path: Path, key: str, source: str) -> ImageArrays | None:
    """The cached arrays when ``path`` exists, is readable and carries ``key``; None otherwise."""
    if not path.is_file():
        return None
    try:
        # Open the file here: np.load leaks its own handle when the archive is corrupt.
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            if str(npz["key"]) != key:
                return None
            return ImageArrays(npz["images"], npz["labels"], [str(n) for n in npz["class_names"]], source)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, DataError):
        return None


def _write_cache(path: Path, key: str, arrays: ImageArrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(
            tmp,
            key=np.array(key),
            images=arrays.images,
            labels=arrays.labels,
            class_names=np.array(arrays.class_names, dtype=str),
        )


def _normalise_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(int(s) <= 0 for s in size):
        raise DataError(f"bad image size {size!r}: give a positive int or (height, width)")
    return (int(size[0]), int(size[1]))


def load_imagefolder(
    root: str | os.PathLike,
    split: str | None = "train",
    *,
    mode: str = "RGB",
    size: int | tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
    progress: bool | None = None,
) -> ImageArrays:
    """Load ``root/split`` (or ``root`` when ``split`` is None) as :class:`ImageArrays`.

    Args:
        root: the tree's top folder.
        split: the subfolder holding the class folders ("train", "test", ...), or None.
        mode: "RGB" (3 channels) or "L" (greyscale, 1 channel).
        size: resize every image to this (an int for square, or ``(height, width)``); when None all images
            must already have one size, else a :class:`DataError` names the first one that differs.
        cache_dir: keep the decoded arrays in an ``.npz`` cache here (created if needed).
        workers: decode in a pool of this many processes (1: in this process).
        progress: show a progress bar (None: only when stderr is a terminal).
    """
    if mode not in _MODES:
        raise DataError(f"unknown image mode {mode!r}: use one of {', '.join(_MODES)}")
    hw = _normalise_size(size)
    index = scan_imagefolder(root, split)
    source = str(index.folder)
    cache_path: Path | None = None
    key = ""
    if cache_dir is not None:
        key = index.cache_key(mode, hw)
        cache_path = _cache_file(Path(cache_dir).expanduser(), index, mode, hw)
        cached = _read_cache(cache_path, key, source)
        if cached is not None:
            return cached
    images = _decode_all(index, mode, hw, workers, progress)
    labels = np.fromiter((f.label for f in index.files), dtype=np.int64, count=len(index.files))
    arrays = ImageArrays(images, labels, index.class_names, source)
    if cache_path is not None:
        _write_cache(cache_path, key, arrays)
    return arrays
