"""ZigZag (KU Leuven's accelerator cost model, ``pip install -e '.[zigzag]'``) as the referee of the tiled dataflow.

For one phase of a conv/linear layer this describes to ZigZag the hardware of an energy table — the PE array of
``[dataflow.array]`` (its rows unroll the layer's ``K``, its columns ``C``) at the table's MAC energy; per PE an
input, a weight and an output register file of the table's ``rf_words`` at its RF energy; one SRAM of
``buffer_bytes`` shared by every operand at its SRAM energy; DRAM — every port one word wide, so ZigZag's
access counts are words — and the phase as ZigZag workloads:

- forward: the layer as it is;
- backward to the input: convolutions of ``dY`` over ``dX`` (kernel flipped, channels swapped), one per
  parity class of a strided layer (:func:`energymodel.memory.loopnest.parity_classes`);
- backward to the weights: ``dW[k][c][fy][fx] += dY[b][k][oy][ox] · X[b][c][iy][ix]``.

**ZigZag places every operand itself**: each operand the model may keep whole on chip is tried with the SRAM and
with DRAM as its top level (:func:`placements`), every combination is searched by ZigZag's LOMA (minimal
energy, ``lpf`` loop prime factors), and the cheapest is ZigZag's answer. Only physical facts are imposed, the
same as on the model: the network input and a streamed saved input live in DRAM, weights whose state does not
fit the buffer live in DRAM. A placement whose resident operands alone exceed the buffer is not run; one ZigZag
cannot map is recorded as such; a phase with no mapped placement at all is an error of the comparison, never a
dropped row. ZigZag is imported only inside :func:`run_zigzag`; nothing else here needs it.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from itertools import product
from pathlib import Path
from typing import Any

from energymodel.count.gemm import GemmShape
from energymodel.memory.loopnest import ROLES
from energymodel.price.table import EnergyTable

__all__ = ["ROLE_TO_ZZ", "ZZ_MEM_OP", "hardware", "mapping", "workloads", "placements", "array_step", "run_zigzag",
           "referee_phase", "parity_subconvs", "temporal_levels"]

#: the model's roles (in, wt, out) -> ZigZag's layer operands, per phase
ROLE_TO_ZZ = {
    "forward": {"in": "I", "wt": "W", "out": "O"},
    "backward_input": {"in": "O", "wt": "W", "out": "I"},
    "backward_weight": {"in": "I", "wt": "O", "out": "W"},
}
#: ZigZag layer operand -> memory operand (register file): I -> input RF, W -> weight RF, O -> output RF
ZZ_MEM_OP = {"I": "I1", "W": "I2", "O": "O"}
_RF_NAMES = {"I1": "rf_i", "I2": "rf_w", "O": "rf_o"}


def _port(name: str, kind: str, allocation: list[str], bits: int) -> dict[str, Any]:
    return {"name": name, "type": kind, "bandwidth_min": bits, "bandwidth_max": bits, "allocation": allocation}


def hardware(table: EnergyTable, dram_operands: list[str], rf_words: dict[str, float] | None = None) -> dict[str, Any]:
    """ZigZag accelerator matching ``table``; ``dram_operands`` (memory operands ``I1``, ``I2``, ``O``) have DRAM as
    their top level, the others the SRAM. Energies per access of one word (``table.word_bits``). ``rf_words``
    (optional, per memory operand) sizes register files below the table's, at the same energy per access."""
    bits = table.word_bits
    flow = table.dataflow
    rf, sram, dram = (table.level_pj(lv) for lv in ("rf", "sram", "dram"))
    sizes = dict(zip(("I1", "I2", "O"), flow.rf_per_operand))
    sizes.update({op: min(sizes[op], w) for op, w in (rf_words or {}).items()})
    mem: dict[str, Any] = {}
    for op, size in (("I2", sizes["I2"]), ("I1", sizes["I1"])):
        mem[_RF_NAMES[op]] = {"size": int(size) * bits, "r_cost": rf, "w_cost": rf, "area": 0, "latency": 1,
                              "operands": [op], "ports": [_port("r_port_1", "read", [f"{op}, tl"], bits),
                                                          _port("w_port_1", "write", [f"{op}, fh"], bits)],
                              "served_dimensions": []}
    mem["rf_o"] = {"size": int(sizes["O"]) * bits, "r_cost": rf, "w_cost": rf, "area": 0,
                   "latency": 1, "operands": ["O"],
                   "ports": [_port("r_port_1", "read", ["O, tl"], bits), _port("r_port_2", "read", ["O, th"], bits),
                             _port("w_port_1", "write", ["O, fh"], bits), _port("w_port_2", "write", ["O, fl"], bits)],
                   "served_dimensions": []}
    mem["sram"] = {"size": int(flow.buffer_bytes) * 8, "r_cost": sram, "w_cost": sram, "area": 0,
                   "latency": 1, "operands": ["I1", "I2", "O"],
                   "ports": [_port("r_port_1", "read", ["I1, tl", "I2, tl", "O, tl", "O, th"], bits),
                             _port("w_port_1", "write", ["I1, fh", "I2, fh", "O, fh", "O, fl"], bits)],
                   "served_dimensions": ["D1", "D2"]}
    if dram_operands:
        alloc: list[str] = []
        for op in dram_operands:
            alloc += [f"{op}, fh", f"{op}, tl"] + (["O, fl", "O, th"] if op == "O" else [])
        mem["dram"] = {"size": 10**13, "r_cost": dram, "w_cost": dram, "area": 0, "latency": 1,
                       "operands": list(dram_operands), "ports": [_port("rw_port_1", "read_write", alloc, bits)],
                       "served_dimensions": ["D1", "D2"]}
    return {"name": f"matched-{table.name}", "memories": mem,
            "operational_array": {"unit_energy": table.op_pj("mac"), "unit_area": 1, "dimensions": ["D1", "D2"],
                                  "sizes": [flow.array_rows, flow.array_cols]}}


