"""Sharing points of any model: the module calls after which it can be cut, found from one trace.

A :class:`~energymodel.models.blocks.BlockNet` (or an ``nn.Sequential``, or a model with ``blocks`` and ``head``)
declares its sharing points. Any other model is viewed as one by :func:`block_view`, from one forward pass
on the ``meta`` device (:mod:`energymodel.models.cuts`):

1. **Candidates**: the *units* (top-level children; ``nn.Sequential`` containers opened all the way down;
   a container whose children can be cut between opened once, so a MobileNet's ``features`` gives one
   point per stage and an encoder one per layer) after which the model can be cut — exactly one tensor,
   that unit's output, alive across the cut.
2. **Head**: the last unit holding an ``nn.Linear`` (the classifier), the parameter-free units just before
   it (``avgpool``) and everything after it.
3. **Distinct fractions**: of several consecutive points that share the same number of conv/linear
   layers, only the deepest is kept (a torchvision ResNet's ``conv1 bn1 relu maxpool`` give one point,
   after ``maxpool``); points before the first conv/linear layer are dropped.

``blocks=[names]`` declares the points instead: module paths at any depth (``encoder.layers.0``), in call
order, each a valid cut; the first block holds everything before the first point, the head everything after
the last one. A refusal lists the names that would be accepted.

The view shares the model's modules (no copy) and computes ``model(x)``: when only reshapes run between the
units it is those modules in a chain (with zero-cost ``nn.Flatten``/``nn.Unflatten`` for the reshapes);
when the model's ``forward`` runs other code between them (a ViT's class token and positional embedding),
each block is a ``torch.fx`` segment of that ``forward`` (:mod:`energymodel.models.split`). The view's
``paths`` maps each block name to the dotted path of the module its point follows, ``members`` to the
module paths it holds.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from energymodel.errors import UserError
from energymodel.models.blocks import BlockNet, as_block_net, conv_linear_names
from energymodel.models.cuts import RESHAPES, ForwardLog, record_forward, units
from energymodel.models.inputs import example_inputs

__all__ = ["block_view", "block_names_of", "cut_candidates"]

_SHOWN = 24


def _key(path: str, taken: set[str]) -> str:
    """A ``nn.Sequential`` key for a dotted module path (dots become underscores), unique among ``taken``."""
    base = re.sub(r"\W", "_", path) or "root"
    key, i = base, 2
    while key in taken:
        key, i = f"{base}_{i}", i + 1
    taken.add(key)
    return key


def cut_candidates(log: ForwardLog) -> list[str]:
    """Every module path after which ``log``'s model can be cut, in the order of the cuts; of modules that end
    at the same cut, the outermost (``encoder`` rather than its last layer)."""
    best: dict[int, str] = {}
    for p in log.sequence:
        if log.valid_cut(p):
            end = log.calls[p].exit
            if end not in best or p.count(".") < best[end].count("."):
                best[end] = p
    return [best[e] for e in sorted(best)]


def _refusal(model: nn.Module, log: ForwardLog, reason: str) -> UserError:
    cands = cut_candidates(log)
    shown = ", ".join(cands[:_SHOWN]) + (f" ... ({len(cands)} in all)" if len(cands) > _SHOWN else "")
    return UserError(f"{type(model).__name__}: {reason}; modules it can be cut after: {shown or 'none'}")


def _has_linear(m: nn.Module) -> bool:
    return any(isinstance(q, nn.Linear) for q in m.modules())


def _head_start(model: nn.Module, log: ForwardLog, seq: list[str]) -> int:
    """Index in ``seq`` of the head's first unit: the last top-level child holding an ``nn.Linear`` and the
    parameter-free top-level children just before it (looked for among the units when the model has one
    top-level child)."""
    mods = dict(model.named_modules())

    def start_of(order: list[str]) -> int:
        with_linear = [i for i, u in enumerate(order) if _has_linear(mods[u])]
        if not with_linear:
            raise _refusal(model, log, "no module holds an nn.Linear classifier to serve as the head")
        start = with_linear[-1]
        while start > 0 and not any(True for _ in mods[order[start - 1]].parameters()):
            start -= 1
        return start

    top = log.children("")
    first = start_of(top)
    if first == 0:
        return start_of(seq)
    head = top[first]
    return next(i for i, u in enumerate(seq) if u == head or u.startswith(head + "."))


def _named(log: ForwardLog, seq: list[str], points: list[str]) -> list[str]:
    """Each point renamed to its largest enclosing module that ends with it and starts inside its block
    (``features.0.2`` -> ``features.0`` when the whole of ``features.0`` is in the block)."""
    out, start = [], log.calls[seq[0]].enter if seq else 0
    for p in points:
        best, c = p, log.calls[p]
        parts = p.split(".")
        for i in range(len(parts) - 1, 0, -1):
            a = log.calls.get(".".join(parts[:i]))
            if a is None or a.exit != c.exit or a.enter < start or a.calls != 1 or a.out_id != c.out_id:
                break
            best = a.path
        out.append(best)
        start = c.exit
    return out


def _distinct(model: nn.Module, seq: list[str], points: list[str]) -> list[str]:
    """Of consecutive points at the same conv/linear count keep the deepest; drop those at count 0."""
    mods = dict(model.named_modules())
    cum, total, at = {}, 0, {}
    for u in seq:
        total += len(conv_linear_names(mods[u]))
        cum[u] = total
    for p in points:
        at[cum[p]] = p  # a later point at the same count replaces the earlier one
    return [p for c, p in at.items() if c > 0]


def _declared(model: nn.Module, log: ForwardLog, blocks: Sequence[str]) -> list[str]:
    names = [b.strip() for b in blocks if b.strip()]
    if not names:
        raise UserError("declare at least one block")
    paths = dict(model.named_modules())
    for b in names:
        if b not in paths or not b:
            raise _refusal(model, log, f"block {b!r} names no module")
        if b not in log.calls:
            raise _refusal(model, log, f"block {b!r} is never called by its forward")
        if log.calls[b].calls > 1:
            raise _refusal(model, log, f"block {b!r} runs {log.calls[b].calls} times")
        if not log.valid_cut(b):
            raise _refusal(model, log, f"it cannot be cut after {b!r} (more than its output is still needed "
                           "after it, or it returns more than one tensor)")
    exits = [log.calls[b].exit for b in names]
    if exits != sorted(exits) or len(set(exits)) != len(exits):
        order = sorted(names, key=lambda b: log.calls[b].exit)
        raise UserError(f"declared blocks must be in call order: {', '.join(order)}")
    return names


def _chain_of(log: ForwardLog, seq: list[str]) -> bool:
    """Whether ``seq`` runs as a chain: each unit reads the previous one's output (the first: the model's
    only input), only reshapes between them, the model returns the last one's output."""
    if len(log.input_ids) != 1:
        return False
    covered: set[int] = set()
    for u in seq:
        c = log.calls[u]
        if c.calls != 1 or c.extra_tensors or c.out_id is None:
            return False
        covered.update(range(c.enter, c.exit))
    if any(pos not in covered and op[0] not in RESHAPES for pos, op in enumerate(log.ops)):
        return False
    live, since = {log.input_ids[0]}, 0
    for u in seq:
        c = log.calls[u]
        live = _reshaped(log, live, since, c.enter)
        if not c.arg_ids or c.arg_ids[0] not in live:
            return False
        live, since = {c.out_id}, c.exit
    return log.output_id in _reshaped(log, live, since, len(log.ops))


