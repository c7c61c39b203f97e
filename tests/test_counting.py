"""The counting rules hold their numbers: MACs against fvcore and torch's FlopCounterMode, hand formulas for
single layers, training phases (frozen prefixes, BN forms, loss, optimizer) and the worked example of
``docs/cost-model.md``.

Reference counters and their conventions (see ``docs/cost-model.md``, "Other counters"):

- fvcore ``FlopCountAnalysis`` counts one fused multiply-add as one "flop" for conv/linear/matmul, so
  its ``conv`` + ``linear``/``addmm`` entries must equal our forward MACs exactly. It also reports
  batch-norm and pooling "flops" with its own conventions; those are not compared.
- ``torch.utils.flop_counter.FlopCounterMode`` counts 2 flops per MAC and only matmul/conv-like aten ops
  (``convolution``, ``convolution_backward``, ``mm``, ``addmm``, ``bmm`` ...): backward MACs of conv and
  linear layers are its backward count / 2.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from energymodel.analysis.profile import profile
from energymodel.count.ops import _adaptive_windows
from energymodel.count.phases import OPTIMIZERS, count
from energymodel.count.trace import trace
from energymodel.models.layers import Add
from energymodel.models.zoo import build

DOC = Path(__file__).resolve().parent.parent / "docs" / "cost-model.md"


def quiet_profile(model: nn.Module, shape, **kw):
    kw.setdefault("warn", False)
    return profile(model, shape, **kw)


def row(p, name: str):
    rows = p.layers[p.layers["name"] == name]
    assert len(rows) == 1, f"{name!r} not exactly once in {p.layers['name'].tolist()}"
    return rows.iloc[0]


def fcm_by_module(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, int]]:
    """FlopCounterMode's flops of ``model(x).sum().backward()`` by module path and aten op (``"Global"``: all).

    Forward and backward both run inside the mode (its per-module attribution needs the forward hooks).
    """
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    return {mod: {str(op).split(".")[-1]: int(v) for op, v in ops.items()} for mod, ops in fc.get_flop_counts().items()}


def backward_flops(ops: dict[str, int]) -> int:
    """The backward part of FlopCounterMode's counts: ``convolution_backward`` and ``mm`` (every Linear in
    these tests has a bias, so its forward is an ``addmm`` and each ``mm`` is a gradient product)."""
    assert set(ops) <= {"convolution", "addmm", "convolution_backward", "mm"}, ops
    return ops.get("convolution_backward", 0) + ops.get("mm", 0)


# -- forward MACs vs fvcore ---------------------------------------------------------------------------

ZOO_CASES = [
    ("cifar_resnet20", (3, 32, 32)),
    ("cifar_resnet18", (3, 32, 32)),
    ("smallcnn", (1, 28, 28)),
    ("resnet18", (3, 224, 224)),
    ("cifar_vgg16", (3, 32, 32)),
]


@pytest.mark.parametrize("name,shape", ZOO_CASES)
def test_forward_gemm_macs_equal_fvcore(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build(name).eval()
    fa = FlopCountAnalysis(model, torch.zeros(1, *shape))
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    by_op = fa.by_operator()
    fv = sum(v for k, v in by_op.items() if k in ("conv", "linear", "addmm", "matmul", "mm"))
    assert by_op.get("conv", 0) > 0
    p = quiet_profile(model, shape)
    gemm = p.layers[p.layers["kind"].isin(["Conv2d", "Linear"])]
    assert int(gemm["macs_forward"].sum()) == fv
    assert int(p.totals["macs_forward"]) == fv  # no other row of these models has MACs
    assert not p.unmodelled
    # fvcore's other conventions: BN in eval form with affine = 2 per element (ours 1 add + 1 mult);
    # adaptive average pooling = 1 per input element (ours: window sums − |Y| adds + |Y| mults; equal for
    # the global pools of these models, whose windows do not overlap)
    for kind, key in (("BatchNorm2d", "batch_norm"), ("AdaptiveAvgPool2d", "adaptive_avg_pool2d")):
        rows = p.layers[p.layers["kind"] == kind]
        assert (rows["add_ops"] + rows["mult_ops"]).sum() == by_op.get(key, 0), kind
    # batch scales forward MACs linearly; parameters do not scale
    p4 = quiet_profile(model, shape, batch=4)
    assert p4.totals["macs_forward"] == 4 * fv
    assert p4.totals["params"] == p.totals["params"] == sum(q.numel() for q in model.parameters())


# -- single layers by hand ------------------------------------------------------------------------------

CONV_CASES = [
    # in, out, kernel, stride, padding, dilation, groups, bias, H, W
    (3, 8, (3, 3), 1, 1, 1, 1, True, 9, 9),
    (4, 6, (3, 5), (2, 1), (1, 2), 1, 2, False, 11, 7),
    (6, 6, (3, 3), 2, 0, 2, 6, True, 13, 12),  # depthwise, dilated, strided
    (8, 16, (1, 1), 2, 0, 1, 4, False, 8, 8),
    (4, 8, (2, 3), (3, 2), (0, 1), (2, 1), 4, True, 10, 9),
    (3, 5, (5, 1), 1, (2, 0), (1, 3), 1, True, 6, 4),
]


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@pytest.mark.parametrize("cin,cout,k,s,p,d,g,bias,h,w", CONV_CASES)
def test_conv2d_forward_by_hand(cin, cout, k, s, p, d, g, bias, h, w) -> None:
    conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias)
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = pair(k), pair(s), pair(p), pair(d)
    ho, wo = _conv_out(h, kh, sh, ph, dh), _conv_out(w, kw, sw, pw, dw)
    batch = 3
    assert conv(torch.zeros(batch, cin, h, w)).shape == (batch, cout, ho, wo)
    y = cout * ho * wo  # output elements per sample
    macs = batch * y * (cin // g) * kh * kw
    r = row(quiet_profile(conv, (cin, h, w), batch=batch), "")
    assert r["macs_forward"] == macs
    assert r["add_ops"] == (batch * y if bias else 0)  # one bias add per output element
    assert r["mult_ops"] == r["cmp_ops"] == 0
    assert r["params"] == cout * (cin // g) * kh * kw + (cout if bias else 0)
    # FlopCounterMode agrees on the forward (2 flops per MAC; it respects groups in the forward)
    with FlopCounterMode(display=False) as fc:
        conv(torch.zeros(batch, cin, h, w))
    assert fc.get_total_flops() == 2 * macs


@pytest.mark.parametrize("layer,shape,macs_per_sample", [
    (nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2), (4, 15), 6 * 8 * 2 * 3),
    (nn.Conv3d(2, 4, (3, 2, 2), padding=(1, 0, 0), bias=False), (2, 5, 4, 4), 4 * 5 * 3 * 3 * 2 * 3 * 2 * 2),
])
def test_conv_other_dimensionalities(layer: nn.Module, shape, macs_per_sample: int) -> None:
    r = row(quiet_profile(layer, shape, batch=2), "")
    assert r["macs_forward"] == 2 * macs_per_sample


def test_linear_by_hand() -> None:
    fc = nn.Linear(20, 7)
    r = row(quiet_profile(fc, (20,), batch=3), "")
    assert r["macs_forward"] == 3 * 7 * 20
    assert r["add_ops"] == 3 * 7
    assert r["params"] == 20 * 7 + 7
    r = row(quiet_profile(nn.Linear(20, 7, bias=False), (20,), batch=3), "")
    assert r["macs_forward"] == 3 * 7 * 20 and r["add_ops"] == 0


class Twice(nn.Module):
    """The same Linear called twice: two rows, parameters once."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.fc(x)))


