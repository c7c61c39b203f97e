"""Sharing points of a :class:`~energymodel.models.blocks.BlockNet` and their fractions.

**Sharing fraction** (one definition, used everywhere): at sharing point ``k`` of a BlockNet with blocks
``b_0 .. b_{n-1}``, the share of the network's conv/linear layers (the classifier excluded: it sits in the
head) that lie in ``b_0 .. b_{k-1}``::

    fraction(k) = #conv/linear layers in blocks[:k] / #conv/linear layers in blocks

Also reported: the fraction by parameters (all parameters of ``blocks[:k]`` over those of ``blocks``) and by
forward MACs (same ratio for MACs).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from energymodel.count.phases import Counts, count
from energymodel.count.trace import trace
from energymodel.errors import UserError
from energymodel.models.blocks import (
    BlockNet,
    as_block_net,
    classifier_of,
    conv_linear_names,
    head_with_classes,
)
from energymodel.price.ledger import COST_COLUMNS, Ledger, TrainingCost, price_ledger  # noqa: F401 - re-exported

__all__ = ["SharingPoint", "sharing_points", "block_prefixes", "resolve_points"]


@dataclass(frozen=True)
class SharingPoint:
    """Sharing point ``index`` = number of shared blocks; ``after`` = the last shared block (``"input"`` for 0)."""

    index: int
    after: str
    layers_shared: int
    layers_total: int
    fraction: float
    fraction_params: float
    fraction_macs: float | None


def block_net_of(model: nn.Module) -> BlockNet:
    """:func:`as_block_net`, with "no sharing points" reported as a one-line :class:`UserError`."""
    try:
        return as_block_net(model)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def new_head(head: nn.Module, num_classes: int) -> nn.Module:
    """:func:`head_with_classes`, with "no classifier in the head" reported as a :class:`UserError`."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise UserError(f"number of classes must be a positive integer, got {num_classes!r}")
    try:
        return head_with_classes(head, num_classes)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def num_classes_of(net: BlockNet) -> int:
    try:
        return classifier_of(net.head).out_features
    except ValueError as exc:
        raise UserError(str(exc)) from None


def block_prefixes(model: nn.Module) -> list[str]:
    """Module-path prefixes (as in ``model.named_modules()``) of the model's blocks, in order."""
    net = block_net_of(model)
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for name, block in net.blocks.named_children():
        out.append(names.get(id(block), name))
    return out


def sharing_points(
    model: nn.Module, input_shape: Sequence[int] | None = None, *, counts: Counts | None = None
) -> list[SharingPoint]:
    """The ordered sharing points ``0..n`` of ``model`` with their fractions (by layers, params, MACs).

    The MAC fraction needs ``input_shape`` (C,H,W); without it, it is ``None``. ``counts`` (an inference
    count of ``model`` at that shape, when the caller has one) saves tracing the model again.
    """
    net = block_net_of(model)
    blocks = list(net.blocks.named_children())
    layer_counts = [len(conv_linear_names(b)) for _, b in blocks]
    param_counts = [sum(p.numel() for p in b.parameters()) for _, b in blocks]
    mac_counts: list[float] | None = None
    if input_shape is not None:
        c = counts if counts is not None else inference_counts(model, input_shape)
        prefixes = block_prefixes(model)
        macs = c.layers["macs_forward"].to_numpy()
        names = c.layers["name"].tolist()
        mac_counts = [float(sum(m for n, m in zip(names, macs) if under(n, p))) for p in prefixes]
    total_l, total_p = max(sum(layer_counts), 1), max(sum(param_counts), 1)
    total_m = max(sum(mac_counts), 1.0) if mac_counts is not None else None
    paths = getattr(net, "paths", None) or {}
    points = []
    for k in range(len(blocks) + 1):
        points.append(
            SharingPoint(
                index=k,
                after=paths.get(blocks[k - 1][0], blocks[k - 1][0]) if k else "input",
                layers_shared=sum(layer_counts[:k]),
                layers_total=sum(layer_counts),
                fraction=sum(layer_counts[:k]) / total_l,
                fraction_params=sum(param_counts[:k]) / total_p,
                fraction_macs=(sum(mac_counts[:k]) / total_m) if mac_counts is not None and total_m else None,
            )
        )
    return points


def under(name: str, prefix: str) -> bool:
    base = name.split("#", 1)[0]
    return base == prefix or base.startswith(prefix + ".")


def resolve_points(model: nn.Module, share: Iterable[float | int] | None) -> list[int]:
    """Sharing point indices from a list of indices (ints) or fractions in [0, 1] (floats, nearest point).

    ``None`` means every sharing point.
    """
    pts = sharing_points(model)
    if share is None:
        return [p.index for p in pts]
    out: list[int] = []
    for s in share:
        if isinstance(s, bool):
            raise UserError(f"bad sharing point {s!r}")
        if isinstance(s, int) or (isinstance(s, float) and s.is_integer() and s > 1):
            k = int(s)
            if not 0 <= k < len(pts):
                raise UserError(f"sharing point {k} out of range 0..{len(pts) - 1}")
        else:
            f = float(s)
            if not 0.0 <= f <= 1.0 or math.isnan(f):
                raise UserError(f"sharing fraction {s!r} must lie in [0, 1]")
            k = min(pts, key=lambda p: (abs(p.fraction - f), p.index)).index
        if k not in out:
            out.append(k)
    return sorted(out)


def with_classes(model: nn.Module, num_classes: int | None) -> BlockNet:
    net = block_net_of(model)
    if num_classes is None:
        return net
    return BlockNet(list(net.blocks.named_children()), new_head(net.head, num_classes),
                    paths=getattr(net, "paths", None), members=getattr(net, "members", None))


def prefix_mask(counts: Counts, prefixes: Sequence[str]) -> np.ndarray:
    names = counts.layers["name"].tolist()
    return np.array([any(under(n, p) for p in prefixes) for n in names], dtype=bool)


def inference_counts(net: BlockNet, input_shape: Sequence[int]) -> Counts:
    return count(trace(net, input_shape, mode="inference"), batch=1, warn=False)
