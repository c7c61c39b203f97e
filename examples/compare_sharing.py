"""Compare clone-and-branch at every sharing point of ResNet-20 (CIFAR-10 shapes) with regular incremental
learning and full retraining.

    python examples/compare_sharing.py
    python examples/compare_sharing.py --samples 500 --epochs 1 --share 0,3,6,9
"""

from __future__ import annotations

import argparse

import pandas as pd

from energymodel.analysis.sharing import compare
from energymodel.models.zoo import build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=25000, help="training samples of the new task (and of the old)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--classes", type=int, default=5, help="classes of the base network and of the new task")
    ap.add_argument("--share", help="sharing points, e.g. 0,3,6 (default: all)")
    ap.add_argument("--table", default="45nm")
    args = ap.parse_args()

    net = build("cifar_resnet20", num_classes=args.classes)
    share = [int(s) for s in args.share.split(",")] if args.share else None
    df = compare(net, (3, 32, 32), share=share, new_classes=args.classes, samples_new=args.samples,
                 samples_old=args.samples, epochs=args.epochs, batch=args.batch, optimizer="momentum", table=args.table)
    cols = ["strategy", "share", "after", "fraction", "macs", "dram_accesses", "energy_pj", "storage_bytes",
            "savings_energy_vs_regular", "savings_energy_vs_retraining"]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(df[cols].to_string(index=False))
    best = df[df["strategy"] == "partial-sharing"].sort_values("savings_energy_vs_regular").iloc[-1]
    print(f"cheapest: sharing point {best['share']} (fraction {best['fraction']:.2f}): "
          f"{best['savings_energy_vs_regular']:.2f}x less training energy than regular incremental learning")


if __name__ == "__main__":
    main()
