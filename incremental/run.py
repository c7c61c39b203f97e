"""A whole experiment from a :class:`~incremental.config.RunConfig` to a run directory: :func:`run`.

For every seed: load and split the data, train the base network on task 0, calibrate and evaluate it,
search the sharing point (``share = "auto"``), then learn tasks 1..T-1 with every configured strategy,
calibrating, checkpointing and evaluating after each task. Costs come from :mod:`incremental.costing`.
``docs/engine.md`` describes the procedure, the results schema and the resume semantics in full.

Run directory::

    RUN/
      run.json               status ("running" | "done"), config fingerprint, versions, seeds
      config.resolved.toml   the configuration actually used (every field, defaults filled in)
      seed-<s>/phases/*.json one record per finished phase (base, base-eval, search-k<k>, <strategy>-task<t>)
      seed-<s>/checkpoints/  base.pt, <strategy>-task<t>.pt (+ *.partial.pt while a fit is under way)
      seed-<s>/seed-result.json
      results.json           everything, all seeds, mean ± std, and the "report" section
      accuracy.csv  matrices.csv  calibration_curve.csv  costs.csv  timing.csv
      DONE                   written last: the run is complete

Resuming: calling :func:`run` on an unfinished run directory with the same configuration skips every
phase that has a record, reloads the network state from its checkpoint, and continues a fit that was cut
off from its last finished epoch. Every random draw is seeded per phase, so the results (accuracies,
logit hashes) are the same as those of an uninterrupted run on the same machine.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from energymodel.atomic import write_text
from energymodel.blocks import as_block_net
from energymodel.errors import UserError

from . import __version__, distributed
from .baselines import make_strategy, rebuild_predictor
from .branching import GrownNet
from .calibration import calibrate, search_sharing_point, sharing_trial
from .checkpoint import load_checkpoint, save_checkpoint
from .config import STRATEGY_ALIASES, RunConfig
from .costing import CostModel, sum_costs, timing_row
from .data import (
    ImageArrays,
    TensorImageDataset,
    cifar_augment,
    class_order,
    dataset_stats,
    holdout_split,
    load_dataset,
    make_tasks,
    subsample,
)
from .data.arrays import per_channel_mean_std
from .metrics import AccuracyMatrix, mean_std
from .train import evaluate_logits, resolve_device

__all__ = ["run", "run_status", "load_results", "format_summary", "RESULTS_FORMAT", "KINDS", "KILL_ENV"]

logger = logging.getLogger("incremental")

RESULTS_FORMAT = "incremental-run/1"
#: Accuracy kinds recorded for every strategy (matrix names in results.json).
KINDS = ("task_aware", "task_agnostic", "task_agnostic_uncalibrated")
#: Testing hook: when this environment variable equals an event name (e.g. ``phase:base`` or
#: ``partial-sharing-task1:epoch:1``), the process SIGKILLs itself right after that event's files are written.
KILL_ENV = "INCREMENTAL_TEST_KILL_AT"

ModelFactory = Callable[[int], nn.Module]


# ---------------------------------------------------------------------------- small helpers
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


def _sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


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


# ---------------------------------------------------------------------------- run directory state
def run_status(path: str | os.PathLike) -> str:
    """``"done"``, ``"unfinished"`` (a run directory without the DONE marker) or ``"missing"``."""
    p = Path(path)
    if not (p / "run.json").is_file():
        return "missing"
    return "done" if (p / "DONE").is_file() and (p / "results.json").is_file() else "unfinished"


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """The ``results.json`` of a finished run; :class:`UserError` (one line) for an unfinished or foreign folder."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"run directory {p} not found")
    status = run_status(p)
    if status == "missing":
        raise UserError(f"{p} is not a run directory (no run.json)")
    if status != "done":
        raise UserError(f"run directory {p} is unfinished (rerun `incremental run` on it to resume)")
    try:
        return json.loads((p / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {p / 'results.json'}: {exc}") from None


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    ignore = {"out", "device", "progress", "num_workers", "data_workers", "name", "data_cache", "data_root"}
    diff = []
    for key in sorted(set(old) | set(new)):
        if key in ignore:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diff += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diff.append(key)
    return diff


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _lock(folder: Path, enabled: bool):
    """One process at a time per run directory (a stale lock of a dead process is taken over)."""
    if not enabled:
        yield
        return
    lock = folder / "run.lock"
    if lock.is_file():
        try:
            pid = int(lock.read_text().strip() or "0")
        except (OSError, ValueError):
            pid = 0
        if pid and pid != os.getpid() and _pid_alive(pid):
            raise UserError(f"run directory {folder} is in use by process {pid}")
    write_text(lock, f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()


# ---------------------------------------------------------------------------- data
@dataclass
class _RawData:
    train: ImageArrays
    test: ImageArrays
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str


def _load_raw(cfg: RunConfig, data: tuple[ImageArrays, ImageArrays] | None, show: bool) -> _RawData:
    if data is not None:
        train, test = data
        mean, std = per_channel_mean_std(train)
        return _RawData(train, test, mean, std, train.source)
    kw: dict[str, Any] = {}
    if cfg.dataset == "imagefolder":
        kw = {"size": cfg.image_size, "cache_dir": cfg.data_cache, "workers": cfg.data_workers or (os.cpu_count() or 1),
              "progress": show}
    elif cfg.image_size is not None or cfg.data_cache is not None:
        raise UserError(f"config fields 'image_size' and 'data_cache' apply to imagefolder, not {cfg.dataset}")
    train = load_dataset(cfg.dataset, cfg.data_root, "train", **kw)
    test = load_dataset(cfg.dataset, cfg.data_root, "test", **kw)
    mean, std = dataset_stats(cfg.dataset, train)
    return _RawData(train, test, tuple(mean), tuple(std), train.source)


@dataclass
class _SeedData:
    classes: list[list[int]]
    class_names: list[list[str]]
    train: list[Dataset]  # per task, training part (local labels; augmented when configured)
    heldout: list[Dataset | None]  # per task, output-calibration hold-out (None when disabled)
    test: list[Dataset]
    search_train: Dataset | None
    search_val: Dataset | None
    sizes: dict[str, list[int]]
    input_shape: tuple[int, int, int]


def _prepare(cfg: RunConfig, raw: _RawData, seed: int, order: list[int]) -> _SeedData:
    train = subsample(raw.train, cfg.train_per_class, seed=derive_seed(seed, "train-subsample"))
    test = subsample(raw.test, cfg.test_per_class, seed=0)  # the same test images for every seed
    tasks = make_tasks(train, test, cfg.task_sizes, order)
    aug = cifar_augment() if cfg.augment else None
    out = _SeedData([], [], [], [], [], None, None, {"train": [], "heldout": [], "test": []}, train.shape)
    for task in tasks:
        part, held = task.train, None
        if cfg.output_calibration.enabled:
            part, held = holdout_split(task.train, cfg.output_calibration.holdout_fraction,
                                       seed=derive_seed(seed, "heldout", task.index))
        lm = task.label_map
        out.classes.append(list(task.classes))
        out.class_names.append(task.class_names)
        out.train.append(TensorImageDataset(part, raw.mean, raw.std, augment=aug, label_map=lm))
        out.heldout.append(TensorImageDataset(held, raw.mean, raw.std, label_map=lm) if held is not None else None)
        out.test.append(TensorImageDataset(task.test, raw.mean, raw.std, label_map=lm))
        out.sizes["train"].append(len(part))
        out.sizes["heldout"].append(len(held) if held is not None else 0)
        out.sizes["test"].append(len(task.test))
    if cfg.share == "auto":
        t1 = tasks[1]
        part = t1.train
        if cfg.output_calibration.enabled:
            part, _ = holdout_split(t1.train, cfg.output_calibration.holdout_fraction, seed=derive_seed(seed, "heldout", 1))
        sub = subsample(part, cfg.calibration.subset_per_class, seed=derive_seed(seed, "search-subset"))
        s_train, s_val = holdout_split(sub, cfg.calibration.val_fraction, seed=derive_seed(seed, "search-val"))
        out.search_train = TensorImageDataset(s_train, raw.mean, raw.std, augment=aug, label_map=t1.label_map)
        out.search_val = TensorImageDataset(s_val, raw.mean, raw.std, label_map=t1.label_map)
        out.sizes["search"] = [len(s_train), len(s_val)]
    return out


# ---------------------------------------------------------------------------- model
def _model_factory(cfg: RunConfig, model_factory: ModelFactory | None) -> ModelFactory:
    if model_factory is not None:
        return lambda n: as_block_net(model_factory(n))
    from energymodel.modelspec import resolve_model

    def build(n: int) -> nn.Module:
        model = resolve_model(cfg.model, n).model
        try:
            return as_block_net(model)
        except ValueError as exc:
            raise UserError(f"model {cfg.model}: {exc}") from None

    return build


def _check_model(factory: ModelFactory, cfg: RunConfig, shape: Sequence[int], num_classes: int) -> None:
    model = factory(num_classes)
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *shape))
    except Exception as exc:  # noqa: BLE001 - any failure means the model does not fit the data
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model {cfg.model} cannot take the {cfg.dataset} images of shape "
                        f"{'x'.join(map(str, shape))}: {first}") from None
    if tuple(out.shape) != (2, num_classes):
        raise UserError(f"model {cfg.model} returns shape {tuple(out.shape)} for {num_classes} classes")


