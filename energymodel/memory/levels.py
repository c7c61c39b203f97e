"""Memory levels of every access.

**Dataflow model** (which level serves an access), stated once here and in ``docs/cost-model.md``:

1. *Register file.* In the tiled conv/linear layers the RF words come from the loop nest inside the PE array
   (:mod:`energymodel.memory.loopnest`). Every other arithmetic operation (add, mult, compare) makes ``a``
   RF accesses (``a = rf_accesses_per_op``, default 3: two operand reads and one result write), and a MAC
   outside the tiled layers (functional matrix products, ``tiling = false``, ``reuse = "none"``)
   ``a · (1 + 1/√r)`` with ``r`` the smallest register file (:func:`energymodel.memory.tiling.rf_per_mac`).
2. *Weights, weight gradients, optimizer state* live on chip (SRAM) only when **all of them** fit in the
   buffer, ``weight_state_words · word_bytes <= buffer_bytes``, and every layer still finds a tiling in what
   they leave; otherwise every such access goes to DRAM (they must persist across steps, so a layer cannot keep
   its weights on chip while the others stream).
3. *Activations and activation gradients* follow one **residency plan** for the whole network
   (:mod:`energymodel.memory.residency`): a tensor is either kept on chip from its write to its last read, taking
   its words of the buffer all that time, or written to DRAM and read from DRAM by every reader. The network
   input always comes from DRAM.
4. *Conv and linear layers* (``dataflow.tiling = true``, the default): each phase is tiled by
   :mod:`energymodel.memory.tiling` — its resident operands (as the plan says) whole in the buffer, the other
   operands' tiles sharing what is left, the tilings with the fewest DRAM words found — and the loop nest
   inside the array (:mod:`energymodel.memory.loopnest`) gives its SRAM and RF words. Among tilings with
   equally few DRAM words (and words kept whole on chip) the one whose loop nest costs least on chip,
   ``sram_weight · SRAM + RF`` words, is run (:func:`phase_words`).
5. *Activations saved for the backward pass* are on chip only when the whole saved set of the step fits in
   the buffer and every layer still finds a tiling in what is left (the weight state has the first claim),
   else DRAM; on chip, they take their words of the buffer for the whole step.
6. With ``reuse = "ideal"`` each word of a layer outside the tiled ones is read/written once per phase (a lower
   bound); with ``reuse = "none"`` every MAC fetches both operands from their level (an upper bound; no tiling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from energymodel.count.gemm import GemmShape
from energymodel.count.phases import Counts, TiledLayer
from energymodel.errors import UserError
from energymodel.memory.loopnest import Array, ArrayTraffic, array_traffic, unrolled
from energymodel.memory.tiling import PhaseTraffic, rf_per_mac, tied_tilings

__all__ = ["level_of", "rf_accesses", "PHASES", "PhaseWords", "phase_homes", "phase_words", "tiling_words"]


def level_of(size_words: np.ndarray, word_bits: float, buffer_bytes: float) -> np.ndarray:
    """``"sram"`` where ``size_words · word_bits/8 <= buffer_bytes``, else ``"dram"`` (``inf`` is always DRAM)."""
    fits = np.asarray(size_words, dtype=float) * (word_bits / 8.0) <= buffer_bytes
    return np.where(fits, "sram", "dram")


def rf_accesses(mac, other, rf_accesses_per_op: float, rf_words: float):
    """RF accesses outside the tiled layers: ``mac · a·(1 + 1/√rf_words) + other · a`` (``other`` = adds +
    mults + compares; ``rf_words`` the smallest register file)."""
    return mac * rf_per_mac(rf_accesses_per_op, rf_words) + other * rf_accesses_per_op


#: (phase name, role written) of the three phases of a conv/linear layer
PHASES = (("forward", "out"), ("backward_input", "in"), ("backward_weight", "wt"))


@dataclass(frozen=True)
class PhaseWords:
    """One phase of a tiled layer: its SRAM tiling (DRAM words) and its loop nest in the array (SRAM-side and RF
    words), per role ``in, wt, out``. ``sram`` counts every SRAM access: the array's reads and partial sums, and
    every DRAM word passing through (a fill from DRAM, a write to DRAM)."""

    tiling: PhaseTraffic
    array: ArrayTraffic
    #: the buffer words the tiling was found in (what the residency plan left the phase)
    buffer_words: float = math.inf

    @property
    def dram(self) -> tuple[float, float, float]:
        return self.tiling.dram

    @property
    def sram(self) -> tuple[float, float, float]:
        return tuple(a + d for a, d in zip(self.array.sram, self.tiling.dram))  # type: ignore[return-value]

    @property
    def rf(self) -> tuple[float, float, float]:
        return self.array.rf

    @property
    def dram_words(self) -> float:
        return float(sum(self.dram))

    @property
    def sram_words(self) -> float:
        return float(sum(self.sram))

    @property
    def rf_words(self) -> float:
        return float(sum(self.rf))

    @property
    def resident(self) -> tuple[bool, bool, bool]:
        return self.tiling.resident


def phase_homes(counts: Counts, tl: TiledLayer, phase: str, *, word_bits: float, buffer_bytes: float,
                weights_on_chip: bool | None = None, saved_on_chip: bool | None = None) -> tuple[str, str, str]:
    """What may hold each role (``in, wt, out``) of one phase, by the physical rules alone: ``"dram"`` (the
    network input or a feature cache; weights or a saved input not on chip), ``"sram"`` (weights on chip, rule 2)
    or ``"free"`` (an activation, or a saved input on chip: the residency plan decides). ``weights_on_chip`` /
    ``saved_on_chip`` default to whether the weight state / the saved set fits the buffer."""
    word_bytes = word_bits / 8.0
    if weights_on_chip is None:
        weights_on_chip = counts.weight_state_words * word_bytes <= buffer_bytes
    if saved_on_chip is None:
        saved_on_chip = counts.saved_words * word_bytes <= buffer_bytes
    wt = "sram" if weights_on_chip else "dram"
    if phase == "forward":
        x_in = np.isfinite(counts.accesses["size_words"].iat[tl.input_row])
        return ("free" if x_in else "dram", wt, "free")
    if phase == "backward_input":
        return ("free", wt, "free")
    return ("free" if saved_on_chip else "dram", wt, "free")


def phase_words(tl: TiledLayer, written: str, homes: tuple[str, str, str], avail_words: float,
                array: Array, phase: str = "", *, by_loop_nest: bool = True) -> PhaseWords:
    """The SRAM tiling of one phase in ``avail_words`` of buffer and the loop nest of its array.

    Of the tilings with the fewest DRAM words (:func:`~energymodel.memory.tiling.tied_tilings`), for each innermost
    loop over tiles and each ``(N, K, C)`` tile the one with the largest position tile is priced by its loop
    nest, and the one that costs least on chip, ``w · SRAM + RF`` words (``w`` = :attr:`Array.sram_weight`; the
    DRAM words passing through the SRAM are equal among them), is run; ties go to the largest tile. With
    ``by_loop_nest=False``: the largest tile (what the residency plan's search uses: the same DRAM words, found
    without pricing the ties).
    Raises :class:`~energymodel.errors.UserError` naming the layer when no tiling fits.
    """
    pw = _tiling(tl.shape, written, homes, float(avail_words), array, by_loop_nest)
    if pw is None:
        raise UserError(f"layer {tl.name}: no tiling of its {phase.replace('_', ' ') or 'phase'} pass fits the "
                        f"{max(avail_words, 0):g} words of buffer left to it (dataflow.buffer_bytes)")
    return pw


def tiling_words(shape: GemmShape, written: str, pt: PhaseTraffic, array: Array) -> PhaseWords:
    """One tiling ``pt`` of a phase of ``shape`` and the loop nest it runs in ``array``."""
    (u_k, k1), (u_c, c1) = unrolled(shape.k, array.lanes[0]), unrolled(shape.c, array.lanes[1])
    b, k, c, p, q = pt.tile
    trips = {"N": math.ceil(shape.n / b) * math.ceil(shape.p / p) * math.ceil(shape.q / q),
             "K": math.ceil(k1 / round(k / u_k)), "C": math.ceil(c1 / round(c / u_c))}
    return PhaseWords(pt, array_traffic(shape, written, pt.tile, pt.innermost, trips[pt.innermost], array))


@lru_cache(maxsize=4096)
def _tiling(shape: GemmShape, written: str, homes: tuple[str, str, str], avail_words: float, array: Array,
            by_loop_nest: bool) -> PhaseWords | None:
    # one per innermost loop and (N, K, C) tile
    tied = tied_tilings(shape, written, homes, avail_words, array.lanes, divisors=array.tiles == "divisors")
    priced: dict[tuple[str, int, float, float], PhaseTraffic] = {}
    for pt in tied if by_loop_nest else tied[:1]:  # largest first; two residency choices may give one key
        priced.setdefault((pt.innermost, pt.tile[0], pt.tile[1], pt.tile[2]), pt)
    best: tuple[float, PhaseWords] | None = None
    for pt in priced.values():
        pw = tiling_words(shape, written, pt, array)
        cost = array.sram_weight * sum(pw.array.sram) + sum(pw.array.rf)
        if best is None or cost < best[0] * (1 - 1e-12):
            best = (cost, pw)
    return None if best is None else replace(best[1], buffer_words=avail_words)
