"""Ops that gather rather than compute: embedding lookups and upsampling (``F.interpolate``, ``nn.Upsample``).

**Embedding** (``nn.Embedding``, aten ``embedding``), ``|Y| = |ids|·dim`` elements per sample: no arithmetic;
the forward reads the ``|Y|`` table entries it gathers (not the whole table: ``Work.weight_words``) and writes
``|Y|``. The indices need no gradient; the weight gradient scatter-adds ``dY`` into a dense gradient of the
table's size: ``|Y|`` adds; it keeps the indices (``|ids|`` elements). ``EmbeddingBag`` (sum or mean of the
bag) adds ``|gathered| − |Y|`` adds (+ ``|Y|`` mults for a mean).

**Upsampling**, per output element, each output a weighted sum of the ``T`` input taps around it:

==========================  ===  ======================  ==================================================
mode                        T    forward                 backward to the input (scatter of the weights)
==========================  ===  ======================  ==================================================
nearest, nearest-exact      1    a copy: 0 operations    1 add
linear (1-D)                2    2 mults + 1 add         2 mults + 2 adds
bilinear (2-D)              4    4 mults + 3 adds        4 mults + 4 adds
bicubic (2-D)               16   16 mults + 15 adds      16 mults + 16 adds
trilinear (3-D)             8    8 mults + 7 adds        8 mults + 8 adds
==========================  ===  ======================  ==================================================

The interpolation weights depend on the output position only (O(H + W) per channel) and are not charged.
Nothing is kept for the backward pass (it needs shapes only).
"""

from __future__ import annotations

from energymodel.count.trace import Call
from energymodel.count.work import OpVec, Rule, Work, numel

__all__ = ["embedding_rule", "upsample_rule", "LOOKUP_RULES", "UPSAMPLE_TAPS"]

#: input taps per output element of each upsampling mode
UPSAMPLE_TAPS = {"nearest": 1, "nearest-exact": 1, "linear": 2, "bilinear": 4, "bicubic": 16, "trilinear": 8}


def embedding_rule(call: Call) -> Work:
    """Embedding lookup: no arithmetic, ``|Y|`` table reads; backward to the table ``|Y|`` adds, keeps the ids."""
    y = numel(call.output_shapes[0]) if call.output_shapes else 0
    ids = call.input_elems[-1] if call.module is None and call.input_elems else (
        numel(call.input_shapes[0]) if call.input_shapes else 0)
    bag = call.module is not None and type(call.module).__name__ == "EmbeddingBag"
    fwd = OpVec()
    if bag:
        gathered = ids * call.param_shapes.get("weight", (0, 0))[-1]
        mean = getattr(call.module, "mode", "mean") == "mean"
        fwd = OpVec(add=max(gathered - y, 0), mult=y if mean else 0)
        y = gathered
    return Work(forward=fwd, backward_weight=OpVec(add=y), saved_for_weight_grad=ids, weight_words=y)


def upsample_rule(taps: int) -> Rule:
    """Upsampling with ``taps`` input taps per output: ``taps`` mults + ``taps − 1`` adds (none for 1 tap);
    backward ``taps`` mults (none for 1) + ``taps`` adds."""

    def rule(call: Call) -> Work:
        n = numel(call.output_shapes[0]) if call.output_shapes else 0
        if taps == 1:
            return Work(backward_input=OpVec(add=n))
        return Work(forward=OpVec(mult=taps * n, add=(taps - 1) * n), backward_input=OpVec(mult=taps * n, add=taps * n))

    return rule


def upsample_module_rule(call: Call) -> Work:
    """``nn.Upsample``: the rule of its ``mode``."""
    taps = UPSAMPLE_TAPS.get(getattr(call.module, "mode", ""))
    return upsample_rule(taps)(call) if taps else Work(modelled=False)


LOOKUP_RULES: dict[str, Rule] = {
    "embedding": embedding_rule,
    "upsample_nearest1d": upsample_rule(1), "upsample_nearest2d": upsample_rule(1),
    "upsample_nearest3d": upsample_rule(1), "_upsample_nearest_exact1d": upsample_rule(1),
    "_upsample_nearest_exact2d": upsample_rule(1), "_upsample_nearest_exact3d": upsample_rule(1),
    "upsample_linear1d": upsample_rule(2), "upsample_bilinear2d": upsample_rule(4),
    "upsample_bicubic2d": upsample_rule(16), "upsample_trilinear3d": upsample_rule(8),
}
