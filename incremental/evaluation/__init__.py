"""Evaluation: what each strategy achieved and what it cost.

- :mod:`.metrics` - accuracy matrices, average accuracy, forgetting, backward transfer;
- :mod:`.rows` - the evaluation after every task (task-aware, every task-agnostic method, logit hashes);
- :mod:`.costing` - the one place that asks ``energymodel`` for the cost of what the engine did;
- :mod:`.references` - the base network alone, and the joint classifier on the frozen trunk;
- :mod:`.headline` - the whole-lifecycle headline: totals, ratios, amortisation, chance.

May import :mod:`incremental.agnostic`, :mod:`incremental.search` and every floor below.
"""


from energymodel._imports import lazy_exports

#: public name -> the module that defines it (imported on first use)
_EXPORTS = {
    "KINDS": "incremental.evaluation.rows",
    "evaluate_row": "incremental.evaluation.rows",
    "fit_suite_task": "incremental.evaluation.rows",
    "AccuracyMatrix": "incremental.evaluation.metrics",
    "average_accuracy": "incremental.evaluation.metrics",
    "forgetting": "incremental.evaluation.metrics",
    "backward_transfer": "incremental.evaluation.metrics",
    "mean_std": "incremental.evaluation.metrics",
    "CostModel": "incremental.evaluation.costing",
    "headline": "incremental.evaluation.headline",
    "amortisation": "incremental.evaluation.headline",
}
__all__ = [*_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
