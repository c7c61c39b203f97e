"""Models people bring, written in torchvision's layout (torchvision itself does not load against a CPU torch here):
a ResNet-18, a MobileNetV3-Small, a Vision Transformer, and ``nn.TransformerEncoder`` models for images and for
token ids. Each factory takes ``num_classes`` and is a MODEL argument of both tools::

    energymodel points examples/models_people_bring.py:mobilenet_v3_small        # one sharing point per stage
    energymodel points examples/models_people_bring.py:vit_tiny                  # one per encoder layer
    energymodel profile examples/models_people_bring.py:text_transformer --input 32:int64 --depth 2
    incremental run reports/fashion-mnist-demo-run.toml --model examples/models_people_bring.py:patch_transformer

    python examples/models_people_bring.py          # sharing points and MACs of each
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import Tensor, nn

__all__ = ["resnet18", "mobilenet_v3_small", "mobilenet_v3_mnist", "mobilenet_v3_tiny", "vit_tiny",
           "patch_transformer", "text_transformer"]


# -- ResNet-18 (torchvision.models.resnet18) ----------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, num_classes: int = 1000, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = [width, 2 * width, 4 * width, 8 * width]
        cin = width
        for i, c in enumerate(chans):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, c, stride), BasicBlock(c, c)))
            cin = c
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)
        self.input_shape = (in_channels, 224, 224)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> ResNet:
    """torchvision's ResNet-18 (11,689,512 parameters at 1000 classes), input 3x224x224."""
    return ResNet(num_classes)


