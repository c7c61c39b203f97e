"""The data layer: image data sets in memory, their file formats, and class-incremental splits.

Loaders return :class:`ImageArrays` (uint8 ``N x C x H x W`` images, int64 labels, class names, source):

- :func:`load_idx_dataset` - MNIST / Fashion-MNIST IDX files (Fashion-MNIST defaults to Debian's
  ``dataset-fashion-mnist`` package folder);
- :func:`load_cifar10`, :func:`load_cifar100` - the standard python-pickle layout, read with a restricted
  unpickler;
- :func:`load_imagefolder` - ``root/<split>/<class>/<images>`` trees, with an optional on-disk cache;
- :func:`load_dataset` - any of the above (and scikit-learn's digits) by name.

Every missing or corrupt file raises :class:`DataError` (a ``UserError``) with a one-line message naming it.

The lowest floor of ``incremental``: may import ``energymodel``'s ground floor (errors, atomic writes) only.
"""

from incremental.data.arrays import (
    DataError,
    ImageArrays,
    RandomCropFlip,
    TensorImageDataset,
    cifar_augment,
    per_channel_mean_std,
)
from incremental.data.cifar import load_cifar10, load_cifar100
from incremental.data.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT, load_idx_dataset, read_idx
from incremental.data.imagefolder import IMAGE_EXTENSIONS, load_imagefolder
from incremental.data.registry import (
    DATASETS,
    DatasetInfo,
    dataset_names,
    dataset_stats,
    load_dataset,
    load_digits,
)
from incremental.data.splits import Task, class_order, holdout_split, make_tasks, parse_task_sizes, subsample

__all__ = [
    "DataError",
    "ImageArrays",
    "RandomCropFlip",
    "TensorImageDataset",
    "cifar_augment",
    "per_channel_mean_std",
    "load_cifar10",
    "load_cifar100",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "load_idx_dataset",
    "read_idx",
    "IMAGE_EXTENSIONS",
    "load_imagefolder",
    "DATASETS",
    "DatasetInfo",
    "dataset_names",
    "dataset_stats",
    "load_dataset",
    "load_digits",
    "Task",
    "class_order",
    "holdout_split",
    "make_tasks",
    "parse_task_sizes",
    "subsample",
]
