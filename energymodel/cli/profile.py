"""``energymodel profile``: per-layer MACs, memory accesses, storage and energy of one pass or training step
(with ``--check fvcore``, fvcore's count beside ours)."""

from __future__ import annotations

import math

from energymodel import defaults as D
from energymodel.cli.common import (
    add_common_table,
    add_format_args,
    add_model_args,
    emit,
    finite,
    human,
    model_and_shape,
    subcommand,
)
from energymodel.errors import UserError


def add_parser(sub) -> None:
    p = subcommand(sub, "profile", "per-layer MACs, memory accesses, storage and energy of one pass/step")
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
    p.add_argument("--depth", type=int, metavar="N", help="show the module tree down to depth N, each module with "
                   "the total of everything under it (layer1 and layer1.0 at 2), like torchinfo's depth; JSON/CSV: "
                   "rows summed by module path cut to N components, like fvcore's max_depth (default: every call)")
    p.add_argument("--show-views", action="store_true", help="show the zero-cost rows (view, transpose, eval-mode "
                   "dropout ...) the table folds away (default: off)")
    p.add_argument("--check", choices=("fvcore",), help="show fvcore's forward FLOP count beside ours per module "
                   "and the reason for every difference")
    add_common_table(p)
    add_format_args(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from energymodel.analysis.profile import LAYER_COLUMNS, profile
    from energymodel.api import frozen_prefixes
    from energymodel.cli.console import by_module, header, unmodelled_by_kind

    model, shape = model_and_shape(args)
    if args.depth is not None and args.depth < 1:
        raise UserError(f"--depth must be >= 1, got {args.depth}")
    frozen = frozen_prefixes(model, args.frozen.split(","), shape) if args.frozen.strip() else []
    if args.weight_decay < 0 or not math.isfinite(args.weight_decay):
        raise UserError(f"--weight-decay must be a number >= 0, got {args.weight_decay}")
    import warnings

    with warnings.catch_warnings():
        if args.format == "table":  # the table lists them: not a second time on stderr
            warnings.filterwarnings("ignore", message=r"\d+ call\(s\) have no counting rule")
        prof = profile(model, shape, batch=args.batch, mode=args.mode, frozen=frozen, optimizer=args.optimizer,
                       table=args.energy_table, weight_decay=args.weight_decay)
    layers = by_module(prof.layers, args.depth) if args.depth else prof.layers
    check = None
    if args.check == "fvcore":
        from energymodel.referee.fvcore import fvcore_check

        check = fvcore_check(model, shape, ours=prof)
    if args.format == "table":
        from energymodel.cli.console import profile_table

        lines = [header(model=args.model, kind=type(model).__name__, input_shape=shape, batch=args.batch,
                        mode=args.mode, table=prof.table)]
        text = "\n".join(lines) + "\n" + profile_table(prof, depth=args.depth, show_views=args.show_views)
        if prof.unmodelled:
            text += "unmodelled (no counting rule, counted as 0): " + "; ".join(unmodelled_by_kind(prof.layers)) + "\n"
        if check is not None:
            from energymodel.cli.console import eng

            view = check.assign(**{c: [eng(v) for v in check[c]] for c in ("macs", "fvcore_flops", "difference")})
            differ = int((~check["agrees"]).sum())
            text += (f"\nfvcore cross-check (forward MACs per sample vs fvcore flops, batch 1): {differ} of "
                     f"{len(check)} rows differ\n" + human(view))
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
