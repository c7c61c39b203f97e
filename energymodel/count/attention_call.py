"""``F.scaled_dot_product_attention`` traced as one call, with the backend PyTorch would pick for it.

On the ``meta`` device PyTorch decomposes attention into its math form (``bmm``, ``_safe_softmax``, ``bmm``);
on a CPU it runs ``_scaled_dot_product_flash_attention_for_cpu``, on a GPU flash, memory-efficient or cuDNN
attention. Counts must not depend on where the trace runs, so :func:`attention_calls` (a
function wrapped while the trace runs) records each call once, with the backend that :func:`sdp_backend` asks PyTorch for on
the model's device; the rule (:mod:`energymodel.count.attention`) prices that backend. A call that does not
go through ``torch.nn.functional``'s attribute (``torch._C._nn.scaled_dot_product_attention``) is traced as the
ops it runs, which are counted too (``bmm``, ``_safe_softmax``: the math form).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from energymodel.models.inputs import _tensors

__all__ = ["attention_calls", "sdp_backend", "stored_elements", "outputs_of", "BACKENDS"]

BACKENDS = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}


def sdp_backend(q, k, v, mask, bound: dict, device: torch.device) -> str:
    """The backend PyTorch picks for these shapes and dtypes on ``device`` (asked with tensors of batch and
    heads 1), ``math`` when it cannot say."""
    def small(t):
        if not isinstance(t, Tensor):
            return None
        shape = (1,) * max(t.dim() - 2, 0) + tuple(t.shape[-2:])
        return torch.zeros(shape, dtype=t.dtype, device=device).requires_grad_(t.requires_grad and t.is_floating_point())

    try:
        choice = torch._fused_sdp_choice(small(q), small(k), small(v), small(mask), float(bound.get("dropout_p") or 0.0),
                                         bool(bound.get("is_causal")), scale=bound.get("scale"),
                                         enable_gqa=bool(bound.get("enable_gqa")))
    except Exception:  # noqa: BLE001 - an unusual call: count it as the math form
        choice = 0
    return BACKENDS.get(int(choice), "math")


@contextlib.contextmanager
def attention_calls(tracer) -> Iterator[None]:
    """Record every call of ``F.scaled_dot_product_attention`` (``nn.MultiheadAttention`` and user code call it
    through the module attribute) as one call of ``tracer``; its inner aten ops are not recorded. Outside a
    trace nothing changes (the attribute is put back)."""
    original = F.scaled_dot_product_attention

    def recorded(*args, **kwargs):
        if tracer.leaf_depth or not tracer.active or tracer.fused:
            return original(*args, **kwargs)
        tracer.fused += 1
        try:
            out = original(*args, **kwargs)
        finally:
            tracer.fused -= 1
        tracer.record_attention(args, kwargs, out)
        return out

    F.scaled_dot_product_attention = recorded
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def stored_elements(t: Tensor) -> int:
    """Elements of ``t``'s storage (what a view can hold at most), or its own size when it has none."""
    try:
        return t.untyped_storage().nbytes() // max(t.element_size(), 1)
    except (RuntimeError, NotImplementedError):
        return t.numel()


def outputs_of(out) -> dict:
    ts = list(_tensors(out))
    return {"output_ids": tuple(id(t) for t in ts), "output_bytes": tuple(t.element_size() for t in ts)}
