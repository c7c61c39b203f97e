"""A run: a configuration, a run directory, every seed's phases, and the results over seeds.

- :mod:`.config` and :mod:`.config_values` - :class:`RunConfig` (every field a flag) and its value checkers;
- :mod:`.workload` - the data (loaded once, split per seed) and the model factory of a run;
- :mod:`.runner` - :func:`run`: a whole experiment into a run directory;
- :mod:`.phases`, :mod:`.search_phases`, :mod:`.seed_results` - one seed's phases (base, search, every
  strategy and task), each resumable, and the seed's result record;
- :mod:`.results` - mean ± std over seeds, CSVs, the console summary;
- :mod:`.directory` - the run directory: planning under the lock, ``--force`` without data loss (marked staging
  folders), resume, reading results back;
- :mod:`.lock` - the run directory's kernel-released lock, never taken through a link;
- :mod:`.records` - seeds, JSON, timestamps, versions, kill points for tests.

May import every package of ``incremental`` below it (data, model, train, agnostic, search, evaluation) and
``energymodel``. :func:`run` and :func:`load_results` are the entry points.
"""


from energymodel._imports import lazy_exports

#: public name -> the module that defines it (imported on first use)
_EXPORTS = {
    "run": "incremental.run.runner",
    "run_status": "incremental.run.runner",
    "load_results": "incremental.run.runner",
    "format_summary": "incremental.run.runner",
    "RESULTS_FORMAT": "incremental.run.runner",
    "KINDS": "incremental.run.runner",
    "KILL_ENV": "incremental.run.runner",
    "derive_seed": "incremental.run.runner",
    "RunConfig": "incremental.run.config",
    "load_config": "incremental.run.config",
}
__all__ = [*_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
