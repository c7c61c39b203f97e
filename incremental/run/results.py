"""A finished run's results: mean ± std over seeds, the report section, the CSV files and the console summary.

The terms are the field's: **Task-IL** accuracy (task-aware: the task is given) and **Class-IL** accuracy
(task-agnostic: predicted over the classes of every task learned so far). ``task_agnostic_accuracy`` is the
headline method's (``[agnostic] method``); every fitted method has its own entry under ``agnostic``.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from energymodel.atomic import write_text
from incremental.agnostic import METHODS
from incremental.evaluation.headline import headline
from incremental.evaluation.metrics import mean_std
from incremental.evaluation.rows import KINDS
from incremental.run.config import RunConfig

__all__ = ["aggregate", "write_csvs", "format_summary", "task_classes"]

KIND_NAMES = {"task_aware": "Task-IL (task-aware)", "task_agnostic": "Class-IL (task-agnostic)"}


def _stat(values: list[float | None]) -> dict[str, Any]:
    vals = [float("nan") if v is None else float(v) for v in values]
    mu, sd = mean_std(vals)
    return {"mean": mu, "std": sd, "values": vals}


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(vals) if vals else None


def _std(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.stdev(vals) if len(vals) > 1 else None


def aggregate(cfg: RunConfig, per_seed: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(summary, report)`` over seeds: mean ± std of every headline number, and the report section."""
    metrics = ["task_aware_accuracy", "task_agnostic_accuracy", "task_agnostic_uncalibrated_accuracy",
               "measured_train_seconds", "modelled_train_energy_pj"]
    summary: dict[str, Any] = {"seeds": [r["seed"] for r in per_seed], "strategies": {}}
    for name in cfg.strategies:
        rows = [r["strategies"][name] for r in per_seed]
        entry: dict[str, Any] = {m: _stat([r[m] for r in rows]) for m in metrics}
        for group in ("forgetting", "backward_transfer"):
            for k in KINDS:
                entry[f"{group}_{k}"] = _stat([r[group][k] for r in rows])
        for m in ("energy_pj", "macs", "storage_bytes", "data_storage_bytes", "statistics_bytes"):
            entry[m] = _stat([r["cost"].get(m) for r in rows])
        entry["agnostic_method"] = rows[0]["agnostic_method"]
        entry["agnostic"] = {
            m: {"accuracy": _stat([r["agnostic"][m]["accuracy"] for r in rows]),
                "forgetting": _stat([r["agnostic"][m]["forgetting"] for r in rows]),
                "backward_transfer": _stat([r["agnostic"][m]["backward_transfer"] for r in rows]),
                "storage_bytes": _stat([r["agnostic"][m]["storage_bytes"] for r in rows]),
                "energy_pj": _stat([(r["agnostic"][m]["cost"] or {}).get("energy_pj") for r in rows]),
                "validation_accuracy": _stat([r["agnostic"][m].get("validation_accuracy") for r in rows])}
            for m in rows[0]["agnostic"]}
        entry["share"] = {"values": [r["share"] for r in rows]}
        entry["old_tasks_unchanged"] = all(r["old_tasks_unchanged"] for r in rows)
        summary["strategies"][name] = entry
    shares = [r["sharing"]["share"] for r in per_seed]
    chosen = Counter(shares).most_common(1)[0][0]
    summary["chosen_share"] = {"mode": chosen, "values": shares}

    strategies = []
    for name in cfg.strategies:
        rows = [r["strategies"][name] for r in per_seed]
        share = Counter(r["share"] for r in rows).most_common(1)[0][0]
        frac = next(r["fraction"] for r in rows if r["share"] == share)
        strategies.append({
            "strategy": name, "share": share, "fraction": frac,
            **{f"{k}_accuracy": _mean([r[f"{k}_accuracy"] for r in rows]) for k in KINDS},
            "task_aware_accuracy_std": _std([r["task_aware_accuracy"] for r in rows]),
            "task_agnostic_accuracy_std": _std([r["task_agnostic_accuracy"] for r in rows]),
            **{f"{g}_{k}": _mean([r[g][k] for r in rows]) for g in ("forgetting", "backward_transfer")
               for k in ("task_aware", "task_agnostic")},
            "energy_pj": _mean([r["cost"]["energy_pj"] for r in rows]),
            **{f"{part}_energy_pj": _mean([(r["cost"].get(part) or {}).get("energy_pj") for r in rows])
               for part in ("search", "statistics", "calibration")},
            "inference_energy_pj": _mean([(r.get("inference") or [{}])[-1].get("energy_pj") for r in rows]),
            "macs": _mean([r["cost"]["macs"] for r in rows]),
            "storage_bytes": _mean([r["cost"]["storage_bytes"] for r in rows]),
            "measured_train_seconds": _mean([r["measured_train_seconds"] for r in rows]),
            "modelled_train_energy_pj": _mean([r["modelled_train_energy_pj"] for r in rows]),
            "agnostic_method": rows[0]["agnostic_method"],
            "agnostic": {m: {"accuracy": _mean([r["agnostic"][m]["accuracy"] for r in rows]),
                             "std": _std([r["agnostic"][m]["accuracy"] for r in rows]),
                             "validation": _mean([r["agnostic"][m].get("validation_accuracy") for r in rows]),
                             "storage_bytes": _mean([r["agnostic"][m]["storage_bytes"] for r in rows])}
                         for m in rows[0]["agnostic"]},
        })
    T = len(cfg.task_sizes)
    matrices = {}
    for name in cfg.strategies:
        for k in ("task_aware", "task_agnostic"):
            stack = np.array([[[np.nan if v is None else v for v in row]
                               for row in r["strategies"][name]["matrices"][k]["matrix"]] for r in per_seed],
                             dtype=float)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                avg = np.nanmean(stack, axis=0)
            matrices[f"{name} ({KIND_NAMES[k]})"] = {
                "tasks": [f"task {t}" for t in range(T)],
                "values": [[None if not math.isfinite(v) else float(v) for v in row] for row in avg.tolist()],
            }
    curve = []
    searches = [r["sharing"]["search"] for r in per_seed if r["sharing"]["search"] is not None]
    if searches:
        by_share: dict[int, list[dict[str, Any]]] = {}
        for s in searches:
            for row in s["curve"]:
                by_share.setdefault(int(row["share"]), []).append(row)
        for k in sorted(by_share):
            rows = by_share[k]
            curve.append({
                "share": k, "fraction": rows[0]["fraction"],
                "accuracy": _mean([r["accuracy"] for r in rows]),
                "energy_pj": _mean([r["energy_pj"] for r in rows]),
                "within_tolerance": Counter(bool(r["within_tolerance"]) for r in rows).most_common(1)[0][0],
            })
    timing: dict[str, list[dict[str, Any]]] = {}
    for r in per_seed:
        for row in r["timing"]:
            timing.setdefault(row["label"], []).append(row)
    timing_rows = [{"label": label, "measured_seconds": _mean([x["measured_seconds"] for x in rows]),
                    "modelled_macs": rows[0]["modelled_macs"], "modelled_energy_pj": rows[0]["modelled_energy_pj"]}
                   for label, rows in timing.items()]
    methods = list(per_seed[0]["strategies"][cfg.strategies[0]]["agnostic"]) if cfg.strategies else []
    all_methods = sorted({m for r in per_seed for st in r["strategies"].values() for m in st["agnostic"]},
                         key=list(METHODS).index)
    search_info = {
        "per_seed": [{"seed": r["seed"], "chosen": r["sharing"]["share"],
                      "reference_accuracy": (r["sharing"]["search"] or {}).get("reference_accuracy"),
                      "longer": (r["sharing"]["search"] or {}).get("longer"),
                      "warning": (r["sharing"]["search"] or {}).get("warning")} for r in per_seed],
        "oracle": [r["sharing"].get("oracle") for r in per_seed] if any(r["sharing"].get("oracle") for r in per_seed)
        else None,
    }
    summary["headline"] = headline(cfg, per_seed)
    refs = [r["references"] for r in per_seed if r.get("references")]
    if refs:
        summary["references"] = {
            "base_only": {m: {split: _stat([x["base_only"][m].get(split) for x in refs]) for split in refs[0]["base_only"][m]}
                          for m in refs[0]["base_only"]},
            "joint_trunk": {split: _stat([x["joint_trunk"].get(split) for x in refs])
                            for split in refs[0]["joint_trunk"] if split != "penalty"}}
    report = {"strategies": strategies, "matrices": matrices, "calibration_curve": curve, "chosen_share": chosen,
              "headline": summary["headline"], "references": summary.get("references"),
              "timing": timing_rows, "tolerance": cfg.search.tolerance,
              "agnostic_default": cfg.agnostic.method,
              "agnostic_methods": [{"method": m, "description": METHODS[m].description,
                                    "default": m == cfg.agnostic.method} for m in (all_methods or methods)],
              "search": search_info}
    return summary, report


