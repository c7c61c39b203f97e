"""The demo (``make demo`` = ``python -m incremental demo --out out/demo``): Fashion-MNIST, end to end.

smallcnn learns classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat) as the base task; the
sharing-point search trains a trial branch at every sharing point on a subset of classes 5-9 (Sandal,
Shirt, Sneaker, Bag, Ankle boot) and picks the deepest point within the tolerance of no sharing; a branch
for classes 5-9 is grown there (clone-and-branch), and the baselines (regular incremental learning,
feature extraction, naive fine-tuning, full retraining) learn the same task from the same base. Every
strategy is evaluated task-aware and task-agnostic (with and without output calibration) and costed
with energymodel; the run directory gets ``results.json``, CSVs and ``report.html``.

The setting is sized to finish in about a minute on two idle CPU cores: 1,500 training images per class
(of 6,000), 500 test images per class (of 1,000), 2 epochs. ``reports/fashion-mnist-demo-run.toml`` is
the same configuration as a file. ``--quick`` shrinks it to seconds (for tests).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from incremental.run.config import RunConfig

__all__ = ["DEMO", "QUICK", "demo_config", "demo"]

logger = logging.getLogger("incremental")

#: The demo configuration (TOML-shaped; ``reports/fashion-mnist-demo-run.toml`` holds the same).
DEMO: dict[str, Any] = {
    "name": "fashion-mnist-demo",
    "dataset": "fashion-mnist",
    "model": "smallcnn",
    "tasks": "5+5",
    "train_per_class": 1500,
    "test_per_class": 500,
    "share": "auto",
    "strategies": ["partial-sharing", "regular-incremental", "feature-extraction", "naive-finetune",
                   "full-retraining"],
    "seeds": [0],
    "out": "out/demo",
    "base": {"epochs": 2, "batch": 128, "lr": 0.05, "optimizer": "momentum", "weight_decay": 5e-4},
    "branch": {"epochs": 2, "batch": 128, "lr": 0.05, "optimizer": "momentum", "weight_decay": 5e-4},
    "search": {"tolerance": 0.02, "subset_per_class": 300, "epochs": 2, "candidates": "all",
                    "val_fraction": 0.25},
    "output_calibration": {"enabled": True, "holdout_fraction": 0.1, "method": "nll"},
}

#: What ``--quick`` changes: a tiny subsample and one epoch everywhere (seconds, for tests).
QUICK: dict[str, Any] = {
    "name": "fashion-mnist-demo-quick",
    "train_per_class": 24,
    "test_per_class": 10,
    "base": {"epochs": 1},
    "branch": {"epochs": 1},
    "search": {"subset_per_class": 16, "epochs": 1, "min_steps": 4},
    "output_calibration": {"holdout_fraction": 0.2},
    "agnostic": {"expansion": 128},
}


def demo_config(out: str | Path = "out/demo", data_root: str | Path | None = None, quick: bool = False,
                device: str = "auto", progress: bool = True) -> RunConfig:
    """The demo's :class:`~incremental.run.config.RunConfig` (``quick``: the tiny test setting)."""
    data: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEMO.items()}
    if quick:
        for key, value in QUICK.items():
            if isinstance(value, dict):
                data[key] = {**data.get(key, {}), **value}
            else:
                data[key] = value
    data.update(out=str(out), device=device, progress=progress)
    if data_root is not None:
        data["data_root"] = str(data_root)
    return RunConfig.from_dict(data, source="demo")


def demo(out: str | Path = "out/demo", data_root: str | Path | None = None, quick: bool = False,
         force: bool = False, device: str = "auto", progress: bool = True) -> Path:
    """Run the demo into ``out`` (resumes an unfinished one, reuses a finished one), write and return ``report.html``."""
    from incremental.report.html import write_html_report
    from incremental.run.runner import format_summary, load_results, run

    cfg = demo_config(out, data_root, quick, device, progress)
    path = run(cfg, force=force)
    results = load_results(path)
    print(format_summary(results), end="")
    report = path / "report.html"
    write_html_report(results, report)
    print(f"results: {(path / 'results.json').resolve()}")
    print(f"report:  {report.resolve()}")
    return report
