"""CIFAR-10 and CIFAR-100 in their standard "python version" pickle layout.

CIFAR-10 (``cifar-10-batches-py/``): ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
``batches.meta``. CIFAR-100 (``cifar-100-python/``): ``train``, ``test`` and ``meta``. Each batch is a
pickled dict (written by Python 2, so it is read with ``encoding="bytes"`` and its keys are ``bytes``) with
``b"data"``, an ``N x 3072`` uint8 array whose rows hold the red, green and blue 32 x 32 planes in row-major
order, and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` / ``b"coarse_labels"`` (CIFAR-100), lists of ints.

Safety: ``pickle.load`` on an arbitrary file runs any callable the file names, so a doctored "data batch"
could execute code. These files are read with :class:`RestrictedUnpickler`, which resolves only the few
globals that a pickled dict of lists, bytes and numpy arrays needs (numpy's array reconstructors,
``numpy.ndarray``, ``numpy.dtype``, and ``_codecs.encode`` restricted to latin-1, which Python 3's pickle
protocol 2 uses for ``bytes``); anything else is refused with a :class:`DataError` naming the file.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from incremental.data.arrays import DataError, ImageArrays, folder_problem, one_line

__all__ = [
    "CIFAR10_DIR",
    "CIFAR100_DIR",
    "RestrictedUnpickler",
    "load_pickle",
    "find_cifar_dir",
    "load_cifar10",
    "load_cifar100",
]

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_SIDE = 32
_ROW = 3 * _SIDE * _SIDE


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as pickle protocol 2 uses it for ``bytes``; any other codec is refused."""
    if encoding.replace("-", "").replace("_", "").lower() != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"forbidden codec call _codecs.encode(..., {encoding!r})")
    return text.encode("latin1", errors)


def _numpy_global(module: str, name: str) -> Any:
    """Look up ``name`` in numpy's core package, whichever of ``numpy._core`` / ``numpy.core`` exists."""
    import importlib

    for candidate in ("numpy._core." + module, "numpy.core." + module):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


