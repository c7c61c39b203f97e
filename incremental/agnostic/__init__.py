"""Task-agnostic (class-incremental) prediction for grown networks, exemplar-free.

:mod:`.methods` holds the registry of methods; :mod:`.gaussian` and :mod:`.analytic` the statistics (per-class
Gaussians; the analytic head's running sums); :mod:`.features` the one forward pass they all read. :class:`AgnosticSuite` fits every configured method of one strategy task by task
and evaluates them side by side; the grown network itself stays ignorant of them (its checkpoint carries
their state next to its weights). :mod:`.output_calibration` fits each branch's temperature and bias (the
``calibrated-logits`` method reads them).

May import :mod:`incremental.train`, :mod:`incremental.model`, :mod:`incremental.data` and ``energymodel``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from energymodel.errors import UserError
from incremental.agnostic.analytic import EXPANSION
from incremental.agnostic.features import Outputs, collect
from incremental.agnostic.methods import (
    METHODS,
    AgnosticMethod,
    TaskData,
    make_method,
    method_names,
    register_method,
)

__all__ = ["AgnosticSuite", "DEFAULT_COVARIANCE", "DEFAULT_METHOD", "METHODS", "AgnosticMethod", "Outputs", "TaskData", "collect",
           "make_method", "method_names", "register_method"]

#: The default, chosen on the validation splits (never test images): the best partial-sharing Class-IL averaged
#: over Fashion-MNIST 5+5 and 2x5 (three seeds each) and CIFAR-10 5+5 on the whole training set (one seed)
#: (``bench_agnostic.py --choose``; README "Choosing the default", docs/engine.md). The analytic head on the frozen
#: base network picks the task, and the head's and the branches' posteriors the class, so the branches can add
#: Class-IL over the base-only reference (the analytic head alone).
DEFAULT_METHOD = "analytic-ensemble"
#: One covariance per task (not per class): as accurate within the seeds' spread, 5x fewer bytes on 5+5.
DEFAULT_COVARIANCE = "task"


class AgnosticSuite:
    """Every method in ``names`` for one predictor, fitted task by task (0, 1, ...) on each task's own data."""

    def __init__(self, names: Sequence[str], covariance: str = DEFAULT_COVARIANCE, expansion: int = EXPANSION) -> None:
        if not names:
            raise UserError("at least one task-agnostic method is needed")
        self.methods: dict[str, AgnosticMethod] = {n: make_method(n, covariance=covariance, expansion=expansion)
                                                   for n in names}
        self.fitted = 0

    @property
    def needs_training_pass(self) -> bool:
        return any(m.uses_training_pass for m in self.methods.values())

    def fit_task(self, task: int, train: Outputs, heldout: Outputs | None) -> None:
        """Fit ``task`` (must be the next one) from its own training (and held-out) outputs."""
        if task != self.fitted:
            raise ValueError(f"task-agnostic statistics: expected task {self.fitted}, got {task}")
        tr = TaskData(train, task)
        ho = TaskData(heldout, task) if heldout is not None else None
        for m in self.methods.values():
            m.fit_task(tr, ho)
        self.fitted += 1

    def predict(self, out: Outputs) -> dict[str, Tensor]:
        """Predicted column (task order) of every input under every method."""
        return {name: m.predict(out) for name, m in self.methods.items()}

    def words(self) -> dict[str, int]:
        return {name: m.words() for name, m in self.methods.items()}

    def state(self) -> dict[str, Any]:
        return {"fitted": self.fitted, "methods": {name: m.state() for name, m in self.methods.items()}}

    def load(self, state: dict[str, Any]) -> None:
        try:
            saved = state["methods"]
            for name, m in self.methods.items():
                if name not in saved:
                    raise UserError(f"the checkpoint has no statistics for task-agnostic method {name!r}")
                m.load(saved[name])
            self.fitted = int(state["fitted"])
        except (KeyError, TypeError, IndexError) as exc:
            raise UserError(f"task-agnostic statistics in the checkpoint are malformed ({exc})") from None
