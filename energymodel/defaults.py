"""Defaults shared by both tools (``energymodel`` and the ``incremental`` engine): one place, one value each.

The command lines show them in ``--help``; the Python API (:mod:`energymodel.api`) uses them as keyword
defaults; report recipes fall back to them. Nothing here imports torch.
"""

from __future__ import annotations

__all__ = [
    "ENERGY_TABLE", "OPTIMIZER", "EPOCHS", "BATCH", "WEIGHT_DECAY", "SAMPLES_NEW", "SAMPLES_OLD", "PROFILE_BATCH",
    "MODE", "TASKS",
]

#: energy table: a shipped name (``energymodel tables``) or a .toml file
ENERGY_TABLE = "45nm"
#: optimizer of a training step: sgd | momentum | adam
OPTIMIZER = "momentum"
#: training epochs of a new task
EPOCHS = 5
#: training batch size
BATCH = 128
#: L2 weight decay coefficient (a number; 0 means none, so it is not charged)
WEIGHT_DECAY = 5e-4
#: training samples of the new task and of the old task(s)
SAMPLES_NEW = 5000
SAMPLES_OLD = 5000
#: number of new tasks learned one after another
TASKS = 1
#: batch of ``energymodel profile`` (one pass or step)
PROFILE_BATCH = 1
#: ``energymodel profile`` mode
MODE = "inference"
