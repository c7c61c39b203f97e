"""VGG-16 (configuration D) as :class:`~energymodel.models.blocks.BlockNet`: one block per conv layer.

* ``cifar_vgg16``: 13 conv3x3 + BN + ReLU layers (a max-pool closes each of the 5 stages, 32x32 -> 1x1),
  head = flatten + ``Linear(512, num_classes)``.
* ``vgg16``: torchvision's ``vgg16`` (no BN, 138,357,544 parameters with 1000 classes). The two hidden
  fully connected layers are blocks ``fc6`` (adaptive 7x7 pool + flatten + linear + ReLU + dropout) and
  ``fc7``; the head is the classifier ``Linear(4096, num_classes)`` alone.

Conv blocks are named ``conv{stage}_{index}`` (both from 1), e.g. ``conv1_1`` ... ``conv5_3``.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from energymodel.models.blocks import BlockNet

__all__ = ["VGG16_CONFIG", "conv_blocks", "vgg16", "cifar_vgg16"]

#: Convolution widths per stage of VGG-16 (configuration D); every stage ends with a 2x2 max-pool.
VGG16_CONFIG: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


def conv_blocks(
    config: tuple[tuple[int, ...], ...], in_ch: int = 3, batch_norm: bool = True
) -> list[tuple[str, nn.Sequential]]:
    """One ``conv{s}_{i}`` block per conv layer: conv3x3 [+ BN] + ReLU, plus a 2x2 max-pool at a stage's end."""
    blocks: list[tuple[str, nn.Sequential]] = []
    for stage, widths in enumerate(config, start=1):
        for index, width in enumerate(widths, start=1):
            layers: OrderedDict[str, nn.Module] = OrderedDict(conv=nn.Conv2d(in_ch, width, 3, padding=1))
            if batch_norm:
                layers["bn"] = nn.BatchNorm2d(width)
            layers["relu"] = nn.ReLU(inplace=False)
            if index == len(widths):
                layers["pool"] = nn.MaxPool2d(kernel_size=2, stride=2)
            blocks.append((f"conv{stage}_{index}", nn.Sequential(layers)))
            in_ch = width
    return blocks


def init_weights(model: nn.Module) -> None:
    """torchvision's VGG init: Kaiming-normal (fan_out, relu) convs, BN 1/0, linear N(0, 0.01), biases 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)


def fc_block(in_features: int, out_features: int, dropout: float, pool: bool = False) -> nn.Sequential:
    """[adaptive 7x7 pool + flatten +] linear + ReLU + dropout: a hidden fully connected block."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if pool:
        layers["pool"] = nn.AdaptiveAvgPool2d(7)
        layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(in_features, out_features)
    layers["relu"] = nn.ReLU(inplace=False)
    layers["dropout"] = nn.Dropout(p=dropout)
    return nn.Sequential(layers)


def vgg16(num_classes: int = 1000, dropout: float = 0.5) -> BlockNet:
    """ImageNet VGG-16 as torchvision's ``vgg16`` (224x224 input, no BN)."""
    blocks: list[tuple[str, nn.Module]] = list(conv_blocks(VGG16_CONFIG, batch_norm=False))
    blocks.append(("fc6", fc_block(512 * 7 * 7, 4096, dropout, pool=True)))
    blocks.append(("fc7", fc_block(4096, 4096, dropout)))
    model = BlockNet(blocks, nn.Sequential(OrderedDict(fc=nn.Linear(4096, num_classes))))
    init_weights(model)
    return model


def cifar_vgg16(num_classes: int = 10) -> BlockNet:
    """VGG-16 with BN for 32x32 inputs: 13 conv blocks, then flatten + ``Linear(512, num_classes)``."""
    head = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc=nn.Linear(512, num_classes)))
    model = BlockNet(conv_blocks(VGG16_CONFIG, batch_norm=True), head)
    init_weights(model)
    return model
