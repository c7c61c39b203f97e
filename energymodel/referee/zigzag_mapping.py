"""The model's own mapping of a conv/linear phase, handed to ZigZag to count: the referee's check of a miss.

Where the model's words and ZigZag's best differ, two explanations are possible: the model counts its mapping
wrong, or ZigZag's search (LOMA, which merges the loops' prime factors down to ``lpf``) never reached the model's
mapping. :func:`model_ordering` writes the model's loop order and SRAM tiles as a complete ZigZag
``temporal_ordering``; ZigZag then allocates those loops to its register files, SRAM and DRAM by its own rules and
counts every level (:func:`at_model_mapping`). Agreement there, at an energy no higher than the best ZigZag found,
is the ``SEARCH`` verdict of :func:`energymodel.referee.verdict.judge_row`. ZigZag is imported only by
:func:`energymodel.referee.zigzag.run_zigzag`.
"""

from __future__ import annotations

import math
from typing import Any

from energymodel.count.gemm import GemmShape
from energymodel.memory.loopnest import ROLES, nests, rf_prefix, unrolled
from energymodel.memory.loopnest import loop_order as searched_order
from energymodel.price.table import EnergyTable
from energymodel.referee.zigzag import (
    ROLE_TO_ZZ,
    ZZ_MEM_OP,
    hardware,
    mapping,
    run_zigzag,
    temporal_levels,
    workloads,
)

__all__ = ["model_orderings", "model_ordering", "model_allocation", "followed", "at_model_mapping", "padding_words",
           "partial_tiles"]

#: the model's loop names -> ZigZag's layer dimensions (every phase's workload uses these names)
_ZZ_DIM = {"N": "B", "P": "OY", "Q": "OX", "K": "K", "C": "C", "R": "FY", "S": "FX"}
_GROUPS = {"N": ("N", "P", "Q"), "K": ("K",), "C": ("C",)}


