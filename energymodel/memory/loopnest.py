"""The loop nest inside the array: how often a conv/linear phase re-reads each operand from SRAM and refills
it into the register files.

**Hardware** (declared in the energy table's ``[dataflow]``, see :class:`Array`): ``rows x cols`` processing
elements (PEs). The rows unroll the layer's output channels ``K`` and the columns its input channels ``C`` (or
the other way round): of ``K`` channels ``u_K = K / ⌈K/rows⌉`` rows are used and each PE gets ``K1 = ⌈K/rows⌉``
of them (likewise ``u_C``, ``C1``). Each PE has three register files: *input*, *weight* and *output* (partial
sums), of ``r_input``, ``r_weight``, ``r_output`` words. In each phase they hold these roles of
:mod:`energymodel.memory.tiling`:

===============  ===========  ===========  =======================
phase            input RF     weight RF    output RF (the written)
===============  ===========  ===========  =======================
forward          in (``X``)   wt (``W``)   out (``Y``)
backward_input   out (``dY``) wt (``W``)   in (``dX``)
backward_weight  in (``X``)   out (``dY``) wt (``dW``)
===============  ===========  ===========  =======================

**Loop nest of one PE.** Within one SRAM tile a PE runs the loops ``N, P, Q`` (batch and positions), ``K1``,
``C1``, ``R, S`` (kernel) with the tile's per-PE extents, in some order (innermost first). Footprints of a set of
loop extents: ``in = n·c·h·w`` (``h = min(H_t, (p−1)·stride + (r−1)·dilation + 1)``, rows with halo, likewise
``w``), ``wt = k·c·r·s``, ``out = n·k·p·q``. Each operand's RF holds the **longest prefix** of the order whose
footprint fits it, the loop at the cut possibly split (its largest divisor that still fits); a loop the operand
does not depend on never grows its footprint, so it is taken in for free. With ``M`` the phase's MACs:

- ``F_X`` = (product of the prefix's extents) / (its footprint): MACs per word filled into ``X``'s RF. When the
  prefix holds the whole per-PE tile and the innermost loop over SRAM tiles is one ``X`` does not depend on,
  ``F_X`` is also multiplied by that loop's trip count (the RF keeps ``X`` across SRAM tiles).
- ``st_X`` (read roles) = product of the innermost run of loops ``X`` does not depend on: the MAC reads ``X``
  from its RF once every ``st_X`` MACs.
- ``s_X`` = the unrolling ``X`` does not depend on: ``u_K`` for ``in``, ``u_C`` for ``out``, 1 for ``wt``: one
  SRAM read feeds ``s_X`` PEs (a broadcast), or ``s_X`` partial sums meet in an adder tree before one write.

Words of one phase (``|O|``: the written operand's words; DRAM words of :mod:`energymodel.memory.tiling` pass
through the SRAM and are added there):

    read role X:     RF_X = M/st_X + M/F_X                 SRAM_X = M/(F_X·s_X)            (+ DRAM_X)
    written role O:  A = M/(F_O·s_O)                       (partial sums leaving the array)
                     RF_O = 2·M + M/F_O + (A − |O|)         SRAM_O = A + (A − |O|)          (+ DRAM_O)

A MAC reads and writes its partial sum (``2·M``); every PE sends its partial sums up (``M/F_O``); all but the
last of each output's ``A/|O|`` visits to the SRAM come back (``A − |O|`` SRAM reads and RF writes). The order
is searched over every permutation of the loops longer than 1; it takes the least on-chip cost ``w · SRAM +
RF`` words, with ``w`` = :attr:`Array.sram_weight` (the table's SRAM / RF energy per word, fixed when the table
is loaded, so that an energy sweep re-prices one mapping). These are the counting conventions of ZigZag's cost model (Mei et al., IEEE TC 2021), applied to one
loop-order family; they are checked against ZigZag's own search by ``benchmarks/bench_zigzag.py``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from energymodel.count.gemm import GemmShape

__all__ = ["Array", "ArrayTraffic", "Nest", "RF_ROLES", "ROLES", "array_traffic", "loop_order", "nests", "parity_classes",
           "rf_prefix", "touched", "unrolled"]

DIMS = ("N", "P", "Q", "K", "C", "R", "S")
ROLES = ("in", "wt", "out")
_N, _P, _Q, _K, _C, _R, _S = range(7)
#: loops each role does not depend on (``in`` depends on ``R, S`` through its halo)
_IRRELEVANT = {"in": (_K,), "wt": (_N, _P, _Q), "out": (_C, _R, _S)}
#: which role each register file (input, weight, output) holds, by the role the phase writes
RF_ROLES = {"out": ("in", "wt", "out"), "in": ("out", "wt", "in"), "wt": ("in", "out", "wt")}


@dataclass(frozen=True)
class Array:
    """The PE array and its register files (``rows`` unroll ``K`` unless ``unroll == ("C", "K")``)."""

    rows: int = 1
    cols: int = 1
    unroll: tuple[str, str] = ("K", "C")
    rf_words: tuple[float, float, float] = (32.0, 32.0, 32.0)  # input, weight, output RF of one PE
    #: what one SRAM word costs the mapper in RF words (the table's SRAM / RF energy per word when loaded)
    sram_weight: float = 5.0
    #: tile sizes the SRAM tiling may use: ``"any"`` (a last, partial tile allowed) or ``"divisors"`` (each tile
    #: divides its dimension: perfect factorization, the space of ZigZag's and Timeloop's default mappers)
    tiles: str = "any"

    @property
    def lanes(self) -> tuple[int, int]:
        """PEs along ``K`` and along ``C``."""
        return (self.rows, self.cols) if self.unroll[0] == "K" else (self.cols, self.rows)


def unrolled(extent: int, lanes: int) -> tuple[float, int]:
    """``(u, e1)``: of ``extent`` loop iterations ``u = extent/⌈extent/lanes⌉`` run side by side, each lane ``e1 =
    ⌈extent/lanes⌉`` of them (``K = 10`` on 16 rows: 10 rows used, 1 channel each; ``K = 64``: 16 rows, 4 each)."""
    e1 = -(-extent // lanes)
    return extent / e1, e1


def touched(rows: np.ndarray | int, kernel: int, stride: int, dil: int) -> np.ndarray:
    """Input rows that ``rows`` output rows read: ``min((rows−1)·stride + reach, rows·kernel)`` with ``reach =
    (kernel−1)·dil + 1`` — the span of the windows, or, when a stride larger than the window skips rows (a 1x1
    stride-2 conv), one window per output row. Exact for ``dil = 1``, an upper bound otherwise."""
    rows = np.asarray(rows)
    return np.minimum((rows - 1) * stride + (kernel - 1) * dil + 1, rows * kernel)


@dataclass(frozen=True)
class ArrayTraffic:
    """Words of one phase inside the array, per role (``in``, ``wt``, ``out``): RF words and SRAM words on the
    array's side (reads to the PEs, partial sums out and back), plus the loop order that gave them."""

    rf: tuple[float, float, float]
    sram: tuple[float, float, float]
    reuse: tuple[float, float, float]  # F per role
    stationary: tuple[float, float, float]  # st per role (1 for the written role)
    order: tuple[str, ...]  # innermost first

    @property
    def rf_words(self) -> float:
        return float(sum(self.rf))

    @property
    def sram_words(self) -> float:
        return float(sum(self.sram))


