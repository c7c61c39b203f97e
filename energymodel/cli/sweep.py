"""``energymodel sweep``: vary energy-table entries over grids and report savings at every sharing point."""

from __future__ import annotations

import argparse
import math
import sys

from energymodel.errors import UserError

__all__ = ["add_parser", "TABLE_ROWS"]

_TABLE_COLUMNS = [
    "k", "fraction", "energy_pj", "energy_regular_pj", "energy_retraining_pj", "savings_vs_regular",
    "savings_vs_retraining", "dram_mac_ratio",
]

_UNITS = {
    **{op: "pJ per operation" for op in ("mac", "add", "mult", "cmp")},
    **{lv: "pJ per access of the table's access width" for lv in ("rf", "sram", "dram")},
    "buffer_bytes": "bytes", "rf_accesses_per_op": "register-file accesses per operation", "word_bits": "bits",
}

#: the most rows the table view prints (first and last half); JSON and CSV hold every row
TABLE_ROWS = 60


def add_parser(subparsers) -> None:
    """Register ``sweep`` on the ``energymodel`` sub-command parser."""
    from energymodel.cli.common import (
        HelpFormatter,
        add_common_table,
        add_format_args,
        add_model_args,
        add_strategy_args,
    )

    p = subparsers.add_parser(
        "sweep", help="vary energy-table entries (DRAM pJ, buffer size, word bits ...) and report savings",
        description="Vary table entries over grids (full cartesian product of every --vary) and report, at each "
        "grid point and sharing point, the training energy of clone-and-branch against regular incremental "
        "learning and full retraining at the same grid point, then the break-even points.",
        formatter_class=HelpFormatter,
    )
    add_model_args(p, blocks=True)
    p.add_argument("--vary", action="append", required=True, metavar="KEY=START:STOP:N",
                   help="a table entry and its grid, e.g. dram=100:2000:20, buffer=1e4:1e8:9log or bits=8,16,32; "
                   "keys: mac add mult cmp rf sram dram buffer_bytes rf_accesses_per_op bits (repeatable)")
    p.add_argument("--log", action="store_true", help="geometric (log-spaced) grids for every --vary range "
                   "(default: linear)")
    add_strategy_args(p)
    p.add_argument("--target", type=float, default=1.0,
                   help="savings (x) whose crossing is reported as break-even (1.0: stops paying off)")
    p.add_argument("--against", choices=("regular", "retraining"), default="regular",
                   help="baseline of the break-even savings")
    p.add_argument("--breakeven-key", help="break-even along this key (default: dram_mac_ratio when dram or mac "
                   "is varied, else the first --vary key)")
    add_common_table(p)
    add_format_args(p)
    p.set_defaults(func=run)


def _table(frame, max_rows: int = TABLE_ROWS) -> str:
    """The rows as text, cut to the first and last ``max_rows / 2`` with a line saying how many are hidden."""
    from energymodel.cli.common import human

    if len(frame) <= max_rows:
        return human(frame)
    half = max_rows // 2
    top, bottom = human(frame.iloc[:half]), human(frame.iloc[-half:]).split("\n", 1)[1]
    return (top + f"... {len(frame) - 2 * half} of {len(frame)} rows not shown (all rows: --format csv or json) ...\n"
            + bottom)


def _records(frame) -> list[dict]:
    """Rows as dicts with NaN/inf as ``None`` (strict JSON)."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    return out


def run(args: argparse.Namespace) -> None:
    from energymodel.analysis.grid import parse_vary
    from energymodel.analysis.sweep import breakeven, sweep
    from energymodel.cli.common import block_net, emit, model_and_shape, strategy_settings

    vary: dict = {}
    for spec in args.vary:
        key, values = parse_vary(spec, log=args.log)
        if key in vary:
            raise UserError(f"--vary {key} given twice")
        vary[key] = values
    model, shape = model_and_shape(args)
    net = block_net(args, model, shape)
    df = sweep(net, shape, vary, table=args.energy_table, **strategy_settings(args, net))
    be = breakeven(df, key=args.breakeven_key, target=args.target, against=args.against)
    df, be = df.rename(columns={"share": "k"}), be.rename(columns={"share": "k"})
    if args.format == "table":
        from energymodel.cli.console import energy

        view = df[[*df.attrs["vary"], *_TABLE_COLUMNS]].copy()
        for col in ("energy_pj", "energy_regular_pj", "energy_retraining_pj"):
            view[col] = [energy(v) for v in view[col]]
        view = view.rename(columns=lambda c: c.removesuffix("_pj") if c.startswith("energy") else c)
        text = _table(view)
        text += f"\n{df.attrs['grid_points']} grid points x {df['k'].nunique()} sharing points = {len(df)} rows\n"
        text += "units: " + "; ".join(f"{k} in {_UNITS.get(k, 'table units')}" for k in df.attrs["vary"])
        text += "; energy: one new task's training; savings: baseline / strategy (> 1 is cheaper)\n"
        text += "\nbreak-even (pays_off: where savings >= target, below or above the break-even value)\n"
        text += _table(be)
        emit(args, text=text)
    elif args.format == "json":
        emit(args, data={"settings": df.attrs, "rows": _records(df), "breakeven": _records(be)})
    else:
        emit(args, frame=df)
        print("break-even\n" + _table(be), end="", file=sys.stderr)
