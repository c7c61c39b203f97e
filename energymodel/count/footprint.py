"""The memory a training step needs: weights, gradients, optimizer state, saved activations, and its peak.

From one recorded step (:mod:`energymodel.count.memory_trace`), in bytes, for a batch of ``B``:

- ``W`` weights (every parameter, in its dtype), ``Bf`` buffers (BN running statistics), ``X`` the batch
  (inputs and int64 targets), ``O`` optimizer state (``state`` values per trainable parameter: momentum 1,
  Adam 2 and a float32 step count per parameter tensor, SGD 0): all alive before the step and after it;
- ``G`` gradients of the trainable parameters: allocated during the backward pass (gradients are set to
  ``None`` between steps, as ``optimizer.zero_grad()`` does);
- ``S`` saved activations: the distinct storages autograd keeps for the backward pass. A frozen prefix
  (no parameter that trains, no input that needs a gradient) keeps nothing.

The step's own allocations are followed op by op (position ``p`` in the forward pass, ``s`` a storage of
``|s|`` bytes made at ``birth(s)`` and last read at ``last(s)``; ``saved(s)``: the positions of the ops that
keep it):

- **forward**, ``F(p) = Σ |s|`` over ``birth(s) <= p`` and (``s`` saved, or ``last(s) >= p``), ``+ k(p)``
  the scratch of a CPU convolution at ``p`` (its output's size): a tensor nobody keeps is freed after its
  last reader;
- **backward** (ops in reverse), ``B(p) = Σ_{s saved, min saved(s) <= p} |s|`` (kept until the last of its
  keepers has run backward) ``+ Σ_{s needs a gradient, birth(s) <= p <= last(s)} |s|`` (the gradient of
  ``s`` exists from its first consumer's backward to its producer's) ``+ Σ`` of the trainable parameters read
  at or after ``p`` (their gradients, kept to the optimizer step);
- **optimizer step**: ``G + t·max|w|``, ``t`` parameter-sized temporaries of PyTorch's per-parameter update:
  SGD and momentum 1 with weight decay (``grad + λ·w``) else 0, Adam 2 (``sqrt``, then the division) + 1 with
  weight decay.

``peak = W + Bf + X + O + max(max_p F(p), max_p B(p), G + t·max|w|)``, and ``phase`` says which term is
largest. Not modelled: a kernel's own workspace, the allocator's rounding and caching, the framework's
bookkeeping.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from torch import nn

from energymodel.count.memory_trace import StepLog, record_step
from energymodel.count.phases import OPTIMIZERS
from energymodel.errors import UserError
from energymodel.models.inputs import ExampleInputs

__all__ = ["Footprint", "footprint", "try_footprint", "step_footprint", "optimizer_temporaries", "parse_bytes"]


@dataclass
class Footprint:
    """The memory of one training step in bytes (see the module docstring); ``by_layer``: row name ->
    ``saved_bytes`` (what that layer keeps for the backward pass)."""

    batch: int
    optimizer: str
    weights: int
    gradients: int
    optimizer_state: int
    buffers: int
    inputs: int
    saved: int
    forward_peak: int
    backward_peak: int
    step_peak: int
    peak: int
    phase: str
    by_layer: dict[str, int] = field(default_factory=dict)

    @property
    def resident(self) -> int:
        """Bytes alive before and after the step: weights, buffers, optimizer state, the batch."""
        return self.weights + self.buffers + self.optimizer_state + self.inputs

    def to_dict(self) -> dict:
        return asdict(self)


def optimizer_temporaries(optimizer: str, weight_decay: bool) -> int:
    """Parameter-sized temporaries of one update in PyTorch's per-parameter loop (see the module docstring)."""
    return (2 if optimizer == "adam" else 0) + (1 if weight_decay else 0)