@lru_cache(maxsize=64)
def _perms(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.int64).reshape(-1, n)


def _divisors(n: int) -> list[int]:
    return [d for d in range(n - 1, 0, -1) if n % d == 0]


class _Footprint:
    """Footprints of the three roles for arrays of per-loop extents (shape ``(..., 7)``); the ``in`` role's rows
    and columns are :func:`touched` by its output rows and kernel rows."""

    def __init__(self, halo: tuple[int, int, int, int, int, int]) -> None:
        self.sh, self.dh, self.hmax, self.sw, self.dw, self.wmax = halo

    def __call__(self, role: str, e: np.ndarray) -> np.ndarray:
        if role == "wt":
            return e[..., _K] * e[..., _C] * e[..., _R] * e[..., _S]
        if role == "out":
            return e[..., _N] * e[..., _K] * e[..., _P] * e[..., _Q]
        h = np.minimum(self.hmax, np.minimum((e[..., _P] - 1) * self.sh + (e[..., _R] - 1) * self.dh + 1,
                                             e[..., _P] * e[..., _R]))
        w = np.minimum(self.wmax, np.minimum((e[..., _Q] - 1) * self.sw + (e[..., _S] - 1) * self.dw + 1,
                                             e[..., _Q] * e[..., _S]))
        return e[..., _N] * e[..., _C] * h * w


