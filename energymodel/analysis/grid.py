"""The grid of a sweep: ranges (``START:STOP:N``, lists), ``--vary`` specs, and the checks on their values."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from energymodel.analysis.breakeven import SETTING_KEYS, breakeven, column_name, format_breakeven  # noqa: F401 - re-exported
from energymodel.errors import UserError
from energymodel.price.table import MAX_VALUE, resolve_key

__all__ = ["parse_range", "parse_vary", "MAX_ROWS"]


#: the largest number of result rows (grid points x sharing points) one sweep may produce
MAX_ROWS = 20_000_000


def _batches(values: Iterable[float] | float) -> list[int]:
    """Batch sizes of a sweep: integers >= 1, in the order given, each once."""
    try:
        arr = np.atleast_1d(np.asarray(values, dtype=float))
    except (TypeError, ValueError):
        raise UserError("values of 'batch' must be numbers") from None
    if arr.ndim != 1 or not len(arr):
        raise UserError("values of 'batch': give a 1-D list of batch sizes")
    if not np.isfinite(arr).all() or (arr < 1).any() or (arr != np.round(arr)).any():
        raise UserError("values of 'batch' must be integers >= 1")
    return list(dict.fromkeys(int(v) for v in arr))


def _float(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise UserError(f"{what}: {text!r} must be finite")
    return v


def parse_range(text: str, *, log: bool = False, what: str = "range") -> np.ndarray:
    """``"START:STOP:N"`` -> ``N`` values from START to STOP (linear; geometric with ``log`` or ``Nlog``).

    ``"a,b,c"`` (or a single number) gives exactly those values. Raises :class:`UserError` for an empty
    (``N < 1``) or reversed (``START > STOP``) range, non-numbers, or a log range that includes 0.
    """
    s = str(text).strip()
    if not s:
        raise UserError(f"{what}: empty range; use START:STOP:N")
    if ":" not in s:
        values = np.array([_float(p.strip(), what) for p in s.split(",") if p.strip()], dtype=float)
        if not len(values):
            raise UserError(f"{what}: empty list of values")
        return values
    parts = s.split(":")
    if len(parts) != 3:
        raise UserError(f"{what}: {s!r} is not START:STOP:N")
    start, stop = _float(parts[0].strip(), what), _float(parts[1].strip(), what)
    n_text = parts[2].strip().lower()
    if n_text.endswith("log"):
        log, n_text = True, n_text[:-3].strip()
    try:
        n = int(n_text)
    except ValueError:
        raise UserError(f"{what}: number of points {parts[2].strip()!r} is not an integer") from None
    if n < 1:
        raise UserError(f"{what}: empty range ({n} points); N must be >= 1")
    if n > MAX_ROWS:  # checked before the grid is built
        raise UserError(f"{what}: {n} points is more than a sweep can hold (at most {MAX_ROWS} rows)")
    if start > stop:
        raise UserError(f"{what}: reversed range {start:g} > {stop:g}; use START <= STOP")
    if log:
        if start <= 0:
            raise UserError(f"{what}: a log range needs START > 0, got {start:g}")
        return np.geomspace(start, stop, n)
    return np.linspace(start, stop, n)


def parse_vary(spec: str, *, log: bool = False) -> tuple[str, np.ndarray]:
    """``"dram=100:2000:20"`` -> ``("dram", values)`` (the key checked with :func:`~energymodel.price.table.resolve_key`)."""
    key, sep, rng = str(spec).partition("=")
    if not sep or not key.strip():
        raise UserError(f"bad --vary {spec!r}: use KEY=START:STOP:N, e.g. dram=100:2000:20")
    name = column_name(key)
    return name, parse_range(rng, log=log, what=f"--vary {key.strip()}")


def _normalise_vary(vary: Mapping[str, Iterable[float] | float]) -> dict[str, np.ndarray]:
    """Resolve keys to full names and check values (finite, >= 0; integer word bits; buffer bytes rounded, <= 1e15)."""
    if not vary:
        raise UserError("nothing to vary: give at least one KEY=START:STOP:N")
    out: dict[str, np.ndarray] = {}
    for raw, values in vary.items():
        full = resolve_key(raw)
        if full in out:
            raise UserError(f"{raw!r} is varied twice (as {column_name(full)!r})")
        try:
            arr = np.atleast_1d(np.asarray(values, dtype=float))
        except (TypeError, ValueError):
            raise UserError(f"values of {raw!r} must be numbers") from None
        if arr.ndim != 1:
            raise UserError(f"values of {raw!r} must be a 1-D list")
        if not len(arr):
            raise UserError(f"values of {raw!r}: empty range")
        if not np.isfinite(arr).all() or (arr < 0).any():
            raise UserError(f"values of {raw!r} must be finite and >= 0")
        if full == "word_bits":
            if (arr != np.round(arr)).any() or (arr < 1).any() or (arr > 64).any():
                raise UserError(f"values of {raw!r} must be integers 1..64")
        if full == "dataflow.buffer_bytes":
            if (arr > MAX_VALUE).any():  # a table's own bound; beyond 2**63 the byte count overflowed to < 0
                raise UserError(f"values of {raw!r} must be at most {MAX_VALUE:g} bytes, got {arr.max():g}")
            arr = np.round(arr)
        if full == "dataflow.rf_words" and (arr <= 0).any():
            raise UserError(f"values of {raw!r} must be > 0")
        out[full] = arr
    return out
