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
    [search]                           # sharing-point search ("auto" share)
    tolerance = 0.02
    [output_calibration]               # per-branch temperature + bias for task-agnostic prediction
    enabled = true

Every field (see :data:`FIELDS` or ``incremental run --help``) is also a command-line flag that overrides
the file: ``--base-epochs 3`` or, equivalently, ``--set base.epochs=3``. A flag's value is read as a TOML
value when it parses as one (``3``, ``0.5``, ``true``, ``[0, 1]``, ``"text"``) and as a plain string
otherwise; list fields also take comma-separated values (``--seeds 0,1,2``).

Unknown, missing or mistyped fields raise :class:`~energymodel.errors.UserError` with a one-line message
naming the field. Relative paths (``data_root``, ``data_cache``, ``out``) are relative to the working
directory. The sections are :mod:`incremental.run.config_sections`; ``[calibration]`` and its flags
(``--calibration-epochs``), the former names of ``[search]``, are read with a warning.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tomllib
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energymodel import defaults
from energymodel.errors import UserError
from incremental.run.config_sections import (
    RENAMED_SECTIONS,
    SECTIONS,
    AgnosticSection,
    OutputCalibrationSection,
    SearchSection,
    TrainSection,
    spec,
)
from incremental.run.config_values import (
    CACHE_CHOICES,
    DATASETS,
    STRATEGIES,
    STRATEGY_ALIASES,
    _bool,
    _choice,
    _dataset,
    _device,
    _energy_table,
    _float,
    _int,
    _list,
    _model,
    _optional,
    _share,
    _str,
    _strategies,
    _tasks,
    parse_flag_value,
)
from incremental.train.config import MEMORY_FORMATS

__all__ = ["RunConfig", "TrainSection", "SearchSection", "OutputCalibrationSection", "FieldSpec", "FIELDS",
           "STRATEGIES", "STRATEGY_ALIASES", "load_config", "parse_flag_value", "flag_name"]

