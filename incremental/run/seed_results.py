"""Assembling one seed's results: accuracy matrices of every kind and method, hashes, costs, storage."""

from __future__ import annotations

from typing import Any

from incremental.agnostic import METHODS
from incremental.evaluation.costing import sum_costs, timing_row
from incremental.evaluation.metrics import AccuracyMatrix
from incremental.evaluation.rows import KINDS

__all__ = ["SummaryMixin"]


def _mean(values: list[float] | None) -> float | None:
    """The mean of a row of per-task accuracies (the average accuracy of that row)."""
    return float(sum(values) / len(values)) if values else None


class SummaryMixin:
    """Mixin of :class:`incremental.run.phases.SeedRun`: per-strategy and per-seed result records."""

    def _statistics_cost(self, method: str, share: int | None, stats: dict[str, Any] | None, total_classes: int,
                         numbers_before: int) -> dict[str, float]:
        """Modelled cost of fitting ``method``'s statistics for one task (:meth:`CostModel.statistics`): the passes
        the method reads (training images, held-out images), its arithmetic, and its float32 numbers written —
        the new ones, or all of them read and written again when the method rewrites its statistics."""
        cls = METHODS[method]
        if stats is None or not (cls.uses_training_pass or cls.uses_heldout_pass):
            return self.costs.statistics(share=share, samples=0, batch=self.cfg.eval_batch, macs=0.0, numbers=0)
        samples = ((stats["train_samples"] if cls.uses_training_pass else 0)
                   + (stats["heldout_samples"] if cls.uses_heldout_pass else 0))
        m = cls(covariance=self.cfg.agnostic.covariance, expansion=self.cfg.agnostic.expansion)
        dims = {space: int(stats.get(f"{space}_dims", 0)) for space in ("own", "common", "trunk")}
        macs = m.arithmetic_macs(stats["train_samples"], dims, stats["classes"], total_classes)
        after = int(stats["words"][method])
        moved = after + numbers_before if cls.rewrites_statistics else after - numbers_before
        return self.costs.statistics(share=share, samples=samples, batch=self.cfg.eval_batch, macs=macs,
                                     numbers=moved, bits=cls.number_bits)

    def _agnostic_result(self, name: str, records: dict[int, dict[str, Any]]) -> dict[str, Any]:
        base_row = self._base_eval_row
        last = records[self.T - 1]
        methods = list(last["evaluation"]["agnostic"])
        grown = bool(last["branch"])
        sizes = [len(c) for c in self.data.classes]
        out: dict[str, Any] = {}
        for m in methods:
            mat = AccuracyMatrix(self.T, kind=f"agnostic:{m}")
            mat.record_row(0, [base_row["agnostic"][m][0]])
            for t in range(1, self.T):
                mat.record_row(t, records[t]["evaluation"]["agnostic"][m])
            d = mat.to_dict()
            numbers = int(last["agnostic"]["words"][m]) if grown and last.get("agnostic") else 0
            cost = None
            if grown:
                steps = [(None, self._base_stats)] + [(records[t]["share"], records[t].get("agnostic"))
                                                      for t in range(1, self.T)]
                parts, before = [], 0
                for t, (share, st) in enumerate(steps):
                    parts.append(self._statistics_cost(m, share, st, sum(sizes[: t + 1]), before))
                    before = int(st["words"][m]) if st else before
                cost = sum_costs(parts)
                cost["storage_bytes"] = numbers * METHODS[m].number_bits / 8
            val = last.get("validation")
            out[m] = {"accuracy": d["average_accuracy"], "forgetting": d["forgetting"],
                      "backward_transfer": d["backward_transfer"], "matrix": d["matrix"],
                      "per_task_final": mat.R[-1].tolist(), "stored_words": numbers,
                      "storage_bytes": numbers * METHODS[m].number_bits / 8, "cost": cost,
                      "validation_accuracy": _mean(val["agnostic"].get(m)) if val else None}
        return out

    def _calibration_cost(self, records: dict[int, dict[str, Any]]) -> dict[str, float] | None:
        """Output calibration's forward passes over every task's held-out images (grown strategies, when on)."""
        if not records[self.T - 1]["branch"] or not self.cfg.output_calibration.enabled:
            return None
        held = self.data.sizes["heldout"]
        passes = [self.costs.forward_pass(None, held[0], self.cfg.eval_batch)]
        passes += [self.costs.forward_pass(records[t]["share"], held[t], self.cfg.eval_batch) for t in range(1, self.T)]
        return sum_costs(passes)

    def _queries(self, name: str, records: dict[int, dict[str, Any]], method: str) -> list[dict[str, float]]:
        """Modelled energy of one task-agnostic query after every task (the base, each branch, the scoring)."""
        grown = bool(records[self.T - 1]["branch"])
        sizes = [len(c) for c in self.data.classes]
        out = []
        for t in range(self.T):
            if not grown:  # one network: its inference (single networks score with their own classifier)
                out.append({"task": t, **self.costs.query([], 0.0)})
                continue
            stats = self._base_stats if t == 0 else records[t].get("agnostic")
            dims = {space: int((stats or {}).get(f"{space}_dims", 0)) for space in ("own", "common", "trunk")}
            macs = METHODS[method](covariance=self.cfg.agnostic.covariance,
                                    expansion=self.cfg.agnostic.expansion).query_macs(dims, sum(sizes[: t + 1]), t + 1)
            out.append({"task": t, **self.costs.query([records[j]["share"] for j in range(1, t + 1)], macs)})
        return out

    def _strategy_result(self, name: str, records: dict[int, dict[str, Any]]) -> dict[str, Any]:
        cfg = self.cfg
        base_row = self._base_eval_row
        mats = {k: AccuracyMatrix(self.T, kind=k) for k in KINDS}
        for k in KINDS:
            mats[k].record_row(0, [base_row[k][0]])
        hashes: dict[int, list[str]] = {0: [base_row["sha256"][0]]}
        per_task, costs = [], []
        train_s = cal_s = eval_s = stat_s = 0.0
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
            stats = rec.get("agnostic")
            stat_s += stats["seconds"] if stats else 0.0
            per_task.append({
                "task": t, "classes": rec["classes"], "share": rec["share"], "samples": rec["samples"],
                "epochs": rec["epochs"], "used_old_data": rec["used_old_data"],
                "trainable_params": rec["trainable_params"], "cache_mode": rec["cache_mode"],
                "train_seconds": rec["train_seconds"], "calibration_seconds": rec["calibration_seconds"],
                "statistics_seconds": stats["seconds"] if stats else 0.0,
                "evaluation_seconds": rec["evaluation_seconds"], "calibration": rec["calibration"],
                "losses": rec["fit"].get("losses"), "peak_rss_bytes": rec["fit"].get("peak_rss_bytes"),
                "resumed_from_epoch": rec["fit"].get("resumed_from_epoch", 0), "cost": cost,
            })
            self.timing.append(timing_row(f"{name} task {t} training", rec["train_seconds"], cost,
                                          phase=f"{name}-task{t}"))
            if rec["calibration"] is not None:
                self.timing.append(timing_row(f"{name} task {t} output calibration", rec["calibration_seconds"],
                                              phase=f"{name}-task{t}"))
            if stats:
                self.timing.append(timing_row(f"{name} task {t} task-agnostic statistics", stats["seconds"],
                                              phase=f"{name}-task{t}"))
            self.timing.append(timing_row(f"{name} task {t} evaluation", rec["evaluation_seconds"],
                                          phase=f"{name}-task{t}"))
        final = {k: mats[k].to_dict() for k in KINDS}
        agnostic = self._agnostic_result(name, records)
        method = cfg.agnostic.method if cfg.agnostic.method in agnostic else "raw-logits"
        statistics = agnostic[method]["cost"]
        calibration = self._calibration_cost(records)
        training = sum_costs(costs)
        overhead = None
        search = self._sharing_info["search"]
        if name == "partial-sharing" and search is not None:
            searches = self._sharing_info.get("per_task") or {1: search}
            overhead = sum_costs(s["cost"] for s in searches.values())
        extras = [c for c in (overhead, statistics, calibration) if c]
        total_energy = training["energy_pj"] + sum(c["energy_pj"] for c in extras)
        total_macs = training["macs"] + sum(c["macs"] for c in extras)
        last = records[self.T - 1]
        share = last["share"]
        point = self.costs.points()[share]
        return {
            "strategy": name, "share": share, "after": point["after"], "fraction": point["fraction"],
            "shares": {str(t): records[t]["share"] for t in range(1, self.T)},
            "per_task_final": {k: mats[k].R[-1].tolist() for k in KINDS},
            **{f"{k}_accuracy": final[k]["average_accuracy"] for k in KINDS},
            "agnostic_method": method,
            "agnostic": agnostic,
            "forgetting": {k: final[k]["forgetting"] for k in KINDS},
            "backward_transfer": {k: final[k]["backward_transfer"] for k in KINDS},
            "matrices": final,
            "task0_logits_sha256": hashes[0],
            "logits_sha256": {str(j): h for j, h in hashes.items()},
            "old_tasks_unchanged": all(len(set(h)) == 1 for h in hashes.values()),
            "tasks": per_task,
            "cost": {
                "training": training, "search": overhead, "statistics": statistics, "calibration": calibration,
                "energy_pj": total_energy, "macs": total_macs, "training_energy_pj": training["energy_pj"],
                **last["storage"], "statistics_bytes": agnostic[method]["storage_bytes"],
            },
            "inference": self._queries(name, records, method),
            "validation": ({k: _mean(last["validation"][k]) for k in KINDS} if last.get("validation") else None),
            "measured_train_seconds": train_s,
            "measured_calibration_seconds": cal_s,
            "measured_statistics_seconds": stat_s,
            "measured_evaluation_seconds": eval_s,
            "modelled_train_energy_pj": training["energy_pj"],
        }

    def _seed_result(self, base_rec, eval_rec, sharing, strategies, references=None) -> dict[str, Any]:
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
            "references": references,
            "strategies": strategies,
            "timing": self.timing,
        }
