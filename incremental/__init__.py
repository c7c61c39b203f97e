"""incremental: incremental learning with partial network sharing (clone-and-branch), on real data.

The packages, lowest floor first (a package imports only from packages below it, and from ``energymodel``;
``docs/architecture.md``): ``data`` (image data sets, class-incremental splits) < ``model`` (GrownNet,
SingleNet, checkpoints) < ``train`` (the loop, feature cache, DDP, the strategies) < ``agnostic``
(task-agnostic prediction, output calibration) and ``search`` (the sharing-point search) < ``evaluation``
(metrics, evaluation rows, costing) < ``run`` (configuration, run directory, phases of a seed, results) <
``report`` (the HTML report of a run) < ``cli`` (the ``incremental`` command and the demo).
"""

from energymodel._imports import MovedModules

__version__ = "0.1.0"

#: module paths of release 0.1 -> their homes now (importable, with a DeprecationWarning, until the next release)
_MOVED = {
    "incremental.branching": "incremental.model.branching",
    "incremental.checkpoint": "incremental.model.checkpoint",
    "incremental.baselines": "incremental.train.strategies",
    "incremental.feature_cache": "incremental.train.feature_cache",
    "incremental.distributed": "incremental.train.distributed",
    "incremental.energy_meter": "incremental.train.energy_meter",
    "incremental.calibration": "incremental.agnostic.output_calibration",
    "incremental.metrics": "incremental.evaluation.metrics",
    "incremental.costing": "incremental.evaluation.costing",
    "incremental.config": "incremental.run.config",
    "incremental.config_checks": "incremental.run.config_values",
    "incremental.inputs": "incremental.run.workload",
    "incremental.rundir": "incremental.run.directory",
    "incremental.runutil": "incremental.run.records",
    "incremental.seed_run": "incremental.run.phases",
    "incremental.seed_search": "incremental.run.search_phases",
    "incremental.seed_summary": "incremental.run.seed_results",
    "incremental.results": "incremental.run.results",
    "incremental.html_report": "incremental.report.html",
    "incremental.demo": "incremental.cli.demo",
}
MovedModules.install(_MOVED)
