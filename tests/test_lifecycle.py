"""The headline's pieces, each checked by hand: the analytic head and its penalty, the routed ensemble, the
amortisation figures, the statistics' storage width, the references, and the renamed [search] section."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from incremental.agnostic.analytic import AnalyticHead, expansion, gcv_lambda
from incremental.agnostic.methods import task_ensemble
from incremental.evaluation.headline import amortisation, attribution
from incremental.evaluation.references import JOINT_PENALTIES, TrunkSplit, base_only, joint_classifier


def test_gcv_by_hand() -> None:
    """G = diag(4, 1) (V = I), Q = [[2, 0], [0, 1]], N = 3: ||p_1||^2 = 4, ||p_2||^2 = 1.

    lambda = 1:   RSS = 3 - (4 * 6 / 25 + 1 * 3 / 4) = 1.29,  df = 4/5 + 1/2 = 1.3,  GCV = 3 * 1.29 / 1.7^2
    lambda = 0.1: RSS = 3 - (4 * 4.2 / 4.1^2 + 1.2 / 1.1^2),  df = 4/4.1 + 1/1.1,       GCV = 3 RSS / (3 - df)^2
    """
    gram = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
    cross = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    lam, scores = gcv_lambda(gram, cross, 3, lambdas=(0.1, 1.0))
    assert scores[1.0] == pytest.approx(3 * 1.29 / 1.7**2, rel=1e-12)
    rss = 3 - (4 * 4.2 / 4.1**2 + 1.2 / 1.1**2)
    assert scores[0.1] == pytest.approx(3 * rss / (3 - 4 / 4.1 - 1 / 1.1) ** 2, rel=1e-12)
    assert lam == 1.0  # 1.339 < 2.433


def test_the_analytic_head_learned_task_by_task_is_the_joint_ridge_solution() -> None:
    """Exemplar-free and exact: sums added one task at a time give the head a joint fit on all images gives."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(90, 6, generator=g, dtype=torch.float64)
    y = torch.arange(90) % 5  # classes 0-2 in task 0, 3-4 in task 1
    first, second = y < 3, y >= 3
    head = AnalyticHead(width=16)
    head.add(x[first], y[first], 3)
    head.add(x[second], y[second], 5)
    h = torch.relu(x @ expansion(6, 16))
    lam = gcv_lambda(h.T @ h, h.T @ torch.nn.functional.one_hot(y, 5).double(), 90)[0]
    joint = torch.linalg.solve(h.T @ h + lam * torch.eye(16, dtype=torch.float64),
                               h.T @ torch.nn.functional.one_hot(y, 5).double())
    assert head.lam == lam and torch.allclose(head.head, joint, rtol=1e-10, atol=1e-12)
    # what a checkpoint keeps gives the same head: G's 16 * 17 / 2 distinct entries, Q (16 x 5) and N
    assert head.words() == 16 * 17 // 2 + 16 * 5 + 1
    again = AnalyticHead()
    again.load(head.state())
    assert torch.equal(again.scores(x), head.scores(x))


def test_task_ensemble_by_hand() -> None:
    """Two tasks (2 + 1 classes), joint posterior (0.5, 0.25 | 0.25), task 0's expert uniform:
    p(t0) = 0.75, within (2/3, 1/3): c0 = log .75 + (log 2/3 + log 1/2) / 2, c1 = log .75 + (log 1/3 + log 1/2) / 2,
    c2 = log .25 + (0 + 0) / 2."""
    joint = torch.log(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64))
    scores = task_ensemble(joint, [2, 1], [torch.zeros(1, 2), torch.zeros(1, 1)])
    expected = [math.log(0.75) + (math.log(2 / 3) + math.log(0.5)) / 2,
                math.log(0.75) + (math.log(1 / 3) + math.log(0.5)) / 2, math.log(0.25)]
    assert scores[0].tolist() == pytest.approx(expected, rel=1e-12)
    # a confident expert overturns the joint's choice within its task, never across tasks
    flipped = task_ensemble(joint, [2, 1], [torch.tensor([[0.0, 5.0]]), torch.zeros(1, 1)])
    assert int(flipped.argmax()) == 1


