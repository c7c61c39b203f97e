"""Energy tables (shipped figures, validation of table files) and pricing (dataflow levels, energy by hand)."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from energymodel.analysis.profile import profile
from energymodel.errors import TableError, UserError
from energymodel.memory.levels import level_of
from energymodel.price.table import LEVELS, OPERATIONS, EnergyTable, builtin_tables, load_table, parse_table

SHIPPED = ["45nm", "45nm-cache", "45nm-fp16", "45nm-int8", "eyeriss-relative"]
TABLE_DIR = Path(__file__).resolve().parent.parent / "energymodel" / "price" / "tables"


# -- shipped tables ----------------------------------------------------------------------------------------


def test_every_shipped_table_loads() -> None:
    assert builtin_tables() == SHIPPED
    for name in SHIPPED:
        t = load_table(name)
        assert isinstance(t, EnergyTable) and t.name == name
        assert set(t.operations) == set(OPERATIONS) and set(t.memory) == set(LEVELS)
        assert all(e.pj >= 0 and e.source for e in t.operations.values())
        assert all(m.pj >= 0 and m.bits > 0 and m.source for m in t.memory.values())
        # the same file loads by path too, to the same figures
        by_path = load_table(TABLE_DIR / f"{name}.toml")
        assert by_path.operations == t.operations and by_path.memory == t.memory


def test_default_45nm_has_horowitz_and_han_figures() -> None:
    t = load_table("45nm")
    assert load_table() == t
    assert t.word_bits == 32 and t.datatype == "fp32"
    assert t.op_pj("add") == 0.9 and t.op_pj("mult") == 3.7
    assert t.op_pj("mac") == pytest.approx(0.9 + 3.7)
    assert {lv: (t.memory[lv].pj, t.memory[lv].bits) for lv in LEVELS} == {
        "rf": (1.0, 32), "sram": (5.0, 32), "dram": (640.0, 32)
    }
    assert (t.level_pj("rf"), t.level_pj("sram"), t.level_pj("dram")) == (1.0, 5.0, 640.0)
    assert t.dataflow.buffer_bytes == 1 << 20 and t.dataflow.rf_accesses_per_op == 3 and t.dataflow.reuse == "ideal"


def test_fp16_and_int8_tables() -> None:
    fp16 = load_table("45nm-fp16")
    assert (fp16.op_pj("add"), fp16.op_pj("mult"), fp16.word_bits) == (0.4, 1.1, 16)
    assert fp16.op_pj("mac") == pytest.approx(1.5)
    int8 = load_table("45nm-int8")
    assert (int8.op_pj("add"), int8.op_pj("mult"), int8.word_bits) == (0.03, 0.2, 8)
    # memory is given per 32-bit access and scales linearly with the word width
    assert fp16.level_pj("dram") == 320.0 and int8.level_pj("dram") == 160.0
    assert int8.level_pj("sram") == 1.25


# -- validation ------------------------------------------------------------------------------------------


def _base_text() -> str:
    return (TABLE_DIR / "45nm.toml").read_text(encoding="utf-8")


BAD_TABLES = [
    # (description, text transform, words the message must contain)
    ("missing op", lambda s: s.replace('mult = { pj = 3.7, source = "fp32 mult (Horowitz 2014)" }\n', ""), "operations.mult"),
    ("missing level", lambda s: s.replace("[memory.sram]", "[memory.unused]"), "unused"),
    ("missing top", lambda s: s.replace('datatype = "fp32"\n', ""), "datatype"),
    ("missing pj", lambda s: s.replace("pj = 640.0\n", ""), "memory.dram"),
    ("unknown op", lambda s: s.replace("[operations]\n", "[operations]\nfma = 1.0\n"), "fma"),
    ("unknown top", lambda s: "colour = 'blue'\n" + s, "colour"),
    ("unknown dataflow", lambda s: s.replace('reuse = "ideal"', 'reuse = "ideal"\ntile_sizes = 4'), "tile_sizes"),
    ("bad tiles", lambda s: s.replace('reuse = "ideal"', 'reuse = "ideal"\ntiles = "even"'), "dataflow.tiles"),
    ("negative op", lambda s: s.replace("add = { pj = 0.9,", "add = { pj = -0.9,"), "operations.add"),
    ("negative level", lambda s: s.replace("pj = 640.0", "pj = -640.0"), "memory.dram.pj"),
    ("nan", lambda s: s.replace("mult = { pj = 3.7,", "mult = { pj = nan,"), "operations.mult"),
    ("inf", lambda s: s.replace("pj = 5.0", "pj = inf"), "memory.sram.pj"),
    ("huge is inf", lambda s: s.replace("pj = 5.0", "pj = 1e400"), "memory.sram.pj"),
    ("string op", lambda s: s.replace("cmp = { pj = 0.9,", 'cmp = { pj = "0.9",'), "operations.cmp"),
    ("bool op", lambda s: s.replace("mac = { pj = 4.6,", "mac = { pj = true,"), "operations.mac"),
    ("bare string op", lambda s: s.replace('add = { pj = 0.9, source = "fp32 add (Horowitz 2014)" }', 'add = "0.9"'), "operations.add"),
    ("string bits", lambda s: s.replace("pj = 1.0\nbits = 32", 'pj = 1.0\nbits = "32"'), "memory.rf.bits"),
    ("zero bits", lambda s: s.replace("pj = 1.0\nbits = 32", "pj = 1.0\nbits = 0"), "memory.rf.bits"),
    ("bool word_bits", lambda s: s.replace("word_bits = 32", "word_bits = true"), "word_bits"),
    ("word_bits too wide", lambda s: s.replace("word_bits = 32", "word_bits = 128"), "word_bits"),
    ("float buffer", lambda s: s.replace("buffer_bytes = 1048576", "buffer_bytes = 1.5e6"), "buffer_bytes"),
    ("negative rf per op", lambda s: s.replace("rf_accesses_per_op = 3", "rf_accesses_per_op = -3"), "rf_accesses_per_op"),
    ("bad reuse", lambda s: s.replace('reuse = "ideal"', 'reuse = "some"'), "reuse"),
    ("mistyped name", lambda s: s.replace('name = "45nm"', "name = 45"), "name"),
    ("bool voltage", lambda s: s.replace("voltage = 0.9", "voltage = false"), "voltage"),
    ("source not string", lambda s: s.replace('source = "fp32 add (Horowitz 2014)"', "source = 3"), "operations.add.source"),
    ("not toml", lambda s: s + "\n[[[broken\n", "TOML"),
]


@pytest.mark.parametrize("desc,transform,needle", BAD_TABLES, ids=[b[0] for b in BAD_TABLES])
def test_bad_table_is_refused_with_one_line_naming_the_entry(tmp_path: Path, desc, transform, needle) -> None:
    text = transform(_base_text())
    assert text != _base_text(), f"transform for {desc!r} changed nothing"
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TableError) as info:
        load_table(path)
    msg = str(info.value)
    assert needle in msg, msg
    assert "\n" not in msg and str(path) in msg
    assert isinstance(info.value, UserError)


def test_missing_table_file_and_unknown_name() -> None:
    with pytest.raises(TableError, match="not found"):
        load_table("/nonexistent/table.toml")
    with pytest.raises(TableError, match="unknown energy table 'nope'"):
        load_table("nope")


def test_parse_table_accepts_plain_numbers_and_defaults_the_dataflow() -> None:
    data = tomllib.loads(_base_text())
    data["operations"] = {"mac": 2, "add": 1, "mult": 1.5, "cmp": 0}
    del data["dataflow"]
    t = parse_table(data, "mem")
    assert t.op_pj("mac") == 2.0 and t.op_pj("cmp") == 0.0
    assert t.dataflow.buffer_bytes == 1 << 20 and t.dataflow.reuse == "ideal"


def test_with_values_validates() -> None:
    t = load_table("45nm")
    assert t.with_values({"dram": 100}).level_pj("dram") == 100
    assert t.with_values({"buffer": 4096}).dataflow.buffer_bytes == 4096
    assert t.with_values({"bits": 16}).word_bits == 16
    with pytest.raises(TableError, match="finite"):
        t.with_values({"sram": math.nan})
    with pytest.raises(TableError, match=">= 0"):
        t.with_values({"mac": -1})
    with pytest.raises(TableError, match="unknown table key"):
        t.with_values({"colour": 1})


# -- pricing: levels, reuse, energy by hand -----------------------------------------------------------------


def _with_flow(t: EnergyTable, **flow) -> EnergyTable:
    return dataclasses.replace(t, dataflow=dataclasses.replace(t.dataflow, **flow))


def test_level_of_switches_exactly_at_the_buffer() -> None:
    sizes = np.array([255.0, 256.0, 257.0, math.inf, 0.0])
    assert level_of(sizes, 32, 1024).tolist() == ["sram", "sram", "dram", "dram", "sram"]
    assert level_of(sizes, 16, 512).tolist() == ["sram", "sram", "dram", "dram", "sram"]
    assert level_of(np.array([256.0]), 32, 1023).tolist() == ["dram"]


def test_activation_level_switches_at_the_buffer_threshold() -> None:
    # conv output = relu input = relu output = 4·8·8 = 256 words = 1024 bytes at 32 bits
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    base = _with_flow(load_table("45nm"), tiling=False)  # the per-tensor size rule (conv/linear too)
    at = profile(model, (1, 8, 8), table=base.with_values({"buffer": 1024})).layers
    below = profile(model, (1, 8, 8), table=base.with_values({"buffer": 1023})).layers
    relu_at, relu_below = at.iloc[1], below.iloc[1]
    assert (relu_at["sram_accesses"], relu_at["dram_accesses"]) == (512, 0)
    assert (relu_below["sram_accesses"], relu_below["dram_accesses"]) == (0, 512)
    # the conv: its input is the network input (always DRAM: 64 words), its 40 weights (160 bytes) fit both
    conv_at, conv_below = at.iloc[0], below.iloc[0]
    assert (conv_at["sram_accesses"], conv_at["dram_accesses"]) == (256 + 40, 64)
    assert (conv_below["sram_accesses"], conv_below["dram_accesses"]) == (40, 64 + 256)
    # weights switch at their own threshold: all 40 parameter words
    w_at = profile(model, (1, 8, 8), table=base.with_values({"buffer": 160})).layers.iloc[0]
    w_below = profile(model, (1, 8, 8), table=base.with_values({"buffer": 159})).layers.iloc[0]
    assert w_at["dram_accesses"] == 64 + 256 and w_below["dram_accesses"] == 64 + 256 + 40


def test_saved_activations_switch_on_the_whole_saved_set() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3))
    p = profile(model, (1, 8, 8), mode="training", batch=2)
    saved = p.counts.saved_words
    assert saved == 2 * (64 + 256 + 256 + 3)  # conv input, relu mask, linear input, loss probabilities
    acc = p.counts.accesses
    assert set(acc.loc[acc["operand"] == "saved", "size_words"]) == {saved}
    base = _with_flow(load_table("45nm"), tiling=False)  # the size rule for the saved set

    def saved_dram(buffer: int) -> float:
        t = base.with_values({"buffer": buffer})
        lay = profile(model, (1, 8, 8), mode="training", batch=2, table=t).layers
        return float(lay["dram_accesses"].sum())

    assert saved_dram(int(saved * 4) - 1) - saved_dram(int(saved * 4)) == 2 * saved  # written once, read once


def test_no_reuse_is_never_below_ideal_reuse() -> None:
    base = load_table("45nm")
    none = _with_flow(base, reuse="none")
    cases = [
        (nn.Linear(4, 3), (4,), 1),  # at batch 1 a bias word is read but takes part in no MAC
        (nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 1, 1, stride=2)), (3, 16, 16), 2),  # stride skips inputs
        (nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 5)),
         (3, 8, 8), 4),
    ]
    for model, shape, batch in cases:
        for mode in ("inference", "training"):
            ideal = profile(model, shape, batch=batch, mode=mode, table=base).layers
            worst = profile(model, shape, batch=batch, mode=mode, table=none).layers
            # DRAM words: no reuse is an upper bound of the tiled dataflow (its SRAM and RF words keep the per-tensor
            # conventions: no array-side re-reads, no partial sums, so they are not compared)
            assert (worst["dram_accesses"].to_numpy() >= ideal["dram_accesses"].to_numpy()).all(), (model, mode)
            assert worst["energy_pj"].sum() > ideal["energy_pj"].sum()
    # a conv under no reuse: every MAC fetches an input word and a weight word
    conv = nn.Conv2d(2, 4, 3, bias=False)
    lay = profile(conv, (2, 6, 6), table=_with_flow(base, buffer_bytes=1 << 30, reuse="none")).layers.iloc[0]
    macs = 4 * 4 * 4 * 2 * 9
    assert lay["macs"] == macs
    assert (lay["dram_accesses"], lay["sram_accesses"]) == (macs, macs + 4 * 4 * 4)  # input; weights + output


def test_energy_equals_counts_times_table_by_hand() -> None:
    # Linear(4, 3) at batch 1, inference: 12 MACs, 3 bias adds. On the 16x16 array it uses 3 rows (K) and 4 columns
    # (C): each PE does one MAC, so every reuse factor is 1. RF: input 12 reads + 12 fills, weight 12 + 12, output
    # 2·12 (read-modify-write) + 12 (partial sums out of the PEs) + (A − 3) with A = 12/4 = 3 after the 4-way
    # adder tree; plus 3 per bias add: 24 + 24 + 36 + 9 = 93. SRAM: input 12/3 = 4 reads (broadcast to 3 rows) + the
    # 4 words from DRAM passing through (the network input); weights 12 (the 15-word weight state is on chip);
    # output A + (A − 3) = 3 (it stays on chip); bias 3: 8 + 12 + 3 + 3 = 26. DRAM: the input, 4 words.
    t = load_table("45nm")
    p = profile(nn.Linear(4, 3), (4,), table=t)
    r = p.layers.iloc[0]
    assert (r["macs"], r["add_ops"]) == (12, 3)
    assert r["rf_accesses"] == 93
    assert (r["sram_accesses"], r["dram_accesses"]) == (26, 4)
    assert r["energy_compute_pj"] == pytest.approx(12 * 4.6 + 3 * 0.9)
    assert r["energy_rf_pj"] == pytest.approx(93 * 1.0)
    assert r["energy_sram_pj"] == pytest.approx(26 * 5.0)
    assert r["energy_dram_pj"] == pytest.approx(4 * 640.0)
    assert r["energy_pj"] == pytest.approx(57.9 + 93 + 130 + 2560, rel=1e-12)  # 2,840.9
    assert p.totals["energy_pj"] == pytest.approx(2840.9, rel=1e-12)
    assert r["storage_bytes"] == 15 * 4
    # other tables: same counts, their own prices (45nm-cache: RF 10, SRAM 100, DRAM 1,950 pJ per 64-bit access)
    c = load_table("45nm-cache")
    q = profile(nn.Linear(4, 3), (4,), table=c).layers.iloc[0]
    assert q["energy_pj"] == pytest.approx(12 * 4.6 + 3 * 0.9 + 93 * 10 / 2 + 26 * 100 / 2 + 4 * 1950 / 2)


def test_word_bits_scales_memory_energy_linearly() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    base = load_table("45nm").with_values({"buffer": 1 << 30})  # every level decision stays the same
    ref = profile(model, (3, 6, 6), batch=2, mode="training", table=base).totals
    for bits in (8, 16, 64):
        tot = profile(model, (3, 6, 6), batch=2, mode="training", table=base.with_values({"bits": bits})).totals
        k = bits / 32
        for lv in LEVELS:
            assert tot[f"energy_{lv}_pj"] == pytest.approx(ref[f"energy_{lv}_pj"] * k, rel=1e-12)
            assert tot[f"{lv}_accesses"] == ref[f"{lv}_accesses"]  # counts in words do not change
        assert tot["energy_compute_pj"] == pytest.approx(ref["energy_compute_pj"], rel=1e-12)
        assert tot["storage_bytes"] == pytest.approx(ref["storage_bytes"] * k)
