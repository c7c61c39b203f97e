"""Trace a model once and record every leaf-module call (and every functional op between them).

One forward pass at batch 1, with gradients enabled, records in call order:

- each call of a *leaf* module (a module without children): its path, class, input/output shapes, whether
  its input needs a gradient (autograd's own answer, so frozen prefixes are exact), whether it has
  trainable parameters, and whether the cost model should use its training form (BN statistics, dropout);
- each aten operation issued *outside* any leaf module (``out += identity`` in a block's ``forward``,
  ``torch.flatten``, ``F.relu`` ...), attributed to the innermost enclosing module.

Counts for a batch of ``B`` are the per-sample counts times ``B`` (weights are per pass, not per sample);
tracing at batch 1 keeps the trace cheap and avoids batch-statistics errors on 1x1 feature maps.

The pass runs on PyTorch's ``meta`` device: parameters, buffers and inputs are swapped for tensors that
have a shape and a dtype but no storage, so no activation memory is ever allocated (a model larger than
RAM, or a 100,000 x 100,000 input, costs nothing to trace). A model that cannot run on ``meta`` (it
reads tensor values, e.g. ``.item()``, or makes CPU tensors in its ``forward``) is traced on its own
device instead, but only for inputs of at most :data:`~energymodel.models.inputs.MAX_REAL_TRACE_ELEMENTS` elements per sample.
Lazy modules (``nn.LazyLinear`` ...) are initialised first by one real forward pass at batch 1.
The model is put back exactly as it was (training flags, ``requires_grad``, parameters and buffers).

Two PyTorch shortcuts are traced as what they compute: the fused fast path of ``nn.TransformerEncoder`` and
``nn.MultiheadAttention`` is turned off during the pass (:func:`~energymodel.models.meta.transformer_fastpath_off`),
and ``F.scaled_dot_product_attention`` is recorded as one call with the backend PyTorch would pick on the
model's device (``math``, ``flash``, ``efficient``, ``cudnn``; in ``op_args[0]``), not as whichever ops the
``meta`` device decomposes it into.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from energymodel.count.attention_call import attention_calls, outputs_of, sdp_backend, stored_elements
from energymodel.errors import UserError, one_line
from energymodel.models.inputs import (
    MAX_REAL_TRACE_ELEMENTS,
    ExampleInputs,
    _tensors,
    example_inputs,
    real_inputs,
    shape_text,
)
from energymodel.models.meta import (
    materialize_lazy,
    model_device,
    on_meta,
    prepared,
    transformer_fastpath_off,
)
from energymodel.progress import traced

__all__ = ["Call", "Trace", "trace", "frozen_names"]

@dataclass
class Call:
    """One leaf-module call or one functional op, as seen in the trace (shapes at batch 1)."""

    index: int
    name: str
    kind: str
    module: nn.Module | None
    input_shapes: list[tuple[int, ...]]
    output_shapes: list[tuple[int, ...]]
    input_requires_grad: bool
    params: int
    trainable_params: int
    train_form: bool
    first_call: bool
    op: str | None = None
    op_args: tuple = ()
    param_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    reads_model_input: bool = False
    #: per tensor input: elements it really holds (an expanded view holds fewer than its shape), whether it is
    #: a parameter (or a view of one), whether it needs a gradient, bytes per element
    input_elems: tuple[int, ...] = ()
    input_params: tuple[bool, ...] = ()
    input_grads: tuple[bool, ...] = ()
    input_bytes: tuple[int, ...] = ()
    #: ids of the input and output tensors during the traced pass (the same tensor has the same id)
    input_ids: tuple[int, ...] = ()
    output_ids: tuple[int, ...] = ()
    output_bytes: tuple[int, ...] = ()
    #: tensor numbers of the inputs (as ``input_shapes``) and outputs (as ``output_shapes``): -1 for a tensor the
    #: trace did not see made (a parameter, a constant); numbers follow the order tensors appear (residency plans)
    input_numbers: tuple[int, ...] = ()
    output_numbers: tuple[int, ...] = ()

    @property
    def trainable(self) -> bool:
        return self.trainable_params > 0

    @property
    def in_words(self) -> int:
        """Elements of all tensor inputs, per sample."""
        return sum(math.prod(s) for s in self.input_shapes)

    @property
    def out_words(self) -> int:
        """Elements of all tensor outputs, per sample."""
        return sum(math.prod(s) for s in self.output_shapes)

@dataclass
class Trace:
    """The ordered calls of one forward pass, plus what the trace was taken with."""

    calls: list[Call]
    input_shape: tuple[int, ...]
    mode: str
    frozen: tuple[str, ...]
    total_params: int
    trainable_params: int
    output_shape: tuple[int, ...]
    #: every container module called: path -> (class name, per-sample output shape or None)
    modules: dict[str, tuple[str, tuple[int, ...] | None]] = field(default_factory=dict)
    #: tensor number of the model's (first) output, and of its inputs (see :attr:`Call.input_numbers`)
    output_number: int = -1
    input_numbers: tuple[int, ...] = ()

def frozen_names(model: nn.Module, frozen: Sequence[str]) -> set[str]:
    """Names of the modules lying under any of the ``frozen`` prefixes (a prefix is a module path).

    Raises :class:`UserError` when a prefix names no module.
    """
    names = [n for n, _ in model.named_modules()]
    out: set[str] = set()
    for prefix in frozen:
        prefix = prefix.strip()
        if not prefix:
            continue
        hits = {n for n in names if n == prefix or n.startswith(prefix + ".")}
        if not hits:
            raise UserError(f"--frozen {prefix!r} names no module of {type(model).__name__}")
        out |= hits
    return out

def _shapes(obj) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in _tensors(obj)]

# aten ops that create or look at tensors without arithmetic or data movement worth counting
_IGNORED_ATEN = frozenset(
    {
        "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full", "full_like",
        "lift_fresh", "_local_scalar_dense", "scalar_tensor", "is_same_size", "sym_size", "sym_stride",
        "sym_numel", "sym_storage_offset", "detach", "alias", "_has_compatible_shallow_copy_type", "set_",
        "fill_", "zero_", "arange", "_to_copy_meta", "item", "result_type", "new_empty", "new_zeros",
        "new_ones", "new_full", "new_empty_strided", "copy_",
    }
)

class _Recorder(TorchDispatchMode):
    """Records aten ops dispatched while no leaf module is running."""

    def __init__(self, tracer: _Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tracer = self.tracer
        if tracer.leaf_depth == 0 and tracer.active and not tracer.fused:
            packet = func.overloadpacket.__name__.rstrip("_") if func.overloadpacket.__name__ != "_" else "_"
            if packet not in _IGNORED_ATEN:
                tracer.record_functional(packet, args, kwargs, out)
        return out

class _Tracer:
    def __init__(self, model: nn.Module, frozen: set[str], mode: str) -> None:
        self.model = model
        self.frozen = frozen
        self.mode = mode
        self.calls: list[Call] = []
        self.leaf_depth = 0
        self.stack: list[str] = []
        self.seen_modules: dict[int, int] = {}
        self.grad_inputs: dict[int, bool] = {}
        self.active = False
        self.inputs: set[int] = set()
        self.reads_input: dict[int, bool] = {}
        self.names = {id(m): n for n, m in model.named_modules()}
        self.numbers: dict[int, int] = {}  # id(tensor) -> tensor number (the latest tensor of that object)
        self.keep: list[Tensor] = []  # tensors numbered, kept alive so that no id is reused during the trace
        self.input_numbers: tuple[int, ...] = ()
        self.fused = 0
        self.device = torch.device("cpu")
        self.param_ids: set[int] = set()
        self.read_params: set[int] = set()
        self.leaf_inputs: dict[int, object] = {}
        self.read_modules: set[str] = set()
        self.modules: dict[str, tuple[str, tuple[int, ...] | None]] = {}  # container -> (class, output shape)

    def operands(self, tensors: list[Tensor]) -> dict:
        """What a call's tensor inputs are (see the ``input_*`` fields of :class:`Call`)."""
        def is_param(t: Tensor) -> bool:
            return id(t) in self.param_ids or (t._base is not None and id(t._base) in self.param_ids)

        for t in tensors:
            if is_param(t):
                self.read_params.add(id(t) if id(t) in self.param_ids else id(t._base))
        return {
            "input_elems": tuple(min(t.numel(), stored_elements(t)) for t in tensors),
            "input_params": tuple(is_param(t) for t in tensors),
            "input_grads": tuple(bool(t.requires_grad) for t in tensors),
            "input_bytes": tuple(t.element_size() for t in tensors),
            "input_ids": tuple(id(t) for t in tensors),
            "input_numbers": self.number(tensors),
        }

    def results(self, out) -> dict:
        """What a call's tensor outputs are: ids, bytes per element and fresh tensor numbers."""
        return {**outputs_of(out), "output_numbers": self.new_numbers(list(_tensors(out)))}

    def number(self, tensors: list[Tensor]) -> tuple[int, ...]:
        """The numbers of tensors already seen (-1 for one not seen)."""
        return tuple(self.numbers.get(id(t), -1) for t in tensors)

    def new_numbers(self, tensors: list[Tensor]) -> tuple[int, ...]:
        """Fresh numbers for the outputs of a call (an in-place output is a new tensor too)."""
        out = []
        for t in tensors:
            self.numbers[id(t)] = len(self.keep)
            out.append(len(self.keep))
            self.keep.append(t)
        return tuple(out)

    # -- hooks ---------------------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, args, kwargs) -> None:
        args = (*args, *kwargs.values()) if kwargs else args
        name = self.names.get(id(module), type(module).__name__)
        self.stack.append(name)
        if _is_leaf(module):
            self.leaf_depth += 1
            self.grad_inputs[id(module)] = any(t.requires_grad for t in _tensors(args))
            self.reads_input[id(module)] = any(id(t) in self.inputs for t in _tensors(args))
            self.leaf_inputs[id(module)] = self.operands(list(_tensors(args)))

    def post_hook(self, module: nn.Module, args, kwargs, output) -> None:
        args = (*args, *kwargs.values()) if kwargs else args
        name = self.stack.pop()
        if not _is_leaf(module):
            out = next(_tensors(output), None)
            self.modules.setdefault(name, (type(module).__name__, tuple(out.shape[1:]) if out is not None else None))
            return
        self.leaf_depth -= 1
        count = self.seen_modules.get(id(module), 0) + 1
        self.seen_modules[id(module)] = count
        params = list(module.parameters(recurse=False))
        n_params = sum(p.numel() for p in params)
        n_train = sum(p.numel() for p in params if p.requires_grad)
        frozen = name in self.frozen or (n_params > 0 and n_train == 0)
        self.calls.append(
            Call(
                index=len(self.calls),
                name=name if count == 1 else f"{name}#{count}",
                kind=type(module).__name__,
                module=module,
                input_shapes=_shapes(args),
                output_shapes=_shapes(output),
                input_requires_grad=self.grad_inputs.pop(id(module), False),
                params=n_params,
                trainable_params=n_train if self.mode == "training" else 0,
                train_form=self.mode == "training" and not frozen,
                first_call=count == 1,
                param_shapes={k: tuple(p.shape) for k, p in module.named_parameters(recurse=False)},
                reads_model_input=self.reads_input.pop(id(module), False),
                **self.leaf_inputs.pop(id(module), {}), **self.results(output),
            )
        )

    def record_functional(self, op: str, args, kwargs, out) -> None:
        parent = self.stack[-1] if self.stack else ""
        in_tensors = [t for t in _tensors((args, kwargs)) if t.dim() > 0 or t.numel() > 1]
        scalars = tuple(a for a in args if not isinstance(a, Tensor))
        grad = any(t.requires_grad for t in _tensors(args))
        label = f"{parent}.({op})" if parent else f"({op})"
        frozen = parent in self.frozen
        self.calls.append(
            Call(
                index=len(self.calls),
                name=label,
                kind=f"aten.{op}",
                module=None,
                input_shapes=[tuple(t.shape) for t in in_tensors],
                output_shapes=_shapes(out),
                input_requires_grad=grad,
                params=0,
                trainable_params=0,
                train_form=self.mode == "training" and not frozen,
                first_call=True,
                op=op,
                op_args=scalars,
                reads_model_input=any(id(t) in self.inputs for t in _tensors(args)),
                **self.operands(in_tensors), **self.results(out),
            )
        )

    def record_attention(self, args, kwargs, out) -> None:
        """One ``F.scaled_dot_product_attention`` call: inputs q, k, v (and a tensor mask), ``op_args`` =
        (backend, dropout_p, is_causal)."""
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        bound = dict(zip(names, args)) | kwargs
        q, k, v, mask = (bound.get(n) for n in names[:4])
        self.fused += 1  # asking for the backend runs ops of its own
        try:
            backend = sdp_backend(q, k, v, mask, bound, self.device)
        finally:
            self.fused -= 1
        self.record_functional("scaled_dot_product_attention", (q, k, v, mask), {}, out)
        self.calls[-1].op_args = (backend, float(bound.get("dropout_p", 0.0) or 0.0), bool(bound.get("is_causal")))


