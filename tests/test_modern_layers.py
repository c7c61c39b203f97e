"""Counting rules of the layers modern models use, each against a count by hand (the formulas of
``energymodel/count/activations.py``, ``attention.py``, ``lookup.py``) or against ``FlopCounterMode``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from example_models import PATH as MODELS  # noqa: E402
from example_models import load as load_models  # noqa: E402
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import energymodel

M = load_models()


def row(prof, name: str):
    rows = prof.layers[prof.layers["name"] == name]
    assert len(rows) == 1, list(prof.layers["name"])
    return rows.iloc[0]


class After(nn.Module):
    """A linear layer, then ``op``: the op's input needs a gradient, so its backward runs in training."""

    def __init__(self, op: nn.Module, width: int = 6) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.op = op

    def forward(self, x):
        return self.op(self.fc(x))


# per element, by hand from the formulas: (forward add, mult, cmp), (backward add, mult, cmp)
ELEMENTWISE = [
    (nn.Hardswish(), (1, 2, 2), (1, 2, 2)),  # x·clamp(x+3,0,6)/6; dy·(x/3+0.5) inside (−3, 3)
    (nn.Hardsigmoid(), (1, 1, 2), (0, 1, 2)),  # clamp(x+3,0,6)/6; dy/6 inside (−3, 3)
    (nn.SiLU(), (5, 6, 0), (7, 8, 0)),  # exp 4+4, 1+, recip, ·x; σ again + 2 adds + 3 mults
    (nn.GELU(), (7, 11, 0), (7, 11, 0)),  # tanh form: x³ 2, ·0.044715 1, +x, ·c, tanh 5+5, 1+, ·0.5x 2
    (nn.Mish(), (14, 14, 0), (21, 22, 0)),  # exp, 1+, log, tanh, ·x; σ, tanh(softplus) again, 2 adds, 3 mults
    (nn.Softplus(), (9, 8, 0), (5, 6, 0)),  # exp, 1+, log; σ·dy
    (nn.ELU(), (5, 5, 1), (0, 1, 1)),
    (nn.Softmax(dim=-1), (6, 5, 1), (2, 2, 0)),  # max, x−max, exp, sum, /sum; y·(dy − Σdy·y)
    (nn.LogSoftmax(dim=-1), (6, 5, 1), (2, 2, 0)),
]


@pytest.mark.parametrize("op,fwd,bwd", ELEMENTWISE, ids=[type(e[0]).__name__ for e in ELEMENTWISE])
def test_elementwise_rule_by_hand(op, fwd, bwd) -> None:
    model = After(op)
    n = 4 * 6  # batch 4, 6 features
    inf = row(energymodel.profile(model, (6,), batch=4, warn=False), "op")
    assert (inf["add_ops"], inf["mult_ops"], inf["cmp_ops"]) == tuple(n * v for v in fwd)
    assert inf["macs"] == 0
    tr = row(energymodel.profile(model, (6,), batch=4, mode="training", warn=False), "op")
    assert (tr["add_ops"], tr["mult_ops"], tr["cmp_ops"]) == tuple(n * (a + b) for a, b in zip(fwd, bwd))
    assert tr["saved_words"] == n


def test_functional_forms_have_the_module_rules() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 6)

        def forward(self, x):
            h = self.fc(x)
            return F.hardswish(h) + F.hardsigmoid(h) + F.mish(h) + torch.softmax(h, -1)

    prof = energymodel.profile(Functional(), (6,), warn=False)
    n = 6
    assert (row(prof, "(hardswish)")["add_ops"], row(prof, "(hardswish)")["cmp_ops"]) == (n, 2 * n)
    assert row(prof, "(hardsigmoid)")["mult_ops"] == n
    assert row(prof, "(mish)")["mult_ops"] == 14 * n
    assert row(prof, "(_softmax)")["add_ops"] == 6 * n
    assert not prof.unmodelled


