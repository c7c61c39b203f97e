"""Running a model without storage: PyTorch's ``meta`` device, trace preparation, lazy initialisation.

Every parameter and buffer is swapped for a ``meta`` tensor of the same shape, dtype and ``requires_grad``
(:func:`on_meta`), the model is put in eval mode with the requested ``requires_grad`` flags
(:func:`prepared`), and both are undone afterwards, so the model is left exactly as it was. Lazy modules are
initialised by one real forward pass at batch 1 first (:func:`materialize_lazy`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from energymodel.errors import UserError, one_line
from energymodel.models.inputs import (
    MAX_REAL_TRACE_ELEMENTS,
    ExampleInputs,
    real_inputs,
    shape_text,
)


@contextlib.contextmanager
def prepared(model: nn.Module, trainable: set[int] | None) -> Iterator[None]:
    """Eval mode and the requested ``requires_grad`` flags for the trace; restore both afterwards."""
    modes = {m: m.training for m in model.modules()}
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        model.eval()
        if trainable is not None:
            for p in model.parameters():
                p.requires_grad_(id(p) in trainable)
        yield
    finally:
        for m, t in modes.items():
            m.training = t
        for p, f in flags.items():
            p.requires_grad_(f)


@contextlib.contextmanager
def transformer_fastpath_off() -> Iterator[None]:
    """Turn off PyTorch's fused fast path of ``nn.TransformerEncoder(Layer)`` and ``nn.MultiheadAttention`` (an
    eval-mode, no-gradient shortcut through ``torch._transformer_encoder_layer_fwd`` and nested tensors) while
    a model is traced: the layers then run their own modules and ops, which the cost model counts, and a
    padding mask no longer turns the activations into nested tensors (which the ``meta`` device cannot size).
    The fast path computes the same function, so the counts are those of the layers either way."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def is_lazy(p: Tensor) -> bool:
    return isinstance(p, nn.parameter.UninitializedTensorMixin)


@contextlib.contextmanager
def on_meta(model: nn.Module) -> Iterator[None]:
    """Swap every parameter and buffer of ``model`` for a ``meta`` tensor of the same shape, dtype and
    ``requires_grad`` (a tensor shared by several modules stays shared); put the originals back afterwards."""
    swapped: list[tuple[dict, str, Tensor]] = []
    memo: dict[int, Tensor] = {}
    try:
        for m in model.modules():
            for store in (m._parameters, m._buffers):
                for name, t in list(store.items()):
                    if t is None:
                        continue
                    if id(t) not in memo:
                        meta = torch.empty_like(t, device="meta")
                        if isinstance(t, nn.Parameter):
                            meta = nn.Parameter(meta, requires_grad=t.requires_grad)
                        memo[id(t)] = meta
                    swapped.append((store, name, t))
                    store[name] = memo[id(t)]
        yield
    finally:
        for store, name, t in reversed(swapped):
            store[name] = t


def materialize_lazy(model: nn.Module, ex: ExampleInputs) -> None:
    """Initialise lazy parameters (``nn.LazyLinear`` ...) by one forward pass in eval mode without gradients."""
    lazy = [n for n, p in model.named_parameters() if is_lazy(p)]
    if not lazy:
        return
    if ex.elements() > MAX_REAL_TRACE_ELEMENTS:
        raise UserError(f"{type(model).__name__} has uninitialised lazy parameters ({lazy[0]}) and an input of "
                        f"{ex.elements():,} elements is too large to initialise them (at most "
                        f"{MAX_REAL_TRACE_ELEMENTS:,}): run one forward pass before profiling")
    device = model_device(model)
    real = real_inputs(ex, device)
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(*real.args, **real.kwargs)
    except Exception as exc:
        raise UserError(f"{type(model).__name__} rejects input {shape_text(ex)} (initialising its lazy modules): "
                        f"{one_line(exc)}") from None
    finally:
        for m, t in modes.items():
            m.training = t


def model_device(model: nn.Module) -> torch.device:
    t = next((p for p in model.parameters() if not is_lazy(p)), None)
    return t.device if t is not None else torch.device("cpu")
