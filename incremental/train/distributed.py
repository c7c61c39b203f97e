"""Data-parallel training through ``torchrun`` (``torch.distributed.run``).

Launch any entry point with ``torchrun --nproc_per_node=N ...``; call :func:`init_from_env` once at start-up.
Without ``WORLD_SIZE`` in the environment (a plain ``python`` run) everything here is a no-op describing a
single process, so the same code runs with and without ``torchrun``.

:func:`incremental.train.loop.fit` asks :func:`current` whether a process group exists; when it does (world > 1)
it shards every epoch with a ``DistributedSampler``, wraps the trained module in
``DistributedDataParallel``, shows progress bars and calls ``on_epoch_end`` (checkpoints) on rank 0 only,
and broadcasts rank 0's buffers (batch-norm running statistics) at the end of every epoch so that all ranks
hold identical state.

Backend: ``nccl`` when CUDA is available (each process pinned to ``cuda:LOCAL_RANK``), else ``gloo``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from energymodel.errors import UserError

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "current",
    "destroy",
    "init_from_env",
    "is_main",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly trivial) data-parallel group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: no process group (single process)

    @property
    def distributed(self) -> bool:
        """True when more than one process trains together."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs, shows progress and writes files)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer") from None


def current() -> DistInfo:
    """The process group this process belongs to, or a single-process :class:`DistInfo` when none exists."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            rank=dist.get_rank(),
            world=dist.get_world_size(),
            local_rank=_env_int("LOCAL_RANK", 0),
            backend=str(dist.get_backend()),
        )
    return DistInfo()


def init_from_env(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``...).

    No-op returning a single-process :class:`DistInfo` when ``WORLD_SIZE`` is unset or 1. Idempotent: when a
    group already exists it is described, not re-created. ``backend`` defaults to ``nccl`` on CUDA machines
    and ``gloo`` otherwise; with ``nccl`` the current device is set to ``cuda:LOCAL_RANK``.
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise UserError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    chosen = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if chosen == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=chosen, rank=rank, world_size=world)
    return DistInfo(rank=rank, world=world, local_rank=local_rank, backend=chosen)


def is_main() -> bool:
    """True unless this process is a non-zero rank of a process group."""
    return current().is_main


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if current().distributed:
        dist.barrier()


def destroy() -> None:
    """Leave the process group, if any (call at the end of a torchrun entry point)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Sum ``values`` element-wise over all ranks (returned unchanged without a process group)."""
    if not current().distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu()]


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. batch-norm running statistics) to every rank (no-op when single)."""
    if not current().distributed:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=src)
