"""One training step's forward pass recorded for its memory: every allocation, every read, what autograd keeps.

The pass runs at the real batch on the ``meta`` device (shapes and dtypes, no storage), with the trainable
parameters requiring gradients and the frozen ones not (so a frozen prefix makes no autograd graph and keeps
nothing), then the softmax cross-entropy loss on the output. It records, in op order (aten ops at every
depth, position ``p``):

- each **storage** an op allocates (views share their base's storage; in-place ops allocate nothing): its
  bytes, the position that made it, the last position that read it, whether a gradient flows back to it,
  and the layer (the row name :mod:`energymodel.count.trace` gives the call) that made it;
- each tensor **autograd saves** for the backward pass (``torch.autograd.graph.saved_tensors_hooks``), i.e.
  PyTorch's own derivative formulas: a convolution keeps its input, ReLU its output, max pooling its input
  and its int64 indices, dropout its bool mask. The modules that train run in training mode (dropout
  draws its mask and makes a new output, batch norm uses batch statistics), the frozen ones in eval mode;
- on a CPU, the output-sized scratch buffer a convolution (oneDNN) holds while it runs: measured on
  isolated convolutions (1 to 64 channels, 1×1 to 3×3, depthwise), their forward peak is the input + twice
  the output;
- each **parameter**: bytes, trainable or not, the last position that read it.

Attention is recorded with the memory of the backend PyTorch picks on the model's device
(:mod:`energymodel.count.attention`): ``math`` keeps the probabilities, the fused kernels keep q, k, v, the
output and the row log-sum-exp (4 bytes per query row and head).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from energymodel.count.attention_call import sdp_backend
from energymodel.count.trace import frozen_names
from energymodel.errors import UserError, one_line
from energymodel.models.inputs import ExampleInputs, _tensors, example_inputs

__all__ = ["Storage", "StepLog", "record_step"]


@dataclass
class Storage:
    """One allocation of the forward pass (or of the loss)."""

    nbytes: int
    birth: int
    last: int
    row: str
    grad: bool = False
    saved_by: list[int] = field(default_factory=list)
    saved_row: str = ""


@dataclass
class StepLog:
    """What :func:`record_step` saw (see the module docstring); positions count aten ops."""

    storages: dict[int, Storage]
    positions: int
    params: list[tuple[str, int, bool, int]]  # (owner module, bytes, trainable, last position read; -1: never)
    buffer_bytes: int
    input_bytes: int
    target_bytes: int
    batch: int
    #: position -> bytes a kernel holds only while that op runs (a CPU convolution's output-sized scratch)
    scratch: dict[int, int] = field(default_factory=dict)


def _key(t: Tensor) -> int:
    return t.untyped_storage()._cdata


class _Log(TorchDispatchMode):
    def __init__(self, log: StepLog, fixed: dict[int, int], names, cpu: bool) -> None:
        super().__init__()
        self.cpu = cpu
        self.log = log
        self.fixed = fixed  # storage key -> index into log.params, or -1 for buffers and inputs
        self.names = names
        self.keep: list[Tensor] = []
        self.param_last: dict[int, int] = {}
        self.quiet = 0  # > 0: autograd's saves are not recorded (a fused attention's are added by hand)
        self.off = 0  # > 0: nothing is recorded (ops run to ask PyTorch which attention backend it picks)
        self.last_op = ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.off:
            return out
        log = self.log
        pos = log.positions
        log.positions += 1
        for t in _tensors((args, kwargs)):
            k = _key(t)
            if k in self.fixed:
                self.param_last[k] = pos
            elif k in log.storages:
                log.storages[k].last = pos
        op = func.overloadpacket.__name__
        self.last_op = op
        if self.cpu and op == "convolution" and isinstance(out, Tensor):  # oneDNN's output-sized scratch
            log.scratch[pos] = out.numel() * out.element_size()
        for t in _tensors(out):
            k = _key(t)
            if k not in log.storages and k not in self.fixed:
                log.storages[k] = Storage(t.untyped_storage().nbytes(), pos, pos, self.names.row(op))
            self.keep.append(t)
        return out


class _Rows:
    """The row name of the current op, as :mod:`energymodel.count.trace` names calls."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {id(m): n for n, m in model.named_modules()}
        self.stack: list[str] = []
        self.leaf: list[str] = []
        self.seen: dict[int, int] = {}
        self.override: str | None = None

    def row(self, op: str) -> str:
        if self.override:
            return self.override
        if self.leaf:
            return self.leaf[-1]
        parent = self.stack[-1] if self.stack else ""
        return f"{parent}.({op.rstrip('_')})" if parent else f"({op.rstrip('_')})"

    def pre(self, module, args):
        name = self.names.get(id(module), type(module).__name__)
        self.stack.append(name)
        if next(module.children(), None) is None:
            n = self.seen.get(id(module), 0) + 1
            self.seen[id(module)] = n
            self.leaf.append(name if n == 1 else f"{name}#{n}")

    def post(self, module, args, output):
        self.stack.pop()
        if next(module.children(), None) is None:
            self.leaf.pop()


