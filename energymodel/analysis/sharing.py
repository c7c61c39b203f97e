"""Partial network sharing: the cost ledger of learning a new task, against the baselines.

Sharing points and fractions: :mod:`energymodel.analysis.points`.

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

from energymodel.analysis.points import (
    SharingPoint,
    block_net_of,
    block_prefixes,
    inference_counts,
    new_head,
    num_classes_of,
    prefix_mask,
    resolve_points,
    sharing_points,
    with_classes,
)
from energymodel.analysis.profile import as_table
from energymodel.count.footprint import Footprint, try_footprint
from energymodel.count.phases import Counts, count
from energymodel.count.trace import trace
from energymodel.errors import UserError
from energymodel.models.blocks import BlockNet
from energymodel.models.inputs import describe, sample_bytes
from energymodel.price.ledger import COST_COLUMNS, Ledger, TrainingCost, price_ledger  # noqa: F401 - re-exported
from energymodel.price.table import EnergyTable

__all__ = ["SharingPoint", "sharing_points", "block_prefixes", "Ledger", "TrainingCost", "training_cost", "training_ledger", "compare", "StrategyLedgers", "strategy_ledgers", "resolve_points", "COST_COLUMNS"]


















# -- ledgers: energymodel.price.ledger (Ledger, COST_COLUMNS, TrainingCost, price_ledger) -----------------





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
    memory: bool = True,
) -> tuple[Ledger, dict]:
    """The unpriced :class:`Ledger` of training blocks ``[share, n)`` + a head (``num_classes``) of ``model``.

    ``ranks``: data-parallel processes (torchrun). The training work is split among them (the same total);
    with ``cache_prefix`` every rank computes and writes the *whole* feature cache, so the prefix pass and
    the cache write are charged ``ranks`` times. Returns the ledger and facts about it (steps, trainable
    parameters, and with ``memory`` the :class:`~energymodel.count.footprint.Footprint` of one step of a full
    batch, ``training_memory_bytes`` its peak).
    """
    if samples < 1 or epochs < 1 or batch < 1 or ranks < 1:
        raise UserError(f"samples, epochs, batch and ranks must be >= 1 (got {samples}, {epochs}, {batch}, {ranks})")
    net = with_classes(model, num_classes)
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
    pmask = prefix_mask(ref, shared)
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
    fp = step_memory(net, input_shape, share, batch=batch if full else rem, optimizer=optimizer,
                     weight_decay=weight_decay, cached=cache) if memory else None
    facts = {
        "steps": (full + (1 if rem else 0)) * epochs,
        "trainable_params": ref.trainable_params,
        "memory": fp,
        "training_memory_bytes": float(fp.peak) if fp is not None else 0.0,
        "uncached": not cache,
    }
    return ledger, facts


def step_memory(net: BlockNet, input_shape, share: int, *, batch: int, optimizer: str, weight_decay: bool,
                cached: bool = False) -> Footprint | None:
    """The :class:`~energymodel.count.footprint.Footprint` of one training step of ``net`` with blocks
    ``[0, share)`` frozen. With ``cached`` features the prefix does not run: the step is the branch's (blocks
    ``[share, n)`` and the head) on a batch of cached prefix outputs, with the prefix's weights resident."""
    prefixes = block_prefixes(net)
    if not cached:
        return try_footprint(net, input_shape, batch=batch, frozen=prefixes[:share], optimizer=optimizer,
                             weight_decay=weight_decay)
    blocks = list(net.blocks.named_children())
    branch = BlockNet(blocks[share:], net.head)
    feat = trace(BlockNet(blocks[:share], nn.Identity()), input_shape).output_shape
    fp = try_footprint(branch, feat, batch=batch, optimizer=optimizer, weight_decay=weight_decay)
    if fp is None:
        return None
    prefix = sum(p.numel() * p.element_size() for _, b in blocks[:share] for p in b.parameters())
    return dataclasses.replace(fp, weights=fp.weights + prefix, peak=fp.peak + prefix)


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
        training_memory_bytes=facts["training_memory_bytes"], table=tab.name, **priced,
    )




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
    memory: bool = True,
) -> StrategyLedgers:
    """Trace and count every strategy of :func:`compare` once (see the module docstring for the strategies);
    ``memory``: also each training step's memory (:func:`step_memory`)."""
    net = block_net_of(model)
    for label, value in (("old_classes", old_classes), ("new_classes", new_classes)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise UserError(f"{label} must be a positive integer, got {value!r}")
    if isinstance(tasks, bool) or not isinstance(tasks, numbers.Integral) or tasks < 1:
        raise UserError(f"tasks must be a positive integer, got {tasks!r}")
    old_classes = int(old_classes or num_classes_of(net))
    new_classes = int(new_classes or old_classes)
    requested = resolve_points(net, share)
    shares = sorted({0, *requested})
    if retrain_epochs is not None and (isinstance(retrain_epochs, bool) or int(retrain_epochs) < 1):
        raise UserError(f"retrain_epochs must be a positive integer, got {retrain_epochs!r}")
    branch = {
        k: _times(training_ledger(net, input_shape, share=k, samples=samples_new, epochs=epochs, batch=batch,
                                  optimizer=optimizer, num_classes=new_classes, cache_prefix=cache_prefix,
                                  memory=memory), tasks)
        for k in shares
    }
    full_net = with_classes(net, old_classes + tasks * new_classes)
    retraining = _cumulative([
        training_ledger(with_classes(net, old_classes + t * new_classes), input_shape, share=0,
                        samples=samples_old + samples_new * t, epochs=int(retrain_epochs or epochs), batch=batch,
                        optimizer=optimizer, memory=memory)
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
             "training_memory_bytes": max(f["training_memory_bytes"] for _, f in parts),
             "memory": max((f for _, f in parts), key=lambda f: f["training_memory_bytes"])["memory"]}
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
    memory_budget: int | None = None,
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
    (see ``docs/cost-model.md``); both are recorded in the frame's ``attrs``. Every row has the memory of one
    training step (``training_memory_bytes``: its peak; ``memory_*_bytes``: weights, gradients, optimizer state,
    saved activations). ``memory_budget`` (bytes): the column ``fits_memory_budget`` and
    ``attrs["shallowest_fitting_point"]``, the smallest ``k`` whose training step fits (``None``: none does).
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
    base_inf = inference_counts(net, input_shape)
    points = {p.index: p for p in sharing_points(net, input_shape, counts=base_inf)}
    branch_net = with_classes(net, new_classes)
    branch_inf = inference_counts(branch_net, input_shape)
    params_blocks = [sum(p.numel() for p in b.parameters()) for b in net.blocks.children()]
    head_new = sum(p.numel() for p in new_head(net.head, new_classes).parameters())
    base_params = sum(p.numel() for p in net.parameters())
    rows = []
    for k in ks:
        ledger, facts = led.branch[k]
        inf = Ledger()
        inf.add(base_inf, 1.0)
        inf.add(branch_inf, tasks, ~prefix_mask(branch_inf, prefixes[:k]))
        storage_params = base_params + tasks * (sum(params_blocks[k:]) + head_new)
        rows.append(_row("partial-sharing", k, points[k], ledger, facts, inf, storage_params, 0.0, tab, bits))
    # full retraining: one network over all classes, trained on old + new data
    full_net = led.full_net
    ledger, facts = led.retraining
    inf = Ledger()
    inf.add(inference_counts(full_net, input_shape), 1.0)
    storage_params = sum(p.numel() for p in full_net.parameters())
    data_bytes = (samples_old + samples_new * (tasks - 1)) * sample_bytes(input_shape)  # the old data kept
    rows.append(_row("full-retraining", 0, points[0], ledger, facts, inf, storage_params, data_bytes, tab, bits))
    df = pd.DataFrame(rows)
    reg = df[(df["strategy"] == "partial-sharing") & (df["share"] == 0)].iloc[0]
    ret = df[df["strategy"] == "full-retraining"].iloc[0]
    for col, short in (("energy_pj", "energy"), ("macs", "macs"), ("dram_accesses", "dram"),
                       ("storage_bytes", "storage"), ("inference_energy_pj", "inference_energy")):
        df[f"savings_{short}_vs_regular"] = reg[col] / df[col].replace(0, np.nan)
        df[f"savings_{short}_vs_retraining"] = ret[col] / df[col].replace(0, np.nan)
    df.attrs.update(
        {"model": type(model).__name__, "input_shape": describe(input_shape), "table": tab.name, "epochs": epochs,
         "batch": batch, "optimizer": optimizer, "samples_new": samples_new, "samples_old": samples_old,
         "new_classes": new_classes, "old_classes": old_classes, "tasks": tasks, "cache_prefix": cache_prefix,
         "buffer_bytes": tab.dataflow.buffer_bytes, "retrain_epochs": int(retrain_epochs or epochs)}
    )
    if memory_budget is not None:
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, numbers.Real) or memory_budget < 0:
            raise UserError(f"memory budget must be a number of bytes >= 0, got {memory_budget!r}")
        df["fits_memory_budget"] = df["training_memory_bytes"] <= memory_budget
        fits = df[(df["strategy"] == "partial-sharing") & df["fits_memory_budget"]]
        df.attrs["memory_budget_bytes"] = memory_budget
        df.attrs["shallowest_fitting_point"] = int(fits["share"].min()) if len(fits) else None
    return df


def _memory_columns(fp: Footprint | None) -> dict:
    """The parts of a training step's memory (bytes) as columns of a comparison row."""
    if fp is None:
        return {}
    return {"memory_weights_bytes": fp.weights, "memory_gradients_bytes": fp.gradients,
            "memory_optimizer_bytes": fp.optimizer_state, "memory_saved_bytes": fp.saved,
            "memory_peak_phase": fp.phase}


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
        "training_memory_bytes": facts["training_memory_bytes"],
        **_memory_columns(facts.get("memory")),
        "inference_macs": inf_priced["macs"],
        "inference_energy_pj": inf_priced["energy_pj"],
    }