@dataclass
class RunConfig:
    """Everything a run needs. Load with :meth:`from_toml` / :func:`load_config`; see the module docstring."""

    dataset: str = spec(dataclasses.MISSING, _dataset, "data set: " + ", ".join(DATASETS))
    model: str = spec(dataclasses.MISSING, _model, "network: zoo name, package.module:factory or file.py:factory")
    tasks: str = spec(dataclasses.MISSING, _tasks, "classes per task, e.g. 5+5 or 50+10x5")
    blocks: list[str] | None = spec(None, _optional(_list(_str, "module names")), "modules the sharing points "
                                     "follow, dotted paths in call order (none: declared, else found from a trace)")
    name: str | None = spec(None, _optional(_str), "run name (default: the config file's stem)")
    data_root: str | None = spec(None, _optional(_str), "data folder (fashion-mnist defaults to Debian's package)")
    class_order: list[int] | None = spec(None, _optional(_list(_int(0), "class ids")),
                                          "order in which classes arrive (a permutation)")
    order_seed: int | None = spec(None, _optional(_int(0)), "draw a random class order with this seed")
    train_per_class: int | None = spec(None, _optional(_int(2)), "subsample training images per class")
    test_per_class: int | None = spec(None, _optional(_int(1)), "subsample test images per class (a subset drawn "
                                      "per seed, so mean ± std covers the test images as well as training)")
    validation_fraction: float = spec(0.1, _float(0.0, 1.0, open_high=True),
                                      "share of each task's training images kept as its validation split: never "
                                      "trained or fitted on; every method's accuracy on it is reported (choices are "
                                      "made on it, never on test images); 0: none")
    image_size: int | None = spec(None, _optional(_int(1)), "imagefolder: resize images to this square size")
    data_cache: str | None = spec(None, _optional(_str), "imagefolder: keep decoded images in this folder")
    data_workers: int = spec(0, _int(0), "imagefolder: decoding processes (0: one per CPU core)")
    augment: bool = spec(False, _bool, "random crop (pad 4) + horizontal flip while training")
    share: str | int | float = spec("auto", _share,
                                     "sharing point: auto (search), a block index k, or a fraction in [0, 1]")
    strategies: list[str] = spec(list(STRATEGIES), _strategies, "strategies to compare: " + ", ".join(STRATEGIES))
    seeds: list[int] = spec([0], _list(_int(0), "seeds"), "seeds; several aggregate to mean ± std")
    retrain_epochs: int | None = spec(None, _optional(_int(1)),
                                       "epochs of each full retraining from scratch (none: the base network's)")
    device: str = spec("auto", _device, "auto (CUDA when available), cpu, cuda or cuda:N")
    cache_features: str = spec("auto", _choice(*CACHE_CHOICES), "cache frozen-trunk features: auto, on or off")
    memory_format: str = spec("contiguous", _choice(*MEMORY_FORMATS),
                              "layout of weights and image batches while training: contiguous or channels_last "
                              "(faster convolutions on most CPUs and GPUs; weights differ in the last bits)")
    energy_table: str = spec(defaults.ENERGY_TABLE, _energy_table, "energy table for the modelled costs")
    out: str = spec("out/run", _str, "run directory")
    eval_batch: int = spec(256, _int(1), "batch size for evaluation")
    num_workers: int = spec(0, _int(0), "DataLoader worker processes")
    progress: bool = spec(True, _bool, "show progress bars")
    base: TrainSection = field(default_factory=TrainSection)
    branch: TrainSection = field(default_factory=TrainSection)
    search: SearchSection = field(default_factory=SearchSection)
    output_calibration: OutputCalibrationSection = field(default_factory=OutputCalibrationSection)
    agnostic: AgnosticSection = field(default_factory=AgnosticSection)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> RunConfig:
        """Build and validate from a (TOML-shaped) mapping; ``source`` prefixes every error message."""
        if not isinstance(data, Mapping):
            raise UserError(f"{source}: expected a table of fields, got {type(data).__name__}")
        data = _renamed(data, source)
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
            from incremental.data import parse_task_sizes

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
        if data.get("blocks") is None:  # runs made before the field existed keep their fingerprint
            data.pop("blocks", None)
        if data.get("memory_format") == "contiguous":  # likewise
            data.pop("memory_format", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def train_config(self, section: str, seed: int, epochs: int | None = None):
        """A :class:`~incremental.train.config.TrainConfig` for ``[base]`` or ``[branch]`` with ``seed``."""
        from incremental.train.config import TrainConfig

        s: TrainSection = getattr(self, section)
        return TrainConfig(
            epochs=s.epochs if epochs is None else epochs, batch_size=s.batch, lr=s.lr, momentum=s.momentum,
            weight_decay=s.weight_decay, optimizer=s.optimizer, seed=int(seed), device=self.device,
            num_workers=self.num_workers, cache_features=self.cache_features, lr_schedule=s.lr_schedule,
            progress=self.progress, memory_format=self.memory_format,
        )

    @property
    def task_sizes(self) -> list[int]:
        from incremental.data import parse_task_sizes

        return parse_task_sizes(self.tasks)


# ---------------------------------------------------------------------------- helpers
def _renamed(data: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """``data`` with former section names (:data:`RENAMED_SECTIONS`) under their names now, with a warning."""
    old = [k for k in RENAMED_SECTIONS if k in data]
    if not old:
        return data
    out = dict(data)
    for key in old:
        new = RENAMED_SECTIONS[key]
        if new in out:
            raise UserError(f"{source}: both [{key}] and [{new}] given; [{key}] is the former name of [{new}]")
        warnings.warn(f"{source}: [{key}] is now [{new}] (the old name is read until the next release)",
                      FutureWarning, stacklevel=3)
        out[new] = out.pop(key)
    return out


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


#: Every configurable field, top-level first, then ``base.*``, ``branch.*``, ``search.*``, ``output_calibration.*``,
#: ``agnostic.*``.
FIELDS: list[FieldSpec] = _field_specs()
_PATHS = {f.path for f in FIELDS}


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any], source: str = "command line") -> None:
    """Set dotted-key ``overrides`` into the TOML-shaped ``data`` in place (string values parsed as flags)."""
    for path, raw in overrides.items():
        section = path.split(".", 1)[0]
        if "." in path and section in RENAMED_SECTIONS:
            new = f"{RENAMED_SECTIONS[section]}.{path.split('.', 1)[1]}"
            warnings.warn(f"{source}: {path} ({flag_name(path)}) is now {new} ({flag_name(new)})",
                          FutureWarning, stacklevel=2)
            path = new
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
        data = dict(_renamed(data, source))  # former section names, warned about once
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