_ALLOWED_GLOBALS: Mapping[tuple[str, str], Callable[[], Any]] = MappingProxyType(
    {
        ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_global("multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_global("multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_global("numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_global("numeric", "_frombuffer"),
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("_codecs", "encode"): lambda: _latin1_encode,
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only builds dicts, lists, strings, numbers, bytes and numpy arrays.

    ``find_class`` is the only door through which a pickle reaches callables; it answers just the
    globals in ``_ALLOWED_GLOBALS`` and raises :class:`pickle.UnpicklingError` for everything else.
    """

    def find_class(self, module: str, name: str) -> Any:
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        return factory()


def load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (``encoding="bytes"``, as CIFAR needs).

    Raises :class:`DataError` naming the file when it is missing, unreadable, not a pickle, truncated,
    or refers to a forbidden global.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"missing CIFAR file {path}") from None
    except pickle.UnpicklingError as exc:
        if "forbidden" in str(exc):
            raise DataError(f"refusing to unpickle {path}: {one_line(exc)}") from None
        raise DataError(f"corrupt CIFAR file {path}: {one_line(exc)}") from None
    except OSError as exc:
        raise DataError(f"cannot read CIFAR file {path}: {exc.strerror or one_line(exc)}") from None
    except Exception as exc:  # a damaged pickle can raise nearly anything (EOF, Value, Type, ...)
        raise DataError(f"corrupt CIFAR file {path}: {type(exc).__name__}: {one_line(exc)}") from None


def _str_keys(obj: Any, path: Path) -> dict[str, Any]:
    """A batch dict with its keys decoded to ``str`` (Python 2 pickles have ``bytes`` keys)."""
    if not isinstance(obj, dict):
        raise DataError(f"corrupt CIFAR file {path}: expected a dict, found {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _names(meta: dict[str, Any], key: str, path: Path) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, list | tuple) or not names:
        raise DataError(f"corrupt CIFAR file {path}: no {key!r} list")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def _batch_arrays(
    batch: dict[str, Any], label_key: str, num_classes: int, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """``(images N x 3 x 32 x 32 uint8, labels N int64)`` from one unpickled batch, validated."""
    if "data" not in batch:
        raise DataError(f"corrupt CIFAR file {path}: no 'data' entry")
    if label_key not in batch:
        raise DataError(f"corrupt CIFAR file {path}: no {label_key!r} entry")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"corrupt CIFAR file {path}: 'data' must be N x {_ROW} uint8, found {shape} {dtype}")
    try:
        labels = np.asarray(batch[label_key])
    except (TypeError, ValueError) as exc:
        raise DataError(f"corrupt CIFAR file {path}: bad {label_key!r} ({one_line(exc)})") from None
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"corrupt CIFAR file {path}: {label_key!r} must be a list of integers")
    if len(labels) != len(data):
        raise DataError(f"corrupt CIFAR file {path}: {len(data)} images but {len(labels)} {label_key}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise DataError(f"corrupt CIFAR file {path}: label {bad} out of range 0..{num_classes - 1}")
    images = data.reshape(len(data), 3, _SIDE, _SIDE)
    return images, labels.astype(np.int64)


def find_cifar_dir(root: str | os.PathLike, subdir: str, marker: str) -> Path:
    """The folder holding the batches: ``root/subdir`` if it has ``marker``, else ``root`` itself if it does."""
    root = Path(root).expanduser()
    problem = folder_problem(root)
    if problem is not None:
        raise DataError(f"CIFAR data folder {root} {problem}")
    for folder in (root / subdir, root):
        try:
            if (folder / marker).is_file():
                return folder
        except OSError as exc:  # e.g. a folder without search permission
            raise DataError(f"cannot read CIFAR folder {folder}: {exc.strerror or one_line(exc)}") from None
    raise DataError(
        f"missing CIFAR file {root / subdir / marker} (pass the folder holding {marker} or its parent)"
    )


def _check_split(split: str, name: str) -> None:
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r} for {name}: use train or test")


def load_cifar10(root: str | os.PathLike, split: str = "train") -> ImageArrays:
    """Load CIFAR-10's ``split`` ("train": the five data batches, "test": ``test_batch``).

    ``root`` is ``cifar-10-batches-py`` itself or the folder containing it.
    """
    _check_split(split, "cifar10")
    folder = find_cifar_dir(root, CIFAR10_DIR, "batches.meta")
    meta_path = folder / "batches.meta"
    class_names = _names(_str_keys(load_pickle(meta_path), meta_path), "label_names", meta_path)
    files = _CIFAR10_TRAIN if split == "train" else ("test_batch",)
    images, labels = [], []
    for name in files:
        path = folder / name
        batch = _str_keys(load_pickle(path), path)
        x, y = _batch_arrays(batch, "labels", len(class_names), path)
        images.append(x)
        labels.append(y)
    source = str(folder / files[0]) if len(files) == 1 else str(folder / "data_batch_[1-5]")
    return ImageArrays(np.concatenate(images), np.concatenate(labels), class_names, source)


def load_cifar100(root: str | os.PathLike, split: str = "train", label_type: str = "fine") -> ImageArrays:
    """Load CIFAR-100's ``split`` ("train" or "test") with ``label_type`` "fine" (100) or "coarse" (20) labels.

    ``root`` is ``cifar-100-python`` itself or the folder containing it.
    """
    _check_split(split, "cifar100")
    if label_type not in ("fine", "coarse"):
        raise DataError(f"unknown CIFAR-100 label type {label_type!r}: use fine or coarse")
    folder = find_cifar_dir(root, CIFAR100_DIR, "meta")
    meta_path = folder / "meta"
    class_names = _names(_str_keys(load_pickle(meta_path), meta_path), f"{label_type}_label_names", meta_path)
    path = folder / split
    batch = _str_keys(load_pickle(path), path)
    images, labels = _batch_arrays(batch, f"{label_type}_labels", len(class_names), path)
    return ImageArrays(np.ascontiguousarray(images), labels, class_names, str(path))
