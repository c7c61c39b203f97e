"""Break-even of a sweep: where a sharing point's savings cross a target along one swept key."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from energymodel.errors import UserError
from energymodel.price.table import SWEEP_KEYS, resolve_key

__all__ = ["SETTING_KEYS", "breakeven", "column_name", "format_breakeven"]

#: sweep keys that are settings of the training run, not table entries: each value needs its own ledgers
SETTING_KEYS = ("batch",)


def column_name(key: str) -> str:
    """The result column of a sweep key: ``memory.dram``/``dram`` -> ``dram``, ``bits`` -> ``word_bits``,
    ``batch`` -> ``batch``."""
    if key.strip() in SETTING_KEYS:
        return key.strip()
    return resolve_key(key).rpartition(".")[2]


def _varied(frame: pd.DataFrame) -> list[str]:
    if "vary" in frame.attrs:
        return list(frame.attrs["vary"])
    known = {column_name(k) for k in SWEEP_KEYS}
    return [c for c in frame.columns if c in known]


def breakeven(
    frame: pd.DataFrame,
    *,
    key: str | None = None,
    target: float = 1.0,
    against: str = "regular",
    share: Iterable[int] | None = None,
) -> pd.DataFrame:
    """Where each sharing point's savings vs ``against`` (``regular`` or ``retraining``) cross ``target``.

    ``key``: ``"dram_mac_ratio"`` (default when DRAM or MAC energy is varied) or a varied key (default:
    the first varied key). With several varied keys the crossing is found along ``key`` separately for
    every combination of the others (their values are columns of the result). Returns one row per
    crossing (or one row with ``breakeven`` NaN when the savings stay on one side on the grid):
    ``share, after, fraction, <other keys>, key, target, against, breakeven, pays_off`` where
    ``pays_off`` says where savings >= target: ``"below"`` / ``"above"`` the break-even value, or
    ``"always"`` / ``"never"`` on the grid; plus ``savings_min`` and ``savings_max`` on the line.
    """
    if against not in ("regular", "retraining"):
        raise UserError(f"against must be 'regular' or 'retraining', got {against!r}")
    if not math.isfinite(target) or target <= 0:
        raise UserError(f"target savings must be a positive number, got {target!r}")
    varied = _varied(frame)
    if not varied:
        raise UserError("breakeven needs a sweep result with a varied key")
    if key is None:
        key = "dram_mac_ratio" if {"dram", "mac"} & set(varied) else varied[0]
    if key in ("dram_mac_ratio", "ratio"):
        key = "dram_mac_ratio"
        driver = next((k for k in ("dram", "mac") if k in varied), None)
        if driver is None:
            raise UserError("break-even on the DRAM/MAC ratio needs dram or mac among the varied keys")
    else:
        try:
            driver = column_name(key)
        except UserError:
            raise UserError(f"unknown break-even key {key!r}; use dram_mac_ratio or a varied key "
                            f"({', '.join(varied)})") from None
        if driver not in varied:
            raise UserError(f"break-even key {key!r} is not varied in this sweep (varied: {', '.join(varied)})")
        key = driver
    others = [k for k in varied if k != driver]
    base_col = f"energy_{against}_pj"
    df = frame
    if share is not None:
        df = df[df["share"].isin(list(share))]
    if against == "regular":
        df = df[df["share"] != 0]  # the baseline itself: savings are 1 by definition
    rows = []
    group_cols = ["share", *others]
    for gkey, g in df.groupby(group_cols, sort=True):
        gvals = gkey if isinstance(gkey, tuple) else (gkey,)
        g = g.sort_values(key, kind="stable")
        x = g[key].to_numpy(dtype=float)
        d = g[base_col].to_numpy(dtype=float) - target * g["energy_pj"].to_numpy(dtype=float)
        sav = g[f"savings_vs_{against}"].to_numpy(dtype=float)
        base = {"share": int(gvals[0]), "after": g["after"].iloc[0], "fraction": float(g["fraction"].iloc[0]),
                **dict(zip(others, gvals[1:])), "key": key, "target": target, "against": against}
        stats = {"savings_min": float(np.nanmin(sav)), "savings_max": float(np.nanmax(sav))}
        crossings = _crossings(x, d)
        if not crossings:
            rows.append({**base, "breakeven": math.nan, "pays_off": "always" if (d >= 0).all() else "never", **stats})
        for xc, side in crossings:
            rows.append({**base, "breakeven": xc, "pays_off": side, **stats})
    cols = ["share", "after", "fraction", *others, "key", "target", "against", "breakeven", "pays_off",
            "savings_min", "savings_max"]
    return pd.DataFrame(rows, columns=cols)


def _crossings(x: np.ndarray, d: np.ndarray) -> list[tuple[float, str]]:
    """Zeros of the piecewise-linear ``d(x)`` where its sign changes, with the side where ``d >= 0``."""
    ok = np.isfinite(x) & np.isfinite(d)
    x, d = x[ok], d[ok]
    out: list[tuple[float, str]] = []
    sign = np.sign(d)
    nz = np.flatnonzero(sign != 0)
    for a, b in itertools.pairwise(nz):
        if sign[a] == sign[b]:
            continue
        if b > a + 1:  # exact zeros between two opposite signs: the crossing is the first zero
            xc = float(x[a + 1])
        else:
            xc = float(x[a] + (x[b] - x[a]) * d[a] / (d[a] - d[b]))
        out.append((xc, "below" if sign[a] > 0 else "above"))
    return out


def format_breakeven(be: pd.DataFrame) -> str:
    """Human lines for :func:`breakeven`'s result (one per row)."""
    if be.empty:
        return "break-even: no sharing point to report\n"
    lines = []
    for r in be.to_dict(orient="records"):
        extra = [f"{k}={r[k]:g}" for k in be.columns
                 if k not in ("share", "after", "fraction", "key", "target", "against", "breakeven", "pays_off",
                              "savings_min", "savings_max")]
        where = f" at {', '.join(extra)}" if extra else ""
        head = (f"share {r['share']} (after {r['after']}, fraction {r['fraction']:.2f}){where}: "
                f"savings vs {r['against']} >= {r['target']:g}x")
        if r["pays_off"] in ("below", "above"):
            cmp = "<" if r["pays_off"] == "below" else ">"
            lines.append(f"{head} while {r['key']} {cmp} {r['breakeven']:.4g} (break-even {r['key']} = "
                         f"{r['breakeven']:.4g})")
        else:
            word = "everywhere" if r["pays_off"] == "always" else "nowhere"
            lines.append(f"{head} {word} on the grid (savings {r['savings_min']:.3g}x .. {r['savings_max']:.3g}x)")
    return "\n".join(lines) + "\n"
