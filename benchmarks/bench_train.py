"""Measured vs modelled cost of training a branch at every sharing point, with and without feature caching.

For each sharing point ``k`` (0 = full fine-tuning of a clone .. n = head only) a fresh branch of the
model is trained with :func:`incremental.train.loop.fit_branch` on random data for ``--epochs`` epochs, once
with the frozen prefix's features cached (``cache_features=on``) and once without (``off``; at ``k = 0``
there is no prefix, so one run serves both); every configuration ``--repeats`` times, the repeats
interleaved across configurations. Measured: wall seconds per epoch on this machine, the median of the
epochs after ``--warmup`` over all repeats; with caching the one-off feature pass is added, so a run costs
``feature_seconds + epochs * median_epoch`` -- the same work the model prices
(:func:`energymodel.analysis.sharing.training_cost` with ``cache_prefix`` matching: prefix once per sample, the rest
every epoch). Speed-ups are relative to ``k = 0``.

Targets (each point is reported PASS or MISS, nothing adjusted):

(a) caching on: measured speed-up >= modelled MAC speed-up (caching saves what the model says, or more);
(b) caching off: the modelled MAC ratio ``macs_k / macs_0`` lies within 20% of the measured time ratio
    ``t_k / t_0`` (``|modelled - measured| / measured <= 0.2``).

Energy is measured per run with :func:`incremental.train.energy_meter.best_meter` (NVML on a GPU); on a CPU-only
machine the JSON says ``"energy_meter": "none available"``. The JSON (``--out``) is the report's
"measured" section format (:func:`energymodel.report.measured_section`) plus extra fields.

    python benchmarks/bench_train.py                                   # smallcnn, 1x28x28, 4096 samples
    python benchmarks/bench_train.py --model cifar_resnet20 --input 3,32,32 --samples 2048
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import NUM_CLASSES, grown_with_branch, machine, num_blocks, parse_shape, random_data  # noqa: E402
from energymodel.analysis.points import sharing_points
from energymodel.analysis.sharing import training_cost  # noqa: E402
from energymodel.atomic import write_text  # noqa: E402
from energymodel.models.zoo import build, get_entry  # noqa: E402
from incremental.train.config import TrainConfig, resolve_device
from incremental.train.energy_meter import NO_METER, NullMeter, best_meter  # noqa: E402
from incremental.train.loop import fit_branch  # noqa: E402

TOLERANCE = 0.2


def run_point(args: argparse.Namespace, data, share: int, cache: str, meter) -> dict:
    """Train one branch once; return its measured figures."""
    grown, task = grown_with_branch(args.model, share, seed=args.seed)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, optimizer=args.optimizer,
                      weight_decay=args.weight_decay, seed=args.seed, device=args.device, cache_features=cache,
                      progress=False, lr_schedule="none")
    meter.start()
    t0 = time.perf_counter()
    res = fit_branch(grown, task, data, cfg, desc=f"k={share} cache={cache}")
    wall = time.perf_counter() - t0
    joules = meter.stop()
    return {"epoch_seconds": res.epoch_seconds, "feature_seconds": res.feature_seconds, "wall_seconds": wall,
            "cache_mode": res.cache_mode, "joules": joules}


def combine(args: argparse.Namespace, reps: list[dict]) -> dict:
    """Figures of one configuration from its repeats: median of every timed epoch, median feature pass."""
    timed = [s for r in reps for s in (r["epoch_seconds"][args.warmup:] or r["epoch_seconds"])]
    median = statistics.median(timed)
    feature = statistics.median(r["feature_seconds"] for r in reps)
    joules = [r["joules"] for r in reps]
    return {"median_epoch_seconds": median, "feature_seconds": feature,
            "total_seconds": feature + args.epochs * median,
            "epoch_seconds": [r["epoch_seconds"] for r in reps] if len(reps) > 1 else reps[0]["epoch_seconds"],
            "wall_seconds": [r["wall_seconds"] for r in reps] if len(reps) > 1 else reps[0]["wall_seconds"],
            "cache_mode": reps[0]["cache_mode"],
            "measured_joules": None if any(j is None for j in joules) else statistics.median(joules)}


def modelled(args: argparse.Namespace, shape, share: int, cache: bool) -> dict:
    c = training_cost(build(args.model, num_classes=NUM_CLASSES), shape, share=share, samples=args.samples,
                      epochs=args.epochs, batch=args.batch, optimizer=args.optimizer, num_classes=NUM_CLASSES,
                      table=args.table, cache_prefix=cache, weight_decay=args.weight_decay > 0)
    return {"macs": c.macs, "energy_pj": c.energy_pj, "training_memory_bytes": c.training_memory_bytes}


def verdict(row: dict) -> tuple[str, str]:
    """(target text, PASS/MISS/-) of one row."""
    if row["share"] == 0:
        return "baseline", "-"
    if row["cache"] == "on":
        ok = row["speedup_measured"] >= row["speedup_modelled_macs"]
        return f"(a) meas {row['speedup_measured']:.2f}x >= model {row['speedup_modelled_macs']:.2f}x", \
            "PASS" if ok else "MISS"
    err = row["modelled_ratio_error"]
    return f"(b) |model/meas - 1| = {err:.0%} <= {TOLERANCE:.0%}", "PASS" if err <= TOLERANCE else "MISS"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smallcnn")
    ap.add_argument("--input", default=None, help="C,H,W (default: the zoo entry's input shape)")
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (the first --warmup are not timed)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2,
                    help="runs per configuration, interleaved across configurations (figures: medians)")
    ap.add_argument("--shares", default="all", help="comma-separated sharing points, or 'all'")
    ap.add_argument("--optimizer", default="momentum", choices=["sgd", "momentum", "adam"])
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--table", default="45nm", help="energy table of the model")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (0: torch's default); 1 keeps timings steady on a small shared CPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/bench/measured.json")
    args = ap.parse_args(argv)
    if args.epochs <= args.warmup:
        ap.error("--epochs must exceed --warmup")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = parse_shape(args.input) if args.input else get_entry(args.model).input_shape
    n = num_blocks(args.model)
    shares = list(range(n + 1)) if args.shares == "all" else sorted({int(s) for s in args.shares.split(",")} | {0})
    if shares[-1] > n:
        ap.error(f"sharing point {shares[-1]} out of range 0..{n}")
    points = {p.index: p for p in sharing_points(build(args.model, num_classes=NUM_CLASSES), shape)}
    data = random_data(args.samples, shape, seed=args.seed)
    device = resolve_device(args.device)
    meter = best_meter(device)
    print(f"# {args.model} {shape}, {args.samples} samples, batch {args.batch}, {args.epochs} epochs "
          f"x {args.repeats} interleaved repeats (median of the epochs after {args.warmup} warm-up), {args.optimizer}, device {device}")
    print(f"# machine: {machine()}")
    print(f"# energy meter: {meter.describe()}")

    load_before = os.getloadavg()
    runs: list[tuple[int, str]] = [(k, c) for k in shares for c in (("off",) if k == 0 else ("on", "off"))]
    rows: list[dict] = []
    base: dict | None = None
    measured: dict[tuple[int, str], list[dict]] = {r: [] for r in runs}
    for rep in range(args.repeats):  # interleaved, alternating order: drift and load hit every point alike
        for k, cache in (runs if rep % 2 == 0 else runs[::-1]):
            measured[(k, cache)].append(run_point(args, data, k, cache, meter))
            if args.repeats > 1:
                print(f"  repeat {rep + 1}/{args.repeats} k={k} cache={cache}: "
                      f"{measured[(k, cache)][-1]['wall_seconds']:.2f} s", flush=True)
    for k, cache in runs:
        m = combine(args, measured[(k, cache)])
        mod = modelled(args, shape, k, cache == "on")
        label = "k=0 full fine-tune" if k == 0 else f"k={k} {'cached' if cache == 'on' else 'uncached'}"
        row = {"label": label, "share": k, "after": points[k].after, "fraction": points[k].fraction, "cache": cache,
               "measured_seconds_per_epoch": m["total_seconds"] / args.epochs, **m,
               "modelled_macs": mod["macs"], "modelled_energy_pj": mod["energy_pj"],
               "modelled_training_memory_bytes": mod["training_memory_bytes"]}
        if base is None:
            base = row
        row["speedup_measured"] = base["total_seconds"] / row["total_seconds"]
        row["speedup_modelled_macs"] = base["modelled_macs"] / row["modelled_macs"]
        row["speedup_modelled_energy"] = base["modelled_energy_pj"] / row["modelled_energy_pj"]
        meas_ratio = 1.0 / row["speedup_measured"]
        row["measured_ratio"] = meas_ratio
        row["modelled_mac_ratio"] = 1.0 / row["speedup_modelled_macs"]
        row["modelled_energy_ratio"] = 1.0 / row["speedup_modelled_energy"]
        row["modelled_ratio_error"] = abs(row["modelled_mac_ratio"] - meas_ratio) / meas_ratio
        row["modelled_energy_ratio_error"] = abs(row["modelled_energy_ratio"] - meas_ratio) / meas_ratio
        row["target"], row["verdict"] = verdict(row)
        rows.append(row)
        print(f"  {label:<20} {row['measured_seconds_per_epoch']:7.3f} s/epoch  {row['target']}  {row['verdict']}",
              flush=True)

    print()
    head = (f"{'run':<20} {'frac':>5} {'s/epoch':>8} {'feat s':>7} {'meas x':>7} {'MACs x':>7} {'energy x':>8} "
            f"{'meas r':>7} {'MAC r':>7} {'err':>5}  verdict")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['label']:<20} {r['fraction']:5.2f} {r['median_epoch_seconds']:8.3f} {r['feature_seconds']:7.3f} "
              f"{r['speedup_measured']:7.2f} {r['speedup_modelled_macs']:7.2f} {r['speedup_modelled_energy']:8.2f} "
              f"{r['measured_ratio']:7.3f} {r['modelled_mac_ratio']:7.3f} {r['modelled_ratio_error']:5.0%}  "
              f"{r['verdict']}")
    summary = {}
    for key, cache, text in (("a", "on", "caching on: measured speed-up >= modelled MAC speed-up"),
                             ("b", "off", f"caching off: modelled MAC ratio within {TOLERANCE:.0%} of measured")):
        rs = [r for r in rows if r["share"] > 0 and r["cache"] == cache]
        passed = [r["share"] for r in rs if r["verdict"] == "PASS"]
        missed = [r["share"] for r in rs if r["verdict"] == "MISS"]
        summary[key] = {"target": text, "pass": passed, "miss": missed, "holds": bool(rs) and not missed}
        print(f"target ({key}) {text}: {len(passed)}/{len(rs)} PASS" + (f"; MISS at k={missed}" if missed else ""))

    out: dict = {"machine": machine(), "rows": rows, "benchmark": "bench_train",
                 "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"input_shape": list(shape),
                                                                                     "device": str(device)},
                 "targets": summary, "tolerance": TOLERANCE,
                 "load_average": {"before": list(load_before), "after": list(os.getloadavg())}}
    if isinstance(meter, NullMeter):
        out["energy_meter"] = NO_METER
        out["energy_meter_reason"] = meter.describe()
    else:
        out["nvml"] = {r["label"]: {"joules": r["measured_joules"],
                                    "modelled_joules": r["modelled_energy_pj"] * 1e-12} for r in rows}
        out["nvml"]["meter"] = meter.describe()
    path = write_text(args.out, json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
