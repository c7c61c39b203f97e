"""The run directory: its state, ``--force`` without data loss, planning under the lock, reading results back.

Guarantees (``docs/engine.md`` "Run directory and resume" states them for users):

* **One process per run directory**, and **the lock before any change on disk.** :func:`plan_run` only reads
  (every refusal happens there, before anything is loaded); :func:`open_run` then takes the lock
  (:mod:`incremental.run.lock`) and plans *again*, since another process may have started or finished a run
  in the folder meanwhile. Every rename and deletion of a run (an interrupted swap finished, the folder of
  an interrupted start emptied, an abandoned staging folder removed) happens after that, under the lock.
* **Nothing the run did not make is deleted or followed.** A link is unlinked, never followed (not for the
  lock, the staging folder, or anything deleted). A staging folder carries a mark (:data:`STAGING_MARK`),
  written when it is made; ``--force`` deletes a ``.RUN.force`` only when it holds that mark (or is an empty
  folder), and refuses with one line when it is a file, a link or a user's folder.
* **A refused ``--force`` changes nothing.** A forced run is built in the staging folder ``.RUN.force``
  while the old run stays untouched; only when the new run has finished is it swapped in (two renames: old ->
  ``.RUN.replaced``, staging -> ``RUN``, then the old one is deleted). A forced run that is killed leaves the
  old run intact and resumes from its staging folder when the same command is run again. A kill between the
  two renames is repaired by the next call (:func:`open_run`, under the lock).
* **An interrupted start is not a dead end.** A folder that holds nothing but a lock file, a staging mark and
  temporary files of the atomic writer (a kill before the first ``run.json``) counts as empty.
* **Changed code is not silently mixed in.** ``run.json`` records the SHA-256 of every source file of the
  model (:mod:`incremental.model.source`); resuming with different code is refused, naming the files that
  changed (``--force`` starts over).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from energymodel.errors import UserError
from incremental.model.source import model_source_hash, source_changes
from incremental.run.lock import LOCK_NAME, RunLock, probe_lock
from incremental.run.records import _event

__all__ = [
    "RESULTS_FORMAT", "STAGING_MARK", "RunLock", "RunPlan", "load_results", "model_source_hash", "open_run",
    "plan_run", "run_status", "finish_swap", "clean_stale_temporaries", "staging_dir",
]

logger = logging.getLogger("incremental")

RESULTS_FORMAT = "incremental-run/1"
#: the file that marks a staging folder as made by ``--force`` (checked before the folder is ever deleted)
STAGING_MARK = "STAGING"
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
    """True when ``folder`` holds nothing but a lock file, a staging mark and atomic-writer temporaries (an
    interrupted start). A symbolic link is never debris."""
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            continue
        if path.name in (LOCK_NAME, STAGING_MARK) and path.parent == folder and not path.is_symlink():
            continue
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            continue
        return False
    return True




def _remove(path: Path) -> None:
    """Delete ``path`` without following a link: a link or a file is unlinked, a real folder removed whole
    (``shutil.rmtree`` unlinks the links inside it and never follows them)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


# ---------------------------------------------------------------------------- staging folders
def _marked(folder: Path) -> bool:
    """``folder`` is a real folder (not a link) holding the staging mark (a regular file, not a link)."""
    return (not folder.is_symlink() and folder.is_dir() and (folder / STAGING_MARK).is_file()
            and not (folder / STAGING_MARK).is_symlink())


def _staging_problem(stage: Path) -> str | None:
    """Why ``stage`` may not be deleted and rebuilt by ``--force`` (None: it is ours, absent or an empty folder)."""
    if not os.path.lexists(stage):
        return None
    if stage.is_symlink():
        return "is a symbolic link"
    if not stage.is_dir():
        return "is a file"
    if _marked(stage) or not any(stage.iterdir()):
        return None
    return f"is a folder that --force did not make (it has no {STAGING_MARK} mark)"


def _replaced_problem(old: Path) -> str | None:
    """Why ``old`` (``.RUN.replaced``) is not the old run a swap set aside (None: it is, or it is absent)."""
    if not os.path.lexists(old) or old.is_symlink() or (old / "run.json").is_file():
        return None  # a link is what renaming a linked run directory leaves: unlinking it deletes no data
    return "is not a run directory set aside by --force (no run.json)"


def _pending_swap(out: Path) -> bool:
    """A kill interrupted a swap between its two renames: ``out`` gone, the finished staging run and the old one
    beside it."""
    stage = staging_dir(out)
    return (not os.path.lexists(out) and _marked(stage) and run_status(stage) == "done"
            and os.path.lexists(_replaced_dir(out)) and _replaced_problem(_replaced_dir(out)) is None)


def _mark(stage: Path, out: Path) -> None:
    with open(stage / STAGING_MARK, "x", encoding="utf-8") as fh:
        fh.write(f"staging folder of an `incremental run --force` into {out}; it replaces it when finished\n")


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
    changed = source_changes(meta.get("model_source"), model_hash)
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise UserError(f"the model's code ({', '.join(changed[:3])}{more}) changed since run directory {folder} "
                        f"was started: {hint}")


