"""Task-agnostic prediction: the statistics (checked by hand and against scikit-learn), the methods, and the
rule that no image of an old task is read after its task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from energymodel.errors import UserError
from incremental.agnostic import AgnosticSuite, Outputs, make_method, method_names
from incremental.agnostic.gaussian import (
    Gaussians,
    fit_gaussians,
    fit_scale,
    ledoit_wolf,
    multi_block_normalise,
    power_normalise,
)


def test_ledoit_wolf_by_hand() -> None:
    # three centred points (1,0), (0,1), (-1,-1): S = [[2,1],[1,2]]/3, m = 2/3, d^2 = ||S - mI||^2 / 2 = 1/9,
    # b^2 = (sum ||x||^4 - n ||S||^2) / (n^2 D) = (6 - 10/3) / 18 = 4/27 > d^2, so a = 1 and Sigma = (2/3) I
    xc = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    cov, a = ledoit_wolf(xc)
    assert a == 1.0
    assert torch.allclose(cov, torch.eye(2, dtype=torch.float64) * 2 / 3)


def test_ledoit_wolf_equals_scikit_learn() -> None:
    from sklearn import covariance  # a dev dependency: the independent referee
    rng = np.random.default_rng(0)
    for n, d in ((200, 10), (30, 50), (5, 3)):
        x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
        xc = x - x.mean(axis=0)
        ref, ref_a = covariance.ledoit_wolf(xc, assume_centered=True)
        cov, a = ledoit_wolf(torch.from_numpy(xc))
        assert a == pytest.approx(ref_a, rel=1e-9)
        assert np.allclose(cov.numpy(), ref, rtol=1e-9, atol=1e-12)


def test_power_normalise_and_mahalanobis_by_hand() -> None:
    z = power_normalise(torch.tensor([[4.0, 0.0, 0.0], [1.0, -1.0, 0.0]]))
    assert torch.allclose(z, torch.tensor([[1.0, 0.0, 0.0], [2**-0.5, -(2**-0.5), 0.0]], dtype=torch.float64))
    # one class, samples on the axes: mean (1/3,1/3,1/3)-ish; the distance of the mean itself is 0
    x = torch.eye(3)
    g = fit_gaussians(x, torch.zeros(3, dtype=torch.long), 1)
    d = g.distances(torch.ones(1, 3))  # phi(1,1,1) = (1,1,1)/sqrt(3), not the mean (1/3,1/3,1/3)
    # by hand: centred samples e_i - mu, S = (I - J/3) / 3, m = tr(S)/3 = 2/9; ||S - m I||^2 / 3 = (6/81) / 3 = 2/81
    # and b^2 = (sum ||x_i||^4 - 3 ||S||^2) / (9 * 3) = (4/3 - 2/3) / 27 = 2/81: a = 1, Sigma = (2/9) I (+ eps I,
    # eps = 1e-6 m + 1e-12); ||phi - mu||^2 = 3 (1/sqrt(3) - 1/3)^2 = 4/3 - 2/sqrt(3)
    expected = (4 / 3 - 2 / math.sqrt(3)) / ((2 / 9) * (1 + 1e-6) + 1e-12)
    assert d.shape == (1, 1) and float(d) == pytest.approx(expected, rel=1e-6)
    assert float(g.distances(torch.tensor([[1.0, 0.0, 0.0]]))) == pytest.approx(float(g.distances(
        torch.tensor([[0.0, 5.0, 0.0]]))))  # symmetric classes, normalised scale


def test_multi_block_normalise_by_hand() -> None:
    # block 1: (4, 0) -> sqrt -> (2, 0) -> unit (1, 0); block 2: (1, 1, 0) -> (1, 1, 0)/sqrt(2); both / sqrt(2)
    z = multi_block_normalise([torch.tensor([[4.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]])])
    h = 2**-0.5
    assert torch.allclose(z, torch.tensor([[h, 0.0, 0.5, 0.5, 0.0]], dtype=torch.float64))
    assert float(z.norm()) == pytest.approx(1.0)
    # a mapped space is not mapped again: the distance of a mapped class mean to itself is 0
    g = fit_gaussians(z.repeat(3, 1), torch.zeros(3, dtype=torch.long), 1, normalised=True)
    assert torch.allclose(g.means, z) and float(g.distances(z)) == pytest.approx(0.0, abs=1e-9)
    assert Gaussians.from_state(g.state()).normalised


def test_routed_takes_the_task_from_the_trunk_and_the_class_from_the_branch() -> None:
    # the trunk puts every input of classes 2, 3 nearest task 1; the branch's logits then pick the class, even
    # where the trunk's own nearest class would be the other one
    from incremental.agnostic import TaskData

    y = torch.tensor([0, 1, 0, 1])
    trunk = [torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.9, 0.1]])]
    m = make_method("routed", covariance="task")
    m.fit_task(TaskData(Outputs([torch.zeros(2, 2)], [torch.ones(2, 3)], y[:2], None, [trunk[0][:2]]), 0), None)
    m.fit_task(TaskData(Outputs([torch.zeros(2, 2), torch.zeros(2, 2)], [torch.ones(2, 3)] * 2, y[2:], None,
                                [trunk[0][2:]]), 1), None)
    test_trunk = [torch.tensor([[0.05, 1.0, 0.0], [1.0, 0.02, 0.0]])]
    logits1 = torch.tensor([[0.0, 3.0], [5.0, 0.0]])  # branch 1 says class 3 for the first input
    cols = m.predict(Outputs([torch.tensor([[9.0, 0.0], [9.0, 0.0]]), logits1], [torch.ones(2, 3)] * 2,
                             torch.tensor([-1, -1]), None, test_trunk))
    assert cols.tolist() == [3, 0]  # task 1 then its class 1 (column 3); task 0 then its argmax (column 0)


def test_too_few_samples_never_give_nan() -> None:
    x = torch.randn(3, 128)  # one image per class, 128 dimensions
    g = fit_gaussians(x, torch.arange(3), 3)
    d = g.distances(torch.randn(7, 128))
    assert torch.isfinite(d).all() and g.shrinkage == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="class 3 has no sample"):
        fit_gaussians(x, torch.arange(3), 4)
    s = fit_scale(torch.tensor([2.0, 2.0, 2.0]))
    assert s.location == 2.0 and s.spread == 1e-6


def _two_tasks(n: int, seed: int) -> tuple[list[Outputs], Outputs, torch.Tensor]:
    """Task 0's branch answers with huge logits for every input (it wins every raw argmax); both tasks' own
    and common features separate their classes. Returns each task's own data, a mixed test set, its columns."""
    centres = 3 * torch.randn(4, 16, generator=torch.Generator().manual_seed(123)).abs()  # classes 0,1 | 2,3
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(4).repeat_interleave(n)
    feats = (centres[y] + 0.3 * torch.randn(len(y), 16, generator=g)).relu()
    logits0 = 50 + torch.randn(len(y), 2, generator=g)  # big, uninformative about task 1
    logits0[:, 0] += 5 * (y == 0)
    logits0[:, 1] += 5 * (y == 1)
    logits1 = torch.randn(len(y), 2, generator=g)
    logits1[:, 0] += 5 * (y == 2)
    logits1[:, 1] += 5 * (y == 3)
    own1 = feats.flip(1)  # the branch's own space differs from the common one
    # two trunk blocks of different widths: the first half of the features, then all of them
    trunk = [feats[:, :8], feats]
    full = Outputs([logits0, logits1], [feats, own1], y, [(1.0, 0.0), (1.0, 0.0)], trunk)
    parts = []
    for t, cls in ((0, [0, 1]), (1, [2, 3])):
        m = (y == cls[0]) | (y == cls[1])
        parts.append(Outputs([logits0[m], logits1[m]], [feats[m], own1[m]], y[m] - 2 * t, None,
                             [b[m] for b in trunk]))
    return parts, full, y


