"""Run configuration: :class:`RunConfig`, read from TOML, every field also settable from the command line.

A run configuration is a TOML file with top-level fields and four sections::

    name = "fashion-mnist-demo"
    dataset = "fashion-mnist"          # required
    model = "smallcnn"                 # required: zoo name, package.module:factory or file.py:factory
    tasks = "5+5"                      # required: classes per task ("50+10x5" = 50, then 5 tasks of 10)
    train_per_class = 1500
    share = "auto"                     # "auto" (sharing-point search), a block index, or a fraction

    [base]                             # training of the base network on task 0
    epochs = 2
    [branch]                           # training of every later task (all strategies)
    epochs = 2
    [calibration]                      # sharing-point search ("auto" share)
    tolerance = 0.02
    [output_calibration]               # per-branch temperature + bias for task-agnostic prediction
    enabled = true

Every field (see :data:`FIELDS` or ``incremental run --help``) is also a command-line flag that overrides
the file: ``--base-epochs 3`` or, equivalently, ``--set base.epochs=3``. A flag's value is read as a TOML
value when it parses as one (``3``, ``0.5``, ``true``, ``[0, 1]``, ``"text"``) and as a plain string
otherwise; list fields also take comma-separated values (``--seeds 0,1,2``).

Unknown, missing or mistyped fields raise :class:`~energymodel.errors.UserError` with a one-line message
naming the field. Relative paths (``data_root``, ``data_cache``, ``out``) are relative to the working
directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energymodel import defaults
from energymodel.errors import UserError

__all__ = [
    "RunConfig",
    "TrainSection",
    "SearchSection",
    "OutputCalibrationSection",
    "FieldSpec",
    "FIELDS",
    "STRATEGIES",
    "STRATEGY_ALIASES",
    "load_config",
    "parse_flag_value",
    "flag_name",
]

#: Strategies a run can compare, in report order (config names; see :mod:`incremental.baselines`).
STRATEGIES = ("partial-sharing", "regular-incremental", "feature-extraction", "naive-finetune", "full-retraining")
#: Config strategy name -> name in :func:`incremental.baselines.make_strategy`.
STRATEGY_ALIASES = {
    "partial-sharing": "partial_sharing",
    "regular-incremental": "regular_incremental",
    "feature-extraction": "feature_extraction",
    "naive-finetune": "fine_tuning",
    "full-retraining": "full_retraining",
}
_STRATEGY_SYNONYMS = {"fine-tuning": "naive-finetune", "finetune": "naive-finetune", "naive-fine-tuning": "naive-finetune"}

DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder", "digits")
OPTIMIZERS = ("sgd", "momentum", "adam")
LR_SCHEDULES = ("cosine", "none")
CACHE_CHOICES = ("auto", "on", "off")
CALIBRATION_METHODS = ("nll", "zscore")

# ---------------------------------------------------------------------------- value checkers
# A checker takes (value, where) and returns the normalised value or raises UserError(where: ...).
Checker = Callable[[Any, str], Any]


def _bad(where: str, expected: str, value: Any) -> UserError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return UserError(f"{where}: expected {expected}, got {shown} ({type(value).__name__})")


def _int(minimum: int | None = None) -> Checker:
    def check(value: Any, where: str) -> int:
        what = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(where, what, value)
        if minimum is not None and value < minimum:
            raise _bad(where, what, value)
        return int(value)

    check.expected = "integer" + (f" >= {minimum}" if minimum is not None else "")  # type: ignore[attr-defined]
    return check


def _float(minimum: float | None = None, maximum: float | None = None, open_low: bool = False,
           open_high: bool = False) -> Checker:
    low = "(" if open_low else "["
    high = ")" if open_high else "]"
    rng = f" in {low}{minimum if minimum is not None else '-inf'}, {maximum if maximum is not None else 'inf'}{high}"

    def check(value: Any, where: str) -> float:
        what = "a number" + (rng if minimum is not None or maximum is not None else "")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(where, what, value)
        v = float(value)
        if not math.isfinite(v):
            raise _bad(where, what, value)
        if minimum is not None and (v < minimum or (open_low and v == minimum)):
            raise _bad(where, what, value)
        if maximum is not None and (v > maximum or (open_high and v == maximum)):
            raise _bad(where, what, value)
        return v

    check.expected = "number" + rng  # type: ignore[attr-defined]
    return check


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.strip().lower() in ("true", "yes", "on", "1")
    raise _bad(where, "true or false", value)


_bool.expected = "true/false"  # type: ignore[attr-defined]


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(where, "a non-empty string", value)
    return value.strip()


_str.expected = "string"  # type: ignore[attr-defined]


def _choice(*choices: str) -> Checker:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or value.strip() not in choices:
            raise _bad(where, f"one of {', '.join(choices)}", value)
        return value.strip()

    check.expected = "|".join(choices)  # type: ignore[attr-defined]
    return check


def _optional(inner: Checker) -> Checker:
    def check(value: Any, where: str) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        return inner(value, where)

    check.expected = f"{getattr(inner, 'expected', 'value')} or none"  # type: ignore[attr-defined]
    return check


def _split_list(value: Any) -> Any:
    """A comma-separated string (from the command line) as a list of TOML-parsed items."""
    if isinstance(value, str):
        items = [v for v in (p.strip() for p in value.split(",")) if v]
        return [parse_flag_value(v) for v in items]
    return value


def _list(inner: Checker, what: str, unique: bool = True, nonempty: bool = True) -> Checker:
    def check(value: Any, where: str) -> list:
        value = _split_list(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # a single number is a one-element list (``--seeds 0``)
        if not isinstance(value, list):
            raise _bad(where, f"a list of {what}", value)
        out = [inner(v, where[:-1] + f"[{i}]'" if where.endswith("'") else f"{where}[{i}]")
               for i, v in enumerate(value)]
        if nonempty and not out:
            raise _bad(where, f"a non-empty list of {what}", value)
        if unique and len(set(map(json.dumps, out))) != len(out):
            raise UserError(f"{where}: duplicate entries in {out}")
        return out

    check.expected = f"list of {what}"  # type: ignore[attr-defined]
    return check


def _dataset(value: Any, where: str) -> str:
    return _choice(*DATASETS)(value, where)


_dataset.expected = "|".join(DATASETS)  # type: ignore[attr-defined]


def _model(value: Any, where: str) -> str:
    name = _str(value, where)
    if ":" not in name:
        from energymodel.zoo import zoo_names

        if name not in zoo_names():
            close = difflib.get_close_matches(name, zoo_names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (zoo: {', '.join(zoo_names())})"
            raise UserError(f"{where}: unknown model {name!r}{hint}; or give package.module:factory / file.py:factory")
    return name


_model.expected = "zoo name or module:factory"  # type: ignore[attr-defined]


def _tasks(value: Any, where: str) -> str:
    from .data import parse_task_sizes

    text = _str(value, where)
    try:
        sizes = parse_task_sizes(text)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    if len(sizes) < 2:
        raise UserError(f"{where}: {text!r} defines one task; incremental learning needs at least two (e.g. '5+5')")
    return text


_tasks.expected = "task sizes such as '5+5'"  # type: ignore[attr-defined]


def _share(value: Any, where: str) -> str | int | float:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool):
        raise _bad(where, "'auto', a sharing-point index or a fraction in [0, 1]", value)
    if isinstance(value, int):
        if value < 0:
            raise _bad(where, "'auto', a sharing-point index >= 0 or a fraction in [0, 1]", value)
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0:
        return float(value)
    raise _bad(where, "'auto', a sharing-point index or a fraction in [0, 1]", value)


_share.expected = "auto | index | fraction"  # type: ignore[attr-defined]


def _candidates(value: Any, where: str) -> str | list[int]:
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    return sorted(_list(_int(0), "sharing-point indices")(value, where))


_candidates.expected = "all | list of indices"  # type: ignore[attr-defined]


def _strategy(value: Any, where: str) -> str:
    if isinstance(value, str):
        name = value.strip().lower().replace("_", "-")
        name = _STRATEGY_SYNONYMS.get(name, name)
        if name in STRATEGIES:
            return name
    raise _bad(where, f"one of {', '.join(STRATEGIES)}", value)


def _strategies(value: Any, where: str) -> list[str]:
    names = _list(_strategy, "strategy names")(value, where)
    return [s for s in STRATEGIES if s in names]  # canonical order


_strategies.expected = "list of " + "|".join(STRATEGIES)  # type: ignore[attr-defined]


def _energy_table(value: Any, where: str) -> str:
    from energymodel.profile import as_table

    name = _str(value, where)
    try:
        as_table(name)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    return name


_energy_table.expected = "energy table name or .toml path"  # type: ignore[attr-defined]


def _device(value: Any, where: str) -> str:
    name = _str(value, where).lower()
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise _bad(where, "auto, cpu, cuda or cuda:N", value)


_device.expected = "auto|cpu|cuda|cuda:N"  # type: ignore[attr-defined]


def _spec(default: Any, check: Checker, help: str) -> Any:  # noqa: A002 - mirrors argparse
    meta = {"check": check, "help": help}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------- sections
@dataclass
class TrainSection:
    """Training hyper-parameters of one phase (``[base]``: task 0; ``[branch]``: every later task)."""

    epochs: int = _spec(defaults.EPOCHS, _int(1), "passes over the training data")
    batch: int = _spec(defaults.BATCH, _int(1), "mini-batch size")
    lr: float = _spec(0.05, _float(0.0, 3.4028234663852886e38, open_low=True),
                      "peak learning rate (at most float32's largest value: the parameters' type)")
    optimizer: str = _spec(defaults.OPTIMIZER, _choice(*OPTIMIZERS), "sgd, momentum (SGD with momentum) or adam")
    momentum: float = _spec(0.9, _float(0.0), "momentum of the momentum optimizer")
    weight_decay: float = _spec(defaults.WEIGHT_DECAY, _float(0.0), "L2 weight decay")
    lr_schedule: str = _spec("cosine", _choice(*LR_SCHEDULES), "cosine (per step, to 0) or none")


@dataclass
class SearchSection:
    """Sharing-point calibration (``share = "auto"``): trial branches on a subset of task 1."""

    tolerance: float = _spec(0.02, _float(0.0, 1.0),
                             "accept the deepest sharing point whose accuracy is within this of no sharing")
    subset_per_class: int | None = _spec(200, _optional(_int(2)),
                                         "task-1 training images per class used by the search (none: all)")
    epochs: int = _spec(2, _int(1), "epochs of each trial branch")
    candidates: str | list[int] = _spec("all", _candidates, "sharing points to try: all, or a list of indices")
    val_fraction: float = _spec(0.25, _float(0.0, 1.0, open_low=True, open_high=True),
                                "share of the search subset held out to score each trial")
    min_steps: int = _spec(50, _int(1), "floor on each trial's optimizer steps (more epochs when the subset is small)")
    full_curve: bool = _spec(False, _bool, "try every candidate (else stop at the first, deepest first, within "
                             "tolerance: the same choice for fewer trials)")
    per_task: bool = _spec(False, _bool, "search a sharing point for every new task (else task 1's point for all)")
    oracle: bool = _spec(False, _bool, "also train a full branch at every candidate point and report the search's regret")


@dataclass
class OutputCalibrationSection:
    """Per-task temperature + bias fitted on held-out training data (task-agnostic prediction)."""

    enabled: bool = _spec(True, _bool, "calibrate every task's logits for task-agnostic prediction")
    holdout_fraction: float = _spec(0.1, _float(0.0, 1.0, open_low=True, open_high=True),
                                    "share of each task's training images held out for calibration")
    method: str = _spec("nll", _choice(*CALIBRATION_METHODS), "temperature by NLL (nll) or max-logit spread (zscore)")


def _method(value: Any, where: str) -> str:
    from .agnostic import method_names

    return _choice(*method_names())(value, where)


_method.expected = "task-agnostic method name"  # type: ignore[attr-defined]


def _methods(value: Any, where: str) -> str | list[str]:
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    return _list(_method, "method names")(value, where)


_methods.expected = "all | list of method names"  # type: ignore[attr-defined]


@dataclass
class AgnosticSection:
    """Task-agnostic prediction (no task given): every method in ``methods`` is fitted and reported."""

    method: str = _spec("routed", _method, "the headline method (task_agnostic_accuracy)")
    methods: str | list[str] = _spec("all", _methods, "methods fitted and reported side by side: all, or a list")
    covariance: str = _spec("class", _choice("class", "task"),
                            "Gaussian methods: a covariance per class, or one pooled per task (fewer bytes)")

    def names(self) -> list[str]:
        """The methods to fit, the headline method included, in registry order."""
        from .agnostic import method_names

        chosen = method_names() if self.methods == "all" else list(self.methods)
        return [m for m in method_names() if m in chosen or m == self.method]


SECTIONS: dict[str, type] = {
    "base": TrainSection,
    "branch": TrainSection,
    "calibration": SearchSection,
    "output_calibration": OutputCalibrationSection,
    "agnostic": AgnosticSection,
}


@dataclass
class RunConfig:
    """Everything a run needs. Load with :meth:`from_toml` / :func:`load_config`; see the module docstring."""

    dataset: str = _spec(dataclasses.MISSING, _dataset, "data set: " + ", ".join(DATASETS))
    model: str = _spec(dataclasses.MISSING, _model, "network: zoo name, package.module:factory or file.py:factory")
    tasks: str = _spec(dataclasses.MISSING, _tasks, "classes per task, e.g. 5+5 or 50+10x5")
    name: str | None = _spec(None, _optional(_str), "run name (default: the config file's stem)")
    data_root: str | None = _spec(None, _optional(_str), "data folder (fashion-mnist defaults to Debian's package)")
    class_order: list[int] | None = _spec(None, _optional(_list(_int(0), "class ids")),
                                          "order in which classes arrive (a permutation)")
    order_seed: int | None = _spec(None, _optional(_int(0)), "draw a random class order with this seed")
    train_per_class: int | None = _spec(None, _optional(_int(2)), "subsample training images per class")
    test_per_class: int | None = _spec(None, _optional(_int(1)), "subsample test images per class")
    image_size: int | None = _spec(None, _optional(_int(1)), "imagefolder: resize images to this square size")
    data_cache: str | None = _spec(None, _optional(_str), "imagefolder: keep decoded images in this folder")
    data_workers: int = _spec(0, _int(0), "imagefolder: decoding processes (0: one per CPU core)")
    augment: bool = _spec(False, _bool, "random crop (pad 4) + horizontal flip while training")
    share: str | int | float = _spec("auto", _share,
                                     "sharing point: auto (search), a block index k, or a fraction in [0, 1]")
    strategies: list[str] = _spec(list(STRATEGIES), _strategies, "strategies to compare: " + ", ".join(STRATEGIES))
    seeds: list[int] = _spec([0], _list(_int(0), "seeds"), "seeds; several aggregate to mean ± std")
    retrain_epochs: int | None = _spec(None, _optional(_int(1)),
                                       "epochs of each full retraining from scratch (none: the base network's)")
    device: str = _spec("auto", _device, "auto (CUDA when available), cpu, cuda or cuda:N")
    cache_features: str = _spec("auto", _choice(*CACHE_CHOICES), "cache frozen-trunk features: auto, on or off")
    energy_table: str = _spec(defaults.ENERGY_TABLE, _energy_table, "energy table for the modelled costs")
    out: str = _spec("out/run", _str, "run directory")
    eval_batch: int = _spec(256, _int(1), "batch size for evaluation")
    num_workers: int = _spec(0, _int(0), "DataLoader worker processes")
    progress: bool = _spec(True, _bool, "show progress bars")
    base: TrainSection = field(default_factory=TrainSection)
    branch: TrainSection = field(default_factory=TrainSection)
    calibration: SearchSection = field(default_factory=SearchSection)
    output_calibration: OutputCalibrationSection = field(default_factory=OutputCalibrationSection)
    agnostic: AgnosticSection = field(default_factory=AgnosticSection)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> RunConfig:
        """Build and validate from a (TOML-shaped) mapping; ``source`` prefixes every error message."""
        if not isinstance(data, Mapping):
            raise UserError(f"{source}: expected a table of fields, got {type(data).__name__}")
        top = {f.name: f for f in dataclasses.fields(cls) if f.name not in SECTIONS}
        _unknown(data, list(top) + list(SECTIONS), source, "")
        values: dict[str, Any] = {}
        for name, f in top.items():
            where = f"{source}: field {name!r}"
            if name in data:
                values[name] = f.metadata["check"](data[name], where)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"{source}: missing required field {name!r} ({f.metadata['help']})")
        for section, kind in SECTIONS.items():
            raw = data.get(section, {})
            if not isinstance(raw, Mapping):
                raise UserError(f"{source}: {section!r} must be a table ([{section}]), got {type(raw).__name__}")
            names = [f.name for f in dataclasses.fields(kind)]
            _unknown(raw, names, source, f"{section}.")
            sub = {}
            for f in dataclasses.fields(kind):
                if f.name in raw:
                    sub[f.name] = f.metadata["check"](raw[f.name], f"{source}: field '{section}.{f.name}'")
            values[section] = kind(**sub)
        cfg = cls(**values)
        cfg.check(source)
        return cfg

    @classmethod
    def from_toml(cls, path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> RunConfig:
        """Read ``path`` (TOML) and apply ``overrides`` (``{"base.epochs": 3}``, values as strings or typed)."""
        return load_config(path, overrides)

    def check(self, source: str = "config") -> None:
        """Cross-field checks that need no data (data-dependent checks happen when the run starts)."""
        if self.class_order is not None and self.order_seed is not None:
            raise UserError(f"{source}: give either 'class_order' or 'order_seed', not both")
        if self.class_order is not None:
            from .data import parse_task_sizes

            if sorted(self.class_order) != list(range(len(self.class_order))):
                raise UserError(f"{source}: field 'class_order' must be a permutation of 0..N-1, got {self.class_order}")
            need = sum(parse_task_sizes(self.tasks))
            if need > len(self.class_order):
                raise UserError(f"{source}: field 'class_order' lists {len(self.class_order)} classes, "
                                f"tasks {self.tasks!r} need {need}")

    # ------------------------------------------------------------------ views
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (TOML-shaped; ``None`` kept)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with top-level fields or sections changed (``replace(out="x")``)."""
        data = self.to_dict()
        data.update(changes)
        return RunConfig.from_dict(_drop_none(data), source="config")

    def with_overrides(self, overrides: Mapping[str, Any], source: str = "command line") -> RunConfig:
        """Apply dotted-key overrides (``{"base.epochs": "3", "share": 2}``); strings are parsed like flags."""
        data = _drop_none(self.to_dict())
        apply_overrides(data, overrides, source)
        return RunConfig.from_dict(data, source=source)

    def to_toml(self) -> str:
        """The configuration as TOML (round-trips through :meth:`from_dict`; unset optional fields commented)."""
        data = self.to_dict()
        lines = []
        for key, value in data.items():
            if key in SECTIONS:
                continue
            lines.append(_toml_line(key, value))
        for section in SECTIONS:
            lines.append("")
            lines.append(f"[{section}]")
            for key, value in data[section].items():
                lines.append(_toml_line(key, value))
        return "\n".join(lines) + "\n"

    def fingerprint(self) -> str:
        """Hash of the fields that change results (not ``out``, ``data_root``, ``device``, ``progress``, workers, name).

        ``data_root`` is left out so that a run resumes after its data moved (the data is not hashed).
        """
        import hashlib

        data = self.to_dict()
        for key in ("out", "device", "progress", "num_workers", "data_workers", "name", "data_cache", "data_root"):
            data.pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def train_config(self, section: str, seed: int, epochs: int | None = None):
        """A :class:`~incremental.train.TrainConfig` for ``[base]`` or ``[branch]`` with ``seed``."""
        from .train import TrainConfig

        s: TrainSection = getattr(self, section)
        return TrainConfig(
            epochs=s.epochs if epochs is None else epochs, batch_size=s.batch, lr=s.lr, momentum=s.momentum,
            weight_decay=s.weight_decay, optimizer=s.optimizer, seed=int(seed), device=self.device,
            num_workers=self.num_workers, cache_features=self.cache_features, lr_schedule=s.lr_schedule,
            progress=self.progress,
        )

    @property
    def task_sizes(self) -> list[int]:
        from .data import parse_task_sizes

        return parse_task_sizes(self.tasks)


