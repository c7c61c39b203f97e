"""Evaluation after every task: task-aware accuracy, every task-agnostic method, logit hashes; fitting methods.

One forward pass per test set gives every task's logits and penultimate features
(:func:`incremental.agnostic.collect`); task-aware accuracy and all task-agnostic methods read it.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from incremental.agnostic import AgnosticSuite, collect
from incremental.agnostic.features import collect_task

__all__ = ["KINDS", "evaluate_row", "fit_suite_task"]

#: Accuracy kinds recorded for every strategy (matrix names in results.json); each method adds ``agnostic:<name>``.
KINDS = ("task_aware", "task_agnostic", "task_agnostic_uncalibrated")


def evaluate_row(predictor: nn.Module, suite: AgnosticSuite | None, default: str, tests: list[Dataset], upto: int,
                 batch: int, device: torch.device, calibrated: bool, progress: bool = False) -> dict[str, Any]:
    """Row ``upto`` of the accuracy matrices + sha256 of every task's own logits on its own test set.

    ``suite`` is None for a single-network predictor: its joint classifier's argmax (``raw-logits``) is its
    only task-agnostic prediction. ``task_agnostic`` is the ``default`` method's accuracy (raw logits when the
    suite lacks it), ``task_agnostic_uncalibrated`` the raw logits'.
    """
    all_classes = torch.tensor(predictor.all_classes)
    row: dict[str, Any] = {k: [] for k in KINDS}
    row["agnostic"] = {}
    row["sha256"] = []
    for j in tqdm(range(upto + 1), desc=f"evaluate after task {upto}", unit="task", leave=False, disable=not progress):
        out = collect(predictor, tests[j], batch, device, calibrated=calibrated)
        own, labels = out.logits[j], out.labels
        glob = torch.tensor(predictor.classes_of(j))[labels]
        row["task_aware"].append(float((own.argmax(dim=1) == labels).double().mean()))
        raw = torch.cat(out.logits, dim=1).argmax(dim=1)
        preds = suite.predict(out) if suite is not None else {"raw-logits": raw}
        for name, cols in preds.items():
            row["agnostic"].setdefault(name, []).append(float((all_classes[cols] == glob).double().mean()))
        raw_acc = float((all_classes[raw] == glob).double().mean())
        row["task_agnostic_uncalibrated"].append(raw_acc)
        row["task_agnostic"].append(row["agnostic"][default][-1] if default in preds else raw_acc)
        row["sha256"].append(tensor_sha256(own))
    return row


def fit_suite_task(suite: AgnosticSuite, predictor: nn.Module, task: int, train: Dataset, heldout: Dataset | None,
                   batch: int, device: torch.device) -> dict[str, Any]:
    """Fit every method of ``suite`` for ``task`` from that task's own training and held-out images only."""
    t0 = time.perf_counter()
    train_out = collect_task(predictor, train, task, batch, device) if suite.needs_training_pass else None
    held_out = collect_task(predictor, heldout, task, batch, device) if heldout is not None else None
    if train_out is None:  # logit methods only: they read the held-out pass (or nothing)
        train_out = held_out if held_out is not None else collect_task(predictor, train, task, batch, device)
    suite.fit_task(task, train_out, held_out)
    return {"seconds": time.perf_counter() - t0, "train_samples": len(train) if suite.needs_training_pass else 0,
            "heldout_samples": len(heldout) if heldout is not None else 0,
            "own_dims": int(train_out.own[task].shape[1]), "common_dims": int(train_out.common.shape[1]),
            "trunk_dims": sum(int(b.shape[1]) for b in train_out.trunk),
            "classes": int(train_out.logits[task].shape[1]), "words": suite.words()}


def tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