def mapping(table: EnergyTable, phase: str, layer: dict[str, Any]) -> list[dict[str, Any]]:
    """The spatial unrolling of ``[dataflow.array]`` in ``layer``'s own dimension names: the layer's ``K`` and ``C``
    (swapped in the input gradient's workloads, whose output channels are the layer's ``C``), at most the
    array's size and the loop's length."""
    flow = table.dataflow
    names = {"K": "C", "C": "K"} if phase == "backward_input" else {"K": "K", "C": "C"}
    sizes = dict(zip(layer["loop_dims"], layer["loop_sizes"]))
    spatial = {}
    for axis, dim, lanes in zip(("D1", "D2"), flow.unroll, (flow.array_rows, flow.array_cols)):
        zz_dim = names[dim]
        spatial[axis] = [f"{zz_dim}, {min(lanes, sizes[zz_dim])}"]
    return [{"name": "default", "spatial_mapping": spatial, "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}]


def _layer(equation: str, dims: dict[str, int], relations: list[str], pr: tuple[int, int],
           padding: list[list[int]], bits: int) -> dict[str, Any]:
    return {"id": 0, "name": "L", "operator_type": "Conv", "equation": equation, "dimension_relations": relations,
            "loop_dims": list(dims), "loop_sizes": list(dims.values()),
            "operand_precision": {"I": bits, "W": bits, "O": bits, "O_final": bits},
            "operand_source": {"I": 0, "W": 0}, "pr_loop_dims": ["IX", "IY"], "pr_loop_sizes": [pr[1], pr[0]],
            "padding": padding}


def parity_subconvs(out_len: int, in_len: int, kernel: int, stride: int, pad: int) -> list[tuple[int, int, int, int]]:
    """Sub-convolutions of a strided input gradient along one axis: ``(rows, taps, pad_lo, pad_hi)`` per parity
    class of the ``dX`` rows (``taps = 0``: the class gets no gradient), with the zero rows each reads past the
    ends of ``dY``."""
    out = []
    for a in range(stride):
        size = len(range(a, in_len, stride))
        f0 = (a + pad) % stride
        taps = len(range(f0, kernel, stride))
        if taps == 0 or size == 0:
            out.append((size, 0, 0, 0))
            continue
        c0 = (a + pad - f0) // stride
        lo = taps - 1 - c0
        hi = max(0, size - 1 + taps - 1 - lo - (out_len - 1))
        out.append((size, taps, max(lo, 0), hi))
    return out


def workloads(shape: GemmShape, phase: str, bits: int) -> list[dict[str, Any]]:
    """ZigZag layer descriptions of one phase of a conv/linear layer (per group; several for a strided input
    gradient). Linear layers are 1x1 convolutions on 1x1 maps."""
    n, k, c, p, q, h, w, r, s = shape.n, shape.k, shape.c, shape.p, shape.q, shape.h, shape.w, shape.r, shape.s
    (sy, sx), (dy, dx), (py, px) = shape.stride, shape.dilation, shape.padding
    if phase == "forward":
        return [_layer("O[b][k][oy][ox]+=W[k][c][fy][fx]*I[b][c][iy][ix]",
                       {"B": n, "K": k, "C": c, "OY": p, "OX": q, "FY": r, "FX": s},
                       [f"ix={sx}*ox+{dx}*fx", f"iy={sy}*oy+{dy}*fy"], (h, w), [[px, px], [py, py]], bits)]
    if phase == "backward_weight":
        return [_layer("O[k][c][fy][fx]+=W[b][k][oy][ox]*I[b][c][iy][ix]",
                       {"K": k, "C": c, "FY": r, "FX": s, "B": n, "OY": p, "OX": q},
                       [f"ix={sx}*ox+{dx}*fx", f"iy={sy}*oy+{dy}*fy"], (h, w), [[px, px], [py, py]], bits)]
    if (dy, dx) != (1, 1):
        raise ValueError("dilated input gradients are not described")
    out = []
    for oy, ty, ly, hy in parity_subconvs(p, h, r, sy, py):
        for ox, tx, lx, hx in parity_subconvs(q, w, s, sx, px):
            if ty and tx and oy and ox:
                out.append(_layer("O[b][k][oy][ox]+=W[k][c][fy][fx]*I[b][c][iy][ix]",
                                  {"B": n, "K": c, "C": k, "OY": oy, "OX": ox, "FY": ty, "FX": tx},
                                  ["ix=1*ox+1*fx", "iy=1*oy+1*fy"], (p, q), [[lx, hx], [ly, hy]], bits))
    return out


def placements(homes: tuple[str, str, str], words: tuple[float, float, float], buffer_words: float,
               step: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> list[tuple[bool, bool, bool]]:
    """Every placement (resident or not, per role ``in, wt, out``) that the roles' ``homes`` allow (``"dram"``:
    streamed, ``"sram"``: resident, ``"free"``: both tried) whose resident operands fit the buffer beside one
    array step of each streamed operand (``step``: words per role of the smallest tile any mapping holds)."""
    choices = [(h == "sram",) if h != "free" else (False, True) for h in homes]
    out = []
    for combo in product(*choices):
        need = sum(w if res else s for w, s, res in zip(words, step, combo))
        if need <= buffer_words:
            out.append(tuple(combo))
    return out


def array_step(table: EnergyTable, shape: GemmShape) -> tuple[float, float, float]:
    """Words per role (``in, wt, out``) of one step of the array: ``u_C`` inputs, ``u_K·u_C`` weights, ``u_K``
    outputs (one kernel tap, one position) — the least any mapping keeps in the SRAM of an operand it streams."""
    from energymodel.memory.loopnest import unrolled

    lanes = table.dataflow.array().lanes
    u_k, u_c = unrolled(shape.k, lanes[0])[0], unrolled(shape.c, lanes[1])[0]
    return (u_c, u_k * u_c, u_k)


def temporal_levels(temporal_mapping: str) -> dict[str, list[list[tuple[str, int]]]]:
    """ZigZag's temporal mapping as text (``"{O: [[(K, 4), (OY, 8)], [], [(FX, 3)]], W: ...}"``): per layer operand,
    the loops ``(dimension, size)`` of each of its memory levels, the innermost level and loop first."""
    out = {}
    for op, body in re.findall(r"(\w+): \[(.*?\])\](?:,|\}|$)", str(temporal_mapping)):
        out[op] = [[(d, int(n)) for d, n in re.findall(r"\((\w+), (\d+)\)", level)]
                   for level in re.findall(r"\[(.*?)\]", body)]
    return out


def _counts(cme) -> dict[str, Any]:
    """One walk over a ZigZag evaluation's memories: words read + written at each level (``rf``, ``sram``,
    ``dram``; its memory word accesses, each transfer period's data rounded up to whole port words), the data it
    moves at each level in words (``<level>_elements``: ``DATA_ELEM_MOVE_COUNT`` times each direction's precision
    over the word's bits), and the DRAM words of each layer operand (``dram_by_operand``)."""
    from zigzag.mapping.data_movement import DataMoveAttr

    words = {"rf": 0.0, "sram": 0.0, "dram": 0.0}
    moved = dict(words)
    by_operand: dict[str, float] = {}
    hierarchy = cme.accelerator.memory_hierarchy
    bits = float(cme.layer.operand_precision[next(iter(cme.memory_word_access))])
    for op, accesses in cme.memory_word_access.items():
        mem_op = cme.memory_operand_links.layer_to_mem_op(op)
        by_operand[str(op)] = 0.0  # an operand kept on chip reads no DRAM word
        for i, (level, acc) in enumerate(zip(hierarchy.get_memory_levels(mem_op=mem_op), accesses)):
            key = "rf" if level.name.startswith("rf") else level.name
            words[key] += float(sum(acc.data.values()))
            move = cme.mapping.unit_mem_data_movement[op][i]
            count = move.get_attribute(DataMoveAttr.DATA_ELEM_MOVE_COUNT).data
            prec = move.get_attribute(DataMoveAttr.DATA_PRECISION).data
            moved[key] += float(sum(count[d] * prec[d] for d in count)) / bits
            if key == "dram":
                by_operand[str(op)] += float(sum(acc.data.values()))
    return {**{f"{k}_words": v for k, v in words.items()}, **{f"{k}_elements": v for k, v in moved.items()},
            "dram_by_operand": by_operand}


def run_zigzag(layer: dict[str, Any], hw: dict[str, Any], spatial: list[dict[str, Any]], lpf: int,
               cache: dict[str, Any], elements: bool = False) -> dict[str, Any]:
    """ZigZag's minimal-energy mapping of one workload on ``hw`` (LOMA, ``lpf`` loop prime factors): energy (pJ),
    MAC energy, words per level, the words its data movement amounts to per level (``<level>_elements``, see
    :func:`_counts`), the DRAM words of each operand and the temporal mapping; ``{"no_mapping": ...}`` when LOMA finds none. Cached in ``cache``
    by (workload, hardware, mapping, lpf); a cached answer without the element counts is run again when
    ``elements`` asks for them; any other failure raises."""
    import yaml
    from zigzag.api import get_hardware_performance_zigzag
    from zigzag.opt.loma.engine import NoValidLoopOrderingFoundException

    key = hashlib.sha1(json.dumps([layer, hw, spatial, lpf], sort_keys=True).encode()).hexdigest()
    if key in cache and (not elements or "no_mapping" in cache[key] or "dram_by_operand" in cache[key]):
        return cache[key]
    with tempfile.TemporaryDirectory() as tmp:
        hw_path, map_path = Path(tmp) / "hw.yaml", Path(tmp) / "map.yaml"
        hw_path.write_text(yaml.safe_dump(hw, sort_keys=False))
        map_path.write_text(yaml.safe_dump(spatial, sort_keys=False))
        t0 = time.perf_counter()
        try:
            _, _, cmes = get_hardware_performance_zigzag(
                [layer], str(hw_path), str(map_path), opt="energy", dump_folder=str(Path(tmp) / "out"),
                loma_show_progress_bar=False, lpf_limit=lpf)
        except NoValidLoopOrderingFoundException as exc:
            res: dict[str, Any] = {"no_mapping": str(exc).splitlines()[0][:200]}
        else:
            cme = cmes[0][1][0][0]
            res = {"energy_pj": float(cme.energy_total), "mac_energy_pj": float(cme.mac_energy),
                   "macs": float(cme.layer.total_mac_count), **_counts(cme),
                   "temporal_mapping": str(cme.mapping.temporal_mapping)}
        res["seconds"] = round(time.perf_counter() - t0, 2)
    cache[key] = res
    return res


def referee_phase(table: EnergyTable, shape: GemmShape, phase: str, homes: tuple[str, str, str], lpf: int,
                  cache: dict[str, Any], save=None, only: tuple[bool, bool, bool] | None = None) -> dict[str, Any]:
    """ZigZag's answer for one phase: every allowed placement (:func:`placements`) run, the cheapest taken.

    Returns ``{"best": placement result or None, "placements": [...]}``; each placement result has the resident
    roles, ZigZag's summed energy and words over the phase's workloads, or why it has none. ``save`` (optional)
    is called after every ZigZag run (to write the cache); ``only``: run this placement alone."""
    roles_zz = ROLE_TO_ZZ[phase]
    buffer_words = table.dataflow.buffer_bytes / table.word_bytes
    layers = workloads(shape, phase, table.word_bits)
    tried = []
    for resident in placements(homes, tuple(float(w) for w in shape.words()), buffer_words,
                               array_step(table, shape)):
        if only is not None and resident != only:
            continue
        dram_ops = sorted(ZZ_MEM_OP[roles_zz[r]] for r, res in zip(ROLES, resident) if not res)
        hw = hardware(table, dram_ops)
        total = {"energy_pj": 0.0, "mac_energy_pj": 0.0, "macs": 0.0, "rf_words": 0.0, "sram_words": 0.0,
                 "dram_words": 0.0, "seconds": 0.0}
        failed = None
        temporal = []
        for layer in layers:
            res = run_zigzag(layer, hw, mapping(table, phase, layer), lpf, cache)
            if save is not None:
                save()
            if "no_mapping" in res:
                failed = res["no_mapping"]
                break
            for key in total:
                total[key] += res[key]
            temporal.append(res.get("temporal_mapping", ""))
        tried.append({"on_chip": [r for r, res in zip(ROLES, resident) if res],
                      **({"no_mapping": failed} if failed else {**total, "temporal_mappings": temporal})})
    mapped = [t for t in tried if "no_mapping" not in t]
    best = min(mapped, key=lambda t: t["energy_pj"]) if mapped else None
    return {"best": best, "placements": tried}