# ---------------------------------------------------------------------------- helpers
def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (_drop_none(v) if isinstance(v, dict) else v) for k, v in data.items() if v is not None}


def _unknown(data: Mapping[str, Any], known: Iterable[str], source: str, prefix: str) -> None:
    known = list(known)
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise UserError(f"{source}: unknown field {prefix + str(key)!r}{hint}")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_line(key: str, value: Any) -> str:
    if value is None:
        return f"# {key} = (unset)"
    return f"{key} = {_toml_value(value)}"


def parse_flag_value(text: str) -> Any:
    """A command-line value: TOML when it parses (``3``, ``0.5``, ``true``, ``[1, 2]``, ``"x"``), else the string."""
    if not isinstance(text, str):
        return text
    stripped = text.strip()
    try:
        return tomllib.loads(f"v = {stripped}")["v"]
    except (tomllib.TOMLDecodeError, KeyError):
        return stripped
    except RecursionError:
        raise UserError(f"value {stripped[:40]!r}... is nested too deeply") from None


def flag_name(path: str) -> str:
    """``"base.epochs"`` -> ``"--base-epochs"``; ``"data_root"`` -> ``"--data-root"``."""
    return "--" + path.replace(".", "-").replace("_", "-")


@dataclass(frozen=True)
class FieldSpec:
    """One configurable field: dotted ``path``, flag, help text, expected type, default."""

    path: str
    flag: str
    help: str
    expected: str
    default: Any
    required: bool