def test_gaussian_methods_beat_raw_argmax_when_one_branch_shouts() -> None:
    (task0, task1), _, _ = _two_tasks(60, 0)
    _, test, y = _two_tasks(60, 1)
    suite = AgnosticSuite(method_names())
    suite.fit_task(0, Outputs(task0.logits[:1], task0.own[:1], task0.labels, None, task0.trunk), None)
    suite.fit_task(1, task1, None)
    acc = {name: float((cols == y).double().mean()) for name, cols in suite.predict(test).items()}
    assert acc["raw-logits"] == pytest.approx(0.5)  # task 0 wins every input
    for name in ("branch-gaussian", "common-gaussian", "trunk-gaussian", "combined-gaussian", "routed"):
        assert acc[name] > 0.95, (name, acc)
    with pytest.raises(ValueError, match="expected task 2"):
        suite.fit_task(3, task1, None)


def test_methods_are_a_registry_and_refuse_missing_statistics() -> None:
    assert method_names() == ["raw-logits", "calibrated-logits", "branch-gaussian", "common-gaussian",
                              "trunk-gaussian", "combined-gaussian", "routed", "gaussian-ensemble", "analytic-head",
                              "analytic-ensemble"]
    with pytest.raises(UserError, match="unknown task-agnostic method 'nope'"):
        make_method("nope")
    (task0, _), test, _ = _two_tasks(10, 0)
    m = make_method("routed")
    m.fit_task(*[__import__("incremental.agnostic", fromlist=["TaskData"]).TaskData(
        Outputs(task0.logits[:1], task0.own[:1], task0.labels, None, task0.trunk), 0), None])
    with pytest.raises(UserError, match="statistics of 1 task"):
        m.predict(test)
    suite = AgnosticSuite(["routed"])
    with pytest.raises(UserError, match="no statistics for task-agnostic method 'routed'"):
        suite.load({"fitted": 1, "methods": {"raw-logits": {}}})


