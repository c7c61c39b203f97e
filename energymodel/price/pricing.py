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

from energymodel.count.phases import ACTIVATION_OPERANDS, WEIGHT_OPERANDS, Counts
from energymodel.memory.levels import layer_phases, level_of, rf_accesses, tiled_words
from energymodel.price.table import LEVELS, OPERATIONS, EnergyTable

__all__ = ["price_layers", "level_of", "FEATURES", "feature_matrix", "feature_vector", "price_vector", "tiled_words", "layer_phases", "rf_accesses"]

#: the priced quantities, in the order used by :func:`feature_vector` / :func:`price_vector`
FEATURES = (*OPERATIONS, *LEVELS)




def _ops(layers: pd.DataFrame) -> pd.DataFrame:
    macs = layers["macs_forward"] + layers["macs_backward_input"] + layers["macs_backward_weight"]
    return pd.DataFrame({"mac": macs, "add": layers["add_ops"], "mult": layers["mult_ops"], "cmp": layers["cmp_ops"]})










def _use_tiling(counts: Counts, table_flow) -> bool:
    return bool(table_flow.tiling) and table_flow.reuse == "ideal" and bool(counts.tiled)


def price_layers(counts: Counts, table: EnergyTable) -> pd.DataFrame:
    """Per-layer costs under ``table``: the counts plus accesses by level, storage and energy columns."""
    layers = counts.layers.copy()
    n = len(layers)
    ops = _ops(layers) if n else pd.DataFrame(columns=list(OPERATIONS))
    flow = table.dataflow
    acc = counts.accesses
    tiling = _use_tiling(counts, flow)
    keep = ~acc["tiled"].to_numpy(dtype=bool) if tiling else np.ones(len(acc), dtype=bool)
    words = (acc["words_noreuse"] if flow.reuse == "none" else acc["words"]).to_numpy()[keep]
    lvl = level_of(acc["size_words"].to_numpy()[keep], table.word_bits, flow.buffer_bytes)
    frame = pd.DataFrame({"layer": acc["layer"].to_numpy()[keep], "level": lvl, "words": words,
                          "operand": acc["operand"].to_numpy()[keep]})

    def per_layer(mask) -> np.ndarray:
        sums = frame[mask].groupby("layer")["words"].sum()
        return sums.reindex(range(n), fill_value=0.0).to_numpy(dtype=float)

    tw = (tiled_words(counts, word_bits=table.word_bits, buffer_bytes=flow.buffer_bytes) if tiling
          else {k: np.zeros(n) for k in ("sram", "dram", "weight", "activation")})
    layers["macs"] = ops["mac"].to_numpy(dtype=float) if n else []
    layers["rf_accesses"] = (rf_accesses(ops["mac"].to_numpy(dtype=float),
                                         ops[["add", "mult", "cmp"]].sum(axis=1).to_numpy(dtype=float),
                                         flow.rf_accesses_per_op, flow.rf_words) if n else [])
    layers["sram_accesses"] = per_layer(frame["level"] == "sram") + tw["sram"]
    layers["dram_accesses"] = per_layer(frame["level"] == "dram") + tw["dram"]
    layers["weight_accesses"] = per_layer(frame["operand"].isin(WEIGHT_OPERANDS)) + tw["weight"]
    layers["activation_accesses"] = per_layer(frame["operand"].isin(ACTIVATION_OPERANDS)) + tw["activation"]
    layers["storage_bytes"] = np.where(layers["first_call"], layers["params"] * table.word_bytes, 0.0) if n else []
    compute = sum(ops[op].to_numpy(dtype=float) * table.op_pj(op) for op in OPERATIONS) if n else []
    layers["energy_compute_pj"] = compute
    for level in LEVELS:
        layers[f"energy_{level}_pj"] = layers[f"{level}_accesses"] * table.level_pj(level)
    layers["energy_pj"] = layers["energy_compute_pj"] + sum(layers[f"energy_{lv}_pj"] for lv in LEVELS)
    return layers


def feature_vector(counts: Counts, *, word_bits: int, buffer_bytes: float, rf_accesses_per_op: float,
                   reuse: str = "ideal", layers: np.ndarray | None = None, rf_words: float = 32.0,
                   tiling: bool = True) -> np.ndarray:
    """Totals ``[mac, add, mult, cmp, rf, sram, dram]`` (operations and word accesses) for a dataflow.

    ``layers`` (a boolean mask over ``counts.layers`` rows) restricts the sum to some layers.
    Energy is then ``feature_vector · price_vector(table)``: that is what makes sweeps array arithmetic.
    """
    lay = counts.layers
    mask = np.ones(len(lay), dtype=bool) if layers is None else np.asarray(layers, dtype=bool)
    ops = _ops(lay[mask]).sum().to_numpy(dtype=float) if mask.any() else np.zeros(4)
    acc = counts.accesses
    use_tiles = tiling and reuse == "ideal" and bool(counts.tiled)
    keep = mask[acc["layer"].to_numpy()] if len(acc) else np.zeros(0, dtype=bool)
    if use_tiles and len(acc):
        keep = keep & ~acc["tiled"].to_numpy(dtype=bool)
    w = (acc["words_noreuse"] if reuse == "none" else acc["words"]).to_numpy(dtype=float)[keep]
    lvl = level_of(acc["size_words"].to_numpy()[keep], word_bits, buffer_bytes)
    sram = float(w[lvl == "sram"].sum())
    dram = float(w[lvl == "dram"].sum())
    if use_tiles and mask.any():
        tw = tiled_words(counts, word_bits=word_bits, buffer_bytes=buffer_bytes)
        sram += float(tw["sram"][mask].sum())
        dram += float(tw["dram"][mask].sum())
    rf = float(rf_accesses(ops[0], ops[1:].sum(), rf_accesses_per_op, rf_words))
    return np.array([*ops, rf, sram, dram], dtype=float)


def feature_matrix(counts: Counts, table: EnergyTable, masks: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """:func:`feature_vector` under ``table``'s dataflow, one row per named layer mask (default: all layers)."""
    masks = masks or {"all": np.ones(len(counts.layers), dtype=bool)}
    flow = table.dataflow
    rows = {
        name: feature_vector(counts, word_bits=table.word_bits, buffer_bytes=flow.buffer_bytes,
                             rf_accesses_per_op=flow.rf_accesses_per_op, reuse=flow.reuse, layers=m,
                             rf_words=flow.rf_words, tiling=flow.tiling)
        for name, m in masks.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(FEATURES))


def price_vector(table: EnergyTable) -> np.ndarray:
    """pJ for each of :data:`FEATURES` under ``table`` (operations, then one word access per level)."""
    return np.array([table.op_pj(op) for op in OPERATIONS] + [table.level_pj(lv) for lv in LEVELS])
