"""Tests for the model zoo: exact parameter counts, BlockNet structure, forward shapes, registry errors."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch
from torch import nn

from energymodel.errors import UserError
from energymodel.models.blocks import BlockNet, classifier_of, split_at
from energymodel.models.zoo import ZOO, Add, BasicBlock, Bottleneck, ZooEntry, build, get_entry, zoo_names

EXPECTED_NAMES = [
    "resnet18",
    "resnet34",
    "resnet50",
    "cifar_resnet18",
    "cifar_resnet34",
    "cifar_resnet20",
    "cifar_resnet32",
    "cifar_resnet56",
    "vgg16",
    "cifar_vgg16",
    "smallcnn",
]

# Parameter counts with each model's default number of classes, from published figures or derived by hand
# from them — never read off the code under test:
# - resnet18/34/50, vgg16: torchvision's published counts.
# - cifar_resnet18/34 (kuangliu/pytorch-cifar): the ImageNet model with a 3x3x3x64 stem instead of 7x7x3x64
#   (1,728 instead of 9,408 weights: −7,680) and a 10-class classifier (5,130 instead of 513,000: −507,870).
# - cifar_resnet20/32/56 (He et al. 2016, 6n+2 layers): the published option-A counts (akamaster/
#   pytorch_resnet_cifar10: 269,722, 464,154, 853,018) plus our option-B 1x1 projection shortcuts, conv + BN:
#   16->32: 512 + 64 = 576, 32->64: 2,048 + 128 = 2,176.
# - cifar_vgg16 (kuangliu): 13 biased 3x3 convs 14,714,688 + BN 2 x 4,224 + Linear(512, 10) 5,130.
# - smallcnn: convs 288 + 9,216 + 18,432 + 36,864, BN 2 x (32 + 32 + 64 + 64), fc1 3,136 x 128 + 128,
#   classifier 128 x 10 + 10.
TO_CIFAR = -(9_408 - 1_728) - (513_000 - 5_130)
SHORTCUTS_B = 576 + 2_176
EXPECTED_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "cifar_resnet18": 11_689_512 + TO_CIFAR,  # 11,173,962
    "cifar_resnet34": 21_797_672 + TO_CIFAR,  # 21,282,122
    "cifar_resnet20": 269_722 + SHORTCUTS_B,
    "cifar_resnet32": 464_154 + SHORTCUTS_B,
    "cifar_resnet56": 853_018 + SHORTCUTS_B,
    "vgg16": 138_357_544,
    "cifar_vgg16": 14_714_688 + 2 * 4_224 + 5_130,
    "smallcnn": 288 + 9_216 + 18_432 + 36_864 + 2 * (32 + 32 + 64 + 64) + 3_136 * 128 + 128 + 1_290,
}

RESIDUAL_NAMES = [n for n in EXPECTED_NAMES if "resnet" in n]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def params_of_type(module: nn.Module, kind: type[nn.Module]) -> int:
    return sum(n_params(m) for m in module.modules() if isinstance(m, kind))


@pytest.fixture(scope="module")
def zoo_models() -> dict[str, BlockNet]:
    """Every zoo model, built once with its default classes (vgg16 alone takes ~1.5 s to initialise)."""
    torch.manual_seed(0)
    return {name: build(name) for name in zoo_names()}


def test_zoo_names_are_the_documented_set_in_order() -> None:
    assert zoo_names() == EXPECTED_NAMES
    assert set(EXPECTED_PARAMS) == set(EXPECTED_NAMES)


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_exact_parameter_count(zoo_models: dict[str, BlockNet], name: str) -> None:
    assert n_params(zoo_models[name]) == EXPECTED_PARAMS[name]


def test_resnet18_parameters_by_layer_type(zoo_models: dict[str, BlockNet]) -> None:
    model = zoo_models["resnet18"]
    # conv: 7x7 stem 9,408 + stages 147,456 + 524,288 + 2,097,152 + 8,388,608 (incl. 1x1 downsamples)
    assert params_of_type(model, nn.Conv2d) == 11_166_912
    assert params_of_type(model, nn.BatchNorm2d) == 9_600  # 4,800 channels x (weight, bias)
    assert params_of_type(model, nn.Linear) == 513_000  # 512 x 1000 + 1000
    assert sum(1 for m in model.modules() if isinstance(m, nn.Conv2d)) == 20
    assert sum(1 for m in model.modules() if isinstance(m, nn.BatchNorm2d)) == 20
    assert n_params(model) == 11_166_912 + 9_600 + 513_000


def test_cifar_resnet20_is_about_027m(zoo_models: dict[str, BlockNet]) -> None:
    count = n_params(zoo_models["cifar_resnet20"])
    assert 260_000 <= count <= 280_000
    # option B: option A's 269,722 plus two 1x1 conv + BN shortcuts (16->32: 576, 32->64: 2,176)
    assert count == 269_722 + 576 + 2_176


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_forward_shape_and_entry(zoo_models: dict[str, BlockNet], name: str) -> None:
    entry = get_entry(name)
    model = zoo_models[name]
    assert isinstance(entry, ZooEntry) and entry.name == name
    assert isinstance(model, BlockNet)
    assert model.num_classes == entry.default_classes
    # ImageNet-size inputs: batch 1 keeps the file fast; small inputs: batch 2 (exercises BN in eval).
    batch = 1 if entry.input_shape[1] >= 224 else 2
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(batch, *entry.input_shape))
    assert out.shape == (batch, entry.default_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n in EXPECTED_NAMES if n != "vgg16"])
def test_num_classes_is_configurable(name: str) -> None:
    entry = get_entry(name)
    model = build(name, num_classes=7).eval()
    assert model.num_classes == 7
    assert classifier_of(model.head).out_features == 7
    batch = 1 if entry.input_shape[1] >= 224 else 2
    with torch.no_grad():
        assert model(torch.zeros(batch, *entry.input_shape)).shape == (batch, 7)


def test_classifier_size_enters_the_parameter_count() -> None:
    for name in ("smallcnn", "cifar_resnet20"):
        fc = classifier_of(build(name).head)
        delta = (100 - 10) * (fc.in_features + 1)
        assert n_params(build(name, num_classes=100)) == EXPECTED_PARAMS[name] + delta


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_block_names_are_unique_and_ordered(zoo_models: dict[str, BlockNet], name: str) -> None:
    names = [n for n, _ in zoo_models[name].blocks.named_children()]
    assert len(names) == len(set(names)) and names
    if "resnet" in name:
        assert names[0] == "stem"
        keys = [tuple(map(int, re.fullmatch(r"layer(\d)_(\d+)", n).groups())) for n in names[1:]]
        assert keys == sorted(keys)
        assert all(i == 0 or (s, i - 1) in keys for s, i in keys)  # indices contiguous from 0
    elif "vgg" in name:
        convs = [n for n in names if n.startswith("conv")]
        assert convs == [
            f"conv{s}_{i}" for s, k in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, k + 1)
        ]
        assert names[len(convs) :] == (["fc6", "fc7"] if name == "vgg16" else [])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", ["stem"] + [f"layer{s}_{i}" for s in range(1, 5) for i in range(2)]),
        (
            "resnet50",
            ["stem"] + [f"layer{s}_{i}" for s, k in zip(range(1, 5), (3, 4, 6, 3)) for i in range(k)],
        ),
        ("cifar_resnet20", ["stem"] + [f"layer{s}_{i}" for s in range(1, 4) for i in range(3)]),
        ("cifar_resnet56", ["stem"] + [f"layer{s}_{i}" for s in range(1, 4) for i in range(9)]),
        ("smallcnn", ["conv1", "conv2", "conv3", "conv4", "fc1"]),
    ],
)
def test_block_names_exact(zoo_models: dict[str, BlockNet], name: str, expected: list[str]) -> None:
    assert [n for n, _ in zoo_models[name].blocks.named_children()] == expected


@pytest.mark.parametrize("name", RESIDUAL_NAMES)
def test_every_residual_block_has_add_and_distinct_relus(zoo_models: dict[str, BlockNet], name: str) -> None:
    residual = list(zoo_models[name].blocks.children())[1:]
    assert residual
    for block in residual:
        assert isinstance(block, (BasicBlock, Bottleneck))
        assert isinstance(block.add, Add)
        assert sum(isinstance(c, Add) for c in block.children()) == 1
        relus = [m for m in block.modules() if isinstance(m, nn.ReLU)]
        assert len(relus) == (2 if isinstance(block, BasicBlock) else 3)
        assert len({id(r) for r in relus}) == len(relus)


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_no_inplace_relu(zoo_models: dict[str, BlockNet], name: str) -> None:
    relus = [m for m in zoo_models[name].modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(r.inplace for r in relus)


def hook_call_counts(model: nn.Module, x: torch.Tensor) -> dict[int, int]:
    """How often each Add and ReLU module of ``model`` runs in one forward of ``x`` (by module id)."""
    calls: dict[int, int] = {}
    handles = [
        m.register_forward_hook(lambda mod, inp, out: calls.__setitem__(id(mod), calls.get(id(mod), 0) + 1))
        for m in model.modules()
        if isinstance(m, (Add, nn.ReLU))
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return calls


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_resnet18"])
def test_hooks_see_every_add_and_each_relu_once(name: str) -> None:
    model = build(name)
    calls = hook_call_counts(model, torch.zeros(2, 3, 32, 32))
    adds = [m for m in model.modules() if isinstance(m, Add)]
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(adds) == len(model.blocks) - 1
    assert all(calls.get(id(m)) == 1 for m in adds + relus)


def test_hooks_see_bottleneck_add_and_each_relu_once() -> None:
    block = Bottleneck(32, 16, stride=2)
    calls = hook_call_counts(block, torch.zeros(1, 32, 8, 8))
    modules = [block.add, block.relu1, block.relu2, block.relu3]
    assert [calls.get(id(m)) for m in modules] == [1, 1, 1, 1]
    assert len(calls) == 4


def test_residual_block_routes_through_its_add_module() -> None:
    torch.manual_seed(0)
    block = BasicBlock(8, 8).eval()
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        expected = torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))) + x)
        assert torch.allclose(block(x), expected)

        class Sub(nn.Module):
            def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return a - b

        block.add = Sub()  # a block doing its own `out + identity` would not notice this swap
        assert not torch.allclose(block(x), expected)


def test_add_module_adds() -> None:
    a, b = torch.ones(2, 3), torch.full((2, 3), 2.0)
    assert torch.equal(Add()(a, b), torch.full((2, 3), 3.0))


def test_resnet50_is_v15_with_projection_shortcuts(zoo_models: dict[str, BlockNet]) -> None:
    first = zoo_models["resnet50"].blocks.layer2_0
    assert isinstance(first, Bottleneck)
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)
    conv, bn = first.downsample
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (2, 2)
    assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == 512
    assert zoo_models["resnet50"].blocks.layer1_0.downsample is not None  # 64 -> 256 channels
    assert zoo_models["resnet18"].blocks.layer1_0.downsample is None


def test_stems() -> None:
    imagenet, cifar = build("resnet18").eval(), build("cifar_resnet20").eval()
    assert isinstance(imagenet.blocks.stem.maxpool, nn.MaxPool2d)
    assert imagenet.blocks.stem.conv.kernel_size == (7, 7) and imagenet.blocks.stem.conv.stride == (2, 2)
    assert not any(isinstance(m, nn.MaxPool2d) for m in cifar.modules())
    with torch.no_grad():
        assert imagenet.blocks.stem(torch.zeros(1, 3, 224, 224)).shape == (1, 64, 56, 56)
        assert cifar.blocks.stem(torch.zeros(1, 3, 32, 32)).shape == (1, 16, 32, 32)


def test_heads(zoo_models: dict[str, BlockNet]) -> None:
    for name in RESIDUAL_NAMES:
        head = zoo_models[name].head
        assert [n for n, _ in head.named_children()] == ["pool", "flatten", "fc"]
        assert classifier_of(head) is head.fc
    assert [n for n, _ in zoo_models["vgg16"].head.named_children()] == ["fc"]
    assert zoo_models["vgg16"].head.fc.in_features == 4096
    assert [n for n, _ in zoo_models["cifar_vgg16"].head.named_children()] == ["flatten", "fc"]
    assert zoo_models["cifar_vgg16"].head.fc.in_features == 512
    assert [n for n, _ in zoo_models["smallcnn"].head.named_children()] == ["fc"]
    assert zoo_models["smallcnn"].head.fc.in_features == 128


def test_vgg_blocks(zoo_models: dict[str, BlockNet]) -> None:
    imagenet, cifar = zoo_models["vgg16"], zoo_models["cifar_vgg16"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in imagenet.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in cifar.modules()) == 13
    pooled = [
        n for n, b in cifar.blocks.named_children() if any(isinstance(m, nn.MaxPool2d) for m in b.modules())
    ]
    assert pooled == ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"]
    fc6 = imagenet.blocks.fc6
    assert isinstance(fc6.pool, nn.AdaptiveAvgPool2d) and fc6.fc.in_features == 25088
    assert [type(m) for m in imagenet.blocks.fc7.children()] == [nn.Linear, nn.ReLU, nn.Dropout]


@pytest.mark.parametrize("name", ["smallcnn", "cifar_resnet20", "cifar_vgg16"])
def test_every_sharing_point_reproduces_the_forward(name: str) -> None:
    torch.manual_seed(0)
    model = build(name).eval()
    x = torch.randn(2, *get_entry(name).input_shape)
    with torch.no_grad():
        full = model(x)
        for k in range(len(model.blocks) + 1):
            trunk, rest = split_at(model, k)
            assert torch.allclose(model.head(rest(trunk(x))), full, atol=1e-5)


def test_init_follows_torchvision(zoo_models: dict[str, BlockNet]) -> None:
    conv = zoo_models["resnet18"].blocks.layer4_1.conv2  # 512 -> 512, 3x3: fan_out = 4,608
    std = conv.weight.std().item()
    assert math.isclose(std, math.sqrt(2 / (512 * 9)), rel_tol=0.02)
    for name in ("resnet18", "cifar_vgg16", "smallcnn"):
        for m in zoo_models[name].modules():
            if isinstance(m, nn.BatchNorm2d):
                assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_unknown_name_raises_one_line_user_error() -> None:
    with pytest.raises(UserError) as info:
        get_entry("resnet19")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unknown model 'resnet19'; known: ")
    assert all(n in message for n in EXPECTED_NAMES)
    with pytest.raises(UserError):
        build("nope")


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_num_classes_raises_user_error(bad: object) -> None:
    with pytest.raises(UserError):
        build("smallcnn", num_classes=bad)  # type: ignore[arg-type]


def test_registry_is_read_only() -> None:
    entry = get_entry("smallcnn")
    assert entry.input_shape == (1, 28, 28) and entry.default_classes == 10 and entry.description
    assert get_entry("cifar_resnet20").input_shape == (3, 32, 32)
    assert get_entry("resnet50").input_shape == (3, 224, 224)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.default_classes = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        ZOO["x"] = entry  # type: ignore[index]
