"""Pricing: energy tables as data, action counts × a table → energy, and ledgers priced many times.

- :mod:`.table` and ``tables/*.toml`` - energy tables, validated on load, with per-entry provenance;
- :mod:`.pricing` - per-layer energy and the feature/price vectors that make sweeps array arithmetic;
- :mod:`.ledger` - a cost kept as unpriced counts (``Σ times · features``), priced under any table.

Counting and pricing are separate steps, as Accelergy separates action counts from energy tables. May import
:mod:`energymodel.memory`, :mod:`energymodel.count`, :mod:`energymodel.models` and the ground floor.
The names of the former ``energymodel.price`` module are available here too.
"""


from energymodel._imports import lazy_exports

#: public name -> the module that defines it (imported on first use)
_EXPORTS = {
    "price_layers": "energymodel.price.pricing",
    "FEATURES": "energymodel.price.pricing",
    "feature_matrix": "energymodel.price.pricing",
    "feature_vector": "energymodel.price.pricing",
    "price_vector": "energymodel.price.pricing",
    "price_phases": "energymodel.price.pricing",
    "level_of": "energymodel.memory.levels",
    "rf_accesses": "energymodel.memory.levels",
    "layer_words": "energymodel.memory.words",
    "EnergyTable": "energymodel.price.table",
    "load_table": "energymodel.price.table",
    "builtin_tables": "energymodel.price.table",
    "Ledger": "energymodel.price.ledger",
    "TrainingCost": "energymodel.price.ledger",
    "price_ledger": "energymodel.price.ledger",
}
__all__ = [*_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
