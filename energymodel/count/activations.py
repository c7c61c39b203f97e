"""Element-wise rules: activations, softmax, and the pointwise math that decompositions run.

Costs are per output element ``n`` (the first output), with the conventions of :mod:`energymodel.count.ops`:
``exp`` and ``log`` are degree-4 polynomials (4 mults + 4 adds each), a reciprocal, a square root or a
division is one mult, a comparison (``max``, a clamp bound, ReLU) is one ``cmp``. Each rule keeps the
element its backward reads (the input, or the output where PyTorch's backward reads the output).

=====================  ==============================================  =============================================
op                     forward per element                             backward to the input per element
=====================  ==============================================  =============================================
relu, threshold        1 cmp                                           1 cmp
relu6, hardtanh, clamp 2 cmp                                           2 cmp
leaky_relu, prelu      1 cmp + 1 mult                                  1 cmp + 1 mult (prelu's weight: 1 mult + 1 add)
sigmoid, tanh          exp + 1 add + 1 recip = 5 add + 5 mult          ``dy·y·(1−y)``: 1 add + 2 mult
silu ``x·σ(x)``        σ + 1 mult = 5 add + 6 mult                     ``dy·σ·(1 + x·(1−σ))``, σ recomputed: 7 add + 8 mult
gelu (tanh form)       ``0.5x(1+tanh(c(x+0.044715x³)))``: 7 add + 11 mult  the same again: 7 add + 11 mult
hardswish              ``x·clamp(x+3, 0, 6)/6``: 1 add + 2 cmp + 2 mult  ``dy·(x/3 + 0.5)`` inside (−3, 3): 2 cmp + 1 add + 2 mult
hardsigmoid            ``clamp(x+3, 0, 6)/6``: 1 add + 2 cmp + 1 mult  ``dy/6`` inside (−3, 3): 2 cmp + 1 mult
softplus               ``log(1 + exp(x))``: 9 add + 8 mult             ``dy·σ(x)``: 5 add + 6 mult
mish ``x·tanh(softplus(x))``  14 add + 14 mult                         σ, t = tanh(softplus) recomputed, ``dy·(t + x·σ·(1−t²))``: 21 add + 22 mult
elu, celu, selu        ``x > 0 ? x : α(exp(x)−1)`` (+1 mult for selu's scale): 1 cmp + 5 add + 5 mult  1 cmp + 1 mult
softmax, log_softmax   max, ``x−max``, exp, sum, ``/sum``: 6 add + 5 mult + 1 cmp   ``y·(dy − Σdy·y)``: 2 add + 2 mult
_safe_softmax          softmax + 1 cmp (rows of −inf give 0)           as softmax
=====================  ==============================================  =============================================

GELU's exact form (``approximate="none"``, with ``erf``) is charged as the tanh form: both are one
polynomial-approximated transcendental per element.
"""

from __future__ import annotations

from energymodel.count.trace import Call
from energymodel.count.work import EXP_ADDS, EXP_MULTS, OpVec, Rule, Work, numel

__all__ = ["elementwise", "ACTIVATION_RULES", "POINTWISE_RULES", "softmax_rule"]

LOG_ADDS, LOG_MULTS = EXP_ADDS, EXP_MULTS  # log is a degree-4 polynomial, as exp


def first_out(call: Call) -> int:
    """Elements of the first output (an op may also return indices or statistics)."""
    return numel(call.output_shapes[0]) if call.output_shapes else 0


def elementwise(fwd: OpVec, bwd: OpVec, saved: float = 1.0) -> Rule:
    """A rule for an element-wise op with ``fwd``/``bwd`` operations per output element.

    ``saved`` elements per output element are kept for the backward pass (e.g. ReLU's output/mask).
    """

    def rule(call: Call) -> Work:
        n = first_out(call)
        return Work(forward=fwd.scaled(n), backward_input=bwd.scaled(n), saved_for_input_grad=saved * n)

    return rule


SIGMOID_FWD = OpVec(add=EXP_ADDS + 1, mult=EXP_MULTS + 1)  # 1/(1+exp(-x))
_SIGMOID_BWD = OpVec(add=1, mult=2)  # dy·y·(1−y)
_GELU_FWD = OpVec(add=EXP_ADDS + 3, mult=EXP_MULTS + 7)  # tanh form: 0.5x(1+tanh(c(x+0.044715x^3)))
_SILU_FWD = SIGMOID_FWD + OpVec(mult=1)  # x·sigmoid(x)
_SILU_BWD = SIGMOID_FWD + OpVec(add=2, mult=3)  # dy·σ·(1 + x·(1−σ)), σ recomputed from x
_SOFTPLUS_FWD = OpVec(add=EXP_ADDS + 1 + LOG_ADDS, mult=EXP_MULTS + LOG_MULTS)  # log(1 + exp(x))
_MISH_FWD = _SOFTPLUS_FWD + SIGMOID_FWD + OpVec(mult=1)  # x·tanh(softplus(x)); tanh costs as sigmoid
_MISH_BWD = SIGMOID_FWD + _MISH_FWD + OpVec(add=2, mult=3)  # σ, t recomputed; t², 1−, x·σ·, t+, ·dy
_ELU_FWD = OpVec(add=EXP_ADDS + 1, mult=EXP_MULTS + 1, cmp=1)  # x > 0 ? x : α(exp(x) − 1)
SOFTMAX_FWD = OpVec(add=EXP_ADDS + 2, mult=EXP_MULTS + 1, cmp=1)  # max, x−max, exp, sum, /sum
SOFTMAX_BWD = OpVec(add=2, mult=2)  # y·(dy − sum(dy·y))

