"""Value checkers of the run configuration: each takes ``(value, where)`` and returns the normalised value or
raises :class:`~energymodel.errors.UserError` naming the field (``where``); plus the names a configuration may use.
"""

from __future__ import annotations

import difflib
import json
import math
import tomllib
from collections.abc import Callable
from typing import Any

from energymodel.errors import UserError

#: Strategies a run can compare, in report order (config names; see :mod:`incremental.train.strategies`).
STRATEGIES = ("partial-sharing", "regular-incremental", "feature-extraction", "naive-finetune", "full-retraining")
#: Config strategy name -> name in :func:`incremental.train.strategies.make_strategy`.
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
        from energymodel.models.zoo import zoo_names

        if name not in zoo_names():
            close = difflib.get_close_matches(name, zoo_names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (zoo: {', '.join(zoo_names())})"
            raise UserError(f"{where}: unknown model {name!r}{hint}; or give package.module:factory / file.py:factory")
    return name


_model.expected = "zoo name or module:factory"  # type: ignore[attr-defined]


def _tasks(value: Any, where: str) -> str:
    from incremental.data import parse_task_sizes

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
    from energymodel.analysis.profile import as_table

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


def _method(value: Any, where: str) -> str:
    from incremental.agnostic import method_names

    return _choice(*method_names())(value, where)


_method.expected = "task-agnostic method name"  # type: ignore[attr-defined]


def _methods(value: Any, where: str) -> str | list[str]:
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    return _list(_method, "method names")(value, where)


_methods.expected = "all | list of method names"  # type: ignore[attr-defined]


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
