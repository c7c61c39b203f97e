"""A tiled dataflow for convolution and linear layers: which loop tiling fits the buffer, and its DRAM words.

One phase of a conv/linear layer (forward, backward to the input, backward to the weights) is a loop nest
over five dimensions (per group of a grouped conv): batch ``N``, output channels ``K``, input channels
``C``, output rows ``P`` and columns ``Q`` (the kernel ``R x S`` is never split). It touches three operands,
each indexed by two of three *loop groups* — ``NPQ`` (batch and positions), ``K`` and ``C``:

============  =====================  ===================  =========================
role          forward                backward to input    backward to weights
============  =====================  ===================  =========================
in  (NPQ, C)  ``X`` read             ``dX`` written       ``X`` (saved) read
wt  (K, C)    ``W`` read             ``W`` read           ``dW`` written
out (NPQ, K)  ``Y`` written          ``dY`` read          ``dY`` read
reduction     ``C``                  ``K``                ``NPQ``
============  =====================  ===================  =========================

A **tiling** picks tile sizes ``(b, k, c, p, q)``; the buffer holds one tile of each operand **together**:

    in tile  = b · c · h(p) · w(q)      h(p) = min(H, (p−1)·stride + (R−1)·dilation + 1)  (rows with halo)
    wt tile  = k · c · R · S
    out tile = b · k · p · q
    in tile + wt tile + out tile <= buffer words          (an operand kept whole on chip counts whole)

The tiles are visited in a loop order; only which loop group is innermost matters for traffic. Each
operand is indexed by two groups and *irrelevant* to the third; its tile stays in the buffer while the
innermost loop runs over its irrelevant group, and is fetched again for every step of that group
otherwise. With ``m`` = the trip count ``⌈D/d⌉`` of the operand's irrelevant group (1 when that group is
innermost), the DRAM words of one phase are

    read operand:     m · V
    written operand:  (2m − 1) · V        (m partial-sum writes, m − 1 partial-sum reads back)

where ``V`` is the operand's words with halo: ``V_in = N·C·rows(p)·cols(q)`` (``rows(p)`` sums, over the
``⌈P/p⌉`` row tiles, the input rows each tile reads: its window clipped to the real rows, padding is not
read), ``V_wt = K·C·R·S``, ``V_out = N·K·P·Q`` (times the number of groups). An operand may instead be **kept whole on chip** (resident): it then costs no DRAM words, ``|T|``
SRAM words (each word once, as under ideal reuse), and occupies ``|T|`` words of the buffer. Which
operands may be resident is the caller's *home* for each role: ``"dram"`` (streamed: the network input,
a feature cache, weights that do not fit), ``"sram"`` (resident, already accounted for in the buffer:
weights when all weight state fits) or ``"free"`` (the search decides).

The search evaluates every candidate tiling (each dimension ``D`` takes the values ``⌈D/2^i⌉``), every
innermost group and every residency choice at once (numpy), keeps those that fit, and returns every tiling
with the fewest DRAM words and, among those, the fewest words kept whole on chip (:func:`tied_tilings`: one
per innermost loop and ``(N, K, C)`` tile, its largest ``(P, Q)`` tile; largest first). Which of those ties a layer runs is decided by what its loop nest then costs in SRAM
and RF words (:func:`energymodel.memory.levels.phase_words`); :func:`phase_traffic` is the largest. Both
are cached per layer shape (:func:`functools.lru_cache`).
The DRAM words never exceed those of one-element tiles with ``C`` innermost, about ``2·MACs + |Y|`` (every
MAC fetches both operands: the no-reuse bound), and reach ``|X| + |W| + |Y|`` (the ideal bound, each word
once) when the buffer holds every operand whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from energymodel.count.gemm import GemmShape
from energymodel.memory.loopnest import touched, unrolled

__all__ = ["PhaseTraffic", "ROLES", "HOMES", "phase_traffic", "tied_tilings", "candidates", "rf_per_mac", "touched"]

#: operand roles of one phase, in this order everywhere
ROLES = ("in", "wt", "out")
HOMES = ("dram", "sram", "free")
#: loop group each role is irrelevant to: in -> K, wt -> NPQ, out -> C
_IRRELEVANT = {"in": "K", "wt": "N", "out": "C"}
_GROUPS = ("N", "K", "C")


def rf_per_mac(rf_accesses_per_op, rf_words):
    """Register-file accesses per MAC for per-PE register files of ``rf_words`` words:
    ``a · (1 + 1/√rf_words)`` with ``a = rf_accesses_per_op`` (3: read two operands, update the sum).

    The ``a`` accesses at the MAC are made every MAC. Besides, the RF must be refilled from the buffer: a
    register file of ``r`` words running a matrix-product loop nest can reuse each word it holds at best
    ``O(√r)`` times (Hong & Kung, "I/O complexity: the red-blue pebble game", STOC 1981: a product of ``M``
    MACs with a fast memory of ``r`` words moves ``Ω(M/√r)`` words), so each of the ``a`` operand streams
    is refilled once every ``√r`` MACs. ``r = 1``: 6 per MAC; ``r = 32``: 3.53; ``r = 64``: 3.375.
    """
    return rf_accesses_per_op * (1.0 + 1.0 / np.sqrt(rf_words))




@dataclass(frozen=True)
class PhaseTraffic:
    """The chosen tiling of one phase and its words per role (``in``, ``wt``, ``out``)."""

    dram: tuple[float, float, float]
    sram: tuple[float, float, float]
    tile: tuple[int, float, float, int, int]  # b, k, c, p, q
    innermost: str  # loop group kept innermost: "N" (NPQ), "K" or "C"
    resident: tuple[bool, bool, bool]

    @property
    def dram_words(self) -> float:
        return float(sum(self.dram))

    @property
    def sram_words(self) -> float:
        return float(sum(self.sram))


def candidates(d: int, divisors: bool = False) -> np.ndarray:
    """Candidate tile sizes of a dimension of length ``d``: ``⌈d/2^i⌉`` for ``i = 0 .. ⌈log2 d⌉`` (d .. 1); with
    ``divisors``, only those that divide ``d`` (no partial last tile: ``d = 7`` keeps 7 and 1, not 4 and 2)."""
    steps = max(1, math.ceil(math.log2(d))) if d > 1 else 0
    sizes = np.unique(np.array([-(-d // (1 << i)) for i in range(steps + 1)], dtype=np.int64))
    return sizes[d % sizes == 0] if divisors else sizes


def _halo_sum(length: int, tile: np.ndarray, size_in: int, kernel: int, stride: int, dil: int,
              pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(input rows one tile holds, input rows read summed over all ``⌈length/tile⌉`` tiles).

    A tile of output rows ``[o, o+L)`` reads input rows ``[o·stride − pad, (o+L−1)·stride − pad + reach)``
    (``reach = (kernel−1)·dil + 1``) clipped to the ``size_in`` real rows (padding is not read) — or, when the
    stride skips rows (``stride > reach``), each output row's own window, clipped; the tile buffer holds
    ``min(size_in, touched(L))`` rows (:func:`touched`).
    """
    reach = (kernel - 1) * dil + 1
    one = np.minimum(size_in, touched(tile, kernel, stride, dil))
    total = np.empty(tile.shape, dtype=np.int64)
    if stride > reach:  # disjoint windows: every output row reads its own clipped window
        o = np.arange(length)
        own = np.maximum(np.minimum(o * stride - pad + reach, size_in) - np.maximum(o * stride - pad, 0), 0)
        total.flat[:] = int(own.sum())
        return one, total
    for i, t in enumerate(tile.flat):
        start = np.arange(0, length, int(t))
        end = np.minimum(start + int(t), length)
        lo = np.maximum(start * stride - pad, 0)
        hi = np.minimum((end - 1) * stride - pad + reach, size_in)
        total.flat[i] = int(np.maximum(hi - lo, 0).sum())
    return one, total


