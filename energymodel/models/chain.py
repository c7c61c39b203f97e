"""Sharing points of any model: its top-level children, when one trace shows they run one after another.

A :class:`~energymodel.models.blocks.BlockNet` (or an ``nn.Sequential``, or a model with ``blocks`` and ``head``)
declares its sharing points. Any other model — a torchvision-style ResNet whose ``forward`` calls
``conv1, bn1, relu, maxpool, layer1 .. layer4, avgpool``, ``torch.flatten`` and ``fc`` — is viewed as one
by :func:`block_view`: one forward pass on the ``meta`` device (no memory) records the calls of the
top-level children. They form a *chain* when

- the first child called reads the model's input, each next one reads the previous one's output, and
  the model returns the last one's output;
- between two children only reshapes run (``view``/``reshape``/``flatten``/``squeeze``/``unsqueeze``;
  they become a zero-cost ``nn.Flatten``/``nn.Unflatten`` in the view);
- every child with parameters is called exactly once.

The blocks are the children up to the head; the head is the last child holding an ``nn.Linear`` (the
classifier), the parameter-free children just before it (``avgpool``) and any after it. Declared
``blocks=[names]`` (top-level child names, in call order) replace that split: the remaining children
are the head. The view shares the model's modules (no copy), so costs and names are the model's own.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from energymodel.errors import UserError, one_line
from energymodel.models.blocks import BlockNet, as_block_net
from energymodel.models.inputs import example_inputs

__all__ = ["block_view", "block_names_of"]

_RESHAPES = frozenset({"view", "_unsafe_view", "reshape", "flatten", "squeeze", "unsqueeze", "alias", "detach"})


@dataclass
class _Step:
    name: str
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


class _ChainRecorder(TorchDispatchMode):
    """Follows the previous child's output through reshapes run between children; anything else breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.live: dict[int, Tensor] = {}
        self.broken: str | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.depth == 0:
            name = func.overloadpacket.__name__
            ins = [a for a in args if isinstance(a, Tensor)]
            if name in _RESHAPES and ins and id(ins[0]) in self.live:
                if isinstance(out, Tensor):
                    self.live[id(out)] = out
            elif any(id(t) in self.live for t in ins) and self.broken is None:
                self.broken = f"aten.{name} runs between top-level children"
        return out


def _chain(model: nn.Module, input_shape, inputs) -> list[_Step]:
    from energymodel.models.meta import on_meta, prepared

    ex = example_inputs(model, input_shape, inputs).to("meta")
    children = dict(model.named_children())
    if not children:
        raise UserError(f"{type(model).__name__} has no child modules to share")
    rec = _ChainRecorder()
    steps: list[_Step] = []
    calls: dict[str, int] = {}
    problems: list[str] = []
    handles = []

    def pre(name):
        def hook(module, args):
            rec.depth += 1
            calls[name] = calls.get(name, 0) + 1
            first = next((a for a in args if isinstance(a, Tensor)), None)
            if rec.depth == 1 and (first is None or id(first) not in rec.live) and not problems:
                problems.append(f"{name} does not read the previous child's output")
        return hook

    def post(name):
        def hook(module, args, output):
            rec.depth -= 1
            if rec.depth == 0 and isinstance(output, Tensor):
                first = next(a for a in args if isinstance(a, Tensor))
                steps.append(_Step(name, module, tuple(first.shape[1:]), tuple(output.shape[1:])))
                rec.live = {id(output): output}
        return hook

    for name, child in children.items():
        handles.append(child.register_forward_pre_hook(pre(name)))
        handles.append(child.register_forward_hook(post(name)))
    try:
        rec.live = {id(t): t for t in ex.tensors()[:1]}
        with prepared(model, set()), on_meta(model), torch.no_grad(), rec:
            out = model(*ex.args, **ex.kwargs)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{type(model).__name__} could not be traced to find its blocks: {one_line(exc)}") from None
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, Tensor) or id(out) not in rec.live:
        problems.append("the model does not return its last child's output")
    if rec.broken:
        problems.insert(0, rec.broken)
    for name, child in children.items():
        if calls.get(name, 0) > 1 or (calls.get(name, 0) == 0 and any(True for _ in child.parameters())):
            problems.append(f"{name} runs {calls.get(name, 0)} times")
    if problems:
        raise UserError(f"{type(model).__name__} declares no sharing points and its top-level children do not run "
                        f"one after another ({problems[0]}): give it `blocks` and `head`, or declare blocks")
    return steps


