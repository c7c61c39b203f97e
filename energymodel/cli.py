"""Command line: ``energymodel profile | compare | points | tables`` (a thin layer over the Python API).

Bad input prints one line on stderr and exits with status 2; outputs are written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence

import pandas as pd

from .atomic import write_text
from .errors import UserError

__all__ = [
    "main", "emit", "add_common_table", "add_model_args", "add_strategy_args", "add_format_args", "model_and_shape",
    "strategy_settings", "parse_share", "build_parser",
]


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line + exit 2 (argparse's own convention too)."""

    def error(self, message: str) -> None:  # pragma: no cover - exercised through main()
        self.exit(2, f"{self.prog}: error: {message}\n")


def emit(frame: pd.DataFrame | dict | str, fmt: str, out: str | None, *, json_obj: dict | None = None) -> None:
    """Write ``frame`` as ``table``/``json``/``csv`` to ``out`` (atomically) or stdout."""
    if fmt == "json":
        obj = json_obj if json_obj is not None else (
            frame.to_dict(orient="records") if isinstance(frame, pd.DataFrame) else frame
        )
        text = json.dumps(obj, indent=2, default=_jsonable, allow_nan=False) + "\n"
    elif fmt == "csv":
        if not isinstance(frame, pd.DataFrame):
            raise UserError("csv output needs a table")
        text = frame.to_csv(index=False)
    else:
        text = frame if isinstance(frame, str) else _human(frame)
    if out:
        write_text(out, text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _jsonable(v):
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def _human(frame: pd.DataFrame | dict) -> str:
    if isinstance(frame, dict):
        return "\n".join(f"{k:>28}: {v}" for k, v in frame.items()) + "\n"
    with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200,
                           "display.float_format", lambda v: f"{v:.4g}"):
        return frame.to_string(index=False) + "\n"


