"""Pricing: action counts × an energy table → memory levels and energy, per layer and in total.

Counting (:mod:`energymodel.counting`) and pricing are separate steps, as Accelergy separates action
counts from energy reference tables: one trace can be priced under many tables.

**Dataflow model** (which level serves an access), stated once here and in ``docs/cost-model.md``:

1. *Register file.* A MAC makes ``a · (1 + 1/√rf_words)`` RF accesses and every other arithmetic operation
   (add, mult, compare) ``a`` (``a = rf_accesses_per_op``, default 3: two operand reads and one result write;
   ``rf_words`` default 32; see :func:`energymodel.dataflow.rf_per_mac`).
2. *Weights, weight gradients, optimizer state* live on chip (SRAM) only when **all of them** fit in the
   buffer: ``weight_state_words · word_bytes <= buffer_bytes``; otherwise every such access goes to DRAM
   (they must persist across steps, so a layer cannot keep its weights on chip while the others stream).
3. *Conv and linear layers* (``dataflow.tiling = true``, the default): each phase is tiled by
   :mod:`energymodel.dataflow` — the input, weight and output tiles share the buffer (less the weight state
   when it is on chip), an activation operand stays whole on chip only if it fits *together* with the
   other operands' tiles, and the tiling with the fewest DRAM words is chosen. The saved input of the weight
   gradient may stay on chip (a copy written in the forward pass) only when the whole saved set fits (rule 5);
   otherwise the backward pass streams it from DRAM, where the forward pass wrote it if it had kept it on chip.
4. *Other activations and activation gradients* (and conv/linear layers with ``tiling = false``): a tensor
   is served from SRAM when the whole batch's tensor fits, ``B · |T| · word_bytes <= buffer_bytes``, else
   from DRAM. The network input always comes from DRAM.
5. *Activations saved for the backward pass* (written in forward, read in backward) are on chip only
   when the whole saved set of the step fits in the buffer, else DRAM.
6. With ``reuse = "ideal"`` each tensor word is read/written once per phase (a lower bound); with
   ``reuse = "none"`` every MAC fetches both operands from their level (an upper bound; no tiling).

Energy of a layer = ``Σ_op count_op · pJ_op + Σ_level accesses_level · pJ_level`` with
``pJ_level = pj · word_bits / bits`` of the table's entry for that level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .counting import ACTIVATION_OPERANDS, WEIGHT_OPERANDS, Counts
from .dataflow import PhaseTraffic, phase_traffic, rf_per_mac
from .errors import UserError
from .table import LEVELS, OPERATIONS, EnergyTable

__all__ = ["price_layers", "level_of", "FEATURES", "feature_matrix", "feature_vector", "price_vector", "tiled_words",
           "layer_phases", "rf_accesses"]

#: the priced quantities, in the order used by :func:`feature_vector` / :func:`price_vector`
FEATURES = (*OPERATIONS, *LEVELS)


def level_of(size_words: np.ndarray, word_bits: float, buffer_bytes: float) -> np.ndarray:
    """``"sram"`` where ``size_words · word_bits/8 <= buffer_bytes``, else ``"dram"`` (``inf`` is always DRAM)."""
    fits = np.asarray(size_words, dtype=float) * (word_bits / 8.0) <= buffer_bytes
    return np.where(fits, "sram", "dram")


def _ops(layers: pd.DataFrame) -> pd.DataFrame:
    macs = layers["macs_forward"] + layers["macs_backward_input"] + layers["macs_backward_weight"]
    return pd.DataFrame({"mac": macs, "add": layers["add_ops"], "mult": layers["mult_ops"], "cmp": layers["cmp_ops"]})


def rf_accesses(mac, other, rf_accesses_per_op: float, rf_words: float):
    """RF accesses: ``mac · a·(1 + 1/√rf_words) + other · a`` (``other`` = adds + mults + compares)."""
    return mac * rf_per_mac(rf_accesses_per_op, rf_words) + other * rf_accesses_per_op


#: (phase name, role written) of the three phases of a conv/linear layer
_PHASES = (("forward", "out"), ("backward_input", "in"), ("backward_weight", "wt"))


def layer_phases(counts: Counts, *, word_bits: float, buffer_bytes: float) -> dict[int, dict[str, PhaseTraffic]]:
    """The tiling of every phase of every tiled conv/linear layer (:mod:`energymodel.dataflow`), by layer row.

    Raises :class:`~energymodel.errors.UserError` naming the layer when no tiling fits the buffer.
    """
    word_bytes = word_bits / 8.0
    buffer_words = buffer_bytes / word_bytes
    weights_on_chip = counts.weight_state_words * word_bytes <= buffer_bytes
    saved_fits = counts.saved_words * word_bytes <= buffer_bytes
    avail = buffer_words - (counts.weight_state_words if weights_on_chip else 0.0)
    wt = "sram" if weights_on_chip else "dram"
    sizes = counts.accesses["size_words"].to_numpy()
    out: dict[int, dict[str, PhaseTraffic]] = {}
    for tl in counts.tiled:
        x_home = "dram" if not np.isfinite(sizes[tl.input_row]) else "free"
        res: dict[str, PhaseTraffic] = {}
        for (phase, written), runs in zip(_PHASES, tl.phases):
            if not runs:
                continue
            if phase == "forward":
                homes = (x_home, wt, "free")
            elif phase == "backward_input":
                homes = ("free", wt, "free")
            else:
                homes = ("free" if saved_fits else "dram", wt, "free")
            pt = phase_traffic(tl.shape, written, homes, float(avail))
            if pt is None:
                raise UserError(
                    f"layer {tl.name}: no tiling of its {phase.replace('_', ' ')} pass fits a buffer of "
                    f"{buffer_bytes:g} bytes (dataflow.buffer_bytes)"
                )
            res[phase] = pt
        out[tl.layer] = res
    return out


def tiled_words(counts: Counts, *, word_bits: float, buffer_bytes: float) -> dict[str, np.ndarray]:
    """Per-layer words of the tiled conv/linear layers: ``sram``, ``dram``, ``weight``, ``activation``
    (arrays over ``counts.layers`` rows, zero for the other layers).

    Each phase adds its roles' words (``in``/``out`` are activations or their gradients, ``wt`` the weight or
    its gradient) plus the bias words at the weights' level. The saved input (its read is the weight
    gradient's ``in`` words) costs one SRAM write in the forward pass when the weight gradient keeps it on
    chip, else one DRAM write when the forward tiling kept the input on chip (a streamed input is in DRAM
    already).
    """
    n = len(counts.layers)
    out = {k: np.zeros(n) for k in ("sram", "dram", "weight", "activation")}
    if not counts.tiled:
        return out
    word_bytes = word_bits / 8.0
    w_level = "sram" if counts.weight_state_words * word_bytes <= buffer_bytes else "dram"
    phases = layer_phases(counts, word_bits=word_bits, buffer_bytes=buffer_bytes)
    for tl in counts.tiled:
        i = tl.layer
        for pt in phases[i].values():
            out["sram"][i] += pt.sram_words
            out["dram"][i] += pt.dram_words
            out["weight"][i] += pt.dram[1] + pt.sram[1] + tl.bias_words
            out["activation"][i] += pt.dram[0] + pt.sram[0] + pt.dram[2] + pt.sram[2]
            out[w_level][i] += tl.bias_words
        if "backward_weight" in phases[i]:
            fwd_kept, bwd_kept = phases[i]["forward"].resident[0], phases[i]["backward_weight"].resident[0]
            x_words = float(tl.shape.words()[0])
            if fwd_kept or bwd_kept:
                out["sram" if bwd_kept else "dram"][i] += x_words
                out["activation"][i] += x_words
    return out


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
