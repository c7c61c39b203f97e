"""Scaled dot-product attention, every backend: one rule for ``softmax(q·kᵀ·scale + mask)·v``.

Shapes per sample: ``q (…, H, L, E)``, ``k (…, Hk, S, E)``, ``v (…, Hk, S, Ev)`` (``Hk < H`` with grouped-query
attention), ``n = H·L·S`` scores. Every backend (``math``, ``flash`` — on a CPU
``_scaled_dot_product_flash_attention_for_cpu`` —, ``efficient``, ``cudnn``) does the same arithmetic forward:

- ``MACs = H·L·S·E + H·L·S·Ev`` (``q·kᵀ`` and ``p·v``; what ``FlopCounterMode`` counts as ``2·MACs``);
- ``n`` mults for the scale, ``n`` adds for a mask (an additive or boolean mask, or the causal one), the
  softmax over the scores (6 adds + 5 mults + 1 cmp each), ``n`` mults for dropout when it is on.

Backward to q, k and v: ``2·MACs`` (``dP = dO·vᵀ``, ``dV = pᵀ·dO``, ``dQ = dS·k``, ``dK = dSᵀ·q``), the softmax's
backward (2 adds + 2 mults per score) and the scale (``n`` mults). They differ in what they keep:

- ``math`` keeps the probabilities: ``q, k, v`` and ``p`` (``n`` elements);
- the fused kernels keep ``q, k, v``, the output (``H·L·Ev``) and the row log-sum-exp (``H·L``), and
  **recompute** the scores in the backward pass: ``+ H·L·S·E`` MACs and the forward's scale and softmax.

A dropout mask, when dropout is on, is kept (``n``) by every backend.
"""

from __future__ import annotations

from energymodel.count.activations import SOFTMAX_BWD, SOFTMAX_FWD
from energymodel.count.trace import Call
from energymodel.count.work import OpVec, Work, numel

__all__ = ["attention_rule", "ATTENTION_RULES"]

#: the aten op of each fused backend (seen when a model calls it directly, or traced on a real device)
FUSED_OPS = {
    "_scaled_dot_product_flash_attention_for_cpu": "flash",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_fused_attention_overrideable": "overrideable",
    "_scaled_dot_product_attention_math": "math",
}


def attention_rule(call: Call) -> Work:
    """Work of one scaled dot-product attention call (see the module docstring for the formulas)."""
    if len(call.input_shapes) < 3:
        return Work(modelled=False)
    q, k, v = call.input_shapes[:3]
    if len(q) < 2 or len(k) < 2 or len(v) < 2:
        return Work(modelled=False)
    L, E, S, Ev = q[-2], q[-1], k[-2], v[-1]
    heads = numel(q[:-2])
    n = heads * L * S
    macs = heads * L * S * (E + Ev)
    if call.op in FUSED_OPS:
        backend, dropout, causal = FUSED_OPS[call.op], 0.0, False
    else:
        backend, dropout, causal = (tuple(call.op_args) + ("math", 0.0, False))[:3]
    masked = len(call.input_shapes) > 3 or bool(causal)
    drop = dropout > 0 and call.train_form
    fwd = OpVec(mac=macs, mult=n, add=n if masked else 0) + SOFTMAX_FWD.scaled(n) + OpVec(mult=n if drop else 0)
    bwd = OpVec(mac=2 * macs, mult=n + (n if drop else 0)) + SOFTMAX_BWD.scaled(n)
    qkv = numel(q) + numel(k) + numel(v)
    if backend == "math":
        saved = qkv + n
    else:
        bwd = bwd + OpVec(mac=heads * L * S * E, mult=n, add=n if masked else 0) + SOFTMAX_FWD.scaled(n)
        saved = qkv + heads * L * Ev + heads * L
    return Work(forward=fwd, backward_input=bwd, saved_for_input_grad=saved + (n if drop else 0), gemm=True)


ATTENTION_RULES = {"scaled_dot_product_attention": attention_rule, **{op: attention_rule for op in FUSED_OPS}}
