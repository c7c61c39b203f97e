"""Sharing points and fractions by hand, the clone-and-branch training ledger, compare() and storage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from energymodel.analysis.points import block_prefixes, resolve_points, sharing_points
from energymodel.analysis.profile import profile
from energymodel.analysis.sharing import compare, training_cost
from energymodel.errors import UserError
from energymodel.models.zoo import build

SHAPE = (3, 32, 32)

# CIFAR ResNet-20 (option B) block by block: stem, layer1_0..2, layer2_0..2, layer3_0..2.
# conv/linear layers: the stem conv; two 3x3 convs per block, plus a 1x1 projection in layer2_0 and layer3_0.
LAYERS = [1, 2, 2, 2, 3, 2, 2, 3, 2, 2]
# parameters: stem 3·16·9 + BN 32 = 464; a 16-ch block 2·(16·16·9) + 2·32 = 4,672;
# layer2_0: 16·32·9 + 32·32·9 + 2·64 + 16·32 + 64 = 14,528; a 32-ch block 2·9,216 + 128 = 18,560;
# layer3_0: 32·64·9 + 64·64·9 + 2·128 + 32·64 + 128 = 57,728; a 64-ch block 2·36,864 + 256 = 73,984.
PARAMS = [464, 4_672, 4_672, 4_672, 14_528, 18_560, 18_560, 57_728, 73_984, 73_984]
HEAD_PARAMS = 64 * 10 + 10
# forward MACs per sample: stem 16·32·32·27; 16-ch block 2·(16·32·32·144); layer2_0 32·16·16·(144 + 288 + 16);
# 32-ch block 2·(32·16·16·288); layer3_0 64·8·8·(288 + 576 + 32); 64-ch block 2·(64·8·8·576).
MACS = [442_368, 4_718_592, 4_718_592, 4_718_592, 3_670_016, 4_718_592, 4_718_592, 3_670_016, 4_718_592, 4_718_592]


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return build("cifar_resnet20")


def test_hand_figures_add_up() -> None:
    assert sum(PARAMS) + HEAD_PARAMS == 272_474
    assert sum(MACS) + 640 == 40_813_184  # + the classifier: fvcore's conv + linear count
    assert sum(LAYERS) == 21


def test_sharing_points_fractions_by_hand(resnet20: nn.Module) -> None:
    pts = sharing_points(resnet20, SHAPE)
    assert [p.index for p in pts] == list(range(11))
    assert [p.after for p in pts] == ["input", "stem"] + [f"layer{s}_{i}" for s in (1, 2, 3) for i in range(3)]
    for k, p in enumerate(pts):
        assert p.layers_shared == sum(LAYERS[:k]) and p.layers_total == 21
        assert p.fraction == pytest.approx(sum(LAYERS[:k]) / 21, abs=1e-15)
        assert p.fraction_params == pytest.approx(sum(PARAMS[:k]) / sum(PARAMS), abs=1e-15)
        assert p.fraction_macs == pytest.approx(sum(MACS[:k]) / sum(MACS), abs=1e-15)
    assert (pts[0].fraction, pts[0].fraction_params, pts[0].fraction_macs) == (0.0, 0.0, 0.0)
    assert (pts[-1].fraction, pts[-1].fraction_params, pts[-1].fraction_macs) == (1.0, 1.0, 1.0)
    assert pts[5].fraction == pytest.approx(10 / 21)
    # without an input shape there is no MAC fraction
    assert all(p.fraction_macs is None for p in sharing_points(resnet20))


def test_resolve_points(resnet20: nn.Module) -> None:
    assert resolve_points(resnet20, None) == list(range(11))
    assert resolve_points(resnet20, [3, 0, 3]) == [0, 3]
    assert resolve_points(resnet20, [0.0, 1.0]) == [0, 10]
    assert resolve_points(resnet20, [0.5]) == [5]  # 10/21 = 0.476 is the nearest fraction to 0.5
    with pytest.raises(UserError):
        resolve_points(resnet20, [11])
    with pytest.raises(UserError):
        resolve_points(resnet20, [1.5])


def test_no_sharing_points_is_a_user_error() -> None:
    with pytest.raises(UserError, match="declares no sharing points"):
        sharing_points(nn.Linear(3, 2))
    with pytest.raises(UserError, match="no sharing points"):
        compare(nn.Linear(3, 2), (3,))


def test_bad_class_counts_are_user_errors(resnet20: nn.Module) -> None:
    for bad in (0, -3):
        with pytest.raises(UserError, match="new_classes must be a positive integer"):
            compare(resnet20, SHAPE, new_classes=bad, samples_new=10, samples_old=10, epochs=1)
        with pytest.raises(UserError, match="positive integer"):
            training_cost(resnet20, SHAPE, share=10, samples=10, num_classes=bad)
    tc = training_cost(resnet20, SHAPE, share=10, samples=10, num_classes=np.int64(4))
    assert tc.trainable_params == 64 * 4 + 4


def test_training_cost_at_the_last_point_trains_only_the_head(resnet20: nn.Module) -> None:
    n = len(block_prefixes(resnet20))
    tc = training_cost(resnet20, SHAPE, share=n, samples=200, batch=64)
    assert tc.trainable_params == HEAD_PARAMS
    assert tc.macs_backward_weight == 200 * 640  # the classifier's weight gradient only
    assert tc.macs_backward_input == 0  # nothing before the head needs an input gradient
    assert tc.macs_forward == 200 * (sum(MACS) + 640)
    assert tc.steps == 4  # 3 full batches of 64 + one of 8
    five = training_cost(resnet20, SHAPE, share=n, samples=200, batch=64, num_classes=5)
    assert five.trainable_params == 64 * 5 + 5
    full = training_cost(resnet20, SHAPE, share=0, samples=200, batch=64)
    assert full.trainable_params == 272_474
    # the first conv has no input gradient, every other conv one MAC per forward MAC
    assert full.macs_backward_weight == full.macs_forward
    assert full.macs_backward_input == full.macs_forward - 200 * MACS[0]


def test_training_cost_equals_profiled_steps(resnet20: nn.Module) -> None:
    """samples = 2·batch + rem: two full steps plus one short step, per epoch."""
    tc = training_cost(resnet20, SHAPE, share=4, samples=2 * 32 + 5, batch=32, epochs=3, optimizer="momentum")
    frozen = block_prefixes(resnet20)[:4]
    full = profile(resnet20, SHAPE, batch=32, mode="training", frozen=frozen, optimizer="momentum", warn=False)
    rem = profile(resnet20, SHAPE, batch=5, mode="training", frozen=frozen, optimizer="momentum", warn=False)
    for key in ("macs", "energy_pj", "dram_accesses", "sram_accesses", "energy_compute_pj"):
        expected = 3 * (2 * full.totals[key] + rem.totals[key])
        assert getattr(tc, key) == pytest.approx(expected, rel=1e-12), key
    assert tc.steps == 9
    assert tc.trainable_params == full.totals["trainable_params"] == sum(PARAMS[4:]) + HEAD_PARAMS


def test_cache_prefix_reduces_energy_and_runs_the_prefix_once(resnet20: nn.Module) -> None:
    kw = dict(samples=256, batch=128, epochs=4)
    for k in (3, 7, 10):
        plain = training_cost(resnet20, SHAPE, share=k, **kw)
        cached = training_cost(resnet20, SHAPE, share=k, cache_prefix=True, **kw)
        assert cached.energy_pj < plain.energy_pj
        assert cached.macs_forward == 256 * (sum(MACS[:k]) + 4 * (sum(MACS[k:]) + 640))
        assert cached.macs_backward_weight == plain.macs_backward_weight
    # nothing to cache at point 0
    a = training_cost(resnet20, SHAPE, share=0, **kw)
    b = training_cost(resnet20, SHAPE, share=0, cache_prefix=True, **kw)
    assert a.energy_pj == b.energy_pj


@pytest.fixture(scope="module")
def compared(resnet20: nn.Module):
    return compare(resnet20, SHAPE, samples_new=300, samples_old=500, epochs=2, batch=128, tasks=2)


def test_compare_rows(compared) -> None:
    df = compared
    assert df["strategy"].tolist() == ["partial-sharing"] * 11 + ["full-retraining"]
    assert df["share"].tolist() == [*range(11), 0]
    part = df[df["strategy"] == "partial-sharing"]
    assert part["trainable_params"].tolist() == [sum(PARAMS[k:]) + HEAD_PARAMS for k in range(11)]
    reg = part.iloc[0]
    assert reg["savings_energy_vs_regular"] == 1.0 and reg["savings_storage_vs_regular"] == 1.0
    ret = df.iloc[-1]
    assert ret["savings_energy_vs_retraining"] == 1.0
    assert ret["trainable_params"] == sum(PARAMS) + 64 * 30 + 30  # 10 old + 2 tasks × 10 new classes
    # full retraining after each of the 2 tasks, on all data so far: 800 then 1,100 samples, 2 epochs each
    assert ret["steps"] == 2 * math.ceil((500 + 300) / 128) + 2 * math.ceil((500 + 2 * 300) / 128) == 2 * 7 + 2 * 9
    # and each task trains its own branch: 2 x (2 epochs x ceil(300 / 128) steps)
    assert (part["steps"] == 2 * 2 * math.ceil(300 / 128)).all()
    assert ret["data_storage_bytes"] == (500 + 300) * 3 * 32 * 32  # old data kept as uint8 images
    assert (part["data_storage_bytes"] == 0).all()
    assert df.attrs["tasks"] == 2 and df.attrs["new_classes"] == 10
    assert np.isfinite(df.select_dtypes("number").to_numpy(dtype=float)).all()


def test_retraining_epochs_are_their_own_setting(resnet20: nn.Module) -> None:
    one = compare(resnet20, SHAPE, share=[0], samples_new=300, samples_old=500, epochs=2, batch=128)
    four = compare(resnet20, SHAPE, share=[0], samples_new=300, samples_old=500, epochs=2, batch=128, retrain_epochs=4)
    assert one.iloc[-1]["steps"] == 2 * 7 and four.iloc[-1]["steps"] == 4 * 7  # ceil(800 / 128) = 7
    assert four.iloc[-1]["energy_pj"] == pytest.approx(2 * one.iloc[-1]["energy_pj"])
    assert four.iloc[0]["energy_pj"] == one.iloc[0]["energy_pj"] and four.attrs["retrain_epochs"] == 4


def test_savings_are_monotone_in_the_sharing_point(compared) -> None:
    part = compared[compared["strategy"] == "partial-sharing"]
    for col in ("savings_energy_vs_regular", "savings_macs_vs_regular", "savings_storage_vs_regular",
                "savings_energy_vs_retraining"):
        s = part[col].to_numpy()
        assert (np.diff(s) > 0).all(), col
    assert (np.diff(part["energy_pj"].to_numpy()) < 0).all()
    # regular incremental learning (a full clone) is cheaper to train than full retraining on old + new data
    assert part.iloc[0]["savings_energy_vs_retraining"] > 1


def test_storage_counts_shared_parameters_once(compared) -> None:
    part = compared[compared["strategy"] == "partial-sharing"]
    base = sum(PARAMS) + HEAD_PARAMS
    for k, stored in zip(part["share"], part["storage_bytes"]):
        assert stored == 4 * (base + 2 * (sum(PARAMS[k:]) + HEAD_PARAMS)), k
    assert compared.iloc[-1]["storage_bytes"] == 4 * (sum(PARAMS) + 64 * 30 + 30)


def test_inference_of_the_grown_network(compared) -> None:
    part = compared[compared["strategy"] == "partial-sharing"]
    # base network once, then each of the 2 branches from its sharing point on
    for k, macs in zip(part["share"], part["inference_macs"]):
        assert macs == sum(MACS) + 640 + 2 * (sum(MACS[k:]) + 640), k


def test_cached_features_are_written_once_and_read_from_dram_every_epoch() -> None:
    """With every tensor fitting on chip, the only DRAM traffic is the input images (uncached: every
    epoch) or the input images once + the feature cache written once and read by the branch every epoch."""
    from energymodel.price.table import load_table

    table = load_table("45nm").with_values({"buffer_bytes": 2**40})
    model = build("smallcnn", num_classes=5)
    samples, epochs, k = 300, 3, 2
    kw = dict(samples=samples, batch=100, epochs=epochs, table=table, share=k)
    plain = training_cost(model, (1, 28, 28), **kw)
    cached = training_cost(model, (1, 28, 28), cache_prefix=True, **kw)
    image = 28 * 28
    feat = 32 * 14 * 14  # output of block conv2 (32 channels, pooled to 14x14)
    assert plain.dram_accesses == samples * image * epochs
    assert cached.dram_accesses == samples * image + samples * feat * (1 + epochs)


def test_compare_takes_the_buffer_size() -> None:
    """With a buffer that holds everything, the only DRAM words are the input images, every epoch."""
    from energymodel.errors import TableError

    model = build("smallcnn", num_classes=5)
    kw = dict(samples_new=300, samples_old=200, epochs=3, batch=100, new_classes=5)
    kw["share"] = [0, 3]
    df = compare(model, (1, 28, 28), buffer_bytes=2**40, **kw)
    assert df.attrs["buffer_bytes"] == 2**40
    ps = df[df["strategy"] == "partial-sharing"]
    assert (ps["dram_accesses"] == 300 * 784 * 3).all()
    assert df[df["strategy"] == "full-retraining"]["dram_accesses"].iloc[0] == (300 + 200) * 784 * 3
    small = compare(model, (1, 28, 28), buffer_bytes=16384, **kw)  # the 16x16 array's smallest tiles need ~10 KB
    assert small.attrs["buffer_bytes"] == 16384
    assert (small[small["strategy"] == "partial-sharing"]["dram_accesses"].to_numpy() > 300 * 784 * 3).all()
    with pytest.raises(TableError, match="buffer_bytes must be >= 0"):
        compare(model, (1, 28, 28), buffer_bytes=-1, **kw)


def test_every_rank_fills_the_whole_feature_cache() -> None:
    """Under torchrun each of R ranks runs the frozen prefix over all samples and writes its own cache: the
    prefix's forward MACs and the cache write are charged R times; the branch's training is shared."""
    model = build("smallcnn", num_classes=5)
    kw = dict(samples=300, batch=100, epochs=3, share=2, cache_prefix=True)
    one = training_cost(model, (1, 28, 28), **kw)
    two = training_cost(model, (1, 28, 28), ranks=2, **kw)
    # prefix = conv1 (1 -> 32, 3x3 on 28x28) + conv2 (32 -> 32): 28·28·32·9 + 28·28·32·32·9 MACs per sample
    prefix_macs = 28 * 28 * 32 * 9 + 28 * 28 * 32 * 32 * 9
    assert two.macs - one.macs == 300 * prefix_macs
    # uncached: ranks change nothing (the work is split, not repeated)
    plain = dict(kw, cache_prefix=False)
    assert training_cost(model, (1, 28, 28), ranks=4, **plain).energy_pj == training_cost(model, (1, 28, 28),
                                                                                           **plain).energy_pj
    with pytest.raises(UserError, match="ranks"):
        training_cost(model, (1, 28, 28), ranks=0, **kw)
