"""The referee's verdicts: the model's figures of one conv/linear layer-phase against ZigZag's, and of their totals.

A row (from ``benchmarks/bench_zigzag.py``) holds the model's side (``profile()``'s per-phase row) and ZigZag's
(:func:`energymodel.referee.zigzag.referee_phase`: every placement it tried and its best, and the checks run on a
miss: ZigZag at the plan's buffer, ZigZag's count of the model's own mapping). Targets per layer-phase: energy and
DRAM words within ±10 %, SRAM and RF words within ±25 %; totals per phase: energy within ±5 %, each level within
its layer target. Every verdict but ``PASS`` names the documented reason that accepts the row, or says why none
does (``MISS``).
"""

from __future__ import annotations

from typing import Any

from energymodel.referee.zigzag import temporal_levels

__all__ = ["TOLERANCES", "TOTAL_TOLERANCE", "VERDICTS", "ACCEPTED", "judge", "judge_row", "outside_model_space"]


#: targets per layer-phase (relative, model / ZigZag − 1) and for totals
TOLERANCES = {"energy_pj": 0.10, "dram_words": 0.10, "sram_words": 0.25, "rf_words": 0.25}
TOTAL_TOLERANCE = 0.05
QUANTITIES = tuple(TOLERANCES)
#: row verdicts, the accepted ones first
VERDICTS = ("PASS", "PLACEMENT", "BUFFER", "EXPLAINED", "SEARCH", "SPACE", "UNEVEN", "MISS", "FAIL")
#: the verdicts that count as agreement (a documented reason for every one but PASS)
ACCEPTED = VERDICTS[:7]
_LEVELS = ("rf", "sram", "dram")
#: targets of a phase's totals: energy within ±5 %, every level within its per-layer target
_TOTAL_TARGETS = {**TOLERANCES, "energy_pj": TOTAL_TOLERANCE}


def _ratios(model: dict[str, float], zz: dict[str, float]) -> dict[str, float | None]:
    return {k: (model[k] / zz[k] if zz.get(k) else (1.0 if not model[k] else None)) for k in QUANTITIES}


def _pair(model: dict[str, Any], zz: dict[str, Any], against: str) -> dict[str, Any]:
    """The two sides a row is judged on: the model's figures (as charged) and ZigZag's, named for what ZigZag ran."""
    return {"against": against, "model": {k: float(model[k]) for k in QUANTITIES},
            "zigzag": {k: float(zz[k]) for k in QUANTITIES}}


#: the dimensions each ZigZag operand depends on, per phase (the workloads of :mod:`energymodel.referee.zigzag`)
_RELEVANT = {
    "forward": {"O": {"B", "K", "OY", "OX"}, "W": {"K", "C", "FY", "FX"}, "I": {"B", "C", "OY", "OX", "FY", "FX"}},
    "backward_weight": {"O": {"K", "C", "FY", "FX"}, "W": {"B", "K", "OY", "OX"},
                        "I": {"B", "C", "OY", "OX", "FY", "FX"}},
}
_RELEVANT["backward_input"] = _RELEVANT["forward"]


def _refetched(order: list[tuple[str, int]], cut: int, relevant: set[str]) -> int:
    """How many times an operand whose tile holds the loops below ``cut`` is fetched again from DRAM: the product
    of the loops above the cut it does not depend on that run outside a loop it does depend on (those directly
    above the cut keep the tile)."""
    times, inside_relevant = 1, False
    for dim, size in order[cut:]:
        if dim in relevant:
            inside_relevant = True
        elif inside_relevant:
            times *= size
    return times


def _contiguous(dims: list[str]) -> bool:
    """Whether each dimension's loops follow one another (a loop split in place, not parts of it apart)."""
    seen: set[str] = set()
    for i, d in enumerate(dims):
        if d in seen and dims[i - 1] != d:
            return False
        seen.add(d)
    return True