relu_rule = elementwise(OpVec(cmp=1), OpVec(cmp=1))
relu6_rule = elementwise(OpVec(cmp=2), OpVec(cmp=2))
leaky_relu_rule = elementwise(OpVec(cmp=1, mult=1), OpVec(cmp=1, mult=1))
sigmoid_rule = elementwise(SIGMOID_FWD, _SIGMOID_BWD)
tanh_rule = elementwise(SIGMOID_FWD, _SIGMOID_BWD)
gelu_rule = elementwise(_GELU_FWD, _GELU_FWD)
silu_rule = elementwise(_SILU_FWD, _SILU_BWD)
hardswish_rule = elementwise(OpVec(add=1, mult=2, cmp=2), OpVec(add=1, mult=2, cmp=2))
hardsigmoid_rule = elementwise(OpVec(add=1, mult=1, cmp=2), OpVec(mult=1, cmp=2))
softplus_rule = elementwise(_SOFTPLUS_FWD, SIGMOID_FWD + OpVec(mult=1))
mish_rule = elementwise(_MISH_FWD, _MISH_BWD)
elu_rule = elementwise(_ELU_FWD, OpVec(cmp=1, mult=1))
selu_rule = elementwise(_ELU_FWD + OpVec(mult=1), OpVec(cmp=1, mult=1))
softmax_rule = elementwise(SOFTMAX_FWD, SOFTMAX_BWD)
safe_softmax_rule = elementwise(SOFTMAX_FWD + OpVec(cmp=1), SOFTMAX_BWD)


def prelu_rule(call: Call) -> Work:
    """PReLU ``x > 0 ? x : a·x`` with a learned slope ``a``: 1 cmp + 1 mult; backward to the input 1 cmp +
    1 mult; to the slope ``Σ dy·x`` over the negative part: 1 mult + 1 add per element. Keeps ``x``."""
    n = first_out(call)
    return Work(forward=OpVec(cmp=n, mult=n), backward_input=OpVec(cmp=n, mult=n),
                backward_weight=OpVec(mult=n, add=n), saved_for_input_grad=n, saved_for_weight_grad=n)


#: pointwise math that decompositions and hand-written layers run (``x.pow(2)``, ``torch.rsqrt`` ...)
POINTWISE_RULES: dict[str, Rule] = {
    "pow": elementwise(OpVec(mult=1), OpVec(mult=2)),  # x² (the usual exponent); backward 2·x·dy
    "square": elementwise(OpVec(mult=1), OpVec(mult=2)),
    "rsqrt": elementwise(OpVec(mult=2), OpVec(mult=3)),  # sqrt + reciprocal; backward −0.5·y³·dy
    "sqrt": elementwise(OpVec(mult=1), OpVec(mult=2)),  # backward dy / (2·y)
    "reciprocal": elementwise(OpVec(mult=1), OpVec(mult=2)),  # backward −y²·dy
    "exp": elementwise(OpVec(add=EXP_ADDS, mult=EXP_MULTS), OpVec(mult=1)),  # backward y·dy
    "log": elementwise(OpVec(add=LOG_ADDS, mult=LOG_MULTS), OpVec(mult=1)),  # backward dy / x
    "neg": elementwise(OpVec(add=1), OpVec(add=1), saved=0.0),
    "abs": elementwise(OpVec(cmp=1), OpVec(cmp=1, mult=1)),
    "maximum": elementwise(OpVec(cmp=1), OpVec(cmp=1)),
    "minimum": elementwise(OpVec(cmp=1), OpVec(cmp=1)),
    "where": elementwise(OpVec(cmp=1), OpVec(cmp=1)),
    "masked_fill": elementwise(OpVec(cmp=1), OpVec(cmp=1)),
    **{op: elementwise(OpVec(cmp=1), OpVec(), saved=0.0) for op in ("eq", "ne", "lt", "le", "gt", "ge",
                                                                      "logical_not", "isnan", "isinf")},
}

ACTIVATION_RULES: dict[str, Rule] = {
    "relu": relu_rule, "threshold": relu_rule, "hardtanh": relu6_rule, "clamp": relu6_rule,
    "clamp_min": relu_rule, "clamp_max": relu_rule, "leaky_relu": leaky_relu_rule, "prelu": prelu_rule,
    "_prelu_kernel": prelu_rule, "sigmoid": sigmoid_rule, "tanh": tanh_rule, "gelu": gelu_rule,
    "silu": silu_rule, "hardswish": hardswish_rule, "hardsigmoid": hardsigmoid_rule, "softplus": softplus_rule,
    "mish": mish_rule, "elu": elu_rule, "celu": elu_rule, "selu": selu_rule, "_softmax": softmax_rule,
    "softmax": softmax_rule, "_log_softmax": softmax_rule, "log_softmax": softmax_rule,
    "_safe_softmax": safe_softmax_rule,
}
