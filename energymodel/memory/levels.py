"""Memory levels of every access.

**Dataflow model** (which level serves an access), stated once here and in ``docs/cost-model.md``:

1. *Register file.* A MAC makes ``a · (1 + 1/√rf_words)`` RF accesses and every other arithmetic operation
   (add, mult, compare) ``a`` (``a = rf_accesses_per_op``, default 3: two operand reads and one result write;
   ``rf_words`` default 32; see :func:`energymodel.memory.tiling.rf_per_mac`).
2. *Weights, weight gradients, optimizer state* live on chip (SRAM) only when **all of them** fit in the
   buffer: ``weight_state_words · word_bytes <= buffer_bytes``; otherwise every such access goes to DRAM
   (they must persist across steps, so a layer cannot keep its weights on chip while the others stream).
3. *Conv and linear layers* (``dataflow.tiling = true``, the default): each phase is tiled by
   :mod:`energymodel.memory.tiling` — the input, weight and output tiles share the buffer (less the weight
   state when it is on chip), an activation operand stays whole on chip only if it fits *together* with the
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
"""

from __future__ import annotations

import numpy as np

from energymodel.count.phases import Counts
from energymodel.errors import UserError
from energymodel.memory.tiling import PhaseTraffic, phase_traffic, rf_per_mac

__all__ = ["level_of", "tiled_words", "layer_phases", "rf_accesses"]


def level_of(size_words: np.ndarray, word_bits: float, buffer_bytes: float) -> np.ndarray:
    """``"sram"`` where ``size_words · word_bits/8 <= buffer_bytes``, else ``"dram"`` (``inf`` is always DRAM)."""
    fits = np.asarray(size_words, dtype=float) * (word_bits / 8.0) <= buffer_bytes
    return np.where(fits, "sram", "dram")


def rf_accesses(mac, other, rf_accesses_per_op: float, rf_words: float):
    """RF accesses: ``mac · a·(1 + 1/√rf_words) + other · a`` (``other`` = adds + mults + compares)."""
    return mac * rf_per_mac(rf_accesses_per_op, rf_words) + other * rf_accesses_per_op


#: (phase name, role written) of the three phases of a conv/linear layer
_PHASES = (("forward", "out"), ("backward_input", "in"), ("backward_weight", "wt"))


def layer_phases(counts: Counts, *, word_bits: float, buffer_bytes: float) -> dict[int, dict[str, PhaseTraffic]]:
    """The tiling of every phase of every tiled conv/linear layer (:mod:`energymodel.memory.tiling`), by layer row.

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
