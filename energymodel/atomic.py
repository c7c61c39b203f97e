"""Atomic file output: write to a temporary file in the target folder, fsync it, then rename over the target.

A reader never sees a half-written file, and a failed or killed write never replaces a good file with a
partial one. The temporary file is ``.<target name>.<pid>-<8 hex digits>.tmp`` beside the target (or
another suffix the caller asks for). It is removed
when the write fails (a full disk: one-line :class:`~energymodel.errors.UserError` naming the target). A
process killed mid-write (SIGKILL, power loss) cannot remove it; the next write of the same target removes
such *stale* files: a temporary file of that target is stale when the process whose id is in its name no
longer exists on this machine (a live process keeps its own), or, for a name without a process id, when it
is older than :data:`STALE_SECONDS`.

Guarantees: the data is flushed to the disk (``fsync``) before the rename, so after a crash the target holds
either the old or the new content. The rename itself is made durable by an ``fsync`` of the folder where
the platform allows it; on a power loss right after the rename the old content may come back.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from energymodel.errors import UserError

__all__ = ["atomic_path", "write_text", "write_bytes", "stale_temp_files", "STALE_SECONDS"]

#: a temporary file without a process id in its name is stale after this many seconds (one hour)
STALE_SECONDS = 3600.0


def _temp_pattern(name: str) -> re.Pattern[str]:
    """``.NAME.<pid>-<8 hex>.<suffix>`` (this writer) or ``.NAME.<8 chars>.tmp`` (``tempfile.mkstemp``, before)."""
    return re.compile(re.escape(f".{name}.")
                      + r"(?:(?P<pid>\d+)-[0-9a-f]{8}\.[A-Za-z0-9]+|(?P<legacy>[a-z0-9_]{8})\.tmp)$")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def stale_temp_files(target: str | os.PathLike, *, now: float | None = None) -> list[Path]:
    """Temporary files of ``target`` left by killed writers (see the module docstring for the rule)."""
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    pattern = _temp_pattern(target.name)
    now = time.time() if now is None else now
    out = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for p in entries:
        m = pattern.match(p.name)
        if not m:
            continue
        pid = m.group("pid")
        if pid is not None:
            if int(pid) == os.getpid() or _pid_alive(int(pid)):
                continue
        else:
            try:
                if now - p.stat().st_mtime < STALE_SECONDS:
                    continue
            except OSError:
                continue
        out.append(p)
    return out


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cannot_write(target: Path, exc: OSError) -> UserError:
    return UserError(f"cannot write {target}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsynced and renamed to ``target``.

    Raises :class:`UserError` (one line naming ``target``) when the folder cannot be written or a write
    fails (``OSError``: a full disk, a quota); the temporary file is removed on any failure.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        for parent in (folder, *folder.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise UserError(f"cannot write {target}: {parent} is not a folder")
                break
        if target.is_dir():
            raise UserError(f"cannot write {target}: it is a folder")
    except OSError as exc:  # a name longer than the file system allows, a folder without permission ...
        raise _cannot_write(target, exc) from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in stale_temp_files(target):
            with contextlib.suppress(OSError):
                stale.unlink()
        tmp_path = folder / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix or '.tmp'}"
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        os.close(fd)
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
        _fsync_folder(folder)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise _cannot_write(target, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_text(target: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(target)


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)
