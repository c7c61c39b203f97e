"""The residency plan (energymodel/memory/residency.py) on a hand-built chain with a skip connection, by hand.

Layer a (a 1x1 conv) writes ``ya``; layer b (a 3x3 conv) reads ``ya`` and writes ``yb``; layer c (an addition)
reads ``yb`` and ``ya`` (the skip) and writes ``yc``. Inference, batch 1, 4 x 8 x 8 inputs: every tensor is
4·8·8 = 256 words; the weights (4·4 + 4·4·9 = 160 words) fit every buffer below, so they stay on chip and the
activations have ``buffer/4 − 160`` words. Every figure is derived in the comments (and in ``docs/cost-model.md``,
"One residency plan for the whole network").
"""

from __future__ import annotations

import pytest
from torch import nn

from energymodel.analysis.profile import profile
from energymodel.models.layers import Add
from energymodel.price.table import load_table


class Chain(nn.Module):
    """a -> b -> c with a skip connection from a to c."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 4, 1, bias=False)
        self.b = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.c = Add()

    def forward(self, x):
        ya = self.a(x)
        return self.c(self.b(ya), ya)


def _plan(buffer_bytes: int, mode: str = "inference"):
    p = profile(Chain(), (4, 8, 8), mode=mode, table=load_table("45nm").with_values({"buffer_bytes": buffer_bytes}),
                warn=False)
    dram = dict(zip(p.layers["name"], p.layers["dram_accesses"]))
    sram = dict(zip(p.layers["name"], p.layers["sram_accesses"]))
    res = p.residency()
    fwd = res[res["phase"] == "forward"].set_index("writer")
    return dram, sram, {w: bool(fwd.at[w, "on_chip"]) for w in ("a", "b", "c")}, fwd


def test_everything_stays_on_chip_when_it_fits() -> None:
    # 1 MiB: ya, yb, yc (768 words) fit with room to spare: only the network input comes from DRAM (256 words,
    # read by a); c reads ya and yb and writes yc in SRAM: 3·256
    dram, sram, on, fwd = _plan(1 << 20)
    assert on == {"a": True, "b": True, "c": True}
    assert dram == {"a": 256, "b": 0, "c": 0}
    assert sram["c"] == 768
    assert fwd.at["a", "readers"] == "b, c"  # the skip connection reads ya too
    assert bool(fwd.set_index("tensor").loc[0, "forced"])  # the network input is in DRAM whatever the plan


def test_the_skip_tensor_holds_its_buffer_space_until_its_last_reader() -> None:
    # 2,176 bytes = 544 words, 384 for activations. ya lives from a to c: keeping it leaves 128 words during b,
    # too few for yb (256), so yb goes to DRAM — written by b (256), read by c (256); at c, ya (256) + yc (256)
    # = 512 > 384: yc goes to DRAM too (256). Total 256 (x) + 256 + 512 = 1,024 DRAM words. The alternatives cost
    # more: ya in DRAM (written once, read by b and by c: 768) and yb kept: 256 + 768 + 256 (yc) = 1,280; all in
    # DRAM: 256 + 768 + 512 = 1,536 (yc then fits alone). c reads ya from SRAM (256).
    dram, sram, on, _ = _plan(2176)
    assert on == {"a": True, "b": False, "c": False}
    assert dram == {"a": 256, "b": 256, "c": 512}
    assert sram["c"] == 256


def test_a_larger_buffer_keeps_both_and_streams_the_output() -> None:
    # 3,040 bytes = 760 words, 600 for activations: ya + yb = 512 fit during b; at c, ya + yb + yc = 768 > 600,
    # so yc goes to DRAM (256): 256 (x) + 256 = 512 DRAM words; c reads 512 words from SRAM
    dram, sram, on, _ = _plan(3040)
    assert on == {"a": True, "b": True, "c": False}
    assert dram == {"a": 256, "b": 0, "c": 256}
    assert sram["c"] == 512


def test_a_reader_of_a_dram_tensor_reads_it_from_dram() -> None:
    # every planned access follows its tensor: no access to a DRAM tensor is served from SRAM, whatever the layer
    p = profile(Chain(), (4, 8, 8), batch=4, mode="training", table=load_table("45nm").with_values(
        {"buffer_bytes": 16384}), warn=False)
    res = p.residency()
    assert set(res["phase"]) == {"forward", "backward"}
    from energymodel.memory.residency import plan

    t = p.table
    rp = plan(p.counts, word_bits=t.word_bits, buffer_bytes=t.dataflow.buffer_bytes, array=t.dataflow.array())
    acc = p.counts.accesses
    for phase in ("forward", "backward"):
        on = set(res[(res["phase"] == phase) & res["on_chip"]]["tensor"])
        rows = acc[(acc["phase"] == phase) & (acc["tensor"] >= 0) & ~acc["tiled"]
                   & acc["operand"].isin(["activation", "activation_grad"])]
        for r, tid in zip(rows.index, rows["tensor"]):
            assert rp.level[r] == ("sram" if tid in on else "dram")


@pytest.mark.parametrize("buffer_bytes", [2176, 3040, 1 << 20])
def test_the_plan_never_overfills_the_buffer(buffer_bytes: int) -> None:
    p = profile(Chain(), (4, 8, 8), table=load_table("45nm").with_values({"buffer_bytes": buffer_bytes}), warn=False)
    from energymodel.memory.residency import plan

    t = p.table
    rp = plan(p.counts, word_bits=t.word_bits, buffer_bytes=t.dataflow.buffer_bytes, array=t.dataflow.array())
    occ = rp.occupancy
    assert (occ["on_chip_words"] <= occ["buffer_left_words"]).all()
    assert occ["buffer_left_words"].iloc[0] == buffer_bytes / 4 - 160
