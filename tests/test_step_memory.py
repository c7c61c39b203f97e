"""The memory of a training step: the footprint formulas by hand, the worked example of docs/cost-model.md,
the modelled peak against PyTorch's memory profiler on real steps, and the memory budget of ``compare``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from example_models import load as load_models  # noqa: E402
from torch import nn

import energymodel
from energymodel.analysis.points import block_prefixes
from energymodel.cli import main
from energymodel.count.footprint import footprint, step_footprint
from energymodel.count.memory_trace import StepLog, Storage
from energymodel.models.chain import block_view
from energymodel.models.zoo import build
from energymodel.referee.memory import measure_step_memory

ROOT = Path(__file__).resolve().parents[1]


M = load_models()


def test_footprint_formulas_by_hand() -> None:
    """Five ops; s2 kept by ops 1 and 3, s3 (no gradient, e.g. pooling indices) by op 2; three parameters."""
    log = StepLog(
        storages={1: Storage(100, 0, 1, "a", grad=True), 2: Storage(200, 1, 3, "b", grad=True, saved_by=[1, 3]),
                  3: Storage(50, 2, 2, "c", saved_by=[2]), 4: Storage(10, 4, 4, "(loss)", grad=True)},
        positions=5, params=[("a", 40, True, 1), ("b", 60, True, 3), ("c", 30, False, 0)],
        buffer_bytes=8, input_bytes=16, target_bytes=4, batch=2)
    fp = step_footprint(log, optimizer="momentum", weight_decay=True)
    # forward F(p): p0 s1 = 100; p1 s1 + s2 = 300; p2 s2 + s3 = 250 (s1 freed); p3 250; p4 + s4 = 260
    assert fp.forward_peak == 300
    # backward B(p) = kept + gradients of storages + parameter gradients read at or after p:
    # p4 250+10+0, p3 250+200+60, p2 250+200+60, p1 200+(100+200)+(40+60) = 600, p0 0+100+100
    assert (fp.backward_peak, fp.phase) == (600, "backward")
    assert fp.step_peak == 100 + 60  # gradients + one parameter-sized temporary (weight decay), the largest
    assert (fp.weights, fp.gradients, fp.optimizer_state, fp.saved) == (130, 100, 100, 250)
    assert fp.peak == (130 + 8 + 100 + 20) + 600


def _doc_example() -> dict[str, int]:
    text = (ROOT / "docs" / "cost-model.md").read_text(encoding="utf-8")
    block = text.split("<!-- example:memory -->")[1].split("<!-- /example -->")[0]
    out = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            out[cells[0].strip("`")] = int(cells[2].replace(",", ""))
    return out


def test_worked_example_in_the_doc_equals_the_code() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    fp = footprint(model, (8,), batch=2, optimizer="momentum")
    doc = _doc_example()
    got = {"weights": fp.weights, "gradients": fp.gradients, "optimizer_state": fp.optimizer_state,
           "inputs": fp.inputs, "saved": fp.saved, "forward_peak": fp.forward_peak,
           "backward_peak": fp.backward_peak, "peak": fp.peak}
    assert doc == got


def _close(model, shape, batch, k=0, optimizer="momentum", tolerance=0.10):
    frozen = block_prefixes(model)[:k] if k else ()
    fp = footprint(model, shape, batch=batch, frozen=frozen, optimizer=optimizer, weight_decay=True)
    measured = measure_step_memory(model, shape, batch=batch, frozen=frozen, optimizer=optimizer, weight_decay=5e-4)
    # weights, state, the batch: exact but for buffers the step does not touch (the num_batches_tracked
    # counters of frozen batch norms), which the profiler does not see
    assert fp.resident == pytest.approx(measured["start_bytes"], rel=1e-3)
    ratio = fp.peak / measured["peak_bytes"]
    assert abs(ratio - 1) <= tolerance, (type(model).__name__, k, ratio)
    return ratio


@pytest.mark.parametrize("factory,k,optimizer", [("smallcnn", 3, "sgd"), ("mobilenet_v3_tiny", 2, "momentum"),
                                                 ("patch_transformer", 2, "adam")])
def test_modelled_peak_within_ten_percent_of_measured(factory, k, optimizer) -> None:
    """A zoo model, a MobileNet-style and a transformer, each with a frozen prefix (every other point, zoo
    and model: benchmarks/bench_step_memory.py)."""
    torch.manual_seed(0)
    model = build(factory) if factory == "smallcnn" else block_view(getattr(M, factory)(), (1, 28, 28))
    _close(model, (1, 28, 28), 16, k, optimizer)


def test_frozen_prefix_keeps_nothing() -> None:
    model = build("cifar_resnet20")
    n = len(block_prefixes(model))
    every = footprint(model, (3, 32, 32), batch=8)
    head_only = footprint(model, (3, 32, 32), batch=8, frozen=block_prefixes(model))
    assert head_only.gradients == sum(p.numel() * 4 for p in model.head.parameters())
    assert 0 < head_only.saved < every.saved / 100  # only the head keeps anything
    assert set(head_only.by_layer) <= {"head.fc", "head.pool", "(loss)", "head.(view)", "head.(flatten)"}
    assert n == 10


def test_profile_compare_and_budget(capsys) -> None:
    prof = energymodel.profile("cifar_resnet20", batch=16, mode="training")
    t = prof.totals
    assert t["training_memory_bytes"] == prof.memory.peak
    assert t["saved_bytes"] == t["memory_saved_bytes"] == prof.memory.saved  # per layer, every byte once
    assert t["weight_bytes"] == t["memory_weights_bytes"] == 272_474 * 4
    df = energymodel.compare("cifar_resnet20", k=[0, 5, 10], samples_new=64, samples_old=64, epochs=1, batch=16,
                             memory_budget="12MiB")
    shared = df[df["strategy"] == "partial-sharing"]
    mem = list(shared["training_memory_bytes"])
    assert mem == sorted(mem, reverse=True) and mem[0] == pytest.approx(prof.memory.peak, rel=0.02)
    fits = [k for k, m in zip(shared["share"], mem) if m <= 12 * 2**20]
    assert df.attrs["shallowest_fitting_point"] == min(fits) and list(df["fits_memory_budget"])[:3] == [
        m <= 12 * 2**20 for m in mem]
    assert main(["compare", "cifar_resnet20", "--k", "0,5,10", "--samples-new", "64", "--samples-old", "64",
                 "--epochs", "1", "--batch", "16", "--memory-budget", "12MiB"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"memory budget 12 MiB: the shallowest sharing point whose training step fits is k={min(fits)} ",
                     out)
    assert main(["compare", "smallcnn", "--memory-budget", "lots"]) == 2
    assert "bad --memory-budget 'lots'" in capsys.readouterr().err
