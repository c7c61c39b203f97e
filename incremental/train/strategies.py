"""Strategies for learning a sequence of tasks: partial sharing and the baselines it is compared with.

Every strategy starts from the same base network trained on task 0 and learns tasks 1, 2, ... one at a
time. A :class:`Strategy` (name, description, whether it needs old data, a ``build`` function) builds a
:class:`Learner`; the learner owns a *predictor* with the common inference interface of
:class:`~incremental.model.branching.GrownNet` (``tasks``, ``classes_of``, ``all_classes``, ``forward_all``,
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

from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from energymodel.errors import UserError
from energymodel.models.blocks import as_block_net, classifier_of
from incremental.model.branching import GrownNet, _check_classes
from incremental.model.single import ModelFactory, SingleNet, extend_classifier, rebuild_predictor
from incremental.train.config import FitResult, TrainConfig, count_parameters
from incremental.train.loop import fit, fit_branch

__all__ = ["STRATEGY_NAMES", "BranchLearner", "FineTuneLearner", "FullRetrainLearner", "Learner", "OffsetLabels", "SingleNet", "Strategy", "TrainRecord", "extend_classifier", "make_strategy", "rebuild_predictor"]

STRATEGY_NAMES = ("partial_sharing", "regular_incremental", "feature_extraction", "fine_tuning", "full_retraining")



@dataclass
class TrainRecord:
    """What a strategy trained for one task (input to the cost ledger).

    ``share``: sharing point of the trained branch (None for single-network strategies, which train every
    block). ``samples``: training-set size of this step (all seen tasks for full retraining); ``epochs``:
    passes over it; ``used_old_data``: whether earlier tasks' data was needed. ``trainable_params``:
    parameters that received gradients. ``fit``: timing and caching details from :func:`~incremental.train.loop.fit`.
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