def _add_container_parameters(
    model: nn.Module, tracer: _Tracer, frozen: set[str], trainable: set[int], mode: str
) -> None:
    """Record parameters no leaf-module call carries: those owned directly by a non-leaf module
    (``nn.Parameter`` used inside a ``forward``) and those of a leaf module that is never called (the
    ``out_proj`` of ``nn.MultiheadAttention``, whose weight the attention reads with ``F.linear``).

    Their arithmetic is seen as functional aten ops; this row carries their storage, gradient and
    optimizer update (kind ``aten.(parameters)``), so no parameter is left out of the totals. A parameter
    of a module never called and never read gets no gradient: storage only.
    """
    for name, module in model.named_modules():
        called_leaf = _is_leaf(module) and id(module) in tracer.seen_modules
        params = list(module.parameters(recurse=False))
        if called_leaf or not params:
            continue
        used = not _is_leaf(module) or name in tracer.read_modules
        n_train = sum(p.numel() for p in params if id(p) in trainable) if mode == "training" and used else 0
        tracer.calls.append(
            Call(
                index=len(tracer.calls), name=f"{name}.(parameters)" if name else "(parameters)",
                kind="aten.(parameters)", module=None, input_shapes=[], output_shapes=[],
                input_requires_grad=False, params=sum(p.numel() for p in params), trainable_params=n_train,
                train_form=mode == "training" and name not in frozen, first_call=True, op="(parameters)",
                param_shapes={k: tuple(p.shape) for k, p in module.named_parameters(recurse=False)},
            )
        )


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None

