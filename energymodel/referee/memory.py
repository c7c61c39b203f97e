"""The memory of a real training step, measured with PyTorch's memory profiler, beside the modelled footprint.

:func:`measure_step_memory` builds what a training loop holds (the model on the CPU, a random batch, an
optimizer), runs one warm-up step (so the optimizer state exists, as in every later step), then profiles one
more step — ``loss = cross_entropy(model(x), y); loss.backward(); optimizer.step(); optimizer.zero_grad()`` —
with ``torch.profiler.profile(profile_memory=True, record_shapes=True, with_stack=True)`` and replays the
memory profiler's timeline (``torch.profiler._memory_profiler``: every tensor alive before the step, every
allocation and free during it). The peak of that running sum is the measured peak of the step. Modules under
``frozen`` do not train (no gradient, evaluation mode), as a shared prefix in clone-and-branch.

It is a measurement of PyTorch on this machine (the CPU allocator, the kernels' own temporaries included),
independent of :mod:`energymodel.count.footprint`, which models it from a trace on the ``meta`` device.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from energymodel.count.trace import frozen_names
from energymodel.errors import UserError
from energymodel.models.inputs import ExampleInputs, example_inputs

__all__ = ["measure_step_memory"]


def _batch(ex: ExampleInputs, batch: int, generator: torch.Generator) -> tuple[tuple, dict]:
    def make(v):
        if isinstance(v, torch.Tensor):
            shape = (batch, *v.shape[1:])
            if v.is_floating_point():
                return torch.randn(shape, generator=generator, dtype=v.dtype)
            return torch.zeros(shape, dtype=v.dtype)
        if isinstance(v, (list, tuple)):
            return type(v)(make(o) for o in v)
        if isinstance(v, dict):
            return {k: make(o) for k, o in v.items()}
        return v

    return make(ex.args), make(ex.kwargs)


def measure_step_memory(model: nn.Module, input_shape: Sequence[int] | ExampleInputs | None = None, *, batch: int,
                        frozen: Iterable[str] = (), optimizer: str = "sgd", weight_decay: float = 0.0,
                        inputs: Any = None, seed: int = 0) -> dict[str, Any]:
    """The measured peak of one training step of ``model`` (see the module docstring): ``{"peak_bytes",
    "start_bytes"}`` (the tensors alive when the step starts: weights, buffers, optimizer state, the batch)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    if next(model.parameters()).device.type != "cpu":
        raise UserError("the memory profiler measurement runs on the CPU")
    ex = example_inputs(model, input_shape, inputs)
    gen = torch.Generator().manual_seed(seed)
    args, kwargs = _batch(ex, batch, gen)
    names = frozen_names(model, tuple(frozen))
    flags = {p: p.requires_grad for p in model.parameters()}
    modes = {m: m.training for m in model.modules()}
    params = []
    for name, m in model.named_modules():
        for p in m.parameters(recurse=False):
            p.requires_grad_(name not in names)
            if name not in names:
                params.append(p)
    model.train()
    for name, m in model.named_modules():
        if name in names:
            m.eval()
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=1e-3, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9 if optimizer == "momentum" else 0.0,
                              weight_decay=weight_decay)
    target: list[torch.Tensor] = []

    def step() -> None:
        out = model(*args, **kwargs)
        if not target:
            target.append(torch.randint(0, out.shape[1], (batch,), generator=gen))
        loss = nn.functional.cross_entropy(out, target[0])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        step()  # the optimizer state exists from now on, as in every later step
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            step()
    finally:
        for p, f in flags.items():
            p.requires_grad_(f)
        for m, t in modes.items():
            m.training = t
    current = peak = start = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.PREEXISTING:
            start += size
        if action in (Action.PREEXISTING, Action.CREATE):
            current += size
        elif action == Action.DESTROY:
            current -= size
        peak = max(peak, current)
    return {"peak_bytes": int(peak), "start_bytes": int(start), "batch": batch, "optimizer": optimizer,
            "weight_decay": weight_decay, "frozen": sorted(frozen)}
