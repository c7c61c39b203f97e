"""Command line: ``energymodel profile | compare | points | tables | sweep | report`` (a thin layer over the API).

Bad input prints one line on stderr and exits with status 2; outputs are written atomically. Every
``--format json`` output is one envelope: ``{"tool", "version", "command", "model", "data"}``. Importing
this module loads neither torch nor pandas, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from . import defaults as D
from .atomic import write_text
from .errors import UserError

__all__ = [
    "main", "emit", "envelope", "add_common_table", "add_model_args", "add_strategy_args", "add_format_args",
    "model_and_shape", "strategy_settings", "build_parser", "finite", "note",
]


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line + exit 2 (argparse's own convention too)."""

    def error(self, message: str) -> None:  # pragma: no cover - exercised through main()
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Formatter(argparse.HelpFormatter):
    """Shows ``(default: X)`` after every option's help that has a default and does not state one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" not in text and action.default not in (None, False, argparse.SUPPRESS)
                and action.option_strings):
            text += " (default: %(default)s)"
        return text


def note(message: str) -> None:
    """A one-line note on stderr (not an error), printed above a running progress bar."""
    from .progress import write

    write(f"energymodel: note: {message}")


# -- output ----------------------------------------------------------------------------------------------


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (an overflow to inf, a NaN) replaced by ``None`` (JSON ``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return finite(obj.item())
    return obj


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def envelope(args: argparse.Namespace, data: Any) -> dict[str, Any]:
    """``{"tool": "energymodel", "version", "command", "model": the MODEL argument (or None), "data"}``."""
    return {"tool": "energymodel", "version": __version__, "command": args.command,
            "model": getattr(args, "model", None), "data": data}


def emit(args: argparse.Namespace, *, text: str | None = None, frame: Any = None, data: Any = None) -> None:
    """Write the command's result in ``args.format`` to ``args.out`` (atomically) or stdout: ``text`` for the
    table view, ``frame`` (a DataFrame) for CSV (and JSON records unless ``data`` is given), ``data``
    for JSON (inside :func:`envelope`)."""
    fmt = getattr(args, "format", "table")
    if fmt == "json":
        payload = data if data is not None else finite(frame.to_dict(orient="records"))
        out = json.dumps(finite(envelope(args, payload)), indent=2, default=_jsonable, allow_nan=False) + "\n"
    elif fmt == "csv":
        if frame is None:
            raise UserError("this command has no CSV output; use --format json")
        from .summary import integer_columns

        out = integer_columns(frame).to_csv(index=False)
    else:
        out = text if text is not None else _human(frame)
    if args.out:
        from .progress import write

        write_text(args.out, out)
        write(f"wrote {args.out}")
    else:
        sys.stdout.write(out)


def _human(frame) -> str:
    import pandas as pd

    if isinstance(frame, dict):
        return "\n".join(f"{k:>28}: {v}" for k, v in frame.items()) + "\n"
    with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200,
                           "display.float_format", lambda v: f"{v:.4g}"):
        return frame.to_string(index=False) + "\n"


# -- shared arguments -------------------------------------------------------------------------------------


def add_common_table(p: argparse.ArgumentParser) -> None:
    p.add_argument("--energy-table", default=D.ENERGY_TABLE, metavar="TABLE",
                   help="energy table: a shipped name (see `energymodel tables`) or a .toml file")
    p.add_argument("--table", dest="energy_table", help=argparse.SUPPRESS)  # deprecated alias


def add_model_args(p: argparse.ArgumentParser, *, blocks: bool = False) -> None:
    p.add_argument("model", help="zoo name, package.module:factory or path/to/file.py:factory")
    p.add_argument("--input", help="input shape C,H,W per sample, without the batch dimension "
                   "(default: the zoo model's own, or the model's input_shape attribute)")
    p.add_argument("--classes", type=int, help="number of classes of the model (default: the model's)")
    if blocks:
        p.add_argument("--blocks", metavar="NAME,...", help="top-level children that are blocks, the rest being "
                       "the head (default: the model's declared blocks, else its children when they run in a chain)")


def model_and_shape(args) -> tuple:
    """The module and input shape named by ``args.model``/``--input``/``--classes``."""
    from .modelspec import parse_shape, resolve_model

    resolved = resolve_model(args.model, args.classes)
    shape = parse_shape(args.input) if args.input else resolved.input_shape
    if shape is None:
        raise UserError(f"{args.model}: give --input C,H,W (per sample, without the batch dimension)")
    return resolved.model, shape


def block_net(args, model, shape):
    """The model as a BlockNet: declared, found from a trace, or ``--blocks``."""
    from .chain import block_view

    blocks = [b for b in args.blocks.split(",")] if getattr(args, "blocks", None) else None
    return block_view(model, shape, blocks=blocks)


def add_format_args(p: argparse.ArgumentParser, formats: Sequence[str] = ("table", "json", "csv")) -> None:
    p.add_argument("--format", choices=formats, default="table", help="output format")
    p.add_argument("-o", "--out", help="write here (atomically) instead of stdout")
    p.add_argument("--output", dest="out", help=argparse.SUPPRESS)  # deprecated alias


def add_strategy_args(p: argparse.ArgumentParser) -> None:
    """The settings of learning a new task that ``compare`` and ``sweep`` share (see :func:`strategy_settings`)."""
    p.add_argument("--k", metavar="K,...", help="sharing points by index (0 = share nothing; see `energymodel "
                   "points`) (default: all)")
    p.add_argument("--fraction", metavar="F,...", help="sharing points by fraction of the conv/linear layers in "
                   "[0,1], each snapped to the nearest point (a note says when)")
    p.add_argument("--share", help=argparse.SUPPRESS)  # deprecated: indices or fractions
    p.add_argument("--new-classes", type=int, help="classes of the new task (default: as many as the model has)")
    p.add_argument("--samples-new", type=int, default=D.SAMPLES_NEW, help="training samples of the new task")
    p.add_argument("--samples-old", type=int, default=D.SAMPLES_OLD, help="training samples of the old task(s)")
    p.add_argument("--epochs", type=int, default=D.EPOCHS, help="training epochs")
    p.add_argument("--batch", type=int, default=D.BATCH, help="training batch size")
    p.add_argument("--tasks", type=int, default=D.TASKS, help="number of new tasks (storage and inference of all)")
    p.add_argument("--optimizer", choices=("sgd", "momentum", "adam"), default=D.OPTIMIZER, help="optimizer")
    p.add_argument("--cache-prefix", action="store_true",
                   help="run the shared prefix once per sample (cached features) (default: off)")


def _numbers(text: str | None, flag: str, kind: type) -> list | None:
    if text is None or text.strip() in ("", "all"):
        return None
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            out.append(kind(part))
        except ValueError:
            raise UserError(f"bad {flag} entry {part!r}: expected {'an integer' if kind is int else 'a number'}") \
                from None
    return out


def shares(args, net) -> list[int] | None:
    """Sharing point indices from ``--k``/``--fraction`` (and the deprecated ``--share``), or ``None`` (all)."""
    from .api import shares_of

    k = _numbers(args.k, "--k", int)
    fraction = _numbers(args.fraction, "--fraction", float)
    if args.share is not None:  # deprecated: an integer is an index, anything else a fraction
        for v in _numbers(args.share, "--share", str) or []:
            if v.isdigit():
                k = [*(k or []), int(v)]
            else:
                try:
                    fraction = [*(fraction or []), float(v)]
                except ValueError:
                    raise UserError(f"bad --share entry {v!r}: use --k indices or --fraction fractions") from None
    return shares_of(net, k, fraction, note=note)


def strategy_settings(args, net) -> dict:
    """Keyword arguments of :func:`energymodel.sharing.strategy_ledgers` from :func:`add_strategy_args` flags."""
    return {"share": shares(args, net), "new_classes": args.new_classes, "samples_new": args.samples_new,
            "samples_old": args.samples_old, "epochs": args.epochs, "batch": args.batch,
            "optimizer": args.optimizer, "cache_prefix": args.cache_prefix, "tasks": args.tasks}


def _sub(sub, name: str, help_text: str, **kw) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=kw.pop("description", help_text),
                          formatter_class=_Formatter, **kw)


# -- profile -------------------------------------------------------------------------------------------


def _profile_parser(sub) -> None:
    p = _sub(sub, "profile", "per-layer MACs, memory accesses, storage and energy of one pass/step")
    add_model_args(p)
    p.add_argument("--batch", type=int, default=D.PROFILE_BATCH, help="batch size of the pass/step")
    p.add_argument("--mode", choices=("inference", "training"), default=D.MODE, help="one inference pass or "
                   "one training step")
    p.add_argument("--frozen", default="", help="comma-separated module paths or block names (as `energymodel "
                   "points` prints them) whose parameters do not train (default: none)")
    p.add_argument("--optimizer", choices=("sgd", "momentum", "adam"), default=D.OPTIMIZER,
                   help="optimizer of a training step")
    p.add_argument("--weight-decay", type=float, default=D.WEIGHT_DECAY, metavar="L2",
                   help="weight decay coefficient of a training step; 0 = none (not charged)")
    p.add_argument("--depth", type=int, metavar="N", help="sum rows by module path cut to N components, like "
                   "fvcore's flop_count_table(max_depth=N) (default: one row per layer call)")
    p.add_argument("--check", choices=("fvcore",), help="show fvcore's forward FLOP count beside ours per module "
                   "and the reason for every difference")
    add_common_table(p)
    add_format_args(p)
    p.set_defaults(func=_run_profile)


def _run_profile(args) -> None:
    from .api import frozen_prefixes
    from .profile import LAYER_COLUMNS, profile
    from .summary import by_module, header, layer_view, summary_line, unmodelled_by_kind

    model, shape = model_and_shape(args)
    if args.depth is not None and args.depth < 1:
        raise UserError(f"--depth must be >= 1, got {args.depth}")
    frozen = frozen_prefixes(model, args.frozen.split(","), shape) if args.frozen.strip() else []
    if args.weight_decay < 0 or not math.isfinite(args.weight_decay):
        raise UserError(f"--weight-decay must be a number >= 0, got {args.weight_decay}")
    prof = profile(model, shape, batch=args.batch, mode=args.mode, frozen=frozen, optimizer=args.optimizer,
                   table=args.energy_table, weight_decay=args.weight_decay)
    layers = by_module(prof.layers, args.depth) if args.depth else prof.layers
    check = None
    if args.check == "fvcore":
        from .fvcore_check import fvcore_check

        check = fvcore_check(model, shape, ours=prof)
    if args.format == "table":
        lines = [header(model=args.model, kind=type(model).__name__, input_shape=shape, batch=args.batch,
                        mode=args.mode, table=prof.table), ""]
        text = "\n".join(lines) + _human(layer_view(layers))
        text += "\n" + summary_line(prof.totals, args.batch) + "\n"
        if prof.unmodelled:
            text += "unmodelled (no counting rule, counted as 0): " + "; ".join(unmodelled_by_kind(prof.layers)) + "\n"
        if check is not None:
            from .summary import eng

            view = check.assign(**{c: [eng(v) for v in check[c]] for c in ("macs", "fvcore_flops", "difference")})
            differ = int((~check["agrees"]).sum())
            text += (f"\nfvcore cross-check (forward MACs per sample vs fvcore flops, batch 1): {differ} of "
                     f"{len(check)} rows differ\n" + _human(view))
        emit(args, text=text)
    else:
        frame = layers if args.depth else prof.layers[LAYER_COLUMNS]
        data = prof.to_dict()
        bad = prof.layers[~prof.layers["modelled"].astype(bool)]
        data["unmodelled_by_kind"] = {str(k): list(g["name"]) for k, g in bad.groupby("kind", sort=False)}
        if args.depth:
            data["modules"] = finite(layers.to_dict(orient="records"))
        if check is not None:
            data["fvcore_check"] = finite(check.to_dict(orient="records"))
        emit(args, frame=frame, data=data)


# -- compare -------------------------------------------------------------------------------------------


def _compare_parser(sub) -> None:
    p = _sub(sub, "compare", "clone-and-branch at each sharing point vs regular incremental learning and full "
             "retraining")
    add_model_args(p, blocks=True)
    add_strategy_args(p)
    p.add_argument("--buffer", type=int, default=None, metavar="BYTES",
                   help="on-chip buffer size in bytes (default: the energy table's dataflow.buffer_bytes)")
    p.add_argument("--retrain-epochs", type=int, default=None, metavar="N",
                   help="epochs of each full retraining from scratch (default: --epochs)")
    add_common_table(p)
    add_format_args(p)
    p.set_defaults(func=_run_compare)


def _run_compare(args) -> None:
    from .sharing import compare
    from .summary import energy, eng

    model, shape = model_and_shape(args)
    net = block_net(args, model, shape)
    df = compare(net, shape, table=args.energy_table, buffer_bytes=args.buffer, retrain_epochs=args.retrain_epochs,
                 **strategy_settings(args, net))
    df = df.rename(columns={"share": "k"})
    if args.format == "table":
        cols = ["strategy", "k", "after", "fraction", "macs", "energy_pj", "dram_accesses", "storage_bytes",
                "inference_energy_pj", "savings_energy_vs_regular", "savings_energy_vs_retraining"]
        view = df[cols].rename(columns={"energy_pj": "energy", "inference_energy_pj": "inference"})
        for col in ("macs", "dram_accesses"):
            view[col] = [eng(v) for v in view[col]]
        view["storage_bytes"] = [eng(v, "B") for v in view["storage_bytes"]]
        for col in ("energy", "inference"):
            view[col] = [energy(v) for v in view[col]]
        head = (f"model {args.model} · input {'x'.join(map(str, shape))} · {args.epochs} epochs of "
                f"{args.samples_new} samples, batch {args.batch}, {args.optimizer} · table {args.energy_table}, "
                f"on-chip buffer {eng(df.attrs.get('buffer_bytes', 0), 'B')}\n"
                "energy: one new task's training; inference: per sample of the grown network; savings: baseline / "
                "strategy (> 1 is cheaper)\n\n")
        emit(args, text=head + _human(view))
    else:
        emit(args, frame=df, data={"settings": finite(df.attrs), "rows": finite(df.to_dict(orient="records"))})


# -- points --------------------------------------------------------------------------------------------


def _points_parser(sub) -> None:
    p = _sub(sub, "points", "list a model's sharing points (k, the block they follow) and fractions")
    add_model_args(p, blocks=True)
    add_format_args(p)
    p.set_defaults(func=_run_points)


def _run_points(args) -> None:
    from dataclasses import asdict

    import pandas as pd

    from .chain import block_names_of
    from .sharing import sharing_points

    model, shape = model_and_shape(args)
    net = block_net(args, model, shape)
    paths = block_names_of(model, net)
    rows = [{"k": p.index, **{k: v for k, v in asdict(p).items() if k != "index"},
             "module": paths.get(p.after, "")} for p in sharing_points(net, shape)]
    emit(args, frame=pd.DataFrame(rows), data=rows)


# -- tables --------------------------------------------------------------------------------------------


def _tables_parser(sub) -> None:
    p = _sub(sub, "tables", "list shipped energy tables, or show/check one")
    p.add_argument("table", nargs="?", help="a shipped name or a .toml file to validate and show")
    add_format_args(p)
    p.set_defaults(func=_run_tables)


def _run_tables(args) -> None:
    import pandas as pd

    from .table import builtin_tables, load_table

    if not args.table:
        rows = [{"name": n, "description": load_table(n).description} for n in builtin_tables()]
        emit(args, frame=pd.DataFrame(rows), data=rows)
        return
    t = load_table(args.table)
    rows = [{"section": "operations", "entry": op, "pj": e.pj, "bits": None, "source": e.source}
            for op, e in t.operations.items()]
    rows += [{"section": "memory", "entry": lv, "pj": m.pj, "bits": m.bits, "source": m.source}
             for lv, m in t.memory.items()]
    lines = [f"{t.name}: {t.description}", f"source: {t.source}", f"datatype {t.datatype}, {t.word_bits}-bit words"]
    lines += [f"  {op:>5}: {e.pj:g} pJ  ({e.source})" for op, e in t.operations.items()]
    lines += [f"  {lv:>5}: {m.pj:g} pJ per {m.bits}-bit access = {t.level_pj(lv):g} pJ/word  ({m.source})"
              for lv, m in t.memory.items()]
    lines += [f"  dataflow: {t.dataflow}"]
    frame = pd.DataFrame(rows).astype({"bits": "Int64"})
    emit(args, text="\n".join(lines) + "\n", frame=frame, data=t.to_dict())


#: sub-command registrars, in the order shown by --help (sweep/report come from their own modules)
_REGISTRARS: list[Callable] = [_profile_parser, _compare_parser, _points_parser, _tables_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="energymodel", description=__doc__.splitlines()[0], formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"energymodel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for reg in _REGISTRARS:
        reg(sub)
    from . import report_cli, sweep_cli

    sweep_cli.add_parser(sub)
    report_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from . import progress

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda msg, *a, **k: progress.write(f"energymodel: warning: {msg}")
            if args.command in ("compare", "sweep", "report"):
                with progress.progress(f"{args.command} {getattr(args, 'model', None) or args.recipe}"):
                    args.func(args)
            else:
                args.func(args)
    except UserError as exc:
        print(f"energymodel: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    except MemoryError:
        print("energymodel: error: out of memory (a smaller input, batch or sweep grid needs less)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("energymodel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
