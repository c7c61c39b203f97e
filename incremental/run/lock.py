"""The run directory's lock: an exclusive, kernel-released ``flock`` on ``RUN/run.lock``, never through a link.

The kernel drops the lock when its process dies (SIGKILL included), so a lock left behind by a dead process
is never mistaken for a live one, and a reused PID cannot hold it. A second process is refused with the PID
of the holder. ``flock`` is advisory and local: two machines sharing a network folder are not kept apart.

The lock file is opened with ``O_NOFOLLOW`` and must be a regular file: a ``run.lock`` that is a symbolic link
(to a user's file, which opening it for writing would truncate) or anything else is refused, and nothing is
written through it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from energymodel.errors import UserError

__all__ = ["LOCK_NAME", "RunLock", "probe_lock"]

LOCK_NAME = "run.lock"


def _open_lock(path: Path, flags: int) -> int | None:
    """A descriptor of the regular file ``path`` (never through a symlink); None when it does not exist."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{path} is a symbolic link, not a lock file: remove it (the run never writes "
                            "through a link)") from None
        raise UserError(f"cannot lock run directory {path.parent}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"{path} is not a regular file: remove it")
    return fd


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError, UserError):
        fd = _open_lock(path, os.O_RDONLY)
        if fd is not None:
            try:
                words = os.read(fd, 64).decode().split()
            finally:
                os.close(fd)
            if words:
                return str(int(words[0]))
    return "unknown"


class RunLock:
    """An exclusive, kernel-released lock on ``folder/run.lock`` (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        for _ in range(3):
            fd = _open_lock(self.path, os.O_RDWR | os.O_CREAT)
            if fd is None:  # removed between the two steps of O_CREAT: try again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UserError(f"run directory {self.folder} is in use by process {_holder(self.path)}") from None
                raise UserError(f"cannot lock run directory {self.folder}: {exc.strerror or exc}") from None
            try:  # the file may have been replaced between open and flock: lock the one at the path
                same = os.fstat(fd).st_ino == os.lstat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                except OSError as exc:
                    os.close(fd)
                    raise UserError(f"cannot lock run directory {self.folder}: {exc.strerror or exc}") from None
                self._fd = fd
                return self
            os.close(fd)
        raise UserError(f"cannot lock run directory {self.folder}: its lock file keeps changing")

    def moved_to(self, folder: Path) -> None:
        """The locked folder was renamed to ``folder`` (the lock, held on the file itself, moved with it)."""
        self.folder = folder
        self.path = folder / LOCK_NAME

    def release(self) -> None:
        """Delete the lock file (only if it is still ours) and drop the lock.

        A process that opened the file just before the unlink gets its lock on a deleted file, sees that the
        path no longer leads to it (:meth:`acquire` compares inodes) and tries again.
        """
        if self._fd is not None:
            with contextlib.suppress(OSError):
                if os.fstat(self._fd).st_ino == os.lstat(self.path).st_ino:
                    self.path.unlink()
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def probe_lock(folder: Path) -> None:
    """Raise :class:`UserError` when a live process holds ``folder``'s lock; changes nothing otherwise."""
    path = folder / LOCK_NAME
    try:
        fd = _open_lock(path, os.O_RDONLY)
    except UserError:
        raise
    if fd is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise UserError(f"run directory {folder} is in use by process {_holder(path)}") from None
    finally:
        os.close(fd)
