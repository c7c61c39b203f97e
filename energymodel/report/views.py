"""Views of the report's sections (setup, per-layer costs, sharing comparison, sweeps, measured timings).

A view is a plain dict for the template: tables of pre-formatted cells (:func:`~energymodel.report.fmt.table`)
chosen to fit the page at 1,400 px (the rest behind ``<details>``), inline SVG plots and one-line
summaries. The engine section is in :mod:`energymodel.report.engine`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from energymodel.report.build import versions
from energymodel.report.fmt import (
    SWEEP_NAMES,
    SWEEP_UNITS,
    fmt_bytes,
    fmt_energy,
    fmt_fraction,
    fmt_key_value,
    fmt_num,
    fmt_text,
    fmt_x,
    header,
    records,
    svg,
    table,
)
from energymodel.report.inputs import _MEASURED_COLUMNS


def setup_view(setup: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {"groups": [], "table": None}
    for key, title in (("model", "Model"), ("training", "Training (the new task)")):
        if isinstance(setup.get(key), dict):
            rows = []
            for k, v in setup[key].items():
                if isinstance(v, (list, tuple)):
                    v = " × ".join(map(str, v)) if k == "input_shape" else ", ".join(map(str, v))
                elif isinstance(v, int) and not isinstance(v, bool) and v >= 10000:
                    v = f"{v:,}"
                rows.append((k.replace("_", " "), fmt_text(v)))
            view["groups"].append({"title": title, "rows": rows})
    extra = {k: v for k, v in setup.items() if k not in ("model", "training", "table", "versions", "generated", "recipe")}
    if extra:
        view["groups"].append({"title": "Other settings",
                               "rows": [(k.replace("_", " "), v if isinstance(v, str) else json.dumps(v, default=str))
                                        for k, v in extra.items()]})
    t = setup.get("table")
    if isinstance(t, dict) and "operations" in t:
        ops = [{"entry": k, "pj": v.get("pj"), "source": v.get("source", "")} for k, v in t["operations"].items()]
        word_bits = t.get("word_bits", 32)
        mem = [{"entry": k, "pj": v.get("pj"), "bits": v.get("bits"),
                "pj_per_word": (v.get("pj") or 0) * word_bits / (v.get("bits") or word_bits), "source": v.get("source", "")}
               for k, v in t.get("memory", {}).items()]
        flow = t.get("dataflow", {})
        view["table"] = {
            "name": t.get("name"), "description": t.get("description"), "source": t.get("source"),
            "path": t.get("path"), "datatype": t.get("datatype"), "word_bits": word_bits,
            "technology": t.get("technology"), "voltage": t.get("voltage"),
            "ops": table(ops, [("entry", "operation"), ("pj", "pJ / op"), ("source", "source")], {"pj": fmt_num}),
            "memory": table(mem, [("entry", "level"), ("pj", "pJ / access"), ("bits", "bits / access"),
                                   ("pj_per_word", f"pJ / {word_bits}-bit word"), ("source", "source")],
                             {"pj": fmt_num, "pj_per_word": fmt_num, "bits": fmt_num}),
            "dataflow": [("on-chip buffer (SRAM)", fmt_bytes(flow.get("buffer_bytes"))),
                         ("RF accesses per non-MAC operation", fmt_num(flow.get("rf_accesses_per_op"))),
                         ("PE array", f"{flow.get('array_rows', 16)} × {flow.get('array_cols', 16)}, rows unroll "
                          f"{(flow.get('unroll') or ['K', 'C'])[0]}, columns {(flow.get('unroll') or ['K', 'C'])[1]}"),
                         ("register files per PE", " / ".join(fmt_num(v) for v in flow.get("rf_per_operand",
                                                                                            [32, 32, 32]))
                          + " words (input / weight / output)"),
                         ("reuse", str(flow.get("reuse", ""))),
                         ("rule", "one residency plan for the whole network: an activation stays on chip from "
                                  "its write to its last read or goes to DRAM for every reader; conv/linear layers: "
                                  "per phase the SRAM tiling with the fewest DRAM words and the loop nest inside "
                                  "the array (SRAM re-reads, RF refills); network input from DRAM (see "
                                  "docs/cost-model.md)" if flow.get("tiling", True) else
                                  "weights + gradients + optimizer state on chip only if all fit; an activation "
                                  "tensor on chip if the whole batch's tensor fits; network input from DRAM")],
        }
    view["versions"] = setup.get("versions") or versions()
    view["generated"] = setup.get("generated")
    view["recipe"] = setup.get("recipe")
    return view


def _plot(name: str, *args, **kwargs) -> str | None:
    from energymodel.report import plots

    return getattr(plots, name)(*args, **kwargs)


def _columns(frame_or_rows, cols: list[tuple[str, str]]) -> list[tuple[str, str]]:
    keys = frame_or_rows.columns if isinstance(frame_or_rows, pd.DataFrame) else \
        {k for r in frame_or_rows for k in r}
    return [(k, h) for k, h in cols if k in keys]


# -- per-layer costs --------------------------------------------------------------------------------------

#: the per-layer table: what each layer costs (energy split by where it is spent)
_LAYER_COLUMNS = [
    ("name", "layer"), ("kind", "kind"), ("trainable", "trains"), ("params", "params"), ("macs", "MACs"),
    ("energy_compute_pj", "compute"), ("energy_rf_pj", "RF"), ("energy_sram_pj", "SRAM"),
    ("energy_dram_pj", "DRAM"), ("energy_pj", "energy"),
]
#: behind <details>: MACs by pass and memory accesses by level ({w}: the word width)
_LAYER_DETAIL_COLUMNS = [
    ("name", "layer"), ("macs_forward", "MACs forward"), ("macs_backward_input", "MACs backward (input)"),
    ("macs_backward_weight", "MACs backward (weights)"), ("rf_accesses", "RF accesses ({w})"),
    ("sram_accesses", "SRAM accesses ({w})"), ("dram_accesses", "DRAM accesses ({w})"),
    ("saved_bytes", "kept for backward"), ("gradient_bytes", "gradients"),
]


def layers_view(layers: pd.DataFrame, word_bits: int = 32) -> dict[str, Any]:
    """Per-layer costs: a table of params, MACs and energy by level; MACs by pass and accesses in details."""
    layers = layers.copy()
    mac_cols = [c for c in ("macs_forward", "macs_backward_input", "macs_backward_weight") if c in layers]
    if mac_cols and "macs" not in layers:
        layers["macs"] = layers[mac_cols].sum(axis=1)
    words = f"{word_bits}-bit words"
    cols = _columns(layers, _LAYER_COLUMNS)
    detail_cols = [(k, h.format(w=words)) for k, h in _columns(layers, _LAYER_DETAIL_COLUMNS)]
    rows = records(layers)
    numeric = {k for k, _ in cols + detail_cols if k not in ("name", "kind", "trainable")
               and pd.api.types.is_numeric_dtype(layers[k])}
    totals: dict[str, Any] = {k: float(layers[k].sum()) for k in numeric}
    if "params" in totals and "first_call" in layers:
        totals["params"] = float(layers.loc[layers["first_call"].astype(bool), "params"].sum())
    totals["name"] = "total"
    return {"table": table(rows + [totals], cols), "details": table(rows + [totals], detail_cols),
            "plot": svg(_plot("layer_energy_plot", layers)), "total_energy": fmt_energy(totals.get("energy_pj")),
            "n": len(layers), "words": words}


#: the residency plan: one row per tensor of a phase
_PLAN_COLUMNS = [("phase", "phase"), ("writer", "written by"), ("readers", "read by"), ("words", "words"),
                 ("where", "kept")]


def residency_view(plan: pd.DataFrame | None) -> dict[str, Any] | None:
    """The residency plan of the profiled step: per phase, which tensors stay on chip (a summary line) and every
    tensor with its writer, readers, size and level."""
    if plan is None or not len(plan):
        return None
    frame = plan.copy()
    frame["where"] = [("DRAM (input / cache)" if forced else "on chip" if on else "DRAM")
                      for on, forced in zip(frame["on_chip"], frame["forced"])]
    frame["writer"] = frame["writer"].replace("", "—")
    summary = []
    for phase, sel in frame.groupby("phase", sort=False):
        on = sel[sel["on_chip"].astype(bool)]
        summary.append(f"{phase}: {len(on)} of {len(sel)} tensors on chip ({fmt_num(float(on['words'].sum()))} of "
                       f"{fmt_num(float(sel['words'].sum()))} words)")
    return {"table": table(records(frame), _PLAN_COLUMNS, {"words": fmt_num}), "summary": summary}


# -- the sharing-fraction comparison ----------------------------------------------------------------------

#: the comparison table: where each strategy shares, what its training costs and saves, what it stores
_COMPARE_COLUMNS = [
    ("strategy", "strategy"), ("share", "k"), ("after", "shared through"), ("fraction", "fraction"),
    ("energy_pj", "training energy"), ("savings_energy_vs_regular", "energy savings vs regular"),
    ("savings_energy_vs_retraining", "energy savings vs retraining"), ("storage_bytes", "storage"),
    ("storage_vs_retraining", "storage vs retraining"), ("training_memory_bytes", "training step memory"),
    ("inference_energy_pj", "inference energy / sample"),
]
_COMPARE_DETAIL_COLUMNS = [
    ("strategy", "strategy"), ("share", "k"), ("trainable_params", "trained params"),
    ("macs", "training MACs"), ("savings_macs_vs_regular", "MAC savings vs regular"),
    ("sram_accesses", "SRAM accesses ({w})"), ("dram_accesses", "DRAM accesses ({w})"),
    ("data_storage_bytes", "old data kept"), ("inference_macs", "inference MACs / sample"),
    ("memory_saved_bytes", "step: saved activations"), ("memory_gradients_bytes", "step: gradients"),
    ("memory_optimizer_bytes", "step: optimizer state"),
]


def storage_ratio(savings_storage: Any) -> str:
    """Storage relative to full retraining from ``savings_storage_vs_retraining`` (retraining / strategy).

    Shown as the strategy's storage over retraining's, ``1 / savings``: ``0.501`` -> ``2.00×`` (a cost:
    the grown network keeps a branch per task)."""
    f = _num(savings_storage)
    return "–" if f is None or f <= 0 else fmt_x(1.0 / f)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def compare_view(cmp: pd.DataFrame, word_bits: int = 32) -> dict[str, Any]:
    """The sharing comparison: a table that fits (costs, savings, storage) and the counts in details."""
    words = f"{word_bits}-bit words"
    rows = records(cmp)
    for r in rows:
        if "savings_storage_vs_retraining" in r:
            r["storage_vs_retraining"] = r["savings_storage_vs_retraining"]
    cols = [(k, h) for k, h in _COMPARE_COLUMNS if k in cmp.columns or
            (k == "storage_vs_retraining" and "savings_storage_vs_retraining" in cmp.columns)]
    detail_cols = [(k, h.format(w=words)) for k, h in _columns(cmp, _COMPARE_DETAIL_COLUMNS)]
    ps = cmp[cmp["strategy"] == "partial-sharing"].sort_values("share")
    span = None
    if len(ps) and "savings_energy_vs_regular" in ps:
        lo, hi = ps.iloc[1] if len(ps) > 1 else ps.iloc[0], ps.iloc[-1]
        span = {"low_share": int(lo["share"]), "low": fmt_x(lo["savings_energy_vs_regular"]),
                "high_share": int(hi["share"]), "high": fmt_x(hi["savings_energy_vs_regular"]),
                "high_fraction": fmt_fraction(hi["fraction"]),
                "high_retraining": fmt_x(hi.get("savings_energy_vs_retraining"))}
    return {"table": table(rows, cols, {"storage_vs_retraining": storage_ratio}),
            "details": table(rows, detail_cols), "plot": svg(_plot("sharing_plot", cmp)), "span": span,
            "settings": dict(cmp.attrs)}


def savings_at(cmp: pd.DataFrame | None, share: int) -> dict[str, Any] | None:
    """The comparison's row of clone-and-branch at ``share`` (fraction, savings), or None."""
    if cmp is None or not len(cmp):
        return None
    row = cmp[(cmp["strategy"] == "partial-sharing") & (cmp["share"] == share)]
    if not len(row):
        return None
    r = row.iloc[0]
    return {"fraction": _num(r.get("fraction")), "after": r.get("after"),
            "vs_regular": _num(r.get("savings_energy_vs_regular")),
            "vs_retraining": _num(r.get("savings_energy_vs_retraining"))}