def _masks(perms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For orders of ``n`` loops: the set of the first ``j`` loops of each order as a bit mask (shape
    ``(orders, n + 1)``), and each mask's loops (shape ``(2^n, n)``, booleans)."""
    n = perms.shape[1]
    cum = np.zeros((len(perms), n + 1), dtype=np.int64)
    for j in range(n):
        cum[:, j + 1] = cum[:, j] | (1 << perms[:, j])
    members = (np.arange(1 << n)[:, None] >> np.arange(n)[None, :]) & 1
    return cum, members.astype(bool)


@lru_cache(maxsize=64)
def _all_masks(n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_masks` of all ``n!`` orders (:func:`_perms`)."""
    return _masks(_perms(n))


def _prefixes(ext: np.ndarray, loops: list[int], perms: np.ndarray, fp: _Footprint, role: str,
              cap: float) -> tuple[np.ndarray, np.ndarray]:
    """Per order: the extents of ``role``'s RF prefix, and whether it holds the whole per-PE tile
    (:func:`_prefix_sets`, one row per order)."""
    cur, back, whole = _prefix_sets(ext, loops, perms, fp, role, cap)
    return cur[back], whole


def _prefix_sets(ext: np.ndarray, loops: list[int], perms: np.ndarray, fp: _Footprint, role: str,
                 cap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct RF prefixes of ``role`` over the orders ``perms`` (their extents), which of them each order
    has, and whether each order's prefix holds the whole per-PE tile.

    A footprint never shrinks when a loop joins, so the prefix of an order is the longest run of its first loops
    whose set fits ``cap``; it depends only on that set and the loop at the cut (split to its largest divisor
    that fits). Both are worked out once per set of loops (``2^n`` of them) and gathered for the ``n!`` orders."""
    n = len(loops)
    if perms.shape[0] == 0 or n == 0:
        m = max(perms.shape[0], 1)
        return np.ones((1, 7)), np.zeros(m, dtype=np.int64), np.ones(m, dtype=bool)
    cum, members = _all_masks(n) if perms is _perms(n) else _masks(perms)  # every order, or a few (rf_prefix)
    loops_a = np.array(loops)
    sets = np.ones((1 << n, 7))
    sets[:, loops_a] = np.where(members, ext[loops_a][None, :], 1.0)
    fits = fp(role, sets) <= cap
    length = fits[cum[:, 1:]].sum(axis=1)  # fits is monotone along an order: its prefix length
    whole = length == n
    rows = np.arange(len(perms))
    held = cum[rows, length]
    cut = np.where(whole, 7, loops_a[perms[rows, np.minimum(length, n - 1)]])  # 7: no cut
    key = held * 8 + cut
    present = np.zeros(8 << n, dtype=bool)
    present[key] = True
    pairs = np.flatnonzero(present)
    back = (np.cumsum(present) - 1)[key]
    cur = sets[pairs // 8].copy()
    cuts = pairs % 8
    for d in np.unique(cuts[cuts < 7]):
        sel = np.flatnonzero(cuts == d)
        for f in _divisors(int(ext[d])):  # the loop at the cut, split: its largest divisor that fits
            part = cur[sel].copy()
            part[:, d] = f
            ok = fp(role, part) <= cap
            cur[sel[ok], d] = f
            sel = sel[~ok]
            if not sel.size:
                break
    return cur, back, whole


@lru_cache(maxsize=65536)
def loop_order(ext: tuple[int, ...], halo: tuple[int, int, int, int, int, int], written: str,
               caps: tuple[float, float, float], spatial: tuple[float, float, float],
               outer: tuple[str, int] = ("", 1), reduces: bool = True, sram_weight: float = 5.0
               ) -> tuple[tuple[float, ...], tuple[float, ...], tuple[str, ...]]:
    """The loop order of one PE with the least on-chip cost ``sram_weight · SRAM words + RF words`` (per MAC; ties:
    the fewer SRAM words).

    ``ext``: per-PE extents of ``N, P, Q, K1, C1, R, S``; ``halo``: ``(stride, dilation, rows)`` of the tile's
    ``in`` along ``P`` then ``Q``; ``caps``: RF words holding each role ``in, wt, out``; ``spatial``: ``s`` of each
    role; ``outer``: the innermost loop group over SRAM tiles (``"N"``, ``"K"``, ``"C"``) and its trip count;
    ``reduces``: the written operand sums several MACs per word. Returns ``(F, st, order)``, ``F`` and ``st`` per role.
    """
    e = np.array(ext, dtype=float)
    loops = [d for d in range(7) if ext[d] > 1]
    perms = _perms(len(loops)) if loops else np.zeros((1, 0), dtype=np.int64)
    fp = _Footprint(halo)
    reuse, stat = {}, {}
    group_of = {"N": _N, "K": _K, "C": _C}
    for role, cap in zip(ROLES, caps):
        cur, back, whole = _prefix_sets(e, loops, perms, fp, role, cap)
        f = (np.prod(cur, axis=1) / fp(role, cur))[back]
        if outer[0] and group_of[outer[0]] in _IRRELEVANT[role]:
            f = np.where(whole, f * outer[1], f)
        reuse[role] = f
        if role == written or not loops:
            stat[role] = np.ones(len(perms))
        else:  # the product of the innermost run of loops the role does not depend on
            dims = np.array(loops)[perms]
            run = np.cumprod(np.isin(dims, _IRRELEVANT[role]), axis=1).astype(bool)
            stat[role] = np.prod(np.where(run, e[dims], 1.0), axis=1)
    sram, rf = np.zeros(len(perms)), np.zeros(len(perms))
    for role, s in zip(ROLES, spatial):
        if role == written:
            a = 1.0 / (reuse[role] * s)
            sram += 2 * a
            rf += (2.0 if reduces else 1.0) + 1.0 / reuse[role] + a
        else:
            sram += 1.0 / (reuse[role] * s)
            rf += 1.0 / stat[role] + 1.0 / reuse[role]
    best = int(np.lexsort((np.round(sram, 12), np.round(sram_weight * sram + rf, 12)))[0])
    order = tuple(DIMS[loops[i]] for i in perms[best]) if loops else ()
    return (tuple(float(reuse[r][best]) for r in ROLES), tuple(float(stat[r][best]) for r in ROLES), order)


def _nest(macs: float, written: str, written_words: float, ext: tuple[int, ...],
          halo: tuple[int, int, int, int, int, int], caps: tuple[float, float, float],
          spatial: tuple[float, float, float], outer: tuple[str, int], sram_weight: float) -> ArrayTraffic:
    """RF and array-side SRAM words of one loop nest in conv form (formulas in the module docstring)."""
    reduces = macs > written_words
    reuse, stat, order = loop_order(tuple(int(x) for x in ext), halo, written, caps, spatial, outer, reduces,
                                    float(sram_weight))
    rf, sram = [], []
    for role, f, st, s in zip(ROLES, reuse, stat, spatial):
        if role == written:
            a = macs / (f * s)
            rf.append((2.0 if reduces else 1.0) * macs + macs / f + (a - written_words))
            sram.append(a + (a - written_words))
        else:
            rf.append(macs / st + macs / f)
            sram.append(macs / (f * s))
    return ArrayTraffic(tuple(rf), tuple(sram), reuse, stat, order)


def parity_classes(out_len: int, in_len: int, kernel: int, stride: int, pad: int) -> list[tuple[int, int]]:
    """The stride-1 convolutions of a strided input gradient along one axis: ``(rows, taps)`` per class of
    ``dX`` rows ``a, a + stride, ...`` (``taps = 0``: that class gets no gradient; a 1x1 stride-2 conv's odd rows).
    Class ``a`` takes the kernel rows ``r`` with ``(a + pad − r) mod stride = 0``; its rows read ``dY`` with stride 1."""
    out = []
    for a in range(stride):
        rows = len(range(a, in_len, stride))
        taps = len(range((a + pad) % stride, kernel, stride))
        out.append((rows, taps if rows and out_len else 0))
    return out


@dataclass(frozen=True)
class Nest:
    """One loop nest in conv form that a phase runs in the array: per-PE extents ``ext`` of ``N, P, Q, K1, C1,
    R, S``; ``halo`` ``(stride, dilation, rows)`` of its ``in`` along ``P`` then ``Q``; RF words ``caps`` and
    spatial fan-out ``spatial`` of its roles ``in, wt, out``; its MACs and written words; the rows and columns
    of its output map (a parity class of ``dX`` for a strided input gradient)."""

    ext: tuple[int, ...]
    halo: tuple[int, int, int, int, int, int]
    caps: tuple[float, float, float]
    spatial: tuple[float, float, float]
    macs: float
    written_words: float
    out_map: tuple[int, int] = (1, 1)


def nests(shape: GemmShape, written: str, tile: tuple[float, ...], array: Array) -> list[Nest]:
    """The loop nests of one phase of ``shape`` whose SRAM tile is ``tile = (b, k, c, p, q)``.

    The forward pass and the weight gradient run the layer's own loop nest. The input gradient runs as
    convolutions over ``dX`` (one per :func:`parity_classes` pair of a strided layer): ``dY`` is their haloed
    input (``in`` of the nest), ``dX`` their output, their output channels the layer's ``C``."""
    lanes = array.lanes
    (u_k, _), (u_c, _) = unrolled(shape.k, lanes[0]), unrolled(shape.c, lanes[1])
    b, k, c, p, q = tile
    k1, c1 = int(round(k / u_k)), int(round(c / u_c))
    held = RF_ROLES[written]
    g = shape.groups
    if written != "in":
        caps = tuple(float(array.rf_words[held.index(r)]) for r in ROLES)
        hp = min(shape.h, int(touched(p, shape.r, shape.stride[0], shape.dilation[0])))
        wq = min(shape.w, int(touched(q, shape.s, shape.stride[1], shape.dilation[1])))
        halo = (shape.stride[0], shape.dilation[0], hp, shape.stride[1], shape.dilation[1], wq)
        words = dict(zip(ROLES, shape.words()))
        return [Nest((int(b), int(p), int(q), k1, c1, shape.r, shape.s), halo, caps, (u_k, 1.0, u_c),
                     float(shape.macs), float(words[written]), (shape.p, shape.q))]
    # the input gradient: nests whose "out" is dX (layer C), "in" is dY (layer K), reduction over layer K
    caps = tuple(float(array.rf_words[i]) for i in (0, 1, 2))  # input RF <- dY, weight RF <- W, output RF <- dX
    dil = shape.dilation if shape.stride == (1, 1) else (1, 1)
    out = []
    for rows, taps_r in parity_classes(shape.p, shape.h, shape.r, shape.stride[0], shape.padding[0]):
        for cols, taps_s in parity_classes(shape.q, shape.w, shape.s, shape.stride[1], shape.padding[1]):
            if not (rows and cols and taps_r and taps_s):
                continue
            pr, qc = int(min(rows, p)), int(min(cols, q))
            hp = min(shape.p, int(touched(pr, taps_r, 1, dil[0])))
            wq = min(shape.q, int(touched(qc, taps_s, 1, dil[1])))
            out.append(Nest((int(b), pr, qc, c1, k1, taps_r, taps_s), (1, dil[0], hp, 1, dil[1], wq), caps,
                            (u_c, 1.0, u_k), float(g * shape.n * shape.k * shape.c * rows * cols * taps_r * taps_s),
                            float(g * shape.n * shape.c * rows * cols), (rows, cols)))
    return out


def rf_prefix(nest: Nest, order: str) -> dict[str, dict[str, int]]:
    """What each role's register file holds under the loop ``order`` (innermost first, names of :data:`DIMS`):
    per role ``in, wt, out`` the extent of every loop in its prefix, the loop at the cut split to its largest
    divisor that fits (the rule the module docstring states; loops outside the prefix are left out)."""
    loops = [DIMS.index(d) for d in order]
    perm = np.arange(len(loops), dtype=np.int64).reshape(1, -1)
    fp = _Footprint(nest.halo)
    out = {}
    for role, cap in zip(ROLES, nest.caps):
        cur, _ = _prefixes(np.array(nest.ext, dtype=float), loops, perm, fp, role, cap)
        out[role] = {DIMS[d]: int(cur[0, d]) for d in loops if cur[0, d] > 1}
    return out


def array_traffic(shape: GemmShape, written: str, tile: tuple[float, ...], innermost: str, trips: float,
                  array: Array) -> ArrayTraffic:
    """RF and array-side SRAM words of one phase of ``shape`` whose SRAM tile is ``tile = (b, k, c, p, q)`` and
    whose innermost loop over tiles is ``innermost`` (``trips`` steps); words per role ``in, wt, out``, summed
    over the phase's :func:`nests`."""
    if written != "in":
        n = nests(shape, written, tile, array)[0]
        return _nest(n.macs, written, n.written_words, n.ext, n.halo, n.caps, n.spatial, (innermost, int(trips)),
                     array.sram_weight)
    outer = ({"N": "N", "K": "C", "C": "K"}[innermost], int(trips))
    total: ArrayTraffic | None = None
    for n in nests(shape, written, tile, array):
        part = _nest(n.macs, "out", n.written_words, n.ext, n.halo, n.caps, n.spatial, outer, array.sram_weight)
        total = part if total is None else _plus(total, part)
    if total is None:  # no input row gets a gradient (cannot happen for a real conv)
        return ArrayTraffic((0.0,) * 3, (0.0,) * 3, (1.0,) * 3, (1.0,) * 3, ())
    swap = (2, 1, 0)  # nest roles (dY, W, dX) -> layer roles (in = dX, wt = W, out = dY)
    return ArrayTraffic(tuple(total.rf[i] for i in swap), tuple(total.sram[i] for i in swap),
                        tuple(total.reuse[i] for i in swap), tuple(total.stationary[i] for i in swap), total.order)


def _plus(a: ArrayTraffic, b: ArrayTraffic) -> ArrayTraffic:
    """Two nests of one phase: words add; reuse, stationarity and order are the first nest's."""
    return ArrayTraffic(tuple(x + y for x, y in zip(a.rf, b.rf)), tuple(x + y for x, y in zip(a.sram, b.sram)),
                        a.reuse, a.stationary, a.order)
