"""Count a custom layer: register a counting rule for it (fvcore's set_op_handle, thop's custom_ops).

``ScaleShift`` (y = x * gamma + beta per channel) has no built-in rule, so the profile lists it as
unmodelled. One rule, registered with ``energymodel.register_rule``, makes it count like any layer:

    python examples/custom_rule.py --batch 8 --mode training
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import energymodel
from energymodel.count.work import OpVec, Work


class ScaleShift(nn.Module):
    """Per-channel affine transform ``y = x * gamma + beta`` (a BatchNorm without statistics)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(channels, 1, 1))

    def forward(self, x):
        return x * self.gamma + self.beta


def scale_shift_rule(call) -> Work:
    """Per output element: forward 1 mult + 1 add; backward to the input dy*gamma (1 mult); backward to
    the weights dgamma += dy*x (1 mult + 1 add) and dbeta += dy (1 add), which needs the saved input."""
    n = call.out_words
    return Work(forward=OpVec(mult=n, add=n), backward_input=OpVec(mult=n),
                backward_weight=OpVec(mult=n, add=2 * n), saved_for_weight_grad=n)


def model() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), ScaleShift(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--mode", choices=("inference", "training"), default="training")
    args = ap.parse_args()
    net = model()
    before = energymodel.profile(net, (3, 16, 16), batch=args.batch, mode=args.mode, warn=False)
    print(f"without a rule: unmodelled {before.unmodelled}, energy {before.totals['energy_pj']:.6g} pJ")
    energymodel.register_rule(ScaleShift, scale_shift_rule)
    after = energymodel.profile(net, (3, 16, 16), batch=args.batch, mode=args.mode)
    row = after.layers[after.layers["name"] == "1"].iloc[0]
    print(f"with the rule:  unmodelled {after.unmodelled}, energy {after.totals['energy_pj']:.6g} pJ")
    print(f"ScaleShift: mult_ops {row['mult_ops']:.0f}, add_ops {row['add_ops']:.0f} for a batch of {args.batch}")


if __name__ == "__main__":
    main()
