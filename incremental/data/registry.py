"""Data sets by name: :func:`load_dataset` and their normalisation constants :func:`dataset_stats`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from energymodel.errors import UserError
from incremental.data.arrays import DataError, ImageArrays, per_channel_mean_std
from incremental.data.cifar import load_cifar10, load_cifar100
from incremental.data.idx import FASHION_MNIST_ROOT, load_idx_dataset
from incremental.data.imagefolder import load_imagefolder
from incremental.data.splits import holdout_split

__all__ = ["DatasetInfo", "DATASETS", "dataset_names", "load_dataset", "load_digits", "dataset_stats"]

#: Share of each class that the "digits" data set puts in its test split (it ships as one set).
DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about a named data set.

    ``mean``/``std`` are per-channel pixel statistics of the training split on the ``[0, 1]`` scale (None
    when they must be computed from the data, as for ``imagefolder``).
    """

    name: str
    description: str
    needs_root: bool
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None


DATASETS: Mapping[str, DatasetInfo] = MappingProxyType(
    {
        info.name: info
        for info in (
            DatasetInfo(
                "fashion-mnist",
                f"Fashion-MNIST IDX files (default root {FASHION_MNIST_ROOT})",
                False,
                (0.2860,),
                (0.3530,),
            ),
            DatasetInfo("mnist", "MNIST IDX files", True, (0.1307,), (0.3081,)),
            DatasetInfo(
                "cifar10",
                "CIFAR-10 python pickles (cifar-10-batches-py)",
                True,
                (0.4914, 0.4822, 0.4465),
                (0.2470, 0.2435, 0.2616),
            ),
            DatasetInfo(
                "cifar100",
                "CIFAR-100 python pickles (cifar-100-python)",
                True,
                (0.5071, 0.4865, 0.4409),
                (0.2673, 0.2564, 0.2762),
            ),
            DatasetInfo("imagefolder", "ImageFolder tree root/<split>/<class>/<images>", True, None, None),
            DatasetInfo(
                "digits",
                "scikit-learn's 8x8 digits (1,797 images, needs scikit-learn)",
                False,
                (0.3053,),
                (0.3759,),
            ),
        )
    }
)


def dataset_names() -> list[str]:
    """The names :func:`load_dataset` accepts."""
    return list(DATASETS)


def _info(name: str) -> DatasetInfo:
    info = DATASETS.get(name)
    if info is None:
        raise UserError(f"unknown data set {name!r}: known data sets are {', '.join(DATASETS)}")
    return info


def load_digits(split: str = "train") -> ImageArrays:
    """scikit-learn's digits as 1 x 8 x 8 uint8 images (values 0..16 scaled to 0..255).

    The set ships whole; "train" and "test" are a fixed stratified split (seed 0, 20 % test) and "all"
    is everything.
    """
    if split not in ("train", "test", "all"):
        raise DataError(f"unknown split {split!r} for digits: use train, test or all")
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise UserError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    bunch = sk_load_digits()
    images = (
        np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    )
    arrays = ImageArrays(
        images[:, None, :, :], np.asarray(bunch.target), [str(d) for d in range(10)], "sklearn digits"
    )
    if split == "all":
        return arrays
    train, test = holdout_split(arrays, DIGITS_TEST_FRACTION, seed=0)
    return train if split == "train" else test


def load_dataset(
    name: str, root: str | os.PathLike | None = None, split: str = "train", **kw: Any
) -> ImageArrays:
    """Load ``split`` of the data set ``name`` from ``root``.

    Names: "fashion-mnist" (root defaults to Debian's package folder), "mnist", "cifar10", "cifar100"
    (``label_type="fine"|"coarse"``), "imagefolder" (keyword arguments go to :func:`load_imagefolder`:
    ``mode``, ``size``, ``cache_dir``, ``workers``, ``progress``) and "digits" (no root; needs
    scikit-learn). Unknown names raise :class:`UserError` listing the known ones.
    """
    info = _info(name)
    if info.needs_root and root is None:
        raise DataError(f"data set {name} needs a data folder: pass --data-root")
    if name in ("fashion-mnist", "mnist"):
        return load_idx_dataset(root, kind=name, split=split, **kw)
    if name == "cifar10":
        return load_cifar10(root, split, **kw)
    if name == "cifar100":
        return load_cifar100(root, split, **kw)
    if name == "imagefolder":
        return load_imagefolder(root, split, **kw)
    return load_digits(split, **kw)


def dataset_stats(name: str, train: ImageArrays | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` for normalising ``name``'s images.

    Fixed constants (of the training split) for the named data sets; for "imagefolder" they are computed
    from ``train``, which must then be given.
    """
    info = _info(name)
    if info.mean is not None and info.std is not None:
        return info.mean, info.std
    if train is None:
        raise UserError(
            f"normalisation statistics for {name} are computed from the data: pass its training set"
        )
    return per_channel_mean_std(train)
