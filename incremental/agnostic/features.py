"""What every task-agnostic method reads: each task's logits and penultimate features, in one forward pass.

For a :class:`~incremental.model.branching.GrownNet` the *own* features of task ``t`` are the input of task ``t``'s
classifier (the last ``nn.Linear`` of its head): the branch's own penultimate representation. Task 0 is the
base network, so ``own[0]`` is also the **common** feature space: every input runs through the whole base
(the tree inference of :meth:`GrownNet.forward_all` computes it anyway), so common-space statistics cost no
extra inference. For a single network (naive fine-tuning, full retraining) every task reads the same network.

The **trunk** features are the output of every block of the base network, each pooled to one number per
channel (:func:`pool_channels`): the multi-layer view of the one network every input passes through whole
(Lee et al., NeurIPS 2018, score out-of-distribution inputs by Mahalanobis distances at several layers). Early
blocks keep what a base network trained on few classes has not yet discarded. They come from the same pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from energymodel.errors import UserError
from energymodel.models.blocks import classifier_of
from incremental.agnostic.gaussian import multi_block_normalise

__all__ = ["Outputs", "collect", "collect_task", "outputs_of_batch", "pool_channels"]


def pool_channels(h: Tensor) -> Tensor:
    """One number per channel and input: the mean over every dimension after the channel one (``N x C``).

    ``N x C x H x W`` (and ``N x C x L``) is averaged over its positions; ``N x D`` is returned as is.
    """
    return h.flatten(2).mean(dim=2) if h.dim() > 2 else h.flatten(1)


@dataclass
class Outputs:
    """Per task ``t``: ``logits[t]`` (N x C_t) and ``own[t]`` (N x D_t); ``labels`` (N, local labels or -1).

    ``calibration[t]`` is task ``t``'s output calibration ``(T, b)`` (None for an uncalibrated predictor).
    ``trunk[l]`` (N x C_l) is block ``l`` of the base network pooled per channel (empty when not collected).
    """

    logits: list[Tensor]
    own: list[Tensor]
    labels: Tensor
    calibration: list[tuple[float, float]] | None = None
    trunk: list[Tensor] = field(default_factory=list)

    @property
    def common(self) -> Tensor:
        """The base network's penultimate features (task 0's own space)."""
        return self.own[0]

    @cached_property
    def trunk_space(self) -> Tensor:
        """The trunk blocks mapped into one space (:func:`multi_block_normalise`), computed once per outputs."""
        if not self.trunk:
            raise UserError("task-agnostic statistics: the outputs carry no trunk features")
        return multi_block_normalise(self.trunk)

    def space(self, name: str, t: int) -> Tensor:
        """Task ``t``'s features in feature space ``name``: ``own`` (its branch), ``common`` or ``trunk``."""
        if name == "own":
            return self.own[t]
        return self.common if name == "common" else self.trunk_space

    @property
    def tasks(self) -> int:
        return len(self.logits)

    def task(self, t: int) -> Outputs:
        """Only what task ``t`` itself produces (its logits and own features) plus the common features."""
        own = [self.own[0]] + ([self.own[t]] if t else [])
        return Outputs([self.logits[t]], own, self.labels, None, self.trunk)


def _columns(batches: list[list[Tensor]]) -> list[Tensor]:
    """Per-batch lists of tensors (batch x column) concatenated into one tensor per column."""
    return [torch.cat([b[i] for b in batches]) for i in range(len(batches[0]))]


def _classifiers(predictor: nn.Module) -> list[nn.Module]:
    if hasattr(predictor, "branch_modules"):  # GrownNet
        return [classifier_of(predictor.base.head)] + [classifier_of(m.head) for m in predictor.branch_modules]
    from energymodel.models.blocks import as_block_net

    clf = classifier_of(as_block_net(predictor.model).head)
    return [clf] * predictor.tasks


def _trunk_blocks(predictor: nn.Module) -> list[nn.Module]:
    """The blocks of the network every input runs through whole: the base of a GrownNet, else the one network."""
    if hasattr(predictor, "branch_modules"):
        return list(predictor.base.blocks)
    from energymodel.models.blocks import as_block_net

    return list(as_block_net(predictor.model).blocks)


