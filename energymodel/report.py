"""Self-contained HTML reports: setup, per-layer costs, the sharing-fraction comparison, energy sweeps,
engine results and measured-vs-modelled timings, with the cost model's formulas as an appendix.

Three steps, each usable alone::

    data = build_report(load_recipe("reports/paper-resnet18-cifar100.toml"))   # -> ReportData
    html = render_report(data)                                                 # -> str
    write_report(data, "reports/out/paper.html")                               # atomic

The HTML is one file: CSS inline, plots inline SVG (matplotlib), no scripts, nothing fetched. All text
goes through jinja2 with autoescaping. Every section except the title is optional: a :class:`ReportData`
with only ``engine`` set (from :func:`engine_section_from_results`) renders just that section.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import math
import platform
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from .errors import UserError

if TYPE_CHECKING:
    from .recipe import Recipe

__all__ = [
    "ReportData", "build_report", "render_report", "write_report", "engine_section_from_results",
    "measured_section", "load_measured", "versions", "formulas", "ENGINE_STRATEGY_COLUMNS", "SECTION_IDS",
]

#: ids of the report's sections, in order (optional ones appear only when they have data)
SECTION_IDS = ("setup", "layers", "sharing", "sweep", "engine", "measured", "appendix")

#: engine ``strategies`` columns shown first, in this order (any other keys follow)
ENGINE_STRATEGY_COLUMNS = [
    "strategy", "share", "fraction", "task_aware_accuracy", "task_agnostic_accuracy",
    "task_agnostic_uncalibrated_accuracy", "energy_pj", "macs", "measured_train_seconds", "modelled_train_energy_pj",
]
_ENGINE_KEYS = ("strategies", "matrices", "calibration_curve", "chosen_share", "timing")
_MEASURED_COLUMNS = [
    "label", "share", "measured_seconds_per_epoch", "modelled_macs", "modelled_energy_pj", "speedup_measured",
    "speedup_modelled_macs", "speedup_modelled_energy",
]


@dataclass
class ReportData:
    """Everything a report shows; every part but ``title`` may be empty.

    ``setup``: nested dicts (model, training, energy table, versions ...); ``layers``: per-layer costs of
    one training step (:func:`energymodel.profile.profile` columns); ``compare``:
    :func:`energymodel.sharing.compare`'s frame; ``sweeps``: dicts with ``frame`` (a sweep frame),
    ``breakeven`` (its :func:`~energymodel.sweep.breakeven`), ``spec`` (key -> grid text), ``target``,
    ``against``, ``title``; ``engine``: :func:`engine_section_from_results`; ``measured``:
    :func:`measured_section`.
    """

    title: str
    setup: dict[str, Any] = field(default_factory=dict)
    layers: pd.DataFrame | None = None
    compare: pd.DataFrame | None = None
    sweeps: list[dict[str, Any]] = field(default_factory=list)
    engine: dict[str, Any] | None = None
    measured: dict[str, Any] | None = None
    description: str = ""


# -- inputs: engine results and measured timings ----------------------------------------------------


def _list_of_dicts(value: Any, what: str) -> list[dict]:
    if not isinstance(value, list) or any(not isinstance(r, dict) for r in value):
        raise UserError(f"{what} must be a list of objects")
    return [dict(r) for r in value]


def engine_section_from_results(results: dict[str, Any]) -> dict[str, Any]:
    """Check an engine results dict (an incremental run's ``results.json``) and return the report section.

    Every key is optional: ``strategies`` (list of objects, see :data:`ENGINE_STRATEGY_COLUMNS`),
    ``matrices`` (``{name: {"tasks": [...], "values": [[number|null, ...], ...]}}``), ``calibration_curve``
    (list of ``{share, fraction, accuracy, energy_pj, within_tolerance}``), ``chosen_share`` (int) and
    ``timing`` (list of ``{label, measured_seconds, modelled_macs, modelled_energy_pj}``). Other keys are
    kept under ``extra`` and shown as JSON. A key of the wrong shape is a one-line :class:`UserError`.
    """
    if not isinstance(results, dict):
        raise UserError(f"engine results must be a JSON object, got {type(results).__name__}")
    out: dict[str, Any] = {}
    if results.get("strategies") is not None:
        out["strategies"] = _list_of_dicts(results["strategies"], "engine results: 'strategies'")
    if results.get("matrices") is not None:
        mats = results["matrices"]
        if not isinstance(mats, dict):
            raise UserError("engine results: 'matrices' must be an object {name: {tasks, values}}")
        out["matrices"] = {}
        for name, m in mats.items():
            what = f"engine results: matrices.{name}"
            if not isinstance(m, dict) or not isinstance(m.get("values"), list):
                raise UserError(f"{what} must be an object with 'values' (a list of rows)")
            rows = m["values"]
            if any(not isinstance(r, list) for r in rows):
                raise UserError(f"{what}.values must be a list of rows (lists)")
            width = max((len(r) for r in rows), default=0)
            if any(len(r) != width for r in rows):
                raise UserError(f"{what}.values rows must all have the same length")
            for r in rows:
                for v in r:
                    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                        raise UserError(f"{what}.values must hold numbers or null, got {v!r}")
            tasks = m.get("tasks", list(range(max(width, len(rows)))))
            if not isinstance(tasks, list):
                raise UserError(f"{what}.tasks must be a list")
            out["matrices"][str(name)] = {"tasks": tasks, "values": rows,
                                          **{k: v for k, v in m.items() if k not in ("tasks", "values")}}
    if results.get("calibration_curve") is not None:
        out["calibration_curve"] = _list_of_dicts(results["calibration_curve"], "engine results: 'calibration_curve'")
    if results.get("chosen_share") is not None:
        cs = results["chosen_share"]
        if isinstance(cs, bool) or not isinstance(cs, int):
            raise UserError(f"engine results: 'chosen_share' must be an integer, got {cs!r}")
        out["chosen_share"] = cs
    if results.get("timing") is not None:
        out["timing"] = _list_of_dicts(results["timing"], "engine results: 'timing'")
    extra = {k: v for k, v in results.items() if k not in _ENGINE_KEYS}
    if extra:
        out["extra"] = extra
    return out


def measured_section(obj: dict[str, Any]) -> dict[str, Any]:
    """Check a measured-vs-modelled dict (from the benchmarks) and return the report section.

    ``{"machine": str, "rows": [{label, share, measured_seconds_per_epoch, modelled_macs, modelled_energy_pj,
    speedup_measured, speedup_modelled_macs, speedup_modelled_energy}, ...], "nvml": {...} (optional),
    "energy_meter": "none available" (optional)}``; other keys are kept under ``extra``.
    """
    if not isinstance(obj, dict):
        raise UserError(f"measured file must hold a JSON object, got {type(obj).__name__}")
    if "rows" not in obj:
        raise UserError("measured file: missing field 'rows'")
    rows = _list_of_dicts(obj["rows"], "measured file: 'rows'")
    for i, r in enumerate(rows):
        if "label" not in r:
            raise UserError(f"measured file: rows[{i}] has no 'label'")
    machine = obj.get("machine", "")
    if not isinstance(machine, str):
        raise UserError("measured file: 'machine' must be a string")
    out: dict[str, Any] = {"machine": machine, "rows": rows}
    if obj.get("nvml") is not None:
        if not isinstance(obj["nvml"], dict):
            raise UserError("measured file: 'nvml' must be an object")
        out["nvml"] = obj["nvml"]
    if obj.get("energy_meter") is not None:
        out["energy_meter"] = str(obj["energy_meter"])
    extra = {k: v for k, v in obj.items() if k not in ("machine", "rows", "nvml", "energy_meter")}
    if extra:
        out["extra"] = extra
    return out


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {path} is not valid JSON: {exc}") from None


def load_measured(path: str | Path) -> dict[str, Any]:
    """Read and check a measured-vs-modelled JSON file."""
    return measured_section(_load_json(Path(path), "measured file"))


def load_engine(run_dir: str | Path) -> dict[str, Any]:
    """Read ``RUN_DIR/results.json`` and return the engine section."""
    path = Path(run_dir) / "results.json"
    results = _load_json(path, "engine results")
    return engine_section_from_results(results.get("report", results) if isinstance(results, dict) else results)


# -- building ------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Versions of python, torch, numpy, pandas, matplotlib and energymodel."""
    import matplotlib
    import torch

    from . import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "matplotlib": matplotlib.__version__, "energymodel": __version__}