def write_csvs(folder: Path, per_seed: list[dict[str, Any]]) -> None:
    """accuracy.csv, agnostic.csv, matrices.csv, calibration_curve.csv, costs.csv, timing.csv (one row per seed)."""
    acc, agn, mats, curve, costs, timing = [], [], [], [], [], []
    for r in per_seed:
        s = r["seed"]
        for name, st in r["strategies"].items():
            acc.append({
                "seed": s, "strategy": name, "share": st["share"], "fraction": st["fraction"],
                **{f"{k}_accuracy": st[f"{k}_accuracy"] for k in KINDS},
                "agnostic_method": st["agnostic_method"],
                **{f"forgetting_{k}": st["forgetting"][k] for k in KINDS},
                **{f"backward_transfer_{k}": st["backward_transfer"][k] for k in KINDS},
                "old_tasks_unchanged": st["old_tasks_unchanged"],
                "energy_pj": st["cost"]["energy_pj"], "macs": st["cost"]["macs"],
                "modelled_train_energy_pj": st["modelled_train_energy_pj"],
                "measured_train_seconds": st["measured_train_seconds"],
                "storage_bytes": st["cost"]["storage_bytes"], "data_storage_bytes": st["cost"]["data_storage_bytes"],
                "statistics_bytes": st["cost"].get("statistics_bytes"),
            })
            for m, e in st["agnostic"].items():
                agn.append({"seed": s, "strategy": name, "method": m, "accuracy": e["accuracy"],
                            "forgetting": e["forgetting"], "backward_transfer": e["backward_transfer"],
                            "storage_bytes": e["storage_bytes"],
                            "energy_pj": (e["cost"] or {}).get("energy_pj")})
                for i, row in enumerate(e["matrix"]):
                    for j, v in enumerate(row):
                        if v is not None:
                            mats.append({"seed": s, "strategy": name, "kind": f"agnostic:{m}", "after_task": i,
                                         "task": j, "accuracy": v})
            for k in KINDS:
                for i, row in enumerate(st["matrices"][k]["matrix"]):
                    for j, v in enumerate(row):
                        if v is not None:
                            mats.append({"seed": s, "strategy": name, "kind": k, "after_task": i, "task": j,
                                         "accuracy": v})
            for task in st["tasks"]:
                costs.append({"seed": s, "strategy": name, "task": task["task"], "share": task["share"],
                              "samples": task["samples"], "epochs": task["epochs"],
                              "used_old_data": task["used_old_data"], "cache_mode": task["cache_mode"],
                              "measured_train_seconds": task["train_seconds"],
                              **{k: v for k, v in task["cost"].items() if k not in ("share", "samples", "epochs")}})
        base_cost = r["base"]["cost"]
        costs.append({"seed": s, "strategy": "base", "task": 0, "share": 0, "samples": r["base"]["samples"],
                      "epochs": r["base"]["epochs"], "used_old_data": False, "cache_mode": "off",
                      "measured_train_seconds": r["base"]["train_seconds"],
                      **{k: v for k, v in base_cost.items() if k not in ("share", "samples", "epochs")}})
        if r["sharing"]["search"] is not None:
            for row in r["sharing"]["search"]["curve"]:
                curve.append({"seed": s, **row})
        for row in r["timing"]:
            timing.append({"seed": s, **row})
    for name, rows in (("accuracy.csv", acc), ("agnostic.csv", agn), ("matrices.csv", mats),
                       ("calibration_curve.csv", curve), ("costs.csv", costs), ("timing.csv", timing)):
        write_text(folder / name, pd.DataFrame(rows).to_csv(index=False))


