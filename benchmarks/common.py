"""Shared helpers of the training benchmarks: random data, a branch at sharing point k, machine description."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energymodel.models.zoo import build  # noqa: E402
from incremental.model.branching import GrownNet  # noqa: E402

NUM_CLASSES = 10


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3,32,32"`` -> ``(3, 32, 32)``."""
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise SystemExit(f"bad --input {text!r}: expected C,H,W") from None
    if len(shape) != 3 or min(shape) < 1:
        raise SystemExit(f"bad --input {text!r}: expected C,H,W")
    return shape


def random_data(samples: int, shape: tuple[int, ...], classes: int = NUM_CLASSES, seed: int = 0) -> TensorDataset:
    """``samples`` standard-normal inputs of ``shape`` with uniform random labels ``0..classes-1``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, *shape, generator=g)
    y = torch.randint(0, classes, (samples,), generator=g)
    return TensorDataset(x, y)


def grown_with_branch(model: str, share: int, classes: int = NUM_CLASSES, seed: int = 0) -> tuple[GrownNet, int]:
    """A frozen base ``model`` plus one trainable branch at sharing point ``share``; returns (grown, task)."""
    torch.manual_seed(seed)
    base = build(model, num_classes=classes)
    grown = GrownNet(base, list(range(classes)))
    grown.freeze_base()
    br = grown.add_branch(share, list(range(classes, 2 * classes)))
    return grown, br.task


def num_blocks(model: str) -> int:
    return GrownNet(build(model, num_classes=NUM_CLASSES), list(range(NUM_CLASSES))).num_blocks


def machine() -> str:
    """One line: CPU/GPU, cores, torch threads, torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{cpu}, {cores} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    else:
        text += ", no GPU"
    return text
