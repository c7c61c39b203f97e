"""ZigZag as the outside referee of the tiled dataflow: per conv/linear layer and phase, energy and words by level.

For every conv/linear layer of a model (``energymodel`` counts, ``energymodel.memory.levels.layer_phases`` tilings)
this writes a ZigZag (KU Leuven, ``pip install zigzag-dse six``) hardware description matching the energy
table — a 16x16 MAC array at the table's MAC energy, per-PE register files of ``--rf-words`` words (one per
operand) at its RF energy, one shared SRAM buffer of the table's ``buffer_bytes`` at its SRAM energy, and
DRAM — with the *same placement* as the model: an operand the model keeps whole on chip has the SRAM as its
top level, every other operand lives in DRAM. ZigZag then searches its own spatial/temporal mapping (LOMA,
minimal energy) and both are compared:

- inference / forward: the layer as it is;
- backward to the input: at stride 1 a convolution of ``dY`` with the flipped kernel, channels swapped,
  padding ``k − 1 − p``; at stride 2 four stride-1 sub-convolutions, one per output parity (some empty);
- backward to the weights: ``dW[k][c][fy][fx] += dY[b][k][oy][ox] · X[b][c][iy][ix]``, a convolution
  reducing over batch and positions.

Per layer and phase it writes both sides' energy (pJ) and DRAM, SRAM and RF words, and the ratios
model / ZigZag, to ``benchmarks/results/zigzag-<model>-<mode>-b<batch>.json`` and ``.csv``; every point is
reported, misses included (target: every layer within ±10 % in energy, totals within ±5 %). ZigZag takes
seconds per layer, so its answers are cached by (workload, hardware) in
``benchmarks/results/zigzag-cache.json``.

    python benchmarks/bench_zigzag.py                                   # cifar_resnet20, inference, batch 1
    python benchmarks/bench_zigzag.py --mode training --batch 1
    python benchmarks/bench_zigzag.py --model resnet18 --input 3,224,224

ZigZag is an optional extra (``pip install '.[zigzag]'``); without it this script says so and exits 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energymodel.atomic import write_text  # noqa: E402
from energymodel.count.gemm import GemmShape
from energymodel.count.phases import count  # noqa: E402
from energymodel.count.trace import trace  # noqa: E402
from energymodel.memory.levels import layer_phases  # noqa: E402
from energymodel.memory.tiling import rf_per_mac  # noqa: E402
from energymodel.models.zoo import build  # noqa: E402
from energymodel.price.table import EnergyTable, load_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = RESULTS / "zigzag-cache.json"
ARRAY = 16
ENERGY_TOLERANCE = 0.10
TOTAL_TOLERANCE = 0.05
#: the model's roles (in, wt, out) -> ZigZag operands, per phase
ROLE_TO_ZZ = {
    "forward": {"in": "I", "wt": "W", "out": "O"},
    "backward_input": {"in": "O", "wt": "W", "out": "I"},
    "backward_weight": {"in": "I", "wt": "O", "out": "W"},
}
ZZ_MEM_OP = {"I": "I1", "W": "I2", "O": "O"}


# -- hardware and workload descriptions ---------------------------------------------------------------------


def _port(name: str, kind: str, allocation: list[str], bits: int) -> dict[str, Any]:
    return {"name": name, "type": kind, "bandwidth_min": bits, "bandwidth_max": bits, "allocation": allocation}


def hardware(table: EnergyTable, dram_operands: list[str], *, rf_words: int = 32) -> dict[str, Any]:
    """ZigZag accelerator matching ``table``: 16x16 MACs, per-PE RFs (one per operand), one SRAM, DRAM.

    Energies are per access of one word (``table.word_bits``; every port moves one word); ``dram_operands``
    (ZigZag memory operands ``I1``, ``I2``, ``O``) have DRAM as their top level, the others the SRAM.
    """
    bits = table.word_bits
    rf, sram, dram = (table.level_pj(lv) for lv in ("rf", "sram", "dram"))
    mem: dict[str, Any] = {}
    for op, name in (("I2", "rf_w"), ("I1", "rf_i")):
        mem[name] = {"size": rf_words * bits, "r_cost": rf, "w_cost": rf, "area": 0, "latency": 1, "operands": [op],
                     "ports": [_port("r_port_1", "read", [f"{op}, tl"], bits),
                               _port("w_port_1", "write", [f"{op}, fh"], bits)],
                     "served_dimensions": []}
    mem["rf_o"] = {"size": rf_words * bits, "r_cost": rf, "w_cost": rf, "area": 0, "latency": 1, "operands": ["O"],
                   "ports": [_port("r_port_1", "read", ["O, tl"], bits), _port("r_port_2", "read", ["O, th"], bits),
                             _port("w_port_1", "write", ["O, fh"], bits), _port("w_port_2", "write", ["O, fl"], bits)],
                   "served_dimensions": []}
    mem["sram"] = {"size": int(table.dataflow.buffer_bytes) * 8, "r_cost": sram, "w_cost": sram, "area": 0,
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
                                  "sizes": [ARRAY, ARRAY]}}


MAPPING = [{"name": "default", "spatial_mapping": {"D1": ["K, 16"], "D2": ["C, 16"]},
            "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}]


def _layer(equation: str, dims: dict[str, int], relations: list[str], pr: tuple[int, int],
           padding: list[list[int]], bits: int) -> dict[str, Any]:
    return {"id": 0, "name": "L", "operator_type": "Conv", "equation": equation, "dimension_relations": relations,
            "loop_dims": list(dims), "loop_sizes": list(dims.values()),
            "operand_precision": {"I": bits, "W": bits, "O": bits, "O_final": bits},
            "operand_source": {"I": 0, "W": 0}, "pr_loop_dims": ["IX", "IY"], "pr_loop_sizes": [pr[1], pr[0]],
            "padding": padding}


def _parity_classes(out_len: int, in_len: int, kernel: int, stride: int, pad: int) -> list[tuple[int, int, int, int]]:
    """Sub-convolutions of a strided input gradient along one axis: ``(out_size, taps, pad_lo, pad_hi)`` per
    parity class of the input-gradient rows (``taps = 0``: that class gets no gradient)."""
    out = []
    for a in range(stride):
        size = len(range(a, in_len, stride))  # rows of dX in this class (dX has in_len rows)
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
    rows = _parity_classes(p, h, r, sy, py)
    cols = _parity_classes(q, w, s, sx, px)
    out = []
    for oy, ty, ly, hy in rows:
        for ox, tx, lx, hx in cols:
            if ty and tx and oy and ox:
                out.append(_layer("O[b][k][oy][ox]+=W[k][c][fy][fx]*I[b][c][iy][ix]",
                                  {"B": n, "K": c, "C": k, "OY": oy, "OX": ox, "FY": ty, "FX": tx},
                                  ["ix=1*ox+1*fx", "iy=1*oy+1*fy"], (p, q), [[lx, hx], [ly, hy]], bits))
    return out


# -- running ZigZag, cached ---------------------------------------------------------------------------------


def _levels(cme) -> dict[str, float]:
    """Words read + written at each level (rf, sram, dram), all operands, from one ZigZag evaluation."""
    out = {"rf": 0.0, "sram": 0.0, "dram": 0.0}
    hierarchy = cme.accelerator.memory_hierarchy
    for op, accesses in cme.memory_word_access.items():
        mem_op = cme.memory_operand_links.layer_to_mem_op(op)
        for level, acc in zip(hierarchy.get_memory_levels(mem_op=mem_op), accesses):
            name = level.name
            key = "rf" if name.startswith("rf") else name
            out[key] += float(sum(acc.data.values()))
    return out


def run_zigzag(layer: dict[str, Any], hw: dict[str, Any], cache: dict[str, Any]) -> dict[str, Any]:
    """ZigZag's minimal-energy mapping of one layer on ``hw``: energy (pJ), MAC energy, words per level."""
    import yaml
    from zigzag.api import get_hardware_performance_zigzag

    key = hashlib.sha1(json.dumps([layer, hw, MAPPING], sort_keys=True).encode()).hexdigest()
    if key in cache:
        return cache[key]
    with tempfile.TemporaryDirectory() as tmp:
        hw_path, map_path = Path(tmp) / "hw.yaml", Path(tmp) / "map.yaml"
        hw_path.write_text(yaml.safe_dump(hw, sort_keys=False))
        map_path.write_text(yaml.safe_dump(MAPPING, sort_keys=False))
        t0 = time.perf_counter()
        try:
            _, _, cmes = get_hardware_performance_zigzag(
                [layer], str(hw_path), str(map_path), opt="energy", dump_folder=str(Path(tmp) / "out"),
                loma_show_progress_bar=False)
        except Exception as exc:  # ZigZag found no mapping: reported as such, never dropped
            res = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        else:
            cme = cmes[0][1][0][0]
            res = {"energy_pj": float(cme.energy_total), "mac_energy_pj": float(cme.mac_energy),
                   "macs": float(cme.layer.total_mac_count), **{f"{k}_words": v for k, v in _levels(cme).items()}}
        res["seconds"] = round(time.perf_counter() - t0, 2)
    cache[key] = res
    return res


