"""Residual networks as :class:`~energymodel.models.blocks.BlockNet`: one block per residual block.

Three families:

* ImageNet ResNet-18/34/50 (torchvision v1.5 layout: 7x7 stride-2 stem + max-pool, stride on the 3x3
  conv of a bottleneck, 1x1 conv + BN downsampling shortcut). Parameter counts equal torchvision's.
* CIFAR ResNet-18/34: the same four stages (64..512 channels) behind a 3x3 stride-1 stem, no max-pool.
* CIFAR ResNet-20/32/56 (He et al. 2016, sec. 4.2): 3x3 conv-16 stem, three stages of ``n`` basic
  blocks with 16/32/64 channels, 1x1 conv + BN (option B) shortcut where the shape changes.

Every residual addition and every ReLU is a module call (:class:`Add`, separate ``nn.ReLU``
instances, never in-place) so a counter based on module hooks sees all of them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from energymodel.models.blocks import BlockNet
from energymodel.models.layers import Add

__all__ = [
    "Add",
    "BasicBlock",
    "Bottleneck",
    "resnet18",
    "resnet34",
    "resnet50",
    "cifar_resnet18",
    "cifar_resnet34",
    "cifar_resnet20",
    "cifar_resnet32",
    "cifar_resnet56",
]


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BN follows)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (a BN follows)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


def projection(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    """The 1x1 conv + BN shortcut when the shape changes, else ``None`` (identity shortcut)."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with a shortcut: ``relu2(add(bn2(conv2(relu1(bn1(conv1(x))))), shortcut(x)))``."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = conv3x3(in_ch, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = conv3x3(width, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = projection(in_ch, out_ch, stride)
        self.add = Add()
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(self.add(out, identity))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, torchvision v1.5), 1x1 expand by 4, each + BN, plus a shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv3 = conv1x1(width, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample = projection(in_ch, out_ch, stride)
        self.add = Add()
        self.relu3 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(self.add(out, identity))


ResidualBlock = type[BasicBlock] | type[Bottleneck]


def imagenet_stem(out_ch: int = 64) -> nn.Sequential:
    """7x7 stride-2 conv + BN + ReLU + 3x3 stride-2 max-pool (224 -> 56)."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, out_ch, kernel_size=7, stride=2, padding=3, bias=False),
            bn=nn.BatchNorm2d(out_ch),
            relu=nn.ReLU(inplace=False),
            maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
    )


def cifar_stem(out_ch: int) -> nn.Sequential:
    """3x3 stride-1 conv + BN + ReLU (keeps 32x32)."""
    return nn.Sequential(
        OrderedDict(conv=conv3x3(3, out_ch), bn=nn.BatchNorm2d(out_ch), relu=nn.ReLU(inplace=False))
    )


def pool_head(in_features: int, num_classes: int) -> nn.Sequential:
    """Global average pool + flatten + the linear classifier ``fc``."""
    return nn.Sequential(
        OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(in_features, num_classes)
        )
    )


def init_weights(model: nn.Module) -> None:
    """torchvision's ResNet init: Kaiming-normal (fan_out, relu) convs, BN weight 1 / bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def build_resnet(
    block: ResidualBlock,
    depths: Sequence[int],
    widths: Sequence[int],
    stem: nn.Module,
    num_classes: int,
) -> BlockNet:
    """Assemble stem + stages (first stage stride 1, later ones stride 2) + pooled linear head.

    Blocks are named ``stem``, ``layer{stage}_{index}`` (stage from 1, index from 0).
    """
    blocks: list[tuple[str, nn.Module]] = [("stem", stem)]
    in_ch = widths[0]
    for stage, (depth, width) in enumerate(zip(depths, widths, strict=True), start=1):
        for index in range(depth):
            stride = 2 if stage > 1 and index == 0 else 1
            blocks.append((f"layer{stage}_{index}", block(in_ch, width, stride)))
            in_ch = width * block.expansion
    model = BlockNet(blocks, pool_head(in_ch, num_classes))
    init_weights(model)
    return model


_IMAGENET_WIDTHS = (64, 128, 256, 512)
_CIFAR_WIDTHS = (16, 32, 64)


def resnet18(num_classes: int = 1000) -> BlockNet:
    """ImageNet ResNet-18 (11,689,512 parameters with 1000 classes, as torchvision)."""
    return build_resnet(BasicBlock, (2, 2, 2, 2), _IMAGENET_WIDTHS, imagenet_stem(), num_classes)


def resnet34(num_classes: int = 1000) -> BlockNet:
    """ImageNet ResNet-34 (21,797,672 parameters with 1000 classes, as torchvision)."""
    return build_resnet(BasicBlock, (3, 4, 6, 3), _IMAGENET_WIDTHS, imagenet_stem(), num_classes)


def resnet50(num_classes: int = 1000) -> BlockNet:
    """ImageNet ResNet-50 v1.5 (25,557,032 parameters with 1000 classes, as torchvision)."""
    return build_resnet(Bottleneck, (3, 4, 6, 3), _IMAGENET_WIDTHS, imagenet_stem(), num_classes)


def cifar_resnet18(num_classes: int = 10) -> BlockNet:
    """ResNet-18 for 32x32 inputs: 3x3 stride-1 stem, no max-pool, stages 64..512."""
    return build_resnet(BasicBlock, (2, 2, 2, 2), _IMAGENET_WIDTHS, cifar_stem(64), num_classes)


def cifar_resnet34(num_classes: int = 10) -> BlockNet:
    """ResNet-34 for 32x32 inputs: 3x3 stride-1 stem, no max-pool, stages 64..512."""
    return build_resnet(BasicBlock, (3, 4, 6, 3), _IMAGENET_WIDTHS, cifar_stem(64), num_classes)


def cifar_he_resnet(n: int, num_classes: int = 10) -> BlockNet:
    """He et al. CIFAR ResNet of depth ``6n + 2``: stages of ``n`` basic blocks with 16/32/64 channels."""
    return build_resnet(BasicBlock, (n, n, n), _CIFAR_WIDTHS, cifar_stem(16), num_classes)


def cifar_resnet20(num_classes: int = 10) -> BlockNet:
    """CIFAR ResNet-20 (n=3), option-B shortcuts."""
    return cifar_he_resnet(3, num_classes)


def cifar_resnet32(num_classes: int = 10) -> BlockNet:
    """CIFAR ResNet-32 (n=5), option-B shortcuts."""
    return cifar_he_resnet(5, num_classes)


def cifar_resnet56(num_classes: int = 10) -> BlockNet:
    """CIFAR ResNet-56 (n=9), option-B shortcuts."""
    return cifar_he_resnet(9, num_classes)
