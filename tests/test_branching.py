"""Clone-and-branch: old tasks never change, the trunk never trains, the tree forward is consistent."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from energymodel.errors import UserError
from energymodel.models.blocks import BlockNet
from incremental.model.branching import GrownNet
from incremental.train.config import TrainConfig
from incremental.train.loop import fit, fit_branch


def tiny_net(num_classes: int, seed: int = 0) -> BlockNet:
    """Three conv+BN+ReLU blocks on 1x8x8 inputs, head = pool + flatten + linear."""
    torch.manual_seed(seed)

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    return BlockNet(
        [("b0", block(1, 6)), ("b1", block(6, 6)), ("b2", block(6, 6))],
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, num_classes)),
    )


def blobs(classes: list[int], n_per: int, seed: int, noise: float = 0.5) -> TensorDataset:
    """Gaussian blobs around one fixed random 1x8x8 prototype per global class; labels local."""
    protos = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for j, c in enumerate(classes):
        xs.append(protos[c] + noise * torch.randn(n_per, 1, 8, 8, generator=g))
        ys.append(torch.full((n_per,), j, dtype=torch.long))
    return TensorDataset(torch.cat(xs), torch.cat(ys))


CFG = TrainConfig(epochs=3, batch_size=32, lr=0.1, progress=False, device="cpu")


def trained_base() -> BlockNet:
    base = tiny_net(2)
    fit(base, blobs([0, 1], 40, 1), CFG)
    return base


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_old_task_logits_bit_identical_after_two_more_branches() -> None:
    grown = GrownNet(trained_base(), [0, 1])
    grown.add_branch(1, [2, 3])
    fit_branch(grown, 1, blobs([2, 3], 40, 2), CFG)
    x = blobs([0, 1, 2, 3, 4, 5, 6, 7], 5, 99).tensors[0]
    grown.eval()
    before_all = [t.clone() for t in grown.forward_all(x)]
    before_task = [grown.forward_task(x, t).clone() for t in range(2)]
    before_pred = [grown.predict_task_aware(x, t) for t in range(2)]

    grown.add_branch(2, [4, 5])
    fit_branch(grown, 2, blobs([4, 5], 40, 3), CFG)
    grown.add_branch(0, [6, 7])
    fit_branch(grown, 3, blobs([6, 7], 40, 4), CFG)
    grown.eval()
    after_all = grown.forward_all(x)
    assert len(after_all) == 4
    for t in range(2):
        assert torch.equal(before_all[t], after_all[t])
        assert torch.equal(before_task[t], grown.forward_task(x, t))
        assert torch.equal(before_pred[t], grown.predict_task_aware(x, t))


def test_base_params_and_bn_stats_unchanged_and_trunk_never_gets_grad() -> None:
    grown = GrownNet(trained_base(), [0, 1])
    before = snapshot(grown.base)
    branch = grown.add_branch(2, [2, 3])
    branch_before = snapshot(branch.module)
    result = fit_branch(grown, 1, blobs([2, 3], 40, 2), TrainConfig(**{**CFG.__dict__, "cache_features": "off"}))
    assert result.cache_mode == "off"
    after = snapshot(grown.base)
    assert before.keys() == after.keys()
    assert any("running_mean" in k for k in before)
    for k in before:
        assert torch.equal(before[k], after[k]), k
    for p in grown.base.parameters():
        assert p.grad is None
        assert not p.requires_grad
    # the branch itself did train (and its BN statistics moved)
    changed = [k for k in branch_before if not torch.equal(branch_before[k], branch.module.state_dict()[k])]
    assert any("running_mean" in k for k in changed)
    assert any(k.endswith("weight") for k in changed)


def test_train_mode_keeps_frozen_parts_in_eval() -> None:
    grown = GrownNet(tiny_net(2), [0, 1])
    grown.add_branch(1, [2, 3])
    grown.add_branch(2, [4])
    grown.train()
    assert grown.training
    assert all(not m.training for m in grown.base.modules())
    assert all(not m.training for m in grown.branch(1).module.modules())  # earlier branch frozen
    assert all(m.training for m in grown.branch(2).module.modules())  # newest branch trainable
    assert all(p.requires_grad for p in grown.branch(2).module.parameters())
    assert not any(p.requires_grad for p in grown.branch(1).module.parameters())
    assert grown.is_frozen(0) and grown.is_frozen(1) and not grown.is_frozen(2)


def test_branch_is_a_deep_copy_of_later_base_layers_with_fresh_classifier() -> None:
    base = tiny_net(2)
    grown = GrownNet(base, [0, 1])
    branch = grown.add_branch(1, [5, 6, 7])
    assert branch.task == 1 and branch.share == 1 and branch.classes == [5, 6, 7]
    assert list(branch.module.named_children())[0][0] == "b1"
    for name in ("b1", "b2"):
        src, dst = base.blocks[int(name[1])], getattr(branch.module, name)
        assert src is not dst
        for (ka, a), (kb, b) in zip(src.state_dict().items(), dst.state_dict().items()):
            assert ka == kb and torch.equal(a, b)
            assert a.data_ptr() != b.data_ptr()
    assert branch.module.head[-1].out_features == 3
    assert len(grown.trunk(1)) == 1 and grown.trunk(1)[0] is base.blocks[0]
    assert grown.branch(0).share == 3 and grown.branch(0).module.head is base.head


def test_forward_all_runs_each_trunk_block_once_and_matches_forward_task() -> None:
    grown = GrownNet(tiny_net(2), [0, 1])
    for share, classes in ((1, [2, 3]), (2, [4, 5]), (0, [6]), (3, [7, 8]), (1, [9])):
        grown.add_branch(share, classes)
    grown.eval()
    calls = {name: 0 for name, _ in grown.base.blocks.named_children()}
    handles = [
        block.register_forward_hook(lambda m, i, o, n=name: calls.__setitem__(n, calls[n] + 1))
        for name, block in grown.base.blocks.named_children()
    ]
    x = torch.randn(4, 1, 8, 8)
    outs = grown.forward_all(x)
    for h in handles:
        h.remove()
    assert calls == {"b0": 1, "b1": 1, "b2": 1}
    assert [o.shape[1] for o in outs] == [2, 2, 2, 1, 2, 1]
    for t, out in enumerate(outs):
        assert torch.allclose(out, grown.forward_task(x, t), atol=1e-6)


def test_predictions_map_to_global_class_ids_and_calibration_is_used() -> None:
    grown = GrownNet(tiny_net(2), [10, 11])
    grown.add_branch(2, [20, 21, 22])
    grown.eval()
    x = torch.randn(16, 1, 8, 8)
    assert set(grown.predict_task_aware(x, 1).tolist()) <= {20, 21, 22}
    assert set(grown.predict_task_aware(x, 0).tolist()) <= {10, 11}
    assert grown.all_classes == [10, 11, 20, 21, 22]
    grown.set_calibration(1, 1.0, 1e6)  # task 1 always wins when calibrated
    assert set(grown.predict_agnostic(x).tolist()) <= {20, 21, 22}
    grown.set_calibration(1, 1.0, -1e6)
    assert set(grown.predict_agnostic(x).tolist()) <= {10, 11}
    assert "calibration.1.bias" in grown.state_dict()
    assert grown.get_calibration(1) == (1.0, -1e6)
    with pytest.raises(ValueError):
        grown.set_calibration(1, 0.0, 0.0)


def test_structure_round_trip_rebuilds_identical_network() -> None:
    grown = GrownNet(trained_base(), [0, 1])
    grown.add_branch(1, [2, 3])
    fit_branch(grown, 1, blobs([2, 3], 20, 2), CFG)
    grown.add_branch(3, [4])
    grown.set_calibration(1, 2.5, -0.75)
    structure = json.loads(json.dumps(grown.structure()))
    clone = GrownNet.from_structure(lambda: tiny_net(2, seed=7), structure)
    clone.load_state_dict(grown.state_dict())
    grown.eval()
    clone.eval()
    x = torch.randn(8, 1, 8, 8)
    for a, b in zip(grown.forward_all(x), clone.forward_all(x)):
        assert torch.equal(a, b)
    assert clone.get_calibration(1) == (2.5, -0.75)
    assert clone.structure() == grown.structure()
    assert clone.is_frozen(1) and not clone.is_frozen(2)
    with pytest.raises(UserError):
        GrownNet.from_structure(lambda: tiny_net(2), {"branches": []})
    with pytest.raises(UserError):
        GrownNet.from_structure(lambda: tiny_net(3), structure)  # wrong number of base classes


def test_pop_branch_and_validation() -> None:
    grown = GrownNet(tiny_net(2), [0, 1])
    grown.add_branch(1, [2, 3])
    grown.add_branch(2, [4, 5])
    popped = grown.pop_branch()
    assert popped.task == 2 and grown.tasks == 2
    assert len(grown.calibration) == 2
    with pytest.raises(ValueError):
        grown.add_branch(4, [6])
    with pytest.raises(ValueError):
        grown.add_branch(1, [6, 6])
    with pytest.raises(ValueError):
        grown.add_branch(1, [])
    with pytest.raises(ValueError):
        GrownNet(tiny_net(3), [0, 1])
    grown.pop_branch()
    with pytest.raises(IndexError):
        grown.pop_branch()


def test_trunk_refuses_training_mode_once_frozen_and_fit_restores_modes() -> None:
    grown = GrownNet(trained_base(), [0, 1])
    assert grown.trunk(2).training  # not frozen yet: the base may still train
    grown.add_branch(2, [2, 3])
    trunk = grown.trunk(2)
    trunk.train()
    assert not trunk.training and all(not m.training for m in grown.base.modules())
    before = snapshot(grown.base)
    fit_branch(grown, 1, blobs([2, 3], 20, 2), CFG)
    assert all(not m.training for m in grown.base.modules())
    assert all(m.training for m in grown.branch(1).module.modules())  # mode before fit was train
    grown.branch(1).module.eval()
    grown.forward_task(torch.randn(8, 1, 8, 8) * 3 + 1, 1)  # evaluation must not touch the trunk's BN
    after = snapshot(grown.base)
    assert all(torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------------------- strategies (baselines.py)
def test_strategies_learn_tasks_and_report_what_they_trained() -> None:
    from incremental.model.single import SingleNet, rebuild_predictor
    from incremental.train.strategies import STRATEGY_NAMES, make_strategy

    base = trained_base()
    base_data = blobs([0, 1], 40, 1)
    new_data = blobs([2, 3], 40, 2)
    test0 = blobs([0, 1], 30, 11)
    x0, y0 = test0.tensors
    base_before = snapshot(base)
    records, learners = {}, {}
    for name in STRATEGY_NAMES:
        strategy = make_strategy(name, share=2 if name == "partial_sharing" else None)
        learner = strategy.build(base, [0, 1], base_data)
        learner.predictor.eval()
        aware_before = learner.predictor.predict_task_aware(x0, 0)
        records[name] = learner.learn_task(new_data, [2, 3], CFG)
        learners[name] = learner
        pred = learner.predictor
        pred.eval()
        assert pred.tasks == 2 and pred.all_classes == [0, 1, 2, 3]
        assert len(pred.forward_all(x0)) == 2
        if name in ("partial_sharing", "regular_incremental", "feature_extraction"):
            assert torch.equal(aware_before, pred.predict_task_aware(x0, 0))  # nothing forgotten
        assert json.dumps(records[name].to_dict())
        assert records[name].epochs == CFG.epochs
    assert {n: r.share for n, r in records.items()} == {
        "partial_sharing": 2, "regular_incremental": 0, "feature_extraction": 3,
        "fine_tuning": None, "full_retraining": None,
    }
    assert records["full_retraining"].used_old_data and records["full_retraining"].samples == 160
    assert not records["fine_tuning"].used_old_data and records["fine_tuning"].samples == 80
    assert records["feature_extraction"].trainable_params == 6 * 2 + 2  # only the new classifier
    assert records["regular_incremental"].trainable_params == sum(p.numel() for p in base.parameters())
    assert records["partial_sharing"].fit.cache_mode == "memory"
    # naive fine-tuning forgets task 0: fed task-0 inputs it now answers with new classes
    ft = learners["fine_tuning"].predictor
    assert (ft.predict_agnostic(x0) == y0).double().mean() < 0.5
    # strategies work on deep copies: the shared base network is untouched
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in base_before.items())
    # single-network predictors rebuild from their structure
    rebuilt = rebuild_predictor(json.loads(json.dumps(ft.structure())), lambda n: tiny_net(n, seed=3))
    assert isinstance(rebuilt, SingleNet)
    rebuilt.load_state_dict(ft.state_dict())
    rebuilt.eval()
    assert torch.equal(rebuilt.forward_task(x0, 1), ft.forward_task(x0, 1))
    with pytest.raises(UserError):
        make_strategy("partial_sharing")
    with pytest.raises(UserError):
        make_strategy("distillation")


def test_extend_classifier_copies_old_rows() -> None:
    from incremental.model.single import extend_classifier

    net = tiny_net(2)
    net.eval()
    x = torch.randn(4, 1, 8, 8)
    old = net(x)
    same = extend_classifier(net, 3)
    assert same is net and net.head[-1].out_features == 5
    new = net(x)
    assert torch.allclose(new[:, :2], old, rtol=0, atol=1e-6)  # same rows (matmul blocking may differ)
    with pytest.raises(ValueError):
        extend_classifier(net, 0)
