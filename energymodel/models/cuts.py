"""Where a model can be cut in two: one forward pass records which tensors are alive between module calls.

A **cut** after a module call is *valid* when exactly one tensor is alive across it and that tensor is the
call's output: everything the rest of the forward pass needs is that one activation (no skip connection
jumps over the cut, no mask made earlier is read later). Formally, with ``birth(t)`` the position of the
aten op that made tensor ``t`` (``-1`` for the model's inputs) and ``last(t)`` the position of the last op
(or module call) that reads it (``inf`` for the model's output), the cut at position ``p`` (the number of
ops run when the module returned) is valid iff ``{t : birth(t) < p <= last(t)} = {output of the module}``.
Parameters and buffers are never alive: they are not activations.

The pass runs once, on the ``meta`` device (no memory), in eval mode without gradients; a model that cannot
run on ``meta`` runs on its own device for inputs of at most
:data:`~energymodel.models.inputs.MAX_REAL_TRACE_ELEMENTS` elements.

**Units** (:func:`units`) are the module calls sharing points may follow: the model's top-level children,
with every ``nn.Sequential`` among them replaced by its children (all the way down) and every other
container among them whose children admit a valid cut replaced by its children once (a MobileNet's
``features`` gives one unit per stage, an encoder's ``layers.0 .. layers.N``; a residual block stays whole).
Containers that are never called themselves (``nn.ModuleList``) are looked through.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from energymodel.errors import UserError, one_line
from energymodel.models.inputs import (
    MAX_REAL_TRACE_ELEMENTS,
    ExampleInputs,
    _tensors,
    real_inputs,
    shape_text,
)

__all__ = ["ModuleCall", "ForwardLog", "record_forward", "units", "RESHAPES"]

#: aten ops that only reshape (or alias) a tensor: free glue between two blocks
RESHAPES = frozenset({"view", "_unsafe_view", "reshape", "flatten", "squeeze", "unsqueeze", "alias", "detach"})


@dataclass
class ModuleCall:
    """The first call of one module: where it starts and ends in the op sequence, what it read and returned."""

    path: str
    module: nn.Module
    enter: int
    exit: int
    arg_ids: tuple[int, ...]
    out_id: int | None
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    extra_tensors: bool
    calls: int = 1


@dataclass
class ForwardLog:
    """One forward pass: every aten op (name, input ids, output ids) and every module's first call."""

    model: nn.Module
    ops: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
    calls: dict[str, ModuleCall]
    birth: dict[int, int]
    last: dict[int, float]
    input_ids: tuple[int, ...]
    output_id: int | None
    sequence: list[str] = field(default_factory=list)  # module paths in the order their calls started

    def alive(self, p: int) -> set[int]:
        """Tensors made before position ``p`` and read at or after it."""
        return {t for t, b in self.birth.items() if b < p <= self.last.get(t, -1)}

    def valid_cut(self, path: str) -> bool:
        """Whether the model can be cut right after the (single) call of ``path``."""
        c = self.calls.get(path)
        if c is None or c.calls != 1 or c.out_id is None or not path:
            return False
        return self.alive(c.exit) == {c.out_id}

    def children(self, path: str) -> list[str]:
        """The called children of ``path`` in call order, looking through containers never called themselves."""
        mods = dict(self.model.named_modules())
        out: list[str] = []

        def visit(prefix: str, module: nn.Module) -> None:
            for name, child in module.named_children():
                p = f"{prefix}.{name}" if prefix else name
                if p in self.calls:
                    out.append(p)
                elif any(q.startswith(p + ".") for q in self.calls):
                    visit(p, child)

        visit(path, mods[path])
        return sorted(out, key=lambda q: self.calls[q].enter)

    def within(self, path: str) -> Iterator[int]:
        """Positions of the ops run inside the call of ``path``."""
        c = self.calls[path]
        return iter(range(c.enter, c.exit))


