"""The sharing-point search: trial branches at candidate sharing points, the deepest within tolerance of k = 0.

:func:`search_sharing_point` evaluates the no-sharing reference ``k = 0`` first. A reference that is not clearly
above chance means the trials learned nothing yet (too few optimizer steps, too few images), and comparing
sharing points on such trials chooses at random — so the search never falls back to ``k = 0`` silently:

* "clearly above chance" is a one-sided binomial test: ``acc(0) >= p + Z sqrt(p (1 - p) / n)`` with chance
  ``p = 1 / C`` for ``C`` classes, ``n`` validation images and ``Z = 3`` (:func:`above_chance`);
* if it fails, every trial is retrained ``longer`` (4x the steps); if it fails again the search stops with a
  one-line :class:`SearchFailed` that says what to change.

Then every other candidate is tried, deepest first, and the chosen point is
``k* = max {k : acc(k) >= acc(0) - tolerance}``. Each trial's accuracy comes with its binomial standard error,
Agresti-Coull's ``sqrt(q (1 - q) / (n + 4))`` with ``q = (acc n + 2) / (n + 4)`` (:func:`standard_error`; the
plain ``sqrt(acc (1 - acc) / n)`` tends to 0 as acc tends to 1 and calls 149 of 150 images precise), and the search
warns when the tolerance is below twice the reference's, so a reader sees when the choice is within the noise.

:func:`trial_epochs` sets a trial's length by a floor on optimizer steps, so a trial is never a handful of steps
whatever the subset and the configured epochs. :func:`sharing_trial` builds the ``train_branch`` callable for a
:class:`~incremental.model.branching.GrownNet`; :func:`oracle_report` compares the choice with fully trained branches.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from torch.utils.data import Dataset

from energymodel.errors import UserError
from incremental.model.branching import GrownNet
from incremental.search.oracle import oracle_report
from incremental.train.config import TrainConfig
from incremental.train.loop import evaluate_logits, fit_branch

__all__ = ["SearchFailed", "SharingSearch", "above_chance", "oracle_report", "search_sharing_point", "sharing_trial", "trial_epochs", "Z_CHANCE", "LONGER"]

logger = logging.getLogger("incremental")

#: z-score of the one-sided binomial test "the reference is above chance".
Z_CHANCE = 3.0
#: How much longer trials train after a reference at chance.
LONGER = 4


class SearchFailed(UserError):
    """The sharing-point search cannot decide (its reference trial stayed at chance)."""


def above_chance(accuracy: float, classes: int, samples: int, z: float = Z_CHANCE, chance: float | None = None
                 ) -> bool:
    """``accuracy >= p + z sqrt(p (1 - p) / samples)`` with ``p = 1 / classes`` (one-sided binomial test), or
    ``p = chance`` when given (e.g. the mean of ``1 / C_t`` over tasks of different sizes)."""
    p = 1.0 / max(classes, 1) if chance is None else float(chance)
    if p >= 1.0:
        return True
    return accuracy >= p + z * math.sqrt(p * (1 - p) / max(samples, 1))


def standard_error(accuracy: float, samples: int) -> float:
    """Agresti-Coull standard error of an accuracy on ``samples`` images: ``sqrt(q (1 - q) / (n + 4))``,
    ``q = (accuracy n + 2) / (n + 4)`` (two successes and two failures added; never 0 at accuracy 0 or 1).

    Example: 149 of 150 right: ``q = 151 / 154 = 0.9805``, SE = ``sqrt(0.9805 x 0.0195 / 154) = 0.0111``.
    """
    n = max(samples, 0)
    q = (accuracy * n + 2) / (n + 4)
    return math.sqrt(q * (1 - q) / (n + 4))


def trial_epochs(epochs: int, samples: int, batch: int, min_steps: int) -> int:
    """Epochs of a trial: ``max(epochs, ceil(min_steps / ceil(samples / batch)))``."""
    steps_per_epoch = max(1, math.ceil(samples / max(batch, 1)))
    return max(int(epochs), math.ceil(min_steps / steps_per_epoch))


@dataclass
class SharingSearch:
    """Result of :func:`search_sharing_point`.

    ``curve``: one row per evaluated sharing point, ascending: ``share``, ``accuracy``, ``stderr``, ``drop``
    (reference - accuracy), ``within_tolerance``, ``chosen``, ``seconds`` and any cost columns.
    ``longer``: the trials were retrained longer because the first reference stayed at chance.
    """

    curve: pd.DataFrame
    chosen: int
    reference_accuracy: float
    tolerance: float
    longer: bool = False
    chance: float | None = None
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy (NaN -> None)."""
        rows = [
            {k: (None if isinstance(v, float) and math.isnan(v) else _plain(v)) for k, v in row.items()}
            for row in self.curve.to_dict(orient="records")
        ]
        return {"chosen": self.chosen, "reference_accuracy": self.reference_accuracy, "tolerance": self.tolerance,
                "longer": self.longer, "chance": self.chance, "warning": self.warning, "curve": rows}


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def search_sharing_point(
    train_branch: Callable[[int], float],
    candidates: Sequence[int],
    tolerance: float,
    costs: Mapping[int, Mapping[str, Any]] | None = None,
    *,
    classes: int | None = None,
    val_samples: int | None = None,
    longer: Callable[[int], float] | None = None,
    stop_early: bool = False,
) -> SharingSearch:
    """Choose the deepest sharing point whose accuracy is within ``tolerance`` of no sharing (module docstring).

    ``train_branch(k)`` trains a trial branch at ``k`` and returns its held-out accuracy. With ``classes`` and
    ``val_samples`` the reference is tested against chance; ``longer(k)`` is the longer trial used when it
    fails (without it the search stops at once). ``costs[k]`` is merged into the curve as extra columns.
    ``stop_early``: stop at the first candidate (deepest first) within tolerance — it is the chosen point by
    the rule, so the choice is the same; the curve then lacks the shallower points (and their cost).
    """
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    shares = sorted({int(k) for k in candidates} | {0})
    if shares[0] < 0:
        raise ValueError(f"sharing points must be >= 0, got {shares[0]}")
    accuracy: dict[int, float] = {}
    seconds: dict[int, float] = {}

    def trial(fn: Callable[[int], float], k: int) -> None:
        t0 = time.perf_counter()
        acc = float(fn(k))
        seconds[k] = time.perf_counter() - t0
        if not math.isfinite(acc):
            raise ValueError(f"train_branch({k}) returned a non-finite accuracy {acc}")
        accuracy[k] = acc
        logger.info("sharing point %d: held-out accuracy %.4f (%.1f s)", k, acc, seconds[k])

    check = classes is not None and val_samples is not None
    trainer, retrained = train_branch, False
    trial(trainer, 0)
    if check and not above_chance(accuracy[0], classes, val_samples):
        first = accuracy[0]
        if longer is None:
            raise _failure(first, classes, val_samples, retried=False)
        logger.warning("sharing-point search: the k=0 reference reached %.1f%% (chance %.1f%%, %d validation "
                       "images): retraining every trial %dx longer", 100 * first, 100 / classes, val_samples, LONGER)
        trainer, retrained = longer, True
        trial(trainer, 0)
        if not above_chance(accuracy[0], classes, val_samples):
            raise _failure(accuracy[0], classes, val_samples, retried=True)
    for k in sorted(shares, reverse=True):
        if k != 0:
            trial(trainer, k)
            if stop_early and accuracy[k] >= accuracy[0] - tolerance - 1e-12:
                break
    shares = sorted(accuracy)
    ref = accuracy[0]
    within = {k: accuracy[k] >= ref - tolerance - 1e-12 for k in shares}
    chosen = max(k for k in shares if within[k])
    n = val_samples or 0
    rows = []
    for k in shares:
        row: dict[str, Any] = {
            "share": k, "accuracy": accuracy[k],
            "stderr": standard_error(accuracy[k], n) if n else float("nan"),
            "drop": ref - accuracy[k], "within_tolerance": within[k], "chosen": k == chosen, "seconds": seconds[k],
        }
        for name, value in ((costs or {}).get(k) or {}).items():
            if name in row:
                raise ValueError(f"cost column {name!r} clashes with a curve column")
            row[name] = value
        rows.append(row)
    warning = None
    if n and tolerance < 2 * standard_error(ref, n):
        warning = (f"tolerance {tolerance:.3f} is below twice the standard error of the trials "
                   f"({standard_error(ref, n):.3f} on {n} validation images): the choice is noisy")
    logger.info("sharing-point search: chose k=%d (reference accuracy %.4f, tolerance %.4f)", chosen, ref, tolerance)
    return SharingSearch(curve=pd.DataFrame(rows), chosen=chosen, reference_accuracy=ref, tolerance=float(tolerance),
                         longer=retrained, chance=1.0 / classes if classes else None, warning=warning)


