"""Output calibration: a per-branch temperature and bias, so that branches trained alone share one logit scale.

Each branch is trained alone on its own task, so the logits of different branches live on unrelated
scales (one branch may be far more confident, or simply produce larger numbers, than another). Task-agnostic
prediction takes the argmax over the concatenation of all branches' logits, so a branch with large logits
wins for every input. Each task therefore gets ``calibrated = logits / T + b``:

* ``T`` (temperature) minimises the negative log-likelihood of ``softmax(logits / T)`` on held-out data of
  the branch's **own** task (LBFGS on ``log T``). This fixes over/under-confidence *within* the branch: the
  logit scale now means the same thing (calibrated probabilities) for every branch.
* A scalar ``b`` cancels inside one softmax, so NLL cannot determine it. It is set by per-branch
  standardisation: ``b = target - mean_i max_c(logits_i / T)`` over the branch's own held-out data, i.e.
  every branch's typical winning calibrated logit on its own data equals the same ``target`` (0). A branch
  shown an input from another task usually produces a lower max logit than on its own data, so it loses
  the concatenated argmax to the branch that owns the input.

Why no old data is needed: both ``T`` and ``b`` of a branch depend only on that branch's logits on its own
task's held-out data, and the common target is a constant. A branch is calibrated once, when its task is
learned; earlier branches (whose data may be gone) are never recalibrated, yet all land on the same scale.
Calibration changes neither task-aware predictions (``T > 0`` keeps the argmax within a task) nor any
weight; it is stored as per-task buffers of the :class:`~incremental.model.branching.GrownNet`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Subset

from incremental.model.branching import GrownNet
from incremental.train.loop import evaluate_logits

__all__ = [
    "CALIBRATION_METHODS",
    "CalibrationResult",
    "calibrate",
    "fit_temperature_bias",
    "holdout_split",
    "random_subset",
]

logger = logging.getLogger("incremental")

T_MIN, T_MAX = 1e-3, 1e6
CALIBRATION_METHODS = ("nll", "zscore")


@dataclass
class CalibrationResult:
    """Outcome of calibrating one task."""

    task: int
    temperature: float
    bias: float
    nll_before: float
    nll_after: float
    mean_max_logit: float  # mean max of logits / T on the held-out data (before adding the bias)
    samples: int


def fit_temperature_bias(
    logits: Tensor, labels: Tensor, target: float = 0.0, method: str = "nll"
) -> tuple[float, float]:
    """Fit one branch's ``(T, b)`` from its own task's held-out ``logits`` (N x C) and local ``labels`` (N).

    ``method="nll"`` (default): ``T`` minimises ``NLL(softmax(logits / T), labels)`` (LBFGS on ``log T``,
    clamped to [1e-3, 1e6]). ``method="zscore"``: ``T`` = standard deviation of the per-sample max logit
    (labels unused), so every branch's own-data max logit gets unit spread; unlike NLL it stays well
    defined when the held-out data are perfectly separated (where the NLL optimum runs to ``T -> 0``).
    Either way ``b = target - mean(max(logits / T, dim=1))`` standardises the branch's typical winning
    logit to ``target``. See the module docstring for why this needs no other task's data.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r} (choose from {', '.join(CALIBRATION_METHODS)})")
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty N x C matrix, got shape {tuple(logits.shape)}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    z = logits.detach().double().cpu()
    y = labels.detach().long().cpu()
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must lie in 0..{z.shape[1] - 1}")
    if not torch.isfinite(z).all():
        raise ValueError("logits contain NaN or inf")
    temperature = 1.0
    if method == "zscore":
        spread = float(z.max(dim=1).values.std(unbiased=False))
        temperature = min(max(spread, T_MIN), T_MAX) if spread > 0 else 1.0
    elif z.shape[1] > 1:
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(z / log_t.exp(), y)
            loss.backward()
            return loss

        opt.step(closure)
        value = float(log_t.detach().exp())
        temperature = min(max(value, T_MIN), T_MAX) if math.isfinite(value) else 1.0
    bias = float(target) - float((z / temperature).max(dim=1).values.mean())
    return temperature, bias


def calibrate(
    grown: GrownNet,
    heldout: Mapping[int, Dataset],
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    target: float = 0.0,
    method: str = "nll",
) -> dict[int, CalibrationResult]:
    """Calibrate the tasks in ``heldout`` (task → its own held-out data, local labels) and set their buffers.

    ``method`` as in :func:`fit_temperature_bias`. Tasks not in ``heldout`` keep their calibration. The network is evaluated in eval mode and its
    train/eval mode restored afterwards. Returns one :class:`CalibrationResult` per calibrated task.
    """
    was_training = grown.training
    grown.eval()
    out: dict[int, CalibrationResult] = {}
    try:
        dev = next(grown.parameters()).device if device == "auto" else device
        for task, data in sorted(heldout.items()):
            logits, labels = evaluate_logits(lambda x, t=task: grown.forward_task(x, t), data, batch_size, dev)
            temperature, bias = fit_temperature_bias(logits, labels, target, method)
            grown.set_calibration(task, temperature, bias)
            z, y = logits.double(), labels.long()
            out[task] = CalibrationResult(
                task=task,
                temperature=temperature,
                bias=bias,
                nll_before=float(F.cross_entropy(z, y)),
                nll_after=float(F.cross_entropy(z / temperature, y)),
                mean_max_logit=float((z / temperature).max(dim=1).values.mean()),
                samples=int(y.numel()),
            )
            logger.info("calibrated task %d: T=%.4g b=%.4g (NLL %.4f -> %.4f on %d held-out samples)",
                        task, temperature, bias, out[task].nll_before, out[task].nll_after, out[task].samples)
    finally:
        grown.train(was_training)
    return out


def random_subset(data: Dataset, n: int, seed: int) -> Dataset:
    """``n`` samples of ``data`` drawn without replacement (seeded); all of it when ``n >= len(data)``."""
    total = len(data)
    if n >= total:
        return data
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(data, sorted(idx.tolist()))


def holdout_split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split ``data`` into ``(train, heldout)`` with ``round(fraction * len)`` held-out samples (seeded)."""
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    total = len(data)
    n_held = min(max(1, round(fraction * total)), total - 1)
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(data, sorted(perm[n_held:])), Subset(data, sorted(perm[:n_held]))
