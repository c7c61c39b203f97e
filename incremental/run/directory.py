"""The run directory: its state, its lock, ``--force`` without data loss, and reading results back.

Guarantees (``docs/engine.md`` "Run directory and resume" states them for users):

* **One process per run directory.** :class:`RunLock` takes an exclusive ``fcntl.flock`` on ``RUN/run.lock``.
  The kernel drops the lock when its process dies (SIGKILL included), so a lock left behind by a dead process
  is never mistaken for a live one, and a reused PID cannot hold it. A second process is refused with the PID
  of the holder. (``flock`` is advisory and local: two machines sharing a network folder are not kept apart.)
* **A refused ``--force`` changes nothing.** A forced run is built in a staging folder beside the run
  directory (``.RUN.force``) while the old run stays untouched; only when the new run has finished is it swapped
  in (two renames: old -> ``.RUN.replaced``, staging -> ``RUN``, then the old one is deleted). A forced run that is
  killed leaves the old run intact and resumes from its staging folder when the same command is run again.
  A kill between the two renames is repaired by the next call (:func:`recover_swap`).
* **An interrupted start is not a dead end.** A folder that holds nothing but a lock file and temporary
  files of the atomic writer (a kill before the first ``run.json``) counts as empty.
* **Changed code is not silently mixed in.** ``run.json`` records the SHA-256 of the model's source file;
  resuming with different code is refused (``--force`` starts over).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import inspect
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from energymodel.errors import UserError
from incremental.run.records import _event

__all__ = [
    "RESULTS_FORMAT", "RunLock", "RunPlan", "load_results", "model_source_hash", "plan_run", "recover_swap",
    "run_status", "finish_swap", "clean_stale_temporaries",
]

RESULTS_FORMAT = "incremental-run/1"
LOCK_NAME = "run.lock"
#: Config fields that do not change results (not compared when resuming).
NON_RESULT_FIELDS = ("out", "device", "progress", "num_workers", "data_workers", "name", "data_cache", "data_root")
#: Largest ``results.json`` / ``run.json`` read back (a run's results are a few MB at most).
MAX_JSON_BYTES = 512 * 2**20


def staging_dir(out: Path) -> Path:
    """Where a ``--force`` run of ``out`` is built: ``.<name>.force`` beside it."""
    return out.parent / f".{out.name}.force"


def _replaced_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.replaced"


# ---------------------------------------------------------------------------- reading
def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file the engine wrote; one-line :class:`UserError` for anything unreadable."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise UserError(f"{what} {path} is {size / 2**20:.0f} MiB, more than any run writes: not read")
        text = path.read_bytes().decode("utf-8")
        return json.loads(text)
    except UserError:
        raise
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text") from None
    except RecursionError:
        raise UserError(f"{what} {path} is nested too deeply to be a run's file") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def run_status(path: str | os.PathLike) -> str:
    """``"done"``, ``"unfinished"`` (a run directory without the DONE marker) or ``"missing"``."""
    p = Path(path)
    if not (p / "run.json").is_file():
        return "missing"
    return "done" if (p / "DONE").is_file() and (p / "results.json").is_file() else "unfinished"


#: Top-level keys every finished run's results.json has (checked before a report is drawn from it).
RESULT_KEYS = ("config", "dataset", "model", "per_seed", "summary", "report", "seeds")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """The ``results.json`` of a finished run; :class:`UserError` (one line) for an unfinished or foreign folder."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"run directory {p} not found" if not p.exists() else f"{p} is a file, not a run directory")
    status = run_status(p)
    if status == "missing":
        raise UserError(f"{p} is not a run directory (no run.json)")
    if status != "done":
        raise UserError(f"run directory {p} is unfinished (rerun `incremental run` on it to resume)")
    results = read_json(p / "results.json", "results file")
    if not isinstance(results, dict):
        raise UserError(f"{p / 'results.json'} holds a JSON {type(results).__name__}, not a run's results")
    if results.get("format") != RESULTS_FORMAT:
        raise UserError(f"{p / 'results.json'} is not an incremental run's results "
                        f"(format {results.get('format')!r}, expected {RESULTS_FORMAT!r})")
    missing = [k for k in RESULT_KEYS if k not in results]
    if missing:
        raise UserError(f"{p / 'results.json'} lacks {', '.join(missing)}: not a complete run's results")
    return results


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted names of the result-changing fields that differ between two ``RunConfig.to_dict()``s."""
    diff = []
    for key in sorted(set(old) | set(new)):
        if key in NON_RESULT_FIELDS:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diff += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diff.append(key)
    return diff


# ---------------------------------------------------------------------------- model code
def model_source_hash(spec: str | None, factory: Any = None) -> dict[str, str] | None:
    """``{"file", "sha256"}`` of the source file that defines the model (a zoo model: its zoo module).

    ``spec`` is the config's ``model`` (zoo name, ``pkg.mod:factory`` or ``file.py:factory``); with a Python
    ``factory`` instead, the file defining it. None when no source file can be found (e.g. a lambda in a REPL).
    """
    path: str | None = None
    try:
        if factory is not None:
            path = inspect.getsourcefile(factory)
        elif spec and ":" in spec:
            target = spec.rsplit(":", 1)[0]
            if target.endswith(".py"):
                path = target
            else:
                import importlib.util

                found = importlib.util.find_spec(target)
                path = found.origin if found is not None else None
        elif spec:
            from energymodel.models.zoo.registry import ZOO

            entry = ZOO.get(spec)
            path = inspect.getsourcefile(entry.factory) if entry is not None else None
    except (TypeError, ImportError, ValueError, OSError):
        path = None
    if not path or not Path(path).is_file():
        return None
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"file": str(Path(path).resolve()), "sha256": digest}


# ---------------------------------------------------------------------------- the lock
def _holder(lock: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = lock.read_text().strip().split()
        if text:
            return str(int(text[0]))
    return "unknown"


class RunLock:
    """An exclusive, kernel-released lock on ``folder/run.lock`` (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise UserError(f"cannot lock run directory {self.folder}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UserError(f"run directory {self.folder} is in use by process {_holder(self.path)}") from None
                raise UserError(f"cannot lock run directory {self.folder}: {exc.strerror or exc}") from None
            try:  # the file may have been replaced between open and flock: lock the one at the path
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)
        raise UserError(f"cannot lock run directory {self.folder}: its lock file keeps changing")

    def release(self) -> None:
        """Delete the lock file (only if it is still ours) and drop the lock.

        A process that opened the file just before the unlink gets its lock on a deleted file, sees that the
        path no longer leads to it (:meth:`acquire` compares inodes) and tries again.
        """
        if self._fd is not None:
            with contextlib.suppress(OSError):
                if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
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
    if not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise UserError(f"run directory {folder} is in use by process {_holder(path)}") from None
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- temporaries
def clean_stale_temporaries(folder: Path) -> int:
    """Delete temporary files of the atomic writer (``.NAME.XXXX.tmp``) under ``folder``; return how many.

    Call only while holding the folder's lock: then no writer of this run is alive, so every such file is
    the remains of a killed write.
    """
    n = 0
    if not folder.is_dir():
        return 0
    for path in folder.rglob(".*.tmp"):
        if path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                n += 1
    return n


def _only_debris(folder: Path) -> bool:
    """True when ``folder`` holds nothing but a lock file and atomic-writer temporaries (an interrupted start)."""
    for path in folder.rglob("*"):
        if path.is_dir():
            continue
        if path.name == LOCK_NAME and path.parent == folder:
            continue
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            continue
        return False
    return True


# ---------------------------------------------------------------------------- planning
@dataclass
class RunPlan:
    """What :func:`plan_run` decided: run into ``work`` (``out`` itself, or the staging folder of a forced run).

    ``state``: ``"new"``, ``"resume"`` or ``"done"``. ``swap``: the run is forced over an existing run, so
    ``work`` replaces ``out`` when it has finished (:func:`finish_swap`).
    """

    out: Path
    work: Path
    state: str
    swap: bool = False


def _meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = read_json(folder / "run.json", "run file")
    except UserError:
        return None
    return meta if isinstance(meta, dict) else None


def _check_same(folder: Path, cfg_dict: dict[str, Any], fingerprint: str, model_hash: dict | None,
                what: str, hint: str) -> None:
    meta = _meta(folder)
    if meta is None:
        raise UserError(f"{folder / 'run.json'} is corrupt or unreadable: {hint}")
    diff = config_diff(meta.get("config", {}), cfg_dict)
    if meta.get("fingerprint") != fingerprint and diff:
        raise UserError(f"run directory {folder} holds {what} run of a different configuration "
                        f"(differs in {', '.join(diff[:5])}): {hint}")
    old_hash = (meta.get("model_source") or {}).get("sha256")
    if old_hash and model_hash and old_hash != model_hash["sha256"]:
        raise UserError(f"the model's code ({model_hash['file']}) changed since run directory {folder} was "
                        f"started: {hint}")


def plan_run(out: Path, cfg_dict: dict[str, Any], fingerprint: str, model_hash: dict | None, force: bool) -> RunPlan:
    """Decide where and how to run, changing nothing on disk (every refusal happens here, before any write)."""
    recover_swap(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"run directory {out} is a file")
    status = run_status(out)
    if status == "missing":
        if out.is_dir() and any(out.iterdir()) and not _only_debris(out):
            raise UserError(f"{out} exists and is not a run directory (no run.json): choose another --out")
        probe_lock(out) if out.is_dir() else None
        return RunPlan(out, out, "new")
    probe_lock(out)
    if not force:
        what = "a finished" if status == "done" else "an unfinished"
        _check_same(out, cfg_dict, fingerprint, model_hash, what, "use --force (force=True in Python) to replace it, or choose another --out")
        return RunPlan(out, out, "done" if status == "done" else "resume")
    stage = staging_dir(out)
    probe_lock(stage) if stage.is_dir() else None
    if run_status(stage) != "missing":
        try:
            _check_same(stage, cfg_dict, fingerprint, model_hash, "a forced", "")
        except UserError:
            return RunPlan(out, stage, "new", swap=True)  # an abandoned forced run of another config: start over
        return RunPlan(out, stage, "done" if run_status(stage) == "done" else "resume", swap=True)
    return RunPlan(out, stage, "new", swap=True)


def prepare_work(plan: RunPlan) -> None:
    """Create (or, for a new forced run, empty) the working folder. Call while holding the lock of ``plan.out``."""
    if plan.swap and plan.state == "new" and plan.work.exists():
        shutil.rmtree(plan.work)
    elif plan.state == "new" and plan.work.is_dir():
        for path in list(plan.work.iterdir()):  # interrupted start: only a lock and temporaries
            if path.name != LOCK_NAME:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    plan.work.mkdir(parents=True, exist_ok=True)


def finish_swap(plan: RunPlan) -> None:
    """Replace ``plan.out`` by the finished forced run in ``plan.work`` (old -> .replaced, work -> out, delete old)."""
    if not plan.swap:
        return
    old = _replaced_dir(plan.out)
    if old.exists():
        shutil.rmtree(old)
    if plan.out.exists():
        os.replace(plan.out, old)
    _event("swap")
    os.replace(plan.work, plan.out)
    shutil.rmtree(old, ignore_errors=True)


def recover_swap(out: Path) -> None:
    """Finish a swap that a kill interrupted (``out`` gone, the finished staging run and the old one beside it)."""
    stage, old = staging_dir(out), _replaced_dir(out)
    if not out.exists() and run_status(stage) == "done" and old.exists():
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    elif out.exists() and old.exists() and run_status(out) != "missing":
        shutil.rmtree(old, ignore_errors=True)


