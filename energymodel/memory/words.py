"""Words per level of every layer: the size rule, the residency plan and the tiled layers' loop nests together.

:func:`layer_words` is the one place that says which level serves each access of a counted step
(:mod:`energymodel.memory.levels` states the rules): with the tiled dataflow (``tiling = true``, ``reuse =
"ideal"``) activations and their gradients follow the residency plan (:mod:`energymodel.memory.residency`) and
conv/linear phases their tiling and loop nest; weights, their gradients, optimizer state and saved activations
keep the size rule. Otherwise (``tiling = false`` or ``reuse = "none"``) every access keeps the size rule and MACs
the ``a·(1 + 1/√r)`` RF rule.
"""

from __future__ import annotations

import numpy as np

from energymodel.count.phases import Counts
from energymodel.memory.levels import level_of, rf_accesses
from energymodel.memory.loopnest import Array
from energymodel.memory.residency import ResidencyPlan, plan

__all__ = ["layer_words", "uses_plan", "WORD_KEYS"]

#: the per-layer arrays of :func:`layer_words`
WORD_KEYS = ("rf", "sram", "dram", "weight", "activation")

_WEIGHT_OPERANDS = ("weight", "weight_grad", "optimizer_state")


def uses_plan(counts: Counts, *, tiling: bool, reuse: str) -> bool:
    """Whether the residency plan and the tiled dataflow price ``counts`` (``tiling = true``, ideal reuse)."""
    return bool(tiling) and reuse == "ideal"


def layer_words(counts: Counts, *, word_bits: float, buffer_bytes: float, array: Array, rf_accesses_per_op: float,
                reuse: str = "ideal", tiling: bool = True) -> dict[str, np.ndarray]:
    """Per-layer words (arrays over ``counts.layers`` rows): ``rf``, ``sram``, ``dram`` accesses and the
    ``weight`` / ``activation`` words at SRAM and DRAM.

    RF: a tiled layer's MACs make the RF words of its loop nests, its other operations ``a`` each; any other
    layer :func:`energymodel.memory.levels.rf_accesses` with the smallest register file. A tiled layer also reads
    its bias (or writes its gradient) once per phase at the weights' level, and writes its saved input in the
    forward pass where the plan says (:attr:`ResidencyPlan.saved_copy`: to DRAM, read out of the SRAM, when its
    input was on chip and the saved set is in DRAM; to SRAM when the saved set fits).
    """
    layers = counts.layers
    n = len(layers)
    out = {k: np.zeros(n) for k in WORD_KEYS}
    if not n:
        return out
    acc = counts.accesses
    planned = uses_plan(counts, tiling=tiling, reuse=reuse)
    rp: ResidencyPlan | None = (plan(counts, word_bits=word_bits, buffer_bytes=buffer_bytes, array=array)
                                if planned else None)
    words = (acc["words_noreuse"] if reuse == "none" else acc["words"]).to_numpy(dtype=float)
    lvl = level_of(acc["size_words"].to_numpy(dtype=float), word_bits, buffer_bytes).astype(object)
    keep = np.ones(len(acc), dtype=bool)
    weight_op = acc["operand"].isin(_WEIGHT_OPERANDS).to_numpy()
    if rp is not None:
        decided = rp.level != ""
        lvl[decided] = rp.level[decided]
        lvl[weight_op] = "sram" if rp.weights_on_chip else "dram"
        lvl[(acc["operand"] == "saved").to_numpy()] = "sram" if rp.saved_on_chip else "dram"
        keep &= ~acc["tiled"].to_numpy(dtype=bool)
    layer = acc["layer"].to_numpy()
    for key, mask in (("sram", lvl == "sram"), ("dram", lvl == "dram")):
        np.add.at(out[key], layer[keep & mask], words[keep & mask])
    np.add.at(out["weight"], layer[keep & weight_op], words[keep & weight_op])
    np.add.at(out["activation"], layer[keep & ~weight_op], words[keep & ~weight_op])
    macs = (layers["macs_forward"] + layers["macs_backward_input"] + layers["macs_backward_weight"]).to_numpy(float)
    other = (layers["add_ops"] + layers["mult_ops"] + layers["cmp_ops"]).to_numpy(dtype=float)
    rf_min = float(min(array.rf_words))
    out["rf"] = np.asarray(rf_accesses(macs, other, rf_accesses_per_op, rf_min), dtype=float)
    if rp is None:
        return out
    w_level = "sram" if rp.weights_on_chip else "dram"
    for tl in counts.tiled:
        i = tl.layer
        phases = rp.tiled.get(i, {})
        out["rf"][i] = other[i] * rf_accesses_per_op
        for pw in phases.values():
            out["rf"][i] += pw.rf_words
            out["sram"][i] += pw.sram_words
            out["dram"][i] += pw.dram_words
            out["weight"][i] += pw.dram[1] + pw.sram[1] + tl.bias_words
            out["activation"][i] += pw.dram[0] + pw.sram[0] + pw.dram[2] + pw.sram[2]
            out[w_level][i] += tl.bias_words
        if i in rp.saved_copy:
            where, x_words = rp.saved_copy[i]
            out["sram"][i] += x_words
            out["activation"][i] += x_words
            if where == "dram":
                out["dram"][i] += x_words
    return out
