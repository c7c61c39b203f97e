"""A model cut into a chain of segments with ``torch.fx``, when its ``forward`` runs code between its blocks.

A torchvision-style ViT runs ``reshape``, ``permute``, a class token ``cat`` and a positional-embedding add
between its patch embedding and its encoder layers, and ``x[:, 0]`` before its head: its modules alone do not
make a chain. :func:`fx_segments` traces ``forward`` symbolically (``torch.fx``) with the point modules as
leaves, and cuts the graph right after each of them: segment ``j`` holds every node after point ``j-1`` up
to and including point ``j``; the last segment (the head) every node after the last point. Each segment is
a ``GraphModule`` that takes one tensor and returns one, and calls the model's own modules and parameters
(shared, not copied), so ``head(seg_n(...seg_0(x)))`` computes ``model(x)`` op for op.

Containers that ``torch.fx`` cannot trace through but that only run their children one after another
(``nn.TransformerEncoder`` without masks, found so by :mod:`energymodel.models.cuts`) are replaced in the
graph by calls of their children. A cut that another value crosses (a skip connection, a mask, a size read
from the input and used later) is refused.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch.fx as fx
from torch import nn

from energymodel.errors import UserError, one_line
from energymodel.models.cuts import ForwardLog

__all__ = ["fx_segments", "plain_chain", "CutError"]


class CutError(UserError):
    """A value crosses these cuts (``crossed``: the point modules after which it is still needed)."""

    def __init__(self, message: str, crossed: list[str]) -> None:
        super().__init__(message)
        self.crossed = crossed


def plain_chain(log: ForwardLog, path: str) -> list[str] | None:
    """The called children of container ``path`` when its call is exactly their chain (its input into the
    first, each output into the next, no op of its own, the last one's output returned), else ``None``."""
    call = log.calls.get(path)
    kids = log.children(path)
    if call is None or call.calls != 1 or not kids or call.extra_tensors:
        return None
    inside = set(range(call.enter, call.exit))
    for k in kids:
        c = log.calls[k]
        if c.calls != 1 or c.extra_tensors or c.out_id is None:
            return None
        inside -= set(range(c.enter, c.exit))
    if inside:
        return None
    feed = call.arg_ids[:1]
    for k in kids:
        c = log.calls[k]
        if c.arg_ids[:1] != feed:
            return None
        feed = (c.out_id,)
    return kids if call.out_id == feed[0] else None


class _Tracer(fx.Tracer):
    def __init__(self, leaves: set[str], through: set[str]) -> None:
        super().__init__()
        self.leaves = leaves
        self.through = through

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname not in self.through or qualname in self.leaves


def _ancestors(points: Sequence[str]) -> set[str]:
    out = set()
    for p in points:
        parts = p.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


def _inline(graph: fx.Graph, log: ForwardLog, chains: dict[str, list[str]], points: set[str]) -> None:
    """Replace each call of a plain-chain container that holds a point by calls of its children."""
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op != "call_module" or node.target not in chains:
                continue
            if len(node.args) != 1 or any(v is not None for v in node.kwargs.values()):
                raise UserError(f"{node.target} is called with more than one input: it cannot be cut into blocks")
            value = node.args[0]
            with graph.inserting_before(node):
                for child in chains[node.target]:
                    value = graph.call_module(child, (value,))
            node.replace_all_uses_with(value)
            graph.erase_node(node)
            changed = True


def fx_segments(model: nn.Module, log: ForwardLog, points: Sequence[str], ex_kwargs: dict,
                n_args: int) -> list[fx.GraphModule]:
    """``len(points) + 1`` GraphModules: one per block (ending with its point module) and the head."""
    points = list(points)
    ups = _ancestors(points)
    chains = {}
    for a in ups:
        kids = plain_chain(log, a)
        if kids is not None and any(p == k or p.startswith(k + ".") for p in points for k in kids):
            chains[a] = kids
    through = {"", *(a for a in ups if a not in chains)}
    sig = inspect.signature(model.forward)
    params = list(sig.parameters.values())
    concrete = {}
    for i, prm in enumerate(params):
        if prm.kind in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD):
            continue
        if i >= n_args and prm.name not in ex_kwargs and prm.default is not prm.empty:
            concrete[prm.name] = prm.default
    if n_args + len(ex_kwargs) != 1:
        raise UserError(f"{type(model).__name__} takes {n_args + len(ex_kwargs)} inputs: blocks of a sharing point "
                        "take one")
    try:
        graph = _Tracer(set(points), through).trace(model, concrete_args=concrete or None)
    except Exception as exc:  # noqa: BLE001 - torch.fx raises many kinds
        raise UserError(f"{type(model).__name__} runs code between its blocks and torch.fx cannot trace it "
                        f"({one_line(exc)})") from None
    _inline(graph, log, chains, set(points))
    nodes = [n for n in graph.nodes if n.op != "output"]
    part: dict[fx.Node, int] = {}
    j = 0
    for n in nodes:
        part[n] = j
        if n.op == "call_module" and j < len(points) and n.target == points[j]:
            j += 1
    if j < len(points):
        raise UserError(f"{points[j]} is not called by {type(model).__name__}.forward as one module "
                        "(it runs inside another module's code): name a module the forward itself calls")
    ends = [next(n for n in nodes if n.op == "call_module" and n.target == p) for p in points]
    for n in nodes:
        if n.op == "get_attr":
            continue
        for user in n.users:
            if user.op == "output" or part.get(user, len(points)) == part[n]:
                continue
            if n.op == "placeholder" or part[user] != part[n] + 1 or n is not ends[part[n]]:
                where = points[part[user] - 1] if part[user] > 0 else "the input"
                crossed = points[part[n]:part[user]] if n is not ends[part[n]] else points[part[n] + 1:part[user]]
                raise CutError(f"{type(model).__name__} cannot be cut after {where}: {n.name} is still needed "
                               "after it (a skip connection or a value read again later)", crossed)
    out_node = next(n for n in graph.nodes if n.op == "output")
    segments = []
    for j in range(len(points) + 1):
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        if j > 0:
            env[ends[j - 1]] = g.placeholder("x")

        def arg(a, g=g, env=env):
            if a not in env:  # a parameter or buffer fetched where it is used
                env[a] = g.node_copy(a, lambda b: arg(b))
            return env[a]

        for n in nodes:
            if part[n] == j and n.op != "get_attr":
                env[n] = g.node_copy(n, arg)
        g.output(env[ends[j]] if j < len(points) else fx.map_arg(out_node.args[0], arg))
        g.lint()
        segments.append(fx.GraphModule(model, g, class_name="Segment"))
    return segments
