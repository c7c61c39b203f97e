"""The public entry point: profile a real ``nn.Module`` for inference or one training step."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from torch import nn

from energymodel.count.phases import OPTIMIZERS, Counts, count
from energymodel.count.trace import trace
from energymodel.defaults import WEIGHT_DECAY
from energymodel.errors import EnergyModelWarning, UserError
from energymodel.memory.residency import PLAN_COLUMNS, plan
from energymodel.models.inputs import MAX_BATCH
from energymodel.price.pricing import PHASE_COLUMNS, price_layers, price_phases
from energymodel.price.table import LEVELS, EnergyTable, load_table

__all__ = [
    "Profile", "profile", "LAYER_COLUMNS", "NUMERIC_TOTALS", "as_table", "check_precision", "model_datatype",
]

#: per-layer columns in the order they are shown (the JSON/CSV contract's keys come first)
LAYER_COLUMNS = [
    "name", "kind", "trainable", "macs_forward", "macs_backward_input", "macs_backward_weight", "params",
    "weight_accesses", "activation_accesses", "storage_bytes", "energy_pj",
    "modelled", "input_requires_grad", "trainable_params", "macs", "add_ops", "mult_ops", "cmp_ops", "update_ops",
    "rf_accesses", "sram_accesses", "dram_accesses", "saved_words",
    "energy_compute_pj", "energy_rf_pj", "energy_sram_pj", "energy_dram_pj", "output_shape",
    "weight_bytes", "gradient_bytes", "optimizer_bytes", "saved_bytes",
]
#: the parts of a training step's memory in the totals (bytes; :mod:`energymodel.count.footprint`)
MEMORY_TOTALS = ["memory_weights_bytes", "memory_gradients_bytes", "memory_optimizer_bytes", "memory_buffers_bytes",
                 "memory_inputs_bytes", "memory_saved_bytes", "memory_forward_peak_bytes",
                 "memory_backward_peak_bytes", "training_memory_bytes"]
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
    #: the memory of the training step (:class:`~energymodel.count.footprint.Footprint`); ``None`` in inference
    memory: Any = None
    #: one row per phase of every tiled conv/linear layer (:func:`energymodel.price.pricing.price_phases`)
    phases: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PHASE_COLUMNS))

    def residency(self) -> pd.DataFrame:
        """The residency plan's tensors (:data:`energymodel.memory.residency.PLAN_COLUMNS`), with layer names;
        empty without the tiled dataflow."""
        flow = self.table.dataflow
        if not (flow.tiling and flow.reuse == "ideal"):
            return pd.DataFrame(columns=PLAN_COLUMNS)
        rp = plan(self.counts, word_bits=self.table.word_bits, buffer_bytes=flow.buffer_bytes, array=flow.array())
        names = self.counts.layers["name"].to_numpy()
        out = rp.tensors.copy()
        out["first"] = [names[i] for i in out["first"]]
        out["last"] = [names[i] for i in out["last"]]
        return out

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
            "phases": [{k: _plain(v) for k, v in row.items()} for row in self.phases.to_dict(orient="records")],
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


def totals_of(layers: pd.DataFrame, counts: Counts, table: EnergyTable, memory: Any = None) -> dict[str, Any]:
    """Sum every numeric column; ``params`` counts each parameter once (shared or repeated modules)."""
    tot: dict[str, Any] = {k: float(layers[k].sum()) if len(layers) else 0.0 for k in NUMERIC_TOTALS}
    tot["params"] = counts.total_params
    tot["trainable_params"] = counts.trainable_params
    tot["unmodelled_calls"] = len(counts.unmodelled)
    for k in ("weight_bytes", "gradient_bytes", "optimizer_bytes", "saved_bytes"):
        tot[k] = float(layers[k].sum()) if k in layers and len(layers) else 0.0
    if memory is not None:
        parts = {"weights": memory.weights, "gradients": memory.gradients, "optimizer": memory.optimizer_state,
                 "buffers": memory.buffers, "inputs": memory.inputs, "saved": memory.saved,
                 "forward_peak": memory.forward_peak, "backward_peak": memory.backward_peak}
        tot.update({f"memory_{k}_bytes": float(v) for k, v in parts.items()})
        tot["training_memory_bytes"] = float(memory.peak)
        tot["memory_peak_phase"] = memory.phase
    else:
        tot.update({k: 0.0 for k in MEMORY_TOTALS})
    return tot


def with_memory(layers: pd.DataFrame, memory: Any, param_bytes: int, state: int) -> pd.DataFrame:
    """``layers`` with each row's bytes of weights, gradients, optimizer state (first call of a module) and the
    activations it keeps for the backward pass (``memory``: a :class:`~energymodel.count.footprint.Footprint`)."""
    first = layers["first_call"].astype(bool).to_numpy() if "first_call" in layers else True
    out = layers.copy()
    out["weight_bytes"] = (out["params"] * param_bytes).where(first, 0.0).astype(float)
    out["gradient_bytes"] = (out["trainable_params"] * param_bytes).where(first, 0.0).astype(float)
    out["optimizer_bytes"] = out["gradient_bytes"] * state
    saved = memory.by_layer if memory is not None else {}
    out["saved_bytes"] = [float(saved.get(str(n), 0)) for n in out["name"]]
    return out


_DTYPE_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64", "int8": "int8"}


def model_datatype(model: nn.Module) -> str | None:
    """The datatype of ``model``'s floating-point parameters as tables name it (``fp32``, ``fp16``, ``bf16``)."""
    p = next((q for q in model.parameters() if q.is_floating_point()), None)
    return _DTYPE_NAMES.get(str(p.dtype).removeprefix("torch."), str(p.dtype)) if p is not None else None


