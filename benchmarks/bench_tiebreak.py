"""How well the tie-break among DRAM-equal tilings does against pricing every tie, and what it costs in time.

For each tiled phase of the residency plan ``profile()`` builds, every tiling with its fewest DRAM words
(``tied_tilings``) is priced by its loop nest; the figure is the on-chip cost (``sram_weight · SRAM + RF``
words) of the tiling the model runs (one priced per innermost loop and ``(N, K, C)`` tile,
``energymodel.memory.levels.phase_words``) over the cheapest of all the ties, and of the largest tile (the
choice before the tie-break) over that cheapest. Also: ``profile()`` time cold (fresh caches) and warm.

    python benchmarks/bench_tiebreak.py [--model resnet18] [--batch 1] [--buffer 1048576] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, parse_shape  # noqa: E402
from energymodel.analysis.profile import profile  # noqa: E402
from energymodel.count.phases import count  # noqa: E402
from energymodel.count.trace import trace  # noqa: E402
from energymodel.memory import levels, loopnest, tiling  # noqa: E402
from energymodel.memory.residency import plan  # noqa: E402
from energymodel.models.zoo import build  # noqa: E402
from energymodel.price.table import load_table  # noqa: E402


def _clear() -> None:
    for fn in (tiling.tied_tilings, tiling.phase_traffic, levels._tiling, loopnest.loop_order):
        fn.cache_clear()


def measure(model: str, shape: tuple[int, ...], batch: int, buffer: int, mode: str = "training") -> dict:
    table = load_table("45nm").with_values({"buffer_bytes": buffer})
    net = build(model)
    _clear()
    t0 = time.perf_counter()
    profile(net, shape, batch=batch, mode=mode, table=table, warn=False)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    profile(net, shape, batch=batch, mode=mode, table=table, warn=False)
    warm = time.perf_counter() - t0
    counts = count(trace(net, shape, mode=mode), batch=batch, warn=False)
    array = table.dataflow.array()
    res = plan(counts, word_bits=table.word_bits, buffer_bytes=table.dataflow.buffer_bytes, array=array)
    shapes = {tl.layer: tl.shape for tl in counts.tiled}
    written = dict(levels.PHASES)
    rows, seen = [], set()
    for layer, phases in res.tiled.items():
        for phase, pw in phases.items():
            homes = tuple("sram" if r else "dram" for r in pw.resident)
            key = (shapes[layer], phase, homes, pw.buffer_words)
            if key in seen:
                continue
            seen.add(key)
            ties = tiling.tied_tilings(shapes[layer], written[phase], homes, pw.buffer_words, array.lanes, every=True)
            costs = []
            for pt in ties:
                w = levels.tiling_words(shapes[layer], written[phase], pt, array)
                costs.append(array.sram_weight * sum(w.array.sram) + sum(w.array.rf))
            run = array.sram_weight * sum(pw.array.sram) + sum(pw.array.rf)
            rows.append({"layer": str(counts.layers["name"].iat[layer]), "phase": phase, "ties": len(ties),
                         "run_vs_cheapest": run / min(costs), "largest_vs_cheapest": costs[0] / min(costs)})
    ratio = [r["run_vs_cheapest"] for r in rows]
    largest = [r["largest_vs_cheapest"] for r in rows]
    return {"model": model, "batch": batch, "buffer_bytes": buffer, "mode": mode, "phases": len(rows),
            "ties_mean": statistics.mean(r["ties"] for r in rows) if rows else 0.0,
            "run_vs_cheapest_mean": statistics.mean(ratio) if rows else 1.0, "run_vs_cheapest_max": max(ratio, default=1.0),
            "largest_vs_cheapest_mean": statistics.mean(largest) if rows else 1.0,
            "largest_vs_cheapest_max": max(largest, default=1.0),
            "profile_cold_s": round(cold, 3), "profile_warm_s": round(warm, 3), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18,resnet50")
    ap.add_argument("--input", default=None, help="C,H,W (default: 3,32,32 for cifar_* models, else 3,224,224)")
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--buffer", default="65536,1048576")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    out = {"machine": machine(), "runs": []}
    warnings.simplefilter("ignore")
    for model in args.model.split(","):
        shape = parse_shape(args.input or ("3,32,32" if model.startswith("cifar") else "3,224,224"))
        for batch in (int(b) for b in args.batch.split(",")):
            for buffer in (int(b) for b in args.buffer.split(",")):
                r = measure(model, shape, batch, buffer)
                out["runs"].append(r)
                print(f"{model} batch {batch} buffer {buffer}: {r['phases']} phases, {r['ties_mean']:.0f} ties each on "
                      f"average; run/cheapest {r['run_vs_cheapest_mean']:.4f} (max {r['run_vs_cheapest_max']:.3f}), "
                      f"largest/cheapest {r['largest_vs_cheapest_mean']:.4f} (max {r['largest_vs_cheapest_max']:.3f}); "
                      f"profile cold {r['profile_cold_s']:.2f} s, warm {r['profile_warm_s']:.2f} s", flush=True)
    if args.json:
        from energymodel.atomic import write_text
        write_text(args.json, json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