# -- the comparison -----------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def compare_model(model_name: str, input_shape: tuple[int, ...], *, mode: str, batch: int, table: EnergyTable,
                  cache: dict[str, Any], rf_words: int, log=print) -> dict[str, Any]:
    """Every conv/linear layer x phase: the model's and ZigZag's energy and words, and their ratios."""
    import torch

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = build(model_name)
        counts = count(trace(net, input_shape, mode=mode), batch=batch, warn=False)
    flow = table.dataflow
    phases = layer_phases(counts, word_bits=table.word_bits, buffer_bytes=flow.buffer_bytes)
    weights_dram = counts.weight_state_words * table.word_bytes > flow.buffer_bytes
    per_mac = float(rf_per_mac(flow.rf_accesses_per_op, rf_words))
    rows = []
    for tl in counts.tiled:
        for phase, pt in phases[tl.layer].items():
            macs = tl.shape.macs
            ours = {"macs": macs, "rf_words": per_mac * macs, "sram_words": pt.sram_words, "dram_words": pt.dram_words}
            ours["energy_pj"] = (macs * table.op_pj("mac") + ours["rf_words"] * table.level_pj("rf")
                                 + pt.sram_words * table.level_pj("sram") + pt.dram_words * table.level_pj("dram"))
            links = ROLE_TO_ZZ[phase]
            dram_ops = sorted(ZZ_MEM_OP[links[role]] for i, role in enumerate(("in", "wt", "out"))
                              if not pt.resident[i] and not (role == "wt" and not weights_dram))
            hw = hardware(table, dram_ops, rf_words=rf_words)
            zz = {"energy_pj": 0.0, "mac_energy_pj": 0.0, "macs": 0.0, "rf_words": 0.0, "sram_words": 0.0,
                  "dram_words": 0.0, "seconds": 0.0}
            errors = []
            for layer in workloads(tl.shape, phase, table.word_bits):
                res = run_zigzag(layer, hw, cache)
                if "error" in res:
                    errors.append(res["error"])
                    continue
                for key in zz:
                    zz[key] += res[key]
            row = {"layer": tl.name, "phase": phase, "tile": list(pt.tile), "innermost": pt.innermost,
                   "on_chip": [role for i, role in enumerate(("in", "wt", "out")) if pt.resident[i]],
                   "zigzag_dram_operands": dram_ops, "model": ours, "zigzag": zz, "zigzag_errors": errors}
            if errors:
                row["ratio"] = None
                row["verdict"] = "NO MAPPING"
            else:
                row["ratio"] = {k: _ratio(ours[k], zz[k]) for k in ("energy_pj", "dram_words", "sram_words", "rf_words")}
                e = row["ratio"]["energy_pj"]
                row["verdict"] = "PASS" if e is not None and abs(e - 1) <= ENERGY_TOLERANCE else "MISS"
            rows.append(row)
            r = row["ratio"] or {}
            log(f"{tl.name:28s} {phase:16s} energy {_fmt(r.get('energy_pj'))} dram {_fmt(r.get('dram_words'))} "
                f"sram {_fmt(r.get('sram_words'))} rf {_fmt(r.get('rf_words'))}  {row['verdict']}"
                + (f"  ({errors[0]})" if errors else ""))
    totals: dict[str, Any] = {}
    for phase in dict.fromkeys(r["phase"] for r in rows):
        ok = [r for r in rows if r["phase"] == phase and r["ratio"] is not None]
        ours_e = sum(r["model"]["energy_pj"] for r in ok)
        zz_e = sum(r["zigzag"]["energy_pj"] for r in ok)
        ratio = _ratio(ours_e, zz_e)
        totals[phase] = {"layers": len(ok), "no_mapping": sum(1 for r in rows if r["phase"] == phase and r["ratio"] is None),
                         "model_energy_pj": ours_e, "zigzag_energy_pj": zz_e, "ratio": ratio,
                         "within_10pct": sum(1 for r in ok if r["verdict"] == "PASS"),
                         "verdict": "PASS" if ratio is not None and abs(ratio - 1) <= TOTAL_TOLERANCE else "MISS"}
    return {"model": model_name, "input_shape": list(input_shape), "mode": mode, "batch": batch, "table": table.name,
            "buffer_bytes": flow.buffer_bytes, "rf_words": rf_words, "array": f"{ARRAY}x{ARRAY}",
            "weights_in_dram": bool(weights_dram),
            "targets": {"layer_energy": f"±{ENERGY_TOLERANCE:.0%}", "total_energy": f"±{TOTAL_TOLERANCE:.0%}"},
            "rows": rows, "totals": totals}


