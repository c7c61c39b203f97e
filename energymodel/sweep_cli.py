"""``energymodel sweep``: vary energy-table entries over grids and report savings at every sharing point."""

from __future__ import annotations

import argparse
import math
import sys

import pandas as pd

from .errors import UserError

__all__ = ["add_parser"]

_TABLE_COLUMNS = [
    "share", "fraction", "energy_pj", "energy_regular_pj", "energy_retraining_pj", "savings_vs_regular",
    "savings_vs_retraining", "dram_mac_ratio",
]


def add_parser(subparsers) -> None:
    """Register ``sweep`` on the ``energymodel`` sub-command parser."""
    from .cli import add_common_table, add_format_args, add_model_args, add_strategy_args

    p = subparsers.add_parser(
        "sweep", help="vary energy-table entries (DRAM pJ, buffer size, word bits ...) and report savings",
        description="Vary table entries over grids (full cartesian product of every --vary) and report, at each "
        "grid point and sharing point, the training energy of clone-and-branch against regular incremental "
        "learning and full retraining at the same grid point, then the break-even points.",
    )
    add_model_args(p)
    p.add_argument("--vary", action="append", required=True, metavar="KEY=START:STOP:N",
                   help="a table entry and its grid, e.g. dram=100:2000:20, buffer=1e4:1e8:9log or bits=8,16,32; "
                   "keys: mac add mult cmp rf sram dram buffer_bytes rf_accesses_per_op bits (repeatable)")
    p.add_argument("--log", action="store_true", help="geometric (log-spaced) grids for every --vary range")
    add_strategy_args(p)
    p.add_argument("--target", type=float, default=1.0,
                   help="savings (x) whose crossing is reported as break-even (default 1.0: stops paying off)")
    p.add_argument("--against", choices=("regular", "retraining"), default="regular",
                   help="baseline of the break-even savings (default: regular incremental learning)")
    p.add_argument("--breakeven-key", help="break-even along this key (default: dram_mac_ratio when dram or mac "
                   "is varied, else the first --vary key)")
    add_common_table(p)
    add_format_args(p)
    p.set_defaults(func=run)


def _human(frame: pd.DataFrame) -> str:
    with pd.option_context("display.max_rows", 400, "display.min_rows", 40, "display.max_columns", 50,
                           "display.width", 200, "display.float_format", lambda v: f"{v:.4g}"):
        return frame.to_string(index=False, max_rows=400, min_rows=40) + "\n"


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts with NaN/inf as ``None`` (strict JSON)."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    return out


def run(args: argparse.Namespace) -> None:
    from .cli import emit, model_and_shape, strategy_settings
    from .sweep import breakeven, format_breakeven, parse_vary, sweep

    vary: dict = {}
    for spec in args.vary:
        key, values = parse_vary(spec, log=args.log)
        if key in vary:
            raise UserError(f"--vary {key} given twice")
        vary[key] = values
    model, shape = model_and_shape(args)
    df = sweep(model, shape, vary, table=args.table, **strategy_settings(args))
    be = breakeven(df, key=args.breakeven_key, target=args.target, against=args.against)
    if args.format == "table":
        text = _human(df[[*df.attrs["vary"], *_TABLE_COLUMNS]])
        text += f"\n{df.attrs['grid_points']} grid points x {df['share'].nunique()} sharing points\n"
        text += "\nbreak-even\n" + format_breakeven(be)
        emit(text, "table", args.output)
    elif args.format == "json":
        obj = {"settings": df.attrs, "rows": _records(df), "breakeven": _records(be)}
        emit(df, "json", args.output, json_obj=obj)
    else:
        emit(df, "csv", args.output)
        print("break-even\n" + format_breakeven(be), end="", file=sys.stderr)
