"""The headline of a run: what a reader takes away, from the whole lifecycle's ledger.

Every strategy's energy is its **whole lifecycle** after the common base network (which every strategy starts
from, so it is left out of every total): training, the sharing-point search's trial branches, the task-agnostic
statistics (passes, arithmetic, DRAM traffic) and the output-calibration passes. Ratios are
``baseline total / partial sharing total`` (> 1: partial sharing is cheaper); training-only ratios come second,
labelled as such.

**Chance.** An accuracy ``a`` on ``n`` test images is clearly above chance ``p`` when
``a >= p + Z sqrt(p (1 - p) / n)`` with ``Z = 3`` (:func:`incremental.search.sharing_point.above_chance`, the
search's binomial test); Class-IL's chance is ``1 / C`` over all ``C`` classes, Task-IL's the mean over tasks of
``1 / C_t``. A headline accuracy that is not clearly above chance is marked, and no saving is claimed.

**Amortisation** (against regular incremental learning, the baseline that learns task by task like partial
sharing): the search ``S`` is paid once; every further task costs ``P`` (partial sharing: training + statistics +
calibration) or ``R`` (regular incremental), the per-task means of this run. After ``n`` tasks the total ratio is
``n R / (S + n P)``; it passes 1 (break-even) at ``n = S / (R - P)`` and tends to ``R / P`` — below the
training-only ratio ``R_train / P_train`` whenever statistics and calibration cost both strategies alike. The
headline gives the tasks after which the total ratio reaches 90 % of the training-only ratio (None when it never
does), and, for one task, the epochs per task at which it does: with training linear in epochs ``e``
(``P(e) = P_0 + e p``, ``R(e) = R_0 + e r``, ``rho = r / p``), ``e = (0.9 rho (S + P_0) - R_0) / (0.1 r)``.
``docs/engine.md`` ("The headline") works an example by hand.
"""

from __future__ import annotations

import math
from typing import Any

from incremental.search.sharing_point import above_chance

__all__ = ["headline", "amortisation", "TARGET_SHARE"]

#: the share of the training-only ratio that the amortisation figures are reported against
TARGET_SHARE = 0.9
_STRATEGIES = ("partial-sharing", "regular-incremental", "full-retraining")


