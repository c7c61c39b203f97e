"""Pricing: action counts × an energy table → energy, per layer and in total.

Counting (:mod:`energymodel.count`) and pricing are separate steps, as Accelergy separates action
counts from energy reference tables: one trace can be priced under many tables.

Which level serves each access is the dataflow model of :mod:`energymodel.memory.levels`.

Energy of a layer = ``Σ_op count_op · pJ_op + Σ_level accesses_level · pJ_level`` with
``pJ_level = pj · word_bits / bits`` of the table's entry for that level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from energymodel.count.phases import Counts
from energymodel.memory.levels import PHASES, level_of, rf_accesses
from energymodel.memory.residency import plan
from energymodel.memory.words import layer_words, uses_plan
from energymodel.price.table import LEVELS, OPERATIONS, EnergyTable

__all__ = ["price_layers", "price_phases", "level_of", "FEATURES", "feature_matrix", "feature_vector", "price_vector",
           "rf_accesses", "PHASE_COLUMNS"]

#: the priced quantities, in the order used by :func:`feature_vector` / :func:`price_vector`
FEATURES = (*OPERATIONS, *LEVELS)

#: columns of :func:`price_phases`
PHASE_COLUMNS = [
    "name", "phase", "macs", "rf_words", "sram_words", "dram_words", "energy_pj", "on_chip", "tile", "innermost",
    "loop_order", "rf_in", "rf_wt", "rf_out", "sram_in", "sram_wt", "sram_out", "dram_in", "dram_wt", "dram_out",
    "bias_words", "saved_copy_words", "buffer_words",
]


def _ops(layers: pd.DataFrame) -> pd.DataFrame:
    macs = layers["macs_forward"] + layers["macs_backward_input"] + layers["macs_backward_weight"]
    return pd.DataFrame({"mac": macs, "add": layers["add_ops"], "mult": layers["mult_ops"], "cmp": layers["cmp_ops"]})


def _words(counts: Counts, table: EnergyTable) -> dict[str, np.ndarray]:
    flow = table.dataflow
    return layer_words(counts, word_bits=table.word_bits, buffer_bytes=flow.buffer_bytes, array=flow.array(),
                       rf_accesses_per_op=flow.rf_accesses_per_op, reuse=flow.reuse, tiling=flow.tiling)


def price_layers(counts: Counts, table: EnergyTable) -> pd.DataFrame:
    """Per-layer costs under ``table``: the counts plus accesses by level, storage and energy columns."""
    layers = counts.layers.copy()
    n = len(layers)
    ops = _ops(layers) if n else pd.DataFrame(columns=list(OPERATIONS))
    w = _words(counts, table)
    layers["macs"] = ops["mac"].to_numpy(dtype=float) if n else []
    layers["rf_accesses"] = w["rf"]
    layers["sram_accesses"] = w["sram"]
    layers["dram_accesses"] = w["dram"]
    layers["weight_accesses"] = w["weight"]
    layers["activation_accesses"] = w["activation"]
    layers["storage_bytes"] = np.where(layers["first_call"], layers["params"] * table.word_bytes, 0.0) if n else []
    compute = sum(ops[op].to_numpy(dtype=float) * table.op_pj(op) for op in OPERATIONS) if n else []
    layers["energy_compute_pj"] = compute
    for level in LEVELS:
        layers[f"energy_{level}_pj"] = layers[f"{level}_accesses"] * table.level_pj(level)
    layers["energy_pj"] = layers["energy_compute_pj"] + sum(layers[f"energy_{lv}_pj"] for lv in LEVELS)
    return layers


def price_phases(counts: Counts, table: EnergyTable) -> pd.DataFrame:
    """One row per phase of every tiled conv/linear layer (:data:`PHASE_COLUMNS`): its MACs, RF, SRAM and DRAM
    words (per role too), energy ``macs·mac + words · level prices``, which roles the residency plan keeps on
    chip, its SRAM tile and loop order. The layer's bias words and its saved input's copy are listed beside
    (``bias_words``, ``saved_copy_words``), not in the phase's words; ``buffer_words``: the buffer the plan leaves
    to the phase (less the weight state, the saved set and the other tensors on chip then; its own on-chip
    operands included). Empty without the tiled dataflow."""
    flow = table.dataflow
    if not uses_plan(counts, tiling=flow.tiling, reuse=flow.reuse) or not counts.tiled:
        return pd.DataFrame(columns=PHASE_COLUMNS)
    rp = plan(counts, word_bits=table.word_bits, buffer_bytes=flow.buffer_bytes, array=flow.array())
    rows = []
    for tl in counts.tiled:
        for phase, _ in PHASES:
            pw = rp.tiled.get(tl.layer, {}).get(phase)
            if pw is None:
                continue
            macs = float(tl.shape.macs)
            energy = (macs * table.op_pj("mac") + pw.rf_words * table.level_pj("rf")
                      + pw.sram_words * table.level_pj("sram") + pw.dram_words * table.level_pj("dram"))
            copy = rp.saved_copy.get(tl.layer, ("", 0.0))[1] if phase == "forward" else 0.0
            rows.append({
                "name": tl.name, "phase": phase, "macs": macs, "rf_words": pw.rf_words, "sram_words": pw.sram_words,
                "dram_words": pw.dram_words, "energy_pj": energy,
                "on_chip": "+".join(r for r, res in zip(("in", "wt", "out"), pw.resident) if res),
                "tile": "x".join(f"{v:g}" for v in pw.tiling.tile), "innermost": pw.tiling.innermost,
                "loop_order": "".join(pw.array.order),
                **{f"rf_{r}": v for r, v in zip(("in", "wt", "out"), pw.rf)},
                **{f"sram_{r}": v for r, v in zip(("in", "wt", "out"), pw.sram)},
                **{f"dram_{r}": v for r, v in zip(("in", "wt", "out"), pw.dram)},
                "bias_words": float(tl.bias_words), "saved_copy_words": copy,
                "buffer_words": rp.buffer_for.get((tl.layer, phase), float("nan")),
            })
    return pd.DataFrame(rows, columns=PHASE_COLUMNS)


def feature_vector(counts: Counts, *, word_bits: int, buffer_bytes: float, rf_accesses_per_op: float,
                   reuse: str = "ideal", layers: np.ndarray | None = None, array=None,
                   tiling: bool = True) -> np.ndarray:
    """Totals ``[mac, add, mult, cmp, rf, sram, dram]`` (operations and word accesses) for a dataflow.

    ``layers`` (a boolean mask over ``counts.layers`` rows) restricts the sum to some layers; ``array``: the PE
    array and its register files (:class:`~energymodel.memory.loopnest.Array`).
    Energy is then ``feature_vector · price_vector(table)``: that is what makes sweeps array arithmetic.
    """
    from energymodel.memory.loopnest import Array

    lay = counts.layers
    mask = np.ones(len(lay), dtype=bool) if layers is None else np.asarray(layers, dtype=bool)
    ops = _ops(lay[mask]).sum().to_numpy(dtype=float) if mask.any() else np.zeros(4)
    w = layer_words(counts, word_bits=word_bits, buffer_bytes=buffer_bytes, array=array or Array(16, 16),
                    rf_accesses_per_op=rf_accesses_per_op, reuse=reuse, tiling=tiling)
    return np.array([*ops, w["rf"][mask].sum(), w["sram"][mask].sum(), w["dram"][mask].sum()], dtype=float)


def feature_matrix(counts: Counts, table: EnergyTable, masks: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """:func:`feature_vector` under ``table``'s dataflow, one row per named layer mask (default: all layers)."""
    masks = masks or {"all": np.ones(len(counts.layers), dtype=bool)}
    flow = table.dataflow
    rows = {
        name: feature_vector(counts, word_bits=table.word_bits, buffer_bytes=flow.buffer_bytes,
                             rf_accesses_per_op=flow.rf_accesses_per_op, reuse=flow.reuse, layers=m,
                             array=flow.array(), tiling=flow.tiling)
        for name, m in masks.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(FEATURES))


def price_vector(table: EnergyTable) -> np.ndarray:
    """pJ for each of :data:`FEATURES` under ``table`` (operations, then one word access per level)."""
    return np.array([table.op_pj(op) for op in OPERATIONS] + [table.level_pj(lv) for lv in LEVELS])
