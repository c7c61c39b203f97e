"""Task-agnostic accuracy of every method and the sharing-point search's regret, on real data, several seeds.

Two settings on Fashion-MNIST (Debian's ``dataset-fashion-mnist`` or ``--data-root``), smallcnn, the demo's
training settings (1,500 training and 500 test images per class, 2 epochs, momentum SGD):

* ``5+5``: the demo (``reports/fashion-mnist-demo-run.toml``);
* ``2x5``: five tasks of two classes (``tasks = "2+2+2+2+2"``).

Each setting runs ``incremental run`` with ``search.oracle = true`` (a fully trained branch at every
candidate point: the search's regret) for every seed, then writes ``benchmarks/results/agnostic-<setting>-task.json``
and prints one table: Class-IL accuracy of every method (mean ± sample std over seeds) per strategy, on the test
images and on the validation splits (carved from each task's training images: what the default is chosen on),
Task-IL accuracy, the references (the base network alone; the joint classifier on the frozen trunk), each seed's
chosen sharing point, the oracle's choice, the run's headline, and the targets of issue 15 (5+5: partial sharing
>= 84 %; 2x5: >= 0.95 x full retraining; both above the base network alone) as PASS/MISS.

    python benchmarks/bench_agnostic.py                       # both settings, seeds 0,1,2 (CPU: tens of minutes)
    python benchmarks/bench_agnostic.py --settings 5+5 --seeds 0
    python benchmarks/bench_agnostic.py --settings cifar10-5+5 --data-root DIR   # CIFAR-10 ImageFolder, CPU-sized
    python benchmarks/bench_agnostic.py --settings cifar10-5+5-full --from-run out/bench/cifar10-5p5-full
                                        # summarise bench_cifar.py --run's folder (nothing re-run)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine  # noqa: E402

from energymodel.atomic import write_text  # noqa: E402
from incremental.agnostic.analytic import EXPANSION  # noqa: E402
from incremental.run.config import load_config  # noqa: E402
from incremental.run.runner import load_results, run  # noqa: E402

DEMO = ROOT / "reports" / "fashion-mnist-demo-run.toml"
#: per setting: the run config it starts from and what it overrides (the oracle is on unless it says otherwise)
SETTINGS: dict[str, dict] = {
    "5+5": {"config": DEMO, "overrides": {"tasks": "5+5"}},
    "2x5": {"config": DEMO, "overrides": {"tasks": "2+2+2+2+2"}},
    # CIFAR-10 on a CPU: the GPU recipe shrunk (300 training images per class, 8 epochs, no naive fine-tuning,
    # no oracle: fully training a branch at each of the 10 points is hours on two cores). --data-root names
    # the JPEG (ImageFolder) copy; its figures say "CPU-sized".
    "cifar10-5+5": {"config": ROOT / "reports" / "cifar10-resnet20-run.toml", "overrides": {
        "tasks": "5+5", "train_per_class": "300", "base.epochs": "8", "branch.epochs": "8",
        "search.subset_per_class": "200", "search.epochs": "2", "search.oracle": "false",
        "strategies": "partial-sharing,regular-incremental,feature-extraction,full-retraining",
        "num_workers": "0"}},
    # CIFAR-10 on the whole training set, one seed (benchmarks/bench_cifar.py --run): summarised from that run's
    # folder with --from-run, never re-run here
    "cifar10-5+5-full": {"config": ROOT / "reports" / "cifar10-resnet20-run.toml", "overrides": {}},
}
TARGETS = {"5+5": ("partial sharing Class-IL >= 84 % and above the base network alone",
                   lambda ps, full, base: ps >= 0.84 and ps > base),
           "2x5": ("partial sharing Class-IL >= 0.95 x full retraining and above the base network alone",
                   lambda ps, full, base: ps >= 0.95 * full and ps > base),
           "cifar10-5+5": ("none (CPU-sized; reported as measured)", None),
           "cifar10-5+5-full": ("partial sharing Class-IL above the base network alone",
                                lambda ps, full, base: ps > base)}


def _ms(values: list[float]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return {"mean": statistics.fmean(vals) if vals else None,
            "std": statistics.stdev(vals) if len(vals) > 1 else None, "values": values}


def _stem(setting: str, covariance: str, expansion: int = EXPANSION) -> str:
    """``agnostic-5p5-task`` (one covariance per task, the default) or ``agnostic-5p5`` (per class), with
    ``-m1024`` when the analytic heads' expansion is not the default."""
    return (f"agnostic-{setting.replace('+', 'p')}" + ("" if covariance == "class" else f"-{covariance}")
            + ("" if expansion == EXPANSION else f"-m{expansion}"))