def step_footprint(log: StepLog, *, optimizer: str = "sgd", weight_decay: bool = False) -> Footprint:
    """The :class:`Footprint` of the step ``log`` records (the formulas of the module docstring)."""
    n = log.positions + 1
    fwd = np.zeros(n + 1)
    keep = np.zeros(n + 1)
    grads = np.zeros(n + 1)
    saved_total = 0
    by_layer: dict[str, int] = {}
    for s in log.storages.values():
        fwd[s.birth] += s.nbytes
        if s.saved_by:
            keep[min(s.saved_by)] += s.nbytes
            saved_total += s.nbytes
            by_layer[s.saved_row or s.row] = by_layer.get(s.saved_row or s.row, 0) + s.nbytes
        else:
            fwd[s.last + 1] -= s.nbytes
        if s.grad:
            grads[s.birth] += s.nbytes
            grads[s.last + 1] -= s.nbytes
    scratch = np.zeros(n + 1)
    for pos, b in log.scratch.items():
        scratch[pos] += b
    forward_peak = float((np.cumsum(fwd)[:n] + scratch[:n]).max(initial=0.0))
    trained = [(b, last) for _, b, t, last in log.params if t and last >= 0]
    param_grads = np.zeros(n + 1)
    for b, last in trained:
        param_grads[last] += b
    after = np.cumsum(param_grads[::-1])[::-1][:n]  # gradients of the parameters read at or after p
    backward = np.cumsum(keep)[:n] + np.cumsum(grads)[:n] + after
    backward_peak = float(backward.max(initial=0.0))
    g = int(sum(b for b, _ in trained))
    largest = max((b for b, _ in trained), default=0)
    step_peak = g + optimizer_temporaries(optimizer, weight_decay) * largest
    state = OPTIMIZERS[optimizer].state * sum(b for _, b, t, _ in log.params if t)
    if optimizer == "adam":  # and its step count: a float32 scalar per parameter tensor
        state += 4 * sum(1 for _, _, t, _ in log.params if t)
    weights = int(sum(b for _, b, _, _ in log.params))
    inputs = log.input_bytes + log.target_bytes
    phases = {"forward": forward_peak, "backward": backward_peak, "optimizer step": float(step_peak)}
    phase = max(phases, key=lambda k: phases[k])
    own = int(round(phases[phase]))
    return Footprint(batch=log.batch, optimizer=optimizer, weights=weights, gradients=g, optimizer_state=int(state),
                     buffers=log.buffer_bytes, inputs=inputs, saved=int(saved_total), forward_peak=int(forward_peak),
                     backward_peak=int(backward_peak), step_peak=int(step_peak),
                     peak=weights + log.buffer_bytes + int(state) + inputs + own, phase=phase, by_layer=by_layer)


def footprint(model: nn.Module, input_shape: Sequence[int] | ExampleInputs | None = None, *, batch: int,
              frozen: Iterable[str] = (), optimizer: str = "sgd", weight_decay: bool = False,
              inputs: object = None) -> Footprint:
    """The :class:`Footprint` of one training step of ``model`` on a batch of ``batch`` with the modules under
    ``frozen`` not training (see the module docstring)."""
    log = record_step(model, input_shape, batch=batch, frozen=frozen, inputs=inputs)
    return step_footprint(log, optimizer=optimizer, weight_decay=weight_decay)


def try_footprint(model: nn.Module, input_shape: Sequence[int] | ExampleInputs | None = None, **kw) -> Footprint | None:
    """:func:`footprint`, or ``None`` with a warning when the step cannot be traced on ``meta`` (a model that
    reads tensor values): the costs are still counted (on the model's own device), the memory is not."""
    import warnings

    from energymodel.errors import EnergyModelWarning

    try:
        return footprint(model, input_shape, **kw)
    except UserError as exc:
        warnings.warn(f"training memory not modelled: {exc}", EnergyModelWarning, stacklevel=2)
        return None


_BYTE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4, "kib": 2**10, "mib": 2**20,
               "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_bytes(text: str | int, flag: str = "memory budget") -> int:
    """``"256KiB"`` -> 262144, ``"1.5MiB"``, ``"2GB"`` (SI: 2e9), ``"262144"``; one-line :class:`UserError` else."""
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _BYTE_UNITS:
        raise UserError(f"bad {flag} {text!r}: a number of bytes such as 262144, 256KiB, 1.5MiB or 2GB")
    return int(float(m.group(1)) * _BYTE_UNITS[unit])
