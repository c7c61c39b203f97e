"""fit(): feature caching equals the uncached path, resumption equals an uninterrupted run, the prefix never trains."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from energymodel.errors import UserError
from energymodel.models.blocks import BlockNet
from incremental.model.branching import GrownNet
from incremental.model.checkpoint import load_checkpoint, save_checkpoint
from incremental.train.config import TrainConfig, resolve_device
from incremental.train.loop import evaluate_logits, fit, fit_branch


def tiny_net(num_classes: int, seed: int = 0, dropout: float = 0.0) -> BlockNet:
    torch.manual_seed(seed)

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    return BlockNet(
        [("b0", block(1, 6)), ("b1", block(6, 6)), ("b2", block(6, 6))],
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(6, num_classes)),
    )


def blobs(classes: list[int], n_per: int, seed: int, noise: float = 0.5) -> TensorDataset:
    protos = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for j, c in enumerate(classes):
        xs.append(protos[c] + noise * torch.randn(n_per, 1, 8, 8, generator=g))
        ys.append(torch.full((n_per,), j, dtype=torch.long))
    return TensorDataset(torch.cat(xs), torch.cat(ys))


class IntLabels(Dataset):
    """(tensor, python int) pairs, as image datasets usually yield."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        x, y = self.data[i]
        return x, int(y)


CFG = TrainConfig(epochs=3, batch_size=16, lr=0.1, progress=False, device="cpu")


def cfg(**changes) -> TrainConfig:
    return dataclasses.replace(CFG, **changes)


def grown_with_branch(share: int = 2, dropout: float = 0.0) -> GrownNet:
    base = tiny_net(2, dropout=dropout)
    fit(base, blobs([0, 1], 30, 1), cfg(epochs=2))
    grown = GrownNet(base, [0, 1])
    torch.manual_seed(5)
    grown.add_branch(share, [2, 3])
    return grown


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_base_training_learns_and_reports_costs() -> None:
    net = tiny_net(2)
    data = IntLabels(blobs([0, 1], 40, 1))
    result = fit(net, data, cfg(epochs=4))
    assert result.cache_mode == "off" and result.samples == 80
    assert result.steps == 4 * math.ceil(80 / 16)
    assert len(result.losses) == len(result.epoch_seconds) == 4
    assert result.losses[-1] < result.losses[0]
    assert (result.peak_cuda_bytes is None) == (result.device == "cpu")
    assert result.trainable_params == sum(p.numel() for p in net.parameters())
    net.eval()
    logits, labels = evaluate_logits(net, blobs([0, 1], 30, 7), 32, "cpu")
    assert logits.shape == (60, 2) and labels.tolist() == [0] * 30 + [1] * 30
    assert (logits.argmax(1) == labels).double().mean() > 0.9


def test_feature_cache_gives_same_weights_as_running_the_prefix(tmp_path, caplog) -> None:
    data = blobs([2, 3], 30, 2)
    results, weights = {}, {}
    for mode in ("off", "on", "memmap"):
        grown = grown_with_branch()
        extra = {"cache_features": "off" if mode == "off" else "on"}
        if mode == "memmap":
            extra.update(cache_memory_limit_bytes=0, cache_dir=str(tmp_path))
        with caplog.at_level(logging.INFO, logger="incremental"):
            results[mode] = fit_branch(grown, 1, data, cfg(**extra))
        weights[mode] = state(grown.branch(1).module)
    assert results["off"].cache_mode == "off" and results["off"].feature_seconds == 0.0
    assert results["on"].cache_mode == "memory" and results["on"].feature_bytes == 60 * 6 * 8 * 8 * 4
    assert results["memmap"].cache_mode == "memmap" and "memmap" in results["memmap"].cache_reason
    assert list(tmp_path.iterdir()) == []  # the memmap folder is removed
    assert any("feature cache memory" in r.getMessage() for r in caplog.records)
    for k in weights["off"]:
        assert torch.allclose(weights["off"][k].float(), weights["on"][k].float(), atol=1e-5), k
        assert torch.equal(weights["on"][k], weights["memmap"][k]), k
    assert results["off"].losses == pytest.approx(results["on"].losses, abs=1e-5)


