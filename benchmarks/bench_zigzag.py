"""ZigZag as the referee of the cost model: every conv/linear layer and phase, every memory level, ZigZag's own placement.

The model's side is ``energymodel.profile()`` (its per-phase rows, ``Profile.phases``); ZigZag's side is
:func:`energymodel.referee.zigzag.referee_phase` on hardware matched to the energy table (the PE array, the
per-PE register files, one SRAM of the buffer, DRAM), where ZigZag tries every placement of the operands the
model may keep on chip and takes its cheapest. Per layer and phase both sides' energy and DRAM, SRAM and RF
words are compared (model / ZigZag) at every batch and buffer asked for; targets: energy and DRAM within
±10 %, SRAM and RF within ±25 % on every layer-phase, totals within ±5 % (:func:`energymodel.referee.verdict.judge`).
Every point is written, misses and failures included, to ``benchmarks/results/zigzag-<model>-<mode>.json`` and
``.csv``. ZigZag answers are cached per (workload, hardware, mapping, lpf) in ``results/zigzag-cache.json``.

    python benchmarks/bench_zigzag.py --mode training                      # cifar_resnet20: 3 batches x 3 buffers
    python benchmarks/bench_zigzag.py --mode training --batch 16 --buffer 65536 --lpf 8   # a wider search
    python benchmarks/bench_zigzag.py --zigzag-only ...                     # fill the cache only

ZigZag is an optional extra (``pip install -e '.[zigzag]'``); without it this script says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energymodel.atomic import write_text  # noqa: E402
from energymodel.count.phases import count  # noqa: E402
from energymodel.count.trace import trace  # noqa: E402
from energymodel.memory.levels import PHASES, phase_homes  # noqa: E402
from energymodel.models.zoo import build  # noqa: E402
from energymodel.price.table import load_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = RESULTS / "zigzag-cache.json"


def _load_cache(extra: Path | None = None) -> dict[str, Any]:
    """ZigZag answers of ``results/zigzag-cache*.json`` (parallel runs write their own) and of ``extra``."""
    cache: dict[str, Any] = {}
    for path in [*sorted(RESULTS.glob("zigzag-cache*.json")), extra]:
        if path is not None and path.is_file():
            cache.update(json.loads(path.read_text()))
    return cache


def _saver(cache: dict[str, Any], path: Path = CACHE):
    """``save()``: write to ``path`` its own answers and those new in ``cache`` (at most every 30 s unless forced);
    answers that came from the other cache files stay there."""
    own = json.loads(path.read_text()) if path.is_file() else {}
    before = {k: v for k, v in cache.items() if k not in own}
    state: dict[str, Any] = {"written": {k: id(v) for k, v in cache.items() if k not in before}, "t": time.monotonic()}

    def save(force: bool = False) -> None:
        if not (force or time.monotonic() - state["t"] > 30):
            return
        mine = {k: v for k, v in cache.items() if k not in before or before[k] is not v}
        ids = {k: id(v) for k, v in mine.items()}
        if ids != state["written"]:  # an answer added, or one run again (with more detail)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, json.dumps(mine, indent=0, sort_keys=True) + "\n")
            state["written"] = ids
        state["t"] = time.monotonic()
    return save


def _wanted(only: list[str] | None, layer: str, phase: str) -> bool:
    return not only or any(o in (layer, f"{layer}:{phase}") for o in only)


def zigzag_side(model_name: str, input_shape: tuple[int, ...], *, mode: str, batch: int, table, lpf: int,
                cache: dict[str, Any], save, log=print,
                only: list[str] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """ZigZag's answer for every conv/linear layer and phase (those of ``only``, ``layer`` or ``layer:phase``,
    when given): ``{(layer, phase): referee_phase(...)}``."""
    from energymodel.referee.zigzag import referee_phase

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = count(trace(build(model_name), input_shape, mode=mode), batch=batch, warn=False)
    out = {}
    for tl in counts.tiled:
        for (phase, _), runs in zip(PHASES, tl.phases):
            if not runs or not _wanted(only, tl.name, phase):
                continue
            homes = phase_homes(counts, tl, phase, word_bits=table.word_bits,
                                buffer_bytes=table.dataflow.buffer_bytes)
            t0 = time.perf_counter()
            res = referee_phase(table, tl.shape, phase, homes, lpf, cache, save)
            out[(tl.name, phase)] = res
            best = res["best"]
            log(f"  {tl.name:28s} {phase:16s} {len(res['placements'])} placement(s), best on chip "
                f"{'+'.join(best['on_chip']) or '-' if best else 'NO MAPPING'}  ({time.perf_counter() - t0:.0f} s)")
    return out


def model_side(model_name: str, input_shape: tuple[int, ...], *, mode: str, batch: int, table):
    """``profile()`` of the model: its per-phase rows (``Profile.phases``) and its counts."""
    from energymodel.analysis.profile import profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return profile(build(model_name), input_shape, batch=batch, mode=mode, table=table, warn=False)


def _rows(prof, zz: dict, table, lpf: int, only: list[str] | None) -> list[dict[str, Any]]:
    """One row per conv/linear layer-phase of a profile: the model's figures beside ZigZag's answer ``zz``."""
    from energymodel.referee.zigzag_mapping import partial_tiles

    layers = {tl.name: tl for tl in prof.counts.tiled}
    lanes = table.dataflow.array().lanes
    rows = []
    for r in prof.phases.to_dict(orient="records"):
        if not _wanted(only, r["name"], r["phase"]):
            continue
        model = {k: float(r[k]) for k in ("energy_pj", "dram_words", "sram_words", "rf_words", "macs", "dram_in",
                                          "dram_wt", "dram_out")}
        tile = tuple(float(v) for v in str(r["tile"]).split("x"))
        partial = partial_tiles(layers[r["name"]].shape, tile, lanes)
        model.update(on_chip=[x for x in r["on_chip"].split("+") if x], tile=r["tile"], loop_order=r["loop_order"],
                     innermost=r["innermost"], partial=partial,
                     bias_words=float(r["bias_words"]), saved_copy_words=float(r["saved_copy_words"]),
                     buffer_words=float(r["buffer_words"]))
        rows.append({"layer": r["name"], "phase": r["phase"], "stride": list(layers[r["name"]].shape.stride),
                     "lpf": lpf, "model": model, "zigzag": zz[(r["name"], r["phase"])],
                     "pj_per_word": {lv: table.level_pj(lv) for lv in ("rf", "sram", "dram")}})
    return rows


def _rechecked(rows: list[dict[str, Any]], layers: dict, table, lpf: int, cache: dict[str, Any], save
               ) -> dict[str, Any]:
    """``judge(rows)``, after ZigZag runs again on each miss: at the model's placement with the SRAM the plan
    leaves to the phase (where the plan keeps other tensors on chip then), and on the model's own mapping (loop
    order and tiles; ZigZag allocates them itself)."""
    from energymodel.referee.verdict import judge
    from energymodel.referee.zigzag import referee_phase
    from energymodel.referee.zigzag_mapping import (
        at_model_mapping,
        model_allocation,
        model_orderings,
        padding_words,
    )

    result = judge(rows)
    rechecked = False
    for r, row in zip(result["rows"], rows):
        left = r["model"]["buffer_words"]
        if r["verdict"] != "MISS" or not left < table.dataflow.buffer_bytes / table.word_bytes:
            continue
        small = table.with_values({"buffer_bytes": int(left * table.word_bytes)})
        homes = tuple("sram" if role in r["model"]["on_chip"] else "dram" for role in ("in", "wt", "out"))
        row["zigzag"] = {**row["zigzag"], "at_plan_buffer": {
            **referee_phase(small, layers[r["layer"]].shape, r["phase"], homes, lpf, cache, save),
            "buffer_words": left}}
        rechecked = True
    if rechecked:
        result = judge(rows)
    rechecked = False
    for r, row in zip(result["rows"], rows):
        if r["verdict"] != "MISS":
            continue
        m = r["model"]
        tile = tuple(int(float(v)) for v in str(m["tile"]).split("x"))
        found = model_orderings(table, layers[r["layer"]].shape, r["phase"], tile, m["innermost"], m["loop_order"])
        if found is None:
            continue
        row["model"]["padding_words"] = padding_words(layers[r["layer"]].shape, r["phase"], tile, m["innermost"],
                                                      m["on_chip"])
        plan = table.with_values({"buffer_bytes": int(m["buffer_words"] * table.word_bytes)})
        held = [model_allocation(table, layers[r["layer"]].shape, r["phase"], tile, order, ordering, i)
                for i, (ordering, order) in enumerate(found)]
        row["zigzag"] = {**row["zigzag"], "at_model_mapping": at_model_mapping(
            plan, layers[r["layer"]].shape, r["phase"], m["on_chip"], [o for o, _ in found], lpf, cache, save, held)}
        rechecked = True
    return judge(rows) if rechecked else result


def compare(model_name: str, input_shape: tuple[int, ...], *, mode: str, batch: int, table, lpf: int,
            cache: dict[str, Any], save, log=print, only: list[str] | None = None) -> dict[str, Any]:
    """Every conv/linear layer x phase: the model's words and energy (from ``profile()``) beside ZigZag's, judged.

    A miss whose SRAM tile leaves a partial tile (ZigZag's loops cannot say one) is judged once more through the
    model restricted to dividing tiles (``dataflow.tiles = "divisors"``: a second ``profile()``, its row of that
    layer-phase checked the same way, kept as the row's ``divisors``; the ``UNEVEN`` verdict)."""
    import dataclasses

    from energymodel.referee.verdict import ACCEPTED, judge

    prof = model_side(model_name, input_shape, mode=mode, batch=batch, table=table)
    zz = zigzag_side(model_name, input_shape, mode=mode, batch=batch, table=table, lpf=lpf, cache=cache, save=save,
                     log=log, only=only)
    layers = {tl.name: tl for tl in prof.counts.tiled}
    rows = _rows(prof, zz, table, lpf, only)
    result = _rechecked(rows, layers, table, lpf, cache, save)
    uneven = [row for r, row in zip(result["rows"], rows) if r["verdict"] == "MISS" and row["model"]["partial"]]
    if uneven:
        even_table = dataclasses.replace(table, dataflow=dataclasses.replace(table.dataflow, tiles="divisors"))
        even_prof = model_side(model_name, input_shape, mode=mode, batch=batch, table=even_table)
        wanted = [f"{row['layer']}:{row['phase']}" for row in uneven]
        even = {(r["layer"], r["phase"]): r for r in _rows(even_prof, zz, table, lpf, wanted)}
        picked = [even[(row["layer"], row["phase"])] for row in uneven]
        _rechecked(picked, layers, even_table, lpf, cache, save)
        for row, ev in zip(uneven, picked):
            row["divisors"] = ev
        result = judge(rows)
    if only:  # a subset of the layers: its totals are not the network's; only its rows are judged
        result["verdict"] = "PASS" if all(r["verdict"] in ACCEPTED for r in result["rows"]) else "FAIL"
    return {"model": model_name, "input_shape": list(input_shape), "mode": mode, "batch": batch, "table": table.name,
            "buffer_bytes": table.dataflow.buffer_bytes, "rf_words": list(table.dataflow.rf_per_operand),
            "array": [table.dataflow.array_rows, table.dataflow.array_cols], "unroll": list(table.dataflow.unroll),
            "lpf": lpf, "targets": {"layer": "energy and DRAM ±10 %, SRAM and RF ±25 %",
                                    "total": "energy ±5 %, each level within its layer target"},
            **result}


CSV_COLUMNS = ["layer", "phase", "verdict", "ratio_energy", "ratio_dram", "ratio_sram", "ratio_rf", "model_energy_pj",
               "zigzag_energy_pj", "model_dram_words", "zigzag_dram_words", "model_sram_words", "zigzag_sram_words",
               "model_rf_words", "zigzag_rf_words", "model_on_chip", "zigzag_on_chip", "placements_tried", "reason"]


def write_results(result: dict[str, Any], stem: str) -> tuple[Path, Path]:
    """``<stem>.json`` (everything) and ``<stem>.csv`` (one line per layer and phase), written atomically."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = RESULTS / f"{stem}.json", RESULTS / f"{stem}.csv"
    write_text(json_path, json.dumps(result, indent=1, allow_nan=False) + "\n")
    lines = [",".join(CSV_COLUMNS)]
    for r in result["rows"]:
        ratio = r["ratio"] or {}
        best = r["zigzag"]["best"] or {}
        vals = [r["layer"], r["phase"], r["verdict"],
                *(ratio.get(k) for k in ("energy_pj", "dram_words", "sram_words", "rf_words")),
                r["model"]["energy_pj"], best.get("energy_pj"), r["model"]["dram_words"], best.get("dram_words"),
                r["model"]["sram_words"], best.get("sram_words"), r["model"]["rf_words"], best.get("rf_words"),
                "+".join(r["model"]["on_chip"]), "+".join(best.get("on_chip", [])),
                len(r["zigzag"]["placements"]), r["reason"]]
        lines.append(",".join("" if v is None else (f"{v:.6g}" if isinstance(v, float) else _csv(str(v)))
                              for v in vals))
    write_text(csv_path, "\n".join(lines) + "\n")
    return json_path, csv_path


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if ("," in text or '"' in text) else text


def _fmt(v: float | None) -> str:
    return "  -  " if v is None else f"{v:5.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar_resnet20")
    ap.add_argument("--input", default=None, help="C,H,W (default: 3,32,32 for cifar_* models, else 3,224,224)")
    ap.add_argument("--mode", choices=("inference", "training"), default="training")
    ap.add_argument("--batch", default="1,16,128")
    ap.add_argument("--buffer", default="65536,262144,1048576", help="buffer sizes in bytes")
    ap.add_argument("--table", default="45nm")
    ap.add_argument("--lpf", type=int, default=7, help="ZigZag LOMA loop prime factor limit")
    ap.add_argument("--zigzag-only", action="store_true", help="only run ZigZag (fill the cache)")
    ap.add_argument("--only", default=None, help="layers (or layer:phase) to run, comma-separated (default: all)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="write ZigZag answers to this file instead of results/zigzag-cache.json (a parallel run); "
                         "both are read")
    args = ap.parse_args(argv)
    try:
        import six  # noqa: F401  (ZigZag needs it and does not declare it)
        import zigzag  # noqa: F401
    except ImportError as exc:
        print(f"bench_zigzag: ZigZag is not installed ({exc.name}); pip install -e '.[zigzag]'", file=sys.stderr)
        return 2
    logging.disable(logging.CRITICAL)
    shape = tuple(int(v) for v in (args.input or ("3,32,32" if args.model.startswith("cifar") else "3,224,224"))
                  .split(","))
    batches = [int(b) for b in args.batch.split(",")]
    buffers = [int(b) for b in args.buffer.split(",")]
    cache = _load_cache(args.cache)
    save = _saver(cache, args.cache or CACHE)
    summary = []
    try:
        for buffer in buffers:
            table = load_table(args.table).with_values({"buffer_bytes": buffer})
            for batch in batches:
                print(f"{args.model} {args.mode} batch {batch} buffer {buffer} lpf {args.lpf}", flush=True)
                t0 = time.perf_counter()
                only = args.only.split(",") if args.only else None
                if args.zigzag_only:
                    zigzag_side(args.model, shape, mode=args.mode, batch=batch, table=table, lpf=args.lpf,
                                cache=cache, save=save, log=lambda m: print(m, flush=True), only=only)
                    continue
                res = compare(args.model, shape, mode=args.mode, batch=batch, table=table, lpf=args.lpf,
                              cache=cache, save=save, log=lambda m: None, only=only)
                res["seconds"] = round(time.perf_counter() - t0, 1)
                res["only"] = only
                stem = f"zigzag-{args.model}-{args.mode}-b{batch}-{buffer // 1024}k" + (
                    f"-lpf{args.lpf}" if args.lpf != 7 else "") + ("-some" if only else "")
                paths = write_results(res, stem)
                for r in res["rows"]:
                    if r["verdict"] != "PASS":
                        ratio = r["ratio"] or {}
                        print(f"  {r['layer']:28s} {r['phase']:16s} {r['verdict']:9s} energy {_fmt(ratio.get('energy_pj'))}"
                              f" dram {_fmt(ratio.get('dram_words'))} sram {_fmt(ratio.get('sram_words'))} rf "
                              f"{_fmt(ratio.get('rf_words'))}  {r['reason']}")
                for phase, t in res["totals"].items():
                    print(f"  total {phase:16s} energy {_fmt(t['ratio']['energy_pj'])} dram {_fmt(t['ratio']['dram_words'])}"
                          f" sram {_fmt(t['ratio']['sram_words'])} rf {_fmt(t['ratio']['rf_words'])}; {t['PASS']} pass, "
                          f"{t['PLACEMENT']} placement, {t['BUFFER']} buffer, {t['EXPLAINED']} explained, {t['SEARCH']} search, {t['SPACE']} space, {t['UNEVEN']} uneven, {t['MISS']} miss, {t['FAIL']} fail"
                          f" of {t['layers']}; against ZigZag's search alone energy {_fmt(t['ratio_to_search']['energy_pj'])}"
                          f" dram {_fmt(t['ratio_to_search']['dram_words'])} sram {_fmt(t['ratio_to_search']['sram_words'])}")
                print(f"  verdict {res['verdict']}; wrote {paths[0].name} ({res['seconds']} s)", flush=True)
                summary.append({"batch": batch, "buffer_bytes": buffer, "verdict": res["verdict"],
                                "totals": res["totals"], "file": paths[0].name})
    finally:
        save(force=True)
    if summary and not args.only:  # merged into the settings already summarised (a new run replaces its own)
        name = f"zigzag-{args.model}-{args.mode}-summary" + (f"-lpf{args.lpf}" if args.lpf != 7 else "")
        path = RESULTS / f"{name}.json"
        done = {(s["batch"], s["buffer_bytes"]): s for s in (json.loads(path.read_text()) if path.is_file() else [])}
        done.update({(s["batch"], s["buffer_bytes"]): s for s in summary})
        write_text(path, json.dumps([done[k] for k in sorted(done)], indent=1) + "\n")
    return 0 if all(s["verdict"] == "PASS" for s in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())
