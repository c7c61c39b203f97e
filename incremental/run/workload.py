"""The inputs of a run: its data (loaded once, then split per seed into tasks) and its model factory."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from energymodel.errors import UserError
from incremental.data import (
    ImageArrays,
    TensorImageDataset,
    cifar_augment,
    dataset_stats,
    holdout_split,
    load_dataset,
    make_tasks,
    subsample,
)
from incremental.data.arrays import per_channel_mean_std
from incremental.run.config import RunConfig
from incremental.run.records import derive_seed

__all__ = ["ModelFactory", "_RawData", "_SeedData", "_load_raw", "_prepare", "_model_factory", "_check_model"]

ModelFactory = Callable[[int], nn.Module]


@dataclass
class _RawData:
    train: ImageArrays
    test: ImageArrays
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str


def _load_raw(cfg: RunConfig, data: tuple[ImageArrays, ImageArrays] | None, show: bool) -> _RawData:
    if data is not None:
        train, test = data
        mean, std = per_channel_mean_std(train)
        return _RawData(train, test, mean, std, train.source)
    kw: dict[str, Any] = {}
    if cfg.dataset == "imagefolder":
        kw = {"size": cfg.image_size, "cache_dir": cfg.data_cache, "workers": cfg.data_workers or (os.cpu_count() or 1),
              "progress": show}
    elif cfg.image_size is not None or cfg.data_cache is not None:
        raise UserError(f"config fields 'image_size' and 'data_cache' apply to imagefolder, not {cfg.dataset}")
    train = load_dataset(cfg.dataset, cfg.data_root, "train", **kw)
    test = load_dataset(cfg.dataset, cfg.data_root, "test", **kw)
    mean, std = dataset_stats(cfg.dataset, train)
    return _RawData(train, test, tuple(mean), tuple(std), train.source)


@dataclass
class _SeedData:
    classes: list[list[int]]
    class_names: list[list[str]]
    train: list[Dataset]  # per task, training part (local labels; augmented when configured)
    plain: list[Dataset]  # per task, the same training images without augmentation (statistics)
    heldout: list[Dataset | None]  # per task, output-calibration hold-out (None when disabled)
    validation: list[Dataset | None]  # per task, validation split: never trained or fitted on (None when 0)
    test: list[Dataset]
    search_train: dict[int, Dataset]  # per searched task: the trial-training part of its subset
    search_val: dict[int, Dataset]
    sizes: dict[str, Any]
    input_shape: tuple[int, int, int]


def _own_splits(cfg: RunConfig, images: ImageArrays, seed: int, task: int
                ) -> tuple[ImageArrays, ImageArrays | None, ImageArrays | None]:
    """``(training part, output-calibration hold-out, validation)`` of one task's training images.

    The validation split is carved first (``validation_fraction``), then the hold-out from what is left; the
    search draws its subset from the training part only. Each split is stratified and drawn from its own seed.
    """
    val = None
    if cfg.validation_fraction > 0:
        images, val = holdout_split(images, cfg.validation_fraction, seed=derive_seed(seed, "validation", task))
    held = None
    if cfg.output_calibration.enabled:
        images, held = holdout_split(images, cfg.output_calibration.holdout_fraction,
                                     seed=derive_seed(seed, "heldout", task))
    return images, held, val


def _prepare(cfg: RunConfig, raw: _RawData, seed: int, order: list[int]) -> _SeedData:
    train = subsample(raw.train, cfg.train_per_class, seed=derive_seed(seed, "train-subsample"))
    test = subsample(raw.test, cfg.test_per_class, seed=derive_seed(seed, "test-subsample"))  # drawn per seed
    tasks = make_tasks(train, test, cfg.task_sizes, order)
    aug = cifar_augment() if cfg.augment else None
    out = _SeedData([], [], [], [], [], [], [], {}, {}, {"train": [], "heldout": [], "validation": [], "test": []},
                    train.shape)
    parts = []
    for task in tasks:
        part, held, val = _own_splits(cfg, task.train, seed, task.index)
        parts.append(part)
        lm = task.label_map
        out.classes.append(list(task.classes))
        out.class_names.append(task.class_names)
        out.train.append(TensorImageDataset(part, raw.mean, raw.std, augment=aug, label_map=lm))
        out.plain.append(out.train[-1] if aug is None else TensorImageDataset(part, raw.mean, raw.std, label_map=lm))
        out.heldout.append(TensorImageDataset(held, raw.mean, raw.std, label_map=lm) if held is not None else None)
        out.validation.append(TensorImageDataset(val, raw.mean, raw.std, label_map=lm) if val is not None else None)
        out.test.append(TensorImageDataset(task.test, raw.mean, raw.std, label_map=lm))
        out.sizes["train"].append(len(part))
        out.sizes["heldout"].append(len(held) if held is not None else 0)
        out.sizes["validation"].append(len(val) if val is not None else 0)
        out.sizes["test"].append(len(task.test))
    if cfg.share == "auto":
        searched = range(1, len(tasks)) if cfg.search.per_task else [1]
        for t in searched:  # the search reads only the training part of the task it decides for
            extra = () if t == 1 else (t,)
            sub = subsample(parts[t], cfg.search.subset_per_class, seed=derive_seed(seed, "search-subset", *extra))
            s_train, s_val = holdout_split(sub, cfg.search.val_fraction, seed=derive_seed(seed, "search-val", *extra))
            lm = tasks[t].label_map
            out.search_train[t] = TensorImageDataset(s_train, raw.mean, raw.std, augment=aug, label_map=lm)
            out.search_val[t] = TensorImageDataset(s_val, raw.mean, raw.std, label_map=lm)
        out.sizes["search"] = [len(out.search_train[1]), len(out.search_val[1])]
    return out


# ---------------------------------------------------------------------------- model
def _model_factory(cfg: RunConfig, model_factory: ModelFactory | None, input_shape: Sequence[int]) -> ModelFactory:
    """Networks of ``num_classes`` outputs as :class:`~energymodel.models.blocks.BlockNet`: declared, or viewed
    through the sharing points found for ``input_shape`` (``cfg.blocks`` names them)."""
    from energymodel.models.chain import block_view
    from energymodel.models.spec import resolve_model

    shape = tuple(int(s) for s in input_shape)

    def build(n: int) -> nn.Module:
        model = model_factory(n) if model_factory is not None else resolve_model(cfg.model, n).model
        try:
            return block_view(model, shape, blocks=cfg.blocks)
        except UserError as exc:
            raise UserError(f"model {cfg.model}: {exc}") from None

    return build


def _check_model(factory: ModelFactory, cfg: RunConfig, shape: Sequence[int], num_classes: int) -> None:
    try:
        model = factory(num_classes)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user's factory may raise anything
        text = str(exc).strip().splitlines()
        raise UserError(f"model {cfg.model} could not be built: {type(exc).__name__}: {text[0] if text else ''}"
                        ) from None
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *shape))
    except Exception as exc:  # noqa: BLE001 - any failure means the model does not fit the data
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model {cfg.model} cannot take the {cfg.dataset} images of shape "
                        f"{'x'.join(map(str, shape))}: {first}") from None
    if tuple(out.shape) != (2, num_classes):
        raise UserError(f"model {cfg.model} returns shape {tuple(out.shape)} for {num_classes} classes")
