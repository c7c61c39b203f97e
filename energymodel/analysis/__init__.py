"""Analysis: what the cost model answers about a model and its sharing points.

- :mod:`.profile` - :func:`profile`, per-layer costs of one pass or training step;
- :mod:`.points` - sharing points and their fractions (by layers, parameters, MACs);
- :mod:`.sharing` - the training ledgers of clone-and-branch, regular incremental learning and full retraining,
  and :func:`compare`;
- :mod:`.grid` and :mod:`.sweep` - hardware sweeps over energy-table entries and batch;
- :mod:`.breakeven` - where a sweep's savings cross a target.

May import :mod:`energymodel.price` and every floor below it.
"""
