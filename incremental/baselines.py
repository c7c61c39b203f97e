"""Strategies for learning a sequence of tasks: partial sharing and the baselines it is compared with.

Every strategy starts from the same base network trained on task 0 and learns tasks 1, 2, ... one at a
time. A :class:`Strategy` (name, description, whether it needs old data, a ``build`` function) builds a
:class:`Learner`; the learner owns a *predictor* with the common inference interface of
:class:`~incremental.branching.GrownNet` (``tasks``, ``classes_of``, ``all_classes``, ``forward_all``,
``forward_task``, ``predict_task_aware``, ``predict_agnostic``, ``structure``) and returns a
:class:`TrainRecord` per task saying what was trained (sharing point, samples, epochs, whether old data was
used) so the cost ledger can be charged.

========================  ===========================================================================
``partial_sharing``       clone-and-branch at a chosen sharing point ``k`` (the paper's method)
``regular_incremental``   clone-and-branch at ``k = 0``: a full clone of the base trained on the new task
``feature_extraction``    clone-and-branch at ``k = n``: only a new head trains on frozen base features
``fine_tuning``           one network, classifier extended with new classes (old rows copied), the whole
                          network fine-tuned on the new task only (catastrophic forgetting)
``full_retraining``       one network over all classes seen so far, trained from scratch on all data
                          seen so far (upper bound; needs the old data)
========================  ===========================================================================

Resuming a task: rebuild the predictor with :func:`rebuild_predictor` from the saved structure (which
already contains the pending task) and state dict, assign it to ``learner.predictor`` (for
``full_retraining`` also re-fill ``learner.history`` with earlier tasks' data), then call
``learner.train_task(data, cfg, start_epoch=..., optimizer_state=...)``.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset

from energymodel.blocks import as_block_net, classifier_of, replace_module
from energymodel.errors import UserError

from .branching import GrownNet, TaskPredictor, _check_classes
from .train import FitResult, TrainConfig, count_parameters, fit, fit_branch

__all__ = [
    "STRATEGY_NAMES",
    "BranchLearner",
    "FineTuneLearner",
    "FullRetrainLearner",
    "Learner",
    "OffsetLabels",
    "SingleNet",
    "Strategy",
    "TrainRecord",
    "extend_classifier",
    "make_strategy",
    "rebuild_predictor",
]

STRATEGY_NAMES = ("partial_sharing", "regular_incremental", "feature_extraction", "fine_tuning", "full_retraining")

ModelFactory = Callable[[int], nn.Module]  # num_classes -> fresh BlockNet


@dataclass
class TrainRecord:
    """What a strategy trained for one task (input to the cost ledger).

    ``share``: sharing point of the trained branch (None for single-network strategies, which train every
    block). ``samples``: training-set size of this step (all seen tasks for full retraining); ``epochs``:
    passes over it; ``used_old_data``: whether earlier tasks' data was needed. ``trainable_params``:
    parameters that received gradients. ``fit``: timing and caching details from :func:`~incremental.train.fit`.
    """

    strategy: str
    task: int
    classes: list[int]
    share: int | None
    samples: int
    epochs: int
    used_old_data: bool
    trainable_params: int
    fit: FitResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy (``fit`` as a dict)."""
        return asdict(self)


# ---------------------------------------------------------------------------- single-network predictor
def extend_classifier(model: nn.Module, n_new: int) -> nn.Module:
    """Grow ``model``'s classifier by ``n_new`` outputs in place (old rows copied, new rows fresh); return ``model``.

    The classifier is the last ``nn.Linear`` of the model's head (:func:`~energymodel.blocks.classifier_of`);
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


class OffsetLabels(Dataset):
    """``data`` with every label shifted by ``offset`` (local task labels → columns of a shared classifier)."""

    def __init__(self, data: Dataset, offset: int) -> None:
        self.data = data
        self.offset = int(offset)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        x, y = self.data[i][:2]
        return x, y + self.offset


class SingleNet(TaskPredictor, nn.Module):
    """One network whose classifier covers every task's classes; task ``t`` owns a contiguous column range.

    Offers the predictor interface of :class:`~incremental.branching.GrownNet`. Task-aware prediction takes
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