def test_module_called_twice_counts_macs_twice_params_once() -> None:
    p = quiet_profile(Twice(), (6,), batch=2)
    first, second = row(p, "fc"), row(p, "fc#2")
    assert first["macs_forward"] == second["macs_forward"] == 2 * 6 * 6
    assert p.totals["macs_forward"] == 2 * 2 * 36
    assert p.totals["params"] == 42
    assert first["storage_bytes"] == 42 * 4 and second["storage_bytes"] == 0
    assert p.totals["storage_bytes"] == 42 * 4


def test_module_called_twice_in_training_updates_once_and_accumulates_gradient() -> None:
    p = quiet_profile(Twice(), (6,), batch=2, mode="training", optimizer="sgd")
    first, second = row(p, "fc"), row(p, "fc#2")
    assert p.totals["trainable_params"] == 42
    assert first["update_ops"] == 2 * 42 and second["update_ops"] == 0  # sgd: 1 mult + 1 add, once
    # both calls compute a weight gradient; the first call has no input gradient (model input)
    assert first["macs_backward_weight"] == second["macs_backward_weight"] == 2 * 36
    assert first["macs_backward_input"] == 0 and second["macs_backward_input"] == 2 * 36
    # the second call's gradient is accumulated into the first's: + trainable_params adds
    bias_grad, fwd_bias, bwd_in_relu = 2 * 6, 2 * 6, 0
    assert second["add_ops"] == fwd_bias + bias_grad + 42 + bwd_in_relu


