"""Hardware energy sweeps: how the savings of partial sharing change with the energy table.

A sweep varies table entries (any key of :data:`~energymodel.price.table.SWEEP_KEYS`: ``mac``, ``add``, ``mult``,
``cmp``, ``rf``, ``sram``, ``dram``, ``buffer_bytes``, ``rf_accesses_per_op``, ``rf_words``, ``word_bits``) over
grids and takes the full cartesian product of them. At every grid point and every sharing point it reports the
energy of learning the new task by clone-and-branch, the energy of regular incremental learning
(sharing point 0) and of full retraining *at the same grid point*, and the savings (baseline / strategy).

**How it is fast.** The networks are traced and counted once per strategy (one unpriced
:class:`~energymodel.analysis.sharing.Ledger` each); every grid point is then array arithmetic:
``energy = features · prices`` (:mod:`energymodel.price`). Prices are a ``(P, 7)`` array (one row per grid
point). Features depend only on the dataflow entries ``(word_bits, buffer_bytes, rf_accesses_per_op, rf_words)``:
grid points are grouped by their unique values of those, and each group's features are read off a
pre-sorted *access spectrum* of the ledger (every access with the size that decides its level, sorted by
size, with prefix sums), so a group costs one binary search rather than a recount. The result equals
``price_ledger(ledger, table.with_values(...))`` at every grid point.

**Break-even.** :func:`breakeven` finds, by interpolation on the grid, the value of a varied key (by
default the DRAM/MAC energy ratio) at which a sharing point's savings cross a target (default 1.0x:
where sharing stops paying off against regular incremental learning). Between grid points the energy
difference ``E_baseline - target · E_strategy`` is interpolated linearly, which is exact when the key is
one price (energy is linear in every price).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from torch import nn

from energymodel.analysis.breakeven import SETTING_KEYS, breakeven, column_name, format_breakeven  # noqa: F401 - re-exported
from energymodel.analysis.grid import MAX_ROWS, _batches, _normalise_vary, parse_range, parse_vary
from energymodel.analysis.points import SharingPoint, sharing_points
from energymodel.analysis.profile import as_table
from energymodel.analysis.sharing import StrategyLedgers, strategy_ledgers
from energymodel.errors import UserError
from energymodel.memory.levels import rf_accesses
from energymodel.memory.words import uses_plan
from energymodel.models.inputs import describe
from energymodel.price.ledger import Ledger
from energymodel.price.pricing import FEATURES
from energymodel.price.table import LEVELS, OPERATIONS, EnergyTable

__all__ = ["SETTING_KEYS", "sweep", "prepare_sweep", "SweepLedgers", "breakeven", "format_breakeven", "parse_range", "parse_vary", "column_name", "SWEEP_COLUMNS", "MAX_ROWS"]


#: result columns after the varied keys
SWEEP_COLUMNS = [
    "share", "after", "fraction", "energy_pj", "energy_regular_pj", "energy_retraining_pj", "savings_vs_regular",
    "savings_vs_retraining", "macs", "dram_accesses", "mac_pj", "dram_pj", "dram_mac_ratio",
]

_DATAFLOW_KEYS = ("word_bits", "dataflow.buffer_bytes", "dataflow.rf_accesses_per_op", "dataflow.rf_words")




# -- parsing -------------------------------------------------------------------------------------------










# -- the access spectrum of a ledger ----------------------------------------------------------------


@dataclass
class _Spectrum:
    """A ledger flattened for fast re-pricing.

    Without the tiled dataflow (``tiling = false`` or ``reuse = "none"``) every access keeps the size rule: the
    spectrum holds every word access with the size that decides its level, sorted, with prefix sums, so a buffer
    size costs one binary search. With it, activations follow the residency plan and conv/linear phases their
    tiling and loop nest, which depend on the buffer, the word width and the register files: the ledger's
    features are computed once per distinct ``(word_bits, buffer_bytes, rf_accesses_per_op, rf_words)``
    (:meth:`energymodel.price.ledger.Ledger.features`; plans and tile searches are cached).
    """

    ops: np.ndarray  # (4,) mac, add, mult, cmp
    sizes: np.ndarray  # sorted sizes (words) that decide SRAM vs DRAM
    below: np.ndarray  # below[i] = words of the first i sizes
    above: np.ndarray  # above[i] = words of sizes i.. (to the end)
    extra_dram: float
    ledger: Ledger | None = None  # set when the tiled dataflow prices the ledger
    table: EnergyTable | None = None

    @classmethod
    def of(cls, ledger: Ledger, table: EnergyTable) -> _Spectrum:
        base = ledger.features(table)  # operations do not depend on the dataflow
        flow = table.dataflow
        if uses_plan(None, tiling=flow.tiling, reuse=flow.reuse):
            empty = np.zeros(0)
            return cls(base[:4].copy(), empty, np.zeros(1), np.zeros(1), float(ledger.extra_dram_words), ledger, table)
        col = "words_noreuse" if flow.reuse == "none" else "words"
        sizes, words = [], []
        for counts, times, mask in ledger.terms:
            acc = counts.accesses
            if not len(acc):
                continue
            keep = mask[acc["layer"].to_numpy()]
            sizes.append(acc["size_words"].to_numpy(dtype=float)[keep])
            words.append(acc[col].to_numpy(dtype=float)[keep] * times)
        s = np.concatenate(sizes) if sizes else np.zeros(0)
        w = np.concatenate(words) if words else np.zeros(0)
        order = np.argsort(s, kind="stable")
        s, w = s[order], w[order]
        below = np.concatenate([[0.0], np.cumsum(w)])
        above = np.concatenate([np.cumsum(w[::-1])[::-1], [0.0]])
        return cls(base[:4].copy(), s, below, above, float(ledger.extra_dram_words), None, table)

    def features(self, word_bits: np.ndarray, buffer_bytes: np.ndarray, rf_per_op: np.ndarray,
                 rf_words: np.ndarray) -> np.ndarray:
        """``(G, 7)`` features for ``G`` dataflow settings (same rules as :func:`energymodel.price.pricing.feature_vector`);
        ``rf_words`` NaN: the table's own register files."""
        g = len(word_bits)
        out = np.empty((g, len(FEATURES)))
        if self.ledger is not None and self.table is not None:
            keys = np.stack([word_bits, buffer_bytes, rf_per_op, rf_words], axis=1)
            uniq, inv = np.unique(keys, axis=0, return_inverse=True)
            rows = []
            for wb, bb, rpo, rfw in uniq:
                values = {"word_bits": wb, "buffer_bytes": bb, "rf_accesses_per_op": rpo}
                if np.isfinite(rfw):
                    values["rf_words"] = rfw
                rows.append(self.ledger.features(self.table.with_values(values)))
            return np.array(rows).reshape(-1, len(FEATURES))[inv.reshape(-1)]
        out[:, :4] = self.ops
        rf_min = np.where(np.isfinite(rf_words), rf_words, self.table.dataflow.rf_words if self.table else 32.0)
        out[:, 4] = rf_accesses(self.ops[0], self.ops[1:].sum(), rf_per_op, rf_min)
        idx = np.empty(g, dtype=np.int64)
        for wb in np.unique(word_bits):
            sel = word_bits == wb
            scaled = self.sizes * (wb / 8.0)  # size · word_bytes <= buffer  ->  SRAM
            idx[sel] = np.searchsorted(scaled, buffer_bytes[sel], side="right")
        out[:, 5] = self.below[idx]
        out[:, 6] = self.above[idx] + self.extra_dram
        return out


