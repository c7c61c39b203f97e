"""The sharing-point phases of one seed: the search (``share = "auto"``), per task when asked, and the oracle.

A trial is sized in optimizer steps (:func:`incremental.search.sharing_point.trial_epochs`); a reference at chance retrains
every trial longer or stops the run with one line (:class:`incremental.search.sharing_point.SearchFailed`). The oracle
(``search.oracle``) trains a full branch at every candidate on the whole task and reports the search's
regret (:func:`incremental.search.oracle.oracle_report`); it is an analysis, charged to no strategy.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import torch
from tqdm import tqdm

from energymodel.errors import UserError
from incremental.evaluation.costing import sum_costs, timing_row
from incremental.model.branching import GrownNet
from incremental.run.records import derive_seed
from incremental.search.oracle import oracle_report
from incremental.search.sharing_point import LONGER, search_sharing_point, sharing_trial, trial_epochs
from incremental.train.loop import evaluate_logits, fit_branch

__all__ = ["SearchPhases"]

logger = logging.getLogger("incremental")


class SearchPhases:
    """Mixin of :class:`incremental.run.phases.SeedRun`: ``_sharing`` decides the sharing point of every task."""

    def _cache_prefix(self) -> bool:
        return not self.cfg.augment and self.cfg.cache_features != "off"

    def _sharing(self, bar: tqdm, n_blocks: int) -> dict[str, Any]:
        cfg, d = self.cfg, self.data
        points = {p["index"]: p for p in self.costs.points()}
        if cfg.share != "auto":
            if isinstance(cfg.share, int):
                if cfg.share > n_blocks:
                    raise UserError(f"config field 'share': sharing point {cfg.share} out of range 0..{n_blocks} "
                                    f"for {cfg.model}")
                k = cfg.share
            else:
                k = min(points.values(), key=lambda p: (abs(p["fraction"] - cfg.share), p["index"]))["index"]
                if abs(points[k]["fraction"] - cfg.share) > 1e-9:
                    logger.warning("share = %g is not a sharing point's fraction: using the nearest, k=%d "
                                   "(fraction %.3f, after %s)", cfg.share, k, points[k]["fraction"],
                                   points[k]["after"])
            return {"mode": "fixed", "requested": cfg.share, "share": k, **points[k], "search": None,
                    "shares": {t: k for t in range(1, self.T)}, "per_task": None, "oracle": None}
        cands = list(range(n_blocks + 1)) if cfg.search.candidates == "all" else list(cfg.search.candidates)
        bad = [k for k in cands if k > n_blocks]
        if bad:
            raise UserError(f"config field 'search.candidates': sharing point {bad[0]} out of range "
                            f"0..{n_blocks} for {cfg.model}")
        shares = sorted(set(cands) | {0})
        searches = {t: self._search_task(t, shares, points, bar) for t in sorted(d.search_train)}
        chosen = {t: searches[t]["chosen"] if t in searches else searches[1]["chosen"] for t in range(1, self.T)}
        k = chosen[1]
        oracle = self._oracle(shares, k, bar) if cfg.search.oracle else None
        logger.info("seed %d: sharing point k=%d (after %s, fraction %.2f) chosen", self.seed, k, points[k]["after"],
                    points[k]["fraction"])
        return {"mode": "auto", "requested": "auto", "share": k, **points[k], "search": searches[1],
                "shares": chosen, "per_task": searches if cfg.search.per_task else None, "oracle": oracle}

    def _search_task(self, task: int, shares: list[int], points: dict[int, Any], bar: tqdm) -> dict[str, Any]:
        cfg, d = self.cfg, self.data
        new_classes = len(d.classes[task])
        s_train, s_val = d.search_train[task], d.search_val[task]
        epochs = trial_epochs(cfg.search.epochs, len(s_train), cfg.branch.batch, cfg.search.min_steps)
        if epochs > cfg.search.epochs:
            steps = -(-len(s_train) // cfg.branch.batch)
            logger.info("seed %d: sharing-point search (task %d): trials lengthened from %d to %d epochs: %d images "
                        "in batches of %d give %d optimizer steps per epoch, under search.min_steps = %d", self.seed,
                        task, cfg.search.epochs, epochs, len(s_train), cfg.branch.batch, steps, cfg.search.min_steps)
        grown = GrownNet(copy.deepcopy(self.base), d.classes[0])
        grown.freeze_base()
        records: dict[str, dict[str, Any]] = {}
        suffix = "" if task == 1 else f"-task{task}"

        def trainer(mult: int):
            tcfg = cfg.train_config("branch", derive_seed(self.seed, "fit", "search", *(() if task == 1 else (task,))),
                                    epochs=epochs * mult)
            trial = sharing_trial(grown, s_train, s_val, new_classes, tcfg, augment_before_prefix=cfg.augment)

            def run(k: int) -> float:
                name = f"search-k{k}{suffix}" + ("" if mult == 1 else "-long")
                rec = self._record(name, "search")
                if rec is None:
                    logger.info("seed %d: sharing-point search (task %d): trial branch at k=%d (%d images, "
                                "%d epochs)", self.seed, task, k, len(s_train), tcfg.epochs)
                    torch.manual_seed(derive_seed(self.seed, "init", "search", k))
                    t0 = time.perf_counter()
                    acc = trial(k)
                    rec = {"share": k, "accuracy": acc, "seconds": time.perf_counter() - t0, "epochs": tcfg.epochs}
                    rec = self._save_record(name, rec)
                if mult == 1:
                    bar.update(1)
                records[name] = rec
                return rec["accuracy"]

            return run

        def costs_for(ep: int, prefix: str) -> dict[int, dict[str, Any]]:
            return self.costs.curve(shares, samples=len(s_train), epochs=ep, batch=cfg.branch.batch,
                                    optimizer=cfg.branch.optimizer, num_classes=new_classes,
                                    cache_prefix=self._cache_prefix(), weight_decay=cfg.branch.weight_decay,
                                    prefix=prefix)

        full = self.costs.curve(shares, samples=len(d.train[task]), epochs=cfg.branch.epochs, batch=cfg.branch.batch,
                                optimizer=cfg.branch.optimizer, num_classes=new_classes,
                                cache_prefix=self._cache_prefix(), weight_decay=cfg.branch.weight_decay)
        search = search_sharing_point(trainer(1), shares, cfg.search.tolerance, classes=new_classes,
                                      val_samples=len(s_val), longer=trainer(LONGER),
                                      stop_early=not cfg.search.full_curve)
        tag = "-long" if search.longer else ""
        used = records[f"search-k0{suffix}{tag}"]["epochs"]  # as the trials ran (recorded), not recomputed
        trial_costs = costs_for(used, "trial_")
        cost_cols = {k: {"after": points[k]["after"], "fraction": points[k]["fraction"],
                         "fraction_params": points[k]["fraction_params"], "fraction_macs": points[k]["fraction_macs"],
                         **full[k], **trial_costs[k]} for k in shares}
        for col in cost_cols[0]:
            search.curve[col] = [cost_cols[int(k)][col] for k in search.curve["share"]]
        search.curve["seconds"] = [records[f"search-k{int(k)}{suffix}{tag}"]["seconds"] for k in search.curve["share"]]
        runs = [(name, rec) for name, rec in records.items()]
        trial_cost = [self.costs.training(share=rec["share"], samples=len(s_train), epochs=rec["epochs"],
                                          batch=cfg.branch.batch, optimizer=cfg.branch.optimizer,
                                          num_classes=new_classes, cache_prefix=self._cache_prefix(),
                                          weight_decay=cfg.branch.weight_decay > 0) for _, rec in runs]
        for (name, rec), cost in zip(runs, trial_cost):
            self.timing.append(timing_row(f"sharing search trial k={rec['share']}{suffix}{' (longer)' if 'long' in name else ''}",
                                          rec["seconds"], cost, phase=name))
        if search.warning:
            logger.warning("seed %d: sharing-point search (task %d): %s", self.seed, task, search.warning)
        return {**search.to_dict(), "task": task, "samples": len(s_train), "val_samples": len(s_val), "epochs": used,
                "epochs_requested": cfg.search.epochs,
                "cost": sum_costs(trial_cost), "seconds": sum(rec["seconds"] for _, rec in runs)}

    def _oracle(self, shares: list[int], chosen: int, bar: tqdm) -> dict[str, Any]:
        """Full branches at every candidate (task 1, all its training images, ``[branch]`` epochs), task-aware
        accuracy on task 1's test images: the search's regret. The same seeds as the real branch, so the oracle
        at the chosen point reproduces partial sharing's own branch."""
        cfg, d = self.cfg, self.data
        acc: dict[int, float] = {}
        for k in shares:
            name = f"oracle-k{k}"
            rec = self._record(name, "oracle")
            if rec is None:
                grown = GrownNet(copy.deepcopy(self.base), d.classes[0])
                torch.manual_seed(derive_seed(self.seed, "init", 1))
                branch = grown.add_branch(k, d.classes[1])
                tcfg = cfg.train_config("branch", derive_seed(self.seed, "fit", 1))
                t0 = time.perf_counter()
                fit_branch(grown, branch.task, d.train[1], tcfg, augment_before_prefix=cfg.augment, desc=f"oracle k={k}")
                grown.eval()
                logits, labels = evaluate_logits(lambda x, g=grown: g.forward_task(x, 1), d.test[1], cfg.eval_batch,
                                                 self.device)
                rec = {"share": k, "accuracy": float((logits.argmax(1) == labels).double().mean()),
                       "seconds": time.perf_counter() - t0}
                rec = self._save_record(name, rec)
            acc[k] = rec["accuracy"]
            self.timing.append(timing_row(f"oracle branch k={k}", rec["seconds"], phase=name))
        energy = {k: self.costs.training(share=k, samples=len(d.train[1]), epochs=cfg.branch.epochs,
                                         batch=cfg.branch.batch, optimizer=cfg.branch.optimizer,
                                         num_classes=len(d.classes[1]), cache_prefix=self._cache_prefix(),
                                         weight_decay=cfg.branch.weight_decay > 0)["energy_pj"] for k in shares}
        return oracle_report(acc, chosen, cfg.search.tolerance, energy)