def record_step(model: nn.Module, input_shape: Sequence[int] | ExampleInputs | None, *, batch: int,
                frozen: Iterable[str] = (), inputs: object = None) -> StepLog:
    """Record one training step's forward pass and loss of ``model`` at ``batch`` (see the module docstring)."""
    from energymodel.models.meta import (
        materialize_lazy,
        model_device,
        on_meta,
        prepared,
        transformer_fastpath_off,
    )

    ex = example_inputs(model, input_shape, inputs)
    materialize_lazy(model, ex)
    device = model_device(model)
    frozen_set = frozen_names(model, tuple(frozen))
    trainable = {id(p) for n, m in model.named_modules() if n not in frozen_set
                 for p in m.parameters(recurse=False) if p.requires_grad}
    with prepared(model, trainable), transformer_fastpath_off(), on_meta(model):
        for name, m in model.named_modules():  # the step's modes: what trains in training mode, the rest eval
            m.training = name not in frozen_set and not (batch == 1 and isinstance(m, nn.modules.batchnorm._NormBase))
        try:
            return _record(model, ex, batch, device)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a model that cannot run on meta
            raise UserError(f"{type(model).__name__}: its training step could not be traced for its memory on the "
                            f"meta device: {one_line(exc)}") from None


def _record(model: nn.Module, ex: ExampleInputs, batch: int, device: torch.device) -> StepLog:
    def at_batch(v):
        if isinstance(v, Tensor):
            return torch.empty((batch, *v.shape[1:]), dtype=v.dtype, device="meta")
        if isinstance(v, (list, tuple)):
            return type(v)(at_batch(o) for o in v)
        if isinstance(v, dict):
            return {k: at_batch(o) for k, o in v.items()}
        return v

    args, kwargs = at_batch(ex.args), at_batch(ex.kwargs)
    params, fixed = [], {}
    names = {id(m): n for n, m in model.named_modules()}
    seen: set[int] = set()
    for m in model.modules():
        for p in m.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                fixed[_key(p)] = len(params)
                params.append([names[id(m)], p.numel() * p.element_size(), p.requires_grad, -1])
    buffers = {_key(b): b.numel() * b.element_size() for b in model.buffers()}
    ins = list(_tensors((args, kwargs)))
    target = torch.zeros(batch, dtype=torch.int64, device="meta")  # the labels of the loss: with the batch
    for k in [*buffers, *(_key(t) for t in ins), _key(target)]:
        fixed.setdefault(k, -1)
    log = StepLog({}, 0, [], sum(buffers.values()), sum(t.numel() * t.element_size() for t in ins), 0, batch)
    rows = _Rows(model)
    rec = _Log(log, fixed, rows, device.type == "cpu")
    handles = [h for m in model.modules()
               for h in (m.register_forward_pre_hook(rows.pre), m.register_forward_hook(rows.post))]

    def pack(t: Tensor):
        k = _key(t)
        if not rec.quiet and k in log.storages:
            s = log.storages[k]
            # an op's output is saved after it ran (its position), an input before it runs (the next position)
            s.saved_by.append(log.positions - 1 if s.birth == log.positions - 1 else log.positions)
            s.saved_row = s.saved_row or rows.row(rec.last_op)
        return t

    original_sdpa = F.scaled_dot_product_attention

    def attention(q, k, v, *a, **kw):
        bound = dict(zip(("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"), a)) | kw
        rec.off += 1
        try:
            backend = sdp_backend(q, k, v, bound.get("attn_mask"), bound, device)
        finally:
            rec.off -= 1
        rec.quiet += backend != "math"
        try:
            out = original_sdpa(q, k, v, *a, **kw)
        finally:
            rec.quiet -= backend != "math"
        if backend != "math" and torch.is_grad_enabled() and out.requires_grad:
            for t in (q, k, v, out):
                if _key(t) in log.storages:
                    saved = log.storages[_key(t)]
                    saved.saved_by.append(log.positions - 1)
                    saved.saved_row = saved.saved_row or rows.row("scaled_dot_product_attention")
            lse = math.prod(q.shape[:-1]) * 4  # float32 log-sum-exp per query row and head
            row = rows.row("scaled_dot_product_attention")
            log.storages[-log.positions - 1] = Storage(lse, log.positions - 1, log.positions - 1, row,
                                                       saved_by=[log.positions - 1], saved_row=row)
        return out

    F.scaled_dot_product_attention = attention
    try:
        with torch.enable_grad(), rec, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(*args, **kwargs)
            out_t = next(_tensors(out), None)
            if out_t is not None and out_t.dim() == 2 and out_t.is_floating_point() and out_t.requires_grad:
                log.target_bytes = target.numel() * target.element_size()
                rows.override = "(loss)"
                F.cross_entropy(out_t, target)
    finally:
        F.scaled_dot_product_attention = original_sdpa
        for h in handles:
            h.remove()
    for t in rec.keep:
        s = log.storages.get(_key(t))
        if s is not None and t.requires_grad:
            s.grad = True
    for k, i in fixed.items():
        if i >= 0:
            params[i][3] = rec.param_last.get(k, -1)
    log.params = [tuple(p) for p in params]  # type: ignore[misc]
    return log