def outputs_of_batch(predictor: nn.Module, x: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """``(logits per task, own features per task, pooled trunk blocks)`` of one input batch (under ``no_grad``)."""
    classifiers = _classifiers(predictor)
    captured: dict[int, Tensor] = {}
    trunk: dict[int, Tensor] = {}
    hooks = [block.register_forward_hook(lambda _m, _a, h, i=i: trunk.__setitem__(i, pool_channels(h)))
             for i, block in enumerate(_trunk_blocks(predictor))]
    for i, clf in enumerate(dict.fromkeys(classifiers)):  # a single network has one classifier for all tasks
        def hook(_m, args, i=i):
            captured[i] = args[0].flatten(1)
        hooks.append(clf.register_forward_pre_hook(hook))
    try:
        logits = predictor.forward_all(x)
    finally:
        for h in hooks:
            h.remove()
    unique = list(dict.fromkeys(classifiers))
    own = [captured[unique.index(c)] for c in classifiers]
    return logits, own, [trunk[i] for i in sorted(trunk)]


def collect(predictor: nn.Module, data: Dataset, batch_size: int, device: torch.device,
            calibrated: bool = False) -> Outputs:
    """:class:`Outputs` of ``predictor`` over ``data`` (in order, on the CPU, float32), eval mode, no grad."""
    from incremental.train.config import split_batch

    predictor.eval()
    predictor.to(device)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    logits: list[list[Tensor]] = []
    own: list[list[Tensor]] = []
    trunk: list[list[Tensor]] = []
    labels: list[Tensor] = []
    with torch.no_grad():
        for batch in loader:
            x, y = split_batch(batch)
            lg, ow, tr = outputs_of_batch(predictor, x.to(device))
            logits.append([t.float().cpu() for t in lg])
            own.append([t.float().cpu() for t in ow])
            trunk.append([t.float().cpu() for t in tr])
            labels.append(y.cpu())
    if not labels:
        raise ValueError("cannot collect outputs of an empty dataset")
    tasks = len(logits[0])
    cal = None
    if calibrated and hasattr(predictor, "get_calibration"):
        cal = [predictor.get_calibration(t) for t in range(tasks)]
    return Outputs(_columns(logits), _columns(own), torch.cat(labels), cal, _columns(trunk))


def collect_task(grown: nn.Module, data: Dataset, task: int, batch_size: int, device: torch.device) -> Outputs:
    """Only what fitting ``task`` needs, in one pass: the base network whole (task 0's logits and the common
    features) and task ``task``'s branch on the trunk tapped at its sharing point — no other branch runs.

    The other tasks' entries of the returned :class:`Outputs` are None (use it through ``TaskData(out, task)``).
    """
    from incremental.train.config import split_batch

    grown.eval()
    grown.to(device)
    share = grown.share_of(task)
    base_clf = classifier_of(grown.base.head)
    branch = grown.branch_modules[task - 1] if task else None
    clf = classifier_of(branch.head) if branch is not None else None
    cols: dict[str, list[Tensor]] = {"l0": [], "c": [], "lt": [], "ot": []}
    blocks: list[list[Tensor]] = []
    labels: list[Tensor] = []
    captured: dict[str, Tensor] = {}
    hooks = [base_clf.register_forward_pre_hook(lambda _m, a: captured.__setitem__("c", a[0].flatten(1)))]
    if clf is not None:
        hooks.append(clf.register_forward_pre_hook(lambda _m, a: captured.__setitem__("ot", a[0].flatten(1))))
    try:
        with torch.no_grad():
            for batch in DataLoader(data, batch_size=batch_size, shuffle=False):
                x, y = split_batch(batch)
                h, tap, pooled = x.to(device), None, []
                for i, block in enumerate(grown.base.blocks):
                    if i == share:
                        tap = h
                    h = block(h)
                    pooled.append(pool_channels(h).float().cpu())
                blocks.append(pooled)
                tap = h if tap is None else tap
                cols["l0"].append(grown.base.head(h).float().cpu())
                cols["c"].append(captured["c"].float().cpu())
                if branch is not None:
                    cols["lt"].append(branch(tap).float().cpu())
                    cols["ot"].append(captured["ot"].float().cpu())
                labels.append(y.cpu())
    finally:
        for hk in hooks:
            hk.remove()
    if not labels:
        raise ValueError("cannot collect outputs of an empty dataset")
    logits: list[Tensor | None] = [torch.cat(cols["l0"])] + [None] * task
    own: list[Tensor | None] = [torch.cat(cols["c"])] + [None] * task
    if task:
        logits[task], own[task] = torch.cat(cols["lt"]), torch.cat(cols["ot"])
    cal = None
    if hasattr(grown, "get_calibration"):
        cal = [grown.get_calibration(t) if t in (0, task) else (1.0, 0.0) for t in range(task + 1)]
    return Outputs(logits, own, torch.cat(labels), cal, _columns(blocks))
