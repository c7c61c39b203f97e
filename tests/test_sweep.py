"""Tests for hardware energy sweeps: array arithmetic equals re-pricing, break-even, parsing, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from energymodel.analysis.breakeven import _crossings
from energymodel.analysis.grid import MAX_ROWS, parse_range, parse_vary
from energymodel.analysis.sharing import compare, price_ledger
from energymodel.analysis.sweep import (
    SWEEP_COLUMNS,
    breakeven,
    column_name,
    format_breakeven,
    prepare_sweep,
    sweep,
)
from energymodel.cli import main
from energymodel.errors import UserError
from energymodel.models.zoo import build

SHAPE = (1, 28, 28)
SETTINGS = dict(samples_new=300, samples_old=200, epochs=2, batch=100, new_classes=5)


@pytest.fixture(scope="module")
def net():
    return build("smallcnn", num_classes=5)


@pytest.fixture(scope="module")
def prepared(net):
    return prepare_sweep(net, SHAPE, **SETTINGS)


def test_every_grid_point_equals_repricing_with_with_values(prepared):
    vary = {
        "dram": np.linspace(20, 2000, 4),
        "buffer": np.geomspace(2e4, 1e8, 5),  # a 16x16 array needs a tile of 16x16 weight kernels (>= 9,216 bytes)
        "bits": [8, 16, 32],
        "rf_accesses_per_op": [1.0, 3.0],
        "mac": [0.5, 4.6],
    }
    df = prepared.evaluate(vary)
    n_sh = len(prepared.shares)
    assert len(df) == 4 * 5 * 3 * 2 * 2 * n_sh
    assert df.attrs["grid_points"] == 240
    assert list(df.columns) == ["point", "dram", "buffer_bytes", "word_bits", "rf_accesses_per_op", "mac",
                                *SWEEP_COLUMNS]
    rng = np.random.default_rng(1)
    for p in rng.choice(240, size=25, replace=False):
        rows = df[df["point"] == p]
        assert len(rows) == n_sh
        first = rows.iloc[0]
        values = {"dram": float(first["dram"]), "buffer": float(first["buffer_bytes"]), "bits": float(first["word_bits"]),
                  "rf_accesses_per_op": float(first["rf_accesses_per_op"]), "mac": float(first["mac"])}
        table = prepared.table.with_values(values)
        regular = price_ledger(prepared.ledgers[0], table)["energy_pj"]
        retraining = price_ledger(prepared.retraining, table)["energy_pj"]
        for _, r in rows.iterrows():
            priced = price_ledger(prepared.ledgers[int(r["share"])], table)
            assert r["energy_pj"] == pytest.approx(priced["energy_pj"], rel=1e-12)
            assert r["macs"] == pytest.approx(priced["macs"], rel=1e-12)
            assert r["dram_accesses"] == pytest.approx(priced["dram_accesses"], rel=1e-12)
            assert r["energy_regular_pj"] == pytest.approx(regular, rel=1e-12)
            assert r["energy_retraining_pj"] == pytest.approx(retraining, rel=1e-12)
            assert r["savings_vs_regular"] == pytest.approx(regular / priced["energy_pj"], rel=1e-12)
            assert r["dram_pj"] == pytest.approx(table.level_pj("dram"), rel=1e-12)
            assert r["dram_mac_ratio"] == pytest.approx(table.level_pj("dram") / table.op_pj("mac"), rel=1e-12)


def test_buffer_size_moves_accesses_between_sram_and_dram(prepared):
    # 16 KiB = 4,096 words: more than the smallest tile of a 3x3 conv of >= 16 channels on the 16x16 array (16·16·9
    # weights + 16·3·3 inputs + 16 outputs = 2,464 words), so every layer tiles
    df = prepared.evaluate({"buffer_bytes": [16384, 1e12]})
    tiny = df[df["buffer_bytes"] == 16384].set_index("share")
    huge = df[df["buffer_bytes"] == 10**12].set_index("share")
    assert (huge["dram_accesses"] < tiny["dram_accesses"]).all()
    assert (huge["energy_pj"] < tiny["energy_pj"]).all()


def test_a_buffer_no_tiling_fits_is_one_clear_error(prepared):
    # 0 bytes holds no tile of any conv: the error names the first layer and the parameter
    with pytest.raises(UserError, match=r"layer \S*conv\S*: no tiling .*\(dataflow\.buffer_bytes\)"):
        prepared.evaluate({"buffer_bytes": [0]})


def test_at_the_tables_own_values_the_sweep_equals_compare(net):
    df = sweep(net, SHAPE, {"dram": [640.0]}, **SETTINGS)
    cmp = compare(net, SHAPE, **SETTINGS)
    ps = cmp[cmp["strategy"] == "partial-sharing"].set_index("share")
    got = df.set_index("share")
    assert list(got.index) == list(ps.index)
    np.testing.assert_allclose(got["energy_pj"], ps["energy_pj"], rtol=1e-12)
    np.testing.assert_allclose(got["savings_vs_regular"], ps["savings_energy_vs_regular"], rtol=1e-12)
    np.testing.assert_allclose(got["savings_vs_retraining"], ps["savings_energy_vs_retraining"], rtol=1e-12)
    np.testing.assert_allclose(got["fraction"], ps["fraction"])
    assert list(got["after"]) == list(ps["after"])


def test_several_tasks_match_compare(net):
    df = sweep(net, SHAPE, {"dram": [640.0]}, share=[0, 3], tasks=3, **SETTINGS)
    cmp = compare(net, SHAPE, share=[0, 3], tasks=3, **SETTINGS)
    ps = cmp[cmp["strategy"] == "partial-sharing"]
    np.testing.assert_allclose(df["savings_vs_retraining"], ps["savings_energy_vs_retraining"], rtol=1e-12)
    with pytest.raises(UserError, match="tasks"):
        sweep(net, SHAPE, {"dram": [1.0]}, tasks=0)


def test_share_selects_sharing_points_and_regular_stays_the_baseline(net):
    df = sweep(net, SHAPE, {"dram": [100, 1000]}, share=[2, 4], **SETTINGS)
    assert sorted(df["share"].unique()) == [2, 4]
    full = sweep(net, SHAPE, {"dram": [100, 1000]}, **SETTINGS)
    a = df.set_index(["dram", "share"])["energy_regular_pj"]
    b = full[full["share"] == 0].set_index("dram")["energy_pj"]
    for (d, _), v in a.items():
        assert v == pytest.approx(b[d])


def test_word_bits_scale_memory_prices(prepared):
    df = prepared.evaluate({"bits": [8, 32]})
    by = df.groupby("word_bits")["dram_pj"].first()
    assert by[8] == pytest.approx(by[32] / 4)
    assert df["word_bits"].dtype.kind == "i"


def test_breakeven_is_exact_where_savings_cross_the_target(prepared):
    dram = np.linspace(1, 3000, 25)
    df = prepared.evaluate({"dram": dram})
    # pick a sharing point whose savings vary across the grid and a target in the middle of its range
    spans = df[df["share"] > 0].groupby("share")["savings_vs_regular"].agg(["min", "max"])
    share = int((spans["max"] - spans["min"]).idxmax())
    lo, hi = spans.loc[share]
    target = (lo + hi) / 2
    be = breakeven(df, target=target, share=[share])
    assert len(be) == 1
    r = be.iloc[0]
    assert r["key"] == "dram_mac_ratio" and r["pays_off"] in ("below", "above")
    mac = prepared.table.op_pj("mac")
    at = prepared.evaluate({"dram": [r["breakeven"] * mac]})  # 32-bit words: ratio = dram / mac
    got = float(at.loc[at["share"] == share, "savings_vs_regular"].iloc[0])
    assert got == pytest.approx(target, rel=1e-9)
    # on the side it names, savings are above the target
    side = df[(df["share"] == share)]
    above = side[side["dram_mac_ratio"] > r["breakeven"]]["savings_vs_regular"]
    below = side[side["dram_mac_ratio"] < r["breakeven"]]["savings_vs_regular"]
    if r["pays_off"] == "above":
        assert (above >= target).all() and (below < target).all()
    else:
        assert (below >= target).all() and (above < target).all()
    text = format_breakeven(be)
    assert f"share {share}" in text and "break-even dram_mac_ratio" in text


def test_breakeven_reports_always_never_and_groups_other_keys(prepared):
    df = prepared.evaluate({"dram": [100, 1000], "bits": [8, 32]})
    be = breakeven(df, target=1.0 + 1e-9)
    assert set(be["pays_off"]) <= {"always", "never", "below", "above"}
    assert "word_bits" in be.columns
    assert set(be["word_bits"]) == {8, 32}
    assert 0 not in set(be["share"])  # the baseline itself is not reported against regular
    huge = breakeven(df, target=1e6)
    assert (huge["pays_off"] == "never").all() and huge["breakeven"].isna().all()
    assert "nowhere on the grid" in format_breakeven(huge)
    by_key = breakeven(df, key="bits", target=1.0, against="retraining")
    assert (by_key["key"] == "word_bits").all() and 0 in set(by_key["share"])


@pytest.mark.parametrize("kwargs, msg", [
    ({"key": "sram"}, "not varied"),
    ({"key": "nonsense"}, "unknown break-even key"),
    ({"target": 0.0}, "positive"),
    ({"against": "other"}, "regular"),
])
def test_breakeven_errors(prepared, kwargs, msg):
    df = prepared.evaluate({"dram": [100, 1000]})
    with pytest.raises(UserError, match=msg):
        breakeven(df, **kwargs)


def test_breakeven_on_ratio_needs_dram_or_mac(prepared):
    df = prepared.evaluate({"sram": [1, 10]})
    with pytest.raises(UserError, match="dram or mac"):
        breakeven(df, key="dram_mac_ratio")
    assert breakeven(df)["key"].iloc[0] == "sram"


def test_crossings_interpolate_linearly_both_ways():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    assert _crossings(x, np.array([2.0, 1.0, -1.0, -2.0])) == [(1.5, "below")]
    assert _crossings(x, np.array([-1.0, 0.0, 0.0, 1.0])) == [(1.0, "above")]
    assert _crossings(x, np.array([1.0, -1.0, 1.0, 1.0])) == [(0.5, "below"), (1.5, "above")]
    assert _crossings(x, np.array([1.0, 2.0, 3.0, 4.0])) == []


def test_parse_range_forms():
    np.testing.assert_allclose(parse_range("100:2000:20"), np.linspace(100, 2000, 20))
    np.testing.assert_allclose(parse_range("1:1000:4log"), [1, 10, 100, 1000])
    np.testing.assert_allclose(parse_range("1:1000:4", log=True), [1, 10, 100, 1000])
    np.testing.assert_allclose(parse_range("8,16,32"), [8, 16, 32])
    np.testing.assert_allclose(parse_range("5:5:1"), [5])
    assert parse_vary("memory.dram=1:2:2")[0] == "dram"
    assert parse_vary("bits=8,16")[0] == "word_bits"
    assert column_name("buffer") == "buffer_bytes"


@pytest.mark.parametrize("text, msg", [
    ("1:2:0", "empty range"),
    ("5:2:3", "reversed range"),
    ("a:2:3", "not a number"),
    ("1:2", "START:STOP:N"),
    ("1:2:x", "not an integer"),
    ("0:5:3log", "START > 0"),
    ("1:inf:3", "finite"),
    ("", "empty"),
])
def test_parse_range_errors(text, msg):
    with pytest.raises(UserError, match=msg):
        parse_range(text)


@pytest.mark.parametrize("vary, msg", [
    ({"foo": [1]}, "unknown table key"),
    ({"dram": [1], "memory.dram": [2]}, "varied twice"),
    ({"dram": [-1]}, ">= 0"),
    ({"dram": []}, "empty"),
    ({"bits": [12.5]}, "integers 1..64"),
    ({"bits": [128]}, "integers 1..64"),
    ({}, "nothing to vary"),
])
def test_bad_vary_is_a_user_error(prepared, vary, msg):
    with pytest.raises(UserError, match=msg):
        prepared.evaluate(vary)


def test_too_large_a_grid_is_refused_before_allocating(prepared):
    n = int(math.sqrt(MAX_ROWS)) + 1
    with pytest.raises(UserError, match="too large"):
        prepared.evaluate({"dram": np.ones(n), "sram": np.ones(n)})


# -- command line ---------------------------------------------------------------------------------------

CLI = ["sweep", "smallcnn", "--classes", "5", "--samples-new", "300", "--samples-old", "200", "--epochs", "1",
       "--batch", "100"]


def test_cli_table_prints_rows_then_breakeven(capsys):
    assert main([*CLI, "--vary", "dram=100:2000:3", "--share", "0,2,5", "--target", "1.5"]) == 0
    out = capsys.readouterr().out
    table, _, be = out.partition("break-even")
    assert "savings_vs_regular" in table and "dram_mac_ratio" in table
    assert "3 grid points x 3 sharing points" in table
    rows = [ln.split() for ln in be.splitlines()[2:] if ln.strip()]
    assert sorted({r[0] for r in rows}) == ["2", "5"] and all(r[be.splitlines()[1].split().index("target")] == "1.5"
                                                             for r in rows)


def test_cli_json_is_strict_and_complete(capsys, tmp_path):
    out = tmp_path / "s.json"
    assert main([*CLI, "--vary", "dram=100:200:2", "--vary", "bits=8,32", "--format", "json", "-o", str(out)]) == 0
    obj = json.loads(out.read_text())["data"]
    assert obj["settings"]["vary"] == ["dram", "word_bits"]
    assert len(obj["rows"]) == 4 * 6
    assert {"dram", "word_bits", "k", "savings_vs_regular"} <= set(obj["rows"][0])
    assert obj["breakeven"] and "pays_off" in obj["breakeven"][0]


def test_cli_csv_and_log_grid(capsys):
    assert main([*CLI, "--vary", "dram=10:1000:3", "--log", "--share", "1", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    df = pd.read_csv(__import__("io").StringIO(captured.out))
    np.testing.assert_allclose(sorted(df["dram"].unique()), [10, 100, 1000])
    assert "break-even" in captured.err


@pytest.mark.parametrize("vary", ["foo=1:2:3", "dram=1:2:0", "dram=5:2:3", "dram=a:2:3", "dram", "bits=7.5"])
def test_cli_bad_vary_is_one_line_exit_2(capsys, vary):
    assert main([*CLI, "--vary", vary]) == 2
    err = capsys.readouterr().err
    assert err.startswith("energymodel: error:") and err.count("\n") == 1


def test_no_reuse_dataflow_is_priced_the_same_way(net):
    import dataclasses

    from energymodel.price.table import load_table

    base = load_table("45nm")
    table = dataclasses.replace(base, dataflow=dataclasses.replace(base.dataflow, reuse="none"))
    prep = prepare_sweep(net, SHAPE, table=table, share=[0, 3], **SETTINGS)
    df = prep.evaluate({"dram": [100.0, 900.0], "buffer": [1e4, 1e9]})
    for _, r in df.iterrows():
        t = table.with_values({"dram": float(r["dram"]), "buffer": float(r["buffer_bytes"])})
        assert r["energy_pj"] == pytest.approx(price_ledger(prep.ledgers[int(r["share"])], t)["energy_pj"], rel=1e-12)
    ideal = sweep(net, SHAPE, {"dram": [100.0]}, share=[3], **SETTINGS)["energy_pj"].iloc[0]
    assert df[(df["share"] == 3) & (df["dram"] == 100.0)]["energy_pj"].min() > ideal  # no reuse costs more


# -- batch as a sweep key ---------------------------------------------------------------------------------


def test_batch_is_a_sweep_key_and_each_batch_equals_compare(net):
    df = sweep(net, SHAPE, {"batch": [50, 100], "dram": [640.0]}, share=[0, 3], **SETTINGS)
    assert list(df.columns[:3]) == ["point", "batch", "dram"]
    assert df.attrs["vary"] == ["batch", "dram"] and df.attrs["grid_points"] == 2
    assert df["point"].tolist() == [0, 0, 1, 1] and df["share"].tolist() == [0, 3, 0, 3]
    for b in (50, 100):
        cmp = compare(net, SHAPE, share=[0, 3], **{**SETTINGS, "batch": b})
        ps = cmp[cmp["strategy"] == "partial-sharing"].set_index("share")
        got = df[df["batch"] == b].set_index("share")
        np.testing.assert_allclose(got["energy_pj"], ps["energy_pj"], rtol=1e-12)
        np.testing.assert_allclose(got["savings_vs_retraining"], ps["savings_energy_vs_retraining"], rtol=1e-12)


def test_batch_alone_and_bad_batches(net):
    df = sweep(net, SHAPE, {"batch": [100]}, share=[3], **SETTINGS)
    assert "dram" not in df.columns and set(df["batch"]) == {100} and df.attrs["vary"] == ["batch"]
    assert parse_vary("batch=1,16,128") == ("batch", pytest.approx(np.array([1.0, 16.0, 128.0])))
    for bad in ([0], [1.5], [float("nan")], []):
        with pytest.raises(UserError, match="batch"):
            sweep(net, SHAPE, {"batch": bad}, share=[3], **SETTINGS)