def _reset_parameters(model: nn.Module) -> None:
    for m in model.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
        reset_stats = getattr(m, "reset_running_stats", None)
        if callable(reset_stats):
            reset_stats()


# ---------------------------------------------------------------------------- learners
class Learner(ABC):
    """A predictor plus how it learns a new task. ``learn_task = prepare_task + train_task``."""

    name: str
    uses_old_data: bool
    predictor: GrownNet | SingleNet

    @abstractmethod
    def prepare_task(self, classes: Sequence[int], **options: Any) -> int:
        """Grow the predictor's structure for a new task (untrained); return the new task index."""

    @abstractmethod
    def train_task(self, data: Dataset, cfg: TrainConfig, **fit_kwargs: Any) -> TrainRecord:
        """Train the newest (prepared) task on ``data`` (local labels); ``fit_kwargs`` go to ``fit``."""

    def learn_task(self, data: Dataset, classes: Sequence[int], cfg: TrainConfig, **fit_kwargs: Any) -> TrainRecord:
        """Prepare and train a new task."""
        self.prepare_task(classes)
        return self.train_task(data, cfg, **fit_kwargs)


class BranchLearner(Learner):
    """Clone-and-branch at sharing point ``share``: ``0 .. n``, negative counts back from ``n``
    (``-1`` = ``n - 1``), ``None`` = ``n`` (feature extraction). The base is deep-copied and frozen."""

    uses_old_data = False

    def __init__(self, name: str, base: nn.Module, base_classes: Sequence[int], share: int | None) -> None:
        self.name = name
        self.predictor = GrownNet(copy.deepcopy(base), base_classes)
        self.predictor.freeze_base()
        self.share = share

    def resolve_share(self, share: int | None) -> int:
        n = self.predictor.num_blocks
        k = n if share is None else (n + share if share < 0 else share)
        if not 0 <= k <= n:
            raise UserError(f"sharing point {share} out of range 0..{n} for this network")
        return k

    def prepare_task(self, classes: Sequence[int], **options: Any) -> int:
        """Add a branch; ``share=`` overrides the learner's sharing point for this task."""
        share = options.get("share", self.share)
        branch = self.predictor.add_branch(self.resolve_share(share), classes)
        return branch.task

    def train_task(self, data: Dataset, cfg: TrainConfig, **fit_kwargs: Any) -> TrainRecord:
        grown = self.predictor
        branch = grown.branch(grown.tasks - 1)
        fit_kwargs.setdefault("desc", f"{self.name} task {branch.task}")
        result = fit_branch(grown, branch.task, data, cfg, **fit_kwargs)
        return TrainRecord(self.name, branch.task, branch.classes, branch.share, len(data), cfg.epochs,
                           False, count_parameters(branch.module), result)


class FineTuneLearner(Learner):
    """Naive fine-tuning of one network whose classifier grows with every task."""

    uses_old_data = False

    def __init__(self, name: str, base: nn.Module, base_classes: Sequence[int]) -> None:
        self.name = name
        model = copy.deepcopy(base)
        for p in model.parameters():
            p.requires_grad_(True)
        self.predictor = SingleNet(model, [list(base_classes)])

    def prepare_task(self, classes: Sequence[int], **options: Any) -> int:
        self.predictor.add_task(classes)
        return self.predictor.tasks - 1

    def train_task(self, data: Dataset, cfg: TrainConfig, **fit_kwargs: Any) -> TrainRecord:
        net = self.predictor
        task = net.tasks - 1
        fit_kwargs.setdefault("desc", f"{self.name} task {task}")
        result = fit(net.model, OffsetLabels(data, net.columns(task).start), cfg, **fit_kwargs)
        return TrainRecord(self.name, task, net.classes_of(task), None, len(data), cfg.epochs, False,
                           count_parameters(net.model), result)