def _mean(values: list[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None


def _part(cost: dict[str, Any], name: str) -> float:
    return float((cost.get(name) or {}).get("energy_pj", 0.0) or 0.0)


def amortisation(search_pj: float, ps: dict[str, float], reg: dict[str, float], epochs: int, tasks: int
                 ) -> dict[str, Any]:
    """The amortisation figures (module docstring) from per-task costs ``{"training", "other"}`` (pJ) of partial
    sharing (``ps``) and regular incremental learning (``reg``), ``epochs`` per task and ``tasks`` learned."""
    p, r = ps["training"] + ps["other"], reg["training"] + reg["other"]
    training_ratio = reg["training"] / ps["training"] if ps["training"] > 0 else None
    out: dict[str, Any] = {"search_pj": search_pj, "per_task_pj": {"partial-sharing": p, "regular-incremental": r},
                           "training_ratio": training_ratio, "asymptotic_ratio": r / p if p > 0 else None,
                           "ratio_after_tasks": {str(n): n * r / (search_pj + n * p) for n in (1, 2, 5, 10, 100)
                                                 if search_pj + n * p > 0},
                           "break_even_tasks": None, "tasks_to_target": None, "epochs_to_target": None,
                           "target_share": TARGET_SHARE, "tasks_learned": tasks, "epochs": epochs}
    if r > p:
        out["break_even_tasks"] = max(1, math.ceil(search_pj / (r - p) - 1e-12))
    if training_ratio is not None:
        goal = TARGET_SHARE * training_ratio
        if r - goal * p > 0:
            out["tasks_to_target"] = max(1, math.ceil(goal * search_pj / (r - goal * p) - 1e-12))
        rate_p, rate_r = ps["training"] / epochs, reg["training"] / epochs
        if rate_r > 0 and rate_p > 0:
            rho = rate_r / rate_p
            e = (TARGET_SHARE * rho * (search_pj + ps["other"]) - reg["other"]) / ((1 - TARGET_SHARE) * rate_r)
            out["epochs_to_target"] = max(1, math.ceil(e - 1e-9))
    return out


def headline(cfg: Any, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline record of a run (``summary.headline`` in ``results.json``) and its sentences (``text``)."""
    names = [n for n in _STRATEGIES if n in cfg.strategies]
    rows = {n: [r["strategies"][n] for r in per_seed] for n in cfg.strategies}
    sizes = cfg.task_sizes
    test_images = sum(per_seed[0]["sizes"]["test"])
    chance = {"class_il": 1.0 / sum(sizes), "task_il": sum(1.0 / c for c in sizes) / len(sizes)}

    def acc(name: str, kind: str) -> dict[str, Any]:
        vals = [r[f"{kind}_accuracy"] for r in rows[name]]
        mean = _mean(vals)
        key = "class_il" if kind == "task_agnostic" else "task_il"
        ok = mean is not None and above_chance(mean, sum(sizes), test_images, chance=chance[key])
        sd = [v for v in vals if v is not None]
        std = (sum((v - mean) ** 2 for v in sd) / (len(sd) - 1)) ** 0.5 if mean is not None and len(sd) > 1 else None
        return {"mean": mean, "std": std, "above_chance": bool(ok)}

    out: dict[str, Any] = {"method": cfg.agnostic.method, "chance": chance, "test_images": test_images,
                           "class_il": {n: acc(n, "task_agnostic") for n in cfg.strategies},
                           "task_il": {n: acc(n, "task_aware") for n in cfg.strategies}}
    first = per_seed[0]["sharing"]
    shares = [r["sharing"]["share"] for r in per_seed]
    out["share"] = {"k": max(set(shares), key=shares.count), "values": shares, "after": first.get("after"),
                    "fraction": first.get("fraction"), "mode": first.get("mode")}
    refs = [r.get("references") for r in per_seed if r.get("references")]
    if refs:
        out["references"] = {
            "base_only": {m: _mean([x["base_only"][m]["test"] for x in refs]) for m in refs[0]["base_only"]},
            "joint_trunk": _mean([x["joint_trunk"]["test"] for x in refs])}
    total = {n: _mean([r["cost"]["energy_pj"] for r in rows[n]]) for n in cfg.strategies}
    training = {n: _mean([r["cost"]["training"]["energy_pj"] for r in rows[n]]) for n in cfg.strategies}
    out["energy_pj"] = {"total": total, "training": training}
    ps = "partial-sharing"

    def ratios(values: dict[str, float | None]) -> dict[str, float | None]:
        base = values.get(ps)
        return {f"vs_{short}": (values[n] / base if base and values.get(n) else None)
                for n, short in (("regular-incremental", "regular"), ("full-retraining", "retraining"))
                if n in values}

    out["ratio_total"] = ratios(total) if ps in total else {}
    out["ratio_training"] = ratios(training) if ps in training else {}
    out["inference_pj"] = {n: [_mean([r["inference"][t]["energy_pj"] for r in rows[n]])
                               for t in range(len(sizes))] for n in cfg.strategies if rows[n][0].get("inference")}
    new_tasks = len(sizes) - 1
    if ps in rows and "regular-incremental" in rows and new_tasks:
        def per_task(name: str) -> dict[str, float]:
            costs = [r["cost"] for r in rows[name]]
            other = _mean([_part(c, "statistics") + _part(c, "calibration") for c in costs]) or 0.0
            return {"training": (training[name] or 0.0) / new_tasks, "other": other / new_tasks}

        search = _mean([_part(r["cost"], "search") for r in rows[ps]]) or 0.0
        out["amortisation"] = amortisation(search, per_task(ps), per_task("regular-incremental"),
                                           cfg.branch.epochs, new_tasks)
    at_chance = [n for n in names if not out["class_il"][n]["above_chance"] or not out["task_il"][n]["above_chance"]]
    cheaper = bool(out["ratio_total"].get("vs_regular") and out["ratio_total"]["vs_regular"] > 1)
    out["at_chance"] = at_chance
    out["claims_saving"] = cheaper and not at_chance
    out["text"] = _sentences(out)
    return out


def _pct(stat: dict[str, Any]) -> str:
    if stat.get("mean") is None:
        return "n/a"
    text = f"{100 * stat['mean']:.1f}"
    if stat.get("std") is not None:
        text += f" ± {100 * stat['std']:.1f}"
    return text + " %" + ("" if stat.get("above_chance") else " [at chance]")


def _joules(pj: float | None) -> str:
    return "n/a" if pj is None else f"{pj * 1e-12:.3g} J"


def _times(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3g}x less" if x >= 1 else f"{1 / x:.3g}x MORE"


def attribution(h: dict[str, Any]) -> str | None:
    """What partial sharing's branches add to Class-IL over the base network alone (the base-only reference of
    the headline method, else of the analytic head). Clearly above means by more than two standard errors of a
    proportion on the ``n`` test images, ``ps - base > 2 sqrt(base (1 - base) / n)``; otherwise the sentence says
    the branches add Task-IL, not Class-IL. None without the reference."""
    base_refs = (h.get("references") or {}).get("base_only") or {}
    base = base_refs.get(h["method"], base_refs.get("analytic-head"))
    ps = (h["class_il"].get("partial-sharing") or {}).get("mean")
    n = h.get("test_images")
    if base is None or ps is None or not n:
        return None
    margin = 2 * math.sqrt(max(base * (1 - base), 0.0) / n)
    if ps - base > margin:
        return (f"Partial sharing's branches add {100 * (ps - base):.1f} points of Class-IL over the base network "
                f"alone ({100 * ps:.1f} % vs {100 * base:.1f} %).")
    return (f"Partial sharing's Class-IL is not clearly above the base network alone ({100 * ps:.1f} % vs "
            f"{100 * base:.1f} %, within two standard errors on {n} test images): its branches add Task-IL, "
            "not Class-IL, here.")


def _sentences(h: dict[str, Any]) -> list[str]:
    """The headline as sentences: the point, Class-IL, the total energy, training alone, amortisation, chance."""
    out = []
    s = h["share"]
    where = f"k = {s['k']}" + (f" (fraction {s['fraction']:.2f}, shared through {s['after']})"
                              if s.get("fraction") is not None else "")
    out.append(f"Sharing point {where}" + (", chosen by the search on validation images." if s.get("mode") == "auto"
                                           else ", as configured."))
    cil = h["class_il"]
    parts = [f"{n} {_pct(cil[n])}" for n in _STRATEGIES if n in cil]
    line = f"Class-IL ({h['method']}): " + ", ".join(parts)
    refs = h.get("references")
    if refs:
        base = refs["base_only"].get("analytic-head")
        line += (f"; base network only {100 * base:.1f} %" if base is not None else "")
        line += (f", joint classifier on the frozen trunk {100 * refs['joint_trunk']:.1f} %"
                 if refs.get("joint_trunk") is not None else "")
    out.append(line + f" (chance {100 * h['chance']['class_il']:.1f} %).")
    what = attribution(h)
    if what:
        out.append(what)
    tot, rt = h["energy_pj"]["total"], h["ratio_total"]
    if "partial-sharing" in tot:
        line = (f"Whole lifecycle (training + search + statistics + calibration): partial sharing "
                f"{_joules(tot['partial-sharing'])}")
        if rt.get("vs_regular") is not None:
            line += f", {_times(rt['vs_regular'])} than regular incremental learning ({_joules(tot['regular-incremental'])})"
        if rt.get("vs_retraining") is not None:
            line += f", {_times(rt['vs_retraining'])} than full retraining ({_joules(tot['full-retraining'])})"
        out.append(line + ".")
        tr = h["ratio_training"]
        if tr:
            out.append("Training alone: " + ", ".join(
                f"{_times(tr[k])} than {label}" for k, label in (("vs_regular", "regular incremental learning"),
                                                                 ("vs_retraining", "full retraining"))
                if tr.get(k) is not None) + ".")
    am = h.get("amortisation")
    if am and am["search_pj"] > 0:
        line = f"The search ({_joules(am['search_pj'])}) is paid once: "
        line += (f"break-even against regular incremental learning after {am['break_even_tasks']} new task(s)"
                 if am["break_even_tasks"] else "partial sharing never breaks even against regular incremental "
                 "learning (it costs at least as much per task)")
        ten = am["ratio_after_tasks"].get("10")
        if ten is not None:
            line += f"; after 10 tasks the total ratio is {ten:.3g}x"
        if am["training_ratio"] is not None:
            goal = f"{100 * am['target_share']:.0f} % of the training-only {am['training_ratio']:.3g}x"
            how = []
            if am["tasks_to_target"]:
                how.append(f"after {am['tasks_to_target']} tasks")
            if am["epochs_to_target"]:
                how.append(f"with {am['epochs_to_target']} epochs per task (one task)")
            line += f"; it reaches {goal} " + (" or ".join(how) if how else "neither by more tasks nor by more epochs")
            if not am["tasks_to_target"] and am["asymptotic_ratio"] is not None:
                line += f" (more tasks tend to {am['asymptotic_ratio']:.3g}x)"
        out.append(line + ".")
    if h["at_chance"]:
        out.append("Accuracy at chance for " + ", ".join(h["at_chance"]) + ": no saving is claimed from this run.")
    elif not h["claims_saving"] and "partial-sharing" in tot:
        out.append("Partial sharing does not cost less in total than regular incremental learning in this run: no "
                   "saving is claimed.")
    return out
