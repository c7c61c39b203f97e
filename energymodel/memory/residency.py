"""One residency plan for the whole network: which activations and activation gradients stay on chip.

Per phase — the forward pass (calls in order) and the backward pass (calls in reverse) — and per batch, every
tensor a call writes (an activation; in the backward pass the gradient of one) is either

- **on chip**: kept in the buffer from its first write to its last read, taking its words of the buffer all that
  time; every access to it is an SRAM access; or
- **in DRAM**: written to DRAM, and every reader — a skip connection's too — reads it from DRAM.

A tensor read but not written in the phase (the network input, a feature cache, a constant) is in DRAM, as is one
read with an infinite deciding size (:class:`energymodel.count.phases.Counts`). Views (flatten, reshape) move no
data: they name their input's tensor. At every step the buffer holds the weight state (when it fits,
:mod:`energymodel.memory.levels` rule 2), the saved set (when it fits, rule 5) and the on-chip tensors live at that
step; what is left must hold a tiled layer's tiles (:mod:`energymodel.memory.tiling`, its own on-chip operands
whole) or, for any other call, nothing more.

**The plan** has the fewest DRAM words of the phase, then the fewest SRAM words (each step counted with its largest
tied tiling; the chosen plan then runs each phase's cheapest, :func:`energymodel.memory.levels.phase_words`), found
by dynamic programming over the steps: the state at a boundary is which of the tensors live across it are on chip (a handful in a chain with
skip connections; at most :data:`MAX_STATES` are kept per step, the cheapest, when a graph has many more).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

import numpy as np
import pandas as pd

from energymodel.count.phases import Counts, TiledLayer
from energymodel.errors import UserError
from energymodel.memory.levels import PHASES, PhaseWords, phase_homes, phase_words
from energymodel.memory.loopnest import Array

__all__ = ["ResidencyPlan", "plan", "MAX_STATES", "PLAN_COLUMNS"]

#: states kept per step of the search (exact below this many on-chip combinations of live tensors)
MAX_STATES = 256
#: columns of :attr:`ResidencyPlan.tensors`
PLAN_COLUMNS = ["phase", "tensor", "words", "writer", "readers", "on_chip", "first", "last", "forced"]


@dataclass
class ResidencyPlan:
    """The plan of one step (inference pass or training step) under one dataflow.

    ``level``: per access row of the counts, ``"sram"``/``"dram"`` for the rows the plan decides, ``""`` for the
    others (weights, saved activations, optimizer state keep their size rule; tiled rows are replaced by
    ``tiled``); ``tiled``: layer row -> phase -> :class:`~energymodel.memory.levels.PhaseWords`;
    ``saved_copy``: layer row -> ``(level, words)`` of a tiled layer's saved input written in the forward pass;
    ``tensors``: one row per planned tensor (:data:`PLAN_COLUMNS`); ``occupancy``: per phase and step, the
    on-chip words of live tensors and what the buffer had left for them.
    """

    level: np.ndarray
    tiled: dict[int, dict[str, PhaseWords]]
    saved_copy: dict[int, tuple[str, float]]
    tensors: pd.DataFrame
    occupancy: pd.DataFrame
    dram_words: dict[str, float] = field(default_factory=dict)
    #: the weight state / the saved set is on chip (it fits, and every layer finds a tiling in what is left)
    weights_on_chip: bool = False
    saved_on_chip: bool = False
    #: (layer row, phase) -> buffer words a tiled phase has: the buffer less the weight state, the saved set and
    #: the other tensors on chip at that step (its own on-chip operands included)
    buffer_for: dict[tuple[int, str], float] = field(default_factory=dict)


@dataclass
class _Tensor:
    words: float
    first: int
    last: int
    written: bool = False
    inf_read: bool = False
    writer: str = ""
    readers: list[str] = field(default_factory=list)

    @property
    def forced(self) -> bool:
        """In DRAM whatever the plan: never written in the phase, or read with an infinite deciding size."""
        return not self.written or self.inf_read


class _Phase:
    """The steps, tensors and accesses of one phase (``"forward"`` or ``"backward"``)."""

    def __init__(self, counts: Counts, phase: str) -> None:
        acc = counts.accesses
        operand = "activation" if phase == "forward" else "activation_grad"
        sel = (acc["phase"].to_numpy() == phase) & (acc["operand"].to_numpy() == operand)
        layers = acc["layer"].to_numpy()
        self.rows = np.flatnonzero(sel & (acc["tensor"].to_numpy() >= 0))
        self.tiled_layers = {tl.layer: tl for tl in counts.tiled
                             if (tl.phases[0] if phase == "forward" else any(tl.phases[1:]))}
        steps = sorted(set(int(x) for x in layers[self.rows]) | set(self.tiled_layers), reverse=phase == "backward")
        self.steps = steps
        pos = {s: j for j, s in enumerate(steps)}
        names = counts.layers["name"].to_numpy()
        tensor = acc["tensor"].to_numpy()
        words_col = acc["words"].to_numpy(dtype=float)
        write_col = acc["write"].to_numpy(dtype=bool)
        size_col = acc["size_words"].to_numpy(dtype=float)
        tiled_col = acc["tiled"].to_numpy(dtype=bool)
        self.tensors: dict[int, _Tensor] = {}
        self.by_step: dict[int, list[tuple[int, int, float, bool, bool]]] = {j: [] for j in range(len(steps))}
        for r in sorted(self.rows, key=lambda r: (pos[int(layers[r])], r)):
            tid = _resolve(int(tensor[r]), counts.aliases)
            j = pos[int(layers[r])]
            words, write = float(words_col[r]), bool(write_col[r])
            t = self.tensors.setdefault(tid, _Tensor(words, j, j))
            t.words = max(t.words, words)
            t.last = j
            if write and not t.written:  # its first write: the tensor starts here
                t.first, t.written, t.writer = j, True, str(names[layers[r]])
            elif not write:
                t.readers.append(str(names[layers[r]]))
            t.inf_read |= not np.isfinite(size_col[r])
            self.by_step[j].append((int(r), tid, words, write, bool(tiled_col[r])))
        self.live_at: list[list[int]] = [[] for _ in steps]  # tensors live at each step
        for tid, t in self.tensors.items():
            for j in range(t.first, t.last + 1):
                self.live_at[j].append(tid)

    def live_words(self, j: int, on: frozenset[int] | set[int]) -> float:
        """Words of the on-chip tensors live at step ``j``."""
        return sum(self.tensors[tid].words for tid in self.live_at[j] if tid in on)


def _resolve(tid: int, aliases: dict[int, int]) -> int:
    seen = 0
    while tid in aliases and seen < 10_000:
        tid, seen = aliases[tid], seen + 1
    return tid


class _Planner:
    """Step costs of one phase under a set of on-chip tensors, and the search over them."""

    def __init__(self, counts: Counts, ph: _Phase, phase: str, *, word_bits: float, buffer_bytes: float,
                 array: Array, weights_on_chip: bool, saved_on_chip: bool) -> None:
        self.counts, self.ph, self.phase, self.array = counts, ph, phase, array
        self.word_bits, self.buffer_bytes = word_bits, buffer_bytes
        self.weights_on_chip, self.saved_on_chip = weights_on_chip, saved_on_chip
        reserved = (counts.weight_state_words if weights_on_chip else 0.0) + (counts.saved_words if saved_on_chip
                                                                              else 0.0)
        self.avail = buffer_bytes / (word_bits / 8.0) - reserved
        self.cache: dict = {}
        self.homes: dict[tuple[int, str], tuple[str, str, str]] = {}

    def _roles(self, tl: TiledLayer, j: int, phase: str) -> dict[str, int]:
        """The planned tensor of each free role of a tiled phase at step ``j``."""
        rows = self.ph.by_step[j]
        reads = [tid for _, tid, _, w, _ in rows if not w]
        writes = [tid for _, tid, _, w, _ in rows if w]
        if phase == "forward":
            return {"in": reads[0], "out": writes[0]} if reads and writes else {}
        if phase == "backward_input":
            return {"in": writes[0], "out": reads[0]} if reads and writes else {}
        return {"out": reads[0]} if reads else {}

    def cost(self, j: int, on: frozenset[int]) -> tuple[float, float] | None:
        """(DRAM, SRAM) words of step ``j`` with the on-chip tensors ``on``, or ``None`` when it does not fit."""
        ph = self.ph
        live = ph.live_words(j, on)
        touched = tuple(sorted({tid for _, tid, *_ in ph.by_step[j]} & on))
        key = (j, touched, live)
        if key not in self.cache:
            self.cache[key] = self._cost(j, on, live)
        return self.cache[key][:2] if self.cache[key] is not None else None

    def _cost(self, j: int, on: frozenset[int], live: float, final: bool = False):
        layer = self.ph.steps[j]
        left = self.avail - live
        dram = sram = 0.0
        detail: dict[str, PhaseWords] = {}
        tl = self.ph.tiled_layers.get(layer)
        runs = [] if tl is None else [(p, w) for (p, w), r in zip(PHASES, tl.phases) if r
                                      and (p == "forward") == (self.phase == "forward")]
        if runs:
            for phase, written in runs:
                if (layer, phase) not in self.homes:
                    self.homes[(layer, phase)] = phase_homes(
                        self.counts, tl, phase, word_bits=self.word_bits, buffer_bytes=self.buffer_bytes,
                        weights_on_chip=self.weights_on_chip, saved_on_chip=self.saved_on_chip)
                homes = list(self.homes[(layer, phase)])
                roles = self._roles(tl, j, phase)
                for i, role in enumerate(("in", "wt", "out")):
                    if homes[i] != "free":
                        continue
                    if phase == "backward_weight" and role == "in":  # the saved input: where the saved set is
                        homes[i] = "sram" if self.saved_on_chip else "dram"
                    else:
                        homes[i] = "sram" if role in roles and roles[role] in on else "dram"
                try:
                    pw = phase_words(tl, written, tuple(homes), left, self.array, phase, by_loop_nest=final)
                except Exception:  # no tiling fits what the plan leaves: this plan is infeasible here
                    return None
                detail[phase] = pw
                own = sum(self.ph.tensors[t].words for t in {roles[r] for r in roles if roles[r] in on})
                detail[f"{phase}:buffer"] = left + own  # type: ignore[assignment]
                dram += pw.dram_words
                sram += pw.sram_words
            if self.phase == "forward" and tl.phases[2]:
                x = self._roles(tl, j, "forward").get("in")
                words = float(tl.shape.words()[0])
                if self.saved_on_chip:
                    sram += words
                elif x is not None and x in on:
                    dram, sram = dram + words, sram + words
        elif left < 0:
            return None
        for _, tid, words, _, tiled in self.ph.by_step[j]:
            if not tiled:
                if tid in on:
                    sram += words
                else:
                    dram += words
        return dram, sram, detail

    def search(self) -> set[int]:
        """The on-chip tensors of the cheapest feasible plan (dynamic programming over the steps)."""
        ph = self.ph
        born = {j: [] for j in range(len(ph.steps))}
        for tid, t in ph.tensors.items():
            if not t.forced and t.words <= self.avail:
                born[t.first].append(tid)
        states: dict[frozenset[int], tuple[tuple[float, float], tuple]] = {frozenset(): ((0.0, 0.0), ())}
        for j in range(len(ph.steps)):
            nxt: dict[frozenset[int], tuple[tuple[float, float], tuple]] = {}
            for state, (c0, path) in states.items():
                for bits in product((False, True), repeat=len(born[j])):
                    on = state | frozenset(t for t, b in zip(born[j], bits) if b)
                    c = self.cost(j, on)
                    if c is None:
                        continue
                    total = (c0[0] + c[0], c0[1] + c[1])
                    keep = frozenset(t for t in on if ph.tensors[t].last > j)
                    if keep not in nxt or total < nxt[keep][0]:
                        nxt[keep] = (total, path + tuple(t for t, b in zip(born[j], bits) if b))
            if not nxt:  # nothing fits, even with every tensor in DRAM
                raise _NoFit(j)
            states = dict(sorted(nxt.items(), key=lambda kv: kv[1][0])[:MAX_STATES])
        return set(min(states.values(), key=lambda v: v[0])[1])


def plan(counts: Counts, *, word_bits: float, buffer_bytes: float, array: Array) -> ResidencyPlan:
    """The residency plan of ``counts`` (cached on the counts per dataflow); see the module docstring.

    The weight state is on chip when it fits and the plan still finds a tiling for every layer; otherwise it is
    in DRAM (:mod:`energymodel.memory.levels` rule 2)."""
    key = (float(word_bits), float(buffer_bytes), array)
    if key in counts.plans:
        return counts.plans[key]
    wb = word_bits / 8.0
    w_fits = counts.weight_state_words * wb <= buffer_bytes
    s_fits = counts.mode == "training" and counts.saved_words * wb <= buffer_bytes
    tries = [(w, s) for w, s in ((True, True), (True, False), (False, True), (False, False))
             if (w_fits or not w) and (s_fits or not s)]
    for n, (w, s) in enumerate(tries):
        try:
            result = _plan(counts, word_bits, buffer_bytes, array, w, s)
            break
        except UserError:
            if n == len(tries) - 1:
                raise
    counts.plans[key] = result
    return result


def _plan(counts: Counts, word_bits: float, buffer_bytes: float, array: Array, weights_on_chip: bool,
          saved_on_chip: bool) -> ResidencyPlan:
    level = np.full(len(counts.accesses), "", dtype=object)
    tiled: dict[int, dict[str, PhaseWords]] = {}
    saved_copy: dict[int, tuple[str, float]] = {}
    rows, occ = [], []
    dram_total = {}
    buffer_for: dict[tuple[int, str], float] = {}
    for phase in ("forward", "backward"):
        ph = _Phase(counts, phase)
        planner = _Planner(counts, ph, phase, word_bits=word_bits, buffer_bytes=buffer_bytes, array=array,
                           weights_on_chip=weights_on_chip, saved_on_chip=saved_on_chip)
        try:
            on = frozenset(planner.search()) if ph.steps else frozenset()
        except _NoFit as exc:
            _raise_no_fit(counts, ph, planner, exc.step)
        total = 0.0
        for j, layer in enumerate(ph.steps):
            live = ph.live_words(j, on)
            res = planner._cost(j, on, live, final=True)
            if res is None:  # the forced all-DRAM plan does not fit either: name the layer
                _raise_no_fit(counts, ph, planner, j)
            total += res[0]
            for phase_name, pw in res[2].items():
                if phase_name.endswith(":buffer"):
                    buffer_for[(layer, phase_name.split(":")[0])] = float(pw)  # type: ignore[arg-type]
                else:
                    tiled.setdefault(layer, {})[phase_name] = pw
            occ.append({"phase": phase, "step": j, "layer": str(counts.layers["name"].iat[layer]),
                        "on_chip_words": live, "buffer_left_words": planner.avail})
        for r in ph.rows:
            if not counts.accesses.at[r, "tiled"]:
                tid = _resolve(int(counts.accesses.at[r, "tensor"]), counts.aliases)
                level[r] = "sram" if tid in on else "dram"
        if phase == "forward":
            for tl in counts.tiled:
                if tl.phases[2] and tl.layer in ph.tiled_layers:
                    j = ph.steps.index(tl.layer) if tl.layer in ph.steps else None
                    x = planner._roles(tl, j, "forward").get("in") if j is not None else None
                    words = float(tl.shape.words()[0])
                    if planner.saved_on_chip:
                        saved_copy[tl.layer] = ("sram", words)
                    elif x is not None and x in on:
                        saved_copy[tl.layer] = ("dram", words)
        dram_total[phase] = total
        for tid, t in ph.tensors.items():
            rows.append({"phase": phase, "tensor": tid, "words": t.words, "writer": t.writer,
                         "readers": ", ".join(dict.fromkeys(t.readers)), "on_chip": tid in on,
                         "first": ph.steps[t.first], "last": ph.steps[t.last], "forced": t.forced})
    return ResidencyPlan(level, tiled, saved_copy, pd.DataFrame(rows, columns=PLAN_COLUMNS), pd.DataFrame(occ),
                         dram_total, weights_on_chip, saved_on_chip, buffer_for)


class _NoFit(Exception):
    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.step = step


def _raise_no_fit(counts: Counts, ph: _Phase, planner: _Planner, j: int) -> None:
    layer = ph.steps[j]
    tl = ph.tiled_layers.get(layer)
    name = counts.layers["name"].iat[layer]
    if tl is not None:
        for (phase, written), runs in zip(PHASES, tl.phases):
            if runs and (phase == "forward") == (planner.phase == "forward"):
                homes = phase_homes(counts, tl, phase, word_bits=planner.word_bits, buffer_bytes=planner.buffer_bytes,
                                    weights_on_chip=planner.weights_on_chip, saved_on_chip=planner.saved_on_chip)
                homes = tuple("dram" if h == "free" else h for h in homes)
                phase_words(tl, written, homes, planner.avail, planner.array, phase)  # raises, naming the layer
    raise UserError(f"layer {name}: its {planner.phase} pass does not fit a buffer of {planner.buffer_bytes:g} "
                    f"bytes (dataflow.buffer_bytes)")
