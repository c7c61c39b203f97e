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
    p.add_argument("--memory-budget", metavar="BYTES", help="name the shallowest sharing point whose training step "
                   "(its peak memory) fits this many bytes: 262144, 256KiB, 1.5MiB, 2GB (default: none)")
    add_common_table(p)
    add_format_args(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from energymodel.analysis.profile import as_table
    from energymodel.analysis.sharing import compare
    from energymodel.cli.console import energy, eng, ibytes
    from energymodel.count.footprint import parse_bytes
    from energymodel.models.inputs import describe

    model, shape = model_and_shape(args)
    net = block_net(args, model, shape)
    budget = parse_bytes(args.memory_budget, "--memory-budget") if args.memory_budget else None
    df = compare(net, shape, table=args.energy_table, buffer_bytes=args.buffer, retrain_epochs=args.retrain_epochs,
                 memory_budget=budget, **strategy_settings(args, net))
    df = df.rename(columns={"share": "k"})
    if args.format == "table":
        cols = ["strategy", "k", "after", "fraction", "macs", "energy_pj", "dram_accesses", "storage_bytes",
                "training_memory_bytes", "inference_energy_pj", "savings_energy_vs_regular",
                "savings_energy_vs_retraining"]
        view = df[cols].copy()
        for col in ("macs", "dram_accesses"):
            view[col] = [eng(v) for v in view[col]]
        for col in ("storage_bytes", "training_memory_bytes"):
            view[col] = [ibytes(v) for v in view[col]]
        for col in ("energy_pj", "inference_energy_pj"):
            view[col] = [energy(v) for v in view[col]]
        for col in ("savings_energy_vs_regular", "savings_energy_vs_retraining"):
            view[col] = [f"{v:.3g}×" for v in view[col]]
        view = view.rename(columns={
            "macs": "MACs", "energy_pj": "energy (J)", "dram_accesses": f"DRAM ({as_table(args.energy_table).word_bits}-bit words)", "storage_bytes": "storage", "training_memory_bytes": "step memory",
            "inference_energy_pj": "inference (J/sample)", "savings_energy_vs_regular": "saves vs regular",
            "savings_energy_vs_retraining": "saves vs retraining"})
        head = (f"model {args.model} · input {describe(shape) if hasattr(shape, 'text') else 'x'.join(map(str, shape))} · {args.epochs} epochs of "
                f"{args.samples_new} samples, batch {args.batch}, {args.optimizer} · table {args.energy_table}, "
                f"on-chip buffer {ibytes(df.attrs.get('buffer_bytes', 0))}\n"
                "energy: one new task's training; inference: per sample of the grown network; step memory: the peak of "
                "one training step (weights, gradients, optimizer state, saved activations); saves: baseline / "
                "strategy energy (> 1 is cheaper)\n\n")
        text = head + human(view)
        if budget is not None:
            k = df.attrs.get("shallowest_fitting_point")
            if k is None:
                text += f"\nmemory budget {ibytes(budget)}: no sharing point compared fits it\n"
            else:
                row = df[(df["strategy"] == "partial-sharing") & (df["k"] == k)].iloc[0]
                text += (f"\nmemory budget {ibytes(budget)}: the shallowest sharing point whose training step fits is "
                         f"k={k} (after {row['after']}, fraction {row['fraction']:.3g}): "
                         f"{ibytes(row['training_memory_bytes'])}\n")
        emit(args, text=text)
    else:
        emit(args, frame=df, data={"settings": finite(df.attrs), "rows": finite(df.to_dict(orient="records"))})
