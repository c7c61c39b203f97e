"""Records of a run: derived seeds, JSON encoding, timestamps, versions, and the kill points tests use."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from incremental import __version__

__all__ = ["KILL_ENV", "derive_seed", "_jsonable", "_dumps", "_now", "_event", "versions"]

logger = logging.getLogger("incremental")

#: Testing hook: when this environment variable equals an event name (e.g. ``phase:base`` or
#: ``partial-sharing-task1:epoch:1``), the process SIGKILLs itself right after that event's files are written.
KILL_ENV = "INCREMENTAL_TEST_KILL_AT"


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from any values (stable across processes and Python versions)."""
    digest = hashlib.sha256(repr(tuple(parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _jsonable(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy/torch scalars -> Python, tuples -> lists, Paths -> str."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        obj = obj.item()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _dumps(obj: Any) -> str:
    return json.dumps(_jsonable(obj), indent=1, allow_nan=False) + "\n"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")




def _event(name: str) -> None:
    """Mark a resumable point; the testing hook :data:`KILL_ENV` kills the process here."""
    logger.debug("checkpoint event %s", name)
    if os.environ.get(KILL_ENV) == name:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def versions() -> dict[str, Any]:
    """Versions of everything that can change results."""
    import energymodel

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "incremental": __version__,
        "energymodel": getattr(energymodel, "__version__", None),
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
    }