def check_precision(model: nn.Module, table: EnergyTable) -> str | None:
    """A one-line warning when ``model``'s parameters are not in the datatype ``table`` prices, else ``None``.

    A table prices words of ``word_bits`` bits of its ``datatype``; an fp16/bf16 model priced with the fp32
    ``45nm`` table counts twice the bytes it moves (use ``45nm-fp16``).
    """
    dt = model_datatype(model)
    if dt is None or dt == table.datatype:
        return None
    bits = {"fp32": 32, "fp16": 16, "bf16": 16, "fp64": 64}.get(dt)
    if bits is not None and bits == table.word_bits and table.datatype not in _DTYPE_NAMES.values():
        return None  # a fixed-point table of the same width (eyeriss-relative) is a deliberate choice
    hint = " (use --energy-table 45nm-fp16)" if dt in ("fp16", "bf16") else ""
    return (f"the model's parameters are {dt} but energy table {table.name} prices {table.datatype} "
            f"({table.word_bits}-bit words){hint}")


def profile(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    inputs: Any = None,
    batch: int | None = None,
    mode: str = "inference",
    frozen: Iterable[str] = (),
    optimizer: str = "sgd",
    table: str | EnergyTable = "45nm",
    weight_decay: bool | float = False,
    warn: bool = True,
) -> Profile:
    """Profile ``model`` for a batch of ``batch`` on inputs of shape ``input_shape`` (per sample, without the
    batch dimension, e.g. ``(3, 32, 32)``) or on example ``inputs`` (a tensor, a tuple of tensors or a dict of
    keyword tensors, each with a batch dimension; ``batch`` defaults to theirs).

    ``mode="training"`` models one training step (forward, backward to inputs where needed, backward
    to trainable weights, optimizer update, loss); modules under a ``frozen`` prefix run forward only in
    their evaluation form. ``weight_decay`` (a coefficient, or ``True``) charges the decay term of the
    update when non-zero. Returns per-layer and total costs under ``table``; a model whose datatype the
    table does not price is warned about (``warn``).
    """
    tab = as_table(table)
    if batch is None:
        batch = (_batch_of(inputs) if inputs is not None else None) or 1
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"batch must be >= 1 (an integer), got {batch!r}")
    if batch > MAX_BATCH:
        raise UserError(f"batch {batch:,} is larger than the {MAX_BATCH:,} a pass is counted for")
    if isinstance(weight_decay, bool):
        wd = WEIGHT_DECAY if weight_decay else 0.0
    elif isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0:
        wd = float(weight_decay)
    else:
        raise UserError(f"weight decay must be a number >= 0, got {weight_decay!r}")
    if warn and (msg := check_precision(model, tab)):
        warnings.warn(msg, EnergyModelWarning, stacklevel=2)
    tr = trace(model, input_shape, mode=mode, frozen=frozen, inputs=inputs)
    counts = count(tr, batch=batch, optimizer=optimizer, weight_decay=wd > 0, warn=warn)
    layers = price_layers(counts, tab)
    memory = None
    if mode == "training":
        from energymodel.count.footprint import try_footprint

        memory = try_footprint(model, input_shape, batch=batch, frozen=frozen, optimizer=optimizer,
                               weight_decay=wd > 0, inputs=inputs)
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    layers = with_memory(layers, memory, param.element_size() if param is not None else 4,
                         OPTIMIZERS[optimizer].state if mode == "training" else 0)
    settings = {
        "input_shape": list(tr.input_shape), "batch": batch, "mode": mode, "frozen": list(tr.frozen),
        "optimizer": optimizer if mode == "training" else None, "weight_decay": wd if mode == "training" else None,
        "table": tab.name, "word_bits": tab.word_bits, "buffer_bytes": tab.dataflow.buffer_bytes,
        "rf_accesses_per_op": tab.dataflow.rf_accesses_per_op, "reuse": tab.dataflow.reuse,
        "rf_words": list(tab.dataflow.rf_per_operand), "tiling": tab.dataflow.tiling,
        "array": [tab.dataflow.array_rows, tab.dataflow.array_cols], "unroll": list(tab.dataflow.unroll),
    }
    return Profile(layers=layers, totals=totals_of(layers, counts, tab, memory), counts=counts, table=tab,
                   settings=settings, memory=memory, phases=price_phases(counts, tab))


def _batch_of(inputs: Any) -> int | None:
    """The batch size of example inputs: the first dimension of their first tensor."""
    import torch

    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else None
    values = inputs.values() if isinstance(inputs, dict) else inputs if isinstance(inputs, (list, tuple)) else ()
    for v in values:
        b = _batch_of(v)
        if b is not None:
            return b
    return None
