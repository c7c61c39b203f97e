"""Cost ledgers: a cost kept as unpriced action counts (``Σ times · features``), priced under any table.

:class:`Ledger` is built by :func:`energymodel.analysis.sharing.training_ledger`; :func:`price_ledger` turns it into
counts, accesses per level and energy; :class:`TrainingCost` is the priced record of one training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from energymodel.count.phases import Counts
from energymodel.price.pricing import FEATURES, feature_vector, price_vector
from energymodel.price.table import EnergyTable

__all__ = ["COST_COLUMNS", "Ledger", "TrainingCost", "price_ledger"]


@dataclass
class Ledger:
    """A cost as a sum of priced terms: ``Σ times · features(counts, layers)`` plus extra DRAM words.

    Kept unpriced so that one ledger is priced under any number of tables (sweeps).
    """

    terms: list[tuple[Counts, float, np.ndarray]] = field(default_factory=list)
    extra_dram_words: float = 0.0

    def add(self, counts: Counts, times: float, mask: np.ndarray | None = None) -> None:
        if times:
            m = np.ones(len(counts.layers), dtype=bool) if mask is None else mask
            self.terms.append((counts, float(times), m))

    def features(self, table: EnergyTable) -> np.ndarray:
        """Totals ``[mac, add, mult, cmp, rf, sram, dram]`` under ``table``'s dataflow."""
        flow = table.dataflow
        total = np.zeros(len(FEATURES))
        for counts, times, mask in self.terms:
            total += times * feature_vector(counts, word_bits=table.word_bits, buffer_bytes=flow.buffer_bytes,
                                            rf_accesses_per_op=flow.rf_accesses_per_op, reuse=flow.reuse, layers=mask,
                                            array=flow.array(), tiling=flow.tiling)
        total[FEATURES.index("dram")] += self.extra_dram_words
        return total

    def column_sum(self, column: str) -> float:
        """``Σ times · counts.layers[column][mask]`` (a raw count, independent of the table)."""
        return float(sum(t * c.layers[column].to_numpy()[m].sum() for c, t, m in self.terms))

    def access_sum(self, operands: Sequence[str], table: EnergyTable) -> float:
        reuse = table.dataflow.reuse
        out = 0.0
        for c, t, m in self.terms:
            acc = c.accesses
            keep = m[acc["layer"].to_numpy()] & acc["operand"].isin(operands).to_numpy()
            col = "words_noreuse" if reuse == "none" else "words"
            out += t * float(acc[col].to_numpy()[keep].sum())
        return out


#: numeric columns of a priced training cost
COST_COLUMNS = [
    "macs", "macs_forward", "macs_backward_input", "macs_backward_weight", "other_ops", "rf_accesses",
    "sram_accesses", "dram_accesses", "weight_accesses", "activation_accesses", "energy_compute_pj",
    "energy_rf_pj", "energy_sram_pj", "energy_dram_pj", "energy_pj",
]


@dataclass
class TrainingCost:
    """The modelled cost of training one network (or branch) for a number of epochs."""

    share: int
    samples: int
    epochs: int
    batch: int
    steps: int
    cache_prefix: bool
    trainable_params: int
    training_memory_bytes: float
    macs: float
    macs_forward: float
    macs_backward_input: float
    macs_backward_weight: float
    other_ops: float
    rf_accesses: float
    sram_accesses: float
    dram_accesses: float
    weight_accesses: float
    activation_accesses: float
    energy_compute_pj: float
    energy_rf_pj: float
    energy_sram_pj: float
    energy_dram_pj: float
    energy_pj: float
    table: str

    def to_dict(self) -> dict:
        return asdict(self)


def price_ledger(ledger: Ledger, table: EnergyTable) -> dict[str, float]:
    """Price a ledger: counts, accesses per level and energy split (compute, RF, SRAM, DRAM)."""
    f = ledger.features(table)
    p = price_vector(table)
    e = f * p
    out = {
        "macs": f[0],
        "macs_forward": ledger.column_sum("macs_forward"),
        "macs_backward_input": ledger.column_sum("macs_backward_input"),
        "macs_backward_weight": ledger.column_sum("macs_backward_weight"),
        "other_ops": f[1] + f[2] + f[3],
        "rf_accesses": f[4],
        "sram_accesses": f[5],
        "dram_accesses": f[6],
        "weight_accesses": ledger.access_sum(("weight", "weight_grad", "optimizer_state"), table),
        "activation_accesses": ledger.access_sum(("activation", "activation_grad", "saved"), table)
        + ledger.extra_dram_words,
        "energy_compute_pj": float(e[:4].sum()),
        "energy_rf_pj": float(e[4]),
        "energy_sram_pj": float(e[5]),
        "energy_dram_pj": float(e[6]),
    }
    out["energy_pj"] = out["energy_compute_pj"] + out["energy_rf_pj"] + out["energy_sram_pj"] + out["energy_dram_pj"]
    return {k: float(v) for k, v in out.items()}
