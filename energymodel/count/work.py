"""What one traced call costs: operations per training phase (:class:`OpVec`, :class:`Work`), and the
arithmetic of an exponential that several rules share (``EXP_ADDS``, ``EXP_MULTS``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from energymodel.count.trace import Call

__all__ = ["OpVec", "Work", "EXP_MULTS", "EXP_ADDS"]


EXP_MULTS = 4


EXP_ADDS = 4


@dataclass
class OpVec:
    """Arithmetic operations by type."""

    mac: float = 0.0
    add: float = 0.0
    mult: float = 0.0
    cmp: float = 0.0

    def __add__(self, other: OpVec) -> OpVec:
        return OpVec(self.mac + other.mac, self.add + other.add, self.mult + other.mult, self.cmp + other.cmp)

    def scaled(self, k: float) -> OpVec:
        return OpVec(self.mac * k, self.add * k, self.mult * k, self.cmp * k)

    @property
    def total(self) -> float:
        return self.mac + self.add + self.mult + self.cmp


@dataclass
class Work:
    """What one call does for one sample.

    ``saved_for_input_grad`` / ``saved_for_weight_grad``: elements the backward pass to the input / to the
    weights must keep from the forward pass. ``moves_data`` is False for zero-cost views (flatten, view,
    identity, dropout in eval): they read and write nothing.
    """

    forward: OpVec = field(default_factory=OpVec)
    backward_input: OpVec = field(default_factory=OpVec)
    backward_weight: OpVec = field(default_factory=OpVec)
    saved_for_input_grad: float = 0.0
    saved_for_weight_grad: float = 0.0
    moves_data: bool = True
    modelled: bool = True
    #: work that both backward phases need but that is computed once (BN's ``Σdy`` and ``Σdy·x̂``): charged
    #: to the weight gradient when it runs, else to the input gradient when that runs
    backward_shared: OpVec = field(default_factory=OpVec)
    #: MAC operand count for the no-reuse bound (conv/linear/matmul): each MAC fetches both operands
    gemm: bool = False
    #: weight words the forward reads per sample when it reads only part of its weights (an embedding
    #: lookup reads the rows it gathers); ``None``: the whole weight once per pass
    weight_words: float | None = None


Rule = Callable[[Call], Work]


ZERO_COST = Work(moves_data=False)


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape) if shape else 1


def out_numel(call: Call) -> int:
    return call.out_words


def in0_numel(call: Call) -> int:
    return numel(call.input_shapes[0]) if call.input_shapes else 0


def as_tuple(v, n: int) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v) if len(v) == n else tuple(int(v[0]) for _ in range(n))
    return tuple(int(v) for _ in range(n))

