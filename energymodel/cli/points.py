"""``energymodel points``: a model's sharing points (k, the block they follow) and their fractions."""

from __future__ import annotations

from energymodel.cli.common import (
    add_format_args,
    add_model_args,
    block_net,
    emit,
    model_and_shape,
    subcommand,
)


def add_parser(sub) -> None:
    p = subcommand(sub, "points", "list a model's sharing points (k, the block they follow) and fractions")
    add_model_args(p, blocks=True)
    add_format_args(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from dataclasses import asdict

    import pandas as pd

    from energymodel.analysis.points import sharing_points
    from energymodel.models.chain import block_names_of

    model, shape = model_and_shape(args)
    net = block_net(args, model, shape)
    paths = block_names_of(model, net)
    keys = ["", *(k for k, _ in net.blocks.named_children())]
    rows = [{"k": p.index, **{k: v for k, v in asdict(p).items() if k != "index"},
             "module": paths.get(keys[p.index], "")} for p in sharing_points(net, shape)]
    emit(args, frame=pd.DataFrame(rows), data=rows)
