"""The loop nest inside the array (energymodel/memory/loopnest.py): SRAM re-reads and RF refills by hand.

Every expected number is worked out in the comments and in ``docs/cost-model.md`` ("Worked example: the loop
nest at two buffer sizes"): none is read off the code under test.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import pytest

from energymodel.count.gemm import GemmShape
from energymodel.count.phases import TiledLayer
from energymodel.memory.levels import phase_words
from energymodel.memory.loopnest import Array, parity_classes, touched, unrolled

DOC = Path(__file__).resolve().parent.parent / "docs" / "cost-model.md"

# Conv2d(2, 2, kernel (3, 1), padding (1, 0), no bias) on a 2 x 8 x 1 input, batch 1: MACs = 2·2·8·3 = 96,
# |X| = 16, |W| = 12, |Y| = 16. A 2x2 array (rows: K, columns: C), so u_K = u_C = 2 and each PE has one output
# and one input channel; register files of 4 (input), 3 (weight) and 4 (output) words. The PE's loops longer
# than 1 are P = 8 and R = 3: two orders, (P, R) and (R, P).
SHAPE = GemmShape(n=1, k=2, c=2, p=8, q=1, h=8, w=1, r=3, s=1, padding=(1, 0))
ARRAY = Array(2, 2, ("K", "C"), (4.0, 3.0, 4.0))
LAYER = TiledLayer(0, "example", SHAPE, (True, False, False), 0, 0)
HOMES = ("dram", "dram", "free")  # X is the network input, W in DRAM, Y may stay on chip


def test_unrolled_touched_and_parity_classes_by_hand() -> None:
    assert unrolled(64, 16) == (16.0, 4)  # 16 rows used, 4 channels each
    assert unrolled(10, 16) == (10.0, 1)  # the classifier: 10 rows used
    assert unrolled(3, 16) == (3.0, 1)
    assert unrolled(100, 16) == (100 / 7, 7)  # ⌈100/16⌉ = 7 steps of 14.3 rows
    assert int(touched(4, 3, 1, 1)) == 6  # 3 + 2 halo rows
    assert int(touched(4, 1, 2, 1)) == 4  # a 1x1 stride-2 conv reads every other row: 4, not 7
    assert int(touched(4, 3, 2, 1)) == 9  # 3x3 stride 2: (4−1)·2 + 3
    # 3x3 stride 2 padding 1 over 32 rows: even dX rows take tap 1, odd rows taps 0 and 2
    assert parity_classes(16, 32, 3, 2, 1) == [(16, 1), (16, 2)]
    assert parity_classes(16, 32, 1, 2, 0) == [(16, 1), (16, 0)]  # 1x1 stride 2: odd rows get no gradient


def test_worked_example_at_two_buffer_sizes() -> None:
    # 64 words: Y whole (16) + an X tile of both channels and all 8 rows (16) + W (12) = 44 fit; DRAM: X once (16),
    # W once (12), Y none. Order (R, P): input RF holds R = 3 and P = 2 (rows (2−1) + 3 = 4 words): F_in = 6/4
    # = 1.5; weight RF holds R (3 words), P taken in free: F_wt = 24/3 = 8; output RF: R free, P split to 4: F_out
    # = 12/4 = 3. SRAM on the array side: in 96/(1.5·2) = 32, wt 96/8 = 12, out A = 96/(3·2) = 16 → 2·16 − 16 =
    # 16; plus the DRAM words through the SRAM: (32 + 16, 12 + 12, 16) = (48, 24, 16). RF: in 96 + 96/1.5 = 160,
    # wt 96 + 96/8 = 108, out 2·96 + 96/3 + 0 = 224. (Order (P, R): F_in = 1, F_out = 1: SRAM 48 + 12 + 80 = 140.)
    big = phase_words(LAYER, "out", HOMES, 64, ARRAY, "forward")
    assert big.tiling.tile == (1, 2, 2, 8, 1) and big.resident == (False, False, True)
    assert big.dram == (16, 12, 0) and big.array.order == ("R", "P")
    assert big.array.reuse == (1.5, 8, 3) and big.array.stationary == (1, 1, 1)
    assert big.sram == (48, 24, 16) and big.sram_words == 88
    assert big.rf == (160, 108, 224) and big.rf_words == 492
    # 24 words: Y cannot stay (16 + W 12 > 24); tiles of 2 rows: X 2·4 + W 12 + Y 2·2 = 24. DRAM: X reads rows
    # 3 + 4 + 4 + 3 = 14 per channel (28), W once with N innermost (12), Y once (16) = 56. The PE's P = 2: in
    # every order each RF holds its whole tile: F_in = 6/4 = 1.5, F_out = 6/2 = 3, F_wt = 6/3 = 2 times the 4
    # tiles it stays for (N innermost) = 8; SRAM ties (array side 32 + 12 + 16), so the fewer RF words decide:
    # (P, R) reads W once per 2 MACs (st_wt = 2): wt RF 48 + 12 = 60 against 96 + 12.
    small = phase_words(LAYER, "out", HOMES, 24, ARRAY, "forward")
    assert small.tiling.tile == (1, 2, 2, 2, 1) and small.tiling.innermost == "N" and not any(small.resident)
    assert small.dram == (28, 12, 16) and small.dram_words == 56
    assert small.array.order == ("P", "R") and small.array.stationary == (1, 2, 1)
    assert small.sram == (60, 24, 32) and small.sram_words == 116
    assert small.rf == (160, 60, 224) and small.rf_words == 444


def test_worked_example_table_in_the_doc() -> None:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"<!-- example:loopnest -->(.*?)<!-- /example -->", text, re.S)
    assert m
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in m.group(1).strip().splitlines()[2:]]
    got = {int(r[0].split()[0]): (r[1], *(int(c.replace(",", "")) for c in r[2:5])) for r in rows}
    assert got == {64: ("R, P", 28, 88, 492), 24: ("P, R", 56, 116, 444)}


def test_a_multiple_of_the_array_is_the_smallest_tile() -> None:
    # on the 2x2 array a tile holds both output and both input channels: W tile 2·2·3 = 12, X ≥ 2·3 rows, Y ≥ 2:
    # 20 words; 19 hold none
    assert phase_words(LAYER, "out", HOMES, 20, ARRAY, "forward").tiling.tile == (1, 2, 2, 1, 1)
    with pytest.raises(Exception, match="no tiling of its forward pass fits the 19 words"):
        phase_words(LAYER, "out", HOMES, 19, ARRAY, "forward")


def test_a_reduction_free_output_is_written_once_per_mac() -> None:
    # Linear(4, 2) backward to the weights at batch 1 on a 1x1 array: each dW word is one MAC (no reduction), so
    # the output RF is written once per MAC and never read: RF_out = 8 + 8/1 + (8 − 8) = 16
    shape = GemmShape(n=1, k=2, c=4, p=1, q=1, h=1, w=1)
    layer = TiledLayer(0, "fc", shape, (True, False, True), 0, 0)
    pw = phase_words(layer, "wt", ("dram", "dram", "dram"), 1000, Array(1, 1, ("K", "C"), (32.0, 32.0, 32.0)),
                     "backward_weight")
    assert pw.rf[1] == 16


def _fits(fp, role: str, cap: float, ext: list[int]) -> bool:
    import numpy as np

    return float(fp(role, np.array(ext, dtype=float))) <= cap


def _walk(ext: list[int], order: list[int], fits) -> tuple[list[int], bool]:
    """One order walked loop by loop, as the module docstring states the rule: take each loop while the
    footprint fits, split the first that does not to its largest divisor that fits, stop there."""
    cur = [1] * 7
    for d in order:
        trial = cur.copy()
        trial[d] = ext[d]
        if fits(trial):
            cur = trial
            continue
        for f in range(ext[d] - 1, 0, -1):
            if ext[d] % f == 0 and fits(cur[:d] + [f] + cur[d + 1:]):
                cur[d] = f
                break
        return cur, False
    return cur, True


def test_rf_prefixes_of_every_order_equal_a_walk_of_that_order() -> None:
    """The prefixes are worked out per set of loops and gathered for all n! orders; each must equal the
    plain walk of its own order, on random nests with halos, strides and every RF size from 1 to 64."""
    import numpy as np

    from energymodel.memory.loopnest import _Footprint, _perms, _prefixes

    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(60):
        ext = [int(rng.choice([1, 2, 3, 4, 6, 7, 8, 12])) for _ in range(5)] + [int(rng.choice([1, 3])),
                                                                                   int(rng.choice([1, 3]))]
        stride = int(rng.choice([1, 2]))
        fp = _Footprint((stride, 1, 64, stride, 1, 64))
        loops = [d for d in range(7) if ext[d] > 1]
        perms = _perms(len(loops))
        for role in ("in", "wt", "out"):
            cap = float(rng.integers(1, 65))
            cur, whole = _prefixes(np.array(ext, dtype=float), loops, perms, fp, role, cap)
            for i in rng.choice(len(perms), size=min(len(perms), 40), replace=False):
                order = [loops[j] for j in perms[i]]
                want, want_whole = _walk(ext, order, partial(_fits, fp, role, cap))
                assert [int(x) for x in cur[i]] == want and bool(whole[i]) == want_whole, (ext, order, role, cap)
                checked += 1
    assert checked > 5000


def test_the_tie_break_keeps_the_dram_words_and_never_costs_more_on_chip() -> None:
    """Among tilings with equally few DRAM words the one whose loop nest costs least on chip runs: its DRAM words
    and words kept whole equal the largest tile's, its ``w · SRAM + RF`` words are no more, and on some layer
    strictly less (section 6 (b) of the doc counts one such choice by hand)."""
    import itertools

    from energymodel.memory.tiling import tied_tilings

    array = Array(16, 16)
    strict = 0
    for (k, c, hw, r, stride), (homes, written) in itertools.product(
            [(64, 64, 32, 3, 1), (128, 64, 16, 3, 2), (256, 128, 7, 1, 1), (64, 16, 14, 3, 1)],
            [(("sram", "dram", "sram"), "out"), (("dram", "dram", "free"), "out"), (("free", "dram", "free"), "in"),
             (("dram", "dram", "free"), "wt")]):
        p = (hw + 2 * (r // 2) - r) // stride + 1
        shape = GemmShape(n=1, k=k, c=c, p=p, q=p, r=r, s=r, h=hw, w=hw, stride=(stride, stride),
                          padding=(r // 2, r // 2))
        tl = TiledLayer(0, "t", shape, (True, True, True), 0, 0)
        run = phase_words(tl, written, homes, 65_536, array)
        largest = phase_words(tl, written, homes, 65_536, array, by_loop_nest=False)
        assert largest.tiling == tied_tilings(shape, written, homes, 65_536.0, array.lanes)[0]
        assert run.dram == largest.dram and run.tiling.resident == largest.tiling.resident
        cost = [array.sram_weight * sum(w.array.sram) + sum(w.array.rf) for w in (run, largest)]
        assert cost[0] <= cost[1]
        strict += cost[0] < cost[1] * (1 - 1e-9)
    assert strict >= 1