def test_layer_and_group_norm_modules_and_functional() -> None:
    class Norms(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)
            self.gn = nn.GroupNorm(2, 4)
            self.w = nn.Parameter(torch.ones(5))

        def forward(self, x):
            h = self.gn(self.conv(x))
            return F.layer_norm(h, (5,), self.w)  # the functional form, with a weight: affine

    prof = energymodel.profile(Norms(), (4, 3, 5), warn=False)
    n = 4 * 3 * 5
    for name in ("gn", "(native_layer_norm)"):  # batch statistics always: 3 adds + 3 mults per element
        r = row(prof, name)
        assert (r["add_ops"], r["mult_ops"]) == (3 * n, 3 * n), name
    tr = energymodel.profile(Norms(), (4, 3, 5), mode="training", optimizer="sgd", weight_decay=0, warn=False)
    # backward: 2 adds + 2 mults to the input, the shared sums 2 adds + 1 mult with the weight gradient; SGD's
    # update: 1 mult + 1 add for each of the 8 parameters
    assert (row(tr, "gn")["add_ops"], row(tr, "gn")["mult_ops"]) == (7 * n + 8, 6 * n + 8)


def test_embedding_reads_rows_no_macs() -> None:
    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(1000, 8)
            self.fc = nn.Linear(8, 3)

        def forward(self, ids):
            return self.fc(self.emb(ids).mean(1))

    ids = torch.zeros(4, 5, dtype=torch.int64)
    prof = energymodel.profile(Bag(), inputs=ids, mode="training", optimizer="sgd", weight_decay=0, warn=False)
    r = row(prof, "emb")
    assert r["macs"] == 0 and r["modelled"]
    # the weight gradient scatter-adds dY: |Y| adds; SGD updates the whole (dense) table: 1 add + 1 mult each
    assert (r["add_ops"], r["mult_ops"]) == (4 * 5 * 8 + 8000, 8000)
    acc = prof.counts.accesses
    emb = acc[(acc["layer"] == r.name)]
    fwd_w = emb[(emb["operand"] == "weight") & (emb["phase"] == "forward")]["words"].sum()
    assert fwd_w == 4 * 5 * 8  # the gathered rows, not the 8,000-word table
    assert r["saved_words"] == 4 * 5  # the ids


def _attention(backend):
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(8, 24)

        def forward(self, x):
            q, k, v = self.qkv(x).view(1, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
            return F.scaled_dot_product_attention(q, k, v)

    with sdpa_kernel(backend):
        return (energymodel.profile(Attn(), inputs=torch.zeros(1, 5, 8), warn=False),
                energymodel.profile(Attn(), inputs=torch.zeros(1, 5, 8), mode="training", warn=False))


@pytest.mark.parametrize("backend", [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION])
def test_attention_every_backend_by_hand(backend) -> None:
    inf, tr = _attention(backend)
    r, t = row(inf, "(scaled_dot_product_attention)"), row(tr, "(scaled_dot_product_attention)")
    H, L, S, E = 2, 5, 5, 4
    n = H * L * S  # scores
    macs = H * L * S * E * 2  # q·kᵀ and p·v
    assert r["macs"] == macs
    assert (r["add_ops"], r["mult_ops"], r["cmp_ops"]) == (6 * n, n + 5 * n, n)  # softmax 6a 5m 1c, scale n
    if backend == SDPBackend.MATH:
        assert t["macs_backward_input"] == 2 * macs
        assert t["saved_words"] == 3 * H * L * E + n  # q, k, v and the probabilities
    else:  # the CPU flash kernel recomputes the scores and keeps output + logsumexp instead of p
        assert t["macs_backward_input"] == 2 * macs + H * L * S * E
        assert t["saved_words"] == 3 * H * L * E + H * L * E + H * L


def test_bmm_einsum_interpolate_depthwise_and_squeeze_excite() -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)  # depthwise
            self.gc = nn.Conv2d(4, 6, 1, groups=2, bias=False)  # grouped
            self.fc = nn.Conv2d(6, 6, 1)

        def forward(self, x):
            h = self.gc(self.dw(x))  # (6, 4, 4)
            s = torch.sigmoid(self.fc(h.mean((2, 3), keepdim=True)))
            h = s * h  # broadcast multiply: (6, 1, 1) x (6, 4, 4)
            g = torch.einsum("bcij,bcjk->bcik", h, h)  # a batched matrix product
            return F.interpolate(g, scale_factor=2, mode="bilinear") + F.interpolate(g, scale_factor=2)

    prof = energymodel.profile(Mixed(), (4, 4, 4), warn=False)
    assert row(prof, "dw")["macs"] == 4 * 4 * 4 * 9  # |Y| · (C_in/g = 1) · 3·3
    assert row(prof, "gc")["macs"] == 6 * 4 * 4 * 2  # |Y| · (C_in/g = 2)
    mul = row(prof, "(mul)")
    assert mul["mult_ops"] == 6 * 16
    assert row(prof, "(bmm)")["macs"] == 6 * 4 * 4 * 4  # 6 batches of 4x4 @ 4x4
    assert row(prof, "(upsample_bilinear2d)")["mult_ops"] == 4 * 6 * 8 * 8  # 4 taps per output
    assert row(prof, "(upsample_bilinear2d)")["add_ops"] == 3 * 6 * 8 * 8
    assert row(prof, "(upsample_nearest2d)")["add_ops"] == 0
    assert not prof.unmodelled
    tr = energymodel.profile(Mixed(), (4, 4, 4), mode="training", warn=False)
    m = row(tr, "(mul)")
    # backward: 2 mults per output, and the scale's gradient summed over H·W: |Y| − |s| adds
    assert (m["mult_ops"], m["add_ops"]) == (6 * 16 + 2 * 6 * 16, 6 * 16 - 6)
    assert m["saved_words"] == 6 + 6 * 16