def test_augmentation_before_prefix_disables_cache() -> None:
    grown = grown_with_branch()
    data = blobs([2, 3], 10, 2)
    result = fit_branch(grown, 1, data, cfg(epochs=1), augment_before_prefix=True)
    assert result.cache_mode == "off" and "augmentation" in result.cache_reason
    with pytest.raises(UserError, match="impossible"):
        fit_branch(grown, 1, data, cfg(epochs=1, cache_features="on"), augment_before_prefix=True)
    # sharing point 0: the (empty) prefix is no prefix at all
    grown0 = grown_with_branch(share=0)
    assert fit_branch(grown0, 1, data, cfg(epochs=1)).cache_mode == "off"


def test_prefix_never_trains_even_if_its_params_require_grad() -> None:
    prefix = tiny_net(2).blocks[:2]
    for p in prefix.parameters():
        p.requires_grad_(True)
    prefix.train()
    before = state(prefix)
    head = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))
    for cache in ("off", "on"):
        fit(head, blobs([0, 1], 20, 3), cfg(epochs=2, cache_features=cache), prefix=prefix)
        for p in prefix.parameters():
            assert p.grad is None
        after = state(prefix)
        for k in before:
            assert torch.equal(before[k], after[k]), k
        assert prefix.training  # its mode is restored
    with pytest.raises(ValueError, match="share parameters"):
        fit(nn.Sequential(prefix, head), blobs([0, 1], 4, 3), cfg(epochs=1), prefix=prefix)


@pytest.mark.parametrize("cache,layout", [("on", "contiguous"), ("off", "contiguous"), ("off", "channels_last"),
                                          ("on", "channels_last")])
def test_resume_gives_identical_weights(tmp_path, cache: str, layout: str) -> None:
    data = blobs([2, 3], 30, 2)
    config = cfg(epochs=4, cache_features=cache, memory_format=layout)

    straight = grown_with_branch(dropout=0.3)
    fit_branch(straight, 1, data, config)

    interrupted = grown_with_branch(dropout=0.3)
    ckpt = tmp_path / "branch.pt"

    def save(epoch: int, st: dict) -> None:
        if epoch == 1:
            save_checkpoint(ckpt, {"module": st["module"], "optimizer": st["optimizer"],
                                   "next_epoch": st["next_epoch"], "losses": st["losses"]})

    fit_branch(interrupted, 1, data, dataclasses.replace(config, epochs=4), on_epoch_end=save)
    # "kill" after epoch 2: rebuild from the checkpoint and resume
    resumed = grown_with_branch(dropout=0.3)
    saved = load_checkpoint(ckpt)
    resumed.branch(1).module.load_state_dict(saved["module"])
    result = fit_branch(resumed, 1, data, config, start_epoch=saved["next_epoch"], optimizer_state=saved["optimizer"])
    assert result.start_epoch == 2 and len(result.losses) == 2

    a, b = state(straight.branch(1).module), state(resumed.branch(1).module)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_memory_format_is_used_while_training_and_undone_after(layout: str) -> None:
    grown = grown_with_branch()
    old = blobs([0, 1], 10, 7).tensors[0]
    with torch.no_grad():
        grown.eval()
        before = grown(old)
    module = grown.branch(1).module
    params = {k: id(p) for k, p in module.named_parameters()}
    seen: list[tuple[bool, bool]] = []

    def look(conv: nn.Module, args: tuple) -> None:
        cl = torch.channels_last
        if conv.in_channels > 1:  # with one input channel both layouts coincide; these have 6 on 8x8 maps
            seen.append((args[0].is_contiguous(memory_format=cl), conv.weight.is_contiguous(memory_format=cl)))

    convs = [m for m in itertools.chain(grown.trunk(1).modules(), module.modules()) if isinstance(m, nn.Conv2d)]
    hooks = [c.register_forward_pre_hook(look) for c in convs]
    fit_branch(grown, 1, blobs([2, 3], 30, 2), cfg(epochs=1, memory_format=layout, cache_features="off"))
    for h in hooks:
        h.remove()
    assert seen and all(s == (layout == "channels_last",) * 2 for s in seen), seen[:4]
    assert {k: id(p) for k, p in module.named_parameters()} == params  # the same Parameter objects
    for t in itertools.chain(grown.parameters(), grown.buffers()):
        assert t.is_contiguous(), "weights go back to the contiguous layout"
    with torch.no_grad():
        grown.eval()
        assert torch.equal(grown(old)[0], before[0])  # the old task's logits, bit for bit