# ---------------------------------------------------------------------------- evaluation
def _evaluate(predictor: nn.Module, tests: list[Dataset], upto: int, batch: int, device: torch.device,
              calibrated: bool, progress: bool = False) -> dict[str, Any]:
    """Row ``upto`` of the accuracy matrices + sha256 of every task's own logits on its own test set."""
    predictor.eval()
    predictor.to(device)
    sizes = [len(predictor.classes_of(t)) for t in range(predictor.tasks)]
    all_classes = torch.tensor(predictor.all_classes)
    cal = [predictor.get_calibration(t) for t in range(predictor.tasks)] if calibrated else None
    row: dict[str, list] = {k: [] for k in KINDS}
    row["sha256"] = []
    for j in tqdm(range(upto + 1), desc=f"evaluate after task {upto}", unit="task", leave=False,
                  disable=not progress):
        logits, labels = evaluate_logits(lambda x: torch.cat(predictor.forward_all(x), dim=1), tests[j], batch, device)
        parts = list(logits.split(sizes, dim=1))
        own = parts[j]
        glob = torch.tensor(predictor.classes_of(j))[labels]
        row["task_aware"].append(float((own.argmax(dim=1) == labels).double().mean()))
        uncal = float((all_classes[logits.argmax(dim=1)] == glob).double().mean())
        row["task_agnostic_uncalibrated"].append(uncal)
        if cal is not None:
            scaled = torch.cat([p / t + b for p, (t, b) in zip(parts, cal)], dim=1)
            row["task_agnostic"].append(float((all_classes[scaled.argmax(dim=1)] == glob).double().mean()))
        else:
            row["task_agnostic"].append(uncal)
        row["sha256"].append(_sha256(own))
    return row


