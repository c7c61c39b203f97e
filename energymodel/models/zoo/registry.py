"""Named models of the zoo: what each is, its default input shape and class count, how to build it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from energymodel.errors import UserError
from energymodel.models.blocks import BlockNet
from energymodel.models.zoo import resnet, small, vgg

__all__ = ["ZooEntry", "ZOO", "zoo_names", "get_entry", "build"]

IMAGENET = (3, 224, 224)
CIFAR = (3, 32, 32)
MNIST = (1, 28, 28)


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: ``factory(num_classes=...)`` builds it for inputs of ``input_shape`` (C, H, W)."""

    name: str
    factory: Callable[..., BlockNet]
    input_shape: tuple[int, int, int]
    default_classes: int
    description: str


def _entries(*entries: ZooEntry) -> Mapping[str, ZooEntry]:
    return MappingProxyType({e.name: e for e in entries})


#: Every zoo model by name, in a fixed order (read-only).
ZOO: Mapping[str, ZooEntry] = _entries(
    ZooEntry("resnet18", resnet.resnet18, IMAGENET, 1000, "ResNet-18, ImageNet form (torchvision layout)"),
    ZooEntry("resnet34", resnet.resnet34, IMAGENET, 1000, "ResNet-34, ImageNet form (torchvision layout)"),
    ZooEntry(
        "resnet50", resnet.resnet50, IMAGENET, 1000, "ResNet-50 v1.5, ImageNet form (torchvision layout)"
    ),
    ZooEntry("cifar_resnet18", resnet.cifar_resnet18, CIFAR, 10, "ResNet-18, 3x3 stem, no max-pool, 64..512"),
    ZooEntry("cifar_resnet34", resnet.cifar_resnet34, CIFAR, 10, "ResNet-34, 3x3 stem, no max-pool, 64..512"),
    ZooEntry(
        "cifar_resnet20", resnet.cifar_resnet20, CIFAR, 10, "He et al. CIFAR ResNet-20, 16/32/64, option B"
    ),
    ZooEntry(
        "cifar_resnet32", resnet.cifar_resnet32, CIFAR, 10, "He et al. CIFAR ResNet-32, 16/32/64, option B"
    ),
    ZooEntry(
        "cifar_resnet56", resnet.cifar_resnet56, CIFAR, 10, "He et al. CIFAR ResNet-56, 16/32/64, option B"
    ),
    ZooEntry(
        "vgg16", vgg.vgg16, IMAGENET, 1000, "VGG-16 (config D), ImageNet form, no BN (torchvision vgg16)"
    ),
    ZooEntry(
        "cifar_vgg16", vgg.cifar_vgg16, CIFAR, 10, "VGG-16 (config D) with BN, CIFAR form, 512->classes"
    ),
    ZooEntry("smallcnn", small.smallcnn, MNIST, 10, "4-conv + 1-fc CNN for 28x28 greyscale (Fashion-MNIST)"),
)


def zoo_names() -> list[str]:
    """Names of every zoo model, in registry order."""
    return list(ZOO)


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name``; raises :class:`UserError` (one line) for an unknown name."""
    try:
        return ZOO[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown model {name!r}; known: {', '.join(ZOO)}") from None


def build(name: str, num_classes: int | None = None) -> BlockNet:
    """A freshly initialised ``name`` with ``num_classes`` outputs (the entry's default when ``None``)."""
    entry = get_entry(name)
    if num_classes is None:
        num_classes = entry.default_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    return entry.factory(num_classes=num_classes)