class _OpLog(TorchDispatchMode):
    def __init__(self, log: ForwardLog, skip: set[int]) -> None:
        super().__init__()
        self.log = log
        self.skip = skip
        self.keep: list[Tensor] = []  # holds every tensor seen so that no id is reused during the pass

    def ids(self, obj) -> tuple[int, ...]:
        out = []
        for t in _tensors(obj):
            if id(t) not in self.skip:
                out.append(id(t))
                self.keep.append(t)
        return tuple(out)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        log = self.log
        pos = len(log.ops)
        ins, outs = self.ids((args, kwargs)), self.ids(out)
        for i in ins:
            log.last[i] = pos
        for o in outs:
            log.birth.setdefault(o, pos)
        log.ops.append((func.overloadpacket.__name__, ins, outs))
        return out


def _run(model: nn.Module, ex: ExampleInputs) -> ForwardLog:
    params = {id(t) for t in (*model.parameters(), *model.buffers())}
    log = ForwardLog(model, [], {}, {}, {}, (), None)
    rec = _OpLog(log, params)
    names = {id(m): n for n, m in model.named_modules()}
    handles = []
    stack: list[tuple[str, int, tuple[int, ...]]] = []

    def pre(module, args, kwargs):
        path = names[id(module)]
        arg_ids = rec.ids((args, kwargs))
        for i in arg_ids:
            log.last[i] = max(log.last.get(i, -1), len(log.ops))
        stack.append((path, len(log.ops), arg_ids))
        if path in log.calls:
            log.calls[path].calls += 1
        else:
            log.sequence.append(path)

    def post(module, args, kwargs, output):
        path, enter, arg_ids = stack.pop()
        call = log.calls.get(path)
        if call is not None and call.enter != enter:
            return
        first = next(_tensors(args), None)
        extra = sum(1 for _ in _tensors((args, kwargs))) > 1
        out_ids = rec.ids(output)
        single = out_ids[0] if isinstance(output, Tensor) and out_ids else None
        log.calls[path] = ModuleCall(
            path, module, enter, len(log.ops), arg_ids, single,
            tuple(first.shape[1:]) if first is not None else (),
            tuple(output.shape[1:]) if isinstance(output, Tensor) else (), extra)

    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(post, with_kwargs=True))
    try:
        log.input_ids = rec.ids((ex.args, ex.kwargs))
        for i in log.input_ids:
            log.birth[i] = -1
        with torch.no_grad(), rec:
            out = model(*ex.args, **ex.kwargs)
        out_ids = rec.ids(out)
        for o in out_ids:
            log.last[o] = math.inf
        log.output_id = out_ids[0] if isinstance(out, Tensor) and out_ids else None
    finally:
        for h in handles:
            h.remove()
    return log


def record_forward(model: nn.Module, ex: ExampleInputs) -> ForwardLog:
    """One forward pass of ``model(*ex.args, **ex.kwargs)`` (batch 1) on ``meta``, recorded (see the module
    docstring); the model is put back exactly as it was."""
    from energymodel.models.meta import (
        materialize_lazy,
        model_device,
        on_meta,
        prepared,
        transformer_fastpath_off,
    )

    materialize_lazy(model, ex)
    with prepared(model, set()), transformer_fastpath_off():
        try:
            with on_meta(model):
                return _run(model, ex.to("meta"))
        except UserError:
            raise
        except Exception as meta_exc:
            if ex.elements() > MAX_REAL_TRACE_ELEMENTS:
                raise UserError(f"{type(model).__name__} could not be traced on the meta device with input "
                                f"{shape_text(ex)}: {one_line(meta_exc)}") from None
            try:
                return _run(model, real_inputs(ex, model_device(model)))
            except Exception as exc:
                raise UserError(f"{type(model).__name__} rejects input {shape_text(ex)}: {one_line(exc)}") from None


def _is_plain_sequential(m: nn.Module) -> bool:
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def units(log: ForwardLog) -> list[str]:
    """The module calls sharing points may follow, in call order (see the module docstring)."""
    mods = dict(log.model.named_modules())

    def flatten(path: str) -> list[str]:
        kids = log.children(path)
        if _is_plain_sequential(mods[path]) and kids:
            return [q for k in kids for q in flatten(k)]
        return [path]

    out: list[str] = []
    for top in log.children(""):
        kids = log.children(top)
        if _is_plain_sequential(mods[top]) and kids:
            out += flatten(top)
        elif kids and any(log.valid_cut(k) for k in kids[:-1]):
            out += [q for k in kids for q in flatten(k)]
        else:
            out.append(top)
    return out