def _field_specs() -> list[FieldSpec]:
    out = []
    for f in dataclasses.fields(RunConfig):
        if f.name in SECTIONS:
            kind = SECTIONS[f.name]
            inst = kind()
            for g in dataclasses.fields(kind):
                path = f"{f.name}.{g.name}"
                out.append(FieldSpec(path, flag_name(path), g.metadata["help"],
                                     getattr(g.metadata["check"], "expected", "value"), getattr(inst, g.name), False))
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        out.append(FieldSpec(f.name, flag_name(f.name), f.metadata["help"],
                             getattr(f.metadata["check"], "expected", "value"), default, required))
    return out


#: Every configurable field, top-level first, then ``base.*``, ``branch.*``, ``calibration.*``, ``output_calibration.*``.
FIELDS: list[FieldSpec] = _field_specs()
_PATHS = {f.path for f in FIELDS}


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any], source: str = "command line") -> None:
    """Set dotted-key ``overrides`` into the TOML-shaped ``data`` in place (string values parsed as flags)."""
    for path, raw in overrides.items():
        if path not in _PATHS:
            close = difflib.get_close_matches(path, sorted(_PATHS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{source}: unknown field {path!r}{hint}")
        value = parse_flag_value(raw) if isinstance(raw, str) else raw
        if isinstance(value, str) and path in ("name", "data_root", "data_cache", "out", "model", "tasks", "dataset"):
            value = raw.strip()  # paths and names are never TOML-parsed
        if "." in path:
            section, key = path.split(".", 1)
            data.setdefault(section, {})[key] = value
        else:
            data[path] = value


def load_config(path: str | os.PathLike | None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read the TOML file ``path`` (None: start from nothing), apply ``overrides``, validate.

    ``name`` defaults to the file's stem. Errors name the file (or "command line") and the field.
    """
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            with open(p, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise UserError(f"config file {p} not found") from None
        except IsADirectoryError:
            raise UserError(f"config file {p} is a directory") from None
        except OSError as exc:
            raise UserError(f"cannot read config file {p}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"{p}: invalid TOML: {str(exc).splitlines()[0]}") from None
        except UnicodeDecodeError as exc:
            raise UserError(f"{p}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                            "TOML files are UTF-8") from None
        except RecursionError:
            raise UserError(f"{p}: nested too deeply to be a run configuration") from None
        # validate the file alone first so that its errors name the file
        RunConfig.from_dict(_with_required_placeholders(data, overrides), source=source)
        data.setdefault("name", p.stem)
    if overrides:
        apply_overrides(data, overrides)
        source = f"{source} + command line" if path is not None else source
    return RunConfig.from_dict(data, source=source)


def _with_required_placeholders(data: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``data`` with required fields that only the command line provides filled in (for validating the file)."""
    filled = dict(data)
    placeholders = {"dataset": "fashion-mnist", "model": "smallcnn", "tasks": "5+5"}
    for key, value in placeholders.items():
        if key not in filled and overrides and key in overrides:
            filled[key] = value
    return filled
