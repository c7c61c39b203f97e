"""Progress of slow commands (``compare``, ``sweep``, ``report``): a tqdm counter of traced networks.

Those commands trace and count one network per strategy and sharing point; every finished trace ticks the
bar (``compare cifar_resnet18: 9 traces [00:12, 0.7 traces/s, BlockNet]``). The bar is shown only when
the stream is a terminal, so redirected logs get no ``\\r`` lines; messages printed while it runs go
through :func:`write` and do not overwrite it. The active bar lives in a context variable for the
duration of the ``with`` block (nothing global outlives it).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import IO

__all__ = ["progress", "traced", "write", "on_trace"]

_BAR: ContextVar[object | None] = ContextVar("energymodel_progress_bar", default=None)
_ON_TRACE: ContextVar[Callable[[str], None] | None] = ContextVar("energymodel_on_trace", default=None)


def traced(label: str) -> None:
    """Tell the active progress bar (if any) that one network was traced."""
    cb = _ON_TRACE.get()
    if cb is not None:
        cb(label)


@contextlib.contextmanager
def on_trace(callback: Callable[[str], None]) -> Iterator[None]:
    """Call ``callback(model class name)`` after every trace inside the ``with`` block."""
    token = _ON_TRACE.set(callback)
    try:
        yield
    finally:
        _ON_TRACE.reset(token)


def write(message: str, stream: IO[str] | None = None) -> None:
    """Print one line to ``stream`` (stderr) without breaking an active progress bar."""
    bar = _BAR.get()
    stream = stream or sys.stderr
    if bar is not None:
        bar.write(message, file=stream)  # type: ignore[attr-defined]
    else:
        print(message, file=stream)


@contextlib.contextmanager
def progress(desc: str, *, stream: IO[str] | None = None, enabled: bool | None = None) -> Iterator[None]:
    """Count traced networks on a tqdm bar on ``stream`` (stderr) while the block runs; off when the stream is
    not a terminal (``enabled=None``), or when tqdm is missing."""
    stream = stream or sys.stderr
    if enabled is None:
        enabled = bool(getattr(stream, "isatty", lambda: False)())
    if not enabled:
        yield
        return
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency of torch's ecosystem, not of ours
        yield
        return
    bar = tqdm(desc=desc, unit=" traces", file=stream, leave=False)

    def tick(label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        bar.update(1)

    bar_token = _BAR.set(bar)
    try:
        with on_trace(tick):
            yield
    finally:
        _BAR.reset(bar_token)
        bar.close()
