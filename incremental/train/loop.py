"""Training loop for base networks and branches, with frozen-prefix feature caching.

:func:`fit` trains the trainable parameters of ``module`` with cross-entropy on ``(x, y)`` pairs of a torch
``Dataset`` (``y`` = local label). When a frozen ``prefix`` is given (the shared trunk of a branch), the
module sees ``prefix(x)``; the prefix runs in eval mode under ``torch.no_grad()``, so no backward pass ever
enters it and none of its activations are kept.

Feature caching
---------------
If nothing random happens to an input before the prefix, ``prefix(x)`` is the same in every epoch, so it is
computed once per sample (one pass, with a progress bar) and the module trains on the cached features for
all epochs: in memory when the cache is at most ``TrainConfig.cache_memory_limit_bytes`` (2 GiB), else in a
``np.memmap`` file in a temporary folder that is removed afterwards. When the dataset augments inputs and
that augmentation must happen before the prefix (``augment_before_prefix=True``), the prefix instead runs
every step under ``no_grad``. The choice and its reason are logged (logger ``"incremental"``) and returned
in :class:`FitResult`. Caching reads each sample once, so a random transform inside the dataset is sampled
once: pass ``augment_before_prefix=True`` whenever the dataset augments.

Determinism and resumption
--------------------------
Shuffling uses a ``DistributedSampler`` (also with one process) seeded from ``cfg.seed``; its permutation
for epoch ``e`` is a function of ``(seed, e)``. At the start of each epoch the global torch RNG is re-seeded
from ``(seed, epoch, rank)`` inside ``torch.random.fork_rng`` (dropout, in-dataset augmentation with
``num_workers=0``), and DataLoader workers get a generator seeded the same way; the caller's RNG state is
left untouched. The learning rate is a pure function of the global step. Hence ``on_epoch_end`` state
(module and optimizer state dicts) plus ``start_epoch``/``optimizer_state`` reproduce an uninterrupted run.

Distributed
-----------
Under ``torchrun`` (see :mod:`incremental.train.distributed`) each epoch is sharded across ranks, the module is
wrapped in ``DistributedDataParallel``, buffers are broadcast from rank 0 after every epoch, and only rank 0
shows progress bars, logs and calls ``on_epoch_end`` (followed by a barrier). With caching, every rank
computes the features of the whole dataset (simple, and the feature pass is a single forward pass).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from energymodel.errors import UserError
from incremental.train import distributed
from incremental.train.config import (
    FitResult,
    TrainConfig,
    count_parameters,
    mix_seed,
    peak_rss_bytes,
    resolve_device,
    split_batch,
)
from incremental.train.feature_cache import _build_cache, _cache_decision, _FeatureCache

__all__ = ["FitResult", "TrainConfig", "count_parameters", "evaluate_logits", "fit", "fit_branch", "peak_rss_bytes", "resolve_device"]

logger = logging.getLogger("incremental")















def _training_modes(module: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in module.modules()]


def _is_identity(prefix: nn.Module | None) -> bool:
    if prefix is None or isinstance(prefix, nn.Identity):
        return True
    return isinstance(prefix, nn.Sequential) and len(prefix) == 0




class _Range:
    """Length-only stand-in so a ``DistributedSampler`` can shard cached features."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


# ---------------------------------------------------------------------------- layout
def _to_channels_last(modules: list[nn.Module]) -> list[Tensor]:
    """Store every 4-d parameter and buffer of ``modules`` channels-last; return the tensors switched.

    Assigns ``.data``, so the parameters keep their identity (optimizers and the caller's references stay
    valid). :func:`_to_contiguous` undoes exactly these tensors and no others.
    """
    switched: dict[int, Tensor] = {}
    for m in modules:
        for t in itertools.chain(m.parameters(), m.buffers()):
            if t.dim() == 4 and id(t) not in switched and not t.is_contiguous(memory_format=torch.channels_last):
                t.data = t.data.contiguous(memory_format=torch.channels_last)
                switched[id(t)] = t
    return list(switched.values())


def _to_contiguous(tensors: list[Tensor]) -> None:
    for t in tensors:
        t.data = t.data.contiguous()


def _laid_out(x: Tensor, channels_last: bool) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


# ---------------------------------------------------------------------------- optimizer
def _make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.0, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.lr_schedule == "none" or total <= 0:
        return cfg.lr
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(step, total) / total))


