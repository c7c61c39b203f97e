"""Partial network sharing: sharing points and fractions, and the cost ledger of learning a new task.

**Sharing fraction** (one definition, used everywhere): at sharing point ``k`` of a :class:`BlockNet`
with blocks ``b_0 .. b_{n-1}``, the share of the network's conv/linear layers (the classifier excluded:
it sits in the head) that lie in ``b_0 .. b_{k-1}``::

    fraction(k) = #conv/linear layers in blocks[:k] / #conv/linear layers in blocks

Also reported: the fraction by parameters (all parameters of ``blocks[:k]`` over those of ``blocks``)
and by forward MACs (same ratio for MACs).

**Strategies compared** for one new task of ``new_classes`` classes (``samples_new`` training samples,
``epochs`` epochs, batch ``batch``):

- *clone-and-branch at k*: blocks ``[0,k)`` shared and frozen (forward only, evaluation form, nothing
  saved for backward); blocks ``[k,n)`` and a head for the new classes cloned and trained on the new data.
  With ``cache_prefix`` the shared prefix runs once per sample instead of once per epoch (its outputs are
  cached in DRAM: written once; the branch's entry layers read them from DRAM every epoch).
- *regular incremental learning*: the same at ``k = 0`` (a full clone trained on the new data).
- *full retraining*: one network with a classifier over old + new classes, every layer trained from scratch on
  old + new data; it must keep the old data (``data_storage_bytes``). With ``tasks = T`` new tasks learned one
  after another it retrains after every task: ``sum_{t=1..T}`` of a training on ``samples_old + t samples_new``
  samples over ``old + t new`` classes for ``retrain_epochs`` epochs (default: ``epochs``), and the branch
  strategies train ``T`` branches — every training cost is the cost of learning all ``T`` tasks.

A step on a batch of ``b`` samples costs ``count(b)``; an epoch is ``⌊S/b⌋`` full steps plus one step of
``S mod b`` samples. Storage after the task counts shared parameters once. Inference cost of the grown
network (per sample): the shared prefix once, then the base network's rest and every branch.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from .blocks import BlockNet, as_block_net, classifier_of, conv_linear_names, head_with_classes
from .counting import Counts, count
from .errors import UserError
from .graph import trace
from .ledger import COST_COLUMNS, Ledger, TrainingCost, price_ledger  # noqa: F401 - re-exported
from .profile import as_table
from .table import EnergyTable

__all__ = [
    "SharingPoint", "sharing_points", "block_prefixes", "Ledger", "TrainingCost", "training_cost",
    "training_ledger", "compare", "StrategyLedgers", "strategy_ledgers", "resolve_points", "COST_COLUMNS",
]


@dataclass(frozen=True)
class SharingPoint:
    """Sharing point ``index`` = number of shared blocks; ``after`` = the last shared block (``"input"`` for 0)."""

    index: int
    after: str
    layers_shared: int
    layers_total: int
    fraction: float
    fraction_params: float
    fraction_macs: float | None


def _block_net(model: nn.Module) -> BlockNet:
    """:func:`as_block_net`, with "no sharing points" reported as a one-line :class:`UserError`."""
    try:
        return as_block_net(model)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _new_head(head: nn.Module, num_classes: int) -> nn.Module:
    """:func:`head_with_classes`, with "no classifier in the head" reported as a :class:`UserError`."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise UserError(f"number of classes must be a positive integer, got {num_classes!r}")
    try:
        return head_with_classes(head, num_classes)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _num_classes(net: BlockNet) -> int:
    try:
        return classifier_of(net.head).out_features
    except ValueError as exc:
        raise UserError(str(exc)) from None


def block_prefixes(model: nn.Module) -> list[str]:
    """Module-path prefixes (as in ``model.named_modules()``) of the model's blocks, in order."""
    net = _block_net(model)
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for name, block in net.blocks.named_children():
        out.append(names.get(id(block), name))
    return out