# -- ledgers, built once ----------------------------------------------------------------------------


@dataclass
class SweepLedgers:
    """The unpriced ledgers of every strategy of a sweep, built once; :meth:`evaluate` prices grids."""

    table: EnergyTable
    points: list[SharingPoint]
    shares: list[int]
    ledgers: dict[int, Ledger]
    retraining: Ledger
    settings: dict = field(default_factory=dict)
    _spectra: dict = field(default_factory=dict, repr=False)

    def _spectrum(self, which: int | str) -> _Spectrum:
        if which not in self._spectra:
            ledger = self.retraining if which == "retraining" else self.ledgers[which]
            self._spectra[which] = _Spectrum.of(ledger, self.table)
        return self._spectra[which]

    def evaluate(self, vary: Mapping[str, Iterable[float] | float]) -> pd.DataFrame:
        """One row per grid point (cartesian product of ``vary``) x sharing point; see :func:`sweep`."""
        grid = _normalise_vary(vary)
        sizes = [len(v) for v in grid.values()]
        n_points = math.prod(sizes)
        n_rows = n_points * len(self.shares)
        if n_rows > MAX_ROWS:
            raise UserError(f"sweep too large: {n_points} grid points x {len(self.shares)} sharing points "
                            f"= {n_rows} rows (at most {MAX_ROWS})")
        mesh = np.meshgrid(*grid.values(), indexing="ij") if len(grid) > 1 else list(grid.values())
        cols = {k: m.reshape(-1) for k, m in zip(grid, mesh)}
        tab = self.table

        def value(key: str) -> np.ndarray:
            if key in cols:
                return cols[key]
            if key == "dataflow.rf_words":  # not varied: the table's own register files (NaN)
                return np.full(n_points, np.nan)
            base = float(tab.word_bits) if key == "word_bits" else tab.get(key)
            return np.full(n_points, base)

        word_bits = value("word_bits")
        prices = np.empty((n_points, len(FEATURES)))
        for i, op in enumerate(OPERATIONS):
            prices[:, i] = value(f"operations.{op}")
        for j, lvl in enumerate(LEVELS):
            prices[:, len(OPERATIONS) + j] = value(f"memory.{lvl}") * word_bits / tab.memory[lvl].bits

        # group grid points by their dataflow (what the features depend on): the groups are the
        # sub-grid of the varied dataflow keys; a point's group follows from its grid index
        flow_axes = [i for i, k in enumerate(grid) if k in _DATAFLOW_KEYS]
        if flow_axes:
            sub = np.meshgrid(*[list(grid.values())[i] for i in flow_axes], indexing="ij")
            sub_cols = {list(grid)[i]: m.reshape(-1) for i, m in zip(flow_axes, sub)}
            n_groups = sub[0].size
            flow = [sub_cols[k] if k in sub_cols else np.full(n_groups, value(k)[0]) for k in _DATAFLOW_KEYS]
            idx = np.unravel_index(np.arange(n_points), sizes)
            group = np.ravel_multi_index([idx[i] for i in flow_axes], [sizes[i] for i in flow_axes])
        else:
            flow = [value(k)[:1] for k in _DATAFLOW_KEYS]
            group = None

        def energy_and_features(which) -> tuple[np.ndarray, np.ndarray]:
            feats = self._spectrum(which).features(*flow)  # (G, 7)
            if group is None:
                # einsum, not BLAS: a (P x 7) @ (7,) product is memory-bound and BLAS threads only add overhead
                return np.einsum("pf,f->p", prices, feats[0]), np.broadcast_to(feats[0], (n_points, len(FEATURES)))
            f = feats[group]
            return np.einsum("pf,pf->p", f, prices), f

        e_regular, _ = energy_and_features(0)
        e_retrain, _ = energy_and_features("retraining")
        pts = {p.index: p for p in self.points}
        n_sh = len(self.shares)
        energy = np.empty((n_points, n_sh))
        macs = np.empty((n_points, n_sh))
        dram = np.empty((n_points, n_sh))
        for j, k in enumerate(self.shares):
            e, f = energy_and_features(k)
            energy[:, j] = e
            macs[:, j] = f[:, 0]
            dram[:, j] = f[:, 6]

        def per_row(a: np.ndarray) -> np.ndarray:  # one value per grid point -> one per row
            return np.broadcast_to(a[:, None], (n_points, n_sh)).reshape(-1)

        def per_share(a) -> np.ndarray:  # one value per sharing point -> one per row
            return np.broadcast_to(np.asarray(a)[None, :], (n_points, n_sh)).reshape(-1)

        with np.errstate(divide="ignore", invalid="ignore"):
            sav_reg = e_regular[:, None] / energy
            sav_ret = e_retrain[:, None] / energy
            mac_pj = prices[:, 0]
            dram_pj = prices[:, 6]
            ratio = np.where(mac_pj > 0, dram_pj / np.where(mac_pj > 0, mac_pj, 1.0), np.inf)
        afters = [pts[k].after for k in self.shares]
        data: dict[str, object] = {"point": per_row(np.arange(n_points))}
        for k, v in cols.items():
            if k == "word_bits":
                v = v.astype(int)
            elif k == "dataflow.buffer_bytes":
                v = v.astype(np.int64)
            data[column_name(k)] = per_row(v)
        data.update({
            "share": per_share(self.shares),
            "after": pd.Categorical.from_codes(per_share(np.arange(n_sh)), categories=pd.Index(afters, dtype=object))
            if len(set(afters)) == len(afters) else per_share(np.array(afters, dtype=object)),
            "fraction": per_share([pts[k].fraction for k in self.shares]),
            "energy_pj": energy.reshape(-1),
            "energy_regular_pj": per_row(e_regular),
            "energy_retraining_pj": per_row(e_retrain),
            "savings_vs_regular": sav_reg.reshape(-1),
            "savings_vs_retraining": sav_ret.reshape(-1),
            "macs": macs.reshape(-1),
            "dram_accesses": dram.reshape(-1),
            "mac_pj": per_row(mac_pj),
            "dram_pj": per_row(dram_pj),
            "dram_mac_ratio": per_row(ratio),
        })
        df = pd.DataFrame(data)
        df.attrs.update(self.settings)
        df.attrs["vary"] = [column_name(k) for k in cols]
        df.attrs["grid_points"] = n_points
        return df