def bench(setting: str, seeds: list[int], out: Path, data_root: str | None, reuse: bool = False,
          data_cache: str | None = None, covariance: str = "task", oracle: bool = True,
          expansion: int = EXPANSION) -> dict:
    spec = SETTINGS[setting]
    stem = _stem(setting, covariance, expansion)
    overrides = {"seeds": ",".join(map(str, seeds)), "search.oracle": "true" if oracle else "false",
                 "out": str(out / stem), "progress": "false", "agnostic.covariance": covariance,
                 "agnostic.expansion": str(expansion), **spec["overrides"]}
    if data_root:
        overrides["data_root"] = data_root
    if data_cache and spec["config"] != DEMO:  # decoded ImageFolder images, kept for the next run
        overrides["data_cache"] = data_cache
    cfg = load_config(spec["config"], overrides)
    t0 = time.perf_counter()
    results = load_results(run(cfg, force=not reuse))  # a finished run of older code is redone unless --reuse
    wall = time.perf_counter() - t0
    return summarise(results, setting, seeds, wall, str(out / stem), covariance, expansion)


def summarise(results: dict, setting: str, seeds: list[int], wall: float, run_dir: str, covariance: str = "task",
              expansion: int = EXPANSION) -> dict:
    """One setting's record (the ``agnostic-<setting>.json`` format) from a finished run's ``results.json``."""
    summ = results["summary"]["strategies"]
    methods = [m["method"] for m in results["report"]["agnostic_methods"]]
    rows = {}
    for name, e in summ.items():
        rows[name] = {"task_il": e["task_aware_accuracy"], "share": e["share"]["values"],
                      "class_il": {m: e["agnostic"][m]["accuracy"] for m in methods if m in e["agnostic"]},
                      "validation": {m: e["agnostic"][m].get("validation_accuracy") for m in methods
                                     if m in e["agnostic"]},
                      "statistics_bytes": e.get("statistics_bytes"), "energy_pj": e["energy_pj"],
                      "storage": {m: e["agnostic"][m]["storage_bytes"] for m in methods if m in e["agnostic"]}}
    for name, per in lifecycle_by_method(results).items():
        rows[name]["energy_pj_by_method"] = per
    oracle = [r["sharing"]["oracle"] for r in results["per_seed"]]
    ps = summ["partial-sharing"]["task_agnostic_accuracy"]["mean"]
    full = summ["full-retraining"]["task_agnostic_accuracy"]["mean"]
    refs = results["summary"].get("references") or {}
    base = (refs.get("base_only") or {}).get("analytic-head", {}).get("test", {}).get("mean")
    label, check = TARGETS[setting]
    verdict = "-" if check is None else "PASS" if base is not None and check(ps, full, base) else "MISS"
    by_validation = best_on_validation([rows])
    return {"setting": setting, "tasks": results["config"].get("tasks"), "overrides": SETTINGS[setting]["overrides"],
            "seeds": seeds,
            "machine": machine(), "expansion": expansion,
            "wall_seconds": wall, "default_method": results["report"]["agnostic_default"], "methods": methods,
            "best_on_validation": by_validation, "strategies": rows, "references": refs,
            "headline": results["summary"].get("headline"),
            "chosen": [r["sharing"]["share"] for r in results["per_seed"]],
            "oracle": oracle, "target": {"what": label, "partial_sharing": ps, "full_retraining": full,
                                         "base_only": base, "verdict": verdict},
            "covariance": covariance, "run_dir": run_dir}


