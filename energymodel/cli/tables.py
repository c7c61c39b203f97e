"""``energymodel tables``: the shipped energy tables, or one table shown and validated."""

from __future__ import annotations

from energymodel.cli.common import add_format_args, emit, subcommand


def add_parser(sub) -> None:
    p = subcommand(sub, "tables", "list shipped energy tables, or show/check one")
    p.add_argument("table", nargs="?", help="a shipped name or a .toml file to validate and show")
    add_format_args(p)
    p.set_defaults(func=run)


def run(args) -> None:
    import pandas as pd

    from energymodel.price.table import builtin_tables, load_table

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