def add_common_table(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", default="45nm", help="energy table: a shipped name (see `energymodel tables`) or a .toml file")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="zoo name, package.module:factory or path/to/file.py:factory")
    p.add_argument("--input", help="input shape C,H,W (default: the zoo model's own)")
    p.add_argument("--classes", type=int, help="number of classes of the model (default: the model's)")


def model_and_shape(args) -> tuple:
    from .modelspec import parse_shape, resolve_model

    resolved = resolve_model(args.model, args.classes)
    shape = parse_shape(args.input) if args.input else resolved.input_shape
    if shape is None:
        raise UserError(f"{args.model}: give --input C,H,W")
    return resolved.model, shape


def add_format_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("-o", "--output", help="write here (atomically) instead of stdout")


# -- profile -------------------------------------------------------------------------------------------


def _profile_parser(sub) -> None:
    p = sub.add_parser("profile", help="per-layer MACs, memory accesses, storage and energy of one pass/step")
    add_model_args(p)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--mode", choices=("inference", "training"), default="inference")
    p.add_argument("--frozen", default="", help="comma-separated module prefixes whose parameters do not train")
    p.add_argument("--optimizer", choices=("sgd", "momentum", "adam"), default="sgd")
    p.add_argument("--weight-decay", action="store_true", help="charge weight decay in the update")
    add_common_table(p)
    add_format_args(p)
    p.set_defaults(func=_run_profile)


def _run_profile(args) -> None:
    from .profile import LAYER_COLUMNS, profile

    model, shape = model_and_shape(args)
    frozen = [f for f in args.frozen.split(",") if f.strip()]
    prof = profile(model, shape, batch=args.batch, mode=args.mode, frozen=frozen, optimizer=args.optimizer,
                   table=args.table, weight_decay=args.weight_decay)
    if args.format == "table":
        cols = ["name", "kind", "trainable", "macs_forward", "macs_backward_input", "macs_backward_weight", "params",
                "sram_accesses", "dram_accesses", "energy_pj"]
        text = _human(prof.layers[cols])
        text += "\ntotals\n" + _human(prof.totals)
        if prof.unmodelled:
            text += f"unmodelled: {', '.join(prof.unmodelled)}\n"
        emit(text, "table", args.output)
    else:
        emit(prof.layers[LAYER_COLUMNS], args.format, args.output, json_obj=prof.to_dict())


# -- compare -------------------------------------------------------------------------------------------


def parse_share(text: str | None) -> list[float | int] | None:
    """``"0,3,5"`` (indices) or ``"0.25,0.5"`` (fractions) → list; ``None``/``"all"`` → every point."""
    if text is None or text.strip() in ("", "all"):
        return None
    out: list[float | int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            out.append(int(part) if part.isdigit() else float(part))
        except ValueError:
            raise UserError(f"bad --share entry {part!r}: use sharing point indices or fractions in [0,1]") from None
    return out


def add_strategy_args(p: argparse.ArgumentParser) -> None:
    """The settings of learning a new task that ``compare`` and ``sweep`` share (see :func:`strategy_settings`)."""
    p.add_argument("--share", help="sharing points (indices 0..n) or fractions (0.5); default: all")
    p.add_argument("--new-classes", type=int, help="classes of the new task (default: as many as the model has)")
    p.add_argument("--samples-new", type=int, default=5000, help="training samples of the new task")
    p.add_argument("--samples-old", type=int, default=5000, help="training samples of the old task(s)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--tasks", type=int, default=1, help="number of new tasks (storage and inference of all)")
    p.add_argument("--optimizer", choices=("sgd", "momentum", "adam"), default="sgd")
    p.add_argument("--cache-prefix", action="store_true", help="run the shared prefix once per sample (cached features)")


def strategy_settings(args) -> dict:
    """Keyword arguments of :func:`energymodel.sharing.strategy_ledgers` from :func:`add_strategy_args` flags."""
    out = {"share": parse_share(args.share), "new_classes": args.new_classes, "samples_new": args.samples_new,
           "samples_old": args.samples_old, "epochs": args.epochs, "batch": args.batch,
           "optimizer": args.optimizer, "cache_prefix": args.cache_prefix, "tasks": args.tasks}
    return out


def _compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="clone-and-branch at each sharing point vs regular incremental learning and full retraining")
    add_model_args(p)
    add_strategy_args(p)
    add_common_table(p)
    add_format_args(p)
    p.set_defaults(func=_run_compare)


def _run_compare(args) -> None:
    from .sharing import compare

    model, shape = model_and_shape(args)
    df = compare(model, shape, table=args.table, **strategy_settings(args))
    if args.format == "table":
        cols = ["strategy", "share", "after", "fraction", "macs", "energy_pj", "dram_accesses", "storage_bytes",
                "inference_energy_pj", "savings_energy_vs_regular", "savings_energy_vs_retraining"]
        emit(df[cols], "table", args.output)
    else:
        emit(df, args.format, args.output, json_obj={"settings": df.attrs, "rows": df.to_dict(orient="records")})


# -- points --------------------------------------------------------------------------------------------


def _points_parser(sub) -> None:
    p = sub.add_parser("points", help="list a model's sharing points and fractions")
    add_model_args(p)
    add_format_args(p)
    p.set_defaults(func=_run_points)


def _run_points(args) -> None:
    from dataclasses import asdict

    from .sharing import sharing_points

    model, shape = model_and_shape(args)
    df = pd.DataFrame([asdict(p) for p in sharing_points(model, shape)])
    emit(df, args.format, args.output)


# -- tables --------------------------------------------------------------------------------------------


def _tables_parser(sub) -> None:
    p = sub.add_parser("tables", help="list shipped energy tables, or show/check one")
    p.add_argument("table", nargs="?", help="a shipped name or a .toml file to validate and show")
    add_format_args(p)
    p.set_defaults(func=_run_tables)


def _run_tables(args) -> None:
    from .table import builtin_tables, load_table

    if not args.table:
        rows = [{"name": n, "description": load_table(n).description} for n in builtin_tables()]
        emit(pd.DataFrame(rows), args.format, args.output)
        return
    t = load_table(args.table)
    if args.format == "table":
        lines = [f"{t.name}: {t.description}", f"source: {t.source}", f"datatype {t.datatype}, {t.word_bits}-bit words"]
        lines += [f"  {op:>5}: {e.pj:g} pJ  ({e.source})" for op, e in t.operations.items()]
        lines += [f"  {lv:>5}: {m.pj:g} pJ per {m.bits}-bit access = {t.level_pj(lv):g} pJ/word  ({m.source})"
                  for lv, m in t.memory.items()]
        lines += [f"  dataflow: {t.dataflow}"]
        emit("\n".join(lines) + "\n", "table", args.output)
    else:
        emit(t.to_dict(), "json", args.output)


#: sub-command registrars, in the order shown by --help (sweep/report come from their own modules)
_REGISTRARS: list[Callable] = [_profile_parser, _compare_parser, _points_parser, _tables_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="energymodel", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for reg in _REGISTRARS:
        reg(sub)
    for reg in _extra_registrars():
        reg(sub)
    return parser


def _extra_registrars() -> list[Callable]:
    """Sub-commands living in their own modules (sweep, report), imported lazily."""
    out = []
    for modname in ("energymodel.sweep_cli", "energymodel.report_cli"):
        try:
            mod = __import__(modname, fromlist=["add_parser"])
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue
        out.append(mod.add_parser)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda msg, *a, **k: print(f"energymodel: warning: {msg}", file=sys.stderr)
            args.func(args)
    except UserError as exc:
        print(f"energymodel: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("energymodel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