def _reshaped(log: ForwardLog, start: set[int], since: int, until: int) -> set[int]:
    """``start`` and every reshape of it run at positions ``since .. until - 1``."""
    out = set(start)
    for name, ins, outs in log.ops[since:until]:
        if name in RESHAPES and ins and ins[0] in out:
            out.update(outs)
    return out


def _reshape(prev: tuple[int, ...], nxt: tuple[int, ...]) -> list[tuple[str, nn.Module]]:
    """The zero-cost modules that turn per-sample shape ``prev`` into ``nxt`` (none when equal)."""
    if prev == nxt:
        return []
    if math.prod(prev) != math.prod(nxt):  # pragma: no cover - a reshape keeps the number of elements
        raise UserError(f"cannot reshape {prev} into {nxt}")
    if len(nxt) == 1:
        return [("flatten", nn.Flatten())]
    return [("flatten", nn.Flatten()), ("unflatten", nn.Unflatten(1, nxt))]


def _composed(log: ForwardLog, seq: list[str], points: list[str], names: list[str]) -> BlockNet:
    taken: set[str] = set()
    parts: list[list[tuple[str, nn.Module]]] = [[] for _ in range(len(points) + 1)]
    members: list[list[str]] = [[] for _ in range(len(points) + 1)]
    j = 0
    prev = log.calls[seq[0]].in_shape
    for u in seq:
        c = log.calls[u]
        key = _key(u, taken)
        parts[j] += [(f"{kind}_{key}", m) for kind, m in _reshape(prev, c.in_shape)]
        parts[j].append((key, c.module))
        members[j].append(u)
        prev = c.out_shape
        if j < len(points) and u == points[j]:
            j += 1
    keys = _point_keys(names)
    blocks = [(k, p[0][1] if len(p) == 1 else nn.Sequential(OrderedDict(p))) for k, p in zip(keys, parts)]
    head = nn.Sequential(OrderedDict(parts[-1]))
    return _view(blocks, head, names, members)


