"""The engine section (an incremental-learning run's results) and the report's headline.

Accuracies use the field's words: Task-IL (task-aware: the task is given) and Class-IL (task-agnostic:
argmax over every class learned so far). Every key of the results is optional; what is absent is not shown.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pandas as pd

from energymodel.report.fmt import (
    cell,
    fmt_bytes,
    fmt_fraction,
    fmt_pct,
    fmt_pp,
    fmt_x,
    formatter_for,
    header,
    svg,
    table,
)
from energymodel.report.inputs import ENGINE_STRATEGY_COLUMNS
from energymodel.report.views import savings_at

#: the strategies table: accuracy (mean ± std over seeds), cost and storage, one row per strategy
_STRATEGY_COLUMNS = [
    ("strategy", "strategy"), ("share", "k"), ("fraction", "fraction"), ("task_aware_accuracy", "Task-IL accuracy"),
    ("task_agnostic_accuracy", "Class-IL accuracy"),
    ("task_agnostic_uncalibrated_accuracy", "Class-IL accuracy (uncalibrated)"),
    ("energy_pj", "total energy (whole lifecycle)"), ("modelled_train_energy_pj", "of it: training"),
    ("search_energy_pj", "search"), ("statistics_energy_pj", "task-agnostic statistics"),
    ("calibration_energy_pj", "output calibration"), ("inference_energy_pj", "energy per query after the last task"),
    ("storage_bytes", "storage"), ("measured_train_seconds", "training time"),
]
#: forgetting (Chaudhry et al. 2018) and backward transfer (Lopez-Paz & Ranzato 2017), in percentage points
_FORGETTING_COLUMNS = [
    ("strategy", "strategy"), ("forgetting_task_aware", "forgetting, Task-IL"),
    ("forgetting_task_agnostic", "forgetting, Class-IL"), ("backward_transfer_task_aware", "backward transfer, Task-IL"),
    ("backward_transfer_task_agnostic", "backward transfer, Class-IL"),
]
_SHOWN = {k for k, _ in _STRATEGY_COLUMNS + _FORGETTING_COLUMNS} | {"agnostic"}
#: the accuracy-matrix kinds shown first (the rest, e.g. one per prediction method, behind <details>)
_MAIN_KINDS = ("task-aware", "task-agnostic", "task-agnostic, calibrated")


def _kind(name: str) -> str:
    """``"partial-sharing (task-agnostic, calibrated)"`` -> ``"task-agnostic, calibrated"``."""
    return name[name.rfind("(") + 1:-1] if name.endswith(")") and "(" in name else ""


def _strategies(strategies: list[dict], default_method: str | None) -> dict[str, Any]:
    cols = [(k, h) for k, h in _STRATEGY_COLUMNS if any(r.get(k) is not None for r in strategies)]
    if any("agnostic" in r for r in strategies) and default_method:
        cols = [(k, f"Class-IL accuracy ({default_method})" if k == "task_agnostic_accuracy" else h) for k, h in cols]
    view: dict[str, Any] = {"table": table(strategies, cols)}
    fcols = [(k, h) for k, h in _FORGETTING_COLUMNS if any(r.get(k) is not None for r in strategies)]
    view["forgetting"] = table(strategies, fcols) if len(fcols) > 1 else None
    rest = [k for k in dict.fromkeys(k for r in strategies for k in r)
            if k not in _SHOWN and not (k.endswith("_std") and k.removesuffix("_std") in _SHOWN)]
    order = {k: i for i, k in enumerate(ENGINE_STRATEGY_COLUMNS)}
    rest.sort(key=lambda k: order.get(k, len(order)))
    long = [{"strategy": r.get("strategy"), "quantity": header(k), "value": r.get(k), "_key": k}
            for r in strategies for k in rest if k in r]
    view["other"] = {"headers": ["strategy", "quantity", "value"], "numeric": [False, False, True],
                     "rows": [[cell(x["strategy"], str), cell(x["quantity"], str),
                               cell(x["value"], formatter_for(x["_key"]))] for x in long]} if long else None
    return view


def _agnostic(strategies: list[dict], methods: list[dict], default: str | None) -> dict[str, Any] | None:
    """Class-IL accuracy of every task-agnostic prediction method (columns) for every strategy (rows)."""
    names = list(dict.fromkeys([m["method"] for m in methods] +
                               [k for r in strategies for k in (r.get("agnostic") or {})]))
    if not names:
        return None
    default = default or next((m["method"] for m in methods if m.get("default")), None)
    acc_rows, store_rows = [], []
    for r in strategies:
        ag = r.get("agnostic") or {}
        acc = {"strategy": r.get("strategy")}
        store = {"strategy": r.get("strategy")}
        for m in names:
            v = ag.get(m) or {}
            acc[m], acc[f"{m}_std"], store[m] = v.get("accuracy"), v.get("std"), v.get("storage_bytes")
        acc_rows.append(acc)
        store_rows.append(store)
    cols = [("strategy", "strategy")] + [(m, f"{m} (default)" if m == default else m) for m in names]
    described = [(m["method"] + (" (default)" if m["method"] == default else ""), m.get("description") or "")
                 for m in methods]
    val_rows = [{"strategy": r.get("strategy"), **{m: ((r.get("agnostic") or {}).get(m) or {}).get("validation")
                                                   for m in names}} for r in strategies]
    has_val = any(v is not None for row in val_rows for k, v in row.items() if k != "strategy")
    return {"accuracy": table(acc_rows, cols, {m: fmt_pct for m in names}),
            "validation": table(val_rows, cols, {m: fmt_pct for m in names}) if has_val else None,
            "storage": table(store_rows, cols, {m: fmt_bytes for m in names}), "methods": described}


def _references(refs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The references beside the strategies: the base network alone, and the joint classifier's cap."""
    if not refs:
        return None
    rows = []
    for method, splits in (refs.get("base_only") or {}).items():
        rows.append({"reference": f"base network only ({method})", **{k: (v or {}).get("mean")
                                                                         for k, v in splits.items()}})
    if refs.get("joint_trunk"):
        rows.append({"reference": "joint classifier on the frozen trunk (trained on every task's images at once)",
                     **{k: (v or {}).get("mean") for k, v in refs["joint_trunk"].items()}})
    cols = [("reference", "reference")] + [(k, f"Class-IL ({k})") for k in ("test", "validation")
                                           if any(k in r for r in rows)]
    return table(rows, cols, {"test": fmt_pct, "validation": fmt_pct})