class FullRetrainLearner(Learner):
    """Joint training from scratch on all data seen so far, classifier over all classes (upper bound).

    ``history`` holds every learned task's training data (local labels), task 0 first.
    ``model_factory(num_classes)`` builds the fresh network; without it the base architecture is copied and
    re-initialised (``reset_parameters`` on every module, running statistics reset).
    """

    uses_old_data = True

    def __init__(self, name: str, base: nn.Module, base_classes: Sequence[int], base_data: Dataset,
                 model_factory: ModelFactory | None = None) -> None:
        self.name = name
        self.model_factory = model_factory
        self._template = copy.deepcopy(base)
        self.predictor = SingleNet(copy.deepcopy(base), [list(base_classes)])
        self.history: list[Dataset] = [base_data]

    def _fresh(self, num_classes: int) -> nn.Module:
        if self.model_factory is not None:
            return self.model_factory(num_classes)
        model = copy.deepcopy(self._template)
        old = classifier_of(as_block_net(model).head)
        if old.out_features != num_classes:
            extend_classifier(model, num_classes - old.out_features)
        _reset_parameters(model)
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def prepare_task(self, classes: Sequence[int], **options: Any) -> int:
        task_classes = [self.predictor.classes_of(t) for t in range(self.predictor.tasks)]
        task_classes.append(_check_classes(classes, "classes"))
        model = self._fresh(sum(len(c) for c in task_classes))
        self.predictor = SingleNet(model, task_classes)
        return self.predictor.tasks - 1

    def train_task(self, data: Dataset, cfg: TrainConfig, **fit_kwargs: Any) -> TrainRecord:
        net = self.predictor
        task = net.tasks - 1
        if len(self.history) != task:
            raise ValueError(f"full retraining of task {task} needs the data of tasks 0..{task - 1} in history "
                             f"(has {len(self.history)})")
        parts = [OffsetLabels(d, net.columns(t).start) for t, d in enumerate([*self.history, data])]
        joint = ConcatDataset(parts)
        fit_kwargs.setdefault("desc", f"{self.name} task {task}")
        result = fit(net.model, joint, cfg, **fit_kwargs)
        self.history.append(data)
        return TrainRecord(self.name, task, net.classes_of(task), None, len(joint), cfg.epochs, True,
                           count_parameters(net.model), result)


# ---------------------------------------------------------------------------- strategies
@dataclass(frozen=True)
class Strategy:
    """A named way of learning new tasks.

    ``build(base, base_classes, base_data)`` returns a fresh :class:`Learner` that owns a deep copy of the
    trained base (strategies never disturb each other). ``share`` is the fixed sharing point, when any
    (None = decided per task, e.g. by a sharing-point search, or not applicable).
    """

    name: str
    description: str
    uses_old_data: bool
    build: Callable[[nn.Module, Sequence[int], Dataset], Learner]
    share: int | None = None


def make_strategy(name: str, *, share: int | None = None, model_factory: ModelFactory | None = None) -> Strategy:
    """The strategy called ``name`` (one of :data:`STRATEGY_NAMES`).

    ``share``: sharing point for ``partial_sharing`` (required; negative counts from the last block).
    ``model_factory``: fresh network builder for ``full_retraining`` (optional).
    """
    if name == "partial_sharing":
        if share is None:
            raise UserError("partial_sharing needs a sharing point (share=k)")
        return Strategy(name, f"clone-and-branch sharing the first {share} blocks", False,
                        lambda b, c, d: BranchLearner(name, b, c, share), share)
    if name == "regular_incremental":
        return Strategy(name, "clone-and-branch at k=0: full clone trained on the new task", False,
                        lambda b, c, d: BranchLearner(name, b, c, 0), 0)
    if name == "feature_extraction":
        return Strategy(name, "clone-and-branch at k=n: frozen base features, new head only", False,
                        lambda b, c, d: BranchLearner(name, b, c, None))
    if name == "fine_tuning":
        return Strategy(name, "one network, classifier extended, fine-tuned on the new task only", False,
                        lambda b, c, d: FineTuneLearner(name, b, c))
    if name == "full_retraining":
        return Strategy(name, "one network over all classes, retrained on all data seen so far", True,
                        lambda b, c, d: FullRetrainLearner(name, b, c, d, model_factory))
    raise UserError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGY_NAMES)})")