# -- energy sweeps ----------------------------------------------------------------------------------------

#: what a swept table entry is, in words
def axis_label(key: str) -> str:
    """``dram`` -> ``DRAM access energy (pJ/access)``."""
    unit = SWEEP_UNITS.get(key)
    name = SWEEP_NAMES.get(key, key)
    if key == "dram_mac_ratio":
        return "DRAM / MAC energy ratio (pJ per DRAM word / pJ per MAC)"
    return f"{name} ({unit})" if unit and key != "buffer_bytes" else name  # buffer values carry KiB / MiB


def _spacing(values: np.ndarray) -> str:
    v = np.unique(values.astype(float))
    if len(v) < 3:
        return "values"
    if (v > 0).all() and np.allclose(np.diff(np.log(v)), np.log(v[1] / v[0]), rtol=1e-6):
        return "log-spaced values"
    if np.allclose(np.diff(v), v[1] - v[0], rtol=1e-6):
        return "evenly spaced values"
    return "values"


def grid_text(key: str, values: np.ndarray) -> str:
    """``dram``, its grid -> ``DRAM access energy: 25 evenly spaced values, 50 pJ/access – 2,000 pJ/access``."""
    v = np.unique(values.astype(float))
    if len(v) == 1:
        return f"{SWEEP_NAMES.get(key, key)}: {fmt_key_value(key, v[0])}"
    return (f"{SWEEP_NAMES.get(key, key)}: {len(v)} {_spacing(v)}, {fmt_key_value(key, v.min())} – "
            f"{fmt_key_value(key, v.max())}")


