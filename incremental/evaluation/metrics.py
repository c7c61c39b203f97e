"""Continual-learning metrics over an accuracy matrix.

``R[i][j]`` is the accuracy on task ``j`` after learning task ``i`` (tasks 0-based, task 0 = the base task);
entries with ``j > i`` are undefined (NaN). The same class serves task-aware and task-agnostic evaluation
(``kind`` labels which). With ``T`` tasks learned so far (``k = T - 1`` the last one):

* average accuracy  ``A_k = mean_{j <= k} R[k][j]``;
* forgetting (Chaudhry et al., ECCV 2018, "Riemannian Walk")
  ``F_k = mean_{j < k} ( max_{l in [j, k-1]} R[l][j] - R[k][j] )``;
* backward transfer (Lopez-Paz & Ranzato, NeurIPS 2017, "GEM")
  ``BWT_k = mean_{j < k} ( R[k][j] - R[j][j] )``.

Forgetting and backward transfer are NaN with a single task. Clone-and-branch never changes old tasks'
task-aware predictions, so its task-aware forgetting is 0 and its backward transfer 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["AccuracyMatrix", "average_accuracy", "backward_transfer", "forgetting", "mean_std"]


def _none_if_nan(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


class AccuracyMatrix:
    """A ``tasks x tasks`` matrix of accuracies, ``R[i][j]`` = accuracy on task ``j`` after learning task ``i``."""

    def __init__(self, tasks: int, kind: str = "task_aware") -> None:
        if tasks < 1:
            raise ValueError(f"an accuracy matrix needs at least one task, got {tasks}")
        self.kind = kind
        self._r = np.full((tasks, tasks), np.nan, dtype=np.float64)

    @property
    def tasks(self) -> int:
        """Number of tasks the matrix has room for."""
        return self._r.shape[0]

    @property
    def R(self) -> np.ndarray:  # noqa: N802 - standard notation
        """A copy of the matrix (NaN where undefined or not yet measured)."""
        return self._r.copy()

    def record(self, after_task: int, task: int, accuracy: float) -> None:
        """Store the accuracy on ``task`` measured after learning ``after_task`` (``task <= after_task``)."""
        if not 0 <= after_task < self.tasks or not 0 <= task < self.tasks:
            raise IndexError(f"task index out of range 0..{self.tasks - 1}: ({after_task}, {task})")
        if task > after_task:
            raise ValueError(f"task {task} is not learned yet after task {after_task}")
        value = float(accuracy)
        if not math.isfinite(value):
            raise ValueError(f"accuracy must be finite, got {accuracy}")
        self._r[after_task, task] = value

    def record_row(self, after_task: int, accuracies: Sequence[float]) -> None:
        """Store ``accuracies[j]`` for tasks ``0..after_task`` after learning ``after_task``."""
        if len(accuracies) != after_task + 1:
            raise ValueError(f"after task {after_task} expected {after_task + 1} accuracies, got {len(accuracies)}")
        for j, acc in enumerate(accuracies):
            self.record(after_task, j, acc)

    def __getitem__(self, index: tuple[int, int]) -> float:
        i, j = index
        return float(self._r[i, j])

    @property
    def learned(self) -> int:
        """Number of leading rows that are complete (all ``j <= i`` recorded)."""
        for i in range(self.tasks):
            if np.isnan(self._r[i, : i + 1]).any():
                return i
        return self.tasks

    def _last(self, after: int | None) -> int:
        k = self.learned - 1 if after is None else after
        if k < 0:
            raise ValueError("no complete row: record the accuracies after task 0 first")
        if k >= self.learned:
            raise ValueError(f"row {k} is not complete (complete rows: 0..{self.learned - 1})")
        return k

    def average_accuracy(self, after: int | None = None) -> float:
        """``mean_{j <= k} R[k][j]`` (``k`` = ``after`` or the last complete row)."""
        return average_accuracy(self._r, self._last(after))

    def forgetting(self, after: int | None = None) -> float:
        """Chaudhry et al. (2018) forgetting after task ``k`` (NaN when ``k == 0``)."""
        return forgetting(self._r, self._last(after))

    def backward_transfer(self, after: int | None = None) -> float:
        """Lopez-Paz & Ranzato (2017) backward transfer after task ``k`` (NaN when ``k == 0``)."""
        return backward_transfer(self._r, self._last(after))

    def to_frame(self) -> pd.DataFrame:
        """The matrix as a DataFrame: index ``after_task`` (0..T-1), columns ``task_0 .. task_{T-1}``."""
        frame = pd.DataFrame(self._r, columns=[f"task_{j}" for j in range(self.tasks)])
        frame.index.name = "after_task"
        return frame

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: matrix (NaN → None) and the three metrics after the last complete row."""
        k = self.learned - 1
        return {
            "kind": self.kind,
            "tasks": self.tasks,
            "learned": self.learned,
            "matrix": [[_none_if_nan(v) for v in row] for row in self._r.tolist()],
            "average_accuracy": _none_if_nan(self.average_accuracy()) if k >= 0 else None,
            "forgetting": _none_if_nan(self.forgetting()) if k >= 0 else None,
            "backward_transfer": _none_if_nan(self.backward_transfer()) if k >= 0 else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AccuracyMatrix:
        """Inverse of :meth:`to_dict` (metrics are recomputed, not read)."""
        m = cls(int(d["tasks"]), kind=str(d.get("kind", "task_aware")))
        for i, row in enumerate(d["matrix"]):
            for j, v in enumerate(row):
                if v is not None:
                    m.record(i, j, v)
        return m

    def __repr__(self) -> str:
        return f"AccuracyMatrix(kind={self.kind!r}, tasks={self.tasks}, learned={self.learned})"


def _matrix(r: AccuracyMatrix | np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    if isinstance(r, AccuracyMatrix):
        return r.R
    arr = np.asarray(r, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"accuracy matrix must be square, got shape {arr.shape}")
    return arr


def _k(arr: np.ndarray, after: int | None) -> int:
    k = arr.shape[0] - 1 if after is None else after
    if not 0 <= k < arr.shape[0]:
        raise IndexError(f"row {k} out of range 0..{arr.shape[0] - 1}")
    if np.isnan(arr[k, : k + 1]).any():
        raise ValueError(f"row {k} has unrecorded accuracies")
    return k


def average_accuracy(r: AccuracyMatrix | np.ndarray | Sequence[Sequence[float]], after: int | None = None) -> float:
    """``mean_{j <= k} R[k][j]``; ``k`` defaults to the last row."""
    arr = _matrix(r)
    k = _k(arr, after)
    return float(arr[k, : k + 1].mean())


def forgetting(r: AccuracyMatrix | np.ndarray | Sequence[Sequence[float]], after: int | None = None) -> float:
    """``mean_{j < k} (max_{l in [j, k-1]} R[l][j] - R[k][j])`` (Chaudhry et al. 2018); NaN when ``k == 0``."""
    arr = _matrix(r)
    k = _k(arr, after)
    if k == 0:
        return float("nan")
    drops = [np.nanmax(arr[j:k, j]) - arr[k, j] for j in range(k)]
    return float(np.mean(drops))


def backward_transfer(r: AccuracyMatrix | np.ndarray | Sequence[Sequence[float]], after: int | None = None) -> float:
    """``mean_{j < k} (R[k][j] - R[j][j])`` (Lopez-Paz & Ranzato 2017); NaN when ``k == 0``."""
    arr = _matrix(r)
    k = _k(arr, after)
    if k == 0:
        return float("nan")
    return float(np.mean([arr[k, j] - arr[j, j] for j in range(k)]))


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """``(mean, sample standard deviation)`` over seeds, ignoring NaN; std is 0.0 for one value.

    Returns ``(nan, nan)`` when no finite value is given.
    """
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return float("nan"), float("nan")
    if arr.size == 1:
        return float(arr[0]), 0.0
    return float(arr.mean()), float(arr.std(ddof=1))
