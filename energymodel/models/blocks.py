"""The shape every shareable network has: an ordered chain of named blocks, then a classifier head.

Partial network sharing cuts a network between two blocks. A :class:`BlockNet` makes the cut points
explicit: ``model.blocks`` is an ``nn.Sequential`` of named blocks (stem, residual blocks, conv
layers ...) and ``model.head`` maps the last block's output to class scores (pooling, flatten, the
final ``nn.Linear``). Sharing point ``k`` (``0 <= k <= len(model.blocks)``) means: blocks ``[0, k)``
are shared and frozen, blocks ``[k, n)`` plus a new head form a new task's branch.

``k = 0`` shares nothing (regular incremental learning: a full clone); ``k = n`` shares every block and
trains only a new head (feature extraction).

Models from elsewhere can be used when they are an ``nn.Sequential`` (last child taken as head) or
carry ``blocks`` and ``head`` attributes with ``forward(x) == head(blocks(x))``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable

from torch import nn

__all__ = ["BlockNet", "as_block_net", "classifier_of", "head_with_classes", "split_at", "conv_linear_names",
           "replace_module"]


class BlockNet(nn.Module):
    """A classifier as ``head(blocks(x))`` with named, ordered blocks.

    Parameters
    ----------
    blocks:
        ``(name, module)`` pairs in forward order. Names must be valid ``nn.Sequential`` keys (no dots).
    head:
        Module mapping the last block's output to class scores; its last ``nn.Linear`` is the classifier.
    paths, members:
        For a view of another model (:func:`energymodel.models.chain.block_view`): block name -> the dotted
        path of the module its sharing point follows, and -> the module paths the block holds.
    """

    def __init__(self, blocks: Iterable[tuple[str, nn.Module]], head: nn.Module, *,
                 paths: dict[str, str] | None = None, members: dict[str, list[str]] | None = None) -> None:
        super().__init__()
        self.blocks = nn.Sequential(OrderedDict(blocks))
        self.head = head
        self.paths = dict(paths or {})
        self.members = {k: list(v) for k, v in (members or {}).items()}

    def forward(self, x):  # noqa: D401 - standard nn.Module API
        return self.head(self.blocks(x))

    @property
    def num_classes(self) -> int:
        return classifier_of(self.head).out_features


def as_block_net(model: nn.Module) -> BlockNet:
    """Return ``model`` viewed as a :class:`BlockNet` (no copy), or raise ``ValueError``.

    Accepted: a ``BlockNet``; any module with ``blocks`` (``nn.Sequential``) and ``head`` attributes; an
    ``nn.Sequential`` whose last child is the head (every earlier child is a block).
    """
    if isinstance(model, BlockNet):
        return model
    blocks = getattr(model, "blocks", None)
    head = getattr(model, "head", None)
    if isinstance(blocks, nn.Sequential) and isinstance(head, nn.Module):
        view = BlockNet.__new__(BlockNet)
        nn.Module.__init__(view)
        view.blocks = blocks
        view.head = head
        view.paths, view.members = {}, {}
        return view
    if isinstance(model, nn.Sequential) and len(model) >= 2:
        children = list(model.named_children())
        return BlockNet(children[:-1], children[-1][1])
    raise ValueError(
        f"{type(model).__name__} declares no sharing points: give it `blocks` (nn.Sequential) and `head`, "
        "or make it an nn.Sequential"
    )


def classifier_of(head: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` inside ``head`` (the classifier excluded from sharing fractions)."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"head {type(head).__name__} has no nn.Linear classifier")
    return linears[-1]


def head_with_classes(head: nn.Module, num_classes: int) -> nn.Module:
    """A deep copy of ``head`` whose classifier is a freshly initialised ``nn.Linear`` with ``num_classes`` outputs.

    Layers of the head before the classifier keep their (copied) weights, as in clone-and-branch.
    """
    new = copy.deepcopy(head)
    old = classifier_of(new)
    fresh = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    return replace_module(new, old, fresh)


def replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> nn.Module:
    """Put ``new`` where ``old`` sits inside ``root`` (or return ``new`` when ``old`` is ``root``); return the root.

    Raises ``ValueError`` when ``old`` is not a submodule of ``root``.
    """
    if root is old:
        return new
    for parent in root.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return root
    raise ValueError(f"{type(old).__name__} is not a submodule of {type(root).__name__}")


def split_at(model: nn.Module, k: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Return ``(trunk, rest)``: blocks ``[0, k)`` and blocks ``[k, n)`` as ``nn.Sequential`` (modules shared, not copied)."""
    net = as_block_net(model)
    n = len(net.blocks)
    if not 0 <= k <= n:
        raise ValueError(f"sharing point {k} out of range 0..{n}")
    items = list(net.blocks.named_children())
    return nn.Sequential(OrderedDict(items[:k])), nn.Sequential(OrderedDict(items[k:]))


def conv_linear_names(module: nn.Module, prefix: str = "") -> list[str]:
    """Names of the conv and linear layers in ``module`` (the layers a sharing fraction counts)."""
    out = []
    for name, m in module.named_modules(prefix=prefix):
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            out.append(name)
    return out