def _fmt(v: float | None) -> str:
    return "  -  " if v is None else f"{v:5.3f}"


def write_results(result: dict[str, Any], stem: str) -> tuple[Path, Path]:
    """``<stem>.json`` (everything) and ``<stem>.csv`` (one line per layer and phase), written atomically."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = RESULTS / f"{stem}.json", RESULTS / f"{stem}.csv"
    write_text(json_path, json.dumps(result, indent=1, allow_nan=False) + "\n")
    cols = ["layer", "phase", "verdict", "ratio_energy", "ratio_dram", "ratio_sram", "ratio_rf", "model_energy_pj",
            "zigzag_energy_pj", "model_dram_words", "zigzag_dram_words", "model_sram_words", "zigzag_sram_words",
            "model_rf_words", "zigzag_rf_words", "on_chip", "zigzag_errors"]
    lines = [",".join(cols)]
    for r in result["rows"]:
        ratio = r["ratio"] or {}
        vals = [r["layer"], r["phase"], r["verdict"], *(ratio.get(k) for k in ("energy_pj", "dram_words", "sram_words",
                                                                               "rf_words")),
                r["model"]["energy_pj"], r["zigzag"]["energy_pj"], r["model"]["dram_words"], r["zigzag"]["dram_words"],
                r["model"]["sram_words"], r["zigzag"]["sram_words"], r["model"]["rf_words"], r["zigzag"]["rf_words"],
                "+".join(r["on_chip"]), "; ".join(r["zigzag_errors"])]
        lines.append(",".join("" if v is None else (f"{v:.6g}" if isinstance(v, float) else _csv(str(v))) for v in vals))
    write_text(csv_path, "\n".join(lines) + "\n")
    return json_path, csv_path


def _csv(text: str) -> str:
    return f'"{text}"' if ("," in text or '"' in text) else text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar_resnet20")
    ap.add_argument("--input", default=None, help="C,H,W (default: 3,32,32 for cifar_* models, else 3,224,224)")
    ap.add_argument("--mode", choices=("inference", "training"), default="inference")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--table", default="45nm")
    ap.add_argument("--rf-words", type=int, default=None, help="RF words per PE (default: the table's rf_words)")
    args = ap.parse_args(argv)
    try:
        import six  # noqa: F401  (ZigZag needs it and does not declare it)
        import zigzag  # noqa: F401
    except ImportError as exc:
        print(f"bench_zigzag: ZigZag is not installed ({exc.name}); pip install '.[zigzag]'", file=sys.stderr)
        return 2
    logging.disable(logging.CRITICAL)
    shape = tuple(int(v) for v in (args.input or ("3,32,32" if args.model.startswith("cifar") else "3,224,224"))
                  .split(","))
    table = load_table(args.table)
    rf_words = args.rf_words or int(table.dataflow.rf_words)
    cache = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    t0 = time.perf_counter()
    try:
        result = compare_model(args.model, shape, mode=args.mode, batch=args.batch, table=table, cache=cache,
                               rf_words=rf_words)
    finally:
        RESULTS.mkdir(parents=True, exist_ok=True)
        write_text(CACHE, json.dumps(cache, indent=0, sort_keys=True) + "\n")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    stem = f"zigzag-{args.model}-{args.mode}-b{args.batch}"
    paths = write_results(result, stem)
    for phase, t in result["totals"].items():
        print(f"total {phase}: model / ZigZag energy {_fmt(t['ratio'])} ({t['verdict']}, target ±5 %); "
              f"{t['within_10pct']} of {t['layers']} layers within ±10 %; no mapping: {t['no_mapping']}")
    print(f"wrote {paths[0]} and {paths[1]} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