_AGAINST = {"regular": "regular incremental learning", "retraining": "full retraining"}


def _nearest(values: np.ndarray, target: float) -> float:
    values = np.unique(values)
    return float(values[np.argmin(np.abs(values - target))])


def _breakeven_view(be: pd.DataFrame, target: float) -> dict[str, Any]:
    """Break-even rows that cross the target inside the grid as a table; rows that never cross summarised."""
    key = be["key"].iloc[0]
    others = [c for c in be.columns if c not in ("share", "after", "fraction", "key", "target", "against",
                                                  "breakeven", "pays_off", "savings_min", "savings_max")]
    summary = []
    for side, words in (("always", f"at least {target:g}× everywhere on the grid"),
                        ("never", f"below {target:g}× everywhere on the grid")):
        part = be[be["pays_off"] == side]
        items = []
        for k in dict.fromkeys(part["share"]):
            rows_k = part[part["share"] == k]
            if not others or len(rows_k) == int((be["share"] == k).sum()):  # the whole grid of this point
                items.append(f"k = {int(k)}")
            elif len(others) == 1:  # only at some values of the one other varied entry
                c = others[0]
                values = ", ".join(fmt_key_value(c, v) for v in rows_k[c])
                items.append(f"k = {int(k)} (at {SWEEP_NAMES.get(c, c)} {values})")
            else:
                at = "; ".join(", ".join(f"{SWEEP_NAMES.get(c, c)} {fmt_key_value(c, r[c])}" for c in others)
                               for _, r in rows_k.iterrows())
                items.append(f"k = {int(k)} (at {at})")
        if items:
            summary.append(f"{words}: {', '.join(items)}")
    crossing = be[be["pays_off"].isin(["below", "above"])]
    view_table = None
    if len(crossing):
        rows = records(crossing)
        for r in rows:
            r["pays_off"] = f"{'below' if r['pays_off'] == 'below' else 'above'} the break-even"
        cols = [("share", "k"), ("after", "shared through"), ("fraction", "fraction")]
        cols += [(c, axis_label(c)) for c in others]
        cols += [("breakeven", f"break-even {axis_label(key)}"), ("pays_off", f"savings ≥ {target:g}×"),
                 ("savings_min", "min savings"), ("savings_max", "max savings")]
        fmts = {c: (lambda v, c=c: fmt_key_value(c, v)) for c in [*others, "breakeven"]}
        fmts["breakeven"] = lambda v: fmt_key_value(key, v)
        view_table = table(rows, cols, fmts)
    return {"summary": summary, "table": view_table}