def _one_cut(loops: list[tuple[str, int]], dram: dict[str, int], relevant: dict[str, set[str]], t: int,
             inside: bool = True) -> bool:
    """Whether cutting every operand's tile at ``t`` moves no DRAM traffic against ZigZag's cuts ``dram`` (and,
    with ``inside``, whether the loops inside the tile are the model's kind: each dimension's parts together)."""
    order = [d for d, _ in loops]
    if {"FY", "FX"} & set(order[t:]) or (inside and not _contiguous(order[:t])):
        return False
    for op, d in dram.items():
        if d < t or _refetched(loops, t, relevant[op]) != _refetched(loops, d, relevant[op]):
            return False
        if op == "I" and {"OY", "OX"} & set(order[t:d]):
            return False
    return True


def outside_model_space(phase: str, temporal_mappings: list[str]) -> str | None:
    """Why a ZigZag mapping of a phase (one per workload) lies outside the model's mapping space, or ``None``.

    The model's mappings (:mod:`energymodel.memory.tiling`) share one SRAM tile among all operands: in ZigZag's
    terms one cut ``t`` of the loop order, below it the loops inside a tile, from it the tile loops, over ``N, P,
    Q, K, C`` only (a tile holds every kernel tap), and inside a tile each loop once, split only in place
    (:mod:`energymodel.memory.loopnest`: at a register file's cut). ZigZag may cut an operand fetched from DRAM at
    ``d ≥ t`` where that moves no DRAM traffic: it is fetched again as often (:func:`_refetched`) and, for the
    input, no output row or column loop lies between (its halo). No such ``t``: ZigZag splits the kernel window
    across DRAM tiles, cuts the operands' SRAM tiles at different loops (its uneven mappings), or runs parts of
    one loop at different places inside a tile."""
    relevant = _RELEVANT[phase]
    for tm in temporal_mappings:
        levels = temporal_levels(tm)
        loops = max(([loop for lv in ls for loop in lv] for ls in levels.values()), key=len, default=[])
        dram = {op: len(ls[0]) + len(ls[1]) for op, ls in levels.items() if len(ls) == 3}
        cuts = range(min(dram.values(), default=len(loops)) + 1)  # every operand on chip: any cut
        if not any(_one_cut(loops, dram, relevant, t) for t in cuts):
            if any(_one_cut(loops, dram, relevant, t, inside=False) for t in cuts):
                return "splits a loop into parts at different places inside a tile"
            kernel = any({"FY", "FX"} & {d for d, _ in ls[-1]} for ls in levels.values() if len(ls) == 3)
            return ("splits the kernel window across DRAM tiles" if kernel else
                    "cuts the operands' SRAM tiles at different loops (an uneven mapping)")
    return None


