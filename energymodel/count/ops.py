"""One small counting rule per operator kind, held in two registries (module classes, aten ops).

A rule looks at one traced :class:`~energymodel.count.trace.Call` and returns :class:`Work`: the arithmetic of
one *sample* in the forward pass, in the backward pass to the input and in the backward pass to the
weights, plus the tensors the layer keeps for its backward pass. What a call is charged (which backward
parts run, memory levels, batch scaling, the optimizer) is decided in :mod:`energymodel.count.phases`, not here.

Conventions (every count is per sample, ``|Y|`` = output elements, ``|X|`` = input elements):

- A multiply-accumulate (MAC) is one multiplication and one addition into an accumulator.
- ``exp`` is charged as a degree-4 polynomial (Horner form): 4 mults + 4 adds; ``sqrt`` and a division
  as one mult each (reciprocal units); a comparison (``max``, ReLU) as one ``cmp``.
- Per-channel terms that are O(C) per *batch* (BN running statistics, 1/sqrt(var)) are omitted: they
  are negligible against the O(B*C*H*W) per-element work.

A kind without a rule is returned as ``Work(modelled=False)``: it appears in every output as
*unmodelled* and raises a warning, never as a silent zero.
"""

from __future__ import annotations

import math

from torch import nn

from energymodel.count.activations import (
    ACTIVATION_RULES,
    POINTWISE_RULES,
    elementwise,
    gelu_rule,
    hardsigmoid_rule,
    hardswish_rule,
    leaky_relu_rule,
    mish_rule,
    prelu_rule,
    relu6_rule,
    relu_rule,
    selu_rule,
    sigmoid_rule,
    silu_rule,
    softmax_rule,
    softplus_rule,
    tanh_rule,
)
from energymodel.count.activations import elu_rule as elu_rule
from energymodel.count.attention import ATTENTION_RULES
from energymodel.count.gemm import aten_conv_rule, conv_rule, gemm_shape, linear_rule, mm_rule
from energymodel.count.lookup import LOOKUP_RULES, embedding_rule, upsample_module_rule
from energymodel.count.trace import Call
from energymodel.count.work import (
    EXP_ADDS,
    EXP_MULTS,
    ZERO_COST,
    OpVec,
    Rule,
    Work,
    as_tuple,
    in0_numel,
    numel,
    out_numel,
)
from energymodel.models.layers import Add

__all__ = ["OpVec", "Work", "work_for", "gemm_shape", "MODULE_RULES", "ATEN_RULES", "EXP_MULTS", "EXP_ADDS",
           "elementwise", "softmax_rule"]
















# -- linear algebra --------------------------------------------------------------------------------












# -- normalisation --------------------------------------------------------------------------------


def norm_rule(call: Call, always_batch_stats: bool = False) -> Work:
    """Batch/layer/group norm, per element.

    Training form (statistics of the current batch): mean (1 add), variance (1 sub, 1 square, 1 add),
    normalise (1 mult by 1/sigma), affine (1 mult, 1 add): **3 adds + 3 mults**. Backward: the two
    reductions ``Σdy`` (1 add) and ``Σdy·xhat`` (1 mult, 1 add) are computed once (``backward_shared``):
    they *are* ``dbeta`` and ``dgamma``, and the input gradient needs them too. Backward to the input
    ``dx = gamma/sigma·(dy − mean(dy) − xhat·mean(dy·xhat))`` besides them: **2 adds + 2 mults**. So a
    trained affine norm costs 4 adds + 3 mults backward, and so does one without affine parameters whose
    input needs a gradient (the reductions are then charged to the input gradient). Both keep ``xhat``
    (``|X|`` elements).

    Evaluation form (running statistics folded into one scale and shift per channel): **1 mult + 1 add**;
    its input gradient is one mult per element and keeps nothing; the weight gradient (affine only) is
    ``Σdy`` and ``Σdy·xhat``: 2 adds + 1 mult.
    """
    n = numel(call.output_shapes[0]) if call.output_shapes else 0
    affine = bool(call.param_shapes) if call.module is not None else len(call.input_shapes) > 1
    batch_stats = call.train_form or always_batch_stats
    if batch_stats:
        return Work(
            forward=OpVec(add=3 * n, mult=3 * n),
            backward_input=OpVec(add=2 * n, mult=2 * n),
            backward_shared=OpVec(add=2 * n, mult=n),
            saved_for_input_grad=n,
            saved_for_weight_grad=n if affine else 0,
        )
    return Work(
        forward=OpVec(add=n, mult=n),
        backward_input=OpVec(mult=n),
        backward_weight=OpVec(add=2 * n, mult=n) if affine else OpVec(),
        saved_for_weight_grad=n if affine else 0,
    )


