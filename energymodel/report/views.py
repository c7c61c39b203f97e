"""Views of the report's sections (setup, per-layer costs, sharing comparison, sweeps, engine, measured)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from .build import versions
from .fmt import header as _header, records as _records, svg as _svg, table as _table, fmt_bytes, fmt_energy, fmt_num, fmt_text, fmt_x
from .inputs import _MEASURED_COLUMNS, ENGINE_STRATEGY_COLUMNS


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
            "ops": _table(ops, [("entry", "operation"), ("pj", "pJ / op"), ("source", "source")], {"pj": fmt_num}),
            "memory": _table(mem, [("entry", "level"), ("pj", "pJ / access"), ("bits", "bits / access"),
                                   ("pj_per_word", f"pJ / {word_bits}-bit word"), ("source", "source")],
                             {"pj": fmt_num, "pj_per_word": fmt_num, "bits": fmt_num}),
            "dataflow": [("on-chip buffer (SRAM)", fmt_bytes(flow.get("buffer_bytes"))),
                         ("RF accesses per operation", fmt_num(flow.get("rf_accesses_per_op"))),
                         ("reuse", str(flow.get("reuse", ""))),
                         ("rule", "weights + gradients + optimizer state on chip only if all fit; an activation "
                                  "tensor on chip if the whole batch's tensor fits; network input from DRAM "
                                  "(see the appendix)")],
        }
    view["versions"] = setup.get("versions") or versions()
    view["generated"] = setup.get("generated")
    view["recipe"] = setup.get("recipe")
    return view


_LAYER_COLUMNS = [
    ("name", "layer"), ("kind", "kind"), ("trainable", "trains"), ("macs_forward", "MACs fwd"),
    ("macs_backward_input", "MACs bwd input"), ("macs_backward_weight", "MACs bwd weight"), ("params", "params"),
    ("rf_accesses", "RF acc."), ("sram_accesses", "SRAM acc."), ("dram_accesses", "DRAM acc."),
    ("energy_compute_pj", "compute"), ("energy_rf_pj", "RF"), ("energy_sram_pj", "SRAM"), ("energy_dram_pj", "DRAM"),
    ("energy_pj", "energy"),
]
_COMPARE_COLUMNS = [
    ("strategy", "strategy"), ("share", "k"), ("after", "shared through"), ("fraction", "fraction"),
    ("trainable_params", "trained params"), ("macs", "training MACs"), ("sram_accesses", "SRAM accesses"),
    ("dram_accesses", "DRAM accesses"), ("energy_pj", "training energy"), ("storage_bytes", "storage"),
    ("data_storage_bytes", "old data kept"), ("inference_macs", "inference MACs / sample"),
    ("inference_energy_pj", "inference energy / sample"), ("savings_energy_vs_regular", "energy savings vs regular"),
    ("savings_energy_vs_retraining", "energy savings vs retraining"), ("savings_macs_vs_regular", "MAC savings vs regular"),
    ("savings_storage_vs_retraining", "storage savings vs retraining"),
]


def layers_view(layers: pd.DataFrame) -> dict[str, Any]:
    cols = [(k, h) for k, h in _LAYER_COLUMNS if k in layers.columns]
    rows = _records(layers)
    totals = {k: float(layers[k].sum()) for k, _ in cols if k not in ("name", "kind", "trainable")
              and pd.api.types.is_numeric_dtype(layers[k])}
    if "params" in totals and "first_call" in layers:
        totals["params"] = float(layers.loc[layers["first_call"].astype(bool), "params"].sum())
    totals["name"] = "total"
    view = _table(rows + [totals], cols)
    return {"table": view, "plot": _svg(_plot("layer_energy_plot", layers)),
            "total_energy": fmt_energy(totals.get("energy_pj")), "n": len(layers)}


def _plot(name: str, *args, **kwargs) -> str | None:
    from .. import plots

    return getattr(plots, name)(*args, **kwargs)


def compare_view(cmp: pd.DataFrame) -> dict[str, Any]:
    cols = [(k, h) for k, h in _COMPARE_COLUMNS if k in cmp.columns]
    best = cmp[cmp["strategy"] == "partial-sharing"]
    summary = None
    if len(best) and "savings_energy_vs_regular" in best:
        top = best.loc[best["savings_energy_vs_regular"].idxmax()]
        summary = {"share": int(top["share"]), "fraction": f"{top['fraction']:.2f}",
                   "regular": fmt_x(top["savings_energy_vs_regular"]),
                   "retraining": fmt_x(top.get("savings_energy_vs_retraining"))}
    settings = dict(cmp.attrs)
    return {"table": _table(_records(cmp), cols), "plot": _svg(_plot("sharing_plot", cmp)), "summary": summary,
            "settings": settings}


def _nearest(values: np.ndarray, target: float) -> float:
    values = np.unique(values)
    return float(values[np.argmin(np.abs(values - target))])


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
        note = ", ".join(f"{k} = {int(v) if float(v).is_integer() else f'{v:.4g}'}" for k, v in fixed.items())
        return text + (f" (other keys at the grid value nearest the table's: {note})" if note else "")

    driver = next((k for k in ("dram", "mac") if k in varied), None)
    for key in varied:
        fixed = fixed_for([key])
        if key == driver:  # energy ratio on the x axis (the quantity the break-even speaks of)
            svg = _plot("sweep_lines_plot", frame, "dram_mac_ratio", against=against, target=target, fixed=fixed,
                        breakeven=be if be is not None and len(be) and be["key"].iloc[0] == "dram_mac_ratio" else None,
                        xlabel="DRAM / MAC energy ratio (pJ per DRAM word / pJ per MAC)", top_key=key)
            top = f" (top axis: {key})" if key == "dram" else ""
            text = (f"Savings vs the DRAM/MAC energy ratio as {key} varies{top}, one line per sharing point; "
                    "× marks break-even points")
        else:
            svg = _plot("sweep_lines_plot", frame, key, against=against, target=target, fixed=fixed,
                        breakeven=be if be is not None and len(be) and be["key"].iloc[0] == key else None)
            text = f"Savings vs {key}, one line per sharing point"
        plots_.append({"svg": _svg(svg), "caption": caption(text, fixed)})
    heat = None
    if len(varied) >= 2:
        kx, ky = varied[0], varied[1]
        shares = frame.groupby("share")["fraction"].first()
        shares = shares[shares.index != 0] if (shares.index != 0).any() else shares
        share = int((shares - 0.5).abs().idxmin())
        fixed = fixed_for([kx, ky])
        heat = {"svg": _svg(_plot("sweep_heatmap", frame, kx, ky, share, against=against, fixed=fixed)),
                "caption": f"Savings vs {against} of sharing point {share} over {kx} × {ky}"}
    be_view = None
    if be is not None and len(be):
        cols = [("share", "k"), ("after", "shared through"), ("fraction", "fraction")]
        cols += [(c, c) for c in be.columns if c not in ("share", "after", "fraction", "key", "target", "against",
                                                         "breakeven", "pays_off", "savings_min", "savings_max")]
        cols += [("breakeven", f"break-even {be['key'].iloc[0]}"), ("pays_off", f"savings ≥ {target:g}× where"),
                 ("savings_min", "min savings"), ("savings_max", "max savings")]
        rows = _records(be)
        for r in rows:
            r["pays_off"] = {"below": "below break-even", "above": "above break-even", "always": "everywhere on the grid",
                             "never": "nowhere on the grid"}.get(r["pays_off"], r["pays_off"])
        be_view = _table(rows, cols)
    n_points = frame.attrs.get("grid_points", frame["point"].nunique() if "point" in frame else len(frame))
    spec = sw.get("spec") or {}
    grid = [(k, spec.get(k, f"{frame[k].min():g} … {frame[k].max():g}"), frame[k].nunique()) for k in varied]
    return {"title": sw.get("title") or "Sweep", "grid": grid, "points": n_points, "shares": int(frame["share"].nunique()),
            "rows": len(frame), "plots": plots_, "heatmap": heat, "breakeven": be_view, "target": target,
            "against": against}


def engine_view(engine: dict[str, Any]) -> dict[str, Any]:
    from ..plots import calibration_plot, matrix_heatmap, strategies_plot, timing_plot

    view: dict[str, Any] = {"strategies": None, "strategies_plot": None, "matrices": [], "calibration": None,
                            "chosen_share": None, "timing": None, "extra": None}
    strategies = engine.get("strategies")
    if strategies:
        keys = [k for k in ENGINE_STRATEGY_COLUMNS if any(k in r for r in strategies)]
        keys += [k for r in strategies for k in r if k not in keys and k not in ENGINE_STRATEGY_COLUMNS]
        keys = list(dict.fromkeys(keys))
        view["strategies"] = _table(strategies, [(k, _header(k)) for k in keys])
        view["strategies_plot"] = _svg(strategies_plot(strategies))
    mats = engine.get("matrices") or {}
    view["matrices"] = [{"name": n, "svg": _svg(matrix_heatmap(n, m.get("tasks", []), m["values"]))}
                        for n, m in mats.items() if m.get("values")]
    curve = engine.get("calibration_curve")
    chosen = engine.get("chosen_share")
    if curve:
        view["calibration"] = {
            "svg": _svg(calibration_plot(curve, chosen)),
            "table": _table(curve, [(k, _header(k)) for k in
                                    dict.fromkeys(k for r in curve for k in r)]),
        }
    if chosen is not None:
        view["chosen_share"] = chosen
    timing = engine.get("timing")
    if timing:
        view["timing"] = {"svg": _svg(timing_plot(timing)),
                          "table": _table(timing, [(k, _header(k)) for k in dict.fromkeys(k for r in timing for k in r)])}
    if engine.get("extra"):
        view["extra"] = json.dumps(engine["extra"], indent=2, default=str, allow_nan=True)[:20000]
    return view


def measured_view(measured: dict[str, Any]) -> dict[str, Any]:
    from ..plots import measured_plot

    rows = measured.get("rows", [])
    keys = [k for k in _MEASURED_COLUMNS if any(k in r for r in rows)]
    keys += [k for r in rows for k in r if k not in keys]
    keys = list(dict.fromkeys(keys))
    view = {"machine": measured.get("machine", ""), "table": _table(rows, [(k, _header(k)) for k in keys]),
            "svg": _svg(measured_plot(rows)), "energy_meter": measured.get("energy_meter"), "nvml": None, "extra": None}
    if measured.get("nvml"):
        view["nvml"] = [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in measured["nvml"].items()]
    if measured.get("extra"):
        view["extra"] = json.dumps(measured["extra"], indent=2, default=str)[:20000]
    return view
