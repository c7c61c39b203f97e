"""Checkpoints: plain dicts of tensors and JSON-like values, written atomically, loaded with ``weights_only``,
each with a digest of its content that is verified when it is loaded.

A checkpoint may hold only tensors, dicts (string/int keys), lists, tuples, ``str``, ``int``, ``float``,
``bool`` and ``None`` — exactly what ``torch.load(weights_only=True)`` accepts without unpickling
arbitrary objects — so loading a checkpoint never executes code. :func:`save_checkpoint` checks this
before writing, so an unloadable checkpoint is never produced. Files are written through
:func:`energymodel.atomic.atomic_path`: a crash mid-write leaves the previous checkpoint intact.

**Digest.** :func:`save_checkpoint` stores, under :data:`DIGEST_KEY`, the SHA-256 of the content
(:func:`content_digest`: every key, type, shape, dtype and byte of every tensor, in order); :func:`load_checkpoint`
computes it again and refuses a file whose content does not match (one flipped bit of a weight included), or
that has no digest, with one line naming the file and the way to recover. What a kill cannot do (the atomic
writer sees to that), a disk, a copy or a hand can: the digest is what tells.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from energymodel.atomic import atomic_path
from energymodel.errors import UserError

__all__ = ["DIGEST_KEY", "check_checkpoint_object", "content_digest", "load_checkpoint", "load_state",
           "save_checkpoint"]

_SCALARS = (str, int, float, bool, type(None))
#: the key under which a checkpoint stores the SHA-256 of the rest of its content
DIGEST_KEY = "__sha256__"


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for key, value in obj.items():
            h.update(f"{type(key).__name__}{key!r}=".encode())
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for value in obj:
            _feed(h, value)
    else:
        h.update(f"S{type(obj).__name__}{obj!r};".encode())


def content_digest(obj: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's content (without :data:`DIGEST_KEY`): keys in order, types, tensor bytes."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in obj.items() if k != DIGEST_KEY})
    return h.hexdigest()


def check_checkpoint_object(obj: Any, where: str = "checkpoint") -> None:
    """Raise ``TypeError`` naming the offending entry when ``obj`` holds anything but the allowed types."""
    if isinstance(obj, torch.Tensor) or isinstance(obj, _SCALARS):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} of type {type(key).__name__} is not str/int")
            check_checkpoint_object(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            check_checkpoint_object(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where}: {type(obj).__name__} cannot be stored in a checkpoint "
        "(allowed: tensors, dict, list, tuple, str, int, float, bool, None)"
    )


def save_checkpoint(path: str | os.PathLike, obj: dict[str, Any]) -> Path:
    """Write ``obj`` to ``path`` atomically with ``torch.save``; return the path.

    Raises ``TypeError`` when ``obj`` holds a disallowed type (see module docstring) and
    :class:`~energymodel.errors.UserError` when the folder cannot be written.
    """
    if not isinstance(obj, dict):
        raise TypeError(f"a checkpoint must be a dict, got {type(obj).__name__}")
    check_checkpoint_object(obj)
    target = Path(path)
    obj = {**{k: v for k, v in obj.items() if k != DIGEST_KEY}, DIGEST_KEY: content_digest(obj)}
    with atomic_path(target, suffix=".tmp") as tmp:
        try:
            torch.save(obj, tmp)
        except OSError as exc:
            raise UserError(f"cannot write checkpoint {target}: {exc.strerror or exc}") from None
        except RuntimeError as exc:  # torch.save reports a full disk as a RuntimeError from its zip writer
            raise UserError(f"cannot write checkpoint {target}: {_one_line(exc)}") from None
    return target


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    recover: str = "rerun with --force (force=True in Python) to start over") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``), its digest
    verified; returns its content (without the digest).

    A missing, unreadable, corrupt or non-dict file, or one whose content does not match its digest, raises
    :class:`~energymodel.errors.UserError`: one line naming it and ``recover`` (how to get out of it).
    """
    target = Path(path)
    if target.is_symlink() or not target.is_file():
        raise UserError(f"checkpoint {target} not found" if not os.path.lexists(target)
                        else f"checkpoint {target} is not a regular file: {recover}")
    try:
        obj = torch.load(target, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle means a bad file
        raise UserError(f"checkpoint {target} is corrupt or unreadable ({_one_line(exc)}): {recover}") from None
    if not isinstance(obj, dict):
        raise UserError(f"checkpoint {target} holds a {type(obj).__name__}, not a dict: {recover}")
    stored = obj.pop(DIGEST_KEY, None)
    if stored is None:
        raise UserError(f"checkpoint {target} carries no digest (written by an older version, or not a "
                        f"checkpoint of this tool): {recover}")
    if stored != content_digest(obj):
        raise UserError(f"checkpoint {target} is corrupt: its content does not match the digest stored with it "
                        f"(a changed bit): {recover}")
    return obj


def load_state(module: torch.nn.Module, state: Any, path: str | os.PathLike) -> None:
    """``module.load_state_dict(state)``; a checkpoint that does not fit the module is one :class:`UserError` line.

    A mismatch usually means the model's code changed between a kill and the resume.
    """
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} holds no state dict")
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        ours = set(module.state_dict())
        missing, unexpected = sorted(ours - set(state)), sorted(set(state) - ours)
        what = []
        if missing:
            what.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            what.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        detail = "; ".join(what) or _one_line(exc)
        raise UserError(f"checkpoint {path} does not fit the model ({detail}): the model code changed? "
                        "rerun with --force") from None
