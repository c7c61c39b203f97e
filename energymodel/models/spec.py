"""Resolve a MODEL argument: a zoo name, ``package.module:factory`` or ``path/to/file.py:factory``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from energymodel.errors import UserError, one_line
from energymodel.models.inputs import check_input_shape
from energymodel.models.zoo import build, zoo_names
from energymodel.models.zoo.registry import get_entry

__all__ = ["ResolvedModel", "resolve_model", "parse_shape"]


@dataclass
class ResolvedModel:
    """A built model, the spec it came from and its default input shape when known."""

    model: nn.Module
    spec: str
    input_shape: tuple[int, ...] | None


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3,32,32"`` → ``(3, 32, 32)`` (per sample, no batch dimension; bounded as
    :func:`~energymodel.models.inputs.check_input_shape`); one-line :class:`UserError` otherwise."""
    parts = [p.strip() for p in str(text).replace("x", ",").split(",") if p.strip()]
    if not parts or len(parts) > 8 or not all(p.isdigit() and len(p) <= 12 for p in parts):
        raise UserError(f"bad input shape {str(text)[:40]!r}: expected C,H,W such as 3,32,32 "
                        "(a shape without the batch dimension; use --batch)")
    if any(int(p) <= 0 for p in parts):
        raise UserError(f"bad input shape {text!r}: expected positive C,H,W such as 3,32,32")
    return check_input_shape(tuple(int(p) for p in parts))


def _attribute_shape(model: nn.Module, spec: str) -> tuple[int, ...] | None:
    """The model's own ``input_shape`` attribute, checked (``None`` when it has none)."""
    shape = getattr(model, "input_shape", None)
    if shape is None:
        return None
    try:
        return check_input_shape(shape, "input shape")
    except UserError as exc:
        raise UserError(f"{spec}: the model's input_shape attribute is not a usable shape ({exc})") from None


def _call_factory(factory, spec: str, num_classes: int | None) -> nn.Module:
    if not callable(factory):
        raise UserError(f"{spec}: {factory!r} is not callable")
    kwargs = {}
    if num_classes is not None:
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}
        if "num_classes" in params:
            kwargs["num_classes"] = num_classes
    try:
        model = factory(**kwargs)
    except UserError:
        raise
    except Exception as exc:  # the user's factory failed: one line, no traceback
        raise UserError(f"{spec}: factory raised {type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{spec}: factory returned {type(model).__name__}, not an nn.Module")
    return model


def resolve_model(spec: str, num_classes: int | None = None) -> ResolvedModel:
    """Build the model named by ``spec`` (see module docstring)."""
    spec = spec.strip()
    if ":" not in spec:
        if spec in zoo_names():
            return ResolvedModel(build(spec, num_classes), spec, get_entry(spec).input_shape)
        raise UserError(f"unknown model {spec!r}: use a zoo name ({', '.join(zoo_names())}), "
                        "package.module:factory or path/to/file.py:factory")
    target, _, attr = spec.rpartition(":")
    if not target or not attr or not attr.replace("_", "a").replace(".", "a").isalnum():
        raise UserError(f"malformed model spec {spec!r}: expected package.module:factory or file.py:factory")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        try:
            found = path.is_file()
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise UserError(f"cannot read model file {target}: {exc.strerror or exc}") from None
        if not found:
            raise UserError(f"model file not found: {target}")
        name = f"_energymodel_user_{abs(hash(str(path.resolve())))}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise UserError(f"cannot import {target}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise UserError(f"cannot import {target}: {type(exc).__name__}: {one_line(exc)}") from None
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise UserError(f"cannot import module {target!r}: {type(exc).__name__}: {one_line(exc)}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{target} has no attribute {attr!r}")
        obj = getattr(obj, part)
    model = _call_factory(obj, spec, num_classes)
    return ResolvedModel(model, spec, _attribute_shape(model, spec))
