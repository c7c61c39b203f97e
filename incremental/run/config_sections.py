"""The sections of a run configuration: ``[base]``/``[branch]`` (training), ``[search]`` (the sharing-point
search), ``[output_calibration]`` (temperature and bias per task) and ``[agnostic]`` (task-agnostic prediction).

Each field carries its checker and help text (:func:`_spec`); :data:`SECTIONS` names them in file order.
``[calibration]``, the former name of ``[search]``, is still read (with a warning): :data:`RENAMED_SECTIONS`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from energymodel import defaults
from incremental.agnostic.analytic import EXPANSION
from incremental.run.config_values import (
    CALIBRATION_METHODS,
    LR_SCHEDULES,
    OPTIMIZERS,
    Checker,
    _bool,
    _candidates,
    _choice,
    _float,
    _int,
    _method,
    _methods,
    _optional,
)

__all__ = ["TrainSection", "SearchSection", "OutputCalibrationSection", "AgnosticSection", "SECTIONS",
           "RENAMED_SECTIONS", "spec"]


def spec(default: Any, check: Checker, help: str) -> Any:  # noqa: A002 - mirrors argparse
    meta = {"check": check, "help": help}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainSection:
    """Training hyper-parameters of one phase (``[base]``: task 0; ``[branch]``: every later task)."""

    epochs: int = spec(defaults.EPOCHS, _int(1), "passes over the training data")
    batch: int = spec(defaults.BATCH, _int(1), "mini-batch size")
    lr: float = spec(0.05, _float(0.0, 3.4028234663852886e38, open_low=True),
                      "peak learning rate (at most float32's largest value: the parameters' type)")
    optimizer: str = spec(defaults.OPTIMIZER, _choice(*OPTIMIZERS), "sgd, momentum (SGD with momentum) or adam")
    momentum: float = spec(0.9, _float(0.0), "momentum of the momentum optimizer")
    weight_decay: float = spec(defaults.WEIGHT_DECAY, _float(0.0), "L2 weight decay")
    lr_schedule: str = spec("cosine", _choice(*LR_SCHEDULES), "cosine (per step, to 0) or none")


@dataclass
class SearchSection:
    """The sharing-point search (``share = "auto"``): trial branches on a subset of task 1's training images."""

    tolerance: float = spec(0.02, _float(0.0, 1.0),
                             "accept the deepest sharing point whose accuracy is within this of no sharing")
    subset_per_class: int | None = spec(200, _optional(_int(2)),
                                         "task-1 training images per class used by the search (none: all)")
    epochs: int = spec(2, _int(1), "epochs of each trial branch")
    candidates: str | list[int] = spec("all", _candidates, "sharing points to try: all, or a list of indices")
    val_fraction: float = spec(0.25, _float(0.0, 1.0, open_low=True, open_high=True),
                                "share of the search subset held out to score each trial")
    min_steps: int = spec(50, _int(1), "floor on each trial's optimizer steps (more epochs when the subset is small)")
    full_curve: bool = spec(False, _bool, "try every candidate (else stop at the first, deepest first, within "
                             "tolerance: the same choice for fewer trials)")
    per_task: bool = spec(False, _bool, "search a sharing point for every new task (else task 1's point for all)")
    oracle: bool = spec(False, _bool, "also train a full branch at every candidate point and report the search's regret")


@dataclass
class OutputCalibrationSection:
    """Per-task temperature + bias fitted on held-out training data (task-agnostic prediction)."""

    enabled: bool = spec(True, _bool, "calibrate every task's logits for task-agnostic prediction")
    holdout_fraction: float = spec(0.1, _float(0.0, 1.0, open_low=True, open_high=True),
                                    "share of each task's training images held out for calibration")
    method: str = spec("nll", _choice(*CALIBRATION_METHODS), "temperature by NLL (nll) or max-logit spread (zscore)")


@dataclass
class AgnosticSection:
    """Task-agnostic prediction (no task given): every method in ``methods`` is fitted and reported."""

    method: str = spec("routed", _method, "the headline method (task_agnostic_accuracy)")
    methods: str | list[str] = spec("all", _methods, "methods fitted and reported side by side: all, or a list")
    covariance: str = spec("task", _choice("class", "task"),
                            "Gaussian methods: a covariance per class, or one pooled per task (fewer bytes)")
    expansion: int = spec(EXPANSION, _int(1), "analytic heads: width M of the random expansion of the trunk features "
                          "(their sums take M (M + 1) / 2 + M C float64 numbers)")
    references: bool = spec(True, _bool, "also fit the base-network-only and joint-classifier references (an "
                            "analysis that reads every task's training images at once; charged to no strategy)")

    def names(self) -> list[str]:
        """The methods to fit, the headline method included, in registry order."""
        from incremental.agnostic import method_names

        chosen = method_names() if self.methods == "all" else list(self.methods)
        return [m for m in method_names() if m in chosen or m == self.method]


SECTIONS: dict[str, type] = {
    "base": TrainSection,
    "branch": TrainSection,
    "search": SearchSection,
    "output_calibration": OutputCalibrationSection,
    "agnostic": AgnosticSection,
}

#: former section names -> their names now (read with a warning)
RENAMED_SECTIONS = {"calibration": "search"}
