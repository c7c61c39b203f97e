"""What the ``energymodel`` commands share: argparse classes, the JSON envelope and output writer, and the
arguments several commands take (model, format, strategy settings).

Importing this module loads neither torch nor pandas (the commands import them inside ``run``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from energymodel import __version__
from energymodel import defaults as D
from energymodel.atomic import write_text
from energymodel.errors import UserError

__all__ = ["emit", "envelope", "add_common_table", "add_model_args", "add_strategy_args", "add_format_args", "model_and_shape", "strategy_settings", "finite", "note"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line + exit 2 (argparse's own convention too)."""

    def error(self, message: str) -> None:  # pragma: no cover - exercised through main()
        self.exit(2, f"{self.prog}: error: {message}\n")


class HelpFormatter(argparse.HelpFormatter):
    """Shows ``(default: X)`` after every option's help that has a default and does not state one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" not in text and action.default not in (None, False, argparse.SUPPRESS)
                and action.option_strings):
            text += " (default: %(default)s)"
        return text


def note(message: str) -> None:
    """A one-line note on stderr (not an error), printed above a running progress bar."""
    from energymodel.progress import write

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
        from energymodel.cli.console import integer_columns

        out = integer_columns(frame).to_csv(index=False)
    else:
        out = text if text is not None else human(frame)
    if args.out:
        from energymodel.progress import write

        write_text(args.out, out)
        write(f"wrote {args.out}")
    else:
        sys.stdout.write(out)


def human(frame) -> str:
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
    p.add_argument("--input", metavar="SHAPE[:DTYPE][;...]", help="input shape C,H,W per sample, without the batch "
                   "dimension; 32:int64 for token ids, several inputs separated by ';', keyword inputs as "
                   "ids=32:int64;mask=32:bool (zeros; default: the zoo model's own, or its input_shape attribute)")
    p.add_argument("--classes", type=int, help="number of classes of the model (default: the model's)")
    if blocks:
        p.add_argument("--blocks", metavar="NAME,...", help="modules the sharing points follow, dotted paths in call "
                       "order (encoder.layers.0,encoder.layers.1); the first block holds all before the first, the "
                       "head all after the last (default: the model's declared blocks, else the points found from "
                       "a trace; a refusal lists the names it accepts)")


def model_and_shape(args) -> tuple:
    """The module and what it is called with, named by ``args.model``/``--input``/``--classes``: an input shape,
    or example inputs (:class:`~energymodel.models.inputs.ExampleInputs`, which the analysis functions take
    where they take a shape) when ``--input`` gives dtypes or several inputs."""
    from energymodel.models.inputs import example_inputs, parse_inputs
    from energymodel.models.spec import parse_shape, resolve_model

    resolved = resolve_model(args.model, args.classes)
    if not args.input:
        if resolved.input_shape is None:
            raise UserError(f"{args.model}: give --input C,H,W (per sample, without the batch dimension)")
        return resolved.model, resolved.input_shape
    shape, inputs = parse_inputs(args.input, parse_shape)
    return resolved.model, shape if inputs is None else example_inputs(resolved.model, None, inputs)


def block_net(args, model, shape):
    """The model as a BlockNet: declared, found from a trace, or ``--blocks``."""
    from energymodel.models.chain import block_view

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
    from energymodel.api import shares_of

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
    """Keyword arguments of :func:`energymodel.analysis.sharing.strategy_ledgers` from :func:`add_strategy_args` flags."""
    return {"share": shares(args, net), "new_classes": args.new_classes, "samples_new": args.samples_new,
            "samples_old": args.samples_old, "epochs": args.epochs, "batch": args.batch,
            "optimizer": args.optimizer, "cache_prefix": args.cache_prefix, "tasks": args.tasks}


def subcommand(sub, name: str, help_text: str, **kw) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=kw.pop("description", help_text),
                          formatter_class=HelpFormatter, **kw)


# -- profile -------------------------------------------------------------------------------------------






# -- compare -------------------------------------------------------------------------------------------






# -- points --------------------------------------------------------------------------------------------






# -- tables --------------------------------------------------------------------------------------------