def model_orderings(table: EnergyTable, shape: GemmShape, phase: str, tile: tuple[int, ...], innermost: str,
                    loop_order: str) -> list[tuple[list[list[Any]], str]] | None:
    """The model's own mapping of one phase as complete ZigZag ``temporal_ordering``s (innermost loop first), one
    per workload of :func:`energymodel.referee.zigzag.workloads` (several for a strided input gradient: one per
    parity class, :func:`energymodel.memory.loopnest.nests`).

    Inside an SRAM tile ``(b, k, c, p, q)`` each PE runs its nest's loops in the nest's order (``loop_order`` for
    the first nest, the order :func:`energymodel.memory.loopnest.loop_order` gives the others; innermost first,
    loops of extent 1 left out) at their per-PE extents ``b, p, q, k/u_K, c/u_C, R, S``; around them run the tile
    loops ``N/b, P/p, Q/q, K/k, C/c``, the ``innermost`` group's first. A loop at which a role's register file is cut
    (:func:`energymodel.memory.loopnest.rf_prefix`: the model keeps the largest divisor that fits) is written as
    its factors, so that ZigZag, filling each register file from the innermost loop out, can hold what the model
    holds. The loops are named for the phase's ZigZag workload (the input gradient's nest has the layer's ``C`` as
    its ``K``). ZigZag then assigns the loops to its register files, SRAM and DRAM itself. ``None`` where the
    mapping cannot be written as ZigZag loops: a tile that does not divide its dimension, an unrolling ZigZag's
    spatial mapping does not reproduce, a grouped conv. Each ordering comes with its nest's loop order (model
    names)."""
    if shape.groups != 1:
        return None
    array = table.dataflow.array()
    lanes = array.lanes
    (u_k, k1), (u_c, c1) = unrolled(shape.k, lanes[0]), unrolled(shape.c, lanes[1])
    b, k, c, p, q = (int(round(float(v))) for v in tile)
    trips = {"N": -(-shape.n // b) * -(-shape.p // p) * -(-shape.q // q), "K": -(-k1 // round(k / u_k)),
             "C": -(-c1 // round(c / u_c))}
    zz_lanes = dict(zip(table.dataflow.unroll, (table.dataflow.array_rows, table.dataflow.array_cols)))
    u = {"K": u_k, "C": u_c}
    written = {"forward": "out", "backward_weight": "wt", "backward_input": "in"}[phase]
    outer_group = innermost
    if phase == "backward_input":  # the nests over dX: their K is the layer's C and their C the layer's K
        u, zz_lanes = {"K": u_c, "C": u_k}, {"K": zz_lanes["C"], "C": zz_lanes["K"]}
        outer_group = {"N": "N", "K": "C", "C": "K"}[innermost]
    out = []
    for i, nest in enumerate(nests(shape, written, tile, array)):
        order = loop_order_of(loop_order)  # the profile keeps the first nest's order; the others' are searched again
        if i > 0:
            order = "".join(searched_order(tuple(nest.ext), nest.halo, "out", nest.caps, nest.spatial,
                                           (outer_group, int(trips[innermost])), nest.macs > nest.written_words,
                                           float(array.sram_weight))[2])
        size = {"N": shape.n, "P": nest.out_map[0], "Q": nest.out_map[1], "K": shape.k, "C": shape.c,
                "R": nest.ext[5], "S": nest.ext[6]}
        if phase == "backward_input":
            size.update(K=shape.c, C=shape.k)
        held = {"N": b, "P": nest.ext[1], "Q": nest.ext[2], "K": nest.ext[3] * u["K"], "C": nest.ext[4] * u["C"],
                "R": nest.ext[5], "S": nest.ext[6]}
        inner, outer = {}, {}
        for d in size:
            lane = u.get(d, 1.0)
            if d in u and min(zz_lanes[d], size[d]) != lane:
                return None
            per_pe, steps = held[d] / lane, size[d] / held[d]
            if per_pe != int(per_pe) or steps != int(steps):
                return None
            inner[d], outer[d] = int(per_pe), int(steps)
        if sorted(order) != sorted(d for d in size if inner[d] > 1):
            return None
        ordering = [[_ZZ_DIM[d], f] for d in order for f in _split(inner[d], rf_prefix(nest, order), d)]
        groups = [outer_group] + [g for g in _GROUPS if g != outer_group]
        ordering += [[_ZZ_DIM[d], outer[d]] for g in groups for d in _GROUPS[g] if outer[d] > 1]
        out.append((ordering, order))
    return out


def partial_tiles(shape: GemmShape, tile: tuple[float, ...], lanes: tuple[int, int]) -> list[str]:
    """The dimensions (``N, K, C, P, Q``) of the layer whose SRAM tile ``(b, k, c, p, q)`` does not divide them: the
    last tile is partial there (a tile of 4 of 7 rows), which ZigZag's loops, prime factors of each dimension,
    cannot say. ``K`` and ``C`` count in steps of the array (``lanes`` along ``K`` and ``C``;
    :func:`energymodel.memory.loopnest.unrolled`): ``K = 1000`` on 16 lanes is 63 steps of 15.87 channels."""
    (u_k, k1), (u_c, c1) = unrolled(shape.k, lanes[0]), unrolled(shape.c, lanes[1])
    b, k, c, p, q = tile
    sizes = {"N": (shape.n, b), "K": (k1, round(k / u_k)), "C": (c1, round(c / u_c)), "P": (shape.p, p),
             "Q": (shape.q, q)}
    return [d for d, (size, t) in sizes.items() if size % int(round(float(t))) != 0]


def loop_order_of(text: str) -> str:
    """A profile row's ``loop_order`` (innermost first) as loop names."""
    return "".join(d for d in str(text) if d in _ZZ_DIM)


def model_ordering(table: EnergyTable, shape: GemmShape, phase: str, tile: tuple[int, ...], innermost: str,
                   loop_order: str) -> list[list[Any]] | None:
    """:func:`model_orderings` of a phase that is one ZigZag workload (``None`` for a strided input gradient)."""
    found = model_orderings(table, shape, phase, tile, innermost, loop_order)
    return found[0][0] if found is not None and len(found) == 1 else None


def _split(extent: int, prefix: dict[str, dict[str, int]], dim: str) -> list[int]:
    """``dim``'s loop of ``extent`` as the factors at which the roles' register files cut it (innermost first):
    cuts ``f1 | f2 | … | extent`` give ``[f1, f2/f1, …, extent/f_last]``; a cut that does not divide the next is
    left out (ZigZag's loops cannot say it)."""
    cuts = sorted({held[dim] for held in prefix.values() if 1 < held.get(dim, 1) < extent})
    kept = [1]
    for f in cuts:
        if f % kept[-1] == 0 and extent % f == 0:
            kept.append(f)
    kept.append(extent)
    return [b // a for a, b in zip(kept, kept[1:])]


def followed(result: dict[str, Any], ordering: list[list[Any]]) -> bool:
    """Whether ZigZag's temporal mapping (``result["temporal_mapping"]``, its ``O`` operand from the innermost
    level out) runs exactly the loops of ``ordering``: ZigZag searches instead when a given ordering is incomplete."""
    levels = temporal_levels(result.get("temporal_mapping", "")).get("O", [])
    return [loop for level in levels for loop in level] == [(str(d), int(n)) for d, n in ordering]


def _window(a: int, sa: int, b: int, sb: int, full: int) -> int:
    """ZigZag's count of the input rows that ``a`` output rows (stride ``sa``) and ``b`` kernel rows (dilation
    ``sb``) touch, clipped to the map's ``full`` rows: ``a·b − max(0, b − sa/g)·(a − sb/g)``, ``g = gcd(sa, sb)``."""
    g = math.gcd(sa, sb)
    return min(full, a * b - max(0, b - sa // g) * (a - sb // g))


def model_allocation(table: EnergyTable, shape: GemmShape, phase: str, tile: tuple[int, ...], loop_order: str,
                     ordering: list[list[Any]], nest_index: int = 0) -> dict[str, tuple[float, int]]:
    """What each register file holds under the model's mapping, for ZigZag: per ZigZag layer operand (``I``,
    ``W``, ``O``) the words of the role's prefix (:func:`energymodel.memory.loopnest.rf_prefix`) in ZigZag's
    footprint convention (:func:`_window` for the input's rows and columns) and how many of ``ordering``'s loops
    that prefix is. ZigZag fills a register file with every loop that fits — ties in its allocator go to the
    larger tile — so a register file the size of the table's may take a tile loop the model keeps in the SRAM;
    sized to these words it holds what the model holds. ``nest_index``: which of the phase's nests (workloads)."""
    written = {"forward": "out", "backward_weight": "wt", "backward_input": "in"}[phase]
    nest = nests(shape, written, tile, table.dataflow.array())[nest_index]
    prefix = rf_prefix(nest, loop_order)
    zz_of = ROLE_TO_ZZ["backward_weight" if phase == "backward_weight" else "forward"]  # the nest's roles
    full = (shape.p, shape.q) if phase == "backward_input" else (shape.h, shape.w)
    stride = (1, 1) if phase == "backward_input" else shape.stride
    out = {}
    for role, held in prefix.items():
        e = {d: held.get(d, 1) for d in _ZZ_DIM}
        if role == "wt":
            words = e["K"] * e["C"] * e["R"] * e["S"]
        elif role == "out":
            words = e["N"] * e["K"] * e["P"] * e["Q"]
        else:
            words = (e["N"] * e["C"] * _window(e["P"], stride[0], e["R"], shape.dilation[0], full[0])
                     * _window(e["Q"], stride[1], e["S"], shape.dilation[1], full[1]))
        want = {_ZZ_DIM[d]: v for d, v in held.items()}
        got: dict[str, int] = {}
        m = 0
        while got != want and m < len(ordering):
            d, f = ordering[m]
            got[d] = got.get(d, 1) * int(f)
            m += 1
        if got == want:
            out[zz_of[role]] = (float(words), m)
    return out


def at_model_mapping(table: EnergyTable, shape: GemmShape, phase: str, on_chip: list[str],
                     orderings: list[list[list[Any]]], lpf: int, cache: dict[str, Any], save=None,
                     held: list[dict[str, tuple[float, int]]] | None = None) -> dict[str, Any] | None:
    """ZigZag's count of the model's own mapping (``orderings``, one per workload: :func:`model_orderings`) at the model's placement
    ``on_chip`` on ``table`` (give it the buffer the plan leaves): energy and words per level summed over the
    phase's workloads (and the words of data it moves, ``<level>_elements``), or ``None`` when ZigZag did not
    follow the ordering or could not allocate it.

    ``held`` (:func:`model_allocation`, per workload): each register file sized to what the model's mapping holds
    in it, at the table's energy per access; ZigZag must then hold exactly those loops in it (loops that add
    nothing to the register file's footprint may follow), else ``None``."""
    roles_zz = ROLE_TO_ZZ[phase]
    dram_ops = sorted(ZZ_MEM_OP[roles_zz[r]] for r in ROLES if r not in on_chip)
    layers = workloads(shape, phase, table.word_bits)
    holds = held or [{} for _ in layers]
    if len(orderings) != len(layers) or len(holds) != len(layers):
        return None
    caps_all = []
    total = {"energy_pj": 0.0, "mac_energy_pj": 0.0, "macs": 0.0, "rf_words": 0.0, "sram_words": 0.0,
             "dram_words": 0.0, "rf_elements": 0.0, "sram_elements": 0.0, "dram_elements": 0.0, "seconds": 0.0}
    temporal = []
    by_operand: dict[str, float] = {}
    by_workload: list[dict[str, float]] = []
    for layer, ordering, hold in zip(layers, orderings, holds):
        caps = {ZZ_MEM_OP[op]: words for op, (words, _) in hold.items()}
        caps_all.append(caps)
        hw = hardware(table, dram_ops, caps or None)
        spatial = [{**mapping(table, phase, layer)[0], "temporal_ordering": ordering}]
        res = run_zigzag(layer, hw, spatial, lpf, cache, elements=True)
        temporal.append(res.get("temporal_mapping", ""))
        if save is not None:
            save()
        if "no_mapping" in res or not followed(res, ordering):
            return None
        rf = {op: levels[0] for op, levels in temporal_levels(res.get("temporal_mapping", "")).items() if levels}
        if any(rf.get(op, [])[:m] != [(str(d), int(f)) for d, f in ordering[:m]] for op, (_, m) in hold.items()):
            return None
        for key in total:
            total[key] += res[key]
        for op, words in res.get("dram_by_operand", {}).items():
            by_operand[op] = by_operand.get(op, 0.0) + words
        by_workload.append(res.get("dram_by_operand", {}))
    return {"on_chip": list(on_chip), "dram_by_operand": by_operand, "dram_by_workload": by_workload, "ordering": orderings[0] if len(orderings) == 1 else orderings,
            **({"rf_held": caps_all[0] if len(caps_all) == 1 else caps_all} if any(caps_all) else {}), **total,
            "temporal_mappings": temporal}


def _rows(length: int, tile: int, size_in: int, kernel: int, pad: int, clip: bool, stride: int = 1) -> int:
    """Input rows read over the ``length / tile`` tiles of ``tile`` output rows: each tile's window of
    ``(tile − 1)·stride + kernel`` rows, clipped to the ``size_in`` real rows when ``clip`` (the model: padding is
    not read) or whole (ZigZag: the zero border is fetched with a tile); a single tile reads the ``size_in`` rows
    either way (ZigZag knows the input's size)."""
    if tile >= length:
        return size_in
    total = 0
    for start in range(0, length, tile):
        lo = start * stride - pad
        hi = lo + (min(tile, length - start) - 1) * stride + kernel
        total += (min(hi, size_in) - max(lo, 0)) if clip else hi - lo
    return total


def padding_words(shape: GemmShape, phase: str, tile: tuple[int, ...], innermost: str, on_chip: list[str]) -> float:
    """DRAM words by which ZigZag's count of the model's mapping exceeds the model's for one reason: ZigZag
    fetches each input tile with its zero-padding border, the model reads real rows only.

    Forward and weight gradient read ``X`` with a halo: ``m · N·C · (Σ_t w_t − Σ_t w'_t)`` over the tiles, with
    ``w_t`` a tile's ``((p − 1)·stride + R)·((q − 1)·stride + S)`` window whole and ``w'_t`` clipped to the map,
    ``m`` the tile loops over ``K`` the tile is re-read for (1 when ``K``'s loop is innermost). The stride-1 input
    gradient writes ``dX`` (the model charges its halo, ZigZag does not) and reads ``dY`` with a halo (ZigZag
    charges its padding, the model does not). 0 for a strided input gradient (several sub-convolutions), dilated
    or grouped convs, and operands kept on chip."""
    if max(shape.dilation) > 1 or shape.groups != 1 or (phase == "backward_input" and max(shape.stride) > 1):
        return 0.0
    b, k, c, p, q = (int(round(float(v))) for v in tile)
    trips = {"N": 1, "K": -(-shape.k // k), "C": -(-shape.c // c)}
    m = {role: 1 if innermost == group else trips[group] for role, group in (("in", "K"), ("out", "C"))}

    def window(clip: bool, size_p: int, size_q: int) -> int:
        return (_rows(shape.p, p, size_p, shape.r, shape.padding[0], clip, shape.stride[0])
                * _rows(shape.q, q, size_q, shape.s, shape.padding[1], clip, shape.stride[1]))

    if phase in ("forward", "backward_weight"):
        if "in" in on_chip:
            return 0.0
        return float(m["in"] * shape.n * shape.c * (window(False, shape.h, shape.w) - window(True, shape.h, shape.w)))
    extra = 0.0
    if "in" not in on_chip:  # dX, written: the model's halo rows, ZigZag's plain map
        extra += (2 * m["in"] - 1) * shape.n * shape.c * (shape.h * shape.w - window(True, shape.h, shape.w))
    if "out" not in on_chip:  # dY, read: ZigZag's padded windows over dX tiles, the model's plain map
        extra += m["out"] * shape.n * shape.k * (window(False, shape.p, shape.q) - shape.p * shape.q)
    return float(extra)