def test_transformer_macs_equal_flop_counter_with_math_attention() -> None:
    for model, x in ((M.patch_transformer(num_classes=5), torch.randn(2, 1, 28, 28)),
                     (M.text_transformer(), torch.randint(0, 1000, (2, 32)))):
        with sdpa_kernel(SDPBackend.MATH):
            model.eval()
            with FlopCounterMode(display=False) as fwd:
                model(x)
            model.train()
            with FlopCounterMode(display=False) as step:
                model(x).sum().backward()
            inf = energymodel.profile(model, inputs=x, warn=False).totals
            tr = energymodel.profile(model, inputs=x, mode="training", warn=False).totals
        assert inf["macs"] == fwd.get_total_flops() / 2, type(model).__name__
        assert tr["macs"] == step.get_total_flops() / 2, type(model).__name__
        assert tr["params"] == sum(p.numel() for p in model.parameters())


def test_transformer_encoder_with_padding_mask_in_inference() -> None:
    """The fused fast path (nested tensors) is turned off while tracing: no crash, the layers' own counts."""
    model = M.text_transformer()
    ids, mask = torch.zeros(2, 32, dtype=torch.int64), torch.zeros(2, 32, dtype=torch.bool)
    inf = energymodel.profile(model, inputs=(ids, mask), warn=False)
    tr = energymodel.profile(model, inputs=(ids, mask), mode="training", warn=False)
    assert inf.totals["macs_forward"] == tr.totals["macs_forward"] > 0
    assert not inf.unmodelled and torch.backends.mha.get_fastpath_enabled()


def test_integer_and_keyword_inputs_on_every_function(capsys) -> None:
    from energymodel.cli import main

    model = M.text_transformer()
    ids = torch.zeros(4, 32, dtype=torch.int64)
    per_sample = energymodel.profile(model, inputs=ids, warn=False).totals["macs_forward"] / 4
    df = energymodel.compare(model, inputs=ids, samples_new=100, samples_old=100, epochs=1, batch=50)
    assert list(df["after"]) == ["input", "encoder.layers.0", "encoder.layers.1", "input"]
    assert df.iloc[-1]["data_storage_bytes"] == 100 * 32 * 8  # the old token ids kept: int64
    assert df.iloc[0]["inference_macs"] == 2 * per_sample  # at k = 0: the base and a full clone
    cost = energymodel.training_cost(model, inputs={"ids": ids}, k=2, samples=100, epochs=1, batch=50)
    assert cost.steps == 2 and cost.trainable_params == 64 * 4 + 4  # at k = 2 only the classifier trains
    grid = energymodel.sweep(model, inputs=ids, vary={"dram": [100, 640]}, k=[0, 2], samples_new=100,
                             samples_old=100, epochs=1, batch=50)
    assert len(grid) == 2 * 2
    path = f"{MODELS}:text_transformer"
    assert main(["profile", path, "--input", "32:int64", "--batch", "4", "--format", "json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)["data"]
    assert data["totals"]["macs_forward"] == 4 * per_sample and data["unmodelled"] == []
    assert main(["points", path, "--input", "ids=32:int64;padding_mask=32:bool"]) == 2
    assert "takes 2 inputs: blocks of a sharing point take one" in capsys.readouterr().err
    assert main(["profile", path, "--input", "ids=32:int64;padding_mask=32:bool", "--format", "json"]) == 0
    capsys.readouterr()
    for bad, needle in (("32:int9", "bad --input dtype 'int9'"), ("ids=32:int64;32", "name every input")):
        assert main(["profile", path, "--input", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err
