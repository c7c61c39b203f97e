"""Training: the loop, the frozen prefix's feature cache, data parallelism, the strategies that use them.

- :mod:`.config` - :class:`TrainConfig` (what a fit is asked to do) and :class:`FitResult` (what it did);
- :mod:`.loop` - :func:`fit`, :func:`fit_branch`, :func:`evaluate_logits`;
- :mod:`.feature_cache` - the frozen prefix computed once per sample;
- :mod:`.distributed` - ``torchrun`` data parallelism; :mod:`.energy_meter` - measured energy where the
  machine can tell;
- :mod:`.strategies` - partial sharing and the baselines (regular incremental, feature extraction, naive
  fine-tuning, full retraining) as learners.

May import :mod:`incremental.model`, :mod:`incremental.data` and ``energymodel``.
"""


from energymodel._imports import lazy_exports

#: public name -> the module that defines it (imported on first use)
_EXPORTS = {
    "FitResult": "incremental.train.config",
    "TrainConfig": "incremental.train.config",
    "count_parameters": "incremental.train.config",
    "peak_rss_bytes": "incremental.train.config",
    "resolve_device": "incremental.train.config",
    "evaluate_logits": "incremental.train.loop",
    "fit": "incremental.train.loop",
    "fit_branch": "incremental.train.loop",
    "Strategy": "incremental.train.strategies",
    "make_strategy": "incremental.train.strategies",
    "STRATEGY_NAMES": "incremental.train.strategies",
}
__all__ = [*_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
