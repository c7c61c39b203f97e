"""What a model is called with when it is traced: an input shape or example inputs, validated and bounded.

A *shape* is per sample, without the batch dimension (``(3, 32, 32)``). *Example inputs* are what the
model's ``forward`` takes, each with a batch dimension: a tensor, a tuple/list of tensors (positional
arguments) or a dict of tensors (keyword arguments; integer token ids are fine). Only the first sample
is traced.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from energymodel.errors import UserError

__all__ = [
    "ExampleInputs", "example_inputs", "check_input_shape", "real_inputs", "shape_text", "MAX_INPUT_ELEMENTS",
    "MAX_REAL_TRACE_ELEMENTS", "MAX_BATCH", "sample_bytes", "describe", "DTYPES", "parse_inputs",
]

#: the most input elements per sample a trace accepts (2**31: a 26,000 x 26,000 RGB image). The meta
#: trace allocates nothing, but counts of larger inputs leave the range where MAC counts stay exact in
#: floating point, and such a shape is nearly always a typo.
MAX_INPUT_ELEMENTS = 2**31

#: the largest batch a pass or step is counted for (2**31): batch x elements stays inside the 64-bit integers
#: the dataflow's tile arithmetic uses (a larger one overflowed them), and such a batch is nearly always a typo.
MAX_BATCH = 2**31

#: the most input elements per sample traced on a real device (when ``meta`` fails, or to initialise
#: lazy modules): 2**24 elements, 64 MiB of float32 input at batch 1.
MAX_REAL_TRACE_ELEMENTS = 2**24


def _tensors(obj) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def check_input_shape(shape: Sequence[int], what: str = "input shape") -> tuple[int, ...]:
    """``shape`` as a tuple of positive integers with at most :data:`MAX_INPUT_ELEMENTS` elements, or a
    one-line :class:`UserError` (a shape is per sample: without the batch dimension)."""
    if isinstance(shape, Tensor):
        raise UserError(f"{what}: got a tensor; pass example tensors as inputs=, a shape as (3, 32, 32)")
    if isinstance(shape, (str, bytes, dict)) or not hasattr(shape, "__iter__"):
        raise UserError(f"{what} {shape!r} is not a shape: give a sequence of positive integers such as (3, 32, 32)")
    try:
        out = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise UserError(f"{what} {tuple(shape)!r} must be integers such as (3, 32, 32)") from None
    text = ",".join(map(str, out)) if len(out) < 9 and all(len(str(s)) < 16 for s in out) else f"of {len(out)} sizes"
    if not out or any(s <= 0 for s in out):
        raise UserError(f"{what} {text} must be positive integers such as 3,32,32")
    n = math.prod(out)
    if n > MAX_INPUT_ELEMENTS:
        raise UserError(f"{what} {text} has {n:.3g} elements per sample, more than the {MAX_INPUT_ELEMENTS:,} "
                        "this cost model accepts (a shape is per sample: without the batch dimension)")
    return out


@dataclass
class ExampleInputs:
    """What a model is called with, at batch 1: ``model(*args, **kwargs)``."""

    args: tuple
    kwargs: dict[str, object]

    def tensors(self) -> list[Tensor]:
        return list(_tensors((self.args, self.kwargs)))

    @property
    def first_shape(self) -> tuple[int, ...]:
        """The per-sample shape of the first tensor input (the ``input_shape`` of the trace)."""
        ts = self.tensors()
        return tuple(ts[0].shape[1:]) if ts else ()

    def elements(self) -> int:
        return sum(math.prod(t.shape[1:]) for t in self.tensors())

    def __len__(self) -> int:  # a shape's length where one is asked for (e.g. ``list(input_shape)``)
        return len(self.first_shape)

    def __iter__(self):
        return iter(self.first_shape)

    def text(self) -> str:
        """``32:int64`` / ``ids=32:int64;mask=32:bool``: what ``--input`` takes to make these inputs."""
        def one(t: Tensor) -> str:
            dt = str(t.dtype).removeprefix("torch.")
            return ",".join(map(str, t.shape[1:])) + ("" if dt == "float32" else f":{dt}")

        parts = [one(t) for t in _tensors(self.args)] + [f"{k}={one(v)}" for k, v in self.kwargs.items()
                                                          if isinstance(v, Tensor)]
        return ";".join(parts)

    def to(self, device: torch.device | str) -> ExampleInputs:
        """A copy with every tensor on ``device`` (on ``meta``: shape and dtype only, no storage)."""

        def move(v):
            if isinstance(v, Tensor):
                return torch.empty_like(v, device=device) if str(device) == "meta" else v.to(device)
            if isinstance(v, (list, tuple)):
                return type(v)(move(o) for o in v)
            if isinstance(v, dict):
                return {k: move(o) for k, o in v.items()}
            return v

        return ExampleInputs(move(self.args), move(self.kwargs))


def example_inputs(model: nn.Module, input_shape: Sequence[int] | None = None, inputs: object = None) -> ExampleInputs:
    """The call of a trace: a zero tensor of shape ``(1, *input_shape)`` (on ``meta``, in the dtype of the
    model's first floating-point parameter), or ``inputs`` (a tensor, a tuple/list of tensors passed
    positionally, or a dict of keyword tensors, each with a batch dimension) cut to their first sample.
    """
    if isinstance(input_shape, ExampleInputs) and inputs is None:
        return _for(model, input_shape)
    if (input_shape is None) == (inputs is None):
        raise UserError("give either an input shape or example inputs")
    if inputs is None:
        shape = check_input_shape(input_shape)  # type: ignore[arg-type]
        param = next((p for p in model.parameters() if p.is_floating_point() and not isinstance(p, nn.parameter.UninitializedTensorMixin)), None)
        dtype = param.dtype if param is not None else torch.float32
        return ExampleInputs((torch.empty((1, *shape), device="meta", dtype=dtype),), {})
    if isinstance(inputs, Tensor):
        args, kwargs = (inputs,), {}
    elif isinstance(inputs, (tuple, list)):
        args, kwargs = tuple(inputs), {}
    elif isinstance(inputs, dict):
        if not all(isinstance(k, str) for k in inputs):
            raise UserError("example inputs given as a dict need parameter names (str) as keys")
        args, kwargs = (), dict(inputs)
    else:
        raise UserError(f"example inputs must be a tensor, a tuple of tensors or a dict of tensors, "
                        f"not {type(inputs).__name__}")
    ex = ExampleInputs(args, kwargs)
    tensors = ex.tensors()
    if not tensors:
        raise UserError("example inputs hold no tensor")
    for t in tensors:
        if t.dim() < 1 or t.shape[0] < 1:
            raise UserError(f"example input of shape {tuple(t.shape)} has no batch dimension: the first dimension "
                            "is the batch (use t.unsqueeze(0) for one sample)")
    ex = ExampleInputs(*_first_sample((ex.args, ex.kwargs)))
    check_input_shape((ex.elements(),), "example inputs")
    return _for(model, ex)


def _for(model: nn.Module, ex: ExampleInputs) -> ExampleInputs:
    """A single keyword input passed positionally to a sharing-point view (a ``BlockNet`` takes ``forward(x)``:
    the view of a model called as ``model(ids=...)`` is called as ``view(ids)``)."""
    from energymodel.models.blocks import BlockNet

    if isinstance(model, BlockNet) and not ex.args and len(ex.kwargs) == 1:
        return ExampleInputs(tuple(ex.kwargs.values()), {})
    return ex


def _first_sample(obj):
    if isinstance(obj, Tensor):
        return obj[:1]
    if isinstance(obj, (list, tuple)):
        return type(obj)(_first_sample(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _first_sample(v) for k, v in obj.items()}
    return obj


def real_inputs(ex: ExampleInputs, device: torch.device) -> ExampleInputs:
    """Meta placeholders become zeros on ``device``; real example tensors move there."""

    def real(v):
        if isinstance(v, Tensor):
            return torch.zeros(v.shape, dtype=v.dtype, device=device) if v.is_meta else v.to(device)
        if isinstance(v, (list, tuple)):
            return type(v)(real(o) for o in v)
        if isinstance(v, dict):
            return {k: real(o) for k, o in v.items()}
        return v

    return ExampleInputs(real(ex.args), real(ex.kwargs))


def shape_text(ex: ExampleInputs) -> str:
    shapes = [",".join(map(str, t.shape[1:])) for t in ex.tensors()]
    return "shape " + shapes[0] if len(shapes) == 1 else "shapes " + "; ".join(shapes)


def sample_bytes(input_shape) -> float:
    """Bytes one stored sample takes: a shape is a uint8 image (``prod(shape)`` bytes); example inputs take
    their own dtypes (``int64`` token ids: 8 bytes each)."""
    if isinstance(input_shape, ExampleInputs):
        return float(sum(math.prod(t.shape[1:]) * t.element_size() for t in input_shape.tensors()))
    return float(math.prod(input_shape))


def describe(input_shape) -> list[int] | str:
    """A JSON-able description: the shape as a list, or example inputs as ``--input`` writes them."""
    return input_shape.text() if isinstance(input_shape, ExampleInputs) else list(input_shape)


#: dtypes ``--input`` takes after a colon (``32:int64``)
DTYPES = {"float32": torch.float32, "float": torch.float32, "float16": torch.float16, "half": torch.float16,
          "bfloat16": torch.bfloat16, "float64": torch.float64, "double": torch.float64, "int64": torch.int64,
          "long": torch.int64, "int32": torch.int32, "int": torch.int32, "int16": torch.int16, "int8": torch.int8,
          "uint8": torch.uint8, "bool": torch.bool}


def parse_inputs(text: str, parse_shape) -> tuple[tuple[int, ...] | None, object]:
    """``--input``: ``3,32,32`` (a shape: ``(shape, None)``), or example inputs ``(None, inputs)``:
    ``32:int64`` (a shape and a dtype), several separated by ``;`` (positional arguments), or
    ``name=32:int64;mask=32:bool`` (keyword arguments). The tensors are zeros with a batch dimension of 1."""
    specs = [p.strip() for p in str(text).split(";") if p.strip()]
    if len(specs) == 1 and ":" not in specs[0] and "=" not in specs[0]:
        return parse_shape(specs[0]), None
    named = ["=" in p for p in specs]
    if any(named) and not all(named):
        raise UserError(f"bad --input {text!r}: name every input (ids=32:int64;mask=32:bool) or none")
    out = []
    for p in specs:
        name, _, rest = p.rpartition("=") if "=" in p else ("", "", p)
        shape_text, _, dtype_text = rest.partition(":")
        dtype = DTYPES.get(dtype_text.strip() or "float32")
        if dtype is None:
            raise UserError(f"bad --input dtype {dtype_text!r}: one of {', '.join(DTYPES)}")
        if name and not name.strip().isidentifier():
            raise UserError(f"bad --input name {name!r}: a parameter name of the model's forward")
        out.append((name.strip(), torch.zeros((1, *parse_shape(shape_text)), dtype=dtype)))
    return None, ({n: t for n, t in out} if all(named) else tuple(t for _, t in out))