def _failure(acc: float, classes: int, n: int, retried: bool) -> SearchFailed:
    what = f"even after training {LONGER}x longer " if retried else ""
    return SearchFailed(
        f"sharing-point search: the no-sharing reference (k=0) reached only {100 * acc:.1f}% {what}on {n} "
        f"validation images of {classes} classes (chance {100 / classes:.1f}%): raise search.min_steps or "
        "search.subset_per_class, or set share to a sharing point")


def sharing_trial(grown: GrownNet, train_data: Dataset, val_data: Dataset, num_classes: int, cfg: TrainConfig,
                  *, augment_before_prefix: bool = False) -> Callable[[int], float]:
    """A ``train_branch(k)`` for :func:`search_sharing_point` on ``grown``.

    Each call grows a temporary branch at ``k`` (cloned from the base, like a real one), trains it on
    ``train_data`` with ``cfg``, measures task-aware accuracy on ``val_data`` (local labels) and removes the
    branch again, so ``grown`` is unchanged afterwards (apart from its base being frozen).
    """
    placeholder = list(range(-num_classes, 0))  # never a real class id; the branch is removed afterwards

    def train_branch(k: int) -> float:
        branch = grown.add_branch(k, placeholder)
        try:
            fit_branch(grown, branch.task, train_data, cfg, augment_before_prefix=augment_before_prefix,
                       desc=f"trial k={k}")
            was_training = branch.module.training
            branch.module.eval()
            try:
                device = next(branch.module.parameters()).device
                logits, labels = evaluate_logits(lambda x: grown.forward_task(x, branch.task), val_data,
                                                 cfg.batch_size, device)
            finally:
                branch.module.train(was_training)
            return float((logits.argmax(dim=1) == labels).double().mean())
        finally:
            grown.pop_branch()

    return train_branch