def _matrices(mats: dict[str, dict]) -> dict[str, list]:
    from energymodel.report.plots import matrix_heatmap

    views = [{"name": n, "kind": _kind(n), "svg": svg(matrix_heatmap(n, m.get("tasks", []), m["values"]))}
             for n, m in mats.items() if m.get("values")]
    main = [v for v in views if v["kind"] in _MAIN_KINDS] or views
    return {"main": main, "other": [v for v in views if v not in main]}


def _search(engine: dict[str, Any]) -> dict[str, Any] | None:
    from energymodel.report.plots import calibration_plot

    curve = engine.get("calibration_curve") or []
    search = engine.get("search") or {}
    oracle = search.get("oracle") or []
    per_seed = search.get("per_seed") or []
    if not (curve or oracle or per_seed):
        return None
    view: dict[str, Any] = {"svg": None, "curve": None, "per_seed": None, "oracle": None}
    if curve or oracle:
        view["svg"] = svg(calibration_plot(curve, engine.get("chosen_share"), oracle=oracle or None))
    if curve:
        cols = [("share", "k"), ("fraction", "fraction"), ("accuracy", "validation accuracy (Task-IL)"),
                ("energy_pj", "training energy"), ("within_tolerance", "within tolerance")]
        view["curve"] = table(curve, [(k, h) for k, h in cols if any(k in r for r in curve)])
    if per_seed:
        cols = [("seed", "seed"), ("chosen", "chosen k"), ("reference_accuracy", "reference accuracy (k = 0)"),
                ("warning", "warning")]
        view["per_seed"] = table(per_seed, [(k, h) for k, h in cols if any(k in r for r in per_seed)])
    if oracle:
        view["oracle"] = table(oracle, [("share", "k"), ("accuracy", "test accuracy (Task-IL)"),
                                        ("energy_pj", "training energy")])
    return view


def engine_view(engine: dict[str, Any]) -> dict[str, Any]:
    """The engine section: strategies (accuracy ± std, forgetting, cost), prediction methods, accuracy
    matrices on one 0-100 % scale, the sharing-point search, and measured vs modelled time."""
    from energymodel.report.plots import strategies_plot, timing_plot

    view: dict[str, Any] = {"strategies": None, "strategies_plot": None, "agnostic": None, "references": None,
                            "matrices": {"main": [], "other": []}, "search": None, "chosen_share": None,
                            "tolerance": None, "timing": None, "extra": None}
    strategies = engine.get("strategies")
    default = engine.get("agnostic_default")
    if strategies:
        view["strategies"] = _strategies(strategies, default)
        view["strategies_plot"] = svg(strategies_plot(strategies))
        view["agnostic"] = _agnostic(strategies, engine.get("agnostic_methods") or [], default)
    view["references"] = _references(engine.get("references"))
    view["matrices"] = _matrices(engine.get("matrices") or {})
    view["search"] = _search(engine)
    if engine.get("chosen_share") is not None:
        view["chosen_share"] = engine["chosen_share"]
    if engine.get("tolerance") is not None:
        view["tolerance"] = fmt_pp(engine["tolerance"])
    timing = engine.get("timing")
    if timing:
        rows = [{"#": i + 1, **r} for i, r in enumerate(timing)]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        view["timing"] = {"svg": svg(timing_plot(timing)), "table": table(rows, [(k, header(k)) for k in keys])}
    if engine.get("extra"):
        view["extra"] = json.dumps(engine["extra"], indent=2, default=str, allow_nan=True)[:20000]
    return view


# -- the headline -----------------------------------------------------------------------------------------


