"""Clone-and-branch: a network that grows one branch per new task on top of a frozen, shared base.

Partial network sharing (Sarwar, Ankit & Roy, IEEE Access 2019). A base network (a
:class:`~energymodel.models.blocks.BlockNet`) is trained on task 0. For every new task a *branch* is grown at a
sharing point ``k``:

* blocks ``[0, k)`` of the base are shared: the branch reads the base's activation after block ``k - 1``.
  These blocks are frozen — parameters never receive gradients and batch-norm statistics never change,
  because the whole base network is kept in eval mode forever (:meth:`GrownNet.train` is overridden);
* blocks ``[k, n)`` and the head are deep-copied from the **base** network (weights included, so the branch
  starts from the base's features: clone-and-branch) and the head's classifier is replaced by a fresh
  ``nn.Linear`` with one output per new class. Only this copy trains, on the new task's data alone.

Old tasks lose nothing: the base and earlier branches are never modified, so their logits are bit-identical
before and after later tasks. Inference runs the shared prefix once and taps it at every distinct sharing
point (a tree, :meth:`GrownNet.forward_all`).

Task 0 is the base network itself (``share = n``: all blocks shared, its own head). Class ids are global;
labels inside each task are local (``0 .. len(classes) - 1``) in the order of that task's ``classes``.

Every task also owns two calibration buffers, ``temperature`` and ``bias`` (see
:mod:`incremental.agnostic.output_calibration`), used by task-agnostic prediction; they live in the state dict, so a
checkpoint restores them. :meth:`GrownNet.structure` plus ``state_dict()`` is a complete checkpoint;
:meth:`GrownNet.from_structure` rebuilds the module before ``load_state_dict``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from energymodel.errors import UserError
from energymodel.models.blocks import BlockNet, as_block_net, classifier_of, head_with_classes

__all__ = ["Branch", "GrownNet", "TaskCalibration", "TaskPredictor"]

STRUCTURE_VERSION = 1


@dataclass
class Branch:
    """One task's path through a :class:`GrownNet`.

    ``module`` maps the activation after block ``share - 1`` of the base (the input when ``share == 0``)
    to the task's logits: the cloned blocks ``[share, n)`` followed by a child named ``head``. For task 0
    it wraps the base's own head (``share == n``).
    """

    task: int
    share: int
    classes: list[int]
    module: nn.Sequential


class TaskCalibration(nn.Module):
    """Per-task output calibration: calibrated logits = ``logits / temperature + bias`` (buffers, saved)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("bias", torch.zeros(()))

    def forward(self, logits: Tensor) -> Tensor:  # noqa: D401 - nn.Module API
        return logits / self.temperature.to(logits.dtype) + self.bias.to(logits.dtype)


class _Trunk(nn.Sequential):
    """The shared prefix of a :class:`GrownNet`: an ``nn.Sequential`` that stays in eval mode when frozen."""

    def __init__(self, blocks: OrderedDict[str, nn.Module], frozen: bool, training: bool) -> None:
        super().__init__(blocks)
        self._frozen = frozen
        self.training = training and not frozen

    def train(self, mode: bool = True) -> _Trunk:
        return super().train(mode and not self._frozen)


def _check_classes(classes: Sequence[int], what: str) -> list[int]:
    out = []
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, int):
            try:
                ci = int(c)
            except (TypeError, ValueError):
                raise ValueError(f"{what}: class id {c!r} is not an integer") from None
            if ci != c:
                raise ValueError(f"{what}: class id {c!r} is not an integer")
            c = ci
        out.append(int(c))
    if not out:
        raise ValueError(f"{what}: a task needs at least one class")
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: duplicate class ids in {out}")
    return out


def _device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype] | None:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return None


class TaskPredictor:
    """Predictions shared by every predictor: task ``t`` answers with the global class ids ``_classes[t]``.

    A subclass provides ``_classes`` (one list of global ids per task, in its logits' column order) and
    ``forward_task(x, task)``.
    """

    _classes: list[list[int]]

    @property
    def all_classes(self) -> list[int]:
        """Global class ids of all tasks concatenated in task order (the columns of task-agnostic logits)."""
        return [c for cls in self._classes for c in cls]

    @staticmethod
    def to_class_ids(logits: Tensor, classes: Sequence[int]) -> Tensor:
        """The global class id of each row's argmax column (``classes[j]`` is column ``j``'s id)."""
        ids = torch.tensor(list(classes), device=logits.device)
        return ids[logits.argmax(dim=1)]

    def predict_task_aware(self, x: Tensor, task: int) -> Tensor:
        """Global class ids predicted when the task is known (argmax within that task's classes)."""
        with torch.no_grad():
            return self.to_class_ids(self.forward_task(x, task), self._classes[task])


