"""In-memory image data sets (:class:`ImageArrays`), a torch ``Dataset`` view of them, and augmentation.

Every loader in :mod:`incremental.data` returns an :class:`ImageArrays`: uint8 images ``N x C x H x W``,
int64 labels, the class names and a ``source`` string naming where the data came from (used in every
error message). :class:`TensorImageDataset` turns one into normalised float tensors for training.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from energymodel.errors import UserError

__all__ = [
    "DataError",
    "ImageArrays",
    "TensorImageDataset",
    "RandomCropFlip",
    "cifar_augment",
    "per_channel_mean_std",
    "one_line",
    "folder_problem",
]


class DataError(UserError):
    """A data file or folder that is missing, unreadable, corrupt or inconsistent; the message names it."""


def one_line(exc: BaseException | str) -> str:
    """The first line of an exception's message (or of a string), for one-line error messages."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, BaseException) and not first:
        return type(exc).__name__
    return first


def folder_problem(path: str | os.PathLike) -> str | None:
    """What keeps ``path`` from being read as a folder, for a one-line message; None when it is one.

    "does not exist", "is a file, not a folder" (or "is not a folder" for other kinds of file), or
    "cannot be read: <reason>" (e.g. permission denied on a folder above it).
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "does not exist"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or one_line(exc)}"
    if stat.S_ISDIR(mode):
        return None
    return "is a file, not a folder" if stat.S_ISREG(mode) else "is not a folder"


@dataclass(eq=False)
class ImageArrays:
    """A labelled image set held in memory.

    Attributes:
        images: uint8 array ``N x C x H x W``.
        labels: int64 array ``N`` with values in ``0 .. len(class_names) - 1``.
        class_names: one name per class; the label id is the index in this list.
        source: where the data came from (a path, or a name); errors about this data name it.

    Instances compare by identity (``eq=False``): comparing arrays element-wise is never what ``==`` wants.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    source: str

    def __post_init__(self) -> None:
        images = self.images
        if not isinstance(images, np.ndarray) or images.ndim != 4:
            shape = getattr(images, "shape", None)
            raise DataError(f"{self.source}: images must be an N x C x H x W array, got shape {shape}")
        if images.dtype != np.uint8:
            raise DataError(f"{self.source}: images must be uint8, got {images.dtype}")
        labels = np.asarray(self.labels)
        if labels.ndim != 1:
            raise DataError(f"{self.source}: labels must be one-dimensional, got shape {labels.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{self.source}: labels must be integers, got {labels.dtype}")
        self.labels = labels.astype(np.int64, copy=False)
        self.class_names = [str(name) for name in self.class_names]
        if len(self.labels) != len(images):
            raise DataError(f"{self.source}: {len(images)} images but {len(self.labels)} labels")
        if not self.class_names:
            raise DataError(f"{self.source}: no class names")
        if self.labels.size:
            low, high = int(self.labels.min()), int(self.labels.max())
            if low < 0 or high >= len(self.class_names):
                bad = low if low < 0 else high
                raise DataError(
                    f"{self.source}: label {bad} out of range 0..{len(self.class_names) - 1} "
                    f"({len(self.class_names)} classes)"
                )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``class_names``), whether or not all occur in this set."""
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one image, ``(C, H, W)``."""
        _, c, h, w = self.images.shape
        return (c, h, w)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageArrays:
        """The images at ``indices`` (integer positions or a boolean mask), same class names and source."""
        idx = np.asarray(indices)
        if idx.dtype != np.bool_:
            idx = idx.astype(np.int64, copy=False)
        return ImageArrays(self.images[idx], self.labels[idx], list(self.class_names), self.source)

    def class_counts(self) -> np.ndarray:
        """Number of images per class, an int64 array of length ``num_classes``."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)


@dataclass
class RandomCropFlip:
    """Random crop with zero padding plus random horizontal flip, on one ``C x H x W`` float tensor.

    The image is padded by ``pad`` zero pixels on every side and a window of the original size is cut at
    a uniformly random offset; then, if ``flip``, it is mirrored left-right with probability 1/2. This is
    the standard CIFAR augmentation (``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip``) written
    with torch operations only.

    Random numbers come from ``generator`` when given, else from torch's default generator, which a
    ``DataLoader`` seeds differently in every worker. Pass a generator only with ``num_workers=0``: each
    worker would get an identical copy of it and repeat the same crops.
    """

    pad: int = 4
    flip: bool = True
    generator: torch.Generator | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"pad must be >= 0, got {self.pad}")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        _, h, w = image.shape
        if self.pad:
            draws = torch.randint(0, 2 * self.pad + 1, (2,), generator=self.generator)
            top, left = int(draws[0]), int(draws[1])
            padded = F.pad(image, (self.pad, self.pad, self.pad, self.pad))
            image = padded[:, top : top + h, left : left + w]
        if self.flip and bool(torch.rand((), generator=self.generator) < 0.5):
            image = image.flip(-1)
        return image.contiguous()


def cifar_augment(pad: int = 4, generator: torch.Generator | None = None) -> RandomCropFlip:
    """Standard CIFAR augmentation: random crop with ``pad``-pixel zero padding and horizontal flip."""
    return RandomCropFlip(pad=pad, flip=True, generator=generator)


class TensorImageDataset(Dataset):
    """A torch ``Dataset`` over :class:`ImageArrays`: ``(normalised float image, int64 label)``.

    Each image is scaled to ``[0, 1]``, passed through ``augment`` (which therefore pads with black, as
    torchvision does on PIL images), then normalised with ``(x - mean) / std`` per channel. Labels are
    translated through ``label_map`` (global class id -> local output index) when given; every label in
    the data must then be a key of the map.
    """

    def __init__(
        self,
        arrays: ImageArrays,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        label_map: dict[int, int] | None = None,
    ) -> None:
        channels = arrays.shape[0]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"{arrays.source}: mean/std have {len(mean)}/{len(std)} entries for {channels}-channel images"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.arrays = arrays
        self.augment = augment
        self._images = torch.from_numpy(np.ascontiguousarray(arrays.images))
        self._mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        labels = arrays.labels
        if label_map is not None:
            missing = sorted(set(np.unique(labels).tolist()) - set(label_map))
            if missing:
                raise ValueError(f"{arrays.source}: labels {missing[:5]} are not in the label map")
            lookup = np.full(arrays.num_classes, -1, dtype=np.int64)
            for global_id, local_id in label_map.items():
                if 0 <= global_id < arrays.num_classes:
                    lookup[global_id] = local_id
            labels = lookup[labels]
        self._labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self._images[index].to(torch.float32).div_(255.0)
        if self.augment is not None:
            image = self.augment(image)
        image = (image - self._mean) / self._std
        return image, self._labels[index]

    @property
    def labels(self) -> torch.Tensor:
        """All (mapped) labels, int64."""
        return self._labels


def per_channel_mean_std(
    arrays: ImageArrays, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of the pixels, on the ``[0, 1]`` scale.

    Sums are exact integer sums over chunks of images, so the result does not depend on the chunk size and
    no full float copy of the data is made.
    """
    if len(arrays) == 0:
        raise DataError(f"{arrays.source}: no images to compute mean/std from")
    channels = arrays.shape[0]
    total = np.zeros(channels, dtype=np.int64)
    total_sq = np.zeros(channels, dtype=np.int64)
    for start in range(0, len(arrays), chunk):
        block = arrays.images[start : start + chunk].astype(np.int64)
        total += block.sum(axis=(0, 2, 3))
        total_sq += (block * block).sum(axis=(0, 2, 3))
    count = len(arrays) * arrays.shape[1] * arrays.shape[2]
    mean = total / count
    var = np.maximum(total_sq / count - mean * mean, 0.0)
    return tuple(float(m / 255.0) for m in mean), tuple(float(np.sqrt(v) / 255.0) for v in var)
