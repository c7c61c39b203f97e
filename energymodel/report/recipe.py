"""Report recipes: a TOML file that says what an HTML report (``energymodel report``) shows.

::

    [report]
    title = "ResNet-18 on CIFAR-100: 50 + 50 classes"     # required
    description = "..."                                   # optional free text

    [model]
    name = "cifar_resnet18"        # required: zoo name, package.module:factory or path/to/file.py:factory
    input = [3, 32, 32]            # C,H,W (default: the zoo model's own)
    classes = 50                   # classes of the base network (default: the model's)

    [train]                        # the new task (all optional; defaults shown)
    batch = 128                    # defaults: energymodel.defaults
    epochs = 5
    optimizer = "momentum"         # sgd | momentum | adam
    samples_new = 5000
    samples_old = 5000
    new_classes = 50               # default: as many as the base network has
    cache_prefix = false
    tasks = 1
    k = [0, 2, 4]                  # sharing points by index (see `energymodel points`); default: all
    fraction = [0.5]               # or by fraction of the conv/linear layers (nearest point)
                                   # (deprecated: share = [...], an int an index, a float a fraction)

    [energy]
    table = "45nm"                 # a shipped table or a .toml file (default: energymodel.defaults)

    [[sweep]]                      # optional, repeatable
    vary = { dram = "100:2000:20" }        # KEY = "START:STOP:N" | "START:STOP:Nlog" | [values]
    target = 1.0                   # break-even savings (default 1.0)
    against = "regular"            # or "retraining"
    key = "dram_mac_ratio"         # break-even along this key (default: as energymodel.analysis.sweep.breakeven)
    log = false                    # log-spaced grids

    [engine]
    run_dir = "../out/run"         # optional: an incremental run folder holding results.json

    [measured]
    file = "measured.json"         # optional: measured vs modelled timings (benchmarks)

Relative paths resolve against the recipe's folder. A missing, unknown or mistyped field is refused with
a one-line :class:`~energymodel.errors.UserError` naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from energymodel import defaults as D
from energymodel.errors import UserError

__all__ = ["Recipe", "SweepSpec", "load_recipe", "parse_recipe", "MAX_RECIPE_BYTES"]


@dataclass
class SweepSpec:
    """One ``[[sweep]]``: the grids (column name -> values) and how to report the break-even."""

    vary: dict[str, np.ndarray]
    spec: dict[str, str] = field(default_factory=dict)  # column name -> the text it came from
    target: float = 1.0
    against: str = "regular"
    key: str | None = None
    share: list[float | int] | None = None
    title: str | None = None


@dataclass
class Recipe:
    """What a report shows. Build it in code or with :func:`load_recipe`."""

    title: str
    model: str
    input_shape: tuple[int, ...] | None = None
    classes: int | None = None
    description: str = ""
    batch: int = D.BATCH
    epochs: int = D.EPOCHS
    optimizer: str = D.OPTIMIZER
    samples_new: int = D.SAMPLES_NEW
    samples_old: int = D.SAMPLES_OLD
    new_classes: int | None = None
    cache_prefix: bool = False
    tasks: int = D.TASKS
    share: list[float | int] | None = None
    table: str = D.ENERGY_TABLE
    sweeps: list[SweepSpec] = field(default_factory=list)
    engine_dir: Path | None = None
    measured_file: Path | None = None
    path: Path | None = None


_SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {  # section -> field -> (type, required)
    "report": {"title": ("str", True), "description": ("str", False)},
    "model": {"name": ("str", True), "input": ("shape", False), "classes": ("posint", False)},
    "train": {
        "batch": ("posint", False), "epochs": ("posint", False), "optimizer": ("str", False),
        "samples_new": ("posint", False), "samples_old": ("posint", False), "new_classes": ("posint", False),
        "cache_prefix": ("bool", False), "tasks": ("posint", False), "share": ("share", False),
        "k": ("klist", False), "fraction": ("fraclist", False),
    },
    "energy": {"table": ("str", False)},
    "engine": {"run_dir": ("str", True)},
    "measured": {"file": ("str", True)},
}
_SWEEP_FIELDS = {"vary": ("table", True), "target": ("posnum", False), "against": ("str", False),
                 "key": ("str", False), "log": ("bool", False), "share": ("share", False), "title": ("str", False)}
_REQUIRED_SECTIONS = ("report", "model")


def _check(value: Any, kind: str, label: str) -> Any:
    def bad(expected: str) -> UserError:
        return UserError(f"{label} must be {expected}, got {type(value).__name__} {value!r}")

    if kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "posint":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad("a positive integer")
        return value
    if kind == "posnum":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise bad("a positive number")
        return float(value)
    if kind == "shape":
        if not isinstance(value, list) or not value or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value
        ):
            raise bad("a list of positive integers such as [3, 32, 32]")
        return tuple(value)
    if kind == "share":
        if not isinstance(value, list) or not value or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in value
        ):
            raise bad("a list of sharing point indices or fractions")
        return list(value)
    if kind == "klist":
        if not isinstance(value, list) or not value or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value
        ):
            raise bad("a list of sharing point indices such as [0, 2, 4]")
        return list(value)
    if kind == "fraclist":
        if not isinstance(value, list) or not value or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1 for v in value
        ):
            raise bad("a list of fractions in [0, 1] such as [0.25, 0.5]")
        return [float(v) for v in value]
    if kind == "table":
        if not isinstance(value, dict) or not value:
            raise bad("a table such as { dram = \"100:2000:20\" }")
        return value
    raise AssertionError(kind)  # pragma: no cover


def _fields(section: dict, schema: dict[str, tuple[str, bool]], where: str) -> dict[str, Any]:
    for k in section:
        if k not in schema:
            raise UserError(f"{where}: unknown field {k!r} (allowed: {', '.join(schema)})")
    out = {}
    for k, (kind, required) in schema.items():
        if k not in section:
            if required:
                raise UserError(f"{where}: missing field {k!r}")
            continue
        out[k] = _check(section[k], kind, f"{where} {k}")
    return out


def _resolve_path(text: str, base: Path) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else (base / p)


def _is_pathlike(text: str) -> bool:
    return text.endswith(".toml") or "/" in text or "\\" in text


def _model_spec(name: str, base: Path) -> str:
    """A ``file.py:factory`` spec with a relative file resolves against the recipe folder."""
    if ":" in name:
        target, _, attr = name.rpartition(":")
        if (target.endswith(".py") or "/" in target) and not Path(target).is_absolute():
            return f"{base / target}:{attr}"
    return name


def _sweep(raw: Any, index: int, base_log: bool = False) -> SweepSpec:
    from energymodel.analysis.grid import parse_range
    from energymodel.analysis.sweep import column_name

    where = f"[[sweep]] #{index}"
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a table, got {type(raw).__name__}")
    f = _fields(raw, _SWEEP_FIELDS, where)
    log = f.get("log", base_log)
    vary: dict[str, np.ndarray] = {}
    spec: dict[str, str] = {}
    for key, value in f["vary"].items():
        label = f"{where} vary.{key}"
        try:
            col = column_name(key)
        except UserError as exc:
            raise UserError(f"{label}: {exc}") from None
        if col in vary:
            raise UserError(f"{label}: {col!r} is varied twice")
        if isinstance(value, str):
            vary[col] = parse_range(value, log=log, what=label)
            spec[col] = value
        elif isinstance(value, list) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            vary[col] = np.asarray(value, dtype=float)
            spec[col] = ", ".join(f"{v:g}" for v in value)
        else:
            raise UserError(f"{label} must be \"START:STOP:N\" or a list of numbers, got {value!r}")
    against = f.get("against", "regular")
    if against not in ("regular", "retraining"):
        raise UserError(f"{where} against must be \"regular\" or \"retraining\", got {against!r}")
    return SweepSpec(vary=vary, spec=spec, target=f.get("target", 1.0), against=against, key=f.get("key"),
                     share=f.get("share"), title=f.get("title"))


def parse_recipe(data: dict[str, Any], base: str | Path = ".", *, where: str = "recipe") -> Recipe:
    """Validate a parsed TOML document (paths relative to ``base``) and build a :class:`Recipe`."""
    from energymodel.count.phases import OPTIMIZERS

    base = Path(base)
    allowed = (*_SCHEMA, "sweep")
    for k in data:
        if k not in allowed:
            what = f"section [{k}]" if isinstance(data[k], dict) else f"top-level field {k!r}"
            raise UserError(f"{where}: unknown {what} (a report recipe has the sections {', '.join(allowed)})")
    for sec in _REQUIRED_SECTIONS:
        if sec not in data:
            raise UserError(f"{where}: missing section [{sec}]")
    sections: dict[str, dict[str, Any]] = {}
    for sec, schema in _SCHEMA.items():
        if sec in data:
            if not isinstance(data[sec], dict):
                raise UserError(f"{where}: [{sec}] must be a table, got {type(data[sec]).__name__}")
            sections[sec] = _fields(data[sec], schema, f"{where}: [{sec}]")
    rep, mod = sections["report"], sections["model"]
    train, energy = sections.get("train", {}), sections.get("energy", {})
    opt = train.get("optimizer", D.OPTIMIZER)
    if opt not in OPTIMIZERS:
        raise UserError(f"{where}: [train] optimizer must be one of {', '.join(OPTIMIZERS)}, got {opt!r}")
    table = energy.get("table", D.ENERGY_TABLE)
    if _is_pathlike(table):
        table = str(_resolve_path(table, base))
    raw_sweeps = data.get("sweep", [])
    if isinstance(raw_sweeps, dict):
        raw_sweeps = [raw_sweeps]
    if not isinstance(raw_sweeps, list):
        raise UserError(f"{where}: [[sweep]] must be an array of tables")
    sweeps = [_sweep(s, i + 1) for i, s in enumerate(raw_sweeps)]
    engine_dir = None
    if "engine" in sections:
        engine_dir = _resolve_path(sections["engine"]["run_dir"], base)
        if not (engine_dir / "results.json").is_file():
            what = "does not exist" if not engine_dir.exists() else "has no results.json"
            raise UserError(f"{where}: [engine] run_dir {engine_dir} {what}")
    measured = None
    if "measured" in sections:
        measured = _resolve_path(sections["measured"]["file"], base)
        if not measured.is_file():
            raise UserError(f"{where}: [measured] file {measured} does not exist")
    return Recipe(
        title=rep["title"], description=rep.get("description", ""), model=_model_spec(mod["name"], base),
        input_shape=mod.get("input"), classes=mod.get("classes"), batch=train.get("batch", D.BATCH),
        epochs=train.get("epochs", D.EPOCHS), optimizer=opt, samples_new=train.get("samples_new", D.SAMPLES_NEW),
        samples_old=train.get("samples_old", D.SAMPLES_OLD), new_classes=train.get("new_classes"),
        cache_prefix=train.get("cache_prefix", False), tasks=train.get("tasks", D.TASKS), share=_share(train),
        table=table, sweeps=sweeps, engine_dir=engine_dir, measured_file=measured,
    )


#: the largest recipe file read (1 MiB), checked before parsing
MAX_RECIPE_BYTES = 1 << 20


def _share(train: dict[str, Any]) -> list[float | int] | None:
    """``k`` (indices, ints) and ``fraction`` (floats) of ``[train]``, or the deprecated ``share``."""
    if "k" not in train and "fraction" not in train:
        return train.get("share")
    return [*train.get("k", []), *train.get("fraction", [])] + list(train.get("share") or [])


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (at most :data:`MAX_RECIPE_BYTES`); relative paths in it resolve
    against its folder."""
    from energymodel.price.table import read_toml

    p = Path(path)
    try:
        found = p.is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise UserError(f"cannot read recipe file {p}: {exc.strerror or exc}") from None
    if not found:
        raise UserError(f"recipe file not found: {p}")
    data = read_toml(p, f"recipe {p}", MAX_RECIPE_BYTES, UserError)
    recipe = parse_recipe(data, p.resolve().parent, where=f"recipe {p}")
    recipe.path = p
    return recipe