# -- backward MACs vs FlopCounterMode -----------------------------------------------------------------


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 6, (3, 2), stride=2, dilation=(1, 2), bias=False)
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(6 * 4 * 4, 10)
        self.fc2 = nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(self.flat(self.conv2(self.relu(self.conv1(x)))))))


def test_backward_macs_equal_flopcountermode_for_conv_and_linear() -> None:
    torch.manual_seed(0)
    model, batch, shape = Plain(), 3, (3, 9, 9)
    counts = fcm_by_module(model, torch.randn(batch, *shape))
    p = quiet_profile(model, shape, batch=batch, mode="training")
    ours_total = 0.0
    for name in ("conv1", "conv2", "fc1", "fc2"):
        r = row(p, name)
        ours = r["macs_backward_input"] + r["macs_backward_weight"]
        ours_total += ours
        theirs = counts[f"Plain.{name}"]
        assert ours * 2 == backward_flops(theirs), name
        assert r["macs_forward"] * 2 == theirs.get("convolution", 0) + theirs.get("addmm", 0), name
    assert ours_total * 2 == backward_flops(counts["Global"])
    # the first layer gets no input gradient; its weight gradient costs one MAC per forward MAC
    first = row(p, "conv1")
    assert first["macs_backward_input"] == 0
    assert first["macs_backward_weight"] == first["macs_forward"] > 0
    # later layers: one MAC each way per forward MAC
    for name in ("conv2", "fc1", "fc2"):
        r = row(p, name)
        assert r["macs_backward_input"] == r["macs_backward_weight"] == r["macs_forward"] > 0


def test_frozen_prefix_has_no_backward_and_saves_nothing() -> None:
    torch.manual_seed(0)
    model = build("cifar_resnet20")
    frozen = ["blocks.stem", "blocks.layer1_0"]
    p = quiet_profile(model, (3, 32, 32), batch=2, mode="training", frozen=frozen)
    lay = p.layers
    under = lay["name"].str.startswith(tuple(f + "." for f in frozen))
    assert under.sum() == 3 + 7  # stem conv, bn, relu + layer1_0: conv1 bn1 relu1 conv2 bn2 add relu2
    pre = lay[under]
    assert (pre["macs_backward_input"] == 0).all() and (pre["macs_backward_weight"] == 0).all()
    assert (pre["saved_words"] == 0).all() and (pre["update_ops"] == 0).all()
    assert not pre["trainable"].any() and not pre["input_requires_grad"].any()
    assert (pre["macs_forward"] > 0).sum() == 3  # three convs still run forward
    # BN of the frozen prefix runs in its evaluation form: 1 add + 1 mult per element
    bn = row(p, "blocks.stem.bn")
    n = 2 * 16 * 32 * 32
    assert bn["add_ops"] == n and bn["mult_ops"] == n
    # the first conv after the prefix computes a weight gradient but no input gradient
    nxt = row(p, "blocks.layer1_1.conv1")
    assert nxt["macs_backward_input"] == 0 and nxt["macs_backward_weight"] == nxt["macs_forward"]
    assert p.totals["trainable_params"] == 272_474 - 464 - 4_672
    # a real backward pass with the prefix frozen does exactly this many conv/linear backward MACs
    for name, mod in model.named_modules():
        if name in frozen:
            mod.requires_grad_(False)
    model.train()
    counts = fcm_by_module(model, torch.randn(2, 3, 32, 32))["Global"]
    ours = lay["macs_backward_input"].sum() + lay["macs_backward_weight"].sum()
    assert 2 * ours == backward_flops(counts)
    assert 2 * lay["macs_forward"].sum() == counts["convolution"] + counts["addmm"]


