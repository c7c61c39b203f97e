"""Class-incremental splits: task sizes, class order, per-task data, stratified hold-out and sub-sampling."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from energymodel.errors import UserError
from incremental.data.arrays import DataError, ImageArrays

__all__ = ["MAX_TASK_CLASSES", "Task", "parse_task_sizes", "class_order", "make_tasks", "holdout_split", "subsample"]

_TERM = re.compile(r"^\s*(\d+)\s*(?:[xX*]\s*(\d+)\s*)?$")

#: Most classes a task-size string may add up to (ImageNet-21k has about 21,841; a run with more classes
#: than this is a typo, and checking first keeps "1+1x999999999999" from building a list of 10**12 ints).
MAX_TASK_CLASSES = 100_000


def parse_task_sizes(spec: str) -> list[int]:
    """Parse a task-size string: ``"5+5"`` -> [5, 5], ``"50+10x5"`` -> [50, 10, 10, 10, 10, 10].

    Terms are joined with ``+``; a term ``AxB`` means B tasks of A classes each. Every number must be a
    positive integer, and the classes of all tasks, the sum of ``A * B`` over the terms, at most
    :data:`MAX_TASK_CLASSES` (checked before any list is built). Raises :class:`UserError` naming the
    string otherwise.
    """
    hint = "expected e.g. '5+5', '50+10x5' or '2x5'"
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"bad task sizes {spec!r}: {hint}")
    shown = repr(spec) if len(spec) <= 60 else repr(spec[:50]) + f"... ({len(spec)} characters)"
    terms: list[tuple[int, int]] = []
    total = 0
    for term in spec.split("+"):
        match = _TERM.match(term)
        if match is None:
            raise UserError(f"bad task sizes {shown}: cannot read {term.strip()[:50]!r}; {hint}")
        digits = [g for g in match.groups() if g is not None]
        if any(len(d.lstrip("0")) > len(str(MAX_TASK_CLASSES)) for d in digits):  # int() of 5000 digits fails
            raise UserError(f"bad task sizes {shown}: more than {MAX_TASK_CLASSES} classes in all")
        size = int(digits[0])
        repeat = int(digits[1]) if len(digits) > 1 else 1
        if size <= 0 or repeat <= 0:
            raise UserError(f"bad task sizes {shown}: sizes and repeat counts must be positive")
        total += size * repeat
        terms.append((size, repeat))
    if total > MAX_TASK_CLASSES:
        raise UserError(f"bad task sizes {shown}: {total} classes in all, more than {MAX_TASK_CLASSES}")
    return [size for size, repeat in terms for _ in range(repeat)]


def class_order(num_classes: int, seed: int | None = None, order: Sequence[int] | None = None) -> list[int]:
    """The order in which classes arrive.

    A given ``order`` must be a permutation of ``0 .. num_classes - 1`` and is returned as is (it wins over
    ``seed``); otherwise the identity when ``seed`` is None, else a permutation drawn from
    ``numpy.random.default_rng(seed)``.
    """
    if num_classes <= 0:
        raise UserError(f"need at least one class, got {num_classes}")
    if order is not None:
        try:
            values = [int(c) for c in order]
        except (TypeError, ValueError):
            raise UserError(f"class order {list(order)!r} must be a list of integers") from None
        if sorted(values) != list(range(num_classes)):
            raise UserError(f"class order {values} is not a permutation of 0..{num_classes - 1}")
        return values
    if seed is None:
        return list(range(num_classes))
    return [int(c) for c in np.random.default_rng(seed).permutation(num_classes)]


@dataclass(eq=False)
class Task:
    """One task of a class-incremental sequence.

    Attributes:
        index: position of the task in the sequence (0-based).
        classes: the global class ids the task introduces, in order; the network's output ``i`` for this
            task stands for ``classes[i]``.
        train / test: the images of exactly these classes, labels still global ids.
    """

    index: int
    classes: list[int]
    train: ImageArrays
    test: ImageArrays

    @property
    def label_map(self) -> dict[int, int]:
        """Global class id -> local output index ``0 .. len(classes) - 1``."""
        return {c: i for i, c in enumerate(self.classes)}

    @property
    def num_classes(self) -> int:
        """Number of classes in this task."""
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """Names of this task's classes, in local order."""
        return [self.train.class_names[c] for c in self.classes]


