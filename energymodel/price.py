"""Pricing: action counts × an energy table → memory levels and energy, per layer and in total.

Counting (:mod:`energymodel.counting`) and pricing are separate steps, as Accelergy separates action
counts from energy reference tables: one trace can be priced under many tables.

**Dataflow model** (which level serves an access), stated once here and in ``docs/cost-model.md``:

1. *Register file.* Every arithmetic operation (MAC, add, mult, compare) makes
   ``rf_accesses_per_op`` RF accesses (default 3: two operand reads and one result write).
2. *Weights, weight gradients, optimizer state* live on chip (SRAM) only when **all of them** fit in the
   buffer: ``weight_state_words · word_bytes <= buffer_bytes``; otherwise every such access goes to DRAM
   (they must persist across steps, so a layer cannot keep its weights on chip while the others stream).
3. *Activations and activation gradients*: a tensor is served from SRAM when the whole batch's tensor
   fits, ``B · |T| · word_bytes <= buffer_bytes``, else from DRAM. The network input always comes from DRAM.
4. *Activations saved for the backward pass* (written in forward, read in backward) are on chip only
   when the whole saved set of the step fits in the buffer, else DRAM.
5. With ``reuse = "ideal"`` each tensor word is read/written once per phase (a lower bound); with
   ``reuse = "none"`` every MAC fetches both operands from their level (an upper bound).

Energy of a layer = ``Σ_op count_op · pJ_op + Σ_level accesses_level · pJ_level`` with
``pJ_level = pj · word_bits / bits`` of the table's entry for that level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .counting import ACTIVATION_OPERANDS, WEIGHT_OPERANDS, Counts
from .table import LEVELS, OPERATIONS, EnergyTable

__all__ = ["price_layers", "level_of", "FEATURES", "feature_matrix", "feature_vector", "price_vector"]

#: the priced quantities, in the order used by :func:`feature_vector` / :func:`price_vector`
FEATURES = (*OPERATIONS, *LEVELS)


def level_of(size_words: np.ndarray, word_bits: float, buffer_bytes: float) -> np.ndarray:
    """``"sram"`` where ``size_words · word_bits/8 <= buffer_bytes``, else ``"dram"`` (``inf`` is always DRAM)."""
    fits = np.asarray(size_words, dtype=float) * (word_bits / 8.0) <= buffer_bytes
    return np.where(fits, "sram", "dram")


def _ops(layers: pd.DataFrame) -> pd.DataFrame:
    macs = layers["macs_forward"] + layers["macs_backward_input"] + layers["macs_backward_weight"]
    return pd.DataFrame({"mac": macs, "add": layers["add_ops"], "mult": layers["mult_ops"], "cmp": layers["cmp_ops"]})


def price_layers(counts: Counts, table: EnergyTable) -> pd.DataFrame:
    """Per-layer costs under ``table``: the counts plus accesses by level, storage and energy columns."""
    layers = counts.layers.copy()
    n = len(layers)
    ops = _ops(layers) if n else pd.DataFrame(columns=list(OPERATIONS))
    flow = table.dataflow
    acc = counts.accesses
    words = acc["words_noreuse"] if flow.reuse == "none" else acc["words"]
    lvl = level_of(acc["size_words"].to_numpy(), table.word_bits, flow.buffer_bytes)
    frame = pd.DataFrame({"layer": acc["layer"].to_numpy(), "level": lvl, "words": words.to_numpy(),
                          "operand": acc["operand"].to_numpy()})

    def per_layer(mask) -> np.ndarray:
        sums = frame[mask].groupby("layer")["words"].sum()
        return sums.reindex(range(n), fill_value=0.0).to_numpy(dtype=float)

    layers["macs"] = ops["mac"].to_numpy(dtype=float) if n else []
    layers["rf_accesses"] = ops.sum(axis=1).to_numpy(dtype=float) * flow.rf_accesses_per_op if n else []
    layers["sram_accesses"] = per_layer(frame["level"] == "sram")
    layers["dram_accesses"] = per_layer(frame["level"] == "dram")
    layers["weight_accesses"] = per_layer(frame["operand"].isin(WEIGHT_OPERANDS))
    layers["activation_accesses"] = per_layer(frame["operand"].isin(ACTIVATION_OPERANDS))
    layers["storage_bytes"] = np.where(layers["first_call"], layers["params"] * table.word_bytes, 0.0) if n else []
    compute = sum(ops[op].to_numpy(dtype=float) * table.op_pj(op) for op in OPERATIONS) if n else []
    layers["energy_compute_pj"] = compute
    for level in LEVELS:
        layers[f"energy_{level}_pj"] = layers[f"{level}_accesses"] * table.level_pj(level)
    layers["energy_pj"] = layers["energy_compute_pj"] + sum(layers[f"energy_{lv}_pj"] for lv in LEVELS)
    return layers


def feature_vector(counts: Counts, *, word_bits: int, buffer_bytes: float, rf_accesses_per_op: float,
                   reuse: str = "ideal", layers: np.ndarray | None = None) -> np.ndarray:
    """Totals ``[mac, add, mult, cmp, rf, sram, dram]`` (operations and word accesses) for a dataflow.

    ``layers`` (a boolean mask over ``counts.layers`` rows) restricts the sum to some layers.
    Energy is then ``feature_vector · price_vector(table)``: that is what makes sweeps array arithmetic.
    """
    lay = counts.layers
    mask = np.ones(len(lay), dtype=bool) if layers is None else np.asarray(layers, dtype=bool)
    ops = _ops(lay[mask]).sum().to_numpy(dtype=float) if mask.any() else np.zeros(4)
    acc = counts.accesses
    keep = mask[acc["layer"].to_numpy()] if len(acc) else np.zeros(0, dtype=bool)
    w = (acc["words_noreuse"] if reuse == "none" else acc["words"]).to_numpy(dtype=float)[keep]
    lvl = level_of(acc["size_words"].to_numpy()[keep], word_bits, buffer_bytes)
    sram = float(w[lvl == "sram"].sum())
    dram = float(w[lvl == "dram"].sum())
    rf = float(ops.sum()) * rf_accesses_per_op
    return np.array([*ops, rf, sram, dram], dtype=float)


def feature_matrix(counts: Counts, table: EnergyTable, masks: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """:func:`feature_vector` under ``table``'s dataflow, one row per named layer mask (default: all layers)."""
    masks = masks or {"all": np.ones(len(counts.layers), dtype=bool)}
    flow = table.dataflow
    rows = {
        name: feature_vector(counts, word_bits=table.word_bits, buffer_bytes=flow.buffer_bytes,
                             rf_accesses_per_op=flow.rf_accesses_per_op, reuse=flow.reuse, layers=m)
        for name, m in masks.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(FEATURES))


def price_vector(table: EnergyTable) -> np.ndarray:
    """pJ for each of :data:`FEATURES` under ``table`` (operations, then one word access per level)."""
    return np.array([table.op_pj(op) for op in OPERATIONS] + [table.level_pj(lv) for lv in LEVELS])
