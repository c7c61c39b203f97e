"""Output calibration (temperature + offset per branch) and the sharing-point search."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from energymodel.models.blocks import BlockNet
from incremental.agnostic.output_calibration import (
    calibrate,
    fit_temperature_bias,
    holdout_split,
    random_subset,
)
from incremental.model.branching import GrownNet
from incremental.search.sharing_point import search_sharing_point, sharing_trial
from incremental.train.config import TrainConfig
from incremental.train.loop import fit


# ---------------------------------------------------------------------------- (a) output calibration
def test_temperature_recovers_a_known_logit_scale() -> None:
    g = torch.Generator().manual_seed(0)
    z = 2.0 * torch.randn(4000, 5, generator=g)
    labels = torch.multinomial(torch.softmax(z, dim=1), 1, generator=g).squeeze(1)  # calibrated at T = 1
    for scale in (0.2, 1.0, 7.0):
        t, b = fit_temperature_bias(scale * z, labels)
        assert t == pytest.approx(scale, rel=0.1)
        assert ((scale * z).double() / t).max(dim=1).values.mean() + b == pytest.approx(0.0, abs=1e-9)
    t, b = fit_temperature_bias(7.0 * z, labels, target=3.0, method="zscore")
    top = ((7.0 * z).double() / t).max(dim=1).values
    assert top.std(unbiased=False) == pytest.approx(1.0, rel=1e-6)
    assert top.mean() + b == pytest.approx(3.0, abs=1e-9)
    with pytest.raises(ValueError):
        fit_temperature_bias(z, labels, method="histogram")
    with pytest.raises(ValueError):
        fit_temperature_bias(z, labels[:10])


def _centroid_classifier(protos: torch.Tensor, scale: float) -> nn.Linear:
    """Nearest-centroid scores scale * (<p, x> - |p|^2 / 2) for flattened 1x8x8 inputs."""
    lin = nn.Linear(64, protos.shape[0])
    with torch.no_grad():
        lin.weight.copy_(scale * protos)
        lin.bias.copy_(-scale * 0.5 * (protos * protos).sum(1))
    return lin


def _samples(protos: torch.Tensor, classes: list[int], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xs = [protos[c] + 3.0 * torch.randn(n, 64, generator=g) for c in classes]
    return torch.cat(xs).view(-1, 1, 8, 8), torch.arange(len(classes)).repeat_interleave(n)


@pytest.mark.parametrize("method", ["nll", "zscore"])
def test_calibration_improves_task_agnostic_accuracy_when_branch_scales_differ(method: str) -> None:
    protos = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    base = BlockNet([("flat", nn.Flatten())], _centroid_classifier(protos[:2], 1.0))
    grown = GrownNet(base, [0, 1])
    branch = grown.add_branch(1, [2, 3])
    branch.module.head = _centroid_classifier(protos[2:], 100.0)  # same quality, 100x larger logits
    grown.eval()
    x, y = _samples(protos, [0, 1, 2, 3], 200, seed=1)  # global ids 0..3 == positions
    heldout = {
        0: TensorDataset(*_samples(protos, [0, 1], 100, seed=2)),
        1: TensorDataset(*_samples(protos, [2, 3], 100, seed=3)),
    }
    aware_before = [grown.predict_task_aware(x, t) for t in (0, 1)]
    uncalibrated = (grown.predict_agnostic(x, calibrated=False) == y).double().mean().item()

    report = calibrate(grown, heldout, device="cpu", method=method)
    calibrated = (grown.predict_agnostic(x) == y).double().mean().item()

    assert set(report) == {0, 1}
    assert report[1].temperature > 5 * report[0].temperature  # the loud branch is turned down
    assert calibrated >= uncalibrated + 0.08
    assert calibrated >= 0.8
    assert (grown.predict_agnostic(x, calibrated=False) == y).double().mean().item() == uncalibrated
    for t in (0, 1):  # task-aware predictions are untouched by calibration
        assert torch.equal(aware_before[t], grown.predict_task_aware(x, t))
    state = grown.state_dict()
    assert float(state["calibration.1.temperature"]) == pytest.approx(report[1].temperature)
    if method == "nll":
        assert report[1].nll_after <= report[1].nll_before + 1e-9


# ---------------------------------------------------------------------------- (b) sharing-point search
def test_search_picks_deepest_sharing_point_within_tolerance() -> None:
    table = {0: 0.90, 1: 0.91, 2: 0.88, 3: 0.70, 4: 0.865}
    calls: list[int] = []

    def train_branch(k: int) -> float:
        calls.append(k)
        return table[k]

    costs = {k: {"energy_j": 10.0 - k, "storage_mb": 5.0 - k} for k in table}
    result = search_sharing_point(train_branch, [4, 1, 3, 2], tolerance=0.03, costs=costs)
    assert calls == [0, 4, 3, 2, 1]  # k = 0 (the reference) first, then deepest first
    assert result.chosen == 2
    assert result.reference_accuracy == 0.90
    curve = result.curve
    assert isinstance(curve, pd.DataFrame)
    assert curve["share"].tolist() == [0, 1, 2, 3, 4]
    assert curve["within_tolerance"].tolist() == [True, True, True, False, False]
    assert curve["drop"].tolist() == pytest.approx([0.0, -0.01, 0.02, 0.20, 0.035])
    assert curve["chosen"].tolist() == [False, False, True, False, False]
    assert curve["energy_j"].tolist() == [10.0, 9.0, 8.0, 7.0, 6.0]
    assert json.dumps(result.to_dict())

    assert search_sharing_point(train_branch, [1, 2, 3, 4], tolerance=0.05).chosen == 4
    # stopping at the first (deepest) point within tolerance gives the same choice with fewer trials
    calls.clear()
    early = search_sharing_point(train_branch, [4, 1, 3, 2], tolerance=0.03, stop_early=True)
    assert calls == [0, 4, 3, 2] and early.chosen == 2 and early.curve["share"].tolist() == [0, 2, 3, 4]
    assert search_sharing_point(lambda k: 1.0 - 0.1 * k, [1, 2], tolerance=0.0).chosen == 0
    with pytest.raises(ValueError):
        search_sharing_point(train_branch, [1], tolerance=-0.1)


def test_search_warns_when_the_tolerance_is_within_the_noise() -> None:
    from incremental.search.sharing_point import standard_error

    # Agresti-Coull by hand: 149 of 150 -> q = 151/154, SE = sqrt(q (1 - q) / 154) = 0.011137 (the plain
    # binomial formula gives 0.0066 and would call a 2-point tolerance safe); 75 of 150 -> q = 0.5, 0.04029
    assert standard_error(149 / 150, 150) == pytest.approx(0.011137, abs=1e-6)
    assert standard_error(0.5, 150) == pytest.approx(0.040291, abs=1e-6)
    assert standard_error(1.0, 0) == pytest.approx(0.25)
    noisy = search_sharing_point(lambda k: 149 / 150, [1], tolerance=0.02, classes=2, val_samples=150)
    assert noisy.warning is not None and "0.011 on 150 validation images" in noisy.warning
    assert noisy.curve["stderr"].tolist() == pytest.approx([0.011137] * 2, abs=1e-6)
    quiet = search_sharing_point(lambda k: 149 / 150, [1], tolerance=0.02, classes=2, val_samples=1500)
    assert quiet.warning is None


def _blobs(classes: list[int], n_per: int, seed: int) -> TensorDataset:
    protos = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)
    xs = [protos[c] + 0.5 * torch.randn(n_per, 1, 8, 8, generator=g) for c in classes]
    return TensorDataset(torch.cat(xs), torch.arange(len(classes)).repeat_interleave(n_per))


def test_sharing_trial_trains_temporary_branches_on_a_real_network() -> None:
    torch.manual_seed(0)

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    base = BlockNet([("b0", block(1, 6)), ("b1", block(6, 6))],
                    nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2)))
    cfg = TrainConfig(epochs=10, batch_size=16, lr=0.1, progress=False, device="cpu")
    fit(base, _blobs([0, 1], 30, 1), cfg)
    grown = GrownNet(base, [0, 1])
    before = {k: v.clone() for k, v in grown.state_dict().items()}
    train, val = holdout_split(_blobs([2, 3], 40, 2), 0.25, seed=0)
    assert len(train) == 60 and len(val) == 20
    assert not set(train.indices) & set(val.indices)
    trial = sharing_trial(grown, random_subset(train, 40, seed=1), val, 2, dataclasses.replace(cfg, epochs=12))
    result = search_sharing_point(trial, [1, 2], tolerance=0.1)
    assert result.curve["share"].tolist() == [0, 1, 2]
    assert result.reference_accuracy >= 0.8
    assert grown.tasks == 1  # the trial branches were removed again
    after = grown.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert len(random_subset(train, 1000, seed=0)) == 60


# ---------------------------------------------------------------------------- a search whose answer is known
def _projection_base() -> BlockNet:
    """Linear blocks: b0 = identity, b1 = keeps dims 0-3 and zeroes dims 4-7, b2 = identity.

    A new task whose classes live in dims 4-7 can be learned when the branch starts at or before b1
    (k <= 1: b1 is cloned and trainable) and not after it (k >= 2: the shared trunk has erased the signal).
    The deepest sharing point that works is therefore exactly k = 1.
    """
    blocks = [(f"b{i}", nn.Linear(8, 8)) for i in range(3)]
    base = BlockNet(blocks, nn.Sequential(nn.Linear(8, 2)))
    with torch.no_grad():
        for _name, layer in blocks:
            layer.bias.zero_()
            layer.weight.copy_(torch.eye(8))
        blocks[1][1].weight.copy_(torch.diag(torch.tensor([1.0] * 4 + [0.0] * 4)))
    return base


def _task_in_dims_4_to_7(n: int, seed: int) -> TensorDataset:
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, (x[:, 4] + x[:, 5] > 0).long())


def test_search_finds_the_known_deepest_sharing_point() -> None:
    from incremental.search.sharing_point import search_sharing_point as search

    torch.manual_seed(0)
    grown = GrownNet(_projection_base(), [0, 1])
    cfg = TrainConfig(epochs=30, batch_size=32, lr=0.1, progress=False, device="cpu", weight_decay=0.0)
    trial = sharing_trial(grown, _task_in_dims_4_to_7(256, 1), _task_in_dims_4_to_7(300, 2), 2, cfg)
    result = search(trial, [1, 2, 3], tolerance=0.05, classes=2, val_samples=300)
    acc = dict(zip(result.curve["share"], result.curve["accuracy"]))
    assert acc[0] > 0.9 and acc[1] > 0.9  # the signal survives up to b1
    assert acc[2] < 0.65 and acc[3] < 0.65  # after b1 it is gone: chance
    assert result.chosen == 1


def test_search_never_falls_back_to_no_sharing_silently() -> None:
    from incremental.search.sharing_point import SearchFailed, above_chance, trial_epochs
    from incremental.search.sharing_point import search_sharing_point as search

    # the binomial test: chance 1/2 on 100 images needs 0.5 + 3 * 0.05 = 0.65
    assert above_chance(0.65, 2, 100) and not above_chance(0.64, 2, 100)
    assert above_chance(0.262, 5, 375) and not above_chance(0.26, 5, 375)  # 0.2 + 3 * sqrt(0.16 / 375) = 0.2620
    # a trial is at least min_steps optimizer steps: 300 images / batch 128 = 3 steps per epoch
    assert trial_epochs(2, 300, 128, 150) == 50 and trial_epochs(60, 300, 128, 150) == 60
    calls: list[tuple[str, int]] = []

    def at_chance(k: int) -> float:
        calls.append(("short", k))
        return 0.52

    def longer(k: int) -> float:
        calls.append(("long", k))
        return {0: 0.95, 1: 0.94, 2: 0.60}[k]

    result = search(at_chance, [1, 2], tolerance=0.02, classes=2, val_samples=100, longer=longer)
    assert calls == [("short", 0), ("long", 0), ("long", 2), ("long", 1)]
    assert result.longer and result.chosen == 1
    with pytest.raises(SearchFailed, match=r"reference \(k=0\) reached only 52.0% even after training 4x longer"):
        search(at_chance, [1, 2], tolerance=0.02, classes=2, val_samples=100, longer=at_chance)
    with pytest.raises(SearchFailed, match="raise search.min_steps"):
        search(at_chance, [1], tolerance=0.02, classes=2, val_samples=100)