def build_report(recipe: Recipe, *, engine: dict | None = None, measured: dict | None = None) -> ReportData:
    """Compute every section a :class:`~energymodel.recipe.Recipe` asks for.

    ``engine`` / ``measured`` (already checked dicts) override the recipe's ``[engine]`` / ``[measured]``.
    """
    from .blocks import as_block_net
    from .modelspec import resolve_model
    from .profile import profile
    from .sharing import compare, sharing_points, strategy_ledgers
    from .sweep import breakeven, prepare_sweep
    from .table import load_table

    resolved = resolve_model(recipe.model, recipe.classes)
    model = resolved.model
    shape = tuple(recipe.input_shape) if recipe.input_shape else resolved.input_shape
    if shape is None:
        raise UserError(f"{recipe.model}: the recipe needs [model] input = [C, H, W]")
    try:
        net = as_block_net(model)
        n_classes = net.num_classes
    except ValueError as exc:
        raise UserError(f"{recipe.model}: {exc}") from None
    table = load_table(recipe.table)
    prof = profile(model, shape, batch=recipe.batch, mode="training", optimizer=recipe.optimizer, table=table,
                   warn=False)
    settings = {"new_classes": recipe.new_classes, "samples_new": recipe.samples_new, "samples_old": recipe.samples_old,
                "epochs": recipe.epochs, "batch": recipe.batch, "optimizer": recipe.optimizer,
                "cache_prefix": recipe.cache_prefix, "tasks": recipe.tasks}
    ledgers = strategy_ledgers(model, shape, share=recipe.share, **settings)  # traced once, priced below
    cmp = compare(model, shape, share=recipe.share, table=table, ledgers=ledgers, **settings)
    sweeps = []
    own_key = tuple(recipe.share) if recipe.share is not None else None
    prepared: dict[Any, Any] = {}
    for i, spec in enumerate(recipe.sweeps):
        share = spec.share if spec.share is not None else recipe.share
        cache_key = tuple(share) if share is not None else None
        if cache_key not in prepared:
            prepared[cache_key] = prepare_sweep(
                model, shape, share=share, table=table, samples_new=recipe.samples_new,
                samples_old=recipe.samples_old, epochs=recipe.epochs, batch=recipe.batch,
                optimizer=recipe.optimizer, new_classes=recipe.new_classes, cache_prefix=recipe.cache_prefix,
                tasks=recipe.tasks, ledgers=ledgers if cache_key == own_key else None,
            )
        frame = prepared[cache_key].evaluate(spec.vary)
        be = breakeven(frame, key=spec.key, target=spec.target, against=spec.against)
        sweeps.append({"title": spec.title or f"Sweep {i + 1}: " + ", ".join(spec.spec or {k: "" for k in spec.vary}),
                       "frame": frame, "breakeven": be, "spec": dict(spec.spec), "target": spec.target,
                       "against": spec.against})
    if engine is None and recipe.engine_dir is not None:
        engine = load_engine(recipe.engine_dir)
    if measured is None and recipe.measured_file is not None:
        measured = load_measured(recipe.measured_file)
    points = sharing_points(model)
    n_params = sum(p.numel() for p in model.parameters())
    setup = {
        "model": {
            "spec": recipe.model, "class": type(model).__name__, "input_shape": list(shape),
            "classes": n_classes, "parameters": n_params, "blocks": [n for n, _ in net.blocks.named_children()],
            "sharing_points": len(points),
        },
        "training": {
            "batch": recipe.batch, "epochs": recipe.epochs, "optimizer": recipe.optimizer,
            "samples_new": recipe.samples_new, "samples_old": recipe.samples_old,
            "new_classes": recipe.new_classes or n_classes, "old_classes": n_classes,
            "tasks": recipe.tasks, "cache_prefix": recipe.cache_prefix,
        },
        "table": table.to_dict(),
        "recipe": str(recipe.path) if recipe.path else None,
        "versions": versions(),
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return ReportData(title=recipe.title, description=recipe.description, setup=setup, layers=prof.layers,
                      compare=cmp, sweeps=sweeps, engine=engine, measured=measured)


# -- formatting ----------------------------------------------------------------------------------------


def _finite(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt_count(v: Any) -> str:
    """``1.234e9`` -> ``1.23 G``; small integers as they are."""
    f = _finite(v)
    if f is None:
        return "–"
    if f == int(f) and abs(f) < 1e4:
        return f"{int(f)}"
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(f) >= div:
            return f"{f / div:.3g} {suffix}"
    return f"{f:.3g}"


def fmt_energy(pj: Any) -> str:
    """pJ -> J / mJ / µJ / nJ / pJ with 3 significant digits."""
    f = _finite(pj)
    if f is None:
        return "–"
    for div, unit in ((1e18, "MJ"), (1e15, "kJ"), (1e12, "J"), (1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")):
        if abs(f) >= div:
            return f"{f / div:.3g} {unit}"
    return f"{f:.3g} pJ"


def fmt_bytes(v: Any) -> str:
    f = _finite(v)
    if f is None:
        return "–"
    for div, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(f) >= div:
            return f"{f / div:.3g} {unit}"
    return f"{f:.0f} B"


def fmt_x(v: Any) -> str:
    f = _finite(v)
    return "–" if f is None else f"{f:.3g}×"


def fmt_num(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    f = _finite(v)
    if f is None:
        return "–" if v is None or isinstance(v, (int, float)) else str(v)
    return f"{int(f)}" if f == int(f) and abs(f) < 1e6 else f"{f:.4g}"


def fmt_text(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return fmt_num(v)
    return str(v)


def _formatter_for(col: str) -> Callable[[Any], str]:
    if col.startswith("savings") or col.startswith("speedup"):
        return fmt_x
    if "energy" in col and col.endswith("_pj") or col == "energy_pj":
        return fmt_energy
    if col.endswith("_bytes"):
        return fmt_bytes
    if col in ("fraction", "fraction_params", "fraction_macs") or "accuracy" in col or col.endswith("seconds") \
            or col.endswith("seconds_per_epoch") or col == "breakeven":
        return fmt_num
    if "macs" in col or col.endswith(("accesses", "params", "_ops", "words")) or col == "steps":
        return fmt_count
    return fmt_text


def _cell(v: Any, fmt: Callable[[Any], str]) -> dict[str, Any]:
    f = _finite(v)
    numeric = f is not None and not isinstance(v, (bool, str))
    exact = ""
    if numeric:
        exact = f"{f:.6g}" if not float(f).is_integer() else f"{int(f):,}"
    text = fmt(v)
    return {"text": text, "num": numeric, "title": exact, "long": len(text) > 32}


def _table(rows: Sequence[dict], columns: Sequence[tuple[str, str]] | None = None,
           formats: dict[str, Callable] | None = None) -> dict[str, Any]:
    """A table for the template: ``columns`` (key, header); cells pre-formatted, numbers right-aligned."""
    if columns is None:
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        columns = [(k, _header(k)) for k in keys]
    formats = formats or {}
    body = []
    for r in rows:
        body.append([_cell(r.get(k), formats.get(k) or _formatter_for(k)) for k, _ in columns])
    numeric = [any(row[i]["num"] for row in body) for i in range(len(columns))]
    return {"headers": [h for _, h in columns], "rows": body, "numeric": numeric}


def _header(key: str) -> str:
    """``modelled_energy_pj`` -> ``modelled energy`` (values are shown in J units)."""
    return key.removesuffix("_pj").replace("_", " ")


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in frame.to_dict(orient="records")]


def _svg(text: str | None) -> Markup | None:
    return Markup(text) if text else None


# -- appendix: the formulas, from the code's own docstrings --------------------------------------------

_CODE = re.compile(r"``(.+?)``")
_STRONG = re.compile(r"\*\*([^*\n]+?)\*\*")
_EM = re.compile(r"(?<![\w*])\*([^*\n]+?)\*(?![\w*])")
_REF = re.compile(r":(?:func|class|mod|data|meth|attr):`~?([^`]+)`")


def _doc_html(text: str) -> Markup:
    """A docstring as escaped text with ``code`` spans (layout kept by CSS ``white-space: pre-wrap``)."""
    html = str(escape(inspect.cleandoc(text)))
    html = _REF.sub(lambda m: f"<code>{m.group(1)}</code>", html)
    html = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html)
    html = _STRONG.sub(lambda m: f"<strong>{m.group(1)}</strong>", html)
    html = _EM.sub(lambda m: f"<em>{m.group(1)}</em>", html)
    return Markup(html)


def _describe_elementwise(rule: Callable) -> str | None:
    names = getattr(getattr(rule, "__code__", None), "co_freevars", ())
    cells = getattr(rule, "__closure__", None) or ()
    env = dict(zip(names, (c.cell_contents for c in cells)))
    if not {"fwd", "bwd"} <= set(env):
        return None

    def ops(v) -> str:
        parts = [f"{getattr(v, k):g} {k}" for k in ("mac", "add", "mult", "cmp") if getattr(v, k)]
        return " + ".join(parts) or "nothing"

    saved = env.get("saved", 1.0)
    return (f"Element-wise, per output element: forward {ops(env['fwd'])}; backward {ops(env['bwd'])}; "
            f"keeps {saved:g} element(s) for the backward pass.")


def formulas() -> list[dict[str, Any]]:
    """The appendix: module docstrings of ops / counting / price / sharing, every counting rule, optimizers."""
    from . import counting, ops, price, sharing

    out: list[dict[str, Any]] = []
    for mod, title in ((ops, "Counting rules (energymodel.ops)"), (counting, "Training and memory accesses "
                       "(energymodel.counting)"), (price, "Pricing and the dataflow model (energymodel.price)"),
                       (sharing, "Partial network sharing (energymodel.sharing)")):
        out.append({"title": title, "doc": _doc_html(mod.__doc__ or ""), "rules": [], "optimizers": []})
    rules = []
    for name, fn in vars(ops).items():
        if not name.endswith("_rule") or not callable(fn):
            continue
        applies = [cls.__name__ for cls, r in ops.MODULE_RULES.items() if r is fn]
        applies += [f"aten.{op}" for op, r in ops.ATEN_RULES.items() if r is fn]
        doc = fn.__doc__ or _describe_elementwise(fn) or ""
        rules.append({"name": name, "applies": ", ".join(applies), "doc": _doc_html(doc)})
    out[0]["rules"] = rules
    out[1]["optimizers"] = [
        {"name": o.name, "formula": o.formula, "reads": o.reads, "writes": o.writes, "mults": o.mults,
         "adds": o.adds, "state": o.state} for o in counting.OPTIMIZERS.values()
    ]
    return out


# -- rendering -----------------------------------------------------------------------------------------


def _setup_view(setup: dict[str, Any]) -> dict[str, Any]:
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


def _layers_view(layers: pd.DataFrame) -> dict[str, Any]:
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
    from . import plots

    return getattr(plots, name)(*args, **kwargs)


def _compare_view(cmp: pd.DataFrame) -> dict[str, Any]:
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


def _sweep_view(sw: dict[str, Any], base_values: dict[str, float]) -> dict[str, Any]:
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


def _engine_view(engine: dict[str, Any]) -> dict[str, Any]:
    from .plots import calibration_plot, matrix_heatmap, strategies_plot, timing_plot

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


def _measured_view(measured: dict[str, Any]) -> dict[str, Any]:
    from .plots import measured_plot

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


def _template():
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    text = (resources.files("energymodel") / "templates" / "report.html").read_text(encoding="utf-8")
    return env.from_string(text)


def render_report(data: ReportData) -> str:
    """The report as one self-contained HTML document (a string)."""
    from .table import SWEEP_KEYS, load_table

    setup = _setup_view(data.setup or {})
    base_values: dict[str, float] = {}
    tab_dict = (data.setup or {}).get("table")
    if data.sweeps:
        try:
            tab = load_table(tab_dict.get("path") or tab_dict["name"]) if isinstance(tab_dict, dict) else None
        except UserError:
            tab = None
        if tab is not None:
            for full in SWEEP_KEYS:
                short = full.rpartition(".")[2]
                base_values[short] = float(tab.word_bits) if full == "word_bits" else tab.get(full)
    sections = []
    if setup["groups"] or setup["table"]:
        sections.append(("setup", "Setup"))
    layers = _layers_view(data.layers) if data.layers is not None and len(data.layers) else None
    if layers:
        sections.append(("layers", "Per-layer costs"))
    compare = _compare_view(data.compare) if data.compare is not None and len(data.compare) else None
    if compare:
        sections.append(("sharing", "Sharing-fraction comparison"))
    sweeps = [_sweep_view(sw, base_values) for sw in data.sweeps]
    if sweeps:
        sections.append(("sweep", "Energy sweeps"))
    engine = _engine_view(data.engine) if data.engine else None
    if engine:
        sections.append(("engine", "Engine results"))
    measured = _measured_view(data.measured) if data.measured else None
    if measured:
        sections.append(("measured", "Measured vs modelled"))
    sections.append(("appendix", "Appendix: the cost model"))
    return _template().render(
        title=data.title, description=data.description, sections=sections, setup=setup, layers=layers,
        compare=compare, sweeps=sweeps, engine=engine, measured=measured, appendix=formulas(),
    )


def write_report(data: ReportData, path: str | Path) -> Path:
    """Render ``data`` and write it to ``path`` atomically (a failed render never replaces a good file)."""
    from .atomic import write_text

    html = render_report(data)  # fully rendered before anything touches the target
    return write_text(path, html)

