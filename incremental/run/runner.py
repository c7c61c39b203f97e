"""A whole experiment from a :class:`~incremental.run.config.RunConfig` to a run directory: :func:`run`.

For every seed: load and split the data, train the base network on task 0, calibrate it and fit its
task-agnostic statistics, search the sharing point (``share = "auto"``), then learn tasks 1..T-1 with every
configured strategy (:mod:`incremental.run.phases`). Results over seeds: :mod:`incremental.run.results`. The run
directory, its lock, ``--force`` and resuming: :mod:`incremental.run.directory`. ``docs/engine.md`` describes the
procedure, the results schema and the resume semantics in full.

Run directory::

    RUN/
      run.json               status ("running" | "done"), config fingerprint, model source hash, versions, seeds
      run.lock               held (flock) while a process works here
      config.resolved.toml   the configuration actually used (every field, defaults filled in)
      seed-<s>/phases/*.json one record per finished phase
      seed-<s>/checkpoints/  base.pt, base-agnostic.pt, <strategy>-task<t>.pt (+ *.partial.pt while a fit runs)
      seed-<s>/seed-result.json
      results.json           everything, all seeds, mean ± std, and the "report" section
      accuracy.csv  agnostic.csv  matrices.csv  calibration_curve.csv  costs.csv  timing.csv
      report.html            written by the command line (``incremental run`` / ``demo``)
      DONE                   written last: the run is complete
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from energymodel.atomic import write_text
from energymodel.errors import UserError
from energymodel.models.blocks import as_block_net
from incremental.data import ImageArrays, class_order
from incremental.evaluation.costing import CostModel, timing_row
from incremental.evaluation.rows import KINDS
from incremental.run.config import RunConfig
from incremental.run.directory import (
    RESULTS_FORMAT,
    RunLock,
    finish_swap,
    load_results,
    model_source_hash,
    open_run,
    plan_run,
    run_status,
)
from incremental.run.phases import run_seed
from incremental.run.records import KILL_ENV, _dumps, _event, _now, derive_seed, versions
from incremental.run.results import aggregate, format_summary, task_classes, write_csvs
from incremental.run.workload import ModelFactory, _check_model, _load_raw, _model_factory
from incremental.train import distributed

__all__ = ["run", "run_status", "load_results", "format_summary", "RESULTS_FORMAT", "KINDS", "KILL_ENV",
           "derive_seed"]

logger = logging.getLogger("incremental")


def run(cfg: RunConfig, *, force: bool = False, model_factory: ModelFactory | None = None,
        data: tuple[ImageArrays, ImageArrays] | None = None) -> Path:
    """Run (or resume, or just report) the experiment ``cfg`` describes; return the run directory.

    ``force``: replace a previous run in ``cfg.out`` — the old run stays untouched until the new one has
    finished (:mod:`incremental.run.directory`). ``model_factory(num_classes)``: build the network with this instead
    of ``cfg.model`` (Python API). ``data``: ``(train, test)`` image arrays instead of loading ``cfg.dataset``.
    Under ``torchrun`` (``WORLD_SIZE`` set) training is data-parallel and only rank 0 writes files.
    """
    info = distributed.init_from_env()
    main = info.is_main
    out = Path(cfg.out)
    model_hash = model_source_hash(cfg.model, model_factory)
    plan = plan_run(out, cfg.to_dict(), cfg.fingerprint(), model_hash, force)  # refusals, before any load
    if plan.state == "done" and not plan.swap:
        if main:  # under the lock: a swap a kill interrupted is finished, and the folder judged again
            plan, locks = open_run(out, cfg.to_dict(), cfg.fingerprint(), model_hash, force)
            for lock in reversed(locks):
                lock.release()
        if plan.state == "done" and not plan.swap:
            logger.info("run directory %s is finished (DONE marker present): not recomputed; use --force (force=True in Python) to redo it",
                        out)
            return out
    from incremental.train.config import resolve_device

    device = resolve_device(cfg.device)
    show = cfg.progress and main
    t0 = time.perf_counter()
    raw = _load_raw(cfg, data, show)  # bad data fails before any folder is touched
    load_seconds = time.perf_counter() - t0
    sizes = cfg.task_sizes
    if sum(sizes) > raw.train.num_classes:
        raise UserError(f"config field 'tasks': {cfg.tasks} needs {sum(sizes)} classes, "
                        f"{raw.source} has {raw.train.num_classes}")
    if cfg.class_order is not None and len(cfg.class_order) != raw.train.num_classes:
        raise UserError(f"config field 'class_order': {len(cfg.class_order)} classes given, "
                        f"{raw.source} has {raw.train.num_classes}")
    order = class_order(raw.train.num_classes, seed=cfg.order_seed, order=cfg.class_order)
    factory = _model_factory(cfg, model_factory, raw.train.shape)
    _check_model(factory, cfg, raw.train.shape, sizes[0])
    logger.info("data: %s (%d train / %d test images, %d classes, shape %s) loaded in %.1f s; model %s on %s",
                raw.source, len(raw.train), len(raw.test), raw.train.num_classes,
                "x".join(map(str, raw.train.shape)), load_seconds, cfg.model, device)
    locks: list[RunLock] = []
    try:
        if main:  # the lock first, then the folder judged again and prepared (another process may have used it)
            plan, locks = open_run(out, cfg.to_dict(), cfg.fingerprint(), model_hash, force)
        distributed.barrier()
        if plan.state != "done":
            _execute(cfg, plan.work, out, plan.state, raw, order, factory, device, info, main, load_seconds,
                     model_hash)
        if main:
            finish_swap(plan, locks)
    finally:
        for lock in reversed(locks):
            lock.release()
    distributed.barrier()
    logger.info("run complete: %s", out / "results.json")
    return out


def _execute(cfg: RunConfig, work: Path, out: Path, state: str, raw, order, factory, device, info, main: bool,
             load_seconds: float, model_hash: dict[str, str] | None) -> None:
    sizes = cfg.task_sizes
    created = _now()
    if state == "resume":
        try:
            created = json.loads((work / "run.json").read_text()).get("created", created)
        except (OSError, json.JSONDecodeError):
            pass
        logger.info("resuming the unfinished run in %s", work)
    meta = {"format": RESULTS_FORMAT, "status": "running", "name": cfg.name or out.name, "created": created,
            "fingerprint": cfg.fingerprint(), "seeds": cfg.seeds, "config": cfg.to_dict(), "versions": versions(),
            "model_source": model_hash, "device": str(device), "world_size": info.world}
    if main:
        write_text(work / "run.json", _dumps(meta))
        write_text(work / "config.resolved.toml", cfg.to_toml())
    per_seed = []
    n_points = len(as_block_net(factory(sizes[0])).blocks) + 1
    show = cfg.progress and main
    for seed in cfg.seeds:
        folder = work / f"seed-{seed}"
        if main:
            (folder / "phases").mkdir(parents=True, exist_ok=True)
            (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        distributed.barrier()
        n_cands = 0
        if cfg.share == "auto":
            n_cands = n_points if cfg.search.candidates == "all" else len(set(cfg.search.candidates) | {0})
            n_cands *= (len(sizes) - 1) if cfg.search.per_task else 1
        total = 2 + n_cands + len(cfg.strategies) * (len(sizes) - 1)
        with tqdm(total=total, desc=f"seed {seed}", unit="phase", disable=not show) as bar:
            result = run_seed(cfg, seed, folder, raw, order, factory, device, main, bar)
        result["timing"].insert(0, timing_row("data loading", load_seconds, phase="data"))
        per_seed.append(result)
    summary, report = aggregate(cfg, per_seed)
    first = per_seed[0]
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT, "status": "done", "name": cfg.name or out.name, "run_dir": str(out),
        "created": created, "finished": _now(), "fingerprint": cfg.fingerprint(), "config": cfg.to_dict(),
        "versions": versions(), "model_source": model_hash, "cwd": os.getcwd(),
        "environment": {"device": str(device), "world_size": info.world, "backend": info.backend},
        "dataset": {
            "name": cfg.dataset, "source": raw.source, "input_shape": list(raw.train.shape),
            "num_classes": raw.train.num_classes, "class_names": raw.train.class_names,
            "class_order": order, "normalisation": {"mean": list(raw.mean), "std": list(raw.std)},
            "tasks": [{"task": t, "classes": c, "class_names": [raw.train.class_names[i] for i in c],
                       "train": first["sizes"]["train"][t], "heldout": first["sizes"]["heldout"][t],
                       "test": first["sizes"]["test"][t]} for t, c in enumerate(task_classes(order, sizes))],
        },
        "model": {"name": cfg.model,
                  "sharing_points": CostModel(factory, raw.train.shape, cfg.energy_table, sizes[0]).points()},
        "energy_table": cfg.energy_table, "seeds": cfg.seeds, "per_seed": per_seed, "summary": summary,
        "report": report,
    }
    if main:
        write_text(work / "results.json", _dumps(results))
        write_csvs(work, per_seed)
        meta.update(status="done", finished=results["finished"])
        write_text(work / "run.json", _dumps(meta))
        write_text(work / "DONE", results["finished"] + "\n")
        _event("done")
    distributed.barrier()
