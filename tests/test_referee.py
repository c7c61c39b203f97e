"""The ZigZag referee's ``UNEVEN`` verdict on stored benchmark rows: a partial last tile, which ZigZag's loops
cannot say, is accepted only through the model restricted to tiles that divide their dimensions."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from energymodel.count.gemm import GemmShape
from energymodel.referee.verdict import judge_row
from energymodel.referee.zigzag_mapping import partial_tiles

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
KEYS = ("layer", "phase", "stride", "lpf", "model", "zigzag", "pj_per_word", "divisors")


def _row(name: str, layer: str, phase: str) -> dict:
    stored = json.loads((RESULTS / name).read_text())
    return {k: v for k, v in next(r for r in stored["rows"] if r["layer"] == layer and r["phase"] == phase).items()
            if k in KEYS}


def test_partial_tiles_by_hand() -> None:
    # ResNet-18's layer4_0.downsample.0 at batch 128: 1x1, stride 2, 256 -> 512 channels, 14x14 -> 7x7
    shape = GemmShape(n=128, k=512, c=256, p=7, q=7, h=14, w=14, r=1, s=1, stride=(2, 2))
    assert partial_tiles(shape, (8, 512, 256, 4, 4), (16, 16)) == ["P", "Q"]  # rows 0-3, then 4-6: partial
    assert partial_tiles(shape, (16, 512, 256, 1, 7), (16, 16)) == []
    assert partial_tiles(shape, (48, 512, 256, 7, 7), (16, 16)) == ["N"]  # 128 = 2 x 48 + 32
    # K in steps of the array: 1000 outputs on 16 lanes are 63 steps of 15.87; a tile of 4 steps leaves 3
    fc = GemmShape(n=1, k=1000, c=512, p=1, q=1, h=1, w=1, r=1, s=1)
    assert partial_tiles(fc, (1, 1000 / 63 * 4, 512, 1, 1), (16, 16)) == ["K"]
    assert partial_tiles(fc, (1, 1000 / 63 * 21, 512, 1, 1), (16, 16)) == []


def test_an_uneven_verdict_needs_zigzag_to_accept_the_model_with_dividing_tiles() -> None:
    """ResNet-18 layer4_0.downsample.0 forward, batch 128, 1 MiB: the model runs 4 of 7 rows and columns a tile;
    restricted to dividing tiles it runs 1 of 7 rows and all 7 columns with the same DRAM words, and ZigZag,
    handed that mapping, counts exactly the model's figures (its own best lies outside the model's space: SPACE)."""
    row = _row("zigzag-resnet18-training-b128-1024k.json", "blocks.layer4_0.downsample.0", "forward")
    even = row["divisors"]
    assert row["model"]["partial"] == ["P", "Q"] and even["model"]["partial"] == []
    ours = even["zigzag"]["at_model_mapping"]
    for key in ("energy_pj", "dram_words", "sram_words", "rf_words"):
        assert ours[key] == even["model"][key]  # ZigZag counts the restricted mapping as the model does
    got = judge_row(row)
    assert got["verdict"] == "UNEVEN" and "partial tile in P, Q" in got["reason"]
    assert got["divisors_verdict"] == "SPACE"
    # the total pairs the model's own figures with the ZigZag run the restricted row was judged on (its best)
    assert got["judged"]["model"]["energy_pj"] == row["model"]["energy_pj"]
    assert got["judged"]["zigzag"]["energy_pj"] == row["zigzag"]["best"]["energy_pj"]

    unchecked = copy.deepcopy(row)
    del unchecked["divisors"]  # no restricted row: nothing vouches for the partial tile
    assert judge_row(unchecked)["verdict"] == "MISS"
    dividing = copy.deepcopy(row)
    dividing["model"]["partial"] = []  # a tile ZigZag could say: its count of that mapping was needed
    assert judge_row(dividing)["verdict"] == "MISS"
    for key, factor in (("sram_words", 2.0), ("rf_words", 0.5), ("dram_words", 0.85)):
        far = copy.deepcopy(row)  # the model's own figures far from its restricted row's
        far["model"][key] *= factor
        assert judge_row(far)["verdict"] == "MISS", key
        wrong = copy.deepcopy(row)  # the restricted row miscounted: ZigZag does not accept it
        wrong["divisors"]["model"][key] *= factor
        wrong["model"][key] *= factor  # (the model's own moved with it, so only ZigZag's check can object)
        assert judge_row(wrong)["verdict"] == "MISS", key
