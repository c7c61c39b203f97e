"""Report inputs: :class:`ReportData`, and the checked engine-results and measured-timings sections."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from energymodel.errors import UserError

#: ids of the report's sections, in order (optional ones appear only when they have data)
SECTION_IDS = ("setup", "layers", "sharing", "sweep", "engine", "measured", "appendix")

#: engine ``strategies`` columns shown first, in this order (any other keys follow)
ENGINE_STRATEGY_COLUMNS = [
    "strategy", "share", "fraction", "task_aware_accuracy", "task_agnostic_accuracy",
    "task_agnostic_uncalibrated_accuracy", "modelled_train_energy_pj", "energy_pj", "storage_bytes",
    "measured_train_seconds", "macs",
]
_ENGINE_KEYS = ("strategies", "matrices", "calibration_curve", "chosen_share", "timing", "tolerance", "search",
                "agnostic_methods", "agnostic_default", "headline", "references")
_MEASURED_COLUMNS = [
    "label", "share", "measured_seconds_per_epoch", "modelled_macs", "modelled_energy_pj", "speedup_measured",
    "speedup_modelled_macs", "speedup_modelled_energy",
]


@dataclass
class ReportData:
    """Everything a report shows; every part but ``title`` may be empty.

    ``setup``: nested dicts (model, training, energy table, versions ...); ``layers``: per-layer costs of
    one training step (:func:`energymodel.analysis.profile.profile` columns); ``compare``:
    :func:`energymodel.analysis.sharing.compare`'s frame; ``sweeps``: dicts with ``frame`` (a sweep frame),
    ``breakeven`` (its :func:`~energymodel.analysis.sweep.breakeven`), ``spec`` (key -> grid text), ``target``,
    ``against``, ``title``; ``engine``: :func:`engine_section_from_results`; ``measured``:
    :func:`measured_section`; ``residency``: which activations of the profiled step stay on chip.
    """

    title: str
    setup: dict[str, Any] = field(default_factory=dict)
    layers: pd.DataFrame | None = None
    compare: pd.DataFrame | None = None
    sweeps: list[dict[str, Any]] = field(default_factory=list)
    engine: dict[str, Any] | None = None
    measured: dict[str, Any] | None = None
    description: str = ""
    #: the residency plan of the profiled step (:meth:`energymodel.analysis.profile.Profile.residency`)
    residency: pd.DataFrame | None = None


# -- inputs: engine results and measured timings ----------------------------------------------------


def _list_of_dicts(value: Any, what: str) -> list[dict]:
    if not isinstance(value, list) or any(not isinstance(r, dict) for r in value):
        raise UserError(f"{what} must be a list of objects")
    return [dict(r) for r in value]


def _check_share(value: Any, what: str) -> None:
    """A sharing point is an integer >= 0 (a label, a fraction or maths markup there is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{what} must be a sharing point (an integer >= 0), got {value!r}")


def engine_section_from_results(results: dict[str, Any]) -> dict[str, Any]:
    """Check an engine results dict (an incremental run's ``results.json``) and return the report section.

    Every key is optional: ``strategies`` (list of objects, see :data:`ENGINE_STRATEGY_COLUMNS`),
    ``matrices`` (``{name: {"tasks": [...], "values": [[number|null, ...], ...]}}``), ``calibration_curve``
    (list of ``{share, fraction, accuracy, energy_pj, within_tolerance}``), ``chosen_share`` (int) and
    ``timing`` (list of ``{label, measured_seconds, modelled_macs, modelled_energy_pj}``), ``tolerance``
    (number: the sharing-point search's accuracy tolerance), ``search`` (``{per_seed: [{seed, chosen,
    reference_accuracy, warning}], oracle: [{share, accuracy, energy_pj}] | null}``), ``agnostic_methods``
    (``[{method, description, default}]``), ``agnostic_default`` (str), ``headline`` (``{text: [sentence, ...],
    at_chance: [...], claims_saving}``: the run's whole-lifecycle headline) and ``references`` (``{base_only:
    {method: {split: {mean, std}}}, joint_trunk: {split: {mean, std}}}``). A strategy may carry
    ``agnostic``: ``{method: {accuracy, std, storage_bytes}}``. Other keys are
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
        curve = _list_of_dicts(results["calibration_curve"], "engine results: 'calibration_curve'")
        for i, r in enumerate(curve):
            _check_share(r.get("share"), f"engine results: calibration_curve[{i}].share")
        out["calibration_curve"] = curve
    if results.get("chosen_share") is not None:
        cs = results["chosen_share"]
        if isinstance(cs, bool) or not isinstance(cs, int):
            raise UserError(f"engine results: 'chosen_share' must be an integer, got {cs!r}")
        out["chosen_share"] = cs
    if results.get("timing") is not None:
        out["timing"] = _list_of_dicts(results["timing"], "engine results: 'timing'")
    if results.get("tolerance") is not None:
        tol = results["tolerance"]
        if isinstance(tol, bool) or not isinstance(tol, (int, float)):
            raise UserError(f"engine results: 'tolerance' must be a number, got {tol!r}")
        out["tolerance"] = float(tol)
    if results.get("search") is not None:
        search = results["search"]
        if not isinstance(search, dict):
            raise UserError("engine results: 'search' must be an object {per_seed, oracle}")
        out["search"] = {"per_seed": _list_of_dicts(search.get("per_seed") or [], "engine results: search.per_seed"),
                         "oracle": (None if search.get("oracle") is None
                                    else _list_of_dicts(search["oracle"], "engine results: search.oracle"))}
    if results.get("agnostic_methods") is not None:
        methods = _list_of_dicts(results["agnostic_methods"], "engine results: 'agnostic_methods'")
        for i, m in enumerate(methods):
            if not isinstance(m.get("method"), str):
                raise UserError(f"engine results: agnostic_methods[{i}] needs a 'method' (a string)")
        out["agnostic_methods"] = methods
    if results.get("agnostic_default") is not None:
        if not isinstance(results["agnostic_default"], str):
            raise UserError("engine results: 'agnostic_default' must be a string")
        out["agnostic_default"] = results["agnostic_default"]
    if results.get("headline") is not None:
        head = results["headline"]
        if not isinstance(head, dict) or not isinstance(head.get("text"), list) \
                or any(not isinstance(t, str) for t in head["text"]):
            raise UserError("engine results: 'headline' must be an object whose 'text' is a list of sentences")
        out["headline"] = head
    if results.get("references") is not None:
        refs = results["references"]
        if not isinstance(refs, dict) or any(not isinstance(v, dict) for v in refs.values()):
            raise UserError("engine results: 'references' must be an object {name: {...}}")
        out["references"] = refs
    for i, r in enumerate(out.get("strategies", [])):
        if r.get("agnostic") is not None and (not isinstance(r["agnostic"], dict)
                                               or any(not isinstance(v, dict) for v in r["agnostic"].values())):
            raise UserError(f"engine results: strategies[{i}].agnostic must be an object {{method: {{accuracy, "
                            "std, storage_bytes}}}")
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
        raise UserError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise UserError(f"{what} {path} is nested too deeply to be read") from None


def load_measured(path: str | Path) -> dict[str, Any]:
    """Read and check a measured-vs-modelled JSON file."""
    return measured_section(_load_json(Path(path), "measured file"))


def load_engine(run_dir: str | Path) -> dict[str, Any]:
    """Read ``RUN_DIR/results.json`` and return the engine section."""
    path = Path(run_dir) / "results.json"
    results = _load_json(path, "engine results")
    return engine_section_from_results(results.get("report", results) if isinstance(results, dict) else results)