def test_grouped_conv_weight_gradient_flopcountermode_overcounts_by_groups() -> None:
    """Pin the weight-gradient MACs of a grouped conv at one MAC per forward MAC.

    torch 2.13's ``FlopCounterMode`` counts the weight gradient of ``convolution_backward`` as a
    convolution of the input (channels and batch transposed) with ``grad_out``, via ``conv_flop_count(t(x),
    t(grad_out), t(grad_w))``; that formula multiplies by all ``C_in`` input channels and ignores
    ``groups`` (``conv_backward_flop`` never reads its ``_groups`` argument). Each weight ``w[o, i, ...]``
    of a grouped conv only meets the ``C_in/groups`` input channels of its own group, so the true count
    is the forward MAC count, and FlopCounterMode's figure is exactly ``groups`` times too large. Its
    forward and input-gradient counts do respect groups (the weight shape carries ``C_in/groups``).
    """
    torch.manual_seed(0)
    for groups, cin, cout in ((4, 8, 8), (8, 8, 8), (2, 4, 6)):
        conv = nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=False)
        x = torch.randn(2, cin, 6, 6)  # input needs no gradient: only the weight gradient runs
        theirs = fcm_by_module(conv, x)["Global"]["convolution_backward"] // 2
        r = row(quiet_profile(conv, (cin, 6, 6), batch=2, mode="training"), "")
        assert r["macs_backward_input"] == 0
        assert r["macs_backward_weight"] == r["macs_forward"] == 2 * cout * 36 * (cin // groups) * 9
        assert theirs == groups * r["macs_backward_weight"]
    # with an input gradient too (depthwise conv after a plain one): ours = fwd + fwd, theirs = fwd + g·fwd
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, groups=8, bias=False))
    theirs = fcm_by_module(model, torch.randn(2, 3, 6, 6))["Sequential.1"]["convolution_backward"] // 2
    r = row(quiet_profile(model, (3, 6, 6), batch=2, mode="training"), "1")
    assert r["macs_backward_input"] == r["macs_backward_weight"] == r["macs_forward"]
    assert theirs == r["macs_backward_input"] + 8 * r["macs_backward_weight"]


# -- other rules -----------------------------------------------------------------------------------------


def _conv_bn(affine: bool = True) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4, affine=affine))


def test_batchnorm_training_and_evaluation_forms() -> None:
    n = 2 * 4 * 5 * 5  # elements of the BN output for a batch of 2
    train = row(quiet_profile(_conv_bn(), (3, 5, 5), batch=2, mode="training"), "1")
    # training form: fwd 3 adds + 3 mults; bwd to input 2 + 2; bwd to weights 2 adds + 1 mult; sgd 8 params
    assert train["add_ops"] == 3 * n + 2 * n + 2 * n + 8
    assert train["mult_ops"] == 3 * n + 2 * n + n + 8
    assert train["saved_words"] == n  # xhat
    assert train["macs_forward"] == 0
    inf = row(quiet_profile(_conv_bn(), (3, 5, 5), batch=2), "1")
    assert inf["add_ops"] == n and inf["mult_ops"] == n  # folded scale and shift
    assert inf["saved_words"] == 0
    # frozen BN inside a training step: eval form, input gradient 1 mult per element, nothing saved
    frozen = row(quiet_profile(_conv_bn(), (3, 5, 5), batch=2, mode="training", frozen=["1"]), "1")
    assert frozen["add_ops"] == n and frozen["mult_ops"] == n + n
    assert frozen["saved_words"] == 0 and not frozen["trainable"]
    # no affine parameters: no weight gradient, no update, but the input gradient still needs the two
    # reductions Σdy (1 add) and Σdy·xhat (1 mult + 1 add): fwd 3 + 3, bwd to input (2 + 2) + (2 + 1)
    na = row(quiet_profile(_conv_bn(affine=False), (3, 5, 5), batch=2, mode="training"), "1")
    assert na["add_ops"] == 7 * n and na["mult_ops"] == 6 * n and na["saved_words"] == n
    assert not na["trainable"] and na["input_requires_grad"]


