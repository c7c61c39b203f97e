"""The HTML report of a finished run (``report.html``): the run's results plus the analytical comparison.

Relative model paths (``file.py:factory``) are resolved against the working directory the run was started
from (``results["cwd"]``), so ``incremental report`` works from any folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from energymodel.errors import UserError

__all__ = ["write_html_report"]

logger = logging.getLogger("incremental")


def write_html_report(results: dict[str, Any], path: str | Path) -> Path:
    """Write the HTML report of a finished run's ``results`` (``results.json`` content) with :mod:`energymodel.report`.

    The report holds the run's setup, the analytical sharing comparison of the model at the chosen sharing
    point (:func:`energymodel.analysis.sharing.compare` for the run's task sizes, samples and epochs) and the engine
    section (``results["report"]``).
    """
    try:
        from energymodel.report import ReportData, engine_section_from_results, versions, write_report
    except ImportError as exc:
        raise UserError(f"cannot write the HTML report: energymodel.report is not available ({exc})") from None
    import datetime as dt

    engine = engine_section_from_results(results["report"])
    cfg = results["config"]
    tasks = results["dataset"]["tasks"]
    setup: dict[str, Any] = {
        "model": {"spec": results["model"]["name"], "input_shape": results["dataset"]["input_shape"],
                  "blocks": [p["after"] for p in results["model"]["sharing_points"][1:]],
                  "sharing_points": len(results["model"]["sharing_points"])},
        "training": {"base_epochs": cfg["base"]["epochs"], "branch_epochs": cfg["branch"]["epochs"],
                     "batch": cfg["branch"]["batch"], "optimizer": cfg["branch"]["optimizer"],
                     "lr": cfg["branch"]["lr"], "augment": cfg["augment"],
                     "train_images_per_task": [t["train"] for t in tasks],
                     "test_images_per_task": [t["test"] for t in tasks]},
        "dataset": f"{results['dataset']['name']} ({results['dataset']['source']})",
        "tasks": f"{cfg['tasks']}: " + "; ".join(f"task {t['task']} = {', '.join(t['class_names'])}" for t in tasks),
        "share": str(cfg["share"]),
        "seeds": ", ".join(map(str, results["seeds"])),
        "device": results["environment"]["device"],
        "run directory": results["run_dir"],
        "versions": versions(),
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    compare_frame = None
    try:
        from energymodel.analysis.profile import as_table
        from energymodel.analysis.sharing import compare
        from incremental.run.workload import _model_factory

        table = as_table(results["energy_table"])
        setup["table"] = table.to_dict()
        first = results["per_seed"][0]
        factory = _model_factory(_config_from_results(results), None, results["dataset"]["input_shape"])
        model = factory(len(tasks[0]["classes"]))
        new = [t for t in tasks[1:]]
        compare_frame = compare(
            model, tuple(results["dataset"]["input_shape"]), share=None,
            new_classes=len(new[0]["classes"]), old_classes=len(tasks[0]["classes"]),
            samples_new=max(1, new[0]["train"]), samples_old=max(1, first["base"]["samples"]),
            epochs=cfg["branch"]["epochs"], batch=cfg["branch"]["batch"], optimizer=cfg["branch"]["optimizer"],
            table=table, cache_prefix=not cfg["augment"] and cfg["cache_features"] != "off", tasks=len(new),
        )
    except (UserError, ImportError, KeyError, ValueError) as exc:  # the comparison is extra: never fail on it
        logger.warning("report: analytical comparison left out (%s)", exc)
    seeds = results["seeds"]
    desc = (f"Clone-and-branch incremental learning (partial network sharing) on {results['dataset']['name']} with "
            f"{results['model']['name']}, tasks {cfg['tasks']}, "
            f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}{' (means over seeds)' if len(seeds) > 1 else ''}. "
            f"Accuracies are on the test images (choices were made on validation splits of the training images); "
            f"energies are modelled by energymodel ({results['energy_table']}) for everything each strategy really "
            "did after the common base network (training, the sharing-point search, task-agnostic statistics, "
            f"output calibration); times are measured wall clock on {results['environment']['device']}.")
    data = ReportData(title=f"Incremental learning run: {results.get('name') or Path(results['run_dir']).name}",
                      description=desc, setup=setup, compare=compare_frame, engine=engine)
    return write_report(data, path)


def _config_from_results(results: dict[str, Any]):
    from incremental.run.config import RunConfig

    cfg = {k: v for k, v in results["config"].items() if v is not None}
    model = str(cfg.get("model", ""))
    if ":" in model and results.get("cwd"):
        file, _, name = model.rpartition(":")
        if file.endswith(".py") and not Path(file).is_absolute() and not Path(file).is_file():
            cfg["model"] = f"{Path(results['cwd']) / file}:{name}"
    cfg = {k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v) for k, v in cfg.items()}
    return RunConfig.from_dict(cfg, source=f"{results['run_dir']}/results.json")
