"""References beside every clone-and-branch strategy: what the frozen base network alone gives, and what the
frozen features cap.

* **Base network only** — task-agnostic statistics of the frozen base network, fitted task by task on each
  task's own training images, with no branch at all: the analytic head and the trunk Gaussians
  (:mod:`incremental.agnostic`), exemplar-free exactly like the strategies' own methods. A strategy's Class-IL
  above this is what its branches add; at or below it, the branches add nothing to Class-IL.
* **Joint classifier on the frozen trunk** — multinomial logistic regression on the same expanded trunk
  features ``h(x)`` (:func:`incremental.agnostic.analytic.expansion`, each standardised), trained on every task's
  training images at once. It needs the old tasks' images: what a classifier trained jointly on the frozen
  features reaches, not a strategy. (The analytic head is the joint *ridge* classifier on the same features,
  exactly, without keeping an image.) Its L2 penalty is chosen on the validation splits (never test images).

Both are analyses, charged to no strategy (like the search's oracle). Accuracies are Class-IL averaged over
tasks (the mean of the last row of an accuracy matrix), on the test images and on the validation splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from incremental.agnostic.analytic import EXPANSION, AnalyticHead, expansion
from incremental.agnostic.gaussian import fit_gaussians

__all__ = ["TrunkSplit", "base_only", "joint_classifier", "task_averaged_accuracy", "JOINT_PENALTIES"]

#: L2 penalties the joint classifier is fitted with (one is chosen on the validation splits)
JOINT_PENALTIES = (1e-2, 1.0)
#: LBFGS iterations of each fit (standardised features: converged within a few tenths of a point)
MAX_ITERATIONS = 100


@dataclass
class TrunkSplit:
    """Trunk-space features of every task's images of one split: ``features[t]`` (N_t x D), global ``labels[t]``."""

    features: list[Tensor]
    labels: list[Tensor]


def task_averaged_accuracy(predicted: list[Tensor], labels: list[Tensor]) -> float:
    """Mean over tasks of the accuracy on each task's images (the average accuracy of a matrix's last row)."""
    return float(sum(float((p == y).double().mean()) for p, y in zip(predicted, labels)) / len(labels))


def base_only(train: TrunkSplit, sizes: list[int], evaluate: dict[str, TrunkSplit], width: int = EXPANSION,
              covariance: str = "task") -> dict[str, dict[str, float]]:
    """Class-IL of the base network alone after the last task: ``{method: {split: accuracy}}``, methods
    ``analytic-head`` (running sums over the tasks' images) and ``trunk-gaussian`` (per-class Gaussians per task)."""
    head = AnalyticHead(width)
    gaussians = []
    for t, (x, y) in enumerate(zip(train.features, train.labels)):
        offset = sum(sizes[:t])
        head.add(x, y, offset + sizes[t])
        gaussians.append(fit_gaussians(x, y - offset, sizes[t], covariance, normalised=True))
    out: dict[str, dict[str, float]] = {"analytic-head": {}, "trunk-gaussian": {}}
    for split, data in evaluate.items():
        out["analytic-head"][split] = task_averaged_accuracy(
            [head.scores(x).argmax(dim=1) for x in data.features], data.labels)
        out["trunk-gaussian"][split] = task_averaged_accuracy(
            [torch.cat([g.distances(x) for g in gaussians], dim=1).argmin(dim=1) for x in data.features], data.labels)
    return out


def _logistic(z: Tensor, y: Tensor, classes: int, penalty: float) -> Tensor:
    """Weights (M+1 x C, bias last) minimising ``CE(z W + b, y) + penalty ||W||^2 / (2 N)`` on standardised
    features ``z`` (full-batch LBFGS, 100 iterations)."""
    w = torch.zeros(z.shape[1] + 1, classes, dtype=z.dtype, requires_grad=True)
    zb = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], dim=1)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=MAX_ITERATIONS, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(zb @ w, y) + 0.5 * penalty * (w[:-1] ** 2).sum() / len(z)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def joint_classifier(train: TrunkSplit, classes: int, validation: TrunkSplit | None,
                     evaluate: dict[str, TrunkSplit], width: int = EXPANSION) -> dict[str, object]:
    """The joint classifier (module docstring): ``{"penalty", split: accuracy ...}``; the penalty with the best
    validation accuracy (the smallest penalty when there is no validation split)."""
    x = torch.cat(train.features).float()
    r = expansion(x.shape[1], width).float()
    h = torch.relu(x @ r)
    mean, std = h.mean(dim=0), h.std(dim=0).clamp_min(1e-6)  # standardised: LBFGS converges in ~100 steps

    def expand(f: Tensor) -> Tensor:
        return (torch.relu(f.float() @ r) - mean) / std

    y = torch.cat(train.labels).long()

    def predict(w: Tensor, data: TrunkSplit) -> list[Tensor]:
        return [(torch.cat([expand(f), torch.ones(len(f), 1)], 1) @ w).argmax(1) for f in data.features]

    z = (h - mean) / std
    fits = {p: _logistic(z, y, classes, p) for p in (JOINT_PENALTIES if validation else JOINT_PENALTIES[:1])}
    if validation is not None:
        scores = {p: task_averaged_accuracy(predict(w, validation), validation.labels) for p, w in fits.items()}
        penalty = max(scores, key=lambda p: (scores[p], p))
    else:
        penalty = JOINT_PENALTIES[0]
    out: dict[str, object] = {"penalty": penalty}
    for split, data in evaluate.items():
        out[split] = task_averaged_accuracy(predict(fits[penalty], data), data.labels)
    return out