def test_amortisation_by_hand() -> None:
    """S = 10 pJ; partial sharing P = 2 + 1, regular R = 8 + 1 per task; 2 epochs per task.
    Break-even: n >= 10 / (9 - 3) -> 2 tasks; after 10 tasks 90 / 40 = 2.25; training-only 8 / 2 = 4; the
    asymptote 9 / 3 = 3 never reaches 0.9 x 4 = 3.6; epochs: p = 1, r = 4 per epoch, rho = 4,
    e = (0.9 * 4 * (10 + 1) - 1) / (0.1 * 4) = 96.5 -> 97 (389 / 108 = 3.602 >= 3.6; at 96: 385 / 107 = 3.598)."""
    am = amortisation(10.0, {"training": 2.0, "other": 1.0}, {"training": 8.0, "other": 1.0}, epochs=2, tasks=1)
    assert am["break_even_tasks"] == 2 and am["ratio_after_tasks"]["10"] == pytest.approx(2.25)
    assert am["training_ratio"] == 4.0 and am["asymptotic_ratio"] == 3.0
    assert am["tasks_to_target"] is None and am["epochs_to_target"] == 97
    # without per-task overheads the asymptote is the training ratio: 0.9 x 4 = 3.6 at n = 3.6 * 10 / (8 - 7.2) = 45
    am = amortisation(10.0, {"training": 2.0, "other": 0.0}, {"training": 8.0, "other": 0.0}, epochs=2, tasks=1)
    assert am["tasks_to_target"] == 45
    # partial sharing dearer per task: it never breaks even
    am = amortisation(10.0, {"training": 5.0, "other": 1.0}, {"training": 4.0, "other": 1.0}, epochs=2, tasks=1)
    assert am["break_even_tasks"] is None and am["asymptotic_ratio"] < 1


def test_statistics_are_priced_at_their_own_width_whatever_the_table() -> None:
    """1,000 float32 numbers: 1,000 words of a 32-bit table, 2,000 of a 16-bit one, 4,000 of an 8-bit one; their
    DRAM energy is words x the table's pJ per word (no pass, no arithmetic here)."""
    from energymodel.analysis.profile import as_table
    from energymodel.models.zoo import build
    from incremental.evaluation.costing import CostModel

    for name, words in (("45nm", 1000), ("45nm-fp16", 2000), ("45nm-int8", 4000)):
        cm = CostModel(lambda n: build("smallcnn", num_classes=n), (1, 28, 28), name, 5)
        st = cm.statistics(share=None, samples=0, batch=64, macs=0.0, numbers=1000)
        assert st["dram_words"] == words
        assert st["energy_pj"] == pytest.approx(words * as_table(name).level_pj("dram"))
        assert cm.statistics(share=None, samples=0, batch=64, macs=0.0, numbers=1000, bits=64)["dram_words"] == 2 * words


def test_references_on_separable_features() -> None:
    """Two tasks of two classes whose features sit on four distinct axes: the base network alone and the joint
    classifier both classify every test image; the joint classifier's penalty is one of its grid."""
    g = torch.Generator().manual_seed(1)

    def split(n: int) -> TrunkSplit:
        feats, labels = [], []
        for t in range(2):
            y = torch.arange(2 * n) % 2 + 2 * t
            x = torch.nn.functional.one_hot(y, 4).float() * 3 + 0.05 * torch.randn(2 * n, 4, generator=g)
            feats.append(x)
            labels.append(y)
        return TrunkSplit(feats, labels)

    train, test, val = split(20), split(10), split(5)
    base = base_only(train, [2, 2], {"test": test}, width=32)
    assert base["analytic-head"]["test"] == 1.0 and base["trunk-gaussian"]["test"] == 1.0
    joint = joint_classifier(train, 4, val, {"test": test}, width=32)
    assert joint["test"] == 1.0 and joint["penalty"] in JOINT_PENALTIES


def test_the_former_calibration_section_is_read_with_a_warning(tmp_path) -> None:
    from incremental.run.config import load_config

    path = tmp_path / "run.toml"
    path.write_text('dataset = "fashion-mnist"\nmodel = "smallcnn"\ntasks = "5+5"\n[calibration]\nepochs = 3\n')
    with pytest.warns(FutureWarning, match=r"\[calibration\] is now \[search\]"):
        cfg = load_config(path)
    assert cfg.search.epochs == 3
    with pytest.warns(FutureWarning, match="calibration.tolerance .* is now search.tolerance"):
        cfg = load_config(path, {"calibration.tolerance": "0.05"})
    assert cfg.search.tolerance == 0.05 and cfg.search.epochs == 3
    both = tmp_path / "both.toml"
    both.write_text(path.read_text() + "[search]\nepochs = 2\n")
    from energymodel.errors import UserError

    with warnings.catch_warnings(), pytest.raises(UserError, match=r"both \[calibration\] and \[search\]"):
        warnings.simplefilter("ignore")
        load_config(both)


def test_attribution_by_hand() -> None:
    """Base network alone 0.85 on n = 2,500 test images: two standard errors are 2 sqrt(0.85 x 0.15 / 2500) =
    0.01428. Partial sharing at 0.864 (+1.4 points) is within them; at 0.865 (+1.5) it is clearly above."""
    h = {"method": "analytic-head", "test_images": 2500,
         "references": {"base_only": {"analytic-head": 0.85}}, "class_il": {"partial-sharing": {"mean": 0.864}}}
    assert "not clearly above the base network alone (86.4 % vs 85.0 %" in attribution(h)
    assert "branches add Task-IL, not Class-IL" in attribution(h)
    h["class_il"]["partial-sharing"]["mean"] = 0.865
    assert attribution(h) == ("Partial sharing's branches add 1.5 points of Class-IL over the base network alone "
                              "(86.5 % vs 85.0 %).")
    h["references"] = None  # no reference, no claim either way
    assert attribution(h) is None