def _run(model: nn.Module, ex: ExampleInputs, frozen_set: set[str], mode: str, trainable: set[int],
         device: torch.device):
    """One traced forward pass of ``model(*ex.args, **ex.kwargs)``; returns the tracer and the output."""
    tracer = _Tracer(model, frozen_set, mode)
    tracer.inputs = {id(t) for t in ex.tensors()}
    tracer.device = device
    tracer.param_ids = {id(p) for p in model.parameters()}
    tracer.input_numbers = tracer.new_numbers(list(ex.tensors()))
    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(tracer.pre_hook, with_kwargs=True))
        handles.append(m.register_forward_hook(tracer.post_hook, with_kwargs=True))
    try:
        with torch.enable_grad(), _Recorder(tracer), attention_calls(tracer):
            tracer.active = True
            try:
                out = model(*ex.args, **ex.kwargs)
            finally:
                tracer.active = False
        tracer.read_modules = {n for n, m in model.named_modules()
                               if any(id(p) in tracer.read_params for p in m.parameters(recurse=False))}
    finally:
        for h in handles:
            h.remove()
    return tracer, out

def trace(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    mode: str = "inference",
    frozen: Iterable[str] = (),
    inputs: object = None,
) -> Trace:
    """Run ``model`` once at batch 1 and record every call.

    The input is a tensor of shape ``(1, *input_shape)`` (a shape without the batch dimension), or
    ``inputs``: example inputs as :func:`example_inputs` takes them (only their first sample is used).
    ``mode`` is ``"inference"`` (eval forms, nothing trainable) or ``"training"`` (modules under a
    ``frozen`` prefix, or whose parameters all have ``requires_grad=False``, are frozen: eval form, no
    weight gradients; everything else trains).
    """
    if mode not in ("inference", "training"):
        raise UserError(f"unknown mode {mode!r}; use inference or training")
    ex = example_inputs(model, input_shape, inputs)
    materialize_lazy(model, ex)
    frozen = tuple(frozen)
    frozen_set = frozen_names(model, frozen)
    trainable: set[int] = set()
    if mode == "training":
        for name, mod in model.named_modules():
            if name in frozen_set:
                continue
            for p in mod.parameters(recurse=False):
                if p.requires_grad:
                    trainable.add(id(p))
    hint = "" if inputs is not None else " (a shape without the batch dimension; use batch= for the batch)"
    device = model_device(model)
    with prepared(model, trainable), transformer_fastpath_off():
        try:
            with on_meta(model):
                tracer, out = _run(model, ex.to("meta"), frozen_set, mode, trainable, device)
        except UserError:
            raise
        except Exception as meta_exc:  # the model cannot run on meta, or rejects the input
            if ex.elements() > MAX_REAL_TRACE_ELEMENTS:
                raise UserError(f"{type(model).__name__} rejects input {shape_text(ex)} (traced on the meta "
                                f"device): {one_line(meta_exc)}{hint}") from None
            try:
                tracer, out = _run(model, real_inputs(ex, device), frozen_set, mode, trainable, device)
            except UserError:
                raise
            except Exception as exc:  # the model rejects the input: a user error, one line
                raise UserError(f"{type(model).__name__} rejects input {shape_text(ex)}: {one_line(exc)}{hint}") from None
    out_t = next(_tensors(out), None)
    output_number = tracer.numbers.get(id(out_t), -1) if out_t is not None else -1
    _add_container_parameters(model, tracer, frozen_set, trainable, mode)
    traced(type(model).__name__)
    total = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if id(p) in trainable)
    return Trace(
        calls=tracer.calls,
        input_shape=ex.first_shape,
        mode=mode,
        frozen=frozen,
        total_params=total,
        trainable_params=n_train,
        output_shape=tuple(out_t.shape[1:]) if out_t is not None else (),
        modules=dict(tracer.modules),
        output_number=output_number,
        input_numbers=tracer.input_numbers,
    )
