"""Models of the engine: the grown network and the single network, and their checkpoints.

- :mod:`.branching` - :class:`GrownNet`: a frozen base, branches cloned at sharing points, tree inference,
  per-task calibration buffers;
- :mod:`.single` - :class:`SingleNet`: one network whose classifier grows with every task (the baselines that
  retrain one network), and :func:`rebuild_predictor`;
- :mod:`.checkpoint` - checkpoints written atomically, each with a digest of its content, loaded with
  ``weights_only`` and verified;
- :mod:`.source` - the model's source closure (its factory's module and the project modules it imports) and
  the SHA-256 of each file.

May import ``energymodel`` and :mod:`incremental.data`; nothing that trains.
"""


from energymodel._imports import lazy_exports

#: public name -> the module that defines it (imported on first use)
_EXPORTS = {
    "GrownNet": "incremental.model.branching",
    "SingleNet": "incremental.model.single",
    "rebuild_predictor": "incremental.model.single",
    "save_checkpoint": "incremental.model.checkpoint",
    "load_checkpoint": "incremental.model.checkpoint",
}
__all__ = [*_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
