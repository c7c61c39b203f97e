"""The frozen prefix's feature cache: computed once per sample, kept in memory or in a memmap file.

See :mod:`incremental.train` ("Feature caching") for when it is used; :func:`_cache_decision` says whether and
why, :func:`_build_cache` runs the prefix once over the data.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from energymodel.errors import UserError

if TYPE_CHECKING:
    from incremental.train.config import TrainConfig

__all__ = ["_FeatureCache", "_build_cache", "_cache_decision"]

GIB = 1024**3


def _numpy_dtype(dtype: torch.dtype) -> tuple[np.dtype, torch.dtype]:
    table = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}
    if dtype in table:
        return np.dtype(table[dtype]), dtype
    return np.dtype(np.float32), torch.float32


@dataclass
class _FeatureCache:
    features: Tensor | np.ndarray
    labels: Tensor
    mode: str
    reason: str
    nbytes: int
    seconds: float

    def batch(self, idx: list[int], device: torch.device) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(idx, dtype=torch.long)
        if isinstance(self.features, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(self.features[np.asarray(idx, dtype=np.int64)]))
        else:
            x = self.features[index.to(self.features.device)]
        y = self.labels[index]
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _build_cache(
    prefix: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    device: torch.device,
    desc: str,
    show: bool,
    reason_base: str,
    stack: contextlib.ExitStack,
) -> _FeatureCache:
    """Run the frozen prefix once over ``data`` and store its outputs (memory or memmap)."""
    from incremental.train.config import mix_seed, split_batch

    n = len(data)
    loader = DataLoader(
        data,
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(mix_seed(cfg.seed, 0x5EED, 1)),
    )
    start = time.perf_counter()
    labels = torch.empty(n, dtype=torch.long)
    features: Tensor | np.ndarray | None = None
    mode = "memory"
    nbytes = 0
    pos = 0
    bar = tqdm(total=n, desc=f"{desc} features", unit="sample", disable=not show, leave=False)
    with torch.no_grad():
        for batch in loader:
            x, y = split_batch(batch)
            out = prefix(x.to(device, non_blocking=True))
            b = out.shape[0]
            if features is None:
                np_dtype, store_dtype = _numpy_dtype(out.dtype)
                shape = (n, *out.shape[1:])
                nbytes = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
                if nbytes <= cfg.cache_memory_limit_bytes:
                    mode = "memory"
                    features = torch.empty(shape, dtype=store_dtype)
                else:
                    mode = "memmap"
                    folder = Path(tempfile.mkdtemp(prefix="incremental-features-", dir=cfg.cache_dir))
                    stack.callback(shutil.rmtree, folder, True)
                    features = np.memmap(folder / "features.bin", dtype=np_dtype, mode="w+", shape=shape)
            chunk = out.detach().to("cpu", store_dtype)
            if isinstance(features, np.ndarray):
                features[pos : pos + b] = chunk.numpy()
            else:
                features[pos : pos + b] = chunk
            labels[pos : pos + b] = y
            pos += b
            bar.update(b)
    bar.close()
    if pos != n:
        raise UserError(f"{desc}: dataset yielded {pos} samples but reports len() = {n}")
    assert features is not None
    limit = cfg.cache_memory_limit_bytes / GIB
    size = f"{n} samples x {tuple(features.shape[1:])} = {nbytes / 2**20:.1f} MiB"
    if mode == "memory":
        where = "CPU memory"
        if device.type == "cuda":
            free = torch.cuda.mem_get_info(device)[0]
            if nbytes <= free // 4:
                features = features.to(device)
                where = f"{device} memory"
        reason = f"{reason_base}; {size} <= {limit:.3g} GiB limit, cached in {where}"
    else:
        features.flush()
        reason = f"{reason_base}; {size} > {limit:.3g} GiB limit, cached in a memmap file under {Path(features.filename).parent}"
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return _FeatureCache(features, labels, mode, reason, nbytes, time.perf_counter() - start)


def _cache_decision(
    prefix: nn.Module | None, cfg: TrainConfig, augment_before_prefix: bool, desc: str
) -> tuple[bool, str]:
    """(cache?, reason)."""
    if prefix is None:
        return False, "no frozen prefix: nothing to cache"
    if cfg.cache_features == "off":
        return False, "feature caching disabled (cache_features=off): the frozen prefix runs every step under no_grad"
    if augment_before_prefix:
        if cfg.cache_features == "on":
            raise UserError(
                f"{desc}: cache_features=on is impossible: the data is augmented before the frozen prefix "
                "(use cache_features=auto or off)"
            )
        return False, "augmentation happens before the frozen prefix: the prefix runs every step under no_grad"
    why = "forced (cache_features=on)" if cfg.cache_features == "on" else "no augmentation before the frozen prefix"
    return True, f"{why}: prefix features computed once per sample"
