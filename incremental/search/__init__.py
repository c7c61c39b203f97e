"""The sharing-point search: trial branches at candidate points, the deepest within tolerance of ``k = 0``.

- :mod:`.sharing_point` - the rule, the chance test, trial lengths in optimizer steps, the trial builder;
- :mod:`.oracle` - the search's regret against fully trained branches.

May import :mod:`incremental.train`, :mod:`incremental.model`, :mod:`incremental.data` and ``energymodel``.
"""


from energymodel._imports import lazy_exports

#: public name -> the module that defines it (imported on first use)
_EXPORTS = {
    "SearchFailed": "incremental.search.sharing_point",
    "SharingSearch": "incremental.search.sharing_point",
    "above_chance": "incremental.search.sharing_point",
    "standard_error": "incremental.search.sharing_point",
    "search_sharing_point": "incremental.search.sharing_point",
    "sharing_trial": "incremental.search.sharing_point",
    "trial_epochs": "incremental.search.sharing_point",
    "Z_CHANCE": "incremental.search.sharing_point",
    "LONGER": "incremental.search.sharing_point",
    "oracle_report": "incremental.search.oracle",
}
__all__ = [*_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
