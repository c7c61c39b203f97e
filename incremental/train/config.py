"""What a fit is asked to do (:class:`TrainConfig`) and what it did (:class:`FitResult`), and the small
things every fit needs: the device, independent seeds per purpose, ``(input, label)`` batches, peak memory."""

from __future__ import annotations

import math
import resource
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from energymodel.errors import UserError
from incremental.train import distributed

__all__ = ["FitResult", "TrainConfig", "count_parameters", "peak_rss_bytes", "resolve_device"]


GIB = 1024**3


OPTIMIZERS = ("sgd", "momentum", "adam")


CACHE_CHOICES = ("auto", "on", "off")


LR_SCHEDULES = ("cosine", "none")


MEMORY_FORMATS = ("contiguous", "channels_last")


@dataclass
class TrainConfig:
    """Hyper-parameters and runtime options of :func:`fit`.

    ``optimizer``: ``"sgd"`` (no momentum), ``"momentum"`` (SGD with ``momentum``) or ``"adam"``.
    ``lr_schedule``: ``"cosine"`` (per step, from ``lr`` towards 0 over ``epochs``) or ``"none"``.
    ``cache_features``: ``"auto"`` (cache when possible), ``"on"`` (error when impossible), ``"off"``.
    ``device``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    ``memory_format``: ``"contiguous"`` (NCHW) or ``"channels_last"`` (NHWC): the layout of 4-d weights and
    image batches *while training*. Channels-last is faster for convolutions on most CPUs and on GPUs with
    tensor cores (1.29x on CIFAR ResNet-20, 2 CPU cores: ``benchmarks/results/cifar-throughput.json``); the
    weights go back to the contiguous layout when the fit returns, so evaluation and checkpoints look the same
    either way. The two layouts sum in different orders, so trained weights differ in the last bits.
    """

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "momentum"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    cache_features: str = "auto"
    lr_schedule: str = "cosine"
    progress: bool = True
    cache_memory_limit_bytes: int = 2 * GIB
    cache_dir: str | None = None
    memory_format: str = "contiguous"

    def validate(self) -> None:
        """Raise :class:`~energymodel.errors.UserError` naming the first bad field."""
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r} (choose from {', '.join(OPTIMIZERS)})")
        if self.cache_features not in CACHE_CHOICES:
            raise UserError(
                f"unknown cache_features {self.cache_features!r} (choose from {', '.join(CACHE_CHOICES)})"
            )
        if self.memory_format not in MEMORY_FORMATS:
            raise UserError(
                f"unknown memory_format {self.memory_format!r} (choose from {', '.join(MEMORY_FORMATS)})"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserError(f"unknown lr_schedule {self.lr_schedule!r} (choose from {', '.join(LR_SCHEDULES)})")
        if self.epochs < 0:
            raise UserError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"lr must be a positive number, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise UserError("momentum and weight_decay must be >= 0")
        if self.num_workers < 0:
            raise UserError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.cache_memory_limit_bytes < 0:
            raise UserError("cache_memory_limit_bytes must be >= 0")


@dataclass
class FitResult:
    """What one :func:`fit` call did and what it cost.

    ``losses`` and ``epoch_seconds`` cover the epochs run by this call (``start_epoch .. epochs - 1``).
    ``samples`` is the training-set size; ``steps`` the optimizer steps of this call on this rank.
    ``feature_seconds`` is the one-off feature pass (0 without caching). ``peak_rss_bytes`` is the process's
    peak resident set size so far (``VmHWM``, a lifetime maximum); ``peak_cuda_bytes`` the peak CUDA
    allocation during this call (None without CUDA).
    """

    epochs: int
    losses: list[float]
    epoch_seconds: list[float]
    feature_seconds: float
    cache_mode: str  # "memory" | "memmap" | "off"
    cache_reason: str
    peak_rss_bytes: int
    peak_cuda_bytes: int | None
    samples: int
    steps: int
    start_epoch: int = 0
    world: int = 1
    feature_bytes: int = 0
    device: str = "cpu"
    trainable_params: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return asdict(self)


# ---------------------------------------------------------------------------- small helpers
def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available (``cuda:LOCAL_RANK`` under torchrun) else CPU; validates explicit names."""
    if isinstance(name, torch.device):
        return name
    want = str(name).strip().lower()
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(want)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} requested but CUDA is not available")
        if dev.index is None:
            info = distributed.current()
            index = info.local_rank if info.distributed else torch.cuda.current_device()
            dev = torch.device("cuda", index)
        if dev.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type != "cpu":
        raise UserError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    return dev


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes: the kernel's high-water mark of this process's
    own memory (``VmHWM`` in ``/proc/self/status``) where there is one, else ``getrusage``'s ``ru_maxrss`` (KiB
    on Linux, bytes on macOS). On Linux ``ru_maxrss`` keeps the maximum of the process it was forked from across
    ``exec`` (a run started from a 1 GiB parent reports 1 GiB), so ``VmHWM`` comes first."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameter elements of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (independent streams for (seed, epoch, rank, purpose))."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def split_batch(batch: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        raise UserError("training data must yield (input, label) pairs")
    x, y = batch[0], batch[1]
    if not isinstance(y, Tensor):
        y = torch.as_tensor(y)
    return x, y.long()