def _check_out(out: Path) -> None:
    if out.is_symlink() and not out.exists():
        raise UserError(f"run directory {out} is a symbolic link to a missing folder ({os.readlink(out)}): "
                        "create that folder or choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"run directory {out} is a file")


def plan_run(out: Path, cfg_dict: dict[str, Any], fingerprint: str, model_hash: dict | None, force: bool,
             held: tuple[Path, ...] = ()) -> RunPlan:
    """Decide where and how to run. Reads only: every refusal happens here and changes nothing.

    Called twice: before anything is loaded (to refuse early) and again by :func:`open_run` once the lock is
    held, since another process may have changed the folder in between. A swap that a kill interrupted is
    judged as if finished (its staging run is the run); only :func:`open_run` finishes it, under the lock.
    ``held``: folders whose lock this process holds (not probed).
    """
    try:
        return _plan(out, cfg_dict, fingerprint, model_hash, force, held)
    except OSError as exc:  # a name too long, a folder without permission ...
        raise UserError(f"cannot use run directory {out}: {exc.strerror or exc}") from None


def _plan(out: Path, cfg_dict: dict[str, Any], fingerprint: str, model_hash: dict | None, force: bool,
          held: tuple[Path, ...]) -> RunPlan:
    def probe(folder: Path) -> None:
        if folder not in held:
            probe_lock(folder)

    stage = staging_dir(out)
    view = stage if _pending_swap(out) else out
    if view is out:
        _check_out(out)
    status = run_status(view)
    if status == "missing":
        if view.is_dir() and any(view.iterdir()) and not _only_debris(view):
            raise UserError(f"{out} exists and is not a run directory (no run.json): choose another --out")
        if view.is_dir():
            probe(view)
        return RunPlan(out, out, "new")
    probe(view)
    if not force:
        what = "a finished" if status == "done" else "an unfinished"
        _check_same(view, cfg_dict, fingerprint, model_hash, what, "use --force (force=True in Python) to replace it, or choose another --out")
        return RunPlan(out, out, "done" if status == "done" else "resume")
    for folder, problem in ((stage, None if view is stage else _staging_problem(stage)),
                            (_replaced_dir(out), _replaced_problem(_replaced_dir(out)))):
        if problem:
            raise UserError(f"{folder} {problem}: --force needs that name beside {out.name}; move it away "
                            "(nothing there is deleted or followed)")
    if view is stage:
        return RunPlan(out, stage, "new", swap=True)  # once the interrupted swap is finished, a new forced run
    if stage.is_dir():
        probe(stage)
    if run_status(stage) != "missing":
        try:
            _check_same(stage, cfg_dict, fingerprint, model_hash, "a forced", "")
        except UserError:
            return RunPlan(out, stage, "new", swap=True)  # an abandoned forced run of another config: start over
        return RunPlan(out, stage, "done" if run_status(stage) == "done" else "resume", swap=True)
    return RunPlan(out, stage, "new", swap=True)


def open_run(out: Path, cfg_dict: dict[str, Any], fingerprint: str, model_hash: dict | None,
             force: bool) -> tuple[RunPlan, list[RunLock]]:
    """Lock ``out``, finish a swap a kill interrupted, plan again under the lock, prepare the working folder.

    Every change on disk of a run starts here, with the lock held: the folder is judged again once it is
    ours (:func:`plan_run`), so a run that another process finished in the meantime is never emptied. Returns
    the plan and the locks held (``out``'s, then the staging folder's); release them in reverse order.
    """
    locks: list[RunLock] = []
    created = False
    try:
        if _pending_swap(out):
            lock = RunLock(staging_dir(out)).acquire()  # the staging run is the run: its lock is the run's
            locks.append(lock)
            if _pending_swap(out):  # still, now that it is held
                os.replace(staging_dir(out), out)
                lock.moved_to(out)
        if not locks:
            _check_out(out)
            try:
                out.mkdir(parents=True)
                created = True
            except FileExistsError:
                pass
            except OSError as exc:
                raise UserError(f"cannot create run directory {out}: {exc.strerror or exc}") from None
            locks.append(RunLock(out).acquire())
        if run_status(out) != "missing":
            with contextlib.suppress(FileNotFoundError):
                (out / STAGING_MARK).unlink()  # a kill right after a swap's last rename left it
            old = _replaced_dir(out)
            if os.path.lexists(old) and _replaced_problem(old) is None:
                _remove(old)  # the old run of a finished swap
        plan = plan_run(out, cfg_dict, fingerprint, model_hash, force, held=(out,))
        if plan.swap:
            stage = plan.work
            if plan.state == "new" and os.path.lexists(stage):
                problem = _staging_problem(stage)
                if problem:
                    raise UserError(f"{stage} {problem}: move it away")
                _remove(stage)
            stage.mkdir(exist_ok=True)
            if not (stage / STAGING_MARK).is_file():
                _mark(stage, out)
            locks.append(RunLock(stage).acquire())
        elif plan.state == "new":
            for path in list(out.iterdir()):  # an interrupted start: only a lock, a mark and temporaries
                if path.name != LOCK_NAME:
                    _remove(path)
        removed = clean_stale_temporaries(plan.work)
        if removed:
            logger.info("removed %d temporary file(s) left by an interrupted write in %s", removed, plan.work)
        return plan, locks
    except BaseException:
        for lock in reversed(locks):
            lock.release()
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def finish_swap(plan: RunPlan, locks: list[RunLock]) -> None:
    """Replace ``plan.out`` by the finished forced run in ``plan.work`` (old -> .replaced, work -> out, delete old).

    Call holding ``locks`` (:func:`open_run`); the staging folder's lock moves with it to ``plan.out``.
    """
    if not plan.swap:
        return
    old = _replaced_dir(plan.out)
    if os.path.lexists(old):
        _remove(old)
    if os.path.lexists(plan.out):
        os.replace(plan.out, old)
    _event("swap")
    os.replace(plan.work, plan.out)
    locks[-1].moved_to(plan.out)
    with contextlib.suppress(FileNotFoundError):
        (plan.out / STAGING_MARK).unlink()
    with contextlib.suppress(OSError):
        _remove(old)