class GrownNet(TaskPredictor, nn.Module):
    """A base network plus one clone-and-branch branch per later task.

    Parameters
    ----------
    base:
        The network trained on task 0, viewed through :func:`~energymodel.models.blocks.as_block_net` (not
        copied: the GrownNet owns it from now on). Its classifier must have ``len(base_classes)`` outputs.
    base_classes:
        Global class ids of task 0, in the order of the base classifier's outputs.
    """

    def __init__(self, base: nn.Module, base_classes: Sequence[int]) -> None:
        super().__init__()
        self.base: BlockNet = as_block_net(base)
        classes = _check_classes(base_classes, "base_classes")
        n_out = classifier_of(self.base.head).out_features
        if n_out != len(classes):
            raise ValueError(f"base classifier has {n_out} outputs but {len(classes)} base classes were given")
        self.branch_modules = nn.ModuleList()
        self.calibration = nn.ModuleList([TaskCalibration()])
        self._shares: list[int] = []
        self._classes: list[list[int]] = [classes]
        self._base_frozen = False
        self._frozen_branches: set[int] = set()
        self._align_calibration(0)

    # ------------------------------------------------------------------ structure
    @property
    def num_blocks(self) -> int:
        """Number of blocks ``n`` of the base network (the largest sharing point)."""
        return len(self.base.blocks)

    @property
    def tasks(self) -> int:
        """Number of tasks (the base counts as task 0)."""
        return 1 + len(self.branch_modules)

    @property
    def base_frozen(self) -> bool:
        """Whether :meth:`freeze_base` has been called (it is, implicitly, by :meth:`add_branch`)."""
        return self._base_frozen

    def share_of(self, task: int) -> int:
        """Sharing point of ``task`` (``n`` for task 0)."""
        self._check_task(task)
        return self.num_blocks if task == 0 else self._shares[task - 1]

    def classes_of(self, task: int) -> list[int]:
        """Global class ids of ``task`` (copy), in the order of its classifier's outputs."""
        self._check_task(task)
        return list(self._classes[task])

    def branch(self, task: int) -> Branch:
        """The :class:`Branch` record of ``task`` (task 0 wraps the base head; its module is not registered)."""
        self._check_task(task)
        if task == 0:
            module = nn.Sequential(OrderedDict([("head", self.base.head)]))
        else:
            module = self.branch_modules[task - 1]
        return Branch(task=task, share=self.share_of(task), classes=self.classes_of(task), module=module)

    @property
    def branches(self) -> list[Branch]:
        """All tasks' :class:`Branch` records, task 0 first."""
        return [self.branch(t) for t in range(self.tasks)]

    def trunk(self, share: int) -> nn.Sequential:
        """Base blocks ``[0, share)`` as an ``nn.Sequential`` of the shared modules themselves (not copies).

        Once the base is frozen the returned container refuses training mode (``train()`` keeps it and
        the shared blocks in eval mode), so the shared batch norms can never update their statistics.
        """
        n = self.num_blocks
        if not 0 <= share <= n:
            raise ValueError(f"sharing point {share} out of range 0..{n}")
        items = list(self.base.blocks.named_children())[:share]
        return _Trunk(OrderedDict(items), frozen=self._base_frozen, training=self.base.training)

    def _check_task(self, task: int) -> None:
        if not 0 <= task < self.tasks:
            raise IndexError(f"task {task} out of range 0..{self.tasks - 1}")

    def _align_calibration(self, task: int) -> None:
        dd = _device_dtype(self.base)
        if dd is not None:
            self.calibration[task].to(device=dd[0])

    # ------------------------------------------------------------------ freezing
    def freeze_base(self) -> None:
        """Freeze the base: ``requires_grad = False`` (and ``grad = None``) on all its parameters, eval mode from now on.

        After this, :meth:`train` never puts the base (trunk blocks, batch norms, task 0 head) back in
        training mode, so its batch-norm running statistics can no longer change.
        """
        for p in self.base.parameters():
            p.requires_grad_(False)
            p.grad = None
        self._base_frozen = True
        self.base.eval()

    def freeze_branch(self, task: int) -> None:
        """Freeze branch ``task`` (>= 1) like the base: no gradients, eval mode forever."""
        self._check_task(task)
        if task == 0:
            self.freeze_base()
            return
        module = self.branch_modules[task - 1]
        for p in module.parameters():
            p.requires_grad_(False)
            p.grad = None
        module.eval()
        self._frozen_branches.add(task)

    def is_frozen(self, task: int) -> bool:
        """Whether ``task``'s own parameters are frozen (task 0: the base)."""
        self._check_task(task)
        return self._base_frozen if task == 0 else task in self._frozen_branches

    def train(self, mode: bool = True) -> GrownNet:
        """Set training mode on trainable parts only; the frozen base and frozen branches stay in eval mode."""
        super().train(mode)
        if self._base_frozen:
            self.base.eval()
        for task in self._frozen_branches:
            self.branch_modules[task - 1].eval()
        return self

    # ------------------------------------------------------------------ growing
    def build_branch_module(self, share: int, num_classes: int) -> nn.Sequential:
        """A new, unregistered branch module: deep copies of base blocks ``[share, n)`` + a head whose
        classifier is fresh with ``num_classes`` outputs; all its parameters require grad, training mode,
        same device/dtype as the base."""
        n = self.num_blocks
        if not 0 <= share <= n:
            raise ValueError(f"sharing point {share} out of range 0..{n}")
        if num_classes < 1:
            raise ValueError("a branch needs at least one class")
        items = [(name, copy.deepcopy(block)) for name, block in list(self.base.blocks.named_children())[share:]]
        if any(name == "head" for name, _ in items):
            raise ValueError("a base block is named 'head', which clashes with the branch head's name")
        head = head_with_classes(self.base.head, num_classes)
        module = nn.Sequential(OrderedDict([*items, ("head", head)]))
        dd = _device_dtype(self.base)
        if dd is not None:
            module.to(device=dd[0], dtype=dd[1])
        for p in module.parameters():
            p.requires_grad_(True)
        module.train()
        return module

    def add_branch(self, share: int, classes: Sequence[int]) -> Branch:
        """Grow a branch for a new task sharing base blocks ``[0, share)``; return its :class:`Branch`.

        The branch clones base blocks ``[share, n)`` and the base head (with a fresh classifier for
        ``classes``) and is trainable. Adding a branch freezes the base (:meth:`freeze_base`) and every
        earlier branch (:meth:`freeze_branch`): old tasks must never change.
        """
        cls = _check_classes(classes, "classes")
        module = self.build_branch_module(share, len(cls))
        if not self._base_frozen:
            self.freeze_base()
        for task in range(1, self.tasks):
            if task not in self._frozen_branches:
                self.freeze_branch(task)
        self.branch_modules.append(module)
        self.calibration.append(TaskCalibration())
        self._shares.append(int(share))
        self._classes.append(cls)
        self._align_calibration(self.tasks - 1)
        return self.branch(self.tasks - 1)

    def pop_branch(self) -> Branch:
        """Remove and return the newest branch (e.g. a trial branch of a sharing-point search).

        Earlier branches stay frozen. Task 0 cannot be removed.
        """
        if self.tasks < 2:
            raise IndexError("no branch to remove: only the base task is left")
        record = self.branch(self.tasks - 1)
        task = self.tasks - 1
        del self.branch_modules[task - 1]
        del self.calibration[task]
        self._shares.pop()
        self._classes.pop()
        self._frozen_branches.discard(task)
        return record

    # ------------------------------------------------------------------ calibration
    def set_calibration(self, task: int, temperature: float, bias: float) -> None:
        """Set ``task``'s calibration: calibrated logits = logits / temperature + bias."""
        self._check_task(task)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        cal = self.calibration[task]
        cal.temperature.fill_(float(temperature))
        cal.bias.fill_(float(bias))

    def get_calibration(self, task: int) -> tuple[float, float]:
        """``(temperature, bias)`` of ``task``."""
        self._check_task(task)
        cal = self.calibration[task]
        return float(cal.temperature), float(cal.bias)

    # ------------------------------------------------------------------ inference
    def forward_all(self, x: Tensor) -> list[Tensor]:
        """Logits of every task, task 0 first.

        The base blocks run once; the activation is tapped at each distinct sharing point and fed to the
        branches sharing there (a tree). Call ``eval()`` first for inference: a trainable branch in training
        mode would update its own batch-norm statistics.
        """
        n = self.num_blocks
        shares = [self.share_of(t) for t in range(self.tasks)]
        taps: dict[int, Tensor] = {}
        wanted = set(shares)
        h = x
        for i, block in enumerate(self.base.blocks):  # task 0 shares all n blocks: the base runs to the end
            if i in wanted:
                taps[i] = h
            h = block(h)
        taps[n] = h
        outs = [self.base.head(taps[n])]
        for t in range(1, self.tasks):
            outs.append(self.branch_modules[t - 1](taps[shares[t]]))
        return outs

    def forward(self, x: Tensor) -> list[Tensor]:  # noqa: D401 - nn.Module API
        """Same as :meth:`forward_all`."""
        return self.forward_all(x)

    def forward_task(self, x: Tensor, task: int) -> Tensor:
        """Logits of one task (local class order): its branch applied to the shared trunk's output."""
        share = self.share_of(task)
        h = self.trunk(share)(x)
        if task == 0:
            return self.base.head(h)
        return self.branch_modules[task - 1](h)

    def calibrated_logits(self, logits: Sequence[Tensor]) -> list[Tensor]:
        """Apply every task's calibration to its logits (``logits`` as returned by :meth:`forward_all`)."""
        if len(logits) != self.tasks:
            raise ValueError(f"expected logits of {self.tasks} tasks, got {len(logits)}")
        return [self.calibration[t](lg) for t, lg in enumerate(logits)]

    def predict_agnostic(self, x: Tensor, calibrated: bool = True) -> Tensor:
        """Global class ids predicted without the task: argmax over all tasks' concatenated (calibrated) logits."""
        with torch.no_grad():
            logits = self.forward_all(x)
            if calibrated:
                logits = self.calibrated_logits(logits)
            return self.to_class_ids(torch.cat(logits, dim=1), self.all_classes)

    # ------------------------------------------------------------------ persistence
    def structure(self) -> dict[str, Any]:
        """JSON-able description rebuilding this network's module tree (weights come from ``state_dict``)."""
        return {
            "kind": "grown",
            "version": STRUCTURE_VERSION,
            "num_blocks": self.num_blocks,
            "base_classes": list(self._classes[0]),
            "base_frozen": self._base_frozen,
            "branches": [
                {"share": self._shares[t - 1], "classes": list(self._classes[t]), "frozen": self.is_frozen(t)}
                for t in range(1, self.tasks)
            ],
        }

    @classmethod
    def from_structure(cls, base_factory: Callable[[], nn.Module], structure: dict[str, Any]) -> GrownNet:
        """Rebuild a GrownNet from :meth:`structure`; load the saved ``state_dict`` into it afterwards.

        ``base_factory()`` must return a fresh base network of the same architecture (and number of base
        classes). A malformed ``structure`` raises :class:`~energymodel.errors.UserError`.
        """
        if not isinstance(structure, dict) or structure.get("kind", "grown") != "grown":
            kind = structure.get("kind") if isinstance(structure, dict) else type(structure).__name__
            raise UserError(f"not a GrownNet structure (kind {kind!r})")
        try:
            base_classes = list(structure["base_classes"])
            branches = [(int(b["share"]), list(b["classes"]), bool(b.get("frozen", False)))
                        for b in structure["branches"]]
            base_frozen = bool(structure.get("base_frozen", bool(branches)))
            num_blocks = structure.get("num_blocks")
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"malformed GrownNet structure: {type(exc).__name__}: {exc}") from None
        try:
            grown = cls(base_factory(), base_classes)
        except ValueError as exc:
            raise UserError(f"GrownNet structure does not fit the base network: {exc}") from None
        if num_blocks is not None and int(num_blocks) != grown.num_blocks:
            raise UserError(
                f"GrownNet structure has {num_blocks} base blocks but the base network has {grown.num_blocks}"
            )
        if base_frozen:
            grown.freeze_base()
        try:
            for share, classes, _ in branches:
                grown.add_branch(share, classes)
        except ValueError as exc:
            raise UserError(f"malformed GrownNet structure: {exc}") from None
        if branches and branches[-1][2]:
            grown.freeze_branch(grown.tasks - 1)
        return grown