def sweep_view(sw: dict[str, Any], base_values: dict[str, float]) -> dict[str, Any]:
    frame: pd.DataFrame = sw["frame"]
    varied = list(frame.attrs.get("vary") or [c for c in sw.get("spec", {})])
    against = sw.get("against", "regular")
    target = sw.get("target", 1.0)
    be = sw.get("breakeven")
    plots_ = []

    def fixed_for(skip: Iterable[str]) -> dict[str, float]:
        return {k: _nearest(frame[k].to_numpy(dtype=float), base_values.get(k, float(frame[k].median())))
                for k in varied if k not in skip}

    def caption(text: str, fixed: dict[str, float]) -> str:
        note = ", ".join(f"{SWEEP_NAMES.get(k, k)} = {fmt_key_value(k, v)}" for k, v in fixed.items())
        return text + (f" (other entries at the grid value nearest the table's: {note})" if note else "")

    def be_for(key: str):
        return be if be is not None and len(be) and be["key"].iloc[0] == key else None

    driver = next((k for k in ("dram", "mac") if k in varied), None)
    for key in varied:
        fixed = fixed_for([key])
        if key == driver:  # energy ratio on the x axis (the quantity the break-even speaks of)
            plot = _plot("sweep_lines_plot", frame, "dram_mac_ratio", against=against, target=target, fixed=fixed,
                         breakeven=be_for("dram_mac_ratio"), xlabel=axis_label("dram_mac_ratio"), top_key=key,
                         top_label=axis_label(key))
            top = f" (top axis: {SWEEP_NAMES.get(key, key)})" if key == "dram" else ""
            text = (f"Savings vs the DRAM/MAC energy ratio as {SWEEP_NAMES.get(key, key)} varies{top}, one line "
                    "per sharing point; × marks break-even points")
        else:
            plot = _plot("sweep_lines_plot", frame, key, against=against, target=target, fixed=fixed,
                         breakeven=be_for(key), xlabel=axis_label(key),
                         tick_format=fmt_bytes if key == "buffer_bytes" else None)
            text = f"Savings vs {SWEEP_NAMES.get(key, key)}, one line per sharing point"
        plots_.append({"svg": svg(plot), "caption": caption(text, fixed)})
    heat = None
    if len(varied) >= 2:
        kx, ky = varied[0], varied[1]
        shares = frame.groupby("share")["fraction"].first()
        shares = shares[shares.index != 0] if (shares.index != 0).any() else shares
        share = int((shares - 0.5).abs().idxmin())
        fixed = fixed_for([kx, ky])
        heat = {"svg": svg(_plot("sweep_heatmap", frame, kx, ky, share, against=against, fixed=fixed,
                                 xlabel=axis_label(kx), ylabel=axis_label(ky),
                                 tick_format={k: fmt_bytes for k in (kx, ky) if k == "buffer_bytes"})),
                "caption": caption(f"Savings vs {_AGAINST.get(against, against)} of sharing point {share} (fraction "
                                   f"{fmt_fraction(shares.get(share))}) over {SWEEP_NAMES.get(kx, kx)} × "
                                   f"{SWEEP_NAMES.get(ky, ky)}", fixed)}
    n_points = frame.attrs.get("grid_points", frame["point"].nunique() if "point" in frame else len(frame))
    grid = [grid_text(k, frame[k].to_numpy()) for k in varied]
    return {"title": sw.get("title") or "Sweep", "grid": grid, "points": n_points,
            "shares": int(frame["share"].nunique()), "rows": len(frame), "plots": plots_, "heatmap": heat,
            "breakeven": _breakeven_view(be, target) if be is not None and len(be) else None, "target": target,
            "against": _AGAINST.get(against, against)}


# -- measured vs modelled ---------------------------------------------------------------------------------


def measured_view(measured: dict[str, Any]) -> dict[str, Any]:
    from energymodel.report.plots import measured_plot

    rows = measured.get("rows", [])
    keys = [k for k in _MEASURED_COLUMNS if any(k in r for r in rows)]
    keys += [k for r in rows for k in r if k not in keys]
    keys = list(dict.fromkeys(keys))
    view = {"machine": measured.get("machine", ""), "table": table(rows, [(k, header(k)) for k in keys]),
            "svg": svg(measured_plot(rows)), "energy_meter": measured.get("energy_meter"), "nvml": None, "extra": None}
    if measured.get("nvml"):
        view["nvml"] = [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in measured["nvml"].items()]
    if measured.get("extra"):
        view["extra"] = json.dumps(measured["extra"], indent=2, default=str)[:20000]
    return view
