"""The public entry point: profile a real ``nn.Module`` for inference or one training step."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from torch import nn

from .counting import Counts, count
from .graph import trace
from .price import price_layers
from .table import LEVELS, EnergyTable, load_table

__all__ = ["Profile", "profile", "LAYER_COLUMNS", "NUMERIC_TOTALS", "as_table"]

#: per-layer columns in the order they are shown (the JSON/CSV contract's keys come first)
LAYER_COLUMNS = [
    "name", "kind", "trainable", "macs_forward", "macs_backward_input", "macs_backward_weight", "params",
    "weight_accesses", "activation_accesses", "storage_bytes", "energy_pj",
    "modelled", "input_requires_grad", "trainable_params", "macs", "add_ops", "mult_ops", "cmp_ops", "update_ops",
    "rf_accesses", "sram_accesses", "dram_accesses", "saved_words",
    "energy_compute_pj", "energy_rf_pj", "energy_sram_pj", "energy_dram_pj",
]
NUMERIC_TOTALS = [
    "macs_forward", "macs_backward_input", "macs_backward_weight", "macs", "add_ops", "mult_ops", "cmp_ops",
    "update_ops", "weight_accesses", "activation_accesses", "rf_accesses", "sram_accesses", "dram_accesses",
    "saved_words", "storage_bytes", "energy_compute_pj", *[f"energy_{lv}_pj" for lv in LEVELS], "energy_pj",
]


def as_table(table: str | EnergyTable) -> EnergyTable:
    """A table object from a name, a path or a table."""
    return table if isinstance(table, EnergyTable) else load_table(table)


@dataclass
class Profile:
    """Costs of one inference pass or one training step of a batch, per layer and in total."""

    layers: pd.DataFrame
    totals: dict[str, Any]
    counts: Counts
    table: EnergyTable
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def unmodelled(self) -> list[str]:
        return list(self.counts.unmodelled)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"settings", "table", "layers": [...], "totals": {...}, "unmodelled": [...]}``."""
        layers = self.layers[LAYER_COLUMNS].to_dict(orient="records")
        return {
            "settings": self.settings,
            "table": {"name": self.table.name, "source": self.table.source, "path": self.table.path},
            "layers": [{k: _plain(v) for k, v in row.items()} for row in layers],
            "totals": {k: _plain(v) for k, v in self.totals.items()},
            "unmodelled": self.unmodelled,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        if math.isinf(v) or math.isnan(v):
            return None
        if v.is_integer() and abs(v) < 2**53:
            return int(v)
    return v


def totals_of(layers: pd.DataFrame, counts: Counts, table: EnergyTable) -> dict[str, Any]:
    """Sum every numeric column; ``params`` counts each parameter once (shared or repeated modules)."""
    tot: dict[str, Any] = {k: float(layers[k].sum()) if len(layers) else 0.0 for k in NUMERIC_TOTALS}
    tot["params"] = counts.total_params
    tot["trainable_params"] = counts.trainable_params
    tot["training_memory_bytes"] = counts.training_memory_words * table.word_bytes if counts.mode == "training" else 0.0
    tot["unmodelled_calls"] = len(counts.unmodelled)
    return tot


def profile(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch: int = 1,
    mode: str = "inference",
    frozen: Iterable[str] = (),
    optimizer: str = "sgd",
    table: str | EnergyTable = "45nm",
    weight_decay: bool = False,
    warn: bool = True,
) -> Profile:
    """Profile ``model`` on inputs of shape ``input_shape`` (C,H,W) for a batch of ``batch``.

    ``mode="training"`` models one training step (forward, backward to inputs where needed, backward
    to trainable weights, optimizer update, loss); modules under a ``frozen`` prefix run forward only in
    their evaluation form. Returns per-layer and total costs under ``table``.
    """
    tab = as_table(table)
    tr = trace(model, input_shape, mode=mode, frozen=frozen)
    counts = count(tr, batch=batch, optimizer=optimizer, weight_decay=weight_decay, warn=warn)
    layers = price_layers(counts, tab)
    settings = {
        "input_shape": list(tr.input_shape), "batch": batch, "mode": mode, "frozen": list(tr.frozen),
        "optimizer": optimizer if mode == "training" else None, "weight_decay": weight_decay,
        "table": tab.name, "word_bits": tab.word_bits, "buffer_bytes": tab.dataflow.buffer_bytes,
        "rf_accesses_per_op": tab.dataflow.rf_accesses_per_op, "reuse": tab.dataflow.reuse,
        "rf_words": tab.dataflow.rf_words, "tiling": tab.dataflow.tiling,
    }
    return Profile(layers=layers, totals=totals_of(layers, counts, tab), counts=counts, table=tab, settings=settings)