# ---------------------------------------------------------------------------- one seed
class _SeedRun:
    """Runs (or resumes) every phase of one seed in ``folder``."""

    def __init__(self, cfg: RunConfig, seed: int, folder: Path, raw: _RawData, order: list[int],
                 factory: ModelFactory, device: torch.device, main: bool) -> None:
        self.cfg, self.seed, self.folder, self.raw, self.order = cfg, seed, folder, raw, order
        self.factory, self.device, self.main = factory, device, main
        self.phases = folder / "phases"
        self.ckpts = folder / "checkpoints"
        self.timing: list[dict[str, Any]] = []

    # -------------------------------------------------------------- records
    def _record(self, name: str) -> dict[str, Any] | None:
        path = self.phases / f"{name}.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            logger.warning("phase record %s is unreadable: the phase is run again", path)
            return None

    def _save_record(self, name: str, rec: dict[str, Any]) -> None:
        if self.main:
            write_text(self.phases / f"{name}.json", _dumps(rec))
        distributed.barrier()
        _event(f"phase:{name}")

    def _save_ckpt(self, name: str, obj: dict[str, Any]) -> None:
        if self.main:
            save_checkpoint(self.ckpts / f"{name}.pt", obj)
        distributed.barrier()

    def _drop_partial(self, name: str) -> None:
        if self.main:
            with contextlib.suppress(OSError):
                (self.ckpts / f"{name}.partial.pt").unlink()

    def _fit_resumable(self, name: str, module: nn.Module, train: Callable[..., Any]) -> tuple[Any, dict[str, Any]]:
        """Call ``train(on_epoch_end=, start_epoch=, optimizer_state=)``, resuming from ``name.partial.pt``."""
        partial = self.ckpts / f"{name}.partial.pt"
        start, opt_state, prev = 0, None, {"losses": [], "elapsed": 0.0}
        if partial.is_file():
            ck = load_checkpoint(partial)
            module.load_state_dict(ck["module"])
            start, opt_state = int(ck["next_epoch"]), ck["optimizer"]
            prev = {"losses": list(ck.get("losses", [])), "elapsed": float(ck.get("elapsed", 0.0))}
            logger.info("%s: resuming from epoch %d (%s)", name, start + 1, partial)
        t0 = time.perf_counter()

        def on_epoch_end(epoch: int, state: dict[str, Any]) -> None:
            save_checkpoint(partial, {
                "module": state["module"], "optimizer": state["optimizer"], "next_epoch": state["next_epoch"],
                "epochs": state["epochs"], "losses": prev["losses"] + list(state["losses"]),
                "elapsed": prev["elapsed"] + time.perf_counter() - t0,
            })
            _event(f"{name}:epoch:{epoch + 1}")

        result = train(on_epoch_end=on_epoch_end, start_epoch=start, optimizer_state=opt_state)
        elapsed = prev["elapsed"] + time.perf_counter() - t0
        fit = result.fit if hasattr(result, "fit") else result
        info = fit.to_dict() if fit is not None else {}
        info["losses"] = prev["losses"] + list(info.get("losses", []))
        info["resumed_from_epoch"] = start
        return result, {"fit": info, "train_seconds": elapsed}

    # -------------------------------------------------------------- phases
    def execute(self, bar: tqdm) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        self.data = _prepare(cfg, self.raw, self.seed, self.order)
        data_seconds = time.perf_counter() - t0
        self.timing.append(timing_row("data preparation", data_seconds, phase="data"))
        d = self.data
        self.T = len(d.classes)
        self.costs = CostModel(self.factory, d.input_shape, cfg.energy_table, len(d.classes[0]))
        n_blocks = self.costs.num_blocks

        base_rec = self._base(bar)
        eval_rec = self._base_eval(bar)
        sharing = self._sharing(bar, n_blocks)
        self._sharing_info = sharing
        strategies = {}
        for name in cfg.strategies:
            strategies[name] = self._strategy(name, sharing["share"], bar)
        return self._seed_result(base_rec, eval_rec, sharing, strategies)

    def _base(self, bar: tqdm) -> dict[str, Any]:
        cfg, d = self.cfg, self.data
        torch.manual_seed(derive_seed(self.seed, "init", 0))
        model = self.factory(len(d.classes[0]))
        rec = self._record("base")
        if rec is not None:
            model.load_state_dict(load_checkpoint(self.ckpts / "base.pt")["state_dict"])
            logger.info("seed %d: base network restored from %s", self.seed, self.ckpts / "base.pt")
        else:
            logger.info("seed %d: training the base network on task 0 (classes %s, %d images, %d epochs)",
                        self.seed, d.classes[0], len(d.train[0]), cfg.base.epochs)
            tcfg = cfg.train_config("base", derive_seed(self.seed, "fit", 0))
            from .train import fit

            _, info = self._fit_resumable(
                "base", model, lambda **kw: fit(model, d.train[0], tcfg, desc="base", **kw))
            self._save_ckpt("base", {"state_dict": model.state_dict(), "classes": d.classes[0]})
            rec = {"samples": len(d.train[0]), "epochs": cfg.base.epochs, **info}
            self._save_record("base", rec)
            self._drop_partial("base")
        bar.update(1)
        self.base = model
        cost = self.costs.for_fit(share=0, samples=rec["samples"], epochs=rec["epochs"], batch=cfg.base.batch,
                                  optimizer=cfg.base.optimizer, num_classes=len(d.classes[0]), cache_mode="off",
                                  weight_decay=cfg.base.weight_decay)
        rec["cost"] = cost
        self.timing.append(timing_row("base training (task 0)", rec["train_seconds"], cost, phase="base"))
        return rec

    def _base_eval(self, bar: tqdm) -> dict[str, Any]:
        cfg, d = self.cfg, self.data
        rec = self._record("base-eval")
        if rec is None:
            grown = GrownNet(copy.deepcopy(self.base), d.classes[0])
            grown.freeze_base()
            cal, cal_s = None, 0.0
            if cfg.output_calibration.enabled:
                t0 = time.perf_counter()
                res = calibrate(grown, {0: d.heldout[0]}, batch_size=cfg.eval_batch, device=self.device,
                                method=cfg.output_calibration.method)
                cal, cal_s = vars(res[0]), time.perf_counter() - t0
            t0 = time.perf_counter()
            row = _evaluate(grown, d.test, 0, cfg.eval_batch, self.device, calibrated=cfg.output_calibration.enabled,
                            progress=cfg.progress and self.main)
            rec = {"calibration": cal, "calibration_seconds": cal_s, "evaluation": row,
                   "evaluation_seconds": time.perf_counter() - t0}
            self._save_record("base-eval", rec)
        bar.update(1)
        self._base_eval_row = rec["evaluation"]
        cal = rec["calibration"]
        self.cal0 = (cal["temperature"], cal["bias"]) if cal else None
        if cal:
            self.timing.append(timing_row("output calibration (task 0)", rec["calibration_seconds"],
                                          phase="base-eval"))
        self.timing.append(timing_row("evaluation (task 0)", rec["evaluation_seconds"], phase="base-eval"))
        return rec

    def _sharing(self, bar: tqdm, n_blocks: int) -> dict[str, Any]:
        cfg, d = self.cfg, self.data
        points = {p["index"]: p for p in self.costs.points()}
        new_classes = len(d.classes[1])
        full = self.costs.curve(range(n_blocks + 1), samples=len(d.train[1]), epochs=cfg.branch.epochs,
                                batch=cfg.branch.batch, optimizer=cfg.branch.optimizer, num_classes=new_classes,
                                cache_prefix=not cfg.augment and cfg.cache_features != "off",
                                weight_decay=cfg.branch.weight_decay)
        if cfg.share != "auto":
            if isinstance(cfg.share, int):
                if cfg.share > n_blocks:
                    raise UserError(f"config field 'share': sharing point {cfg.share} out of range 0..{n_blocks} "
                                    f"for {cfg.model}")
                k = cfg.share
            else:
                k = min(points.values(), key=lambda p: (abs(p["fraction"] - cfg.share), p["index"]))["index"]
            return {"mode": "fixed", "requested": cfg.share, "share": k, **points[k], "search": None}
        cands = list(range(n_blocks + 1)) if cfg.calibration.candidates == "all" else list(cfg.calibration.candidates)
        bad = [k for k in cands if k > n_blocks]
        if bad:
            raise UserError(f"config field 'calibration.candidates': sharing point {bad[0]} out of range 0..{n_blocks} "
                            f"for {cfg.model}")
        shares = sorted(set(cands) | {0})
        tcfg = cfg.train_config("branch", derive_seed(self.seed, "fit", "search"), epochs=cfg.calibration.epochs)
        grown = GrownNet(copy.deepcopy(self.base), d.classes[0])
        grown.freeze_base()
        trial = sharing_trial(grown, d.search_train, d.search_val, new_classes, tcfg, augment_before_prefix=cfg.augment)
        records: dict[int, dict[str, Any]] = {}

        def train_branch(k: int) -> float:
            rec = self._record(f"search-k{k}")
            if rec is None:
                logger.info("seed %d: sharing-point search: trial branch at k=%d (%d images, %d epochs)",
                            self.seed, k, len(d.search_train), cfg.calibration.epochs)
                torch.manual_seed(derive_seed(self.seed, "init", "search", k))
                t0 = time.perf_counter()
                acc = trial(k)
                rec = {"share": k, "accuracy": acc, "seconds": time.perf_counter() - t0}
                self._save_record(f"search-k{k}", rec)
            bar.update(1)
            records[k] = rec
            return rec["accuracy"]

        trial_costs = self.costs.curve(shares, samples=len(d.search_train), epochs=cfg.calibration.epochs,
                                       batch=cfg.branch.batch, optimizer=cfg.branch.optimizer, num_classes=new_classes,
                                       cache_prefix=not cfg.augment and cfg.cache_features != "off",
                                       weight_decay=cfg.branch.weight_decay, prefix="trial_")
        cost_cols = {k: {"after": points[k]["after"], "fraction": points[k]["fraction"],
                         "fraction_params": points[k]["fraction_params"], "fraction_macs": points[k]["fraction_macs"],
                         **full[k], **trial_costs[k]} for k in shares}
        search = search_sharing_point(train_branch, shares, cfg.calibration.tolerance, costs=cost_cols)
        search.curve["seconds"] = [records[int(k)]["seconds"] for k in search.curve["share"]]
        for k in shares:
            self.timing.append(timing_row(f"sharing search trial k={k}", records[k]["seconds"],
                                          self.costs.training(share=k, samples=len(d.search_train),
                                                              epochs=cfg.calibration.epochs, batch=cfg.branch.batch,
                                                              optimizer=cfg.branch.optimizer, num_classes=new_classes,
                                                              cache_prefix=not cfg.augment and cfg.cache_features != "off",
                                                              weight_decay=cfg.branch.weight_decay > 0),
                                          phase=f"search-k{k}"))
        k = search.chosen
        overhead = sum_costs(self.costs.training(
            share=s, samples=len(d.search_train), epochs=cfg.calibration.epochs, batch=cfg.branch.batch,
            optimizer=cfg.branch.optimizer, num_classes=new_classes,
            cache_prefix=not cfg.augment and cfg.cache_features != "off",
            weight_decay=cfg.branch.weight_decay > 0) for s in shares)
        logger.info("seed %d: sharing point k=%d (after %s, fraction %.2f) chosen", self.seed, k, points[k]["after"],
                    points[k]["fraction"])
        return {"mode": "auto", "requested": "auto", "share": k, **points[k],
                "search": {**search.to_dict(), "samples": len(d.search_train), "val_samples": len(d.search_val),
                           "epochs": cfg.calibration.epochs, "cost": overhead,
                           "seconds": sum(r["seconds"] for r in records.values())}}

    def _strategy(self, name: str, share: int, bar: tqdm) -> dict[str, Any]:
        d = self.data
        internal = STRATEGY_ALIASES[name]
        strat = make_strategy(internal, share=share if internal == "partial_sharing" else None,
                              model_factory=self.factory)
        records: dict[int, dict[str, Any]] = {}
        for t in range(1, self.T):
            rec = self._record(f"{name}-task{t}")
            if rec is None:
                break
            records[t] = rec
        last = max(records, default=0)
        bar.update(last)
        if last < self.T - 1:
            learner = strat.build(self.base, d.classes[0], d.train[0])
            if last >= 1:
                ck = load_checkpoint(self.ckpts / f"{name}-task{last}.pt")
                learner.predictor = rebuild_predictor(ck["structure"], self.factory)
                learner.predictor.load_state_dict(ck["state_dict"])
                if hasattr(learner, "history"):
                    learner.history = [d.train[t] for t in range(last + 1)]
                logger.info("seed %d: %s restored after task %d", self.seed, name, last)
            elif isinstance(learner.predictor, GrownNet) and self.cal0 is not None:
                learner.predictor.set_calibration(0, *self.cal0)
            for t in range(last + 1, self.T):
                records[t] = self._learn(name, learner, t)
                bar.update(1)
        return self._strategy_result(name, records)

    def _learn(self, name: str, learner: Any, t: int) -> dict[str, Any]:
        cfg, d = self.cfg, self.data
        phase = f"{name}-task{t}"
        torch.manual_seed(derive_seed(self.seed, "init", t))
        learner.prepare_task(d.classes[t])
        pred = learner.predictor
        grown = isinstance(pred, GrownNet)
        module = pred.branch(t).module if grown else pred.model
        logger.info("seed %d: %s: learning task %d (classes %s, %d images)", self.seed, name, t, d.classes[t],
                    len(d.train[t]))
        tcfg = cfg.train_config("branch", derive_seed(self.seed, "fit", t))
        record, info = self._fit_resumable(
            phase, module, lambda **kw: learner.train_task(d.train[t], tcfg, augment_before_prefix=cfg.augment,
                                                            desc=f"{name} task {t}", **kw))
        cal, cal_s = None, 0.0
        if grown and cfg.output_calibration.enabled:
            t0 = time.perf_counter()
            res = calibrate(pred, {t: d.heldout[t]}, batch_size=cfg.eval_batch, device=self.device,
                            method=cfg.output_calibration.method)
            cal, cal_s = vars(res[t]), time.perf_counter() - t0
        self._save_ckpt(phase, {"structure": pred.structure(), "state_dict": pred.state_dict()})
        t0 = time.perf_counter()
        row = _evaluate(pred, d.test, t, cfg.eval_batch, self.device, calibrated=grown and cfg.output_calibration.enabled,
                        progress=cfg.progress and self.main)
        eval_s = time.perf_counter() - t0
        old_images = sum(d.sizes["train"][:t]) if record.used_old_data else 0
        storage = self.costs.storage(pred, old_images=old_images)
        rec = {
            "task": t, "classes": d.classes[t], "strategy": name,
            "share": record.share if record.share is not None else 0,
            "branch": grown,
            "num_classes": len(d.classes[t]) if grown else sum(len(c) for c in d.classes[: t + 1]),
            "samples": record.samples, "epochs": record.epochs, "used_old_data": record.used_old_data,
            "trainable_params": record.trainable_params, **info,
            "cache_mode": info["fit"].get("cache_mode", "off"),
            "calibration": cal, "calibration_seconds": cal_s,
            "evaluation": row, "evaluation_seconds": eval_s, "storage": storage,
        }
        self._save_record(phase, rec)
        self._drop_partial(phase)
        return rec

    # -------------------------------------------------------------- summaries
    def _strategy_result(self, name: str, records: dict[int, dict[str, Any]]) -> dict[str, Any]:
        cfg = self.cfg
        base_row = self._base_eval_row
        mats = {k: AccuracyMatrix(self.T, kind=k) for k in KINDS}
        for k in KINDS:
            mats[k].record_row(0, [base_row[k][0]])
        hashes: dict[int, list[str]] = {0: [base_row["sha256"][0]]}
        per_task, costs = [], []
        train_s = cal_s = eval_s = 0.0
        for t in range(1, self.T):
            rec = records[t]
            row = rec["evaluation"]
            for k in KINDS:
                mats[k].record_row(t, row[k])
            for j, h in enumerate(row["sha256"]):
                hashes.setdefault(j, []).append(h)
            cost = self.costs.for_fit(share=rec["share"], samples=rec["samples"], epochs=rec["epochs"],
                                      batch=cfg.branch.batch, optimizer=cfg.branch.optimizer,
                                      num_classes=rec["num_classes"], cache_mode=rec["cache_mode"],
                                      weight_decay=cfg.branch.weight_decay)
            costs.append(cost)
            train_s += rec["train_seconds"]
            cal_s += rec["calibration_seconds"]
            eval_s += rec["evaluation_seconds"]
            per_task.append({
                "task": t, "classes": rec["classes"], "share": rec["share"], "samples": rec["samples"],
                "epochs": rec["epochs"], "used_old_data": rec["used_old_data"],
                "trainable_params": rec["trainable_params"], "cache_mode": rec["cache_mode"],
                "train_seconds": rec["train_seconds"], "calibration_seconds": rec["calibration_seconds"],
                "evaluation_seconds": rec["evaluation_seconds"], "calibration": rec["calibration"],
                "losses": rec["fit"].get("losses"), "peak_rss_bytes": rec["fit"].get("peak_rss_bytes"),
                "resumed_from_epoch": rec["fit"].get("resumed_from_epoch", 0), "cost": cost,
            })
            self.timing.append(timing_row(f"{name} task {t} training", rec["train_seconds"], cost,
                                          phase=f"{name}-task{t}"))
            if rec["calibration"] is not None:
                self.timing.append(timing_row(f"{name} task {t} output calibration", rec["calibration_seconds"],
                                              phase=f"{name}-task{t}"))
            self.timing.append(timing_row(f"{name} task {t} evaluation", rec["evaluation_seconds"],
                                          phase=f"{name}-task{t}"))
        final = {k: mats[k].to_dict() for k in KINDS}
        training = sum_costs(costs)
        overhead = None
        if name == "partial-sharing" and self._sharing_info["search"] is not None:
            overhead = self._sharing_info["search"]["cost"]
        total_energy = training["energy_pj"] + (overhead["energy_pj"] if overhead else 0.0)
        total_macs = training["macs"] + (overhead["macs"] if overhead else 0.0)
        last = records[self.T - 1]
        share = last["share"]
        point = self.costs.points()[share]
        return {
            "strategy": name,
            "share": share,
            "after": point["after"],
            "fraction": point["fraction"],
            "per_task_final": {k: mats[k].R[-1].tolist() for k in KINDS},
            **{f"{k}_accuracy": final[k]["average_accuracy"] for k in KINDS},
            "forgetting": {k: final[k]["forgetting"] for k in KINDS},
            "backward_transfer": {k: final[k]["backward_transfer"] for k in KINDS},
            "matrices": final,
            "task0_logits_sha256": hashes[0],
            "logits_sha256": {str(j): h for j, h in hashes.items()},
            "old_tasks_unchanged": all(len(set(h)) == 1 for h in hashes.values()),
            "tasks": per_task,
            "cost": {
                "training": training,
                "search": overhead,
                "energy_pj": total_energy,
                "macs": total_macs,
                **last["storage"],
            },
            "measured_train_seconds": train_s,
            "measured_calibration_seconds": cal_s,
            "measured_evaluation_seconds": eval_s,
            "modelled_train_energy_pj": training["energy_pj"],
        }

    def _seed_result(self, base_rec, eval_rec, sharing, strategies) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "sizes": self.data.sizes,
            "base": {
                "classes": self.data.classes[0],
                "samples": base_rec["samples"], "epochs": base_rec["epochs"],
                "train_seconds": base_rec["train_seconds"], "losses": base_rec["fit"].get("losses"),
                "accuracy": eval_rec["evaluation"]["task_aware"][0],
                "logits_sha256": eval_rec["evaluation"]["sha256"][0],
                "calibration": eval_rec["calibration"],
                "cost": base_rec["cost"],
            },
            "sharing": sharing,
            "strategies": strategies,
            "timing": self.timing,
        }


