"""Continual-learning metrics, checked against values computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from incremental.evaluation.metrics import (
    AccuracyMatrix,
    average_accuracy,
    backward_transfer,
    forgetting,
    mean_std,
)

NAN = float("nan")


def matrix() -> AccuracyMatrix:
    #            task0  task1  task2
    # after 0:   0.50
    # after 1:   0.90   0.80
    # after 2:   0.60   0.80   0.70
    m = AccuracyMatrix(3, kind="task_agnostic")
    m.record_row(0, [0.5])
    m.record_row(1, [0.9, 0.8])
    m.record_row(2, [0.6, 0.8, 0.7])
    return m


def test_metrics_by_hand() -> None:
    m = matrix()
    assert m.learned == 3
    # A_2 = (0.6 + 0.8 + 0.7) / 3
    assert m.average_accuracy() == pytest.approx(0.7)
    # F_2 = mean(max(0.5, 0.9) - 0.6, max(0.8) - 0.8) = mean(0.3, 0.0)
    assert m.forgetting() == pytest.approx(0.15)
    # BWT_2 = mean(0.6 - 0.5, 0.8 - 0.8) = 0.05  (not -forgetting: task 0 improved before it dropped)
    assert m.backward_transfer() == pytest.approx(0.05)
    # after task 1: A_1 = 0.85, F_1 = 0.5 - 0.9 = -0.4, BWT_1 = 0.9 - 0.5 = 0.4
    assert m.average_accuracy(after=1) == pytest.approx(0.85)
    assert m.forgetting(after=1) == pytest.approx(-0.4)
    assert m.backward_transfer(after=1) == pytest.approx(0.4)
    # a single task has no forgetting / transfer
    assert m.average_accuracy(after=0) == pytest.approx(0.5)
    assert math.isnan(m.forgetting(after=0)) and math.isnan(m.backward_transfer(after=0))
    # module-level functions on plain arrays agree
    r = m.R
    assert average_accuracy(r) == pytest.approx(0.7)
    assert forgetting(r) == pytest.approx(0.15)
    assert backward_transfer(r) == pytest.approx(0.05)
    assert forgetting([[0.9, NAN], [0.6, 0.95]]) == pytest.approx(0.3)
    assert backward_transfer([[0.9, NAN], [0.6, 0.95]]) == pytest.approx(-0.3)


def test_partial_matrix_frame_and_dict() -> None:
    m = AccuracyMatrix(3)
    m.record_row(0, [0.9])
    m.record(1, 0, 0.9)
    assert m.learned == 1  # row 1 incomplete
    assert m.average_accuracy() == pytest.approx(0.9)
    with pytest.raises(ValueError):
        m.forgetting(after=1)
    with pytest.raises(ValueError):
        m.record(0, 1, 0.5)  # task 1 is not learned after task 0
    with pytest.raises(ValueError):
        m.record(1, 1, NAN)

    full = matrix()
    frame = full.to_frame()
    assert frame.shape == (3, 3) and frame.index.name == "after_task"
    assert list(frame.columns) == ["task_0", "task_1", "task_2"]
    assert frame.loc[2, "task_0"] == 0.6 and np.isnan(frame.loc[0, "task_1"])
    d = full.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert d["matrix"][0] == [0.5, None, None]
    assert d["kind"] == "task_agnostic"
    assert d["forgetting"] == pytest.approx(0.15)
    back = AccuracyMatrix.from_dict(json.loads(text))
    assert np.array_equal(back.R, full.R, equal_nan=True) and back.kind == "task_agnostic"
    single = AccuracyMatrix(1)
    single.record(0, 0, 1.0)
    assert single.to_dict()["forgetting"] is None
    assert AccuracyMatrix(2).to_dict()["average_accuracy"] is None


def test_mean_std() -> None:
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0) and std == pytest.approx(1.0)  # sample std (ddof = 1)
    assert mean_std([0.7]) == (0.7, 0.0)
    assert mean_std([1.0, NAN, 3.0]) == pytest.approx((2.0, math.sqrt(2.0)))
    empty = mean_std([])
    assert math.isnan(empty[0]) and math.isnan(empty[1])
