"""Register a counting rule for a custom module class or an aten operator.

This is the hook fvcore users know as ``FlopCountAnalysis.set_op_handle`` and thop users as
``custom_ops``. A rule is a function ``rule(call) -> Work``: it receives one traced
:class:`~energymodel.count.trace.Call` (``call.input_shapes`` / ``call.output_shapes`` per sample, without the
batch dimension; ``call.param_shapes``; ``call.train_form``) and returns the arithmetic of *one sample*
as :class:`~energymodel.count.work.Work`: ``forward``, ``backward_input`` and ``backward_weight`` operation
counts (:class:`~energymodel.count.work.OpVec`: ``mac``, ``add``, ``mult``, ``cmp``) and the elements kept for the
backward pass. The counter then scales by the batch, decides which backward parts run, prices memory
accesses and the optimizer — exactly as for built-in layers. Without a rule, a call is listed as
*unmodelled* (never a silent zero).

A module rule applies to calls of that class (and its subclasses) when the module is a *leaf* of the
trace (it has no child modules; a module with children is traced through its children). An aten rule
applies to operations run outside any leaf module (``torch.cumsum(x, 1)`` in a ``forward`` is
``"cumsum"``). Example (see ``examples/custom_rule.py``)::

    from energymodel import register_rule
    from energymodel.count.ops import OpVec, Work

    def scale_shift(call):              # y = x * gamma + beta, per element
        n = call.out_words
        return Work(forward=OpVec(mult=n, add=n), backward_input=OpVec(mult=n),
                    backward_weight=OpVec(mult=n, add=2 * n), saved_for_weight_grad=n)

    register_rule(ScaleShift, scale_shift)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import nn

from energymodel.count.ops import ATEN_RULES, MODULE_RULES
from energymodel.count.work import Work
from energymodel.errors import UserError

__all__ = ["register_rule", "unregister_rule", "registered_rule", "Rule"]

Rule = Callable[..., Work]


def _registry(target: type[nn.Module] | str) -> tuple[dict, object]:
    if isinstance(target, str):
        key = target.strip().removeprefix("aten.").split(".")[0].rstrip("_")
        if not key:
            raise UserError(f"bad aten operator name {target!r}")
        return ATEN_RULES, key
    if isinstance(target, type) and issubclass(target, nn.Module):
        return MODULE_RULES, target
    raise UserError(f"a counting rule is registered for an nn.Module class or an aten operator name, "
                    f"not {target!r}")


def register_rule(target: type[nn.Module] | str, rule: Rule, *, replace: bool = False) -> None:
    """Count calls of ``target`` (an ``nn.Module`` subclass, or an aten operator name such as ``"cumsum"``
    or ``"aten.cumsum"``) with ``rule``. A target that already has a rule needs ``replace=True``."""
    if not callable(rule):
        raise UserError(f"rule for {target!r} must be callable, got {type(rule).__name__}")
    registry, key = _registry(target)
    if key in registry and not replace:
        raise UserError(f"{target!r} already has a counting rule; pass replace=True to replace it")
    registry[key] = rule


def unregister_rule(target: type[nn.Module] | str) -> None:
    """Remove the rule of ``target`` (its calls become unmodelled again)."""
    registry, key = _registry(target)
    registry.pop(key, None)


@contextlib.contextmanager
def registered_rule(target: type[nn.Module] | str, rule: Rule) -> Iterator[None]:
    """Count ``target`` with ``rule`` inside the ``with`` block only; the previous rule (if any) comes back."""
    registry, key = _registry(target)
    previous = registry.get(key)
    registry[key] = rule
    try:
        yield
    finally:
        if previous is None:
            registry.pop(key, None)
        else:
            registry[key] = previous