def _reshape(prev: tuple[int, ...], nxt: tuple[int, ...]) -> list[tuple[str, nn.Module]]:
    """The zero-cost modules that turn per-sample shape ``prev`` into ``nxt`` (none when equal)."""
    if prev == nxt:
        return []
    if math.prod(prev) != math.prod(nxt):  # pragma: no cover - a reshape keeps the number of elements
        raise UserError(f"cannot reshape {prev} into {nxt}")
    if len(nxt) == 1:
        return [("flatten", nn.Flatten())]
    return [("flatten", nn.Flatten()), ("unflatten", nn.Unflatten(1, nxt))]


def _head_start(steps: list[_Step]) -> int:
    with_linear = [i for i, s in enumerate(steps) if any(isinstance(m, nn.Linear) for m in s.module.modules())]
    if not with_linear:
        raise UserError("no top-level child holds an nn.Linear classifier to serve as the head")
    start = with_linear[-1]
    while start > 1 and not any(True for _ in steps[start - 1].module.parameters()):
        start -= 1
    return start


def block_view(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    inputs: object = None,
    blocks: Sequence[str] | None = None,
) -> BlockNet:
    """``model`` as a :class:`BlockNet` sharing its modules: declared (``blocks`` attribute and ``head``, an
    ``nn.Sequential``), or found from a trace at ``input_shape``/``inputs`` (see the module docstring).
    ``blocks`` names the top-level children that are blocks; the rest is the head. Lazy modules
    (``nn.LazyLinear`` ...) are initialised first when an input is given (a sharing point counts their
    parameters)."""
    if input_shape is not None or inputs is not None:
        from energymodel.models.meta import materialize_lazy

        materialize_lazy(model, example_inputs(model, input_shape, inputs))
    if blocks is None:
        try:
            return as_block_net(model)
        except ValueError:
            pass
    steps = _chain(model, input_shape, inputs)
    names = [s.name for s in steps]
    if blocks is not None:
        blocks = [b.strip() for b in blocks if b.strip()]
        unknown = [b for b in blocks if b not in names]
        if unknown:
            raise UserError(f"block {unknown[0]!r} is not a top-level child of {type(model).__name__} that runs "
                            f"in its forward (those are: {', '.join(names)})")
        if blocks != names[: len(blocks)]:
            raise UserError(f"declared blocks must be the first children in call order: {', '.join(names)}")
        start = len(blocks)
        if start >= len(steps):
            raise UserError("declared blocks leave no head (the classifier must follow the last block)")
    else:
        start = _head_start(steps)
        if start == 0:
            raise UserError(f"{type(model).__name__} declares no sharing points: its top-level children "
                            f"({', '.join(names)}) are all head; give it `blocks` and `head`, or declare blocks")
    parts: list[tuple[str, nn.Module]] = []
    prev = steps[0].in_shape
    for s in steps:
        parts += [(f"{kind}_{s.name}", m) for kind, m in _reshape(prev, s.in_shape)]
        parts.append((s.name, s.module))
        prev = s.out_shape
    n_blocks = sum(1 for n, _ in parts[: parts.index((steps[start].name, steps[start].module))])
    head = nn.Sequential(OrderedDict(parts[n_blocks:]))
    return BlockNet(parts[:n_blocks], head)


def block_names_of(model: nn.Module, net: BlockNet) -> dict[str, str]:
    """Block name (as sharing points print it) -> the module path of that block in ``model``."""
    paths = {id(m): n for n, m in model.named_modules()}
    return {name: paths.get(id(block), name) for name, block in net.blocks.named_children()}