# ---------------------------------------------------------------------------- fit
def fit(
    module: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    prefix: nn.Module | None = None,
    augment_before_prefix: bool = False,
    desc: str = "train",
    on_epoch_end: Callable[[int, dict], None] | None = None,
    start_epoch: int = 0,
    optimizer_state: dict | None = None,
) -> FitResult:
    """Train ``module``'s parameters that require grad on ``data`` (cross-entropy on local labels).

    Parameters
    ----------
    module:
        The network or branch to train; moved to the configured device. Every submodule of ``module`` and
        ``prefix`` is left in the train/eval mode it had before the call.
    data:
        Torch ``Dataset`` of ``(x, y)`` pairs, ``y`` the local label (``0 .. C-1``).
    prefix:
        Optional frozen module applied to ``x`` first (a branch's shared trunk): eval mode, ``no_grad``,
        never trained; moved to the device. Must share no parameter with ``module``. An empty
        ``nn.Sequential`` (sharing point 0) counts as no prefix.
    augment_before_prefix:
        True when ``data`` applies random augmentation that must be seen by the prefix: disables caching.
    on_epoch_end:
        ``on_epoch_end(epoch, state)`` after each epoch (rank 0 only). ``epoch`` is the 0-based index of the
        finished epoch; ``state`` holds ``module`` (state dict), ``optimizer`` (state dict), ``epoch``,
        ``next_epoch`` (pass as ``start_epoch`` to resume), ``epochs``, ``losses`` (this call's), ``seed`` and
        ``cache_mode`` (how this fit feeds the module: record it, since a resumed call with no epoch left builds
        no cache and reports ``"off"``). Tensors are live references: save (e.g. :func:`~incremental.model.checkpoint.save_checkpoint`)
        or clone them before returning.
    start_epoch, optimizer_state:
        Resume: load the module's weights from the checkpoint first, then pass its ``next_epoch`` and
        ``optimizer`` state. The result equals an uninterrupted run.
    """
    cfg.validate()
    info = distributed.current()
    device = resolve_device(cfg.device)
    n = len(data)
    if n == 0:
        raise UserError(f"{desc}: the training set is empty")
    if not 0 <= start_epoch <= cfg.epochs:
        raise ValueError(f"start_epoch {start_epoch} out of range 0..{cfg.epochs}")
    if _is_identity(prefix):
        prefix = None
    if prefix is not None:
        shared = {id(p) for p in prefix.parameters()} & {id(p) for p in module.parameters()}
        if shared:
            raise ValueError("the frozen prefix and the trained module share parameters")
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{desc}: the module has no trainable parameters")
    show = cfg.progress and info.is_main
    use_cache, reason = _cache_decision(prefix, cfg, augment_before_prefix, desc)
    if use_cache and start_epoch >= cfg.epochs:
        use_cache, reason = False, "no epoch left to train: features not computed"

    modes = _training_modes(module) + (_training_modes(prefix) if prefix is not None else [])
    module.to(device)
    if prefix is not None:
        prefix.to(device)
        prefix.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    losses: list[float] = []
    epoch_seconds: list[float] = []
    steps = 0
    cache: _FeatureCache | None = None
    channels_last = cfg.memory_format == "channels_last"
    switched: list[Tensor] = []
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.random.fork_rng(devices=rng_devices))
            if channels_last:
                switched = _to_channels_last([module] + ([prefix] if prefix is not None else []))
            if use_cache:
                assert prefix is not None
                torch.manual_seed(mix_seed(cfg.seed, 0x5EED, info.rank))
                cache = _build_cache(prefix, data, cfg, device, desc, show, reason, stack)
                reason = cache.reason
            if info.is_main:
                if prefix is not None:
                    mode = cache.mode if cache is not None else "off"
                    logger.info("%s: feature cache %s: %s", desc, mode, reason)
                else:
                    logger.debug("%s: %s", desc, reason)

            optimizer = _make_optimizer(params, cfg)
            if optimizer_state is not None:
                optimizer.load_state_dict(optimizer_state)
            model: nn.Module = module
            if info.distributed:
                ids = [device.index] if device.type == "cuda" else None
                model = nn.parallel.DistributedDataParallel(module, device_ids=ids)
            sampler = DistributedSampler(
                _Range(n), num_replicas=info.world, rank=info.rank, shuffle=True,
                seed=mix_seed(cfg.seed, 0x5A3D) & 0x7FFFFFFF, drop_last=False,
            )
            steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
            total_steps = cfg.epochs * steps_per_epoch

            for epoch in range(start_epoch, cfg.epochs):
                t0 = time.perf_counter()
                torch.manual_seed(mix_seed(cfg.seed, epoch, info.rank))
                sampler.set_epoch(epoch)
                module.train()
                if cache is not None:
                    order = list(sampler)
                    batches = (
                        cache.batch(order[i : i + cfg.batch_size], device)
                        for i in range(0, len(order), cfg.batch_size)
                    )
                else:
                    loader = DataLoader(
                        data, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", drop_last=False,
                        generator=torch.Generator().manual_seed(mix_seed(cfg.seed, epoch, info.rank, 1)),
                    )
                    batches = loader
                run_loss = torch.zeros((), dtype=torch.float64, device=device)
                seen = 0
                bar = tqdm(total=steps_per_epoch, desc=f"{desc} {epoch + 1}/{cfg.epochs}", unit="batch",
                           disable=not show, leave=False)
                for step, batch in enumerate(batches):
                    if cache is not None:
                        x, y = batch
                    else:
                        x, y = split_batch(batch)
                        x = x.to(device, non_blocking=True)
                        y = y.to(device, non_blocking=True)
                        if prefix is not None:
                            with torch.no_grad():
                                x = prefix(_laid_out(x, channels_last))
                    x = _laid_out(x, channels_last)
                    lr = _lr_at(cfg, epoch * steps_per_epoch + step, total_steps)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    optimizer.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(model(x), y)
                    loss.backward()
                    optimizer.step()
                    b = int(y.shape[0])
                    run_loss += loss.detach().double() * b
                    seen += b
                    steps += 1
                    bar.update(1)
                bar.close()
                total_loss, total_seen = distributed.all_reduce_sum([float(run_loss), float(seen)], device)
                if not math.isfinite(total_loss):
                    raise UserError(f"{desc}: training diverged in epoch {epoch + 1} (loss {total_loss}): "
                                    f"lower the learning rate (lr {cfg.lr:g})")
                if info.distributed:
                    distributed.broadcast_buffers(module)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                epoch_seconds.append(time.perf_counter() - t0)
                losses.append(total_loss / max(total_seen, 1.0))
                if info.is_main:
                    logger.info("%s epoch %d/%d: loss %.4f (%.2f s)", desc, epoch + 1, cfg.epochs,
                                losses[-1], epoch_seconds[-1])
                    if on_epoch_end is not None:
                        on_epoch_end(epoch, {
                            "module": module.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "epoch": epoch,
                            "next_epoch": epoch + 1,
                            "epochs": cfg.epochs,
                            "losses": list(losses),
                            "seed": cfg.seed,
                            "cache_mode": cache.mode if cache is not None else "off",
                        })
                distributed.barrier()
            optimizer.zero_grad(set_to_none=True)  # free the gradients; the weights are what matters now
            feature_bytes = cache.nbytes if cache is not None else 0
            feature_seconds = cache.seconds if cache is not None else 0.0
            mode = cache.mode if cache is not None else "off"
            del cache
    finally:
        _to_contiguous(switched)
        for m, training in modes:  # restore every submodule's own mode (containers may not reflect them)
            m.training = training

    peak_cuda = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return FitResult(
        epochs=cfg.epochs,
        losses=losses,
        epoch_seconds=epoch_seconds,
        feature_seconds=feature_seconds,
        cache_mode=mode,
        cache_reason=reason,
        peak_rss_bytes=peak_rss_bytes(),
        peak_cuda_bytes=peak_cuda,
        samples=n,
        steps=steps,
        start_epoch=start_epoch,
        world=info.world,
        feature_bytes=feature_bytes,
        device=str(device),
        trainable_params=sum(p.numel() for p in params),
    )