@lru_cache(maxsize=4096)
def phase_traffic(shape: GemmShape, written: str, homes: tuple[str, str, str],
                  buffer_words: float, lanes: tuple[int, int] = (1, 1)) -> PhaseTraffic | None:
    """The tiling of one phase with the fewest DRAM words, or ``None`` when no tiling fits the buffer: the first
    (largest) of :func:`tied_tilings`."""
    tied = tied_tilings(shape, written, homes, buffer_words, lanes)
    return tied[0] if tied else None


@lru_cache(maxsize=4096)
def tied_tilings(shape: GemmShape, written: str, homes: tuple[str, str, str],
                 buffer_words: float, lanes: tuple[int, int] = (1, 1), every: bool = False,
                 divisors: bool = False) -> tuple[PhaseTraffic, ...]:
    """The tilings of one phase with the fewest DRAM words and, among those, the fewest words kept whole on chip:
    for each innermost loop and each ``(N, K, C)`` tile the one with the largest ``(P, Q)`` tile (``every``: all of
    them); largest tile first; empty when no tiling fits the buffer.

    ``written``: the role the phase writes (``"out"`` forward, ``"in"`` backward to the input, ``"wt"``
    backward to the weights); ``homes``: ``"dram"``, ``"sram"`` or ``"free"`` for each of :data:`ROLES`;
    ``lanes``: PEs of the array along ``K`` and ``C`` — a tile holds a whole number of array steps, ``k = u_K·k1``
    and ``c = u_C·c1`` (:func:`energymodel.memory.loopnest.unrolled`); ``divisors``: only tiles that divide their
    dimension (``k1`` and ``c1`` for the channels; :func:`candidates`), the space of a mapper without partial tiles.
    """
    g = shape.groups
    (u_k, k1), (u_c, c1) = unrolled(shape.k, lanes[0]), unrolled(shape.c, lanes[1])
    b = candidates(shape.n, divisors)[:, None, None, None, None]
    k = (u_k * candidates(k1, divisors))[None, :, None, None, None]
    c = (u_c * candidates(c1, divisors))[None, None, :, None, None]
    p = candidates(shape.p, divisors)[None, None, None, :, None]
    q = candidates(shape.q, divisors)[None, None, None, None, :]
    hp, rows = _halo_sum(shape.p, p, shape.h, shape.r, shape.stride[0], shape.dilation[0], shape.padding[0])
    wq, cols = _halo_sum(shape.q, q, shape.w, shape.s, shape.stride[1], shape.dilation[1], shape.padding[1])
    tiles = {
        "in": (b * c * hp * wq).astype(float),
        "wt": (k * c * (shape.r * shape.s)).astype(float),
        "out": (b * k * p * q).astype(float),
    }
    vol = {
        "in": (g * shape.n * shape.c * rows * cols).astype(float),
        "wt": float(g * shape.k * shape.c * shape.r * shape.s),
        "out": float(g * shape.n * shape.k * shape.p * shape.q),
    }
    trips = {"N": (-(-shape.n // b)) * (-(-shape.p // p)) * (-(-shape.q // q)),
             "K": np.ceil(k1 / np.round(k / u_k)), "C": np.ceil(c1 / np.round(c / u_c))}
    volume = (b * k * c * p * q).astype(float)
    full = dict(zip(ROLES, (float(v) for v in shape.words())))
    free = [i for i, h in enumerate(homes) if h == "free"]
    found: list[tuple[float, float, float, int, PhaseTraffic]] = []  # (DRAM, on chip, -volume, inner, tiling)
    best = (math.inf, math.inf)
    for choice in range(1 << len(free)):
        resident = [h == "sram" for h in homes]
        for j, i in enumerate(free):
            resident[i] = bool(choice >> j & 1)
        used = sum((full[r] if homes[i] == "free" else 0.0) if resident[i] else tiles[r]
                   for i, r in enumerate(ROLES))
        fits = np.broadcast_to(used <= buffer_words, np.broadcast_shapes(*(t.shape for t in tiles.values())))
        if not fits.any():
            continue
        sram = tuple(full[r] if resident[i] else 0.0 for i, r in enumerate(ROLES))
        on_chip = sum(sram)
        for n_inner, inner in enumerate(_GROUPS):
            dram = 0.0
            parts = []
            for i, r in enumerate(ROLES):
                if resident[i]:
                    parts.append(0.0)
                    continue
                m = 1 if _IRRELEVANT[r] == inner else trips[_IRRELEVANT[r]]
                words = vol[r] * ((2 * m - 1) if r == written else m)
                parts.append(words)
                dram = dram + words
            total = np.where(fits, np.broadcast_to(dram, fits.shape), np.inf)
            val = float(total.min())
            if not math.isfinite(val) or (val, on_chip) > best:
                continue
            if (val, on_chip) < best:
                best, found = (val, on_chip), []
            tied = total == val
            if every:
                picks = list(zip(*np.nonzero(tied)))
            else:  # per (N, K, C) tile the largest (P, Q) tile, the first in C order among equals
                flat = np.where(tied, volume, -1.0).reshape(tied.shape[:3] + (-1,))
                at = flat.argmax(axis=-1)
                largest = np.take_along_axis(flat, at[..., None], -1)[..., 0]
                picks = [(i, j, m, *np.unravel_index(int(at[i, j, m]), tied.shape[3:]))
                         for i, j, m in zip(*np.nonzero(largest > 0))]
            full_parts = [np.broadcast_to(x, fits.shape) for x in parts]
            for idx in picks:
                per_role = tuple(float(x[idx]) for x in full_parts)
                tile = (int(b.flat[idx[0]]), float(k.flat[idx[1]]), float(c.flat[idx[2]]), int(p.flat[idx[3]]),
                        int(q.flat[idx[4]]))
                found.append((val, on_chip, -float(volume[idx]), n_inner,
                              PhaseTraffic(per_role, sram, tile, inner, tuple(resident))))
    found.sort(key=lambda f: f[:3])  # stable: among equals, the order found (residency choice, innermost, C order)
    return tuple(f[4] for f in found)
