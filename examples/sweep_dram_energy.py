"""Sweep the DRAM access energy and find where partial sharing stops paying off.

For each sharing point: the DRAM/MAC energy ratio at which its training-energy savings against regular
incremental learning cross a target (default 1.5x).

    python examples/sweep_dram_energy.py
    python examples/sweep_dram_energy.py --model smallcnn --points 20 --target 2.0 --samples 500
"""

from __future__ import annotations

import argparse

import numpy as np

from energymodel.analysis.sweep import breakeven, format_breakeven, sweep
from energymodel.models.zoo import build, get_entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar_resnet20", help="a zoo model")
    ap.add_argument("--points", type=int, default=200, help="DRAM energies to try (log-spaced)")
    ap.add_argument("--dram-min", type=float, default=10.0, help="pJ per 32-bit DRAM access, lowest")
    ap.add_argument("--dram-max", type=float, default=5000.0, help="pJ per 32-bit DRAM access, highest")
    ap.add_argument("--target", type=float, default=1.5, help="savings (x) that count as paying off")
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()

    net = build(args.model, num_classes=10)
    shape = get_entry(args.model).input_shape
    dram = np.geomspace(args.dram_min, args.dram_max, args.points)
    df = sweep(net, shape, {"dram": dram}, samples_new=args.samples, samples_old=args.samples, epochs=args.epochs)
    print(f"{df.attrs['grid_points']} DRAM energies x {df['share'].nunique()} sharing points = {len(df)} rows")
    be = breakeven(df, key="dram_mac_ratio", target=args.target)
    print(format_breakeven(be), end="")
    crossing = be.dropna(subset=["breakeven"])
    if len(crossing):
        r = crossing.iloc[0]
        print(f"e.g. sharing point {r['share']} pays off ({args.target:g}x) only "
              f"{'below' if r['pays_off'] == 'below' else 'above'} a DRAM/MAC ratio of {r['breakeven']:.1f}")


if __name__ == "__main__":
    main()