def task_classes(order: list[int], sizes: list[int]) -> list[list[int]]:
    out, start = [], 0
    for s in sizes:
        out.append(order[start:start + s])
        start += s
    return out


# ---------------------------------------------------------------------------- console summary
def format_summary(results: dict[str, Any]) -> str:
    """A plain-text table of the headline numbers of a finished run (for the terminal)."""
    rep = results["report"]
    summ = results["summary"]["strategies"]
    seeds = results.get("seeds", [])
    multi = len(seeds) > 1
    lines = [f"run {results.get('name') or ''}  ({results['dataset']['name']}, {results['model']['name']}, "
             f"tasks {results['config']['tasks']}, seeds {seeds})"]
    head = results["summary"].get("headline")
    if head:
        lines += ["headline:"] + [f"  {sentence}" for sentence in head["text"]]
    per_seed = (rep.get("search") or {}).get("per_seed") or []
    if rep["calibration_curve"]:
        chosen = ", ".join(f"seed {p['seed']}: k={p['chosen']}" for p in per_seed)
        lines.append(f"sharing point chosen by the search: {chosen}")
        head = "seed-mean " if multi else ""
        lines.append(f"sharing-point search ({head}held-out Task-IL accuracy of the trial branches; modelled energy "
                     "of training the real branch):")
        for row in rep["calibration_curve"]:
            lines.append(f"    k={row['share']:<2d} fraction {row['fraction']:.2f}  accuracy {_pct(row['accuracy'])}"
                         f"  energy {_fmt_e(row['energy_pj'])}")
        for p in per_seed:
            if p.get("longer"):
                lines.append(f"  seed {p['seed']}: the first reference trial stayed at chance; trials were "
                             "retrained longer")
            if p.get("warning"):
                lines.append(f"  seed {p['seed']}: {p['warning']}")
    else:
        lines.append(f"sharing point: k={rep['chosen_share']} (fixed)")
    for oracle in (rep.get("search") or {}).get("oracle") or []:
        if oracle:
            lines.append(f"oracle (fully trained branches, Task-IL test accuracy): choice k={oracle['oracle_choice']}, "
                         f"search k={oracle['chosen']}, within tolerance: {oracle['chosen_within']}, deeper points "
                         f"missed: {oracle['deeper_missed'] or 'none'}")
    pm = " ± sd" if multi else ""
    lines.append(f"{'strategy':<20} {'k':>3} {'frac':>5} {'Task-IL' + pm:>15} {'Class-IL' + pm:>15} "
                 f"{'total energy':>12} {'of it training':>14} {'train time':>10}")
    marks = set((head or {}).get("at_chance") or [])
    for s in rep["strategies"]:
        e = summ[s["strategy"]]
        mark = " [at chance]" if s["strategy"] in marks else ""
        lines.append(f"{s['strategy']:<20} {s['share']:>3} {s['fraction']:>5.2f} "
                     f"{_pm(e['task_aware_accuracy'], multi):>15} {_pm(e['task_agnostic_accuracy'], multi):>15} "
                     f"{_fmt_e(s['energy_pj']):>12} {_fmt_e(s['modelled_train_energy_pj']):>14} "
                     f"{s['measured_train_seconds']:>9.1f}s{mark}")
    lines.append("total energy: training + sharing-point search + task-agnostic statistics + output calibration "
                 "(the common base network excluded)")
    methods = [m["method"] for m in rep.get("agnostic_methods", [])]
    if methods:
        lines.append(f"Class-IL accuracy by task-agnostic method (headline: {rep.get('agnostic_default')}; "
                     "single networks have one joint classifier):")
        lines.append(f"{'strategy':<20} " + " ".join(f"{m:>17}" for m in methods))
        for s in rep["strategies"]:
            agn = summ[s["strategy"]]["agnostic"]
            cells = [(_pm(agn[m]["accuracy"], multi) if m in agn else "-") for m in methods]
            lines.append(f"{s['strategy']:<20} " + " ".join(f"{c:>17}" for c in cells))
            val = [(_pm(agn[m]["validation_accuracy"], multi) if m in agn and "validation_accuracy" in agn[m]
                    else "-") for m in methods]
            if any(v not in ("-", "n/a") for v in val):
                lines.append(f"{'  (validation)':<20} " + " ".join(f"{c:>17}" for c in val))
    unchanged = [n for n, e in summ.items() if e["old_tasks_unchanged"]]
    lines.append(f"old tasks' logits bit-identical after later tasks: {', '.join(unchanged) or 'none'}")
    return "\n".join(lines) + "\n"


def _pm(stat: dict[str, Any], multi: bool) -> str:
    mu, sd = stat.get("mean"), stat.get("std")
    if mu is None or (isinstance(mu, float) and math.isnan(mu)):
        return "n/a"
    if multi and sd is not None and not (isinstance(sd, float) and math.isnan(sd)):
        return f"{100 * mu:.1f} ± {100 * sd:.1f}%"
    return f"{100 * mu:.1f}%"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _fmt_e(pj: float | None) -> str:
    if pj is None:
        return "n/a"
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("uJ", 1e6)):
        if pj >= scale:
            return f"{pj / scale:.3g} {unit}"
    return f"{pj:.3g} pJ"