def make_tasks(
    train: ImageArrays, test: ImageArrays, sizes: Sequence[int], order: Sequence[int] | None = None
) -> list[Task]:
    """Cut ``train`` and ``test`` into tasks of ``sizes`` classes each, taking classes in ``order``.

    ``sizes`` may use fewer than all classes (the rest are left out). Every class used must have images in
    both sets. Images keep their original relative order inside each task.
    """
    if train.class_names != test.class_names:
        raise DataError(
            f"train and test class names differ ({train.source}: {train.num_classes} classes, "
            f"{test.source}: {test.num_classes} classes)"
        )
    num_classes = train.num_classes
    order = class_order(num_classes, order=order) if order is not None else list(range(num_classes))
    sizes = [int(s) for s in sizes]
    if not sizes or any(s <= 0 for s in sizes):
        raise UserError(f"task sizes {sizes} must be a non-empty list of positive integers")
    if sum(sizes) > num_classes:
        raise UserError(
            f"task sizes {'+'.join(map(str, sizes))} need {sum(sizes)} classes, {train.source} has {num_classes}"
        )
    train_counts, test_counts = train.class_counts(), test.class_counts()
    tasks: list[Task] = []
    start = 0
    for index, size in enumerate(sizes):
        classes = order[start : start + size]
        start += size
        for c in classes:
            for arrays, counts in ((train, train_counts), (test, test_counts)):
                if counts[c] == 0:
                    raise DataError(f"class {c} ({arrays.class_names[c]!r}) has no images in {arrays.source}")
        tasks.append(
            Task(
                index=index,
                classes=list(classes),
                train=train.subset(np.isin(train.labels, classes)),
                test=test.subset(np.isin(test.labels, classes)),
            )
        )
    return tasks


def _per_class_indices(arrays: ImageArrays) -> list[np.ndarray]:
    order = np.argsort(arrays.labels, kind="stable")
    bounds = np.cumsum(np.bincount(arrays.labels, minlength=arrays.num_classes))
    return np.split(order, bounds[:-1])


def holdout_split(arrays: ImageArrays, fraction: float, seed: int = 0) -> tuple[ImageArrays, ImageArrays]:
    """Split off a stratified ``fraction`` of every class: ``(train_part, val_part)``.

    Each class with ``n`` images gives ``round(fraction * n)`` of them to the validation part, at least one
    when ``n >= 2`` and never all of them. Both parts keep the original image order.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise UserError(f"hold-out fraction must be between 0 and 1 (exclusive), got {fraction}")
    rng = np.random.default_rng(seed)
    val_idx: list[np.ndarray] = []
    for idx in _per_class_indices(arrays):
        n = len(idx)
        if n < 2:
            continue
        take = min(max(int(round(fraction * n)), 1), n - 1)
        val_idx.append(rng.permutation(idx)[:take])
    mask = np.zeros(len(arrays), dtype=bool)
    if val_idx:
        mask[np.concatenate(val_idx)] = True
    return arrays.subset(~mask), arrays.subset(mask)


def subsample(arrays: ImageArrays, per_class: int | None, seed: int = 0) -> ImageArrays:
    """At most ``per_class`` randomly chosen images of every class (all when None), in original order."""
    if per_class is None:
        return arrays
    if int(per_class) <= 0:
        raise UserError(f"images per class must be positive, got {per_class}")
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(idx)[:per_class] for idx in _per_class_indices(arrays)]
    return arrays.subset(np.sort(np.concatenate(keep)))
