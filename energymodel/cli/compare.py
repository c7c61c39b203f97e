"""``energymodel compare``: clone-and-branch at each sharing point vs regular incremental learning and full
retraining."""

from __future__ import annotations

from energymodel.cli.common import (
    add_common_table,
    add_format_args,
    add_model_args,
    add_strategy_args,
    block_net,
    emit,
    finite,
    human,
    model_and_shape,
    strategy_settings,
    subcommand,
)


def add_parser(sub) -> None:
    p = subcommand(sub, "compare", "clone-and-branch at each sharing point vs regular incremental learning and full "
             "retraining")
    add_model_args(p, blocks=True)
    add_strategy_args(p)
    p.add_argument("--buffer", type=int, default=None, metavar="BYTES",
                   help="on-chip buffer size in bytes (default: the energy table's dataflow.buffer_bytes)")
    p.add_argument("--retrain-epochs", type=int, default=None, metavar="N",
                   help="epochs of each full retraining from scratch (default: --epochs)")
    add_common_table(p)
    add_format_args(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from energymodel.analysis.sharing import compare
    from energymodel.cli.console import energy, eng, ibytes
    from energymodel.models.inputs import describe

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
        view["storage_bytes"] = [ibytes(v) for v in view["storage_bytes"]]
        for col in ("energy", "inference"):
            view[col] = [energy(v) for v in view[col]]
        head = (f"model {args.model} · input {describe(shape) if hasattr(shape, 'text') else 'x'.join(map(str, shape))} · {args.epochs} epochs of "
                f"{args.samples_new} samples, batch {args.batch}, {args.optimizer} · table {args.energy_table}, "
                f"on-chip buffer {ibytes(df.attrs.get('buffer_bytes', 0))}\n"
                "energy: one new task's training; inference: per sample of the grown network; savings: baseline / "
                "strategy (> 1 is cheaper)\n\n")
        emit(args, text=head + human(view))
    else:
        emit(args, frame=df, data={"settings": finite(df.attrs), "rows": finite(df.to_dict(orient="records"))})