def test_bad_agnostic_config_is_one_line() -> None:
    from incremental.run.config import RunConfig

    base = {"dataset": "fashion-mnist", "model": "smallcnn", "tasks": "5+5"}
    with pytest.raises(UserError, match=r"field 'agnostic\.method': expected one of raw-logits"):
        RunConfig.from_dict({**base, "agnostic": {"method": "magic"}})
    with pytest.raises(UserError, match=r"agnostic\.covariance"):
        RunConfig.from_dict({**base, "agnostic": {"covariance": "diagonal"}})
    cfg = RunConfig.from_dict({**base, "agnostic": {"method": "routed", "methods": ["raw-logits"]}})
    assert cfg.agnostic.names() == ["raw-logits", "routed"]  # the headline method is always fitted


def test_no_old_task_image_is_read_after_its_task(tmp_path, monkeypatch) -> None:
    """Instrument every read of a task's images — ``__getitem__`` and direct access to the tensors behind a
    dataset — in every phase: training, calibration, statistics, the per-task searches, the oracle, and a run
    resumed after a crash. While a task is learned (or searched for) nothing of an earlier task's training,
    held-out or search images is touched; the baseline that keeps old data (full retraining) and the
    references (an analysis that needs every task's images, charged to no strategy) are the exceptions.
    (Evaluation reads old tasks' test and validation images: what the accuracy matrices measure.)"""
    from test_run import tiny_config, write_fashion_idx

    from incremental.data import arrays
    from incremental.run.config import RunConfig
    from incremental.run.phases import SeedRun
    from incremental.run.runner import run

    idx = write_fashion_idx(tmp_path / "idx", train=40, test=4)
    reads: list[tuple[str, int]] = []
    phase = {"name": "setup"}
    seen: dict[str, object] = {}
    original_get = arrays.TensorImageDataset.__getitem__
    original_attr = arrays.TensorImageDataset.__getattribute__

    def get(self, i):
        reads.append((phase["name"], id(self)))
        return original_get(self, i)

    def attr(self, name):
        if name in ("_images", "_labels", "arrays"):
            reads.append((phase["name"], id(self)))
        return original_attr(self, name)

    def watched(method, label):
        def wrapper(self, *args, **kwargs):
            seen["data"] = self.data
            outer = phase["name"]
            phase["name"] = label(*args)
            try:
                return method(self, *args, **kwargs)
            finally:
                phase["name"] = outer
        return wrapper

    crash = {"at": ("partial-sharing", 2)}
    original_learn = SeedRun._learn

    def learn(self, name, learner, suite, t):
        if (name, t) == crash["at"]:
            raise RuntimeError("simulated crash")
        return original_learn(self, name, learner, suite, t)

    monkeypatch.setattr(arrays.TensorImageDataset, "__getitem__", get)
    monkeypatch.setattr(arrays.TensorImageDataset, "__getattribute__", attr)
    monkeypatch.setattr(SeedRun, "_learn", watched(learn, lambda name, learner, suite, t: f"{name}:{t}"))
    monkeypatch.setattr(SeedRun, "_search_task", watched(SeedRun._search_task, lambda t, *rest: f"search:{t}"))
    monkeypatch.setattr(SeedRun, "_oracle", watched(SeedRun._oracle, lambda *rest: "oracle:1"))
    monkeypatch.setattr(SeedRun, "_references", watched(SeedRun._references, lambda *rest: "references"))
    cfg = tiny_config(idx, tmp_path / "run", tasks="4+3+3", base={"epochs": 1}, branch={"epochs": 1},
                      search={"subset_per_class": 24, "val_fraction": 0.5, "epochs": 1, "min_steps": 4,
                              "candidates": [0, 2], "tolerance": 0.5, "per_task": True, "oracle": True},
                      strategies=["partial-sharing", "regular-incremental", "naive-finetune", "full-retraining"])
    def owners(data) -> dict[int, int]:
        out = {}
        for j in range(3):
            for ds in (data.train[j], data.plain[j], data.heldout[j], data.search_train.get(j),
                       data.search_val.get(j)):
                if ds is not None:
                    out[id(ds)] = j
        return out

    with pytest.raises(RuntimeError, match="simulated crash"):
        run(RunConfig.from_dict(cfg))
    first, first_owner = list(reads), owners(seen["data"])
    reads.clear()
    crash["at"] = None
    run(RunConfig.from_dict(cfg))  # resumes: partial sharing restored after task 1, then learns task 2
    data = seen["data"]
    owner = owners(data)

    def by_phase(events, owner=owner):
        out: dict[str, set[int]] = {}
        for name, ident in events:
            if ":" in name and ident in owner:
                out.setdefault(name, set()).add(owner[ident])
        return out

    for per_phase in (by_phase(first, first_owner), by_phase(reads)):
        for name, tasks in per_phase.items():
            if name.startswith("full-retraining"):
                continue
            assert tasks == {int(name.rsplit(":", 1)[1])}, (name, tasks)
    resumed = by_phase(reads)
    assert resumed["partial-sharing:2"] == {2} and "partial-sharing:1" not in resumed  # task 1 came from its checkpoint
    assert by_phase(first, first_owner)["search:2"] == {2} and by_phase(first, first_owner)["oracle:1"] == {1}
    assert by_phase(first, first_owner)["partial-sharing:1"] == {1}
    assert resumed["full-retraining:2"] == {0, 1, 2}  # the baseline that keeps old data does read it
    # the instrument sees a direct tensor access as a read
    probe = data.train[0]
    phase["name"] = "probe:1"
    probe._images.sum()
    assert by_phase(reads[-1:]) == {"probe:1": {0}}