def aten_batch_norm_rule(call: Call) -> Work:
    """``native_batch_norm`` / ``_native_batch_norm_legit``: :func:`norm_rule` with batch statistics when
    its ``training`` argument is true (the no-training variant: evaluation form)."""
    training = call.op != "_native_batch_norm_legit_no_training" and bool(call.op_args and call.op_args[0] is True)
    return norm_rule(call, always_batch_stats=training) if training else norm_rule(_eval_form(call))


def _eval_form(call: Call) -> Call:
    import dataclasses

    return dataclasses.replace(call, train_form=False)


def rms_norm_rule(call: Call) -> Work:
    """RMSNorm ``y = w·x/sqrt(mean(x²) + eps)`` per element: ``x²`` (1 mult), the mean (1 add), normalise
    (1 mult), scale (1 mult): **1 add + 3 mults** (the per-row root: O(rows), omitted). Backward to the input
    ``dx = r·(w·dy − x̂·mean(w·dy·x̂))``: **2 adds + 4 mults**; to the weight ``Σ dy·x̂``: 1 mult + 1 add.
    Keeps ``x`` (``|X|``)."""
    n = numel(call.output_shapes[0]) if call.output_shapes else 0
    affine = bool(call.param_shapes)
    return Work(forward=OpVec(add=n, mult=3 * n if affine else 2 * n), backward_input=OpVec(add=2 * n, mult=4 * n),
                backward_weight=OpVec(add=n, mult=n) if affine else OpVec(), saved_for_input_grad=n,
                saved_for_weight_grad=n if affine else 0)


# -- element-wise: energymodel.count.activations ----------------------------------------------------


def _tensor_operands(call: Call) -> int:
    """Tensor operands of a call (a Python number or a 0-d tensor operand is a scalar, not counted)."""
    return len(call.input_shapes)


def add_rule(call: Call) -> Work:
    """Residual/element-wise addition: ``|Y|`` adds. Backward passes ``dy`` to both inputs unchanged; the
    two gradient paths meet again where the block input forked, which costs ``|Y|`` adds: charged here.
    With a scalar operand (``x + 1.0``) there is one gradient path and ``dx = dy``: no backward work."""
    n = out_numel(call)
    return Work(forward=OpVec(add=n), backward_input=OpVec(add=n if _tensor_operands(call) >= 2 else 0))


def mul_rule(call: Call) -> Work:
    """Element-wise product (or division) ``y = a·b``: ``|Y|`` mults. Backward ``da = dy·b``, ``db = dy·a``: 2
    mults per output element, plus, for an operand broadcast over ``Y`` (a squeeze-excite scale ``(C, 1, 1)``
    times ``(C, H, W)``), the sum of its gradient over the broadcast dimensions: ``|Y| − |operand|`` adds. Keeps
    both operands (``|a| + |b|`` elements). With a scalar operand ``c`` (``x * 2.0``): backward ``dx = dy·c``,
    ``|Y|`` mults, keeps no tensor."""
    n = out_numel(call)
    if _tensor_operands(call) < 2:
        return Work(forward=OpVec(mult=n), backward_input=OpVec(mult=n))
    sizes = [numel(s) for s in call.input_shapes[:2]]
    return Work(forward=OpVec(mult=n), backward_input=OpVec(mult=2 * n, add=sum(n - s for s in sizes)),
                saved_for_input_grad=sum(sizes))


def dropout_rule(call: Call) -> Work:
    """Dropout: training form multiplies by a scaled mask (1 mult per element, mask kept); eval form is free."""
    if not call.train_form:
        return ZERO_COST
    n = out_numel(call)
    return Work(forward=OpVec(mult=n), backward_input=OpVec(mult=n), saved_for_input_grad=n)


def copy_rule(call: Call) -> Work:
    """Pure data movement (cat, clone, dtype copy): no arithmetic, one read and one write per element."""
    return Work()


# -- pooling ------------------------------------------------------------------------------------------