# -- MobileNetV3 (torchvision.models.mobilenet_v3_small) -------------------------------------------------------
def _divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class Conv2dNormActivation(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                 activation: type[nn.Module] | None = nn.ReLU) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout, eps=0.001, momentum=0.01)]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x  # a broadcast multiply: (C, 1, 1) times (C, H, W)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, hs: bool, stride: int) -> None:
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(Conv2dNormActivation(cin, exp, 1, activation=act))
        layers.append(Conv2dNormActivation(exp, exp, k, stride, groups=exp, activation=act))  # depthwise
        if se:
            layers.append(SqueezeExcitation(exp, _divisible(exp // 4)))
        layers.append(Conv2dNormActivation(exp, cout, 1, activation=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


#: (input channels, kernel, expanded, output channels, squeeze-excite, hardswish, stride) of MobileNetV3-Small
SMALL = [(16, 3, 16, 16, True, False, 2), (16, 3, 72, 24, False, False, 2), (24, 3, 88, 24, False, False, 1),
         (24, 5, 96, 40, True, True, 2), (40, 5, 240, 40, True, True, 1), (40, 5, 240, 40, True, True, 1),
         (40, 5, 120, 48, True, True, 1), (48, 5, 144, 48, True, True, 1), (48, 5, 288, 96, True, True, 2),
         (96, 5, 576, 96, True, True, 1), (96, 5, 576, 96, True, True, 1)]


class MobileNetV3(nn.Module):
    def __init__(self, num_classes: int = 1000, width: float = 1.0, in_channels: int = 3, last: int = 1024,
                 image: int = 224, config: list[tuple] | None = None) -> None:
        super().__init__()
        w = partial(lambda c, m: _divisible(c * m), m=width)
        config = SMALL if config is None else config
        layers: list[nn.Module] = [Conv2dNormActivation(in_channels, w(16), 3, 2, activation=nn.Hardswish)]
        for cin, k, exp, cout, se, hs, s in config:
            layers.append(InvertedResidual(w(cin), k, w(exp), w(cout), se, hs, s))
        final = w(config[-1][3])
        layers.append(Conv2dNormActivation(final, 6 * final, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * final, last), nn.Hardswish(inplace=True),
                                        nn.Dropout(0.2, inplace=True), nn.Linear(last, num_classes))
        self.input_shape = (in_channels, image, image)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v3_small(num_classes: int = 1000) -> MobileNetV3:
    """torchvision's MobileNetV3-Small (2,542,856 parameters at 1000 classes), input 3x224x224."""
    return MobileNetV3(num_classes)


def mobilenet_v3_mnist(num_classes: int = 10) -> MobileNetV3:
    """The same layout at a quarter width for 1x28x28 images (Fashion-MNIST): the engine trains it on a CPU."""
    return MobileNetV3(num_classes, width=0.25, in_channels=1, last=64, image=28)


def mobilenet_v3_tiny(num_classes: int = 10) -> MobileNetV3:
    """The layout with its first four stages only, a quarter wide, for 1x28x28 images: small enough for a test."""
    return MobileNetV3(num_classes, width=0.25, in_channels=1, last=32, image=28, config=SMALL[:4])


# -- Vision Transformer (torchvision.models.vision_transformer) ------------------------------------------------
class MLPBlock(nn.Sequential):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim), nn.Dropout(0.0))


class EncoderBlock(nn.Module):
    def __init__(self, heads: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.dropout = nn.Dropout(0.0)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, hidden)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - torchvision's name
        x = self.ln_1(input)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x) + input
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, seq: int, layers: int, heads: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(0.0)
        self.layers = nn.Sequential(OrderedDict((f"encoder_layer_{i}", EncoderBlock(heads, dim, hidden))
                                                for i in range(layers)))
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - torchvision's name
        return self.ln(self.layers(self.dropout(input + self.pos_embedding)))


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int, patch_size: int, layers: int, heads: int, dim: int, hidden: int,
                 num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.patch_size, self.hidden_dim = patch_size, dim
        self.conv_proj = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = Encoder((image_size // patch_size) ** 2 + 1, layers, heads, dim, hidden)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(dim, num_classes)))
        self.input_shape = (in_channels, image_size, image_size)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, self.hidden_dim, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        x = self.encoder(x)
        return self.heads(x[:, 0])


def vit_tiny(num_classes: int = 10) -> VisionTransformer:
    """torchvision's ViT layout, small: 32x32 images in 8x8 patches, 4 layers of width 64, 4 heads."""
    return VisionTransformer(32, 8, 4, 4, 64, 128, num_classes)


# -- nn.TransformerEncoder models ---------------------------------------------------------------------------
class PatchTransformer(nn.Module):
    """Image patches (a strided conv) + a positional embedding + ``nn.TransformerEncoder`` + mean pooling."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image: int = 28, patch: int = 7, dim: int = 32,
                 heads: int = 2, layers: int = 3) -> None:
        super().__init__()
        self.patch = nn.Conv2d(in_channels, dim, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, (image // patch) ** 2, dim).normal_(std=0.02))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)
        self.input_shape = (in_channels, image, image)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.fc(self.norm(self.encoder(x)).mean(1))


def patch_transformer(num_classes: int = 10) -> PatchTransformer:
    """A small transformer for 1x28x28 images (Fashion-MNIST): 16 patches of 7x7, 3 layers of width 32."""
    return PatchTransformer(num_classes)


class TextTransformer(nn.Module):
    """Token ids (int64) -> ``nn.Embedding`` + positions -> ``nn.TransformerEncoder`` -> mean -> classifier."""

    def __init__(self, num_classes: int = 4, vocab: int = 1000, seq: int = 32, dim: int = 64, heads: int = 4,
                 layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(1, seq, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, ids: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]
        x = self.encoder(x, src_key_padding_mask=padding_mask)
        return self.fc(x.mean(1))


def text_transformer(num_classes: int = 4) -> TextTransformer:
    """A text classifier over 1,000 token ids, sequences of up to 32 (``--input 32:int64``)."""
    return TextTransformer(num_classes)


if __name__ == "__main__":
    import energymodel

    for name, factory, kw in (
        ("resnet18", resnet18, {}), ("mobilenet_v3_small", mobilenet_v3_small, {}), ("vit_tiny", vit_tiny, {}),
        ("patch_transformer", patch_transformer, {}),
        ("text_transformer", text_transformer, {"inputs": torch.zeros(1, 32, dtype=torch.int64)}),
    ):
        model = factory()
        pts = energymodel.sharing_points(model, **kw)
        macs = energymodel.profile(model, **kw).totals["macs_forward"]
        print(f"{name}: {macs:,.0f} MACs per sample; sharing points "
              + ", ".join(f"k={p.index} after {p.after} ({p.fraction:.2f})" for p in pts))