def _run_seed(cfg, seed, folder, raw, order, factory, device, main, bar) -> dict[str, Any]:
    """Run or resume one seed; returns (and stores) its result."""
    done = folder / "seed-result.json"
    if done.is_file():
        with contextlib.suppress(OSError, json.JSONDecodeError):
            result = json.loads(done.read_text())
            bar.update(bar.total - bar.n if bar.total else 0)
            logger.info("seed %d: complete in %s", seed, folder)
            return result
    sr = _SeedRun(cfg, seed, folder, raw, order, factory, device, main)
    result = sr.execute(bar)
    if main:
        write_text(done, _dumps(result))
    distributed.barrier()
    _event(f"seed:{seed}")
    return json.loads(_dumps(result))


# ---------------------------------------------------------------------------- aggregation
def _aggregate(cfg: RunConfig, per_seed: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(summary, report)`` over seeds: mean ± std of every headline number, and the report section."""
    metrics = ["task_aware_accuracy", "task_agnostic_accuracy", "task_agnostic_uncalibrated_accuracy",
               "measured_train_seconds", "modelled_train_energy_pj"]
    summary: dict[str, Any] = {"seeds": [r["seed"] for r in per_seed], "strategies": {}}
    for name in cfg.strategies:
        rows = [r["strategies"][name] for r in per_seed]
        entry: dict[str, Any] = {}
        for m in metrics:
            vals = [r[m] if r[m] is not None else float("nan") for r in rows]
            mu, sd = mean_std(vals)
            entry[m] = {"mean": mu, "std": sd, "values": vals}
        for group in ("forgetting", "backward_transfer"):
            for k in KINDS:
                vals = [r[group][k] if r[group][k] is not None else float("nan") for r in rows]
                mu, sd = mean_std(vals)
                entry[f"{group}_{k}"] = {"mean": mu, "std": sd, "values": vals}
        for m in ("energy_pj", "macs", "storage_bytes", "data_storage_bytes"):
            vals = [r["cost"][m] for r in rows]
            mu, sd = mean_std(vals)
            entry[m] = {"mean": mu, "std": sd, "values": vals}
        entry["share"] = {"values": [r["share"] for r in rows]}
        entry["old_tasks_unchanged"] = all(r["old_tasks_unchanged"] for r in rows)
        summary["strategies"][name] = entry
    shares = [r["sharing"]["share"] for r in per_seed]
    chosen = Counter(shares).most_common(1)[0][0]
    summary["chosen_share"] = {"mode": chosen, "values": shares}

    def mean(values: list[float | None]) -> float | None:
        vals = [v for v in values if v is not None and math.isfinite(v)]
        return statistics.fmean(vals) if vals else None

    strategies = []
    for name in cfg.strategies:
        rows = [r["strategies"][name] for r in per_seed]
        share = Counter(r["share"] for r in rows).most_common(1)[0][0]
        frac = next(r["fraction"] for r in rows if r["share"] == share)
        strategies.append({
            "strategy": name, "share": share, "fraction": frac,
            "task_aware_accuracy": mean([r["task_aware_accuracy"] for r in rows]),
            "task_agnostic_accuracy": mean([r["task_agnostic_accuracy"] for r in rows]),
            "task_agnostic_uncalibrated_accuracy": mean([r["task_agnostic_uncalibrated_accuracy"] for r in rows]),
            "energy_pj": mean([r["cost"]["energy_pj"] for r in rows]),
            "macs": mean([r["cost"]["macs"] for r in rows]),
            "measured_train_seconds": mean([r["measured_train_seconds"] for r in rows]),
            "modelled_train_energy_pj": mean([r["modelled_train_energy_pj"] for r in rows]),
        })
    names = {"task_aware": "task-aware", "task_agnostic": "task-agnostic, calibrated",
             "task_agnostic_uncalibrated": "task-agnostic, uncalibrated"}
    matrices = {}
    T = len(cfg.task_sizes)
    for name in cfg.strategies:
        for k in KINDS:
            stack = np.array([[[np.nan if v is None else v for v in row]
                               for row in r["strategies"][name]["matrices"][k]["matrix"]] for r in per_seed],
                             dtype=float)
            with np.errstate(all="ignore"), _quiet_nanmean():
                avg = np.nanmean(stack, axis=0)
            matrices[f"{name} ({names[k]})"] = {
                "tasks": [f"task {t}" for t in range(T)],
                "values": [[None if not math.isfinite(v) else float(v) for v in row] for row in avg.tolist()],
            }
    curve = []
    searches = [r["sharing"]["search"] for r in per_seed if r["sharing"]["search"] is not None]
    if searches:
        by_share: dict[int, list[dict[str, Any]]] = {}
        for s in searches:
            for row in s["curve"]:
                by_share.setdefault(int(row["share"]), []).append(row)
        for k in sorted(by_share):
            rows = by_share[k]
            curve.append({
                "share": k, "fraction": rows[0]["fraction"],
                "accuracy": mean([r["accuracy"] for r in rows]),
                "energy_pj": mean([r["energy_pj"] for r in rows]),
                "within_tolerance": Counter(bool(r["within_tolerance"]) for r in rows).most_common(1)[0][0],
            })
    timing: dict[str, list[dict[str, Any]]] = {}
    for r in per_seed:
        for row in r["timing"]:
            timing.setdefault(row["label"], []).append(row)
    timing_rows = [{"label": label, "measured_seconds": mean([x["measured_seconds"] for x in rows]),
                    "modelled_macs": rows[0]["modelled_macs"], "modelled_energy_pj": rows[0]["modelled_energy_pj"]}
                   for label, rows in timing.items()]
    report = {"strategies": strategies, "matrices": matrices, "calibration_curve": curve, "chosen_share": chosen,
              "timing": timing_rows}
    return summary, report


@contextlib.contextmanager
def _quiet_nanmean():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _write_csvs(folder: Path, per_seed: list[dict[str, Any]], cfg: RunConfig) -> None:
    acc, mats, curve, costs, timing = [], [], [], [], []
    for r in per_seed:
        s = r["seed"]
        for name, st in r["strategies"].items():
            acc.append({
                "seed": s, "strategy": name, "share": st["share"], "fraction": st["fraction"],
                **{f"{k}_accuracy": st[f"{k}_accuracy"] for k in KINDS},
                **{f"forgetting_{k}": st["forgetting"][k] for k in KINDS},
                **{f"backward_transfer_{k}": st["backward_transfer"][k] for k in KINDS},
                "old_tasks_unchanged": st["old_tasks_unchanged"],
                "energy_pj": st["cost"]["energy_pj"], "macs": st["cost"]["macs"],
                "modelled_train_energy_pj": st["modelled_train_energy_pj"],
                "measured_train_seconds": st["measured_train_seconds"],
                "storage_bytes": st["cost"]["storage_bytes"], "data_storage_bytes": st["cost"]["data_storage_bytes"],
            })
            for k in KINDS:
                for i, row in enumerate(st["matrices"][k]["matrix"]):
                    for j, v in enumerate(row):
                        if v is not None:
                            mats.append({"seed": s, "strategy": name, "kind": k, "after_task": i, "task": j,
                                         "accuracy": v})
            for task in st["tasks"]:
                costs.append({"seed": s, "strategy": name, "task": task["task"], "share": task["share"],
                              "samples": task["samples"], "epochs": task["epochs"],
                              "used_old_data": task["used_old_data"], "cache_mode": task["cache_mode"],
                              "measured_train_seconds": task["train_seconds"],
                              **{k: v for k, v in task["cost"].items() if k not in ("share", "samples", "epochs")}})
        base_cost = r["base"]["cost"]
        costs.append({"seed": s, "strategy": "base", "task": 0, "share": 0, "samples": r["base"]["samples"],
                      "epochs": r["base"]["epochs"], "used_old_data": False, "cache_mode": "off",
                      "measured_train_seconds": r["base"]["train_seconds"],
                      **{k: v for k, v in base_cost.items() if k not in ("share", "samples", "epochs")}})
        if r["sharing"]["search"] is not None:
            for row in r["sharing"]["search"]["curve"]:
                curve.append({"seed": s, **row})
        for row in r["timing"]:
            timing.append({"seed": s, **row})
    for name, rows in (("accuracy.csv", acc), ("matrices.csv", mats), ("calibration_curve.csv", curve),
                       ("costs.csv", costs), ("timing.csv", timing)):
        frame = pd.DataFrame(rows)
        write_text(folder / name, frame.to_csv(index=False))


# ---------------------------------------------------------------------------- entry point
def _prepare_dir(cfg: RunConfig, out: Path, force: bool, main: bool) -> str:
    """Decide what to do with ``out``: ``"new"``, ``"resume"`` or ``"done"`` (and clear it on ``force``)."""
    status = run_status(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"run directory {out} is a file")
    if status == "missing":
        if out.is_dir() and any(out.iterdir()):
            raise UserError(f"{out} exists and is not a run directory (no run.json): choose another --out")
        return "new"
    try:
        meta = json.loads((out / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        meta = {}
    if force:
        if main:
            logger.info("--force: removing the previous run in %s", out)
            shutil.rmtree(out)
        distributed.barrier()
        return "new"
    diff = _config_diff(meta.get("config", {}), cfg.to_dict())
    if meta.get("fingerprint") != cfg.fingerprint() and diff:
        what = "finished" if status == "done" else "unfinished"
        raise UserError(f"run directory {out} holds a {what} run of a different configuration "
                        f"(differs in {', '.join(diff[:5])}): use --force to replace it or choose another --out")
    return "done" if status == "done" else "resume"


def run(cfg: RunConfig, *, force: bool = False, model_factory: ModelFactory | None = None,
        data: tuple[ImageArrays, ImageArrays] | None = None) -> Path:
    """Run (or resume, or just report) the experiment ``cfg`` describes; return the run directory.

    ``force``: replace a previous run in ``cfg.out``. ``model_factory(num_classes)``: build the network
    with this instead of ``cfg.model`` (Python API). ``data``: ``(train, test)`` image arrays instead of
    loading ``cfg.dataset``. Under ``torchrun`` (``WORLD_SIZE`` set) training is data-parallel and only
    rank 0 writes files.
    """
    info = distributed.init_from_env()
    main = info.is_main
    out = Path(cfg.out)
    state = _prepare_dir(cfg, out, force, main)
    if state == "done":
        logger.info("run directory %s is finished (DONE marker present): not recomputed; use --force to redo it", out)
        return out
    device = resolve_device(cfg.device)
    show = cfg.progress and main
    t0 = time.perf_counter()
    raw = _load_raw(cfg, data, show)  # bad data fails before the run directory is touched
    load_seconds = time.perf_counter() - t0
    sizes = cfg.task_sizes
    if sum(sizes) > raw.train.num_classes:
        raise UserError(f"config field 'tasks': {cfg.tasks} needs {sum(sizes)} classes, "
                        f"{raw.source} has {raw.train.num_classes}")
    if cfg.class_order is not None and len(cfg.class_order) != raw.train.num_classes:
        raise UserError(f"config field 'class_order': {len(cfg.class_order)} classes given, "
                        f"{raw.source} has {raw.train.num_classes}")
    order = class_order(raw.train.num_classes, seed=cfg.order_seed, order=cfg.class_order)
    factory = _model_factory(cfg, model_factory)
    _check_model(factory, cfg, raw.train.shape, sizes[0])
    logger.info("data: %s (%d train / %d test images, %d classes, shape %s) loaded in %.1f s; model %s on %s",
                raw.source, len(raw.train), len(raw.test), raw.train.num_classes,
                "x".join(map(str, raw.train.shape)), load_seconds, cfg.model, device)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    with _lock(out, main):
        created = _now()
        if state == "resume":
            with contextlib.suppress(OSError, json.JSONDecodeError):
                created = json.loads((out / "run.json").read_text()).get("created", created)
            logger.info("resuming the unfinished run in %s", out)
        meta = {"format": RESULTS_FORMAT, "status": "running", "name": cfg.name or out.name, "created": created,
                "fingerprint": cfg.fingerprint(), "seeds": cfg.seeds, "config": cfg.to_dict(), "versions": versions(),
                "device": str(device), "world_size": info.world}
        if main:
            write_text(out / "run.json", _dumps(meta))
            write_text(out / "config.resolved.toml", cfg.to_toml())
        per_seed = []
        n_points = None
        for seed in cfg.seeds:
            folder = out / f"seed-{seed}"
            if main:
                (folder / "phases").mkdir(parents=True, exist_ok=True)
                (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
            distributed.barrier()
            if n_points is None:
                n_points = len(as_block_net(factory(sizes[0])).blocks) + 1
            n_cands = 0
            if cfg.share == "auto":
                n_cands = n_points if cfg.calibration.candidates == "all" else len(set(cfg.calibration.candidates) | {0})
            total = 2 + n_cands + len(cfg.strategies) * (len(sizes) - 1)
            with tqdm(total=total, desc=f"seed {seed}", unit="phase", disable=not show) as bar:
                result = _run_seed(cfg, seed, folder, raw, order, factory, device, main, bar)
            result["timing"].insert(0, timing_row("data loading", load_seconds, phase="data"))
            per_seed.append(result)
        summary, report = _aggregate(cfg, per_seed)
        first = per_seed[0]
        results = {
            "format": RESULTS_FORMAT,
            "status": "done",
            "name": cfg.name or out.name,
            "run_dir": str(out),
            "created": created,
            "finished": _now(),
            "fingerprint": cfg.fingerprint(),
            "config": cfg.to_dict(),
            "versions": versions(),
            "environment": {"device": str(device), "world_size": info.world, "backend": info.backend},
            "dataset": {
                "name": cfg.dataset, "source": raw.source, "input_shape": list(raw.train.shape),
                "num_classes": raw.train.num_classes, "class_names": raw.train.class_names,
                "class_order": order, "normalisation": {"mean": list(raw.mean), "std": list(raw.std)},
                "tasks": [{"task": t, "classes": c, "class_names": [raw.train.class_names[i] for i in c],
                           "train": first["sizes"]["train"][t], "heldout": first["sizes"]["heldout"][t],
                           "test": first["sizes"]["test"][t]} for t, c in enumerate(_task_classes(order, sizes))],
            },
            "model": {"name": cfg.model, "sharing_points": CostModel(factory, raw.train.shape, cfg.energy_table,
                                                                     sizes[0]).points()},
            "energy_table": cfg.energy_table,
            "seeds": cfg.seeds,
            "per_seed": per_seed,
            "summary": summary,
            "report": report,
        }
        if main:
            write_text(out / "results.json", _dumps(results))
            _write_csvs(out, per_seed, cfg)
            meta.update(status="done", finished=results["finished"])
            write_text(out / "run.json", _dumps(meta))
            write_text(out / "DONE", results["finished"] + "\n")
        distributed.barrier()
    logger.info("run complete: %s", out / "results.json")
    return out


def _task_classes(order: list[int], sizes: list[int]) -> list[list[int]]:
    out, start = [], 0
    for s in sizes:
        out.append(order[start:start + s])
        start += s
    return out


# ---------------------------------------------------------------------------- text summary
def format_summary(results: dict[str, Any]) -> str:
    """A plain-text table of the headline numbers of a finished run (for the terminal)."""
    rep = results["report"]
    lines = []
    multi = len(results.get("seeds", [])) > 1
    lines.append(f"run {results.get('name') or ''}  ({results['dataset']['name']}, {results['model']['name']}, "
                 f"tasks {results['config']['tasks']}, seeds {results.get('seeds')})")
    lines.append(f"sharing point chosen: k={rep['chosen_share']}")
    if rep["calibration_curve"]:
        lines.append("sharing-point search (held-out accuracy of trial branches; modelled energy of the real branch):")
        for row in rep["calibration_curve"]:
            mark = "*" if row["share"] == rep["chosen_share"] else " "
            lines.append(f"  {mark} k={row['share']:<2d} fraction {row['fraction']:.2f}  accuracy {_pct(row['accuracy'])}"
                         f"  energy {_fmt_e(row['energy_pj'])}  {'within' if row['within_tolerance'] else 'outside'}"
                         " tolerance")
    head = (f"{'strategy':<20} {'k':>3} {'frac':>5} {'aware':>7} {'agn.cal':>8} {'agn.raw':>8} {'train E':>10} "
            f"{'total E':>10} {'train s':>8}")
    lines.append(head)
    summ = results["summary"]["strategies"]
    for s in rep["strategies"]:
        sd = ""
        if multi:
            sd = f"  (± {_pct(summ[s['strategy']]['task_aware_accuracy']['std'])} aware)"
        lines.append(f"{s['strategy']:<20} {s['share']:>3} {s['fraction']:>5.2f} {_pct(s['task_aware_accuracy']):>7} "
                     f"{_pct(s['task_agnostic_accuracy']):>8} {_pct(s['task_agnostic_uncalibrated_accuracy']):>8} "
                     f"{_fmt_e(s['modelled_train_energy_pj']):>10} {_fmt_e(s['energy_pj']):>10} "
                     f"{s['measured_train_seconds']:>8.1f}{sd}")
    unchanged = [n for n, e in summ.items() if e["old_tasks_unchanged"]]
    lines.append(f"old tasks' logits bit-identical after later tasks: {', '.join(unchanged) or 'none'}")
    return "\n".join(lines) + "\n"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _fmt_e(pj: float | None) -> str:
    if pj is None:
        return "n/a"
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("uJ", 1e6)):
        if pj >= scale:
            return f"{pj / scale:.3g} {unit}"
    return f"{pj:.3g} pJ"
