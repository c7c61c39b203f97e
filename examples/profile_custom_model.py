"""Profile a custom network: define a small BlockNet, list its sharing points, print per-layer costs.

    python examples/profile_custom_model.py                 # batch 32, one training step
    python examples/profile_custom_model.py --batch 4 --mode inference --table 45nm-int8
"""

from __future__ import annotations

import argparse

import pandas as pd
from torch import nn

from energymodel.analysis.points import sharing_points
from energymodel.analysis.profile import profile
from energymodel.models.blocks import BlockNet


def tiny_net(num_classes: int = 10, width: int = 16) -> BlockNet:
    """Three conv blocks and a classifier head for 3x32x32 images."""

    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                             nn.MaxPool2d(2))

    blocks = [("b1", block(3, width)), ("b2", block(width, 2 * width)), ("b3", block(2 * width, 4 * width))]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))
    return BlockNet(blocks, head)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--mode", choices=("training", "inference"), default="training")
    ap.add_argument("--width", type=int, default=16, help="channels of the first block")
    ap.add_argument("--table", default="45nm", help="energy table (energymodel tables)")
    args = ap.parse_args()

    net = tiny_net(width=args.width)
    shape = (3, 32, 32)
    print("sharing points:")
    for p in sharing_points(net, shape):
        print(f"  k={p.index}: after {p.after:<6} fraction {p.fraction:.2f} (params {p.fraction_params:.2f}, "
              f"MACs {p.fraction_macs:.2f})")
    prof = profile(net, shape, batch=args.batch, mode=args.mode, table=args.table)
    cols = ["name", "kind", "macs_forward", "macs_backward_input", "macs_backward_weight", "params",
            "sram_accesses", "dram_accesses", "energy_pj"]
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(prof.layers[cols].to_string(index=False))
    t = prof.totals
    print(f"total: {t['macs']:.4g} MACs, {t['dram_accesses']:.4g} DRAM accesses, {t['energy_pj'] / 1e6:.4g} uJ "
          f"per {args.mode} {'step' if args.mode == 'training' else 'pass'} of {args.batch} images")


if __name__ == "__main__":
    main()
