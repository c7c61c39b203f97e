"""One network for every task: :class:`SingleNet` (a classifier whose columns grow task by task), and
:func:`rebuild_predictor`, which rebuilds a GrownNet or a SingleNet from its ``structure()``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from energymodel.errors import UserError
from energymodel.models.blocks import as_block_net, classifier_of, replace_module
from incremental.model.branching import GrownNet, TaskPredictor, _check_classes

__all__ = ["SingleNet", "extend_classifier", "rebuild_predictor"]


ModelFactory = Callable[[int], nn.Module]  # num_classes -> fresh BlockNet


# ---------------------------------------------------------------------------- single-network predictor
def extend_classifier(model: nn.Module, n_new: int) -> nn.Module:
    """Grow ``model``'s classifier by ``n_new`` outputs in place (old rows copied, new rows fresh); return ``model``.

    The classifier is the last ``nn.Linear`` of the model's head (:func:`~energymodel.models.blocks.classifier_of`);
    the new layer keeps its device, dtype and ``requires_grad``.
    """
    if n_new < 1:
        raise ValueError(f"n_new must be >= 1, got {n_new}")
    old = classifier_of(as_block_net(model).head)
    new = nn.Linear(old.in_features, old.out_features + n_new, bias=old.bias is not None)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight[: old.out_features].copy_(old.weight)
        if old.bias is not None:
            new.bias[: old.out_features].copy_(old.bias)
    for p in new.parameters():
        p.requires_grad_(old.weight.requires_grad)
    return replace_module(model, old, new)


class SingleNet(TaskPredictor, nn.Module):
    """One network whose classifier covers every task's classes; task ``t`` owns a contiguous column range.

    Offers the predictor interface of :class:`~incremental.model.branching.GrownNet`. Task-aware prediction takes
    the argmax within the task's columns; task-agnostic prediction over all columns (no calibration:
    ``calibrated`` is accepted and ignored).
    """

    def __init__(self, model: nn.Module, task_classes: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.model = model
        self._classes = [_check_classes(c, f"task {t} classes") for t, c in enumerate(task_classes)]
        n_out = classifier_of(as_block_net(model).head).out_features
        if n_out != sum(len(c) for c in self._classes):
            raise ValueError(f"classifier has {n_out} outputs but the tasks have {len(self.all_classes)} classes")

    @property
    def tasks(self) -> int:
        return len(self._classes)

    def classes_of(self, task: int) -> list[int]:
        return list(self._classes[task])

    def columns(self, task: int) -> slice:
        """The classifier columns of ``task``."""
        if not 0 <= task < self.tasks:
            raise IndexError(f"task {task} out of range 0..{self.tasks - 1}")
        start = sum(len(c) for c in self._classes[:task])
        return slice(start, start + len(self._classes[task]))

    def add_task(self, classes: Sequence[int]) -> int:
        """Extend the classifier with ``classes``; return the new task's column offset."""
        cls = _check_classes(classes, "classes")
        offset = len(self.all_classes)
        extend_classifier(self.model, len(cls))
        self._classes.append(cls)
        return offset

    def forward(self, x: Tensor) -> Tensor:  # noqa: D401 - nn.Module API
        """Logits over all columns."""
        return self.model(x)

    def forward_all(self, x: Tensor) -> list[Tensor]:
        out = self.model(x)
        return [out[:, self.columns(t)] for t in range(self.tasks)]

    def forward_task(self, x: Tensor, task: int) -> Tensor:
        return self.model(x)[:, self.columns(task)]

    def predict_agnostic(self, x: Tensor, calibrated: bool = True) -> Tensor:
        with torch.no_grad():
            return self.to_class_ids(self.model(x), self.all_classes)

    def structure(self) -> dict[str, Any]:
        return {"kind": "single", "version": 1, "task_classes": [list(c) for c in self._classes]}

    @classmethod
    def from_structure(cls, model_factory: ModelFactory, structure: dict[str, Any]) -> SingleNet:
        """Rebuild from :meth:`structure` with ``model_factory(total_classes)``; load the state dict afterwards."""
        try:
            if structure.get("kind") != "single":
                raise ValueError(f"kind {structure.get('kind')!r}")
            task_classes = [list(c) for c in structure["task_classes"]]
            return cls(model_factory(sum(len(c) for c in task_classes)), task_classes)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise UserError(f"malformed SingleNet structure: {exc}") from None


def rebuild_predictor(structure: dict[str, Any], model_factory: ModelFactory) -> GrownNet | SingleNet:
    """Rebuild a GrownNet or SingleNet from its ``structure()`` (load its state dict afterwards).

    ``model_factory(num_classes)`` builds a fresh network of the base architecture.
    """
    kind = structure.get("kind") if isinstance(structure, dict) else None
    if kind == "grown":
        n_base = len(structure.get("base_classes", []))
        return GrownNet.from_structure(lambda: model_factory(n_base), structure)
    if kind == "single":
        return SingleNet.from_structure(model_factory, structure)
    raise UserError(f"unknown predictor structure kind {kind!r}")