def prepare_sweep(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    share: Iterable[float | int] | None = None,
    table: str | EnergyTable = "45nm",
    samples_new: int = 5000,
    samples_old: int = 5000,
    epochs: int = 10,
    batch: int = 128,
    optimizer: str = "sgd",
    new_classes: int | None = None,
    old_classes: int | None = None,
    cache_prefix: bool = False,
    tasks: int = 1,
    ledgers: StrategyLedgers | None = None,
) -> SweepLedgers:
    """Trace and count every strategy once: clone-and-branch at each requested sharing point (and at 0,
    regular incremental learning) and full retraining, with the same settings as
    :func:`energymodel.analysis.sharing.compare` (``tasks`` new tasks: one branch per task; full retraining after every
    task on all data so far). ``ledgers``
    (from :func:`energymodel.analysis.sharing.strategy_ledgers` with the same settings) skips building them again."""
    tab = as_table(table)
    led = ledgers or strategy_ledgers(
        model, input_shape, share=share, new_classes=new_classes, old_classes=old_classes, samples_new=samples_new,
        samples_old=samples_old, epochs=epochs, batch=batch, optimizer=optimizer, cache_prefix=cache_prefix,
        tasks=tasks, memory=False,
    )
    points = sharing_points(led.net)
    shares = led.requested
    ledgers_by_k = {k: ledger for k, (ledger, _) in led.branch.items()}
    retraining = led.retraining[0]
    new_classes, old_classes = led.new_classes, led.old_classes
    settings = {
        "model": type(model).__name__, "input_shape": describe(input_shape), "table": tab.name,
        "samples_new": samples_new, "samples_old": samples_old, "epochs": epochs, "batch": batch,
        "optimizer": optimizer, "new_classes": new_classes, "old_classes": old_classes, "cache_prefix": cache_prefix,
        "tasks": tasks,
    }
    return SweepLedgers(tab, points, shares, ledgers_by_k, retraining, settings)


