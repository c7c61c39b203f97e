"""A small CNN for 28x28 greyscale images (Fashion-MNIST) that trains in seconds on a CPU.

Blocks ``conv1`` .. ``conv4`` (conv3x3 + BN + ReLU, a 2x2 max-pool after ``conv2`` and ``conv4``:
28 -> 14 -> 7) and ``fc1`` (flatten + ``Linear(64*7*7, 128)`` + ReLU + dropout); the head is the
classifier ``Linear(128, num_classes)``.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from energymodel.models.blocks import BlockNet
from energymodel.models.zoo.resnet import init_weights

__all__ = ["smallcnn"]


def conv_bn_relu(in_ch: int, out_ch: int, pool: bool = False) -> nn.Sequential:
    """conv3x3 (padding 1, no bias) + BN + ReLU [+ 2x2 max-pool]."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv=nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
        bn=nn.BatchNorm2d(out_ch),
        relu=nn.ReLU(inplace=False),
    )
    if pool:
        layers["pool"] = nn.MaxPool2d(kernel_size=2, stride=2)
    return nn.Sequential(layers)


def smallcnn(num_classes: int = 10, in_channels: int = 1, dropout: float = 0.25) -> BlockNet:
    """The small Fashion-MNIST CNN (input ``(in_channels, 28, 28)``)."""
    blocks: list[tuple[str, nn.Module]] = [
        ("conv1", conv_bn_relu(in_channels, 32)),
        ("conv2", conv_bn_relu(32, 32, pool=True)),
        ("conv3", conv_bn_relu(32, 64)),
        ("conv4", conv_bn_relu(64, 64, pool=True)),
        (
            "fc1",
            nn.Sequential(
                OrderedDict(
                    flatten=nn.Flatten(),
                    fc=nn.Linear(64 * 7 * 7, 128),
                    relu=nn.ReLU(inplace=False),
                    dropout=nn.Dropout(p=dropout),
                )
            ),
        ),
    ]
    model = BlockNet(blocks, nn.Sequential(OrderedDict(fc=nn.Linear(128, num_classes))))
    init_weights(model)  # the ResNet convention: Kaiming-normal convs, BN 1/0
    return model