def sharing_points(
    model: nn.Module, input_shape: Sequence[int] | None = None, *, counts: Counts | None = None
) -> list[SharingPoint]:
    """The ordered sharing points ``0..n`` of ``model`` with their fractions (by layers, params, MACs).

    The MAC fraction needs ``input_shape`` (C,H,W); without it, it is ``None``. ``counts`` (an inference
    count of ``model`` at that shape, when the caller has one) saves tracing the model again.
    """
    net = _block_net(model)
    blocks = list(net.blocks.named_children())
    layer_counts = [len(conv_linear_names(b)) for _, b in blocks]
    param_counts = [sum(p.numel() for p in b.parameters()) for _, b in blocks]
    mac_counts: list[float] | None = None
    if input_shape is not None:
        c = counts if counts is not None else _inference_counts(model, input_shape)
        prefixes = block_prefixes(model)
        macs = c.layers["macs_forward"].to_numpy()
        names = c.layers["name"].tolist()
        mac_counts = [float(sum(m for n, m in zip(names, macs) if _under(n, p))) for p in prefixes]
    total_l, total_p = max(sum(layer_counts), 1), max(sum(param_counts), 1)
    total_m = max(sum(mac_counts), 1.0) if mac_counts is not None else None
    points = []
    for k in range(len(blocks) + 1):
        points.append(
            SharingPoint(
                index=k,
                after=blocks[k - 1][0] if k else "input",
                layers_shared=sum(layer_counts[:k]),
                layers_total=sum(layer_counts),
                fraction=sum(layer_counts[:k]) / total_l,
                fraction_params=sum(param_counts[:k]) / total_p,
                fraction_macs=(sum(mac_counts[:k]) / total_m) if mac_counts is not None and total_m else None,
            )
        )
    return points


def _under(name: str, prefix: str) -> bool:
    base = name.split("#", 1)[0]
    return base == prefix or base.startswith(prefix + ".")


def resolve_points(model: nn.Module, share: Iterable[float | int] | None) -> list[int]:
    """Sharing point indices from a list of indices (ints) or fractions in [0, 1] (floats, nearest point).

    ``None`` means every sharing point.
    """
    pts = sharing_points(model)
    if share is None:
        return [p.index for p in pts]
    out: list[int] = []
    for s in share:
        if isinstance(s, bool):
            raise UserError(f"bad sharing point {s!r}")
        if isinstance(s, int) or (isinstance(s, float) and s.is_integer() and s > 1):
            k = int(s)
            if not 0 <= k < len(pts):
                raise UserError(f"sharing point {k} out of range 0..{len(pts) - 1}")
        else:
            f = float(s)
            if not 0.0 <= f <= 1.0 or math.isnan(f):
                raise UserError(f"sharing fraction {s!r} must lie in [0, 1]")
            k = min(pts, key=lambda p: (abs(p.fraction - f), p.index)).index
        if k not in out:
            out.append(k)
    return sorted(out)


# -- ledgers: energymodel.ledger (Ledger, COST_COLUMNS, TrainingCost, price_ledger) -----------------

def _with_classes(model: nn.Module, num_classes: int | None) -> BlockNet:
    net = _block_net(model)
    if num_classes is None:
        return net
    return BlockNet(list(net.blocks.named_children()), _new_head(net.head, num_classes))


def _prefix_mask(counts: Counts, prefixes: Sequence[str]) -> np.ndarray:
    names = counts.layers["name"].tolist()
    return np.array([any(_under(n, p) for p in prefixes) for n in names], dtype=bool)


def training_ledger(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    share: int = 0,
    samples: int,
    epochs: int = 1,
    batch: int = 128,
    optimizer: str = "sgd",
    num_classes: int | None = None,
    cache_prefix: bool = False,
    weight_decay: bool = False,
    ranks: int = 1,
) -> tuple[Ledger, dict]:
    """The unpriced :class:`Ledger` of training blocks ``[share, n)`` + a head (``num_classes``) of ``model``.

    ``ranks``: data-parallel processes (torchrun). The training work is split among them (the same total);
    with ``cache_prefix`` every rank computes and writes the *whole* feature cache, so the prefix pass and
    the cache write are charged ``ranks`` times. Returns the ledger and facts about it (steps, trainable
    parameters, memory words).
    """
    if samples < 1 or epochs < 1 or batch < 1 or ranks < 1:
        raise UserError(f"samples, epochs, batch and ranks must be >= 1 (got {samples}, {epochs}, {batch}, {ranks})")
    net = _with_classes(model, num_classes)
    prefixes = block_prefixes(net)
    if not 0 <= share <= len(prefixes):
        raise UserError(f"sharing point {share} out of range 0..{len(prefixes)}")
    shared = prefixes[:share]
    tr = trace(net, input_shape, mode="training", frozen=shared)
    full, rem = divmod(samples, batch)
    ledger = Ledger()
    c_full = count(tr, batch=batch, optimizer=optimizer, weight_decay=weight_decay, warn=False) if full else None
    c_rem = count(tr, batch=rem, optimizer=optimizer, weight_decay=weight_decay, warn=False) if rem else None
    ref = c_full or c_rem
    assert ref is not None
    pmask = _prefix_mask(ref, shared)
    cache = cache_prefix and share > 0
    for c, n in ((c_full, full), (c_rem, 1)):
        if c is None:
            continue
        if cache:
            ledger.add(c, n * ranks, pmask)  # the shared prefix runs once per sample, on every rank
            ledger.add(_reading_cache(c, pmask), n * epochs, ~pmask)  # the branch reads the cache every epoch
        else:
            ledger.add(c, n * epochs)
    if cache:
        feat = _prefix_output_words(ref, pmask) / ref.batch
        ledger.extra_dram_words = ranks * samples * feat  # the cache is written to DRAM once per rank
    facts = {
        "steps": (full + (1 if rem else 0)) * epochs,
        "trainable_params": ref.trainable_params,
        "training_memory_words": (c_full or c_rem).training_memory_words,
        "uncached": not cache,
    }
    return ledger, facts


