"""Conv, linear and matrix-multiply rules, and the loop nest of such a call (:class:`GemmShape`).

A conv's forward MACs are ``|Y| · (C_in / groups) · prod(kernel)`` (:func:`conv_macs`); backward to the input
and to the weights each do one MAC per forward MAC. :func:`gemm_shape` gives the loop bounds the dataflow
(:mod:`energymodel.memory.tiling`) tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from energymodel.count.trace import Call
from energymodel.count.work import OpVec, Work, as_tuple, in0_numel, numel, out_numel

__all__ = ["gemm_shape"]


@dataclass(frozen=True)
class GemmShape:
    """One conv/linear layer as a loop nest (per group), for the whole batch. A linear layer is a conv with
    ``p = q = h = w = r = s = 1`` and ``n`` = batch × leading dimensions."""

    n: int
    k: int
    c: int
    p: int
    q: int
    h: int
    w: int
    r: int = 1
    s: int = 1
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1

    @property
    def macs(self) -> int:
        return self.groups * self.n * self.k * self.c * self.p * self.q * self.r * self.s

    def words(self) -> tuple[int, int, int]:
        """``(|in|, |wt|, |out|)``: words of the three operands (all groups)."""
        g = self.groups
        return (g * self.n * self.c * self.h * self.w, g * self.k * self.c * self.r * self.s,
                g * self.n * self.k * self.p * self.q)


def conv_macs(out_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> int:
    """Forward MACs of a convolution (any dimensionality, groups, stride, dilation, padding).

    ``MACs = |Y| * (C_in / groups) * prod(kernel)`` where ``weight_shape = (C_out, C_in/groups, *kernel)``:
    every output element is a dot product over its receptive field within its group.
    """
    return numel(out_shape) * numel(weight_shape[1:])


def _weighted_gemm(call: Call, macs: int) -> Work:
    """Work of a layer with weights: ``macs`` MACs in each of forward, backward to input and backward to
    weights; ``|Y|`` bias adds forward and for the bias gradient; the weight gradient keeps the input."""
    bias = out_numel(call) if "bias" in call.param_shapes else 0
    return Work(
        forward=OpVec(mac=macs, add=bias),
        backward_input=OpVec(mac=macs),
        backward_weight=OpVec(mac=macs, add=bias),
        saved_for_weight_grad=in0_numel(call),
        gemm=True,
    )


def conv_rule(call: Call) -> Work:
    """Conv: forward ``MACs = |Y|·(C_in/g)·prod(k)`` (+ ``|Y|`` adds for a bias).

    Backward to the input (a transposed convolution) and backward to the weights each do exactly one MAC
    per forward MAC, whatever the groups/stride/dilation: every forward product ``x·w`` contributes one
    product to ``dL/dx`` and one to ``dL/dw``. Bias gradient: ``|Y|`` adds. The weight gradient needs the
    saved input (``|X|`` elements); the input gradient re-reads the weights, keeping nothing.
    """
    w = call.param_shapes.get("weight")
    if w is None:
        return Work(modelled=False)
    return _weighted_gemm(call, conv_macs(call.output_shapes[0], w))


def linear_rule(call: Call) -> Work:
    """Linear: ``MACs = |Y| · in_features`` (+ ``|Y|`` bias adds); backward as for conv (one MAC each way)."""
    w = call.param_shapes.get("weight")
    if w is None:
        return Work(modelled=False)
    return _weighted_gemm(call, out_numel(call) * w[1])


def gemm_shape(call: Call) -> GemmShape | None:
    """The loop nest of a Conv1d/Conv2d or Linear module call at batch 1 (for :mod:`energymodel.memory.tiling`),
    or ``None`` for any other call (those keep the size rule). A Linear layer's leading dimensions other
    than the last count as batch; a Conv1d is a Conv2d with one column."""
    m = call.module
    w = call.param_shapes.get("weight")
    if w is None or not call.input_shapes or not call.output_shapes:
        return None
    x, y = call.input_shapes[0], call.output_shapes[0]
    if isinstance(m, nn.Linear):
        return GemmShape(n=numel(x[:-1]), k=w[0], c=w[1], p=1, q=1, h=1, w=1)
    if isinstance(m, (nn.Conv1d, nn.Conv2d)) and isinstance(m.padding, tuple) and len(x) == len(y) == len(w):
        d = len(w) - 2
        stride, dil, pad = (as_tuple(m.stride, d), as_tuple(m.dilation, d), as_tuple(m.padding, d))
        g = m.groups
        if d == 1:
            return GemmShape(n=x[0], k=w[0] // g, c=w[1], p=y[2], q=1, h=x[2], w=1, r=w[2], s=1,
                             stride=(stride[0], 1), dilation=(dil[0], 1), padding=(pad[0], 0), groups=g)
        return GemmShape(n=x[0], k=w[0] // g, c=w[1], p=y[2], q=y[3], h=x[2], w=x[3], r=w[2], s=w[3],
                         stride=stride, dilation=dil, padding=pad, groups=g)
    return None


def mm_rule(call: Call) -> Work:
    """Matrix products (mm, addmm, bmm, baddbmm, matmul): ``MACs = |Y| · K`` with K the contracted dimension
    (+ ``|Y|`` adds for ``addmm``/``baddbmm``).

    Backward: one product of ``|Y| · K`` MACs for each operand that needs a gradient (``dA = dY·Bᵀ``,
    ``dB = Aᵀ·dY``): ``2 · |Y| · K`` when both do, e.g. attention scores, or ``F.linear`` with a trained weight.
    Keeps the operands the other operand's gradient reads, counted as the elements they hold (a weight
    broadcast over a batch by ``expand`` holds its own size), and not the ones that are parameters (or views of
    parameters): those are the weights, already stored.
    """
    mats = [i for i, s in enumerate(call.input_shapes) if len(s) >= 2]
    if len(mats) < 2:
        return Work(modelled=False)
    a, b = mats[-2], mats[-1]
    k = call.input_shapes[a][-1]
    macs = out_numel(call) * k
    bias = out_numel(call) if call.op in ("addmm", "baddbmm") else 0
    grads = call.input_grads or tuple(True for _ in call.input_shapes)
    params = call.input_params or tuple(False for _ in call.input_shapes)
    elems = call.input_elems or tuple(numel(s) for s in call.input_shapes)
    needs = [i for i in (a, b) if grads[i]] if call.input_grads else [a, b]
    keep = {b if i == a else a for i in needs}  # dA reads B, dB reads A
    return Work(
        forward=OpVec(mac=macs, add=bias),
        backward_input=OpVec(mac=macs * len(needs)),
        saved_for_input_grad=sum(elems[i] for i in keep if not params[i]),
        gemm=True,
    )


def aten_conv_rule(call: Call) -> Work:
    """Functional convolution (``F.conv2d`` outside a module): as :func:`conv_rule`, weights from input 2."""
    if len(call.input_shapes) < 2:
        return Work(modelled=False)
    macs = conv_macs(call.output_shapes[0], call.input_shapes[1])
    return Work(forward=OpVec(mac=macs), backward_input=OpVec(mac=2 * macs), saved_for_input_grad=in0_numel(call), gemm=True)