def deepest_within_tolerance(engine: dict[str, Any]) -> int | None:
    """The deepest sharing point whose accuracy is within the search's tolerance of no sharing.

    From the search curve (``max k`` with ``within_tolerance``), else the per-seed choices (the most
    frequent; ties to the shallower, i.e. the safer, point), else ``chosen_share``; None without a search.
    """
    curve = [r for r in engine.get("calibration_curve") or [] if r.get("within_tolerance") is True]
    if curve:
        return max(int(r["share"]) for r in curve)
    chosen = [int(r["chosen"]) for r in (engine.get("search") or {}).get("per_seed") or []
              if isinstance(r.get("chosen"), int)]
    if chosen:
        counts = Counter(chosen)
        top = max(counts.values())
        return min(k for k, n in counts.items() if n == top)
    cs = engine.get("chosen_share")
    return int(cs) if cs is not None else None


def _row(strategies: list[dict], name: str) -> dict | None:
    return next((r for r in strategies if r.get("strategy") == name), None)


def _ratio(a: Any, b: Any) -> float | None:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    return a / b if a > 0 and b > 0 else None


def headline(engine: dict[str, Any] | None, compare: pd.DataFrame | None) -> dict[str, Any] | None:
    """What the report shows, first: a run's own headline when the engine results carry one (the whole
    lifecycle's totals, Class-IL, amortisation, chance); else one sentence on the deepest sharing point within
    the accuracy tolerance and its training-energy savings (labelled so), or, without an accuracy
    measurement, the range of savings and why no point is chosen."""
    engine = engine or {}
    run = engine.get("headline")
    if run and run.get("text"):  # the run's own whole-lifecycle headline (incremental.evaluation.headline)
        return {"kind": "lifecycle", "share": (run.get("share") or {}).get("k"), "sentences": list(run["text"]),
                "text": " ".join(run["text"]), "at_chance": bool(run.get("at_chance")),
                "claims_saving": bool(run.get("claims_saving"))}
    k = deepest_within_tolerance(engine)
    strategies = engine.get("strategies") or []
    if k is None:
        if compare is None or not len(compare):
            return None
        ps = compare[compare["strategy"] == "partial-sharing"].sort_values("share")
        if len(ps) < 2 or "savings_energy_vs_regular" not in ps:
            return None
        lo, hi = ps.iloc[1], ps.iloc[-1]
        return _shown({"kind": "span", "text": (
            f"Training-energy savings of clone-and-branch over regular incremental learning grow with the "
            f"sharing point, from {fmt_x(lo['savings_energy_vs_regular'])} at k = {int(lo['share'])} to "
            f"{fmt_x(hi['savings_energy_vs_regular'])} at k = {int(hi['share'])} (fraction "
            f"{fmt_fraction(hi['fraction'])}). Which point keeps accuracy needs a training run: "
            "this report has no accuracy measurement, so it names no sharing point.")})
    sav = savings_at(compare, k) or {}
    ps = _row(strategies, "partial-sharing")
    if ps is not None and ps.get("share") == k:
        e = ps.get("modelled_train_energy_pj")
        if sav.get("fraction") is None:
            sav["fraction"] = ps.get("fraction")
        if sav.get("vs_regular") is None:
            sav["vs_regular"] = _ratio((_row(strategies, "regular-incremental") or {}).get(
                "modelled_train_energy_pj"), e)
        if sav.get("vs_retraining") is None:
            sav["vs_retraining"] = _ratio((_row(strategies, "full-retraining") or {}).get(
                "modelled_train_energy_pj"), e)
    tol = engine.get("tolerance")
    within = f"within {fmt_pp(tol)} of no sharing" if tol is not None else "within the search's accuracy tolerance"
    where = f"k = {k}"
    if sav.get("fraction") is not None:
        where += f" (fraction {fmt_fraction(sav['fraction'])}"
        where += f", shared through {sav['after']})" if sav.get("after") else ")"
    parts = []
    if sav.get("vs_regular") is not None:
        parts.append(f"{fmt_x(sav['vs_regular'])} less training energy than regular incremental learning")
    if sav.get("vs_retraining") is not None:
        parts.append(f"{fmt_x(sav['vs_retraining'])} less than full retraining")
    text = f"Deepest sharing point with accuracy {within}: {where}"
    text += (" — " + ", ".join(parts) + ".") if parts else "."
    if ps is not None and ps.get("share") == k and ps.get("task_aware_accuracy") is not None:
        reg = _row(strategies, "regular-incremental") or {}
        text += f" Task-IL accuracy {fmt_pct(ps.get('task_aware_accuracy'), ps.get('task_aware_accuracy_std'))}"
        if reg.get("task_aware_accuracy") is not None:
            text += (f" (regular incremental: "
                     f"{fmt_pct(reg.get('task_aware_accuracy'), reg.get('task_aware_accuracy_std'))})")
        text += "."
    return _shown({"kind": "chosen", "share": k, "text": text})


def _shown(head: dict[str, Any]) -> dict[str, Any]:
    """Every headline carries the same keys (the template reads them all): a training-energy sentence has
    one sentence, is not at chance and claims whatever saving it states."""
    return {"share": None, "sentences": [head["text"]], "at_chance": False, "claims_saving": True, **head}