def _reading_cache(counts: Counts, pmask: np.ndarray) -> Counts:
    """``counts`` with the branch's entry reads served from DRAM: the feature cache.

    A branch call whose input needs no gradient and has the size of the frozen prefix's output reads that
    output; with cached features it comes from the cache in DRAM every epoch, whatever its size (its
    forward input read, the first forward activation access of the call, is moved to DRAM by giving it an
    infinite deciding size).
    """
    layers = counts.layers
    feat = _prefix_output_words(counts, pmask)
    entry = (~pmask) & (~layers["input_requires_grad"].to_numpy(dtype=bool))
    entry &= (layers["input_words"].to_numpy() == feat) & (feat > 0)
    acc = counts.accesses.copy()
    fwd_act = (acc["operand"] == "activation") & (acc["phase"] == "forward")
    first = fwd_act & (acc[fwd_act].groupby("layer").cumcount().reindex(acc.index, fill_value=-1) == 0)
    rows = first & entry[acc["layer"].to_numpy()]
    acc.loc[rows, "size_words"] = math.inf
    return dataclasses.replace(counts, accesses=acc)


def _prefix_output_words(counts: Counts, pmask: np.ndarray) -> float:
    idx = np.flatnonzero(pmask)
    if not len(idx):
        return 0.0
    return float(counts.layers["output_words"].to_numpy()[idx[-1]])


def training_cost(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    share: int = 0,
    samples: int,
    epochs: int = 1,
    batch: int = 128,
    optimizer: str = "sgd",
    num_classes: int | None = None,
    table: str | EnergyTable = "45nm",
    cache_prefix: bool = False,
    weight_decay: bool = False,
    ranks: int = 1,
) -> TrainingCost:
    """Modelled cost of training ``model``'s blocks ``[share, n)`` and a head on ``samples`` samples.

    ``share=0`` trains every layer (regular incremental learning / full retraining);
    ``share=len(blocks)`` trains only the head (feature extraction). ``ranks``: see :func:`training_ledger`
    (each of ``ranks`` processes fills the whole feature cache).
    """
    tab = as_table(table)
    ledger, facts = training_ledger(
        model, input_shape, share=share, samples=samples, epochs=epochs, batch=batch, optimizer=optimizer,
        num_classes=num_classes, cache_prefix=cache_prefix, weight_decay=weight_decay, ranks=ranks,
    )
    priced = price_ledger(ledger, tab)
    return TrainingCost(
        share=share, samples=samples, epochs=epochs, batch=batch, steps=facts["steps"], cache_prefix=cache_prefix,
        trainable_params=facts["trainable_params"],
        training_memory_bytes=facts["training_memory_words"] * tab.word_bytes, table=tab.name, **priced,
    )


def _inference_counts(net: BlockNet, input_shape: Sequence[int]) -> Counts:
    return count(trace(net, input_shape, mode="inference"), batch=1, warn=False)


@dataclass
class StrategyLedgers:
    """The unpriced training ledgers of every strategy compared, built once and priced many times.

    ``branch[k]``: clone-and-branch at sharing point ``k`` (``k = 0`` is regular incremental learning) on the
    new task's data; ``retraining``: one network over all classes (``full_net``) trained on old + new data.
    Each value is ``(Ledger, facts)`` as returned by :func:`training_ledger`.
    """

    net: BlockNet
    requested: list[int]
    shares: list[int]
    branch: dict[int, tuple[Ledger, dict]]
    full_net: BlockNet
    retraining: tuple[Ledger, dict]
    old_classes: int
    new_classes: int
    tasks: int


