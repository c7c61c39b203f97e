"""The one place where the engine asks :mod:`energymodel` for costs.

Everything the engine trains is charged with :func:`energymodel.analysis.sharing.training_cost` for exactly the work
it did: the sharing point (frozen blocks ``[0, k)`` run forward only), the number of training samples, the
epochs, the batch size, the optimizer (and whether weight decay was on), the classifier size, and whether
the frozen prefix's features were cached (``cache_prefix``: the prefix then runs once per sample and its
outputs are written to and read back from DRAM).

============================  =============================================================================
what was trained              charged as
============================  =============================================================================
base network (task 0)         ``share=0`` on task 0's training images, ``[base]`` epochs
partial sharing, task t       ``share=k`` (the chosen point), task t's images, ``[branch]`` epochs
regular incremental, task t   ``share=0``, task t's images
feature extraction, task t    ``share=n`` (only the head trains), task t's images
naive fine-tuning, task t     ``share=0``, classifier over all classes so far, task t's images only
full retraining, task t       ``share=0``, classifier over all classes so far, images of tasks 0..t
sharing-point search trial k  ``share=k``, the search subset's training part, its trial epochs
task-agnostic statistics      one forward pass (inference form, ``eval_batch``) of the base network and of
                              the branch (blocks ``[k, n)`` + head) over the task's training and held-out
                              images, plus the statistics' arithmetic and one DRAM write of every stored number
============================  =============================================================================

Statistics (:meth:`CostModel.statistics`): ``E = P (E_base + E_branch(k)) / B + M (e_mac + r e_rf) + W e_dram``
with ``P`` images passed, ``E_base``/``E_branch(k)`` the modelled inference energy of one batch of ``B`` images
through the base network / the branch's layers, ``M`` the method's arithmetic MACs (``N D^2`` scatter +
``D^3`` per inverted covariance), ``r`` the register-file accesses of one MAC under the table's dataflow
(:func:`energymodel.memory.levels.rf_accesses`) and ``W = b n / w`` the table words of the ``n`` numbers of ``b``
bits written (and read back, for a method that rewrites its statistics; ``b = 32``, 64 for the analytic heads'
sums) at the table's word size ``w`` bits.

Output calibration (per task, when enabled): one forward pass of the base and the branch over the task's
held-out images, ``P_h (E_base + E_branch(k)) / B``. A task-agnostic query after task ``t``
(:meth:`CostModel.query`): the base network, every branch, and the method's scoring MACs.

Under ``torchrun`` every rank computes the whole feature cache: the prefix pass and the cache write are charged
once per rank (``ranks``); the training itself is the same total work split among them.

Storage after the last task counts every distinct parameter once (the shared trunk once, each branch once),
at the energy table's word size; full retraining also stores the old tasks' training images (uint8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from energymodel.analysis.points import sharing_points
from energymodel.analysis.profile import as_table, profile
from energymodel.analysis.sharing import COST_COLUMNS, training_cost
from energymodel.errors import UserError
from energymodel.models.blocks import as_block_net

__all__ = ["CostModel", "SUMMED", "STATISTICS_BITS", "sum_costs", "timing_row"]

#: task-agnostic statistics are stored as float32 numbers (float64 where a method says so), whatever the table's
STATISTICS_BITS = 32

#: Cost fields that add up over several trainings (the rest, e.g. memory, take the maximum).
SUMMED = tuple(COST_COLUMNS) + ("steps",)
#: The parts of a statistics cost, added up too when every summed cost has them.
STATISTICS_PARTS = ("forward_energy_pj", "arithmetic_macs", "dram_words")


class CostModel:
    """Prices training runs of one architecture on inputs of ``input_shape`` under one energy table.

    ``model_factory(num_classes)`` builds the architecture (weights do not matter: only shapes are traced).
    Results are cached per distinct question, so asking again is free.
    """

    def __init__(self, model_factory: Callable[[int], nn.Module], input_shape: Sequence[int], table: str,
                 base_classes: int, ranks: int = 1) -> None:
        self.table = as_table(table)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.template = as_block_net(model_factory(int(base_classes)))
        self.num_blocks = len(self.template.blocks)
        self._cache: dict[tuple, dict[str, Any]] = {}
        self._points = None
        self.ranks = int(ranks)  # torchrun processes: each fills the whole feature cache

    @property
    def word_bytes(self) -> float:
        return float(self.table.word_bytes)

    def points(self) -> list[dict[str, Any]]:
        """Sharing points ``0..n`` with their fractions (by layers, parameters and forward MACs)."""
        if self._points is None:
            self._points = [
                {"index": p.index, "after": p.after, "fraction": p.fraction, "fraction_params": p.fraction_params,
                 "fraction_macs": p.fraction_macs}
                for p in sharing_points(self.template, self.input_shape)
            ]
        return self._points

    def training(self, *, share: int, samples: int, epochs: int, batch: int, optimizer: str, num_classes: int,
                 cache_prefix: bool = False, weight_decay: bool = False) -> dict[str, Any]:
        """:func:`energymodel.analysis.sharing.training_cost` as a dict (``TrainingCost.to_dict()``)."""
        key = (int(share), int(samples), int(epochs), int(batch), optimizer, int(num_classes), bool(cache_prefix),
               bool(weight_decay))
        if key not in self._cache:
            cost = training_cost(
                self.template, self.input_shape, share=int(share), samples=int(samples), epochs=int(epochs),
                batch=int(batch), optimizer=optimizer, num_classes=int(num_classes), table=self.table,
                cache_prefix=bool(cache_prefix and share > 0), weight_decay=bool(weight_decay), ranks=self.ranks,
            )
            self._cache[key] = cost.to_dict()
        return dict(self._cache[key])

    def for_fit(self, *, share: int, samples: int, epochs: int, batch: int, optimizer: str, num_classes: int,
                cache_mode: str, weight_decay: float) -> dict[str, Any]:
        """Cost of one :func:`~incremental.train.loop.fit` call as it really ran (``cache_mode`` from its FitResult)."""
        return self.training(share=share, samples=samples, epochs=epochs, batch=batch, optimizer=optimizer,
                             num_classes=num_classes, cache_prefix=cache_mode in ("memory", "memmap"),
                             weight_decay=weight_decay > 0)

    def curve(self, shares: Iterable[int], *, samples: int, epochs: int, batch: int, optimizer: str,
              num_classes: int, cache_prefix: bool, weight_decay: float, prefix: str = "") -> dict[int, dict[str, Any]]:
        """Per sharing point ``k``: the modelled cost of training a branch at ``k`` on ``samples`` images.

        Returns ``{k: {prefix+"energy_pj", prefix+"macs", prefix+"dram_accesses", prefix+"training_memory_bytes"}}``
        (columns for a sharing-point search curve).
        """
        out: dict[int, dict[str, Any]] = {}
        for k in shares:
            c = self.training(share=k, samples=samples, epochs=epochs, batch=batch, optimizer=optimizer,
                              num_classes=num_classes, cache_prefix=cache_prefix and k > 0,
                              weight_decay=weight_decay > 0)
            out[int(k)] = {f"{prefix}{col}": float(c[col])
                           for col in ("energy_pj", "macs", "dram_accesses", "training_memory_bytes")}
        return out

    def _inference_layers(self, batch: int):
        key = ("inference", int(batch))
        if key not in self._cache:
            self._cache[key] = profile(self.template, self.input_shape, batch=int(batch), mode="inference",
                                       table=self.table, warn=False).layers
        return self._cache[key]

    def forward_pass(self, share: int | None, samples: int, batch: int) -> dict[str, float]:
        """Modelled cost of running ``samples`` images through the base network and a branch at ``share``.

        The base network runs whole (it gives the common features and the shared trunk); the branch adds its
        own copies of blocks ``[share, n)`` and the head (``share=None``: the base network alone, task 0). The
        branch's head is priced with the base network's classifier (a class count apart: a few MACs per image).
        Inference form, batches of ``batch``.
        """
        layers = self._inference_layers(batch)
        names = []
        if share is not None:
            kept = list(self.template.blocks.named_children())[share:]
            names = [f"blocks.{name}" for name, _ in kept] + ["head"]
        branch = layers["name"].map(lambda n: any(n == p or n.startswith(p + ".") for p in names)).to_numpy()
        scale = samples / batch
        return {
            "macs": float(scale * (layers["macs"].sum() + layers["macs"][branch].sum())),
            "energy_pj": float(scale * (layers["energy_pj"].sum() + layers["energy_pj"][branch].sum())),
            "samples": float(samples),
        }

    def per_mac_pj(self) -> float:
        """Energy of one MAC of the statistics' arithmetic: the MAC and its register-file accesses."""
        from energymodel.memory.levels import rf_accesses

        flow = self.table.dataflow
        rf = float(rf_accesses(1.0, 0.0, flow.rf_accesses_per_op, flow.rf_words))  # RF accesses of one MAC
        return self.table.op_pj("mac") + rf * self.table.level_pj("rf")

    def table_words(self, numbers: float, bits: int = STATISTICS_BITS) -> float:
        """Table words that ``numbers`` values of ``bits`` bits occupy (``numbers * bits / word_bits``)."""
        return float(numbers) * bits / self.table.word_bits

    def statistics(self, *, share: int | None, samples: int, batch: int, macs: float, numbers: float,
                   bits: int = STATISTICS_BITS) -> dict[str, float]:
        """Cost of fitting task-agnostic statistics (module docstring): forward pass + arithmetic + DRAM traffic.

        ``numbers``: values of ``bits`` bits moved to or from DRAM (written, and read back where a method rewrites
        its statistics), priced as :meth:`table_words` table words.
        """
        fwd = self.forward_pass(share, samples, batch) if samples else {"macs": 0.0, "energy_pj": 0.0}
        words = self.table_words(numbers, bits)
        energy = fwd["energy_pj"] + macs * self.per_mac_pj() + words * self.table.level_pj("dram")
        return {"macs": fwd["macs"] + macs, "energy_pj": energy, "forward_energy_pj": fwd["energy_pj"],
                "arithmetic_macs": float(macs), "dram_words": words, "samples": float(samples)}

    def query(self, shares: Sequence[int | None], macs: float) -> dict[str, float]:
        """Modelled cost of one task-agnostic query: the base network once, every branch (``shares``: one per
        grown task; ``None`` entries are tasks without a branch) once, and ``macs`` of the method's scoring."""
        layers = self._inference_layers(1)
        base = float(layers["energy_pj"].sum())
        total_macs = float(layers["macs"].sum())
        energy = base
        for share in shares:
            if share is None:
                continue
            one = self.forward_pass(share, 1, 1)
            energy += one["energy_pj"] - base
            total_macs += one["macs"] - float(layers["macs"].sum())
        return {"energy_pj": energy + macs * self.per_mac_pj(), "macs": total_macs + macs,
                "method_macs": float(macs)}

    def storage(self, predictor: nn.Module, old_images: int = 0, image_shape: Sequence[int] | None = None
                ) -> dict[str, float]:
        """Bytes to keep after the last task: distinct parameters (shared ones once) + kept training images."""
        params = sum(p.numel() for p in predictor.parameters())  # parameters() yields each tensor once
        shape = image_shape or self.input_shape
        data = float(old_images * math.prod(shape))
        return {"params": int(params), "storage_bytes": params * self.word_bytes, "data_storage_bytes": data}


