"""Task-agnostic prediction methods: one small class per method in a registry (like the cost model's op rules).

A method is fitted **one task at a time, on that task's own data only** (its training images, and its held-out
images where it standardises a score) — never on another task's images — and predicts over the classes of all
tasks learned so far. No image of an old task is ever stored: only the statistics below.

============================  ======================================================================================
``raw-logits``                argmax over the concatenated logits of every task
``calibrated-logits``         the same after each task's output calibration ``logits / T_t + b_t``
``branch-gaussian``           per-class Gaussians in each task's **own** penultimate space (its branch);
                              score ``-(d^2 - med_t) / spread_t``: the distance standardised by its median and spread
                              on task t's own held-out images, so branches of different depth and width compare
``common-gaussian``           per-class Gaussians in **one common** space every input passes through (the base
                              network's penultimate features), argmin Mahalanobis over all classes (FeCAM-style)
``trunk-gaussian``            per-class Gaussians in the **trunk** space: every block of the base network pooled
                              per channel, each block power-normalised, concatenated (multi-layer Mahalanobis,
                              Lee et al. 2018, in FeCAM's manner); argmin over all classes
``combined-gaussian``         sum of the standardised own-space and common-space scores
``routed``                    choose the task by the trunk Gaussians' nearest class, then that task's own argmax
                              (its branch's logits: the task-aware classifier)
``gaussian-ensemble``         a likelihood ensemble of the experts that share the trunk (SEED, Rypesc et al., ICLR
                              2024): the task posterior from the trunk Gaussians' likelihoods, and within the task
                              the geometric mean of the trunk's and the branch's own-space Gaussian posteriors
``analytic-head``             a ridge head on a random expansion of the trunk features, exact over every task's
                              images from running sums (:mod:`incremental.agnostic.analytic`; RanPAC, ACIL)
``analytic-ensemble``         the task posterior from the analytic head (its softmax at a temperature fitted on the
                              task's held-out images), and within the task the geometric mean of the head's and the
                              task's own classifier's posteriors (its branch's calibrated logits)
============================  ======================================================================================

Scores are returned as one matrix ``N x sum_t C_t`` in task order (the columns of task-agnostic logits), so
``argmax`` gives the column and ``all_classes[column]`` the global class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from energymodel.errors import UserError
from incremental.agnostic.analytic import EXPANSION, AnalyticHead
from incremental.agnostic.features import Outputs
from incremental.agnostic.gaussian import Gaussians, Scale, fit_gaussians, fit_scale
from incremental.agnostic.output_calibration import fit_temperature_bias

__all__ = ["METHODS", "AgnosticMethod", "make_method", "method_names", "register_method", "TaskData"]


class TaskData:
    """One task's own data as a method may see it: ``logits`` (N x C), ``own`` and ``common`` features, ``labels``;
    :meth:`features` gives any feature space (the trunk mapped by :func:`multi_block_normalise`)."""

    def __init__(self, outputs: Outputs, task: int) -> None:
        self.task = task
        self.outputs = outputs
        self.logits = outputs.logits[task]
        self.own = outputs.own[task]
        self.common = outputs.common
        self.labels = outputs.labels
        self.num_classes = int(self.logits.shape[1])

    def features(self, space: str) -> Tensor:
        return self.outputs.space(space, self.task)


class AgnosticMethod(ABC):
    """Fit per task (``fit_task``), score all classes (``scores``), persist (``state``/``load``), size (``words``)."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: needs a forward pass over the task's training images (the Gaussians) / its held-out images
    uses_training_pass: ClassVar[bool] = False
    uses_heldout_pass: ClassVar[bool] = False
    #: each task rewrites the whole statistics (running sums) instead of adding its own
    rewrites_statistics: ClassVar[bool] = False
    #: bits of one stored number (the statistics' storage and DRAM traffic are priced at this width)
    number_bits: ClassVar[int] = 32

    def __init__(self, covariance: str = "class", expansion: int = EXPANSION) -> None:
        self.covariance = covariance
        self.expansion = int(expansion)

    def fit_task(self, train: TaskData, heldout: TaskData | None) -> None:  # noqa: B027 - optional
        """Fit task ``train.task`` from its own data (tasks arrive in order 0, 1, 2, ...)."""

    @abstractmethod
    def scores(self, out: Outputs) -> Tensor:
        """``N x sum_t C_t`` scores over the classes of the first ``out.tasks`` tasks (higher = more likely)."""

    def predict(self, out: Outputs) -> Tensor:
        """Column (in task order) of the best class of every input."""
        return self.scores(out).argmax(dim=1)

    def state(self) -> dict[str, Any]:
        return {}

    def load(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional
        pass

    def words(self) -> int:
        """Numbers the method stores (its statistics); 0 for the logit methods."""
        return 0

    def arithmetic_macs(self, samples: int, dims: dict[str, int], classes: int, total_classes: int = 0) -> float:
        """MACs of fitting one task's statistics from ``samples`` features; ``dims``: width of each feature space
        (``own``, ``common``, ``trunk``); ``classes`` the task's, ``total_classes`` every task's so far."""
        return 0.0

    def query_macs(self, dims: dict[str, int], classes: int, tasks: int) -> float:
        """MACs of scoring one input over ``classes`` classes of ``tasks`` tasks (beyond the networks' passes)."""
        return 0.0


METHODS: dict[str, type[AgnosticMethod]] = {}


def register_method(cls: type[AgnosticMethod]) -> type[AgnosticMethod]:
    """Add a method class to :data:`METHODS` under its ``name`` (a decorator)."""
    METHODS[cls.name] = cls
    return cls


def method_names() -> list[str]:
    return list(METHODS)


def make_method(name: str, **options: Any) -> AgnosticMethod:
    if name not in METHODS:
        raise UserError(f"unknown task-agnostic method {name!r} (choose from {', '.join(METHODS)})")
    return METHODS[name](**options)


# ---------------------------------------------------------------------------- logits
@register_method
class RawLogits(AgnosticMethod):
    name = "raw-logits"
    description = "argmax over all tasks' concatenated logits"

    def scores(self, out: Outputs) -> Tensor:
        return torch.cat(out.logits, dim=1)


@register_method
class CalibratedLogits(AgnosticMethod):
    name = "calibrated-logits"
    description = "argmax over logits / T_t + b_t (per-task output calibration on the task's own held-out images)"
    uses_heldout_pass = True

    def scores(self, out: Outputs) -> Tensor:
        if out.calibration is None:
            return torch.cat(out.logits, dim=1)
        return torch.cat([lg / t + b for lg, (t, b) in zip(out.logits, out.calibration)], dim=1)


# ---------------------------------------------------------------------------- Gaussians
def _covariance_macs(samples: int, dims: int, classes: int, covariance: str) -> float:
    """Fitting cost in MACs: ``N D^2`` for the scatter matrices + ``D^3`` per inverted covariance."""
    inversions = classes if covariance == "class" else 1
    return float(samples) * dims * dims + float(inversions) * dims**3


_SPACES = ("own", "common", "trunk")


class _GaussianMethod(AgnosticMethod):
    uses_training_pass = True
    #: the feature spaces the method fits, each one Gaussian per class per task
    spaces: ClassVar[tuple[str, ...]]
    #: the spaces whose distances are standardised per task (a location and spread from held-out images)
    standardised: ClassVar[tuple[str, ...]] = ()

    def __init__(self, covariance: str = "class", expansion: int = EXPANSION) -> None:
        super().__init__(covariance, expansion)
        self.gaussians: dict[str, list[Gaussians]] = {s: [] for s in _SPACES}
        self.scales: dict[str, list[Scale]] = {s: [] for s in _SPACES}

    def fit_task(self, train: TaskData, heldout: TaskData | None) -> None:
        for space in self.spaces:
            self._fit_space(space, train, heldout)

    def _fit_space(self, space: str, train: TaskData, heldout: TaskData | None) -> None:
        g = fit_gaussians(train.features(space), train.labels, train.num_classes, self.covariance,
                          normalised=space == "trunk")
        self.gaussians[space].append(g)
        if space in self.standardised:
            ref = heldout if heldout is not None else train
            d = g.distances(ref.features(space))
            own_best = d.gather(1, ref.labels.view(-1, 1).clamp_min(0)).squeeze(1)  # distance to the true class
            self.scales[space].append(fit_scale(own_best))

    def _distances(self, space: str, out: Outputs) -> list[Tensor]:
        """Squared distances (N x C_t) of every input to every class of every task, in ``space``."""
        self._check(out, (space,))
        return [self.gaussians[space][t].distances(out.space(space, t)) for t in range(out.tasks)]

    def _standardised(self, space: str, out: Outputs) -> Tensor:
        d = self._distances(space, out)
        return torch.cat([-self.scales[space][t].standardise(d[t]) for t in range(out.tasks)], dim=1)

    def _check(self, out: Outputs, spaces: tuple[str, ...]) -> None:
        for space in spaces:
            if len(self.gaussians[space]) < out.tasks:
                raise UserError(f"task-agnostic method {self.name}: statistics of {len(self.gaussians[space])} "
                                f"task(s) but {out.tasks} to predict (the checkpoint lacks them)")

    def words(self) -> int:
        n = sum(g.words() for space in self.gaussians.values() for g in space)
        return n + 2 * sum(len(s) for s in self.scales.values())

    def arithmetic_macs(self, samples: int, dims: dict[str, int], classes: int, total_classes: int = 0) -> float:
        return sum(_covariance_macs(samples, dims[s], classes, self.covariance) for s in self.spaces)

    def query_macs(self, dims: dict[str, int], classes: int, tasks: int) -> float:
        """One Mahalanobis distance per class and space: ``D^2 + D`` MACs."""
        return float(sum(classes * (dims[s] ** 2 + dims[s]) for s in self.spaces))

    def state(self) -> dict[str, Any]:
        return {space: [g.state() for g in gs] for space, gs in self.gaussians.items()} | {
            f"{space}_scales": torch.tensor([[s.location, s.spread] for s in ss], dtype=torch.float64).reshape(-1, 2)
            for space, ss in self.scales.items()}

    def load(self, state: dict[str, Any]) -> None:
        for space in _SPACES:
            self.gaussians[space] = [Gaussians.from_state(s) for s in state.get(space, [])]
            self.scales[space] = [Scale(float(r[0]), float(r[1])) for r in state.get(f"{space}_scales", [])]


@register_method
class BranchGaussian(_GaussianMethod):
    spaces = ("own",)
    standardised = ("own",)
    uses_heldout_pass = True
    name = "branch-gaussian"
    description = "per-class Gaussians in each branch's own penultimate space, distances standardised per task"

    def scores(self, out: Outputs) -> Tensor:
        return self._standardised("own", out)


class _SharedSpaceGaussian(_GaussianMethod):
    """Argmin Mahalanobis over all classes in one space every task shares: distances compare unstandardised."""

    def scores(self, out: Outputs) -> Tensor:
        return -torch.cat(self._distances(self.spaces[0], out), dim=1)


@register_method
class CommonGaussian(_SharedSpaceGaussian):
    spaces = ("common",)
    name = "common-gaussian"
    description = "per-class Gaussians in the base network's penultimate space, argmin Mahalanobis (FeCAM-style)"


@register_method
class TrunkGaussian(_SharedSpaceGaussian):
    spaces = ("trunk",)
    name = "trunk-gaussian"
    description = "per-class Gaussians in the trunk space (every base block pooled, concatenated), argmin Mahalanobis"


@register_method
class CombinedGaussian(_GaussianMethod):
    spaces = ("own", "common")
    standardised = ("own", "common")
    uses_heldout_pass = True
    name = "combined-gaussian"
    description = "own-space + common-space standardised Gaussian scores"

    def scores(self, out: Outputs) -> Tensor:
        return self._standardised("own", out) + self._standardised("common", out)


@register_method
class Routed(TrunkGaussian):
    name = "routed"
    description = "task chosen by the trunk Gaussians' nearest class, class by that task's own classifier"

    def scores(self, out: Outputs) -> Tensor:
        dist = self._distances("trunk", out)
        task = torch.stack([d.min(dim=1).values for d in dist], dim=1).argmin(dim=1)
        sizes = [lg.shape[1] for lg in out.logits]
        result = torch.full((len(task), sum(sizes)), float("-inf"), dtype=torch.float64)
        start = 0
        for t, lg in enumerate(out.logits):
            mask = task == t
            result[mask, start:start + sizes[t]] = lg[mask].double()
            start += sizes[t]
        return result


# ---------------------------------------------------------------------------- ensembles and analytic heads
def task_ensemble(joint: Tensor, sizes: list[int], experts: list[Tensor]) -> Tensor:
    """Scores of a routed ensemble: ``joint`` (``N x sum C_t``, log-likelihoods or logits over every class) gives
    the task, and within the task the joint's and the task's own expert's posteriors vote equally::

        score(c) = log p(t | x) + (log p(c | x, t) + log q_t(c | x)) / 2,     t the task of class c,

    with ``p = softmax(joint)``, ``p(t | x) = sum_{c in t} p(c | x)``, ``p(c | x, t) = p(c | x) / p(t | x)`` and
    ``q_t = softmax(experts[t])`` over task ``t``'s classes (a geometric mean of two posteriors: a product of
    experts). The argmax is the prediction.
    """
    lp = torch.log_softmax(joint.double(), dim=1)
    out, start = [], 0
    for size, expert in zip(sizes, experts):
        seg = lp[:, start:start + size]
        lpt = torch.logsumexp(seg, dim=1, keepdim=True)
        out.append(lpt + 0.5 * (seg - lpt) + 0.5 * torch.log_softmax(expert.double(), dim=1))
        start += size
    return torch.cat(out, dim=1)


@register_method
class GaussianEnsemble(_GaussianMethod):
    spaces = ("trunk", "own")
    name = "gaussian-ensemble"
    description = ("likelihood ensemble of the trunk and each branch (SEED-style experts sharing early layers): task "
                   "from the trunk Gaussians, class by both experts' Gaussian posteriors")

    def scores(self, out: Outputs) -> Tensor:
        """``joint`` = trunk log-likelihoods ``-(d^2 + log|Sigma|) / 2``; experts = own-space ``-d^2 / 2``."""
        trunk = self._distances("trunk", out)
        own = self._distances("own", out)
        joint = torch.cat([-0.5 * (d + self.gaussians["trunk"][t].log_det()) for t, d in enumerate(trunk)], dim=1)
        return task_ensemble(joint, [d.shape[1] for d in trunk], [-0.5 * d for d in own])


@register_method
class AnalyticHeadMethod(AgnosticMethod):
    name = "analytic-head"
    description = "ridge head on a random expansion of the trunk features, exact over every task's images"
    uses_training_pass = True
    rewrites_statistics = True
    number_bits = 64

    def __init__(self, covariance: str = "task", expansion: int = EXPANSION) -> None:
        super().__init__(covariance, expansion)
        self.head = AnalyticHead(expansion)
        self.sizes: list[int] = []

    def fit_task(self, train: TaskData, heldout: TaskData | None) -> None:
        offset = sum(self.sizes)
        self.sizes.append(train.num_classes)
        self.head.add(train.features("trunk"), train.labels + offset, offset + train.num_classes)

    def _joint(self, out: Outputs) -> Tensor:
        if len(self.sizes) < out.tasks:
            raise UserError(f"task-agnostic method {self.name}: statistics of {len(self.sizes)} task(s) but "
                            f"{out.tasks} to predict (the checkpoint lacks them)")
        return self.head.scores(out.trunk_space)[:, :sum(self.sizes[:out.tasks])]

    def scores(self, out: Outputs) -> Tensor:
        return self._joint(out)

    def words(self) -> int:
        return self.head.words()

    def arithmetic_macs(self, samples: int, dims: dict[str, int], classes: int, total_classes: int = 0) -> float:
        return AnalyticHead.fitting_macs(samples, dims["trunk"], self.head.width, classes, total_classes or classes)

    def query_macs(self, dims: dict[str, int], classes: int, tasks: int) -> float:
        """The expansion ``D M`` and the head ``M C``."""
        return float(dims["trunk"] * self.head.width + self.head.width * classes)

    def state(self) -> dict[str, Any]:
        return {"head": self.head.state(), "sizes": list(self.sizes)}

    def load(self, state: dict[str, Any]) -> None:
        self.head = AnalyticHead(int(state["head"]["width"]))
        self.head.load(state["head"])
        self.sizes = [int(v) for v in state["sizes"]]


@register_method
class AnalyticEnsemble(AnalyticHeadMethod):
    name = "analytic-ensemble"
    description = "task from the analytic head, class by the head's and the task's own classifier's posteriors"
    uses_heldout_pass = True

    def __init__(self, covariance: str = "task", expansion: int = EXPANSION) -> None:
        super().__init__(covariance, expansion)
        self.sharpness = 1.0

    def fit_task(self, train: TaskData, heldout: TaskData | None) -> None:
        """The head, then its sharpness ``beta`` (``softmax(beta S)``): NLL on the task's own held-out images
        (:func:`~incremental.agnostic.output_calibration.fit_temperature_bias`, ``beta = 1 / T``)."""
        super().fit_task(train, heldout)
        ref = heldout if heldout is not None else train
        offset = sum(self.sizes[:-1])
        temperature, _ = fit_temperature_bias(self.head.scores(ref.features("trunk")), ref.labels + offset)
        self.sharpness = 1.0 / temperature

    def scores(self, out: Outputs) -> Tensor:
        cal = out.calibration or [(1.0, 0.0)] * out.tasks
        experts = [lg / t for lg, (t, _) in zip(out.logits, cal)]
        return task_ensemble(self.sharpness * self._joint(out), self.sizes[:out.tasks], experts)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "sharpness": float(self.sharpness)}

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.sharpness = float(state["sharpness"])