def strategy_ledgers(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    share: Iterable[float | int] | None = None,
    new_classes: int | None = None,
    old_classes: int | None = None,
    samples_new: int = 5000,
    samples_old: int = 5000,
    epochs: int = 10,
    batch: int = 128,
    optimizer: str = "sgd",
    cache_prefix: bool = False,
    tasks: int = 1,
    retrain_epochs: int | None = None,
) -> StrategyLedgers:
    """Trace and count every strategy of :func:`compare` once (see the module docstring for the strategies)."""
    net = _block_net(model)
    for label, value in (("old_classes", old_classes), ("new_classes", new_classes)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise UserError(f"{label} must be a positive integer, got {value!r}")
    if isinstance(tasks, bool) or not isinstance(tasks, numbers.Integral) or tasks < 1:
        raise UserError(f"tasks must be a positive integer, got {tasks!r}")
    old_classes = int(old_classes or _num_classes(net))
    new_classes = int(new_classes or old_classes)
    requested = resolve_points(net, share)
    shares = sorted({0, *requested})
    if retrain_epochs is not None and (isinstance(retrain_epochs, bool) or int(retrain_epochs) < 1):
        raise UserError(f"retrain_epochs must be a positive integer, got {retrain_epochs!r}")
    branch = {
        k: _times(training_ledger(net, input_shape, share=k, samples=samples_new, epochs=epochs, batch=batch,
                                  optimizer=optimizer, num_classes=new_classes, cache_prefix=cache_prefix), tasks)
        for k in shares
    }
    full_net = _with_classes(net, old_classes + tasks * new_classes)
    retraining = _cumulative([
        training_ledger(_with_classes(net, old_classes + t * new_classes), input_shape, share=0,
                        samples=samples_old + samples_new * t, epochs=int(retrain_epochs or epochs), batch=batch,
                        optimizer=optimizer)
        for t in range(1, int(tasks) + 1)])
    return StrategyLedgers(net, requested, shares, branch, full_net, retraining, old_classes, new_classes, int(tasks))


def _times(ledger_facts: tuple[Ledger, dict], n: int) -> tuple[Ledger, dict]:
    """The same training done ``n`` times (one branch per task)."""
    ledger, facts = ledger_facts
    if n == 1:
        return ledger, facts
    out = Ledger([(c, t * n, m) for c, t, m in ledger.terms], ledger.extra_dram_words * n)
    return out, {**facts, "steps": facts["steps"] * n}


def _cumulative(parts: list[tuple[Ledger, dict]]) -> tuple[Ledger, dict]:
    """Several trainings one after another: terms and steps add, memory is the largest, parameters the last's."""
    ledger = Ledger([term for led, _ in parts for term in led.terms], sum(led.extra_dram_words for led, _ in parts))
    facts = {**parts[-1][1], "steps": sum(f["steps"] for _, f in parts),
             "training_memory_words": max(f["training_memory_words"] for _, f in parts)}
    return ledger, facts


def compare(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    share: Iterable[float | int] | None = None,
    new_classes: int | None = None,
    old_classes: int | None = None,
    samples_new: int = 5000,
    samples_old: int = 5000,
    epochs: int = 10,
    batch: int = 128,
    optimizer: str = "sgd",
    table: str | EnergyTable = "45nm",
    cache_prefix: bool = False,
    tasks: int = 1,
    ledgers: StrategyLedgers | None = None,
    buffer_bytes: int | None = None,
    retrain_epochs: int | None = None,
) -> pd.DataFrame:
    """Clone-and-branch at every requested sharing point against regular incremental learning and full retraining.

    One row per strategy (``partial-sharing`` at each sharing point, then ``full-retraining``) with
    training cost, storage after the task(s), inference cost of the grown network per sample and savings
    ratios (baseline / strategy; > 1 means cheaper). ``tasks`` new tasks of ``new_classes`` classes each
    are learned one after another: training cost of all of them (one branch per task; full retraining after
    every task on all data so far, ``retrain_epochs`` epochs, default ``epochs``), storage and inference after
    the last.
    ``ledgers`` (from :func:`strategy_ledgers` with the same settings) skips building them again.
    ``batch`` and ``buffer_bytes`` (default: the table's) are the two assumptions that move the savings most
    (see ``docs/cost-model.md``); both are recorded in the frame's ``attrs``.
    """
    tab = as_table(table)
    if buffer_bytes is not None:
        tab = tab.with_values({"dataflow.buffer_bytes": buffer_bytes})
    led = ledgers or strategy_ledgers(
        model, input_shape, share=share, new_classes=new_classes, old_classes=old_classes, samples_new=samples_new,
        samples_old=samples_old, epochs=epochs, batch=batch, optimizer=optimizer, cache_prefix=cache_prefix,
        tasks=tasks, retrain_epochs=retrain_epochs,
    )
    net, old_classes, new_classes, tasks = led.net, led.old_classes, led.new_classes, led.tasks
    ks = led.shares
    prefixes = block_prefixes(net)
    bits = tab.word_bytes
    # inference: base network (old classes) and a branch network (new classes)
    base_inf = _inference_counts(net, input_shape)
    points = {p.index: p for p in sharing_points(net, input_shape, counts=base_inf)}
    branch_net = _with_classes(net, new_classes)
    branch_inf = _inference_counts(branch_net, input_shape)
    params_blocks = [sum(p.numel() for p in b.parameters()) for b in net.blocks.children()]
    head_new = sum(p.numel() for p in _new_head(net.head, new_classes).parameters())
    base_params = sum(p.numel() for p in net.parameters())
    rows = []
    for k in ks:
        ledger, facts = led.branch[k]
        inf = Ledger()
        inf.add(base_inf, 1.0)
        inf.add(branch_inf, tasks, ~_prefix_mask(branch_inf, prefixes[:k]))
        storage_params = base_params + tasks * (sum(params_blocks[k:]) + head_new)
        rows.append(_row("partial-sharing", k, points[k], ledger, facts, inf, storage_params, 0.0, tab, bits))
    # full retraining: one network over all classes, trained on old + new data
    full_net = led.full_net
    ledger, facts = led.retraining
    inf = Ledger()
    inf.add(_inference_counts(full_net, input_shape), 1.0)
    storage_params = sum(p.numel() for p in full_net.parameters())
    data_bytes = float((samples_old + samples_new * (tasks - 1)) * math.prod(input_shape))  # uint8 images kept
    rows.append(_row("full-retraining", 0, points[0], ledger, facts, inf, storage_params, data_bytes, tab, bits))
    df = pd.DataFrame(rows)
    reg = df[(df["strategy"] == "partial-sharing") & (df["share"] == 0)].iloc[0]
    ret = df[df["strategy"] == "full-retraining"].iloc[0]
    for col, short in (("energy_pj", "energy"), ("macs", "macs"), ("dram_accesses", "dram"),
                       ("storage_bytes", "storage"), ("inference_energy_pj", "inference_energy")):
        df[f"savings_{short}_vs_regular"] = reg[col] / df[col].replace(0, np.nan)
        df[f"savings_{short}_vs_retraining"] = ret[col] / df[col].replace(0, np.nan)
    df.attrs.update(
        {"model": type(model).__name__, "input_shape": list(input_shape), "table": tab.name, "epochs": epochs,
         "batch": batch, "optimizer": optimizer, "samples_new": samples_new, "samples_old": samples_old,
         "new_classes": new_classes, "old_classes": old_classes, "tasks": tasks, "cache_prefix": cache_prefix,
         "buffer_bytes": tab.dataflow.buffer_bytes, "retrain_epochs": int(retrain_epochs or epochs)}
    )
    return df


def _row(strategy, k, point: SharingPoint, ledger, facts, inf: Ledger, storage_params, data_bytes, tab, bytes_per):
    priced = price_ledger(ledger, tab)
    inf_priced = price_ledger(inf, tab)
    return {
        "strategy": strategy,
        "share": k,
        "after": point.after,
        "fraction": point.fraction,
        "fraction_params": point.fraction_params,
        "fraction_macs": point.fraction_macs,
        "trainable_params": facts["trainable_params"],
        "steps": facts["steps"],
        **priced,
        "storage_bytes": storage_params * bytes_per,
        "data_storage_bytes": data_bytes,
        "training_memory_bytes": facts["training_memory_words"] * bytes_per,
        "inference_macs": inf_priced["macs"],
        "inference_energy_pj": inf_priced["energy_pj"],
    }