def test_norm_reductions_go_to_the_input_gradient_when_the_weights_are_frozen() -> None:
    # LayerNorm always normalises with its own statistics; frozen affine weights: the Σdy, Σdy·xhat
    # reductions are charged once, to the input gradient (fwd 3 + 3, bwd to input 4 adds + 3 mults)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6))
    model[1].weight.requires_grad_(False)
    model[1].bias.requires_grad_(False)
    ln = row(quiet_profile(model, (4,), batch=3, mode="training"), "1")
    n = 3 * 6
    assert ln["add_ops"] == 7 * n and ln["mult_ops"] == 6 * n and not ln["trainable"]


def test_relu_rule() -> None:
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU())
    inf = row(quiet_profile(model, (5,), batch=3), "1")
    assert inf["cmp_ops"] == 18 and inf["add_ops"] == inf["mult_ops"] == inf["macs"] == 0
    tr = row(quiet_profile(model, (5,), batch=3, mode="training"), "1")
    assert tr["cmp_ops"] == 2 * 18 and tr["saved_words"] == 18


def test_pooling_rules() -> None:
    mp = row(quiet_profile(nn.MaxPool2d(3, stride=2, padding=1), (2, 9, 9), batch=2), "")
    y = 2 * 2 * 5 * 5
    assert mp["cmp_ops"] == y * 8
    mp_tr = row(quiet_profile(nn.Sequential(nn.Conv2d(2, 2, 1), nn.MaxPool2d(2)), (2, 8, 8), mode="training"), "1")
    assert mp_tr["cmp_ops"] == 2 * 16 * 3 and mp_tr["add_ops"] == 2 * 16 and mp_tr["saved_words"] == 2 * 16
    # pooled values only: the argmax indices returned with them are not compared
    mi = row(quiet_profile(nn.MaxPool2d(3, stride=2, padding=1, return_indices=True), (2, 9, 9), batch=2), "")
    assert mi["cmp_ops"] == mp["cmp_ops"]
    ap = row(quiet_profile(nn.AvgPool2d(2), (3, 8, 6)), "")
    y = 3 * 4 * 3
    assert ap["add_ops"] == 3 * y and ap["mult_ops"] == y


def _brute_windows(size_in: int, size_out: int) -> list[int]:
    """Window lengths of adaptive average pooling, measured from PyTorch itself with one-hot inputs."""
    eye = torch.eye(size_in).unsqueeze(1)  # (size_in, 1, size_in): sample i is one-hot at i
    out = nn.functional.adaptive_avg_pool1d(eye, size_out).squeeze(1)  # (size_in, size_out)
    return [int((out[:, j] > 0).sum()) for j in range(size_out)]


@pytest.mark.parametrize("size_in,size_out", [(7, 3), (5, 2), (10, 4), (3, 5), (13, 13), (9, 1), (1, 1), (6, 4)])
def test_adaptive_windows_are_pytorchs(size_in: int, size_out: int) -> None:
    assert _adaptive_windows(size_in, size_out) == _brute_windows(size_in, size_out)


def test_adaptive_pool_rules_use_exact_windows() -> None:
    c = 3
    r = row(quiet_profile(nn.AdaptiveAvgPool2d((3, 2)), (c, 7, 5)), "")
    s = c * sum(_brute_windows(7, 3)) * sum(_brute_windows(5, 2))  # 3 * 9 * 6 = 162
    assert s == 162
    assert r["add_ops"] == s - c * 6 and r["mult_ops"] == c * 6
    r = row(quiet_profile(nn.AdaptiveMaxPool2d((2, 4)), (c, 5, 6)), "")
    s = c * sum(_brute_windows(5, 2)) * sum(_brute_windows(6, 4))
    assert r["cmp_ops"] == s - c * 8


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.add = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(self.conv(x), x)


def test_add_module_rule() -> None:
    n = 2 * 2 * 4 * 4
    assert row(quiet_profile(Residual(), (2, 4, 4), batch=2), "add")["add_ops"] == n
    tr = row(quiet_profile(Residual(), (2, 4, 4), batch=2, mode="training"), "add")
    assert tr["add_ops"] == 2 * n and tr["saved_words"] == 0  # the gradient paths meet again: n adds


class ScalarOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return (y * 2.0) + 1.0


def test_scalar_operands() -> None:
    # x * 2.0: |x| mults forward, dx = 2·dy: |x| mults backward, no tensor saved;
    # x + 1.0: |x| adds forward, dx = dy: no backward work (one gradient path, nothing to merge)
    p = quiet_profile(ScalarOps(), (3,), batch=4, mode="training")
    n = 4 * 5
    mul, add = row(p, "(mul)"), row(p, "(add)")
    assert (mul["mult_ops"], mul["add_ops"], mul["saved_words"]) == (2 * n, 0, 0)
    assert (add["add_ops"], add["mult_ops"], add["saved_words"]) == (n, 0, 0)


def test_loss_row_in_training_only() -> None:
    model = nn.Linear(4, 3)
    assert "(loss)" not in quiet_profile(model, (4,), batch=2).layers["name"].tolist()
    loss = row(quiet_profile(model, (4,), batch=2, mode="training"), "(loss)")
    n = 3  # logits per sample
    assert loss["kind"] == "CrossEntropyLoss"
    # softmax: cmp n, adds (4+2)·n, mults (4+1)·n; −log p[y]: 1 add; backward p − onehot: n adds
    assert loss["cmp_ops"] == 2 * n
    assert loss["add_ops"] == 2 * ((4 + 2) * n + 1 + n)
    assert loss["mult_ops"] == 2 * (4 + 1) * n
    assert loss["saved_words"] == 2 * n and loss["macs"] == 0


@pytest.mark.parametrize("opt,mults,adds,state_ops,state", [
    ("sgd", 1, 1, 0, 0), ("momentum", 2, 2, 2, 1), ("adam", 8, 4, 4, 2),
])
@pytest.mark.parametrize("weight_decay", [False, True])
def test_optimizer_update(opt: str, mults: int, adds: int, state_ops: int, state: int, weight_decay: bool) -> None:
    tp = 15  # Linear(4, 3)
    p = quiet_profile(nn.Linear(4, 3), (4,), mode="training", optimizer=opt, weight_decay=weight_decay)
    wd = 1 if weight_decay else 0
    r = row(p, "")
    assert r["update_ops"] == (mults + adds + 2 * wd) * tp
    o = OPTIMIZERS[opt]
    assert (o.mults, o.adds, o.state, o.reads + o.writes - 3) == (mults, adds, state, state_ops)
    acc = p.counts.accesses
    upd = acc[acc["phase"] == "update"].groupby("operand")["words"].sum().to_dict()
    expected = {"weight": 2 * tp, "weight_grad": tp}  # read w, write w; read g
    if state_ops:
        expected["optimizer_state"] = state_ops * tp
    assert upd == expected
    # weights + gradients + optimizer state, in words
    assert p.counts.weight_state_words == tp + tp * (1 + state)


def test_optimizer_table_is_consistent_with_its_formulas() -> None:
    # sgd reads w, g writes w; momentum also reads and writes v; adam reads and writes m and v
    assert [(o.reads, o.writes, o.state) for o in OPTIMIZERS.values()] == [(2, 1, 0), (3, 2, 1), (4, 3, 2)]


class Odd(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class WithOdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.odd = Odd()
        self.fc = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.odd(x))