def _point_keys(points: list[str]) -> list[str]:
    taken: set[str] = set()
    return [_key(p, taken) for p in points]


def _view(blocks, head, points: list[str], members: list[list[str]]) -> BlockNet:
    keys = [k for k, _ in blocks]
    return BlockNet(blocks, head, paths=dict(zip(keys, points)), members=dict(zip(keys, members)))


def _segmented(model: nn.Module, log: ForwardLog, seq: list[str], points: list[str], ex,
               names: list[str], found: bool = False) -> BlockNet:
    """The FX view at ``points``; points that were ``found`` (not declared) and that a value crosses in the
    traced graph (a size read from the input and used at the end) are dropped, the rest kept."""
    from energymodel.models.split import CutError, fx_segments

    while True:
        try:
            segs = fx_segments(model, log, points, ex.kwargs, len(ex.args))
            break
        except CutError as exc:
            if not found or not exc.crossed:
                raise
            keep = [i for i, p in enumerate(points) if p not in exc.crossed]
            if not keep:
                raise _refusal(model, log, f"no sharing points: {exc}") from None
            points, names = [points[i] for i in keep], [names[i] for i in keep]
    keys = _point_keys(names)
    members = [[p for p in seq if _segment_of(log, points, p) == i] for i in range(len(points) + 1)]
    return _view(list(zip(keys, segs[:-1])), segs[-1], names, members)


def _segment_of(log: ForwardLog, points: list[str], path: str) -> int:
    end = log.calls[path].exit
    return sum(1 for p in points if log.calls[p].exit < end)


def block_view(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    inputs: object = None,
    blocks: Sequence[str] | None = None,
) -> BlockNet:
    """``model`` as a :class:`BlockNet` sharing its modules: declared (``blocks`` attribute and ``head``, an
    ``nn.Sequential``), or found from a trace at ``input_shape``/``inputs`` (see the module docstring).
    ``blocks`` names the modules the sharing points follow (dotted paths, in call order). Lazy modules
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
    ex = example_inputs(model, input_shape, inputs)
    if not any(True for _ in model.children()):
        raise UserError(f"{type(model).__name__} has no child modules to share")
    log = record_forward(model, ex)
    seq = units(log)
    if blocks is not None:
        points = _declared(model, log, blocks)
        tail = log.calls[points[-1]].exit
        if not any(_has_linear(log.calls[u].module) for u in log.sequence if log.calls[u].enter >= tail):
            raise _refusal(model, log, "declared blocks leave no nn.Linear classifier after the last one")
    else:
        start = _head_start(model, log, seq)
        points = _distinct(model, seq, [u for u in seq[:start] if log.valid_cut(u)])
        names = _named(log, seq, points)
        if not points:
            raise _refusal(model, log, "no sharing points before its head (the classifier and what runs after "
                           f"{seq[start] if seq else 'its last block'})")
        if set(points) <= set(seq) and _chain_of(log, seq):
            return _composed(log, seq, points, names)
        return _segmented(model, log, seq, points, ex, names, found=True)
    if set(points) <= set(seq) and _chain_of(log, seq):
        return _composed(log, seq, points, points)
    return _segmented(model, log, seq, points, ex, points)


def block_names_of(model: nn.Module, net: BlockNet) -> dict[str, str]:
    """Block name (as sharing points print it) -> the module path of that block's point in ``model``."""
    paths = getattr(net, "paths", None)
    if paths:
        return dict(paths)
    ids = {id(m): n for n, m in model.named_modules()}
    return {name: ids.get(id(block), name) for name, block in net.blocks.named_children()}


def block_members_of(model: nn.Module, net: BlockNet) -> dict[str, list[str]]:
    """Block name -> the module paths of ``model`` it holds (for freezing a block by name)."""
    members = getattr(net, "members", None)
    if members:
        return {k: list(v) for k, v in members.items()}
    return {k: [v] for k, v in block_names_of(model, net).items()}
