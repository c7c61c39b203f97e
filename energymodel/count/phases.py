"""From a trace to action counts: operations per phase and memory accesses per operand, for a batch.

This is where training is modelled (which backward work each call needs) and where every access gets
the *size that decides its memory level* (see :mod:`energymodel.price`). Nothing here knows energies.

Phases of one training step on a batch of ``B`` samples:

- **forward**: every call; per-sample work times ``B``.
- **backward to the input**: only where the call's input needs a gradient (autograd's own answer from the
  trace: none for the first layer, none inside a frozen prefix run without gradients).
- **backward to the weights**: only for calls with trainable parameters.
- **update**: once per step for every trainable parameter, by the optimizer (:data:`OPTIMIZERS`).
- **loss**: softmax cross-entropy on the output logits (training only).

Memory accesses are counted in words (one word = one stored element at the table's ``word_bits``), under
*ideal reuse* (each tensor word read or written once per phase) and under *no reuse* (every MAC fetches
both operands from the level that holds them) — a lower and an upper bound; the table's
``dataflow.reuse`` picks which one is priced.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field

import pandas as pd

from energymodel.count.gemm import GemmShape, gemm_shape
from energymodel.count.ops import softmax_rule, work_for
from energymodel.count.trace import Call, Trace
from energymodel.count.work import OpVec, Work
from energymodel.errors import EnergyModelWarning, UserError

__all__ = ["Optimizer", "OPTIMIZERS", "Counts", "TiledLayer", "count", "INF"]

INF = math.inf


@dataclass(frozen=True)
class Optimizer:
    """Per-parameter cost of one update step.

    ``reads``/``writes``: words touched per parameter (weight, gradient, state); ``mults``/``adds``:
    operations per parameter; ``state``: extra words kept per parameter.
    """

    name: str
    reads: int
    writes: int
    mults: int
    adds: int
    state: int
    formula: str


#: The optimizers the cost model knows (weight decay, when on, adds 1 mult + 1 add per parameter).
OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer("sgd", reads=2, writes=1, mults=1, adds=1, state=0, formula="w ← w − lr·g"),
    "momentum": Optimizer(
        "momentum", reads=3, writes=2, mults=2, adds=2, state=1, formula="v ← μ·v + g;  w ← w − lr·v"
    ),
    "adam": Optimizer(
        "adam",
        reads=4,
        writes=3,
        mults=8,
        adds=4,
        state=2,
        formula="m ← β1·m + (1−β1)·g (2 mult, 1 add); v ← β2·v + (1−β2)·g² (3 mult, 1 add); "
        "w ← w − lr·m/(√v + ε) (sqrt, div, lr: 3 mult; +ε, −: 2 add)",
    ),
}

#: operand categories of the access table
WEIGHT_OPERANDS = ("weight", "weight_grad", "optimizer_state")
ACTIVATION_OPERANDS = ("activation", "activation_grad", "saved")


@dataclass(frozen=True)
class TiledLayer:
    """A conv/linear call priced by the tiled dataflow (:mod:`energymodel.memory.tiling`) instead of the size rule.

    ``shape``: its loop nest for the whole batch; ``phases``: forward, backward to the input, backward to
    the weights (which run); ``input_row``: the access row of its forward input read (an infinite deciding
    size there — the network input, a feature cache — means the input is streamed from DRAM);
    ``bias_words``: parameters besides the weight (read, or their gradient written, once per phase).
    """

    layer: int
    name: str
    shape: GemmShape
    phases: tuple[bool, bool, bool]
    input_row: int
    bias_words: int


@dataclass
class Counts:
    """Action counts of one pass (inference) or one training step, for a whole batch.

    ``layers``: one row per call (operations, parameters). ``accesses``: one row per access group with
    ``layer`` (row index into ``layers``), ``operand``, ``phase``, ``words`` (ideal reuse),
    ``words_noreuse`` and ``size_words`` (the size of what must fit on chip for the access to be served
    from SRAM; ``inf`` = always DRAM, e.g. the input images) and ``tiled`` (the row belongs to a layer of
    ``tiled``: the tiled dataflow replaces it when the table's ``dataflow.tiling`` is on).
    """

    layers: pd.DataFrame
    accesses: pd.DataFrame
    batch: int
    mode: str
    optimizer: str
    input_shape: tuple[int, ...]
    total_params: int
    trainable_params: int
    weight_state_words: int
    saved_words: float
    peak_activation_words: float
    unmodelled: list[str]
    tiled: list[TiledLayer] = field(default_factory=list)
    #: container modules of the trace: path -> (class name, per-sample output shape)
    modules: dict[str, tuple[str, tuple[int, ...] | None]] = field(default_factory=dict)
    #: tensor number -> the tensor it is a view of (the output of a call that moves no data: flatten, reshape)
    aliases: dict[int, int] = field(default_factory=dict)
    #: residency plans already made for these counts, by dataflow (:mod:`energymodel.memory.residency`)
    plans: dict = field(default_factory=dict, init=False, repr=False, compare=False)


def _noreuse(gemm: bool, ideal: float, fetches: float) -> float:
    """Words of one access group under no reuse: for conv/linear/matmul every MAC fetches its operand
    (``fetches``), but never fewer than under ideal reuse (a stride that skips inputs, or a bias word read at
    batch 1, must not make the upper bound undercut the lower one); other operations as under ideal reuse."""
    return max(ideal, fetches) if gemm else ideal


def _sample_shape(shape: tuple[int, ...]) -> str:
    """A traced output shape (batch 1) as one sample's: ``(1, 64, 56, 56)`` -> ``64×56×56``; a shape that does
    not start with the batch (``(16, 1, 32)`` inside a sequence-first attention) is shown whole."""
    return "×".join(map(str, shape[1:] if shape and shape[0] == 1 else shape))


def _loss_call(trace: Trace) -> Call:
    shape = (1, *trace.output_shape)
    return Call(
        index=len(trace.calls), name="(loss)", kind="CrossEntropyLoss", module=None,
        input_shapes=[shape], output_shapes=[shape], input_requires_grad=trace.trainable_params > 0,
        params=0, trainable_params=0, train_form=True, first_call=True, op="cross_entropy",
        input_numbers=(trace.output_number,), output_numbers=(-1,),
    )


def _per_tensor(shapes: list[tuple[int, ...]], ids: tuple[int, ...], batch: int) -> list[tuple[float, int]]:
    """``(words for the batch, tensor number)`` of each tensor of a call (-1 where the trace has no number)."""
    ids = tuple(ids) + (-1,) * (len(shapes) - len(ids))
    return [(float(batch * math.prod(s)), tid) for s, tid in zip(shapes, ids)]


def _split(tensors: list[tuple[float, int]], noreuse_total: float) -> list[tuple[float, float, int]]:
    """One access row per tensor: ``(words, words under no reuse, tensor)``; the no-reuse excess over the ideal
    words (a MAC fetching its operand) goes to the first tensor, so that the rows add up to the call's totals. A
    call without tensors keeps one empty row."""
    if not tensors:
        return [(0.0, noreuse_total, -1)]
    total = sum(w for w, _ in tensors)
    return [(w, w + (noreuse_total - total if j == 0 else 0.0), tid) for j, (w, tid) in enumerate(tensors)]


def count(
    trace: Trace,
    *,
    batch: int = 1,
    optimizer: str = "sgd",
    weight_decay: bool = False,
    warn: bool = True,
) -> Counts:
    """Turn a :class:`~energymodel.count.trace.Trace` into :class:`Counts` for a batch of ``batch`` samples."""
    if batch < 1:
        raise UserError(f"batch must be >= 1, got {batch}")
    if optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    opt = OPTIMIZERS[optimizer]
    training = trace.mode == "training"
    B = batch
    rows: list[dict] = []
    acc: list[tuple] = []  # (layer, operand, phase, words, noreuse, size or marker, tiled, tensor, write)
    tiled: list[TiledLayer] = []
    aliases: dict[int, int] = {}
    unmodelled: list[str] = []
    calls = list(trace.calls)
    works: list[Work] = [work_for(c) for c in calls]
    if training:
        loss = _loss_call(trace)
        calls.append(loss)
        lw = softmax_rule(loss)
        lw.forward = lw.forward + OpVec(add=1)  # −log p[y] summed into the batch loss
        lw.backward_input = OpVec(add=loss.out_words)  # dL/dz = p − onehot(y)
        lw.saved_for_input_grad = loss.out_words
        works.append(lw)

    trainable_params = 0
    total_params = 0
    peak_act = 0.0
    for i, (c, w) in enumerate(zip(calls, works)):
        if not w.modelled:
            unmodelled.append(c.name)
        first = c.first_call
        params = c.params
        if first:
            total_params += params
        train_w = training and c.trainable
        in_rg = training and c.input_requires_grad
        if train_w and first:
            trainable_params += c.trainable_params
        fwd = w.forward.scaled(B)
        bwd_in = w.backward_input.scaled(B) if in_rg else OpVec()
        bwd_w = w.backward_weight.scaled(B) if train_w else OpVec()
        if train_w:  # work both backward phases share is done once: with the weight gradient if it runs
            bwd_w = bwd_w + w.backward_shared.scaled(B)
        elif in_rg:
            bwd_in = bwd_in + w.backward_shared.scaled(B)
        upd = OpVec()
        if train_w and first:
            per = opt.mults + (1 if weight_decay else 0), opt.adds + (1 if weight_decay else 0)
            upd = OpVec(mult=per[0] * c.trainable_params, add=per[1] * c.trainable_params)
        if train_w and not first:  # a module called again accumulates into the same weight gradient
            bwd_w = bwd_w + OpVec(add=c.trainable_params)
        n_in, n_out = B * c.in_words, B * c.out_words
        if w.moves_data:
            peak_act = max(peak_act, n_in + n_out)
        gemm_noreuse = w.gemm
        macs_f = fwd.mac
        shape = gemm_shape(c) if w.moves_data else None
        t = shape is not None  # these rows are replaced by the tiled dataflow when it is on
        if t:
            phases = (True, bool(in_rg), bool(train_w))
            tiled.append(TiledLayer(i, c.name, dataclasses.replace(shape, n=shape.n * B), phases, len(acc),
                                    params - math.prod(c.param_shapes["weight"])))
        if not w.moves_data and c.input_numbers:
            for tid in c.output_numbers:
                aliases[tid] = c.input_numbers[0]
        ins = _per_tensor(c.input_shapes, c.input_numbers, B)
        outs = _per_tensor(c.output_shapes, c.output_numbers, B)
        model_in = set(trace.input_numbers) if c.reads_model_input else set()
        if w.moves_data:
            for words, nr, tid in _split(ins, _noreuse(gemm_noreuse, n_in, macs_f)):
                acc.append((i, "activation", "forward", words, nr, INF if tid in model_in else words, t, tid, False))
            for words, nr, tid in _split(outs, n_out):
                acc.append((i, "activation", "forward", words, nr, words, t, tid, True))
            if params:
                read = params if w.weight_words is None else min(B * w.weight_words, params)  # a lookup: its rows
                acc.append((i, "weight", "forward", read, _noreuse(gemm_noreuse, read, macs_f), "W", t, -1, False))
        saved = 0.0
        if training and w.moves_data:
            s_in = w.saved_for_input_grad if in_rg else 0.0
            s_w = w.saved_for_weight_grad if train_w else 0.0
            saved = B * max(s_in, s_w)
            if saved:
                read_nr = _noreuse(gemm_noreuse, saved, bwd_w.mac) if train_w else saved
                acc.append((i, "saved", "forward", saved, saved, "S", t, -1, True))
                acc.append((i, "saved", "backward", saved, read_nr, "S", t, -1, False))
            if in_rg:
                for words, nr, tid in _split(outs, _noreuse(gemm_noreuse, n_out, bwd_in.mac)):
                    acc.append((i, "activation_grad", "backward", words, nr, words, t, tid, False))
                for words, nr, tid in _split(ins, n_in):
                    acc.append((i, "activation_grad", "backward", words, nr, words, t, tid, True))
                if params:
                    acc.append((i, "weight", "backward", params, _noreuse(gemm_noreuse, params, bwd_in.mac), "W", t,
                                -1, False))
            if train_w:
                for words, nr, tid in _split(outs, _noreuse(gemm_noreuse, n_out, bwd_w.mac)):
                    acc.append((i, "activation_grad", "backward", words, nr, words, t, tid, False))
                acc.append((i, "weight_grad", "backward", c.trainable_params, c.trainable_params, "W", t, -1, True))
                if not first:
                    acc.append((i, "weight_grad", "backward", c.trainable_params, c.trainable_params, "W", False,
                                -1, False))
        if train_w and first:
            tp = c.trainable_params
            acc.append((i, "weight", "update", 2 * tp, 2 * tp, "W", False, -1, False))  # read w, write w
            acc.append((i, "weight_grad", "update", tp, tp, "W", False, -1, False))  # read g
            extra = opt.reads + opt.writes - 3
            if extra:
                acc.append((i, "optimizer_state", "update", extra * tp, extra * tp, "W", False, -1, False))
        rows.append(
            {
                "name": c.name,
                "kind": c.kind,
                "trainable": bool(train_w),
                "input_requires_grad": bool(in_rg),
                "modelled": w.modelled,
                "first_call": first,
                "params": params,
                "trainable_params": c.trainable_params if train_w else 0,
                "input_words": n_in,
                "output_words": n_out,
                "output_shape": _sample_shape(c.output_shapes[0]) if c.output_shapes else "",
                "saved_words": saved,
                "macs_forward": fwd.mac,
                "macs_backward_input": bwd_in.mac,
                "macs_backward_weight": bwd_w.mac,
                "add_ops": fwd.add + bwd_in.add + bwd_w.add + upd.add,
                "mult_ops": fwd.mult + bwd_in.mult + bwd_w.mult + upd.mult,
                "cmp_ops": fwd.cmp + bwd_in.cmp + bwd_w.cmp + upd.cmp,
                "update_ops": upd.total,
                "other_ops_forward": fwd.add + fwd.mult + fwd.cmp,
                "other_ops_backward": bwd_in.add + bwd_in.mult + bwd_in.cmp + bwd_w.add + bwd_w.mult + bwd_w.cmp,
            }
        )
    layers = pd.DataFrame(rows)
    weight_state = total_params + (trainable_params * (1 + opt.state) if training else 0)
    saved_total = float(layers["saved_words"].sum()) if len(layers) else 0.0
    acc_df = pd.DataFrame(acc, columns=["layer", "operand", "phase", "words", "words_noreuse", "size_words", "tiled",
                                        "tensor", "write"])
    acc_df["size_words"] = acc_df["size_words"].map(
        lambda s: float(weight_state) if s == "W" else (saved_total if s == "S" else float(s))
    )
    if unmodelled and warn:
        warnings.warn(
            f"{len(unmodelled)} call(s) have no counting rule and are listed as unmodelled: {', '.join(unmodelled[:8])}"
            + (" ..." if len(unmodelled) > 8 else ""),
            EnergyModelWarning,
            stacklevel=2,
        )
    return Counts(
        layers=layers,
        accesses=acc_df,
        batch=B,
        mode=trace.mode,
        optimizer=optimizer,
        input_shape=trace.input_shape,
        total_params=trace.total_params,
        trainable_params=trainable_params,
        weight_state_words=int(weight_state),
        saved_words=saved_total,
        peak_activation_words=peak_act,
        unmodelled=unmodelled,
        tiled=tiled,
        aliases=aliases,
        modules=dict(trace.modules),
    )