def lifecycle_by_method(results: dict) -> dict[str, dict[str, dict]]:
    """Every strategy's whole-lifecycle energy (pJ; mean ± std over seeds) had each method been the headline one:
    training + search + output calibration + that method's statistics (``agnostic[m].cost``, recorded for every
    method in the same run), as the run's own ledger sums them for its headline method."""
    out: dict[str, dict[str, list[float]]] = {}
    for seed in results["per_seed"]:
        for name, st in seed["strategies"].items():
            cost = st["cost"]
            fixed = sum((cost.get(part) or {}).get("energy_pj", 0.0) for part in ("training", "search", "calibration"))
            for m, a in st["agnostic"].items():
                stats = (a.get("cost") or {}).get("energy_pj", 0.0)
                out.setdefault(name, {}).setdefault(m, []).append(fixed + stats)
    return {name: {m: _ms(v) for m, v in per.items()} for name, per in out.items()}


def best_on_validation(settings: list[dict]) -> str | None:
    """The method whose partial-sharing Class-IL on the **validation** splits, averaged over the settings given
    (each a ``strategies`` mapping), is highest; test images play no part. None without validation figures."""
    means: dict[str, list[float]] = {}
    for rows in settings:
        for m, v in (rows["partial-sharing"].get("validation") or {}).items():
            if v and v.get("mean") is not None:
                means.setdefault(m, []).append(v["mean"])
    full = [m for m, v in means.items() if len(v) == len(settings)]
    return max(full, key=lambda m: statistics.fmean(means[m]), default=None)


def judge(res: dict, method: str) -> dict:
    """The setting's target judged on ``method``'s partial-sharing Class-IL on the test images."""
    label, check = TARGETS[res["setting"]]
    ps = res["strategies"]["partial-sharing"]["class_il"][method]["mean"]
    full = res["target"]["full_retraining"]
    base = res["target"].get("base_only")
    verdict = "-" if check is None else "PASS" if base is not None and check(ps, full, base) else "MISS"
    return {"what": label, "method": method, "partial_sharing": ps, "full_retraining": full, "base_only": base,
            "ratio_to_full": ps / full if full else None, "verdict": verdict}


def choose(files: list[Path]) -> dict:
    """Pick the default over several settings' results on validation data, then judge every target on it."""
    results = [json.loads(Path(f).read_text()) for f in files]
    method = best_on_validation([r["strategies"] for r in results])
    if method is None:
        raise SystemExit("bench_agnostic: no validation figures in these results")
    val = {r["setting"]: r["strategies"]["partial-sharing"]["validation"] for r in results}
    return {"chosen_on_validation": method, "settings": [r["setting"] for r in results],
            "validation_mean": {m: statistics.fmean(val[s][m]["mean"] for s in val)
                                for m in next(iter(val.values())) if all(val[s].get(m) for s in val)},
            "targets": {r["setting"]: judge(r, method) for r in results}, "files": [str(f) for f in files],
            "energy_pj": {r["setting"]: {name: row["energy_pj_by_method"][method] for name, row in r["strategies"].items()
                                         if method in row.get("energy_pj_by_method", {})} for r in results}}