def fit_branch(grown: Any, task: int, data: Dataset, cfg: TrainConfig, **kwargs: Any) -> FitResult:
    """Train branch ``task`` of a :class:`~incremental.model.branching.GrownNet` on its own task's data.

    Moves the whole network to the configured device (so the trunk, the other branches and the calibration
    buffers stay together), then ``fit(branch.module, data, cfg, prefix=grown.trunk(branch.share), **kwargs)``.
    """
    grown.to(resolve_device(cfg.device))
    br = grown.branch(task)
    return fit(br.module, data, cfg, prefix=grown.trunk(br.share), desc=kwargs.pop("desc", f"task {task}"), **kwargs)


def evaluate_logits(
    fn: Callable[[Tensor], Tensor],
    data: Dataset,
    batch_size: int,
    device: str | torch.device,
    num_workers: int = 0,
) -> tuple[Tensor, Tensor]:
    """``(logits, labels)`` of ``fn`` over ``data`` in order, on the CPU, under ``torch.no_grad()``.

    ``fn`` receives input batches already on ``device``; put the modules it uses in eval mode first.
    """
    dev = resolve_device(device)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=dev.type == "cuda")
    outs: list[Tensor] = []
    labels: list[Tensor] = []
    with torch.no_grad():
        for batch in loader:
            x, y = split_batch(batch)
            outs.append(fn(x.to(dev, non_blocking=True)).float().cpu())
            labels.append(y.cpu())
    if not outs:
        raise UserError("cannot evaluate on an empty dataset")
    return torch.cat(outs), torch.cat(labels)
