"""One seed of a run: every phase in order, each resumable from its record and checkpoint.

Phases: ``base`` (train on task 0), ``base-eval`` (output calibration, task-agnostic statistics of task 0,
evaluation), the sharing-point search (:mod:`incremental.run.search_phases`), then every strategy learns tasks
1..T-1 (``<strategy>-task<t>``: train, calibrate, fit task-agnostic statistics on the task's own images, save,
evaluate). Results assembly is :mod:`incremental.run.seed_results`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from energymodel.atomic import write_text
from energymodel.errors import UserError, one_line
from incremental.agnostic import AgnosticSuite
from incremental.agnostic.features import collect_task
from incremental.agnostic.output_calibration import calibrate
from incremental.evaluation.costing import CostModel, timing_row
from incremental.evaluation.references import TrunkSplit, base_only, joint_classifier
from incremental.evaluation.rows import evaluate_row, fit_suite_task
from incremental.model.branching import GrownNet
from incremental.model.checkpoint import load_checkpoint, load_state, save_checkpoint
from incremental.model.single import rebuild_predictor
from incremental.run.config import STRATEGY_ALIASES, RunConfig
from incremental.run.directory import read_json
from incremental.run.records import _dumps, _event, derive_seed
from incremental.run.search_phases import SearchPhases
from incremental.run.seed_results import SummaryMixin
from incremental.run.workload import ModelFactory, _prepare, _RawData
from incremental.train import distributed
from incremental.train.strategies import make_strategy

__all__ = ["SeedRun", "run_seed", "RECORD_KEYS"]

logger = logging.getLogger("incremental")

_NUM = (int, float)
_OPT = (dict, type(None))
#: what each kind of phase record must hold (key -> type), checked before a record is used: a record read back
#: decides the results (the cost ledger included) as the phase decided them when it ran
RECORD_KEYS: dict[str, dict[str, Any]] = {
    "base": {"samples": int, "epochs": int, "fit": dict, "train_seconds": _NUM},
    "base-eval": {"calibration": _OPT, "calibration_seconds": _NUM, "agnostic": dict, "evaluation": dict,
                  "evaluation_seconds": _NUM},
    "search": {"share": int, "accuracy": _NUM, "seconds": _NUM, "epochs": int},
    "oracle": {"share": int, "accuracy": _NUM, "seconds": _NUM},
    "references": {"base_only": dict, "joint_trunk": dict, "seconds": _NUM},
    "task": {"task": int, "classes": list, "share": int, "branch": bool, "num_classes": int, "samples": int,
             "epochs": int, "used_old_data": bool, "trainable_params": int, "fit": dict, "train_seconds": _NUM,
             "cache_mode": str, "calibration": _OPT, "calibration_seconds": _NUM, "agnostic": _OPT,
             "evaluation": dict, "evaluation_seconds": _NUM, "storage": dict},
    "seed": {"seed": int, "sizes": dict, "base": dict, "sharing": dict, "strategies": dict, "timing": list},
}
_RERUN_PHASE = "delete it to run that phase again, or rerun with --force (force=True in Python)"
_START_OVER = "rerun with --force (force=True in Python) to start over"


def checked_record(path: Path, kind: str, what: str = "phase record", fix: str = _RERUN_PHASE) -> dict[str, Any]:
    """The JSON record at ``path`` with every key of :data:`RECORD_KEYS` ``[kind]``; one line naming it otherwise."""
    try:
        rec = read_json(path, what)
    except UserError as exc:
        raise UserError(f"{exc}: {fix}") from None
    if not isinstance(rec, dict):
        raise UserError(f"{what} {path} is corrupt (a JSON {type(rec).__name__}, not a record): {fix}")
    bad = [k for k, kinds in RECORD_KEYS[kind].items()
           if k not in rec or not isinstance(rec[k], kinds) or (isinstance(rec[k], bool) and kinds is _NUM)]
    if bad:
        lacks = [k for k in bad if k not in rec]
        detail = f"it lacks {', '.join(lacks)}" if lacks else f"wrong type of {', '.join(bad)}"
        raise UserError(f"{what} {path} is corrupt ({detail}): {fix}")
    return rec


class SeedRun(SearchPhases, SummaryMixin):
    """Runs (or resumes) every phase of one seed in ``folder``."""

    def __init__(self, cfg: RunConfig, seed: int, folder: Path, raw: _RawData, order: list[int],
                 factory: ModelFactory, device: torch.device, main: bool) -> None:
        self.cfg, self.seed, self.folder, self.raw, self.order = cfg, seed, folder, raw, order
        self.factory, self.device, self.main = factory, device, main
        self.phases = folder / "phases"
        self.ckpts = folder / "checkpoints"
        self.timing: list[dict[str, Any]] = []
        self.methods = cfg.agnostic.names()

    # -------------------------------------------------------------- records
    def _record(self, name: str, kind: str) -> dict[str, Any] | None:
        """The record of phase ``name`` (None: not run yet); a corrupt one is one line naming it."""
        path = self.phases / f"{name}.json"
        if not os.path.lexists(path):
            return None
        return checked_record(path, kind)

    def _checkpoint(self, name: str, keys: tuple[str, ...], fix: str = _START_OVER) -> dict[str, Any]:
        """Checkpoint ``name`` (digest verified) holding ``keys``; one line naming it and the way out otherwise."""
        path = self.ckpts / f"{name}.pt"
        ck = load_checkpoint(path, recover=fix)
        missing = [k for k in keys if k not in ck]
        if missing:
            raise UserError(f"checkpoint {path} lacks {', '.join(missing)}: {fix}")
        return ck

    def _load_suite(self, suite: AgnosticSuite, state: Any, path: Path, tasks: int) -> None:
        """Load task-agnostic statistics of ``tasks`` tasks from checkpoint ``path``; one line when they do not fit."""
        try:
            suite.load(state)
        except (UserError, KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
            raise UserError(f"checkpoint {path}: its task-agnostic statistics do not fit this run "
                            f"({one_line(exc)}): {_START_OVER}") from None
        counts = {suite.fitted}
        for name, method in suite.methods.items():
            saved = state["methods"][name]
            counts |= {len(saved.get(space) or []) for space in getattr(method, "spaces", ())}
        if counts != {tasks}:
            raise UserError(f"checkpoint {path} holds task-agnostic statistics of {sorted(counts)} task(s) where the "
                            f"run has learned {tasks}: {_START_OVER}")

    def _save_record(self, name: str, rec: dict[str, Any]) -> dict[str, Any]:
        """Write the record of phase ``name``; return it as it reads back (a resumed run reads the same)."""
        text = _dumps(rec)
        if self.main:
            write_text(self.phases / f"{name}.json", text)
        distributed.barrier()
        _event(f"phase:{name}")
        return json.loads(text)

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
        start, opt_state, prev = 0, None, {"losses": [], "elapsed": 0.0, "cache_mode": None}
        if os.path.lexists(partial):
            fix = "delete it to restart that training from its first epoch"
            ck = self._checkpoint(f"{name}.partial", ("module", "optimizer", "next_epoch", "epochs"), fix)
            start, epochs = ck["next_epoch"], ck["epochs"]
            if not (isinstance(start, int) and isinstance(epochs, int) and 0 <= start <= epochs):
                raise UserError(f"checkpoint {partial} is corrupt (next epoch {start!r} of {epochs!r}): {fix}")
            load_state(module, ck["module"], partial)
            opt_state = ck["optimizer"]
            prev = {"losses": list(ck.get("losses", [])), "elapsed": float(ck.get("elapsed", 0.0)),
                    "cache_mode": ck.get("cache_mode")}
            logger.info("%s: resuming from epoch %d (%s)", name, start + 1, partial)
        t0 = time.perf_counter()

        def on_epoch_end(epoch: int, state: dict[str, Any]) -> None:
            save_checkpoint(partial, {
                "module": state["module"], "optimizer": state["optimizer"], "next_epoch": state["next_epoch"],
                "epochs": state["epochs"], "losses": prev["losses"] + list(state["losses"]),
                "elapsed": prev["elapsed"] + time.perf_counter() - t0,
                "cache_mode": prev["cache_mode"] or state["cache_mode"],
            })
            _event(f"{name}:epoch:{epoch + 1}")

        result = train(on_epoch_end=on_epoch_end, start_epoch=start, optimizer_state=opt_state)
        elapsed = prev["elapsed"] + time.perf_counter() - t0
        fit = result.fit if hasattr(result, "fit") else result
        info = fit.to_dict() if fit is not None else {}
        info["losses"] = prev["losses"] + list(info.get("losses", []))
        info["resumed_from_epoch"] = start
        if prev["cache_mode"]:  # how the fit fed the module when it trained (a call with no epoch left builds no cache)
            info["cache_mode"] = prev["cache_mode"]
        return result, {"fit": info, "train_seconds": elapsed}

    # -------------------------------------------------------------- phases
    def execute(self, bar: tqdm) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        self.data = _prepare(cfg, self.raw, self.seed, self.order)
        self.timing.append(timing_row("data preparation", time.perf_counter() - t0, phase="data"))
        d = self.data
        self.T = len(d.classes)
        self.costs = CostModel(self.factory, d.input_shape, cfg.energy_table, len(d.classes[0]),
                               ranks=distributed.current().world)
        base_rec = self._base(bar)
        eval_rec = self._base_eval(bar)
        sharing = self._sharing(bar, self.costs.num_blocks)
        self._sharing_info = sharing
        references = self._references()
        strategies = {name: self._strategy(name, sharing["shares"], bar) for name in cfg.strategies}
        return self._seed_result(base_rec, eval_rec, sharing, strategies, references)

    def _base(self, bar: tqdm) -> dict[str, Any]:
        cfg, d = self.cfg, self.data
        torch.manual_seed(derive_seed(self.seed, "init", 0))
        model = self.factory(len(d.classes[0]))
        rec = self._record("base", "base")
        if rec is not None:
            load_state(model, self._checkpoint("base", ("state_dict",))["state_dict"], self.ckpts / "base.pt")
            logger.info("seed %d: base network restored from %s", self.seed, self.ckpts / "base.pt")
        else:
            logger.info("seed %d: training the base network on task 0 (classes %s, %d images, %d epochs)",
                        self.seed, d.classes[0], len(d.train[0]), cfg.base.epochs)
            tcfg = cfg.train_config("base", derive_seed(self.seed, "fit", 0))
            from incremental.train.loop import fit

            _, info = self._fit_resumable(
                "base", model, lambda **kw: fit(model, d.train[0], tcfg, desc="base", **kw))
            self._save_ckpt("base", {"state_dict": model.state_dict(), "classes": d.classes[0]})
            rec = {"samples": len(d.train[0]), "epochs": cfg.base.epochs, **info}
            rec = self._save_record("base", rec)
            self._drop_partial("base")
        bar.update(1)
        self.base = model
        cost = self.costs.for_fit(share=0, samples=rec["samples"], epochs=rec["epochs"], batch=cfg.base.batch,
                                  optimizer=cfg.base.optimizer, num_classes=len(d.classes[0]), cache_mode="off",
                                  weight_decay=cfg.base.weight_decay)
        rec["cost"] = cost
        self.timing.append(timing_row("base training (task 0)", rec["train_seconds"], cost, phase="base"))
        return rec

    def _validate(self, pred: nn.Module, suite: AgnosticSuite | None, upto: int, calibrated: bool
                  ) -> dict[str, Any] | None:
        """The evaluation row on the validation splits of tasks ``0..upto`` (None without validation splits):
        what choices are made on, never the test images."""
        d = self.data
        if any(v is None for v in d.validation[: upto + 1]):
            return None
        return evaluate_row(pred, suite, self.cfg.agnostic.method, d.validation, upto, self.cfg.eval_batch,
                            self.device, calibrated=calibrated, progress=False)

    def _references(self) -> dict[str, Any] | None:
        """The base-network-only and joint-classifier references (:mod:`incremental.evaluation.references`): an
        analysis that reads every task's training images at once, charged to no strategy."""
        cfg, d = self.cfg, self.data
        if not cfg.agnostic.references:
            return None
        rec = self._record("references", "references")
        if rec is None:
            t0 = time.perf_counter()
            grown = GrownNet(copy.deepcopy(self.base), d.classes[0])
            grown.freeze_base()
            sizes = [len(c) for c in d.classes]

            def split(sets: list) -> TrunkSplit:
                outs = [collect_task(grown, ds, 0, cfg.eval_batch, self.device) for ds in sets]
                return TrunkSplit([o.trunk_space.float() for o in outs],
                                  [o.labels + sum(sizes[:t]) for t, o in enumerate(outs)])

            train = split(d.plain)
            evaluate = {"test": split(d.test)}
            validation = split(d.validation) if all(v is not None for v in d.validation) else None
            if validation is not None:
                evaluate["validation"] = validation
            rec = {"base_only": base_only(train, sizes, evaluate, width=cfg.agnostic.expansion,
                                               covariance=cfg.agnostic.covariance),
                   "joint_trunk": joint_classifier(train, sum(sizes), validation, evaluate, width=cfg.agnostic.expansion),
                   "seconds": time.perf_counter() - t0}
            rec = self._save_record("references", rec)
        self.timing.append(timing_row("references (base network only, joint classifier)", rec["seconds"],
                                      phase="references"))
        return rec

    def _new_suite(self) -> AgnosticSuite:
        return AgnosticSuite(self.methods, covariance=self.cfg.agnostic.covariance, expansion=self.cfg.agnostic.expansion)

    def _base_eval(self, bar: tqdm) -> dict[str, Any]:
        cfg, d = self.cfg, self.data
        rec = self._record("base-eval", "base-eval")
        grown = GrownNet(copy.deepcopy(self.base), d.classes[0])
        grown.freeze_base()
        suite = self._new_suite()
        if rec is None:
            cal, cal_s = None, 0.0
            if cfg.output_calibration.enabled:
                t0 = time.perf_counter()
                res = calibrate(grown, {0: d.heldout[0]}, batch_size=cfg.eval_batch, device=self.device,
                                method=cfg.output_calibration.method)
                cal, cal_s = vars(res[0]), time.perf_counter() - t0
            stats = fit_suite_task(suite, grown, 0, d.plain[0], d.heldout[0], cfg.eval_batch, self.device)
            self._save_ckpt("base-agnostic", {"agnostic": suite.state()})
            t0 = time.perf_counter()
            row = evaluate_row(grown, suite, cfg.agnostic.method, d.test, 0, cfg.eval_batch, self.device,
                               calibrated=cfg.output_calibration.enabled, progress=cfg.progress and self.main)
            rec = {"calibration": cal, "calibration_seconds": cal_s, "agnostic": stats, "evaluation": row,
                   "validation": self._validate(grown, suite, 0, cfg.output_calibration.enabled),
                   "evaluation_seconds": time.perf_counter() - t0}
            rec = self._save_record("base-eval", rec)
        else:
            self._load_suite(suite, self._checkpoint("base-agnostic", ("agnostic",))["agnostic"],
                             self.ckpts / "base-agnostic.pt", 1)
        bar.update(1)
        self._base_suite_state = suite.state()
        self._base_stats = rec["agnostic"]
        self._base_eval_row = rec["evaluation"]
        cal = rec["calibration"]
        self.cal0 = (cal["temperature"], cal["bias"]) if cal else None
        if cal:
            self.timing.append(timing_row("output calibration (task 0)", rec["calibration_seconds"], phase="base-eval"))
        self.timing.append(timing_row("task-agnostic statistics (task 0)", rec["agnostic"]["seconds"],
                                      phase="base-eval"))
        self.timing.append(timing_row("evaluation (task 0)", rec["evaluation_seconds"], phase="base-eval"))
        return rec

    def _strategy(self, name: str, shares: dict[int, int], bar: tqdm) -> dict[str, Any]:
        d = self.data
        internal = STRATEGY_ALIASES[name]
        strat = make_strategy(internal, share=shares[1] if internal == "partial_sharing" else None,
                              model_factory=self.factory)
        records: dict[int, dict[str, Any]] = {}
        for t in range(1, self.T):
            rec = self._record(f"{name}-task{t}", "task")
            if rec is None:
                break
            records[t] = rec
        last = max(records, default=0)
        bar.update(last)
        if last < self.T - 1:
            learner = strat.build(self.base, d.classes[0], d.train[0])
            grown = isinstance(learner.predictor, GrownNet)
            suite = self._new_suite() if grown else None
            if last >= 1:
                path = self.ckpts / f"{name}-task{last}.pt"
                ck = self._checkpoint(f"{name}-task{last}", ("structure", "state_dict")
                                      + (("agnostic",) if suite is not None else ()))
                try:
                    learner.predictor = rebuild_predictor(ck["structure"], self.factory)
                except (KeyError, TypeError, ValueError, IndexError) as exc:
                    raise UserError(f"checkpoint {path} holds a structure that does not fit the model "
                                    f"({one_line(exc)}): {_START_OVER}") from None
                load_state(learner.predictor, ck["state_dict"], path)
                if suite is not None:
                    self._load_suite(suite, ck["agnostic"], path, last + 1)
                if hasattr(learner, "history"):
                    learner.history = [d.train[t] for t in range(last + 1)]
                logger.info("seed %d: %s restored after task %d", self.seed, name, last)
            elif grown:
                if self.cal0 is not None:
                    learner.predictor.set_calibration(0, *self.cal0)
                suite.load(self._base_suite_state)
            for t in range(last + 1, self.T):
                if internal == "partial_sharing":
                    learner.share = shares[t]
                records[t] = self._learn(name, learner, suite, t)
                bar.update(1)
        return self._strategy_result(name, records)

    def _learn(self, name: str, learner: Any, suite: AgnosticSuite | None, t: int) -> dict[str, Any]:
        cfg, d = self.cfg, self.data
        phase = f"{name}-task{t}"
        torch.manual_seed(derive_seed(self.seed, "init", t))
        learner.prepare_task(d.classes[t])
        pred = learner.predictor
        grown = isinstance(pred, GrownNet)
        module = pred.branch(t).module if grown else pred.model
        logger.info("seed %d: %s: learning task %d (classes %s, %d images)", self.seed, name, t, d.classes[t],
                    len(d.train[t]))
        retrain = name == "full-retraining"
        tcfg = cfg.train_config("branch", derive_seed(self.seed, "fit", t),
                                epochs=cfg.retrain_epochs or cfg.base.epochs if retrain else None)
        record, info = self._fit_resumable(
            phase, module, lambda **kw: learner.train_task(d.train[t], tcfg, augment_before_prefix=cfg.augment,
                                                            desc=f"{name} task {t}", **kw))
        cal, cal_s, stats = None, 0.0, None
        if grown and cfg.output_calibration.enabled:
            t0 = time.perf_counter()
            res = calibrate(pred, {t: d.heldout[t]}, batch_size=cfg.eval_batch, device=self.device,
                            method=cfg.output_calibration.method)
            cal, cal_s = vars(res[t]), time.perf_counter() - t0
        if suite is not None:  # the task's own images only: no image of an earlier task is read
            stats = fit_suite_task(suite, pred, t, d.plain[t], d.heldout[t], cfg.eval_batch, self.device)
        ckpt: dict[str, Any] = {"structure": pred.structure(), "state_dict": pred.state_dict()}
        if suite is not None:
            ckpt["agnostic"] = suite.state()
        self._save_ckpt(phase, ckpt)
        t0 = time.perf_counter()
        row = evaluate_row(pred, suite, cfg.agnostic.method, d.test, t, cfg.eval_batch, self.device,
                           calibrated=grown and cfg.output_calibration.enabled, progress=cfg.progress and self.main)
        validation = self._validate(pred, suite, t, grown and cfg.output_calibration.enabled)
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
            "calibration": cal, "calibration_seconds": cal_s, "agnostic": stats,
            "evaluation": row, "validation": validation, "evaluation_seconds": eval_s, "storage": storage,
        }
        rec = self._save_record(phase, rec)
        self._drop_partial(phase)
        return rec


def run_seed(cfg, seed, folder, raw, order, factory, device, main, bar) -> dict[str, Any]:
    """Run or resume one seed; returns (and stores) its result."""
    done = folder / "seed-result.json"
    if os.path.lexists(done):
        result = checked_record(done, "seed", "seed result", "delete it to assemble the seed's results again")
        bar.update(bar.total - bar.n if bar.total else 0)
        logger.info("seed %d: complete in %s", seed, folder)
        return result
    sr = SeedRun(cfg, seed, folder, raw, order, factory, device, main)
    result = sr.execute(bar)
    if main:
        write_text(done, _dumps(result))
    distributed.barrier()
    _event(f"seed:{seed}")
    return json.loads(_dumps(result))