def table(res: dict) -> str:
    def pm(s: dict) -> str:
        if s["mean"] is None:
            return "-"
        return f"{100 * s['mean']:.1f}" + (f" ± {100 * s['std']:.1f}" if s.get("std") is not None else "")

    lines = [f"## {res['setting']} (seeds {res['seeds']}; {res['machine']}; {res['wall_seconds']:.0f} s)",
             "| strategy | Task-IL | " + " | ".join(res["methods"]) + " |",
             "|---" * (2 + len(res["methods"])) + "|"]
    for name, row in res["strategies"].items():
        cells = [pm(row["class_il"][m]) if m in row["class_il"] else "-" for m in res["methods"]]
        lines.append(f"| {name} | {pm(row['task_il'])} | " + " | ".join(cells) + " |")
        val = row.get("validation") or {}
        if any(v and v.get("mean") is not None for v in val.values()):
            cells = [pm(val[m]) if val.get(m) else "-" for m in res["methods"]]
            lines.append(f"| {name} (validation) | | " + " | ".join(cells) + " |")
    refs = res.get("references") or {}
    for method, splits in (refs.get("base_only") or {}).items():
        lines.append(f"base network only ({method}): test {pm(splits['test'])}"
                     + (f", validation {pm(splits['validation'])}" if "validation" in splits else ""))
    if refs.get("joint_trunk"):
        j = refs["joint_trunk"]
        lines.append(f"joint classifier on the frozen trunk: test {pm(j['test'])}"
                     + (f", validation {pm(j['validation'])}" if "validation" in j else ""))
    lines.append(f"best partial-sharing method on the validation splits: {res.get('best_on_validation')} "
                 f"(the run's default: {res['default_method']})")
    lines.append(f"chosen k per seed: {res['chosen']}; oracle choice per seed: "
                 f"{[o['oracle_choice'] for o in res['oracle'] if o]}; chosen within tolerance of the oracle's k=0: "
                 f"{[o['chosen_within'] for o in res['oracle'] if o]}; deeper points missed: "
                 f"{[o['deeper_missed'] for o in res['oracle'] if o]}")
    t = res["target"]
    base = f", base network only {100 * t['base_only']:.1f} %" if t.get("base_only") is not None else ""
    lines.append(f"target ({t['what']}): {100 * t['partial_sharing']:.1f} % vs full retraining "
                 f"{100 * t['full_retraining']:.1f} %{base} -> {t['verdict']}")
    for sentence in (res.get("headline") or {}).get("text", []):
        lines.append(f"headline: {sentence}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default="5+5,2x5")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench"))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--covariance", default="task", choices=["class", "task"],
                    help="Gaussian methods' covariance (the run default, 'task', writes agnostic-<setting>-task.json; "
                         "'class' agnostic-<setting>.json)")
    ap.add_argument("--no-oracle", action="store_true",
                    help="skip the oracle (fully trained branches at every point): accuracy of the methods only")
    ap.add_argument("--data-cache", default=None, help="ImageFolder settings: keep the decoded images here")
    ap.add_argument("--expansion", default=str(EXPANSION),
                    help="analytic heads' expansion widths to run, e.g. 1024,2048 (one run each; files -m<M>)")
    ap.add_argument("--reuse", action="store_true",
                    help="report a finished run folder as it is instead of redoing it (default: redo)")
    ap.add_argument("--from-run", default=None, metavar="RUN_DIR",
                    help="no run: summarise this finished run folder as the one setting of --settings")
    ap.add_argument("--choose", nargs="+", metavar="RESULT_JSON", default=None,
                    help="no run: pick the method with the best partial-sharing Class-IL on the validation splits, "
                         "averaged over these results files, judge each setting's target on it, and write "
                         "agnostic-choice.json")
    args = ap.parse_args()
    if args.choose:
        choice = choose([Path(f) for f in args.choose])
        write_text(Path(args.results) / "agnostic-choice.json", json.dumps(choice, indent=1) + "\n")
        print(json.dumps(choice, indent=1))
        return 0
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.from_run:
        setting = args.settings
        if setting not in SETTINGS:
            print(f"bench_agnostic: unknown setting {setting!r} (one of {', '.join(SETTINGS)})", file=sys.stderr)
            return 2
        results = load_results(Path(args.from_run))
        res = summarise(results, setting, [int(x) for x in results.get("seeds", seeds)], float("nan"), args.from_run,
                        results["config"].get("agnostic", {}).get("covariance", "task"))
        write_text(Path(args.results) / f"{_stem(setting, res['covariance'])}.json",
                   json.dumps(res, indent=1, default=str) + "\n")
        print(table(res), flush=True)
        return 0
    for setting in args.settings.split(","):
        for expansion in (int(m) for m in args.expansion.split(",")):
            res = bench(setting, seeds, Path(args.out), args.data_root, args.reuse, args.data_cache, args.covariance,
                        not args.no_oracle, expansion)
            write_text(Path(args.results) / f"{_stem(setting, args.covariance, expansion)}.json",
                       json.dumps(res, indent=1, default=str) + "\n")
            print(table(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