def test_layouts_train_the_same_network_up_to_rounding() -> None:
    nets = {}
    for layout in ("contiguous", "channels_last"):
        nets[layout] = tiny_net(2)
        fit(nets[layout], blobs([0, 1], 30, 1), cfg(epochs=2, memory_format=layout))
    a, b = state(nets["contiguous"]), state(nets["channels_last"])
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-4), k
    with pytest.raises(UserError, match="memory_format"):
        fit(tiny_net(2), blobs([0, 1], 4, 1), cfg(memory_format="nhwc"))


def test_seeded_runs_are_deterministic_and_leave_global_rng_alone() -> None:
    data = blobs([0, 1], 20, 1)
    outs = []
    for seed in (3, 3, 4):
        net = tiny_net(2, dropout=0.2)
        torch.manual_seed(1234)
        rng = torch.get_rng_state()
        fit(net, data, cfg(epochs=2, seed=seed))
        assert torch.equal(rng, torch.get_rng_state())
        outs.append(state(net))
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])
    assert not all(torch.equal(outs[0][k], outs[2][k]) for k in outs[0])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_other_optimizers_and_constant_lr(optimizer: str) -> None:
    net = tiny_net(2)
    result = fit(net, blobs([0, 1], 20, 1), cfg(epochs=3, optimizer=optimizer, lr=0.01, lr_schedule="none"))
    assert result.losses[-1] < result.losses[0]


def test_on_epoch_end_state_and_config_errors() -> None:
    seen: list[tuple[int, set]] = []
    fit(tiny_net(2), blobs([0, 1], 8, 1), cfg(epochs=2),
        on_epoch_end=lambda e, st: seen.append((e, set(st))))
    assert [e for e, _ in seen] == [0, 1]
    assert {"module", "optimizer", "epoch", "next_epoch", "epochs", "losses", "seed"} <= seen[0][1]
    with pytest.raises(UserError, match="optimizer"):
        fit(tiny_net(2), blobs([0, 1], 4, 1), cfg(optimizer="rmsprop"))
    with pytest.raises(UserError, match="cache_features"):
        cfg(cache_features="maybe").validate()
    with pytest.raises(UserError):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="empty"):
        fit(tiny_net(2), TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)), CFG)
    frozen = tiny_net(2)
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        fit(frozen, blobs([0, 1], 4, 1), CFG)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the kernel's VmHWM from /proc (Linux)")
def test_peak_rss_is_the_process_high_water_mark() -> None:
    """In a fresh process that first touches 300 MiB, a fit's ``peak_rss_bytes`` is at least that, and it agrees
    with the kernel's own high-water mark (``VmHWM`` in /proc/self/status, read independently after the fit).
    The process is started by a parent that first touches 900 MiB: ``ru_maxrss`` would carry the parent's
    900 MiB across ``exec`` (it did, in CI, under pytest's own 1 GB); the fit's figure must be its own."""
    code = """
import json, numpy as np, torch
from torch.utils.data import TensorDataset
from incremental.train.config import TrainConfig
from incremental.train.loop import fit
big = np.ones(300 * 2**20 // 8)
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
data = TensorDataset(torch.randn(32, 4), torch.arange(32) % 2)
result = fit(net, data, TrainConfig(epochs=1, batch_size=8, device="cpu", progress=False, seed=0))
hwm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"peak": result.peak_rss_bytes, "hwm": hwm, "big": int(big.sum())}))
"""
    parent = (f"import subprocess, sys, numpy as np\nheavy = np.ones(900 * 2**20 // 8)\n"
              f"sys.stdout.write(subprocess.run([sys.executable, '-c', {code!r}], capture_output=True, text=True,"
              f" check=True).stdout)\nprint(int(heavy.sum()) > 0)\n")
    proc = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=300, check=True)
    got = json.loads(proc.stdout.strip().splitlines()[-2])
    assert got["peak"] >= 300 * 2**20
    assert got["hwm"] < 900 * 2**20  # the child never held the parent's 900 MiB
    assert abs(got["peak"] - got["hwm"]) <= 0.05 * got["hwm"]