def _charged(row: dict[str, Any], ours: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """The model's figures with ZigZag's conventions charged to it, and those extra words by cause (``padding``,
    ``rounding``, ``rereads``; each passes the DRAM and the SRAM):

    - the zero padding ZigZag fetches with each input tile (``model.padding_words``);
    - its rounding of each transfer period up to whole port words at the SRAM and DRAM (its word accesses less the
      words of data it moves, both ZigZag's counts of the model's mapping ``ours``); the register files are
      compared on ZigZag's word accesses as they are: there its element counts follow other conventions (an input
      read once per stationary run), which its word accesses already apply;
    - a strided input gradient's ``dY`` read from DRAM by each of ZigZag's sub-convolutions, where the model's
      one pass reads each ``dY`` tile once for all of them (ZigZag's ``dY`` DRAM words, ``dram_by_operand["I"]``,
      less the model's, ``model.dram_out``) — only where the sub-convolution that reads ``dY`` least reads it as
      often as the model's one pass (within the DRAM target), so the model's own ``dY`` count is checked too."""
    pad = float(row["model"].get("padding_words", 0.0))
    by_level = {lv: max(0.0, ours[f"{lv}_words"] - ours[f"{lv}_elements"]) if f"{lv}_elements" in ours else 0.0
                for lv in ("sram", "dram")}
    strided = row["phase"] == "backward_input" and max(row.get("stride", (1, 1))) > 1
    rereads = 0.0
    once = [w["I"] for w in ours.get("dram_by_workload", []) if "I" in w]
    if strided and once and row["model"].get("dram_out"):
        if abs(min(once) / row["model"]["dram_out"] - 1) <= TOLERANCES["dram_words"]:
            rereads = max(0.0, sum(once) - row["model"]["dram_out"])
    extra = {"rf": 0.0, "sram": pad + rereads + by_level["sram"], "dram": pad + rereads + by_level["dram"]}
    prices = row.get("pj_per_word", {})
    model = row["model"]
    counted = {**model, **{f"{lv}_words": model[f"{lv}_words"] + extra[lv] for lv in _LEVELS},
               "energy_pj": model["energy_pj"] + sum(extra[lv] * prices.get(lv, 0.0) for lv in _LEVELS)}
    return counted, {"padding": pad, "rounding": sum(by_level.values()), "rereads": rereads}


def _operands_agree(model: dict[str, Any], ours: dict[str, Any]) -> bool:
    """A strided input gradient's DRAM words operand by operand: ``dX`` (ZigZag's ``O``) and ``W`` summed over
    ZigZag's sub-convolutions, ``dY`` (``I``) as the sub-convolution that reads it least, each within the DRAM
    target of the model's ``dram_in``, ``dram_wt`` and ``dram_out``."""
    zz = ours.get("dram_by_operand", {})
    once = [w["I"] for w in ours.get("dram_by_workload", []) if "I" in w]
    pairs = ((model.get("dram_in"), zz.get("O")), (model.get("dram_wt"), zz.get("W")),
             (model.get("dram_out"), min(once) if once else None))
    return all(m is not None and z is not None and (m == z or (z and abs(m / z - 1) <= TOLERANCES["dram_words"]))
               for m, z in pairs)


def _within(ratios: dict[str, float | None], keys=QUANTITIES) -> list[str]:
    """The quantities outside their target."""
    return [k for k in keys if ratios[k] is None or abs(ratios[k] - 1) > TOLERANCES[k]]


def judge_row(row: dict[str, Any]) -> dict[str, Any]:
    """The verdict of one layer-phase (a row with ``model``, ``zigzag`` (``best``, ``placements``), ``phase``,
    ``stride``), the first that holds:

    - ``PASS``: every quantity within target against ZigZag's best.
    - ``BUFFER``: the residency plan keeps other tensors on chip during the phase; within target against ZigZag
      run at the model's placement with the SRAM the plan leaves (``zigzag.at_plan_buffer``).
    - ``PLACEMENT``: the model's placement differs (the residency plan decides for the whole network, ZigZag for
      this layer alone); within target against ZigZag at the model's placement.
    - ``EXPLAINED``: a strided input gradient, which ZigZag runs as sub-convolutions that each read ``dY`` from
      DRAM; within target once those extra DRAM words, and their passage through the SRAM, are charged to the
      model too (``pj_per_word`` of the row prices them).
    - ``SEARCH``: a limit of ZigZag's search. Handed the model's own mapping
      (:mod:`energymodel.referee.zigzag_mapping`, ``zigzag.at_model_mapping``), ZigZag counts every quantity within
      target and finds that mapping no dearer than the best its LOMA search returned. Two conventions of ZigZag
      are charged to the model first (:func:`_charged`): the zero padding it fetches with each input tile, and
      its rounding of each transfer period up to whole port words.
    - ``SPACE``: a limit of the model's mapping space. ZigZag counts the model's own mapping within target (as for
      ``SEARCH``), and its cheaper best lies outside the model's mapping space (:func:`outside_model_space`: the
      kernel window split across DRAM tiles, or operands cut at different tile loops); ZigZag prices the model's
      mapping within the energy target of that best.
    - ``UNEVEN``: a limit of ZigZag's mapping space. The model's SRAM tile leaves a partial last tile in some
      dimension (``model.partial``: 4 of 7 rows), which ZigZag's loops (prime factors of each dimension) cannot
      say; the model restricted to tiles that divide their dimensions (``dataflow.tiles = "divisors"``, the row
      ``divisors`` the benchmark adds) is accepted against ZigZag by the rules above, and the model's own figures
      are within target of that restricted row's (:func:`_uneven`).
    - ``MISS``, or ``FAIL`` when ZigZag mapped no placement."""
    best = row["zigzag"]["best"]
    out = {"ratio": None, "misses": [], "verdict": "FAIL", "reason": "ZigZag mapped no placement"}
    if best is None:
        return out
    ratios = _ratios(row["model"], best)
    misses = _within(ratios)
    out.update(ratio=ratios, misses=misses, verdict="PASS", reason="", judged=_pair(row["model"], best, "best"))
    if not misses:
        return out
    shared = row["zigzag"].get("at_plan_buffer")
    if shared is not None and shared.get("best") is not None and not _within(_ratios(row["model"], shared["best"])):
        out.update(verdict="BUFFER", reason=f"the plan keeps other tensors on chip during this phase, leaving it "
                   f"{row['model']['buffer_words']:,.0f} words; ZigZag (this layer alone) had the whole buffer; "
                   "within target against ZigZag with the same SRAM and placement",
                   ratio_at_plan_buffer=_ratios(row["model"], shared["best"]),
                   judged=_pair(row["model"], shared["best"], "plan buffer"))
        return out
    mine = sorted(row["model"]["on_chip"])
    same = [p for p in row["zigzag"]["placements"] if sorted(p["on_chip"]) == mine and "no_mapping" not in p]
    if sorted(best["on_chip"]) != mine and same:
        at_mine = _ratios(row["model"], same[0])
        if not _within(at_mine):
            out.update(verdict="PLACEMENT", reason=f"ZigZag alone keeps {'+'.join(best['on_chip']) or 'nothing'} "
                       f"on chip; the network's plan {'+'.join(mine) or 'nothing'} (within target there)",
                       ratio_at_model_placement=at_mine, judged=_pair(row["model"], same[0], "model placement"))
            return out
    strided = row["phase"] == "backward_input" and max(row.get("stride", (1, 1))) > 1
    if strided and "out" not in best["on_chip"] and best["dram_words"] > row["model"]["dram_words"]:
        # ZigZag's extra DRAM words are dY re-read by each sub-convolution; each also passes through the SRAM.
        # Charged to the model too, every quantity must then be within target.
        extra = best["dram_words"] - row["model"]["dram_words"]
        prices = row.get("pj_per_word", {"sram": 0.0, "dram": 0.0})
        charged = {**row["model"], "dram_words": row["model"]["dram_words"] + extra,
                   "sram_words": row["model"]["sram_words"] + extra,
                   "energy_pj": row["model"]["energy_pj"] + extra * (prices["sram"] + prices["dram"])}
        if not _within(_ratios(charged, best)):
            out.update(verdict="EXPLAINED", reason=f"strided input gradient: ZigZag's sub-convolutions read dY "
                       f"from DRAM {best['dram_words'] / max(row['model']['dram_words'], 1):.2f}x as often; "
                       "within target with those words charged to the model too", judged=_pair(charged, best, "best"))
            return out
    return _against_model_mapping(row, best, misses, out)


def _said(extra: dict[str, float]) -> str:
    """What was charged to the model, in words, for a verdict's reason."""
    said = [f"the {extra['padding']:,.0f} words of zero padding it fetches with the input tiles"] if extra.get(
        "padding") else []
    said += [f"the {extra['rounding']:,.0f} words its word accesses add to the data it moves"] if extra.get(
        "rounding") else []
    said += [f"the {extra['rereads']:,.0f} words of dY its sub-convolutions read again"] if extra.get("rereads") else []
    return f" once {' and '.join(said)} are charged to the model too" if said else ""


def _against_model_mapping(row: dict[str, Any], best: dict[str, Any], misses: list[str],
                           out: dict[str, Any]) -> dict[str, Any]:
    """The verdicts that rest on ZigZag's count of the model's own mapping (``SEARCH``, ``SPACE``, ``EXPLAINED``
    for a strided input gradient's sub-convolutions), else ``MISS`` saying what ZigZag made of that mapping."""
    ours = row["zigzag"].get("at_model_mapping")
    counted, extra = (row["model"], {}) if ours is None else _charged(row, ours)
    charged = _said(extra)
    agrees = ours is not None and not _within(_ratios(counted, ours))
    plan = row["zigzag"].get("at_plan_buffer")
    # ZigZag's own search under the plan's constraints (the model's placement, the buffer the plan leaves); a
    # search that found no mapping there at all prices nothing below the model's
    plan_best = None if plan is None else (plan["best"]["energy_pj"] if plan.get("best") else float("inf"))
    no_dearer = ours is not None and ours["energy_pj"] <= best["energy_pj"] * (1 + 1e-9)
    if agrees and (no_dearer or (plan_best is not None and ours["energy_pj"] <= plan_best * (1 + 1e-9))):
        # ZigZag, handed the model's loop order and tiles (it allocates them to its memories itself), counts what
        # the model counts, and finds that mapping at least as cheap as the best its own search returned
        if no_dearer:
            where = f", at {ours['energy_pj'] / best['energy_pj']:.3f} of the energy of the best it found"
        else:
            where = (f"; under the plan's placement and its {plan['buffer_words']:,.0f} words of buffer ZigZag's "
                     "search " + ("found no mapping" if plan_best == float("inf") else
                                  f"found none cheaper ({ours['energy_pj'] / plan_best:.3f} of its best there)"))
        out.update(verdict="SEARCH", reason=f"ZigZag's search (lpf {row.get('lpf', '?')}) did not reach the model's "
                   f"mapping; ZigZag counts that mapping within target{charged}{where}",
                   ratio_at_model_mapping=_ratios(counted, ours), judged=_pair(counted, ours, "model mapping"))
        return out
    if _uneven(row, out):
        return out
    outside = outside_model_space(row["phase"], best.get("temporal_mappings", []))
    price = ours["energy_pj"] / best["energy_pj"] if ours is not None else None
    if agrees and outside and price is not None and price - 1 <= TOLERANCES["energy_pj"]:
        # ZigZag counts the model's mapping as the model does; its cheaper mapping lies outside the model's mapping
        # space; what that limit costs is within the energy target
        out.update(verdict="SPACE", reason=f"ZigZag's best mapping {outside}, outside the model's mapping space; "
                   f"ZigZag counts the model's own mapping within target{charged}, at {price:.3f} of the energy of "
                   "that best",
                   ratio_at_model_mapping=_ratios(counted, ours), judged=_pair(counted, best, "best"))
        return out
    if agrees and extra.get("rereads") and _operands_agree(row["model"], ours):
        # a documented limit of ZigZag's description: its sub-convolutions each read dY again; with those words
        # charged ZigZag counts the model's one-pass mapping as the model does, every operand's DRAM words within
        # target (dY as the sub-convolution that reads it least). Its best pays the same re-reads, so the two
        # mappings' energies are not compared on equal terms (the ratio is reported, not judged).
        out.update(verdict="EXPLAINED", reason=f"strided input gradient: ZigZag counts the model's own mapping "
                   f"within target{charged}; with those re-reads ZigZag prices it at {price:.3f} of its best, "
                   "which pays them too", ratio_at_model_mapping=_ratios(counted, ours),
                   judged=_pair(counted, ours, "model mapping"))
        return out
    reason = "outside target: " + ", ".join(misses)
    if ours is not None:  # say what ZigZag made of the model's own mapping
        off = _within(_ratios(counted, ours))
        reason += (f"; ZigZag counts the model's own mapping "
                   f"{'outside target: ' + ', '.join(off) if off else 'within target'}{charged}, at {price:.4f} of "
                   "the energy of its best")
        out["ratio_at_model_mapping"] = _ratios(counted, ours)
    out.update(verdict="MISS", reason=reason)
    return out


def _uneven(row: dict[str, Any], out: dict[str, Any]) -> bool:
    """``UNEVEN`` (set in ``out``): the model's tile leaves a partial tile (``model.partial`` names the dimensions),
    ZigZag, whose loops cannot say one, accepts the model restricted to dividing tiles (``row["divisors"]``, judged
    by :func:`judge_row`), and the model's own figures are within target of that restricted row's. Totals pair the
    model's own figures (plus what ZigZag's conventions charged the restricted row) with the ZigZag run the
    restricted row was judged against."""
    even = row.get("divisors")
    partial = row["model"].get("partial") or []
    if not partial or even is None:
        return False
    got = judge_row(even)
    if got["verdict"] not in ACCEPTED:
        return False
    near = _ratios(row["model"], even["model"])
    if _within(near):
        return False
    dims = ", ".join(partial)
    out.update(verdict="UNEVEN", reason=f"the model's tile {row['model']['tile']} leaves a partial tile in {dims}, "
               f"which ZigZag's loops cannot say; with tiles that divide their dimensions (tile "
               f"{even['model']['tile']}) the model is {got['verdict']} against ZigZag, and its own figures are "
               f"{near['energy_pj']:.3f} of that mapping's energy, {near['dram_words']:.3f} of its DRAM words",
               ratio_to_divisors=near, divisors_verdict=got["verdict"], divisors_reason=got["reason"],
               judged={**got["judged"], "against": f"divisors: {got['judged']['against']}",
                       # the model's own figures, with what ZigZag's conventions charged to the restricted row
                       "model": {k: float(row["model"][k]) + got["judged"]["model"][k] - float(even["model"][k])
                                 for k in QUANTITIES}})
    return True


def judge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Verdicts of every row and of the totals per phase (over the rows ZigZag mapped); overall ``PASS`` only when
    every row is accepted (:data:`ACCEPTED`) and every total is within target: energy within ±5 %, the words of
    each level within that level's per-layer target.

    A total sums each row as it was judged (``judged``: the model's figures, as charged, against the ZigZag run
    the verdict rests on — its best, its run at the model's placement or at the plan's buffer, its count of the
    model's mapping where that is the cheapest mapping ZigZag knows). ``ratio_to_search`` is the same total
    against ZigZag's own search alone, shown beside it."""
    judged = [{**r, **judge_row(r)} for r in rows]
    totals: dict[str, Any] = {}
    for phase in dict.fromkeys(r["phase"] for r in judged):
        sel = [r for r in judged if r["phase"] == phase]
        ok = [r for r in sel if r["zigzag"]["best"] is not None]
        tot = {k: (sum(r["judged"]["model"][k] for r in ok), sum(r["judged"]["zigzag"][k] for r in ok))
               for k in QUANTITIES}
        ratio = {k: (m / z if z else None) for k, (m, z) in tot.items()}
        raw = {k: (sum(r["model"][k] for r in ok), sum(r["zigzag"]["best"][k] for r in ok)) for k in QUANTITIES}
        counts = {v: sum(1 for r in sel if r["verdict"] == v) for v in VERDICTS}
        totals[phase] = {"layers": len(sel), **counts, "model": {k: m for k, (m, _) in tot.items()},
                         "zigzag": {k: z for k, (_, z) in tot.items()}, "ratio": ratio,
                         "ratio_to_search": {k: (m / z if z else None) for k, (m, z) in raw.items()},
                         "misses": [k for k in QUANTITIES if ratio[k] is None
                                    or abs(ratio[k] - 1) > _TOTAL_TARGETS[k]]}
    rows_ok = all(r["verdict"] in ACCEPTED for r in judged)
    totals_ok = all(not t["misses"] for t in totals.values())
    return {"rows": judged, "totals": totals, "verdict": "PASS" if rows_ok and totals_ok else "FAIL"}
