"""The tiled dataflow (energymodel/dataflow.py) against figures computed by hand, and its bad-input errors.

Every expected number below is worked out in the comments (and, for the worked example, in
``docs/cost-model.md``, section 4): none is read off the code under test.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
from torch import nn

from energymodel.analysis.profile import profile
from energymodel.count.gemm import GemmShape
from energymodel.errors import TableError, UserError
from energymodel.memory.tiling import candidates, phase_traffic, rf_per_mac, tied_tilings
from energymodel.price.table import load_table, parse_table

DOC = Path(__file__).resolve().parent.parent / "docs" / "cost-model.md"

# Conv2d(4, 8, 3x3, padding 1) on 8x8, batch 2: |X| = 512, |W| = 288, |Y| = 1024, MACs = 36,864
SMALL = GemmShape(n=2, k=8, c=4, p=8, q=8, h=8, w=8, r=3, s=3, padding=(1, 1))
FREE = ("free", "dram", "free")  # activations may stay on chip, weights in DRAM


def test_rf_accesses_per_mac_by_hand() -> None:
    assert rf_per_mac(3, 1) == 6.0  # 3 · (1 + 1/1)
    assert rf_per_mac(3, 64) == 3.375  # 3 · (1 + 1/8)
    assert rf_per_mac(3, 4) == 4.5  # 3 · (1 + 1/2)
    assert rf_per_mac(3, 32) == pytest.approx(3.5303300858899, rel=1e-12)


def test_candidate_tile_sizes() -> None:
    assert candidates(8).tolist() == [1, 2, 4, 8]
    assert candidates(7).tolist() == [1, 2, 4, 7]  # 7, 4, 2, 1
    assert candidates(1).tolist() == [1]
    assert candidates(56).tolist() == [1, 2, 4, 7, 14, 28, 56]
    # perfect factorization (dataflow.tiles = "divisors"): only the candidates that divide the dimension
    assert candidates(7, divisors=True).tolist() == [1, 7]
    assert candidates(14, divisors=True).tolist() == [1, 2, 7, 14]  # 4 of 14 leaves a partial tile
    assert candidates(56, divisors=True).tolist() == [1, 2, 4, 7, 14, 28, 56]


def test_a_partial_last_tile_by_hand() -> None:
    # 1x1 conv, 3 channels in and out, 3 rows: |X| = |W| = |Y| = 9 words, everything streamed, 6 words of buffer.
    # Tiles may be partial: (k, c, p) = (1, 1, 2) holds 2 + 1 + 2 = 5 words; C innermost: X read once per K step
    # (3 x 9 = 27), W once per row tile (2 tiles, 2 and 1 rows: 2 x 9 = 18), Y written once (9): 54.
    shape = GemmShape(n=1, k=3, c=3, p=3, q=1, h=3, w=1, r=1, s=1)
    streamed = ("dram", "dram", "dram")
    got = tied_tilings(shape, "out", streamed, 6)[0]
    assert got.tile == (1, 1.0, 1.0, 2, 1) and got.innermost == "C" and got.dram == (27.0, 18.0, 9.0)
    # Tiles that divide 3 are 1 and 3; a 3-row tile needs at least 3 + 1 + 3 = 7 words. One-row tiles: W is read
    # once per row, 3 x 9 = 27: 63.
    even = tied_tilings(shape, "out", streamed, 6, divisors=True)
    assert even[0].dram_words == 63.0 and all(t.tile[3] == 1 for t in even)


def test_worked_example_by_hand() -> None:
    # 2,048 words: X (512) and Y (1,024) whole on chip together, W read once: DRAM 288, SRAM 1,536
    big = phase_traffic(SMALL, "out", FREE, 2048)
    assert big.dram == (0, 288, 0) and big.sram == (512, 0, 1024) and big.resident == (True, False, True)
    # 1,024 words: X and Y do not fit together; X whole (512) + W (288) + an output tile; Y written once
    mid = phase_traffic(SMALL, "out", FREE, 1024)
    assert mid.dram == (0, 288, 1024) and mid.sram == (512, 0, 0) and mid.resident == (True, False, False)
    # 19 words, X streamed: only 1-element tiles fit (9 + 9 + 1). V_in = 2·4·22·22 = 3,872 (edge rows read 2)
    # N innermost: X 8·3,872 = 30,976; W once 288; Y (2·4 − 1)·1,024 = 7,168
    tiny = phase_traffic(SMALL, "out", ("dram", "dram", "free"), 19)
    assert tiny.tile == (1, 1, 1, 1, 1) and tiny.innermost == "N"
    assert tiny.dram == (30_976, 288, 7_168) and tiny.dram_words == 38_432 and tiny.sram_words == 0
    # 18 words hold no tiling at all
    assert phase_traffic(SMALL, "out", FREE, 18) is None


def test_worked_example_table_in_the_doc() -> None:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"<!-- example:dataflow -->(.*?)<!-- /example -->", text, re.S)
    assert m
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in m.group(1).strip().splitlines()[2:]]

    def num(cell: str) -> int:
        return int(cell.split()[0].replace(",", ""))

    got = {num(r[0]): tuple(num(c) for c in r[3:8]) for r in rows}
    assert got == {2048: (0, 288, 0, 288, 1536), 1024: (0, 288, 1024, 1312, 512), 19: (30_976, 288, 7_168, 38_432, 0)}


def test_backward_phases_by_hand() -> None:
    # backward to the input at 2,048 words: dX (512) and dY (1,024) stay on chip, W read once
    bi = phase_traffic(SMALL, "in", FREE, 2048)
    assert bi.dram == (0, 288, 0) and bi.sram == (512, 0, 1024)
    # backward to the weights, the saved X in DRAM: X must stream (>= 512), dW be written (>= 288); with dY
    # whole (1,024), dW whole (288) and one sample's X tile (4·8·8 = 256) fit 2,048: 512 + 288 = 800
    bw = phase_traffic(SMALL, "wt", ("dram", "dram", "free"), 2048)
    assert bw.dram == (512, 288, 0) and bw.sram == (0, 0, 1024)


def test_the_two_tensors_that_fit_one_at_a_time() -> None:
    # ResNet-18/224 layer1_0.conv1 at batch 1: X = Y = 64·56·56 = 200,704 words, W = 36,864; buffer 1 MiB =
    # 262,144 words holds one of X, Y whole, not both: the other streams once, W once: 237,568 DRAM words
    shape = GemmShape(n=1, k=64, c=64, p=56, q=56, h=56, w=56, r=3, s=3, padding=(1, 1))
    t = phase_traffic(shape, "out", FREE, 262_144)
    assert t.dram_words == 200_704 + 36_864 and t.sram_words == 200_704 and sum(t.resident) == 1


def test_grouped_conv_counts_every_group() -> None:
    # depthwise 3x3 on 4 channels of 8x8, batch 1, everything streamed, a buffer that holds it all:
    # X 4·64 = 256, W 4·9 = 36, Y 256, each once
    dw = GemmShape(n=1, k=1, c=1, p=8, q=8, h=8, w=8, r=3, s=3, padding=(1, 1), groups=4)
    assert phase_traffic(dw, "out", ("dram", "dram", "dram"), 10_000).dram == (256, 36, 256)


def test_dram_words_fall_from_the_no_reuse_bound_to_the_ideal_one() -> None:
    # CIFAR ResNet layer: 16 -> 16 channels, 3x3, 32x32, batch 8; MACs = 8·16·1024·16·9 = 18,874,368
    shape = GemmShape(n=8, k=16, c=16, p=32, q=32, h=32, w=32, r=3, s=3, padding=(1, 1))
    x, w, y = 8 * 16 * 1024, 16 * 16 * 9, 8 * 16 * 1024
    streamed = ("dram", "dram", "dram")
    words = [phase_traffic(shape, "out", streamed, b).dram_words for b in (19, 64, 512, 4096, 32768, 10**7)]
    assert all(a >= b for a, b in zip(words, words[1:]))  # never more traffic with a bigger buffer
    assert words[0] <= 2 * 18_874_368 + y  # the no-reuse bound
    assert words[-1] == x + w + y  # the ideal bound
    assert words[0] > 10 * words[-1]


# -- integration with pricing -----------------------------------------------------------------------------


def _flow(**kw):
    t = load_table("45nm")
    return dataclasses.replace(t, dataflow=dataclasses.replace(t.dataflow, **kw))


def test_profile_prices_conv_layers_by_the_plan() -> None:
    # A 1x1 conv (4 -> 4, on chip or not) feeding the worked-example conv; inference batch 2. Buffer 8 KiB =
    # 2,048 words; the weight state is 20 + 288 = 308 words, on chip, leaving 1,740 words: X1 (512) and Y (1,024)
    # stay on chip together (1,536), so the 3x3 conv moves no DRAM word; the 1x1 conv reads the network input
    # (512 words) from DRAM
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 8, 3, padding=1, bias=False))
    lay = profile(model, (4, 8, 8), batch=2, table=_flow(buffer_bytes=8192)).layers
    assert lay["dram_accesses"].tolist() == [512, 0]
    # tiling = false: the per-tensor size rule (a tensor on chip when it fits alone): X 512 + Y 1,024 + W 288 SRAM
    old = profile(model, (4, 8, 8), batch=2, table=_flow(buffer_bytes=6144, tiling=False)).layers.iloc[1]
    assert (old["sram_accesses"], old["dram_accesses"]) == (512 + 1024 + 288, 0)


def test_no_tiling_fits_names_the_layer() -> None:
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1))
    with pytest.raises(UserError, match=r"^layer 0: no tiling of its forward pass fits the 16 words of buffer left"):
        profile(model, (4, 8, 8), table=_flow(buffer_bytes=64))


_TABLE = (DOC.parent.parent / "energymodel" / "price" / "tables" / "45nm.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("line,needle", [
    ("rf_words = 0", "dataflow.rf_words must be > 0"),
    ("rf_words = -4", "dataflow.rf_words must be >= 0"),
    ("rf_words = nan", "dataflow.rf_words must be finite"),
    ("rf_words = \"big\"", "dataflow.rf_words must be a number"),
    ("tiling = 1", "dataflow.tiling must be true or false"),
])
def test_bad_dataflow_entries_are_one_line_errors(line: str, needle: str) -> None:
    import tomllib

    key = line.split(" = ")[0]
    text = re.sub(rf"^{key} = .*$", line, _TABLE, flags=re.M)
    with pytest.raises(TableError) as err:
        parse_table(tomllib.loads(text), "t.toml")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_rf_words_sweep_value_must_be_positive() -> None:
    with pytest.raises(TableError, match="rf_words must be > 0"):
        load_table("45nm").with_values({"rf_words": 0})
    assert load_table("45nm").with_values({"rf_words": 64}).dataflow.rf_per_operand == (64, 64, 64)
    eyeriss = load_table("eyeriss-relative").dataflow
    assert eyeriss.rf_per_operand == (12, 224, 24) and math.isclose(eyeriss.rf_words, 12)  # the smallest
    assert (eyeriss.array_rows, eyeriss.array_cols, eyeriss.unroll) == (12, 14, ("K", "C"))


@pytest.mark.parametrize("text,needle", [
    ("rf_words = { input = 1, weight = 2 }", "dataflow.rf_words: missing entry 'output'"),
    ("rf_words = { input = 1, weight = 2, output = 0 }", "dataflow.rf_words.output must be > 0"),
    ("rf_words = { inputs = 1 }", "dataflow.rf_words: unknown entry 'inputs'"),
])
def test_bad_register_files_are_one_line_errors(text: str, needle: str) -> None:
    import tomllib

    body = re.sub(r"^rf_words = .*$", text, _TABLE, flags=re.M)
    with pytest.raises(TableError) as err:
        parse_table(tomllib.loads(body), "t.toml")
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text,needle", [
    ("rows = 0", "dataflow.array.rows must be an integer"),
    ("rows = 2.5", "dataflow.array.rows must be an integer"),
    ('unroll = ["K", "K"]', "dataflow.array.unroll must be"),
    ('unroll = ["N", "C"]', "dataflow.array.unroll must be"),
    ("depth = 4", "dataflow.array: unknown entry 'depth'"),
])
def test_bad_arrays_are_one_line_errors(text: str, needle: str) -> None:
    import tomllib

    key = text.split(" = ")[0]
    body = re.sub(rf"^{key} = .*$", text, _TABLE, flags=re.M) if key != "depth" else _TABLE + text + "\n"
    with pytest.raises(TableError) as err:
        parse_table(tomllib.loads(body), "t.toml")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_divisor_tiles_reach_the_whole_network_plan() -> None:
    """``dataflow.tiles = "divisors"``: every phase of the plan runs tiles that divide their dimensions; under
    ``"any"`` (a superset of tilings) the same network needs no more DRAM words."""
    import warnings

    from energymodel.models.zoo import build
    from energymodel.referee.zigzag_mapping import partial_tiles

    text = (Path(__file__).resolve().parent.parent / "energymodel" / "price" / "tables" / "45nm.toml").read_text()
    even_table = parse_table(__import__("tomllib").loads(text.replace('reuse = "ideal"', 'reuse = "ideal"\ntiles = '
                                                                      '"divisors"')), "divisors")
    assert even_table.dataflow.tiles == "divisors" and even_table.dataflow.array().tiles == "divisors"
    runs = {}
    for table in (load_table("45nm"), even_table):
        table = table.with_values({"buffer_bytes": 65536})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prof = profile(build("resnet18"), (3, 224, 224), batch=16, mode="training", table=table, warn=False)
        shapes = {tl.name: tl.shape for tl in prof.counts.tiled}
        partial = [r["name"] for r in prof.phases.to_dict(orient="records")
                   if partial_tiles(shapes[r["name"]], tuple(float(v) for v in r["tile"].split("x")),
                                 table.dataflow.array().lanes)]
        runs[table.dataflow.tiles] = (prof.phases["dram_words"].sum(), partial)
    assert runs["any"][1] and not runs["divisors"][1]  # 4 of 7 rows in layer4 under "any"; none under "divisors"
    assert runs["any"][0] <= runs["divisors"][0]