def sweep(
    model: nn.Module,
    input_shape: Sequence[int],
    vary: Mapping[str, Iterable[float] | float],
    *,
    share: Iterable[float | int] | None = None,
    table: str | EnergyTable = "45nm",
    samples_new: int = 5000,
    samples_old: int = 5000,
    epochs: int = 10,
    batch: int = 128,
    optimizer: str = "sgd",
    new_classes: int | None = None,
    old_classes: int | None = None,
    cache_prefix: bool = False,
    tasks: int = 1,
) -> pd.DataFrame:
    """Energy and savings of clone-and-branch at every grid point x sharing point.

    ``vary`` maps table keys (``"dram"``, ``"memory.dram"``, ``"buffer_bytes"``, ``"bits"`` ...) to the
    values each takes; the grid is their full cartesian product (other entries keep ``table``'s values).
    ``"batch"`` may be varied too (it overrides ``batch``): every batch size is traced and counted once
    (its own ledgers), the table keys are then array arithmetic as usual; the result has a ``batch``
    column after ``point``.
    ``share`` picks sharing points (indices or fractions; default all). Returns a DataFrame with one row
    per grid point x sharing point: ``point`` (grid index), the varied keys (columns named by
    :func:`column_name`), then :data:`SWEEP_COLUMNS`: ``energy_regular_pj`` / ``energy_retraining_pj``
    are regular incremental learning (share 0) and full retraining at the same grid point; ``savings_*``
    are baseline / strategy; ``dram_mac_ratio`` = pJ per DRAM word / pJ per MAC.
    """
    table_vary = {k: v for k, v in vary.items() if k.strip() not in SETTING_KEYS}
    batch_values = next((v for k, v in vary.items() if k.strip() == "batch"), None)
    kw = dict(share=share, table=table, samples_new=samples_new, samples_old=samples_old, epochs=epochs,
              optimizer=optimizer, new_classes=new_classes, old_classes=old_classes, cache_prefix=cache_prefix,
              tasks=tasks)
    if batch_values is None:
        return prepare_sweep(model, input_shape, batch=batch, **kw).evaluate(table_vary)
    frames = []
    n_points = 0
    for b in _batches(batch_values):
        prepared = prepare_sweep(model, input_shape, batch=b, **kw)
        # with only the batch varied, evaluate the table's own DRAM energy (one grid point) and drop it
        own = {"dram": [prepared.table.get("dram")]} if not table_vary else table_vary
        df = prepared.evaluate(own)
        if not table_vary:
            df = df.drop(columns=["dram"])
        df.insert(1, "batch", b)
        df["point"] += n_points
        n_points += int(df.attrs["grid_points"])
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.attrs.update(frames[0].attrs)
    out.attrs["vary"] = ["batch", *[column_name(k) for k in table_vary]]
    out.attrs["grid_points"] = n_points
    out.attrs["batch"] = [int(b) for b in _batches(batch_values)]
    return out