def test_unmodelled_module_is_listed_and_warned() -> None:
    with pytest.warns(UserWarning, match="no counting rule.*odd"):
        p = profile(WithOdd(), (5,))
    r = row(p, "odd")
    assert not r["modelled"] and r["kind"] == "Odd"
    assert p.unmodelled == ["odd"]
    assert p.totals["unmodelled_calls"] == 1
    assert row(p, "fc")["modelled"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert quiet_profile(WithOdd(), (5,)).unmodelled == ["odd"]  # warn=False: listed, not warned


class FunctionalPool(nn.Module):
    """LeNet style: ``F.max_pool2d`` in ``forward`` (dispatched as ``max_pool2d_with_indices`` under autograd)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(self.conv(x), 2)


def test_functional_max_pool_counts_values_not_indices() -> None:
    for mode in ("inference", "training"):
        p = quiet_profile(FunctionalPool(), (1, 8, 8), batch=2, mode=mode)
        pool = p.layers.iloc[1]
        assert pool["kind"] == "aten.max_pool2d_with_indices" and pool["modelled"]
        y = 2 * 2 * 4 * 4
        assert pool["cmp_ops"] == y * 3  # K − 1 = 3 comparisons per pooled value


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        out = out + x
        out = torch.relu(out)
        return self.fc(torch.flatten(out, 1))


def test_functional_ops_are_recorded_as_aten_rows() -> None:
    p = quiet_profile(Functional(), (4, 8, 8), batch=2, mode="training")
    kinds = dict(zip(p.layers["name"], p.layers["kind"]))
    assert kinds["(add)"] == "aten.add" and kinds["(relu)"] == "aten.relu"
    assert p.layers["name"].tolist()[:3] == ["conv", "(add)", "(relu)"]
    n = 2 * 4 * 8 * 8
    add, relu = row(p, "(add)"), row(p, "(relu)")
    assert add["add_ops"] == 2 * n and add["modelled"]
    assert relu["cmp_ops"] == 2 * n and relu["saved_words"] == n
    assert not p.unmodelled
    # the trace leaves the model as it was
    m = Functional().train()
    m.conv.weight.requires_grad_(False)
    trace(m, (4, 8, 8), mode="training")
    assert m.training and not m.conv.weight.requires_grad and m.fc.weight.requires_grad


def test_count_batch_scaling_and_errors() -> None:
    tr = trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 6, 6), mode="training")
    c1, c5 = count(tr, batch=1), count(tr, batch=5)
    for col in ("macs_forward", "macs_backward_weight", "cmp_ops", "saved_words"):
        assert c5.layers[col].sum() == 5 * c1.layers[col].sum()
    assert c5.layers["update_ops"].sum() == c1.layers["update_ops"].sum() == 2 * 20  # per step, not sample
    from energymodel.errors import UserError

    with pytest.raises(UserError, match="batch"):
        count(tr, batch=0)
    with pytest.raises(UserError, match="optimizer"):
        count(tr, optimizer="rmsprop")


# -- the worked example of docs/cost-model.md ------------------------------------------------------------


def _doc_example(tag: str) -> dict[str, float]:
    """``| `key` | ... | value |`` rows between ``<!-- example:TAG -->`` and ``<!-- /example -->`` in the doc."""
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"<!-- example:{tag} -->(.*?)<!-- /example -->", text, re.S)
    assert m, f"example {tag!r} not found in {DOC}"
    out = {}
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`\w+`", cells[0]):
            out[cells[0].strip("`")] = float(cells[-1].replace(",", "").replace(" ", ""))
    return out


# the same figures, pinned here too, so that the code cannot drift together with the doc; worked out by hand from
# the loop nest of docs/cost-model.md section 6: M MACs per phase, order P,R,C,Q,K,S forward (F_in 3, F_wt 1,024,
# st_wt 32, F_out 12) and K,R,P,Q,C,S for the weight gradient (F_in 12, st_in 4, F_out 3, F_wt 1,024)
M_TRAIN, X_TRAIN, W_WORDS = 4_831_838_208, 8_388_608, 36_864


def _forward_rf(m: float, y: float) -> float:
    """in M + M/3; wt M/32 + M/1,024; out 2M + M/12 + (M/192 − |Y|)."""
    return (m + m / 3) + (m / 32 + m / 1024) + (2 * m + m / 12 + (m / 192 - y))


def _forward_sram(m: float, y: float, dram: tuple[float, float, float]) -> float:
    """in M/48, wt M/1,024, out 2·M/192 − |Y|, plus the phase's DRAM words through the SRAM."""
    return m / 48 + m / 1024 + (2 * m / 192 - y) + sum(dram)


_BW_RF = (M_TRAIN / 4 + M_TRAIN / 12) + (M_TRAIN + M_TRAIN / 3) + (2 * M_TRAIN + M_TRAIN / 1024
                                                                  + (M_TRAIN / 1024 - W_WORDS))
_BW_SRAM = M_TRAIN / 192 + M_TRAIN / 48 + (2 * M_TRAIN / 1024 - W_WORDS) + 2 * X_TRAIN + W_WORDS
_TRAIN_RF = 2 * _forward_rf(M_TRAIN, X_TRAIN) + _BW_RF + 3 * 73_728
_TRAIN_SRAM = 2 * _forward_sram(M_TRAIN, X_TRAIN, (X_TRAIN, W_WORDS, X_TRAIN)) + _BW_SRAM
WORKED_TRAINING = {
    "macs_forward": M_TRAIN, "macs_backward_input": M_TRAIN, "macs_backward_weight": M_TRAIN,
    "add_ops": 36_864, "mult_ops": 36_864, "rf_accesses": _TRAIN_RF, "sram_accesses": _TRAIN_SRAM,
    "dram_accesses": 6 * X_TRAIN + 6 * W_WORDS, "storage_bytes": 147_456, "energy_compute_pj": 66_679_536_844.8,
    "energy_rf_pj": _TRAIN_RF, "energy_sram_pj": 5 * _TRAIN_SRAM, "energy_dram_pj": 32_353_812_480,
    "energy_pj": 66_679_536_844.8 + _TRAIN_RF + 5 * _TRAIN_SRAM + 32_353_812_480,
}
# inference, batch 1: input and output on chip, W from DRAM; the tied tiling of half the input channels runs the
# cheapest nest, P,R,C,S,Q,K (F_in 3, st_in 1; F_wt 1,024, st_wt 32; F_out 18: A = M/288)
_M_INF = 37_748_736
_INF_RF = (_M_INF + _M_INF / 3) + (_M_INF / 32 + _M_INF / 1024) + (2 * _M_INF + _M_INF / 18 + (_M_INF / 288 - 65_536))
_INF_SRAM = _M_INF / 48 + _M_INF / 1024 + (2 * _M_INF / 288 - 65_536) + W_WORDS
WORKED_INFERENCE = {
    "macs_forward": 37_748_736, "rf_accesses": _INF_RF, "sram_accesses": _INF_SRAM,
    "dram_accesses": 36_864, "energy_compute_pj": 173_644_185.6, "energy_rf_pj": _INF_RF,
    "energy_sram_pj": 5 * _INF_SRAM, "energy_dram_pj": 23_592_960,
    "energy_pj": 173_644_185.6 + _INF_RF + 5 * _INF_SRAM + 23_592_960,
}


@pytest.fixture(scope="module")
def resnet18_cifar() -> nn.Module:
    torch.manual_seed(0)
    return build("cifar_resnet18")


@pytest.mark.parametrize("tag,pinned,mode,batch", [
    ("training", WORKED_TRAINING, "training", 128), ("inference", WORKED_INFERENCE, "inference", 1),
])
def test_worked_example_in_the_doc_equals_profile(resnet18_cifar, tag, pinned, mode, batch) -> None:
    doc = _doc_example(tag)
    assert set(pinned) <= set(doc), f"doc lacks {set(pinned) - set(doc)}"
    p = profile(resnet18_cifar, (3, 32, 32), batch=batch, mode=mode, optimizer="sgd", table="45nm")
    r = row(p, "blocks.layer1_0.conv1")
    for key, value in doc.items():
        assert math.isclose(float(r[key]), value, rel_tol=1e-12, abs_tol=1e-6), (key, float(r[key]), value)
    for key, value in pinned.items():
        assert math.isclose(doc[key], value, rel_tol=1e-11, abs_tol=1e-6), key


def test_parameters_of_a_container_module_are_counted():
    """An nn.Parameter owned by a non-leaf module (used in its forward) still has storage and an update."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return self.fc(x.flatten(1)) * self.scale

    model = Scaled()
    prof = profile(model, (4,), batch=2, mode="training", optimizer="sgd")
    row = prof.layers[prof.layers["name"] == "(parameters)"].iloc[0]
    assert row["params"] == 3 and row["trainable"]
    assert row["update_ops"] == 3 * 2  # sgd: 1 mult + 1 add per parameter
    assert prof.totals["params"] == sum(p.numel() for p in model.parameters()) == 18
    assert prof.totals["storage_bytes"] == 18 * 4
    assert prof.unmodelled == []