def sum_costs(costs: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Add up several training costs: summed columns add, ``training_memory_bytes`` takes the maximum."""
    costs_list = list(costs)
    out: dict[str, float] = {k: 0.0 for k in SUMMED}
    out["training_memory_bytes"] = 0.0
    out["samples_seen"] = 0.0
    n = 0
    for c in costs_list:
        n += 1
        for k in SUMMED:
            out[k] += float(c.get(k, 0.0) or 0.0)
        out["training_memory_bytes"] = max(out["training_memory_bytes"], float(c.get("training_memory_bytes", 0.0)))
        out["samples_seen"] += float(c.get("samples", 0)) * float(c.get("epochs", 0))
    for k in STATISTICS_PARTS:  # the parts of a statistics cost (CostModel.statistics), where present
        if costs_list and all(k in c for c in costs_list):
            out[k] = float(sum(float(c[k]) for c in costs_list))
    out["trainings"] = float(n)
    return out


def timing_row(label: str, seconds: float, cost: Mapping[str, Any] | None = None, phase: str | None = None
               ) -> dict[str, Any]:
    """One measured-vs-modelled row: ``{label, phase, measured_seconds, modelled_macs, modelled_energy_pj}``."""
    if seconds is None or not math.isfinite(float(seconds)):
        raise UserError(f"timing row {label!r}: measured seconds must be a finite number")
    return {
        "label": label,
        "phase": phase or label,
        "measured_seconds": float(seconds),
        "modelled_macs": float(cost["macs"]) if cost else None,
        "modelled_energy_pj": float(cost["energy_pj"]) if cost else None,
    }