def _adaptive_windows(size_in: int, size_out: int) -> list[int]:
    """Window lengths of PyTorch's adaptive pooling: ``[floor(i·In/Out), ceil((i+1)·In/Out))``."""
    return [math.ceil((i + 1) * size_in / size_out) - (i * size_in) // size_out for i in range(size_out)]


def adaptive_window_sum(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[int, int]:
    """(sum of window sizes over all outputs, number of outputs) for adaptive pooling over trailing dims."""
    spatial = len(out_shape) - 2
    lead = numel(out_shape[: len(out_shape) - spatial])
    total = lead
    for d in range(spatial):
        total *= sum(_adaptive_windows(in_shape[-spatial + d], out_shape[-spatial + d]))
    return total, numel(out_shape)


def _pool_window(call: Call) -> int:
    m = call.module
    spatial = len(call.output_shapes[0]) - 2
    ks = m.kernel_size if m is not None else (call.op_args[0] if call.op_args else 1)
    return numel(as_tuple(ks, spatial))


def max_pool_rule(call: Call) -> Work:
    """Max pooling: ``|Y|·(K−1)`` comparisons (K = window elements); keeps the argmax (``|Y|``); backward
    scatters ``dy`` to the argmax positions: ``|Y|`` adds (windows may overlap). ``|Y|`` counts the pooled
    values only, not the indices that ``max_pool2d_with_indices`` / ``return_indices=True`` also return."""
    n = numel(call.output_shapes[0])
    k = _pool_window(call)
    return Work(forward=OpVec(cmp=n * (k - 1)), backward_input=OpVec(add=n), saved_for_input_grad=n)


def avg_pool_rule(call: Call) -> Work:
    """Average pooling: ``|Y|·(K−1)`` adds + ``|Y|`` mults; backward ``|Y|`` mults + ``|Y|·K`` adds."""
    n = out_numel(call)
    k = _pool_window(call)
    return Work(forward=OpVec(add=n * (k - 1), mult=n), backward_input=OpVec(mult=n, add=n * k))


def adaptive_avg_pool_rule(call: Call) -> Work:
    """Adaptive average pooling with PyTorch's exact windows: ``sum(window) − |Y|`` adds + ``|Y|`` mults;
    backward ``|Y|`` mults + ``sum(window)`` adds."""
    s, n = adaptive_window_sum(call.input_shapes[0], call.output_shapes[0])
    return Work(forward=OpVec(add=s - n, mult=n), backward_input=OpVec(mult=n, add=s))


def adaptive_max_pool_rule(call: Call) -> Work:
    """Adaptive max pooling: ``sum(window) − |Y|`` comparisons; backward ``|Y|`` adds; keeps the argmax."""
    s, n = adaptive_window_sum(call.input_shapes[0], call.output_shapes[0])
    return Work(forward=OpVec(cmp=s - n), backward_input=OpVec(add=n), saved_for_input_grad=n)


# -- functional linear algebra (aten) -------------------------------------------------------------






def reduce_rule(call: Call) -> Work:
    """Sum/mean over elements: ``|X| − |Y|`` adds (+ ``|Y|`` mults for a mean); backward broadcasts (``|X|`` writes)."""
    n_in, n_out = in0_numel(call), out_numel(call)
    mult = n_out if call.op == "mean" else 0
    return Work(forward=OpVec(add=max(n_in - n_out, 0), mult=mult), backward_input=OpVec(mult=mult))


# -- registries ---------------------------------------------------------------------------------------

_ZERO_COST_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten)

MODULE_RULES: dict[type, Rule] = {
    nn.Conv1d: conv_rule,
    nn.Conv2d: conv_rule,
    nn.Conv3d: conv_rule,
    nn.Linear: linear_rule,
    nn.BatchNorm1d: norm_rule,
    nn.BatchNorm2d: norm_rule,
    nn.BatchNorm3d: norm_rule,
    nn.LayerNorm: lambda c: norm_rule(c, always_batch_stats=True),
    nn.GroupNorm: lambda c: norm_rule(c, always_batch_stats=True),
    nn.RMSNorm: rms_norm_rule,
    nn.ReLU: relu_rule,
    nn.ReLU6: relu6_rule,
    nn.Hardtanh: relu6_rule,
    nn.LeakyReLU: leaky_relu_rule,
    nn.PReLU: prelu_rule,
    nn.Sigmoid: sigmoid_rule,
    nn.Tanh: tanh_rule,
    nn.GELU: gelu_rule,
    nn.SiLU: silu_rule,
    nn.Hardswish: hardswish_rule,
    nn.Hardsigmoid: hardsigmoid_rule,
    nn.Mish: mish_rule,
    nn.Softplus: softplus_rule,
    nn.ELU: elu_rule,
    nn.CELU: elu_rule,
    nn.SELU: selu_rule,
    nn.Softmax: softmax_rule,
    nn.LogSoftmax: softmax_rule,
    nn.Embedding: embedding_rule,
    nn.EmbeddingBag: embedding_rule,
    nn.Upsample: upsample_module_rule,
    nn.MaxPool1d: max_pool_rule,
    nn.MaxPool2d: max_pool_rule,
    nn.MaxPool3d: max_pool_rule,
    nn.AvgPool1d: avg_pool_rule,
    nn.AvgPool2d: avg_pool_rule,
    nn.AvgPool3d: avg_pool_rule,
    nn.AdaptiveAvgPool1d: adaptive_avg_pool_rule,
    nn.AdaptiveAvgPool2d: adaptive_avg_pool_rule,
    nn.AdaptiveAvgPool3d: adaptive_avg_pool_rule,
    nn.AdaptiveMaxPool1d: adaptive_max_pool_rule,
    nn.AdaptiveMaxPool2d: adaptive_max_pool_rule,
    nn.Dropout: dropout_rule,
    nn.Dropout1d: dropout_rule,
    nn.Dropout2d: dropout_rule,
    nn.Dropout3d: dropout_rule,
    nn.AlphaDropout: dropout_rule,
    Add: add_rule,
    **{cls: (lambda c: ZERO_COST) for cls in _ZERO_COST_MODULES},
}

_VIEW_OPS = (
    "view", "_unsafe_view", "reshape", "flatten", "t", "transpose", "permute", "expand", "squeeze",
    "unsqueeze", "slice", "select", "as_strided", "unbind", "split", "split_with_sizes", "chunk",
    "expand_as", "view_as", "unflatten", "dropout",
    "(parameters)",  # parameters of a container module: their arithmetic is counted by the aten rows
)

ATEN_RULES: dict[str, Rule] = {
    "add": add_rule,
    "sub": add_rule,
    "rsub": add_rule,
    "mul": mul_rule,
    "div": mul_rule,
    **ACTIVATION_RULES,
    **POINTWISE_RULES,
    **ATTENTION_RULES,
    **LOOKUP_RULES,
    "native_layer_norm": lambda c: norm_rule(c, always_batch_stats=True),
    "layer_norm": lambda c: norm_rule(c, always_batch_stats=True),
    "native_group_norm": lambda c: norm_rule(c, always_batch_stats=True),
    "group_norm": lambda c: norm_rule(c, always_batch_stats=True),
    "native_batch_norm": aten_batch_norm_rule,
    "_native_batch_norm_legit": aten_batch_norm_rule,
    "_native_batch_norm_legit_no_training": aten_batch_norm_rule,
    "mm": mm_rule,
    "addmm": mm_rule,
    "bmm": mm_rule,
    "baddbmm": mm_rule,
    "matmul": mm_rule,
    "convolution": aten_conv_rule,
    "mean": reduce_rule,
    "sum": reduce_rule,
    "max_pool2d_with_indices": max_pool_rule,
    "max_pool2d": max_pool_rule,
    "avg_pool2d": avg_pool_rule,
    "_adaptive_avg_pool2d": adaptive_avg_pool_rule,
    "adaptive_avg_pool2d": adaptive_avg_pool_rule,
    "cat": copy_rule,
    "stack": copy_rule,
    "clone": copy_rule,
    "_to_copy": copy_rule,
    "contiguous": copy_rule,
    **{op: (lambda c: ZERO_COST) for op in _VIEW_OPS},
}


def work_for(call: Call) -> Work:
    """The rule's answer for ``call``; ``Work(modelled=False)`` when no rule knows its kind."""
    if call.module is not None:
        for cls in type(call.module).__mro__:
            rule = MODULE_RULES.get(cls)
            if rule is not None:
                return rule(call)
        return Work(modelled=False)
    rule = ATEN_RULES.get(call.op or "")
    return rule(call) if rule is not None else Work(modelled=False)
