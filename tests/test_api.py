"""The top-level Python API (``energymodel.profile`` ...), example inputs, sharing points of any model,
``--version``, and a fast ``--help`` that loads neither torch nor pandas."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import energymodel
from energymodel.cli import main
from energymodel.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


# -- a torchvision-style ResNet (torchvision is not installed): children run one after another -----------


class Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else None)

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TorchvisionStyleResNet(nn.Module):
    """conv1, bn1, relu, maxpool, layer1..4, avgpool, torch.flatten, fc — as torchvision writes it."""

    def __init__(self, num_classes: int = 10, w: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(Basic(w, w))
        self.layer2 = nn.Sequential(Basic(w, 2 * w, 2))
        self.layer3 = nn.Sequential(Basic(2 * w, 4 * w, 2))
        self.layer4 = nn.Sequential(Basic(4 * w, 8 * w, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


CHILDREN = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
#: the points found: conv1 bn1 relu maxpool add one conv layer between them, so one point (the deepest) stands
#: for them; layer1 = layer1.0, its only block
POINTS = ["maxpool", "layer1", "layer2", "layer3", "layer4"]


def test_torchvision_style_resnet_sharing_points() -> None:
    model = TorchvisionStyleResNet()
    pts = energymodel.sharing_points(model, (3, 64, 64))
    assert [p.after for p in pts] == ["input", *POINTS]
    assert [p.index for p in pts] == list(range(6))
    # conv layers of the blocks (the head's classifier is not shared): conv1 1, layer1 2, layer2..4 3 each
    assert [p.layers_shared for p in pts] == [0, 1, 3, 6, 9, 12]
    assert pts[-1].layers_total == 12
    assert [p.fraction for p in pts] == [0, 1 / 12, 3 / 12, 6 / 12, 9 / 12, 1.0]
    assert pts[0].fraction_macs == 0 and 0 < pts[1].fraction_macs < pts[2].fraction_macs < pts[-1].fraction_macs


def test_torchvision_style_resnet_compare_and_declared_blocks(capsys) -> None:
    model = TorchvisionStyleResNet()
    df = energymodel.compare(model, (3, 32, 32), k=[0, 5], samples_new=100, samples_old=100, epochs=1, batch=50)
    assert list(df["strategy"]) == ["partial-sharing", "partial-sharing", "full-retraining"]
    assert list(df["after"])[:2] == ["input", "layer4"]
    # declared: exactly the points asked for (the stem children too), the rest (avgpool, fc) is the head
    pts = energymodel.sharing_points(model, (3, 32, 32), blocks=CHILDREN[:5])
    assert [p.after for p in pts] == ["input", *CHILDREN[:5]]
    assert [p.after for p in energymodel.sharing_points(model, (3, 32, 32), blocks=["layer2"])] == ["input", "layer2"]
    with pytest.raises(UserError, match="in call order: layer1, layer2"):
        energymodel.sharing_points(model, (3, 32, 32), blocks=["layer2", "layer1"])
    with pytest.raises(UserError, match="'nothing' names no module; modules it can be cut after: conv1, bn1, relu"):
        energymodel.sharing_points(model, (3, 32, 32), blocks=["conv1", "nothing"])
    with pytest.raises(UserError, match=r"cannot be cut after 'layer1.0.conv1' \(more than its output"):
        energymodel.sharing_points(model, (3, 32, 32), blocks=["layer1.0.conv1"])


def test_chain_view_costs_equal_the_model() -> None:
    """The block view runs the same modules in the same order: identical counts."""
    from energymodel.models.chain import block_view

    model = TorchvisionStyleResNet()
    view = block_view(model, (3, 32, 32))
    a = energymodel.profile(model, (3, 32, 32), warn=False).totals
    b = energymodel.profile(view, (3, 32, 32), warn=False).totals
    for key in ("macs_forward", "add_ops", "mult_ops", "cmp_ops", "params", "energy_pj"):
        assert a[key] == b[key], key


def test_code_between_children_is_cut_with_fx_and_a_skip_is_refused() -> None:
    from energymodel.models.chain import block_view

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.a(x) * 2)  # arithmetic between children: the head runs it

    model = Twice()
    view = block_view(model, (4,))
    assert [p.after for p in energymodel.sharing_points(model, (4,))] == ["input", "a"]
    x = torch.randn(3, 4)
    assert torch.equal(view(x), model(x))

    class Skip(Twice):
        def forward(self, x):
            return self.fc(self.a(x) + x)  # x is still needed after a: no cut there

    with pytest.raises(UserError, match="no sharing points before its head.*modules it can be cut after: fc$"):
        energymodel.sharing_points(Skip(), (4,))


def test_cli_points_compare_with_blocks(capsys, tmp_path: Path) -> None:
    path = tmp_path / "tvres.py"
    path.write_text(Path(__file__).read_text(encoding="utf-8").split("# -- a torchvision")[0]
                    + "\n".join(["", "import torch", "from torch import nn", ""])
                    + Path(__file__).read_text(encoding="utf-8").split("-" * 11 + "\n", 1)[1].split("CHILDREN =")[0]
                    + "\ndef resnet():\n    return TorchvisionStyleResNet()\n", encoding="utf-8")
    assert main(["points", f"{path}:resnet", "--input", "3,32,32"]) == 0
    out = capsys.readouterr().out
    assert [ln.split()[1] for ln in out.splitlines()[1:]] == ["input", *POINTS]
    assert main(["points", f"{path}:resnet", "--input", "3,32,32", "--blocks", "conv1,bn1,relu,maxpool,layer1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 6
    assert main(["compare", f"{path}:resnet", "--input", "3,32,32", "--fraction", "0.4", "--samples-new", "100",
                 "--samples-old", "100", "--epochs", "1", "--batch", "50"]) == 0
    captured = capsys.readouterr()
    # 0.4: the nearest point is 6/12 = 0.5 (after layer2; 3/12 = 0.25 is further), not exact: a note says so
    assert "fraction 0.4 snapped to the nearest sharing point k=3 (after layer2, fraction 0.5)" in captured.err
    assert main(["profile", f"{path}:resnet", "--input", "3,32,32", "--mode", "training", "--frozen",
                 "layer1,layer2", "--format", "json"]) == 0


# -- top level and inputs ----------------------------------------------------------------------------------


def test_top_level_functions_not_modules() -> None:
    import energymodel.profile  # noqa: F401  (the submodule of the same name must not shadow the function)
    import energymodel.sweep  # noqa: F401

    from energymodel import compare, profile, sharing_points, sweep, training_cost

    for f in (profile, compare, sharing_points, training_cost, sweep):
        assert callable(f) and type(f).__name__ == "function", f
    assert energymodel.profile is profile
    p = energymodel.profile("smallcnn")
    assert p.totals["macs_forward"] == 18_691_840 and p.totals["params"] == 468_010
    tc = energymodel.training_cost("smallcnn", k=5, samples=256, epochs=1, batch=128)
    assert tc.steps == 2 and tc.trainable_params == 128 * 10 + 10  # only the head trains at k=5
    s = energymodel.sweep("smallcnn", vary={"dram": [100.0, 640.0]}, k=[0, 5], samples_new=100, samples_old=100,
                          epochs=1, batch=100)
    assert len(s) == 2 * 2


def test_example_inputs_tensor_tuple_dict() -> None:
    x = torch.zeros(4, 1, 28, 28)
    by_shape = energymodel.profile("smallcnn", batch=4)
    by_tensor = energymodel.profile("smallcnn", inputs=x)
    assert by_tensor.settings["batch"] == 4 and by_tensor.settings["input_shape"] == [1, 28, 28]
    assert by_tensor.totals["macs_forward"] == by_shape.totals["macs_forward"] == 4 * 18_691_840

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(100, 8)
            self.fc = nn.Linear(8, 3)

        def forward(self, ids, scale=None):
            h = self.emb(ids).mean(1)
            return self.fc(h if scale is None else h * scale)

    ids = torch.randint(0, 100, (2, 5))
    scale = torch.ones(2, 8)
    for inputs in ((ids, scale), {"ids": ids, "scale": scale}):
        p = energymodel.profile(TwoInputs(), inputs=inputs, warn=False)
        assert p.settings["batch"] == 2 and p.settings["input_shape"] == [5]
        fc = p.layers[p.layers["name"] == "fc"].iloc[0]
        assert fc["macs_forward"] == 2 * 8 * 3
    p = energymodel.profile(TwoInputs(), inputs=ids, warn=False)
    assert p.layers[p.layers["name"] == "fc"].iloc[0]["macs_forward"] == 2 * 8 * 3


def test_shape_errors_name_the_batch_dimension() -> None:
    with pytest.raises(UserError, match="a shape without the batch dimension; use batch="):
        energymodel.profile("smallcnn", (1, 1, 28, 28))
    with pytest.raises(UserError, match="no batch dimension"):
        energymodel.profile(nn.Linear(4, 2), inputs=torch.tensor(1.0))
    with pytest.raises(UserError, match="is not a shape"):
        energymodel.profile(nn.Linear(4, 2), "4")


def test_fp16_model_is_warned_about_or_priced_with_a_matching_table() -> None:
    model = nn.Sequential(nn.Linear(8, 4)).half()
    with pytest.warns(UserWarning, match="parameters are fp16 but energy table 45nm prices fp32"):
        energymodel.profile(model, (8,), table="45nm")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        energymodel.profile(model, (8,), table="45nm-fp16")


# -- the command line front door -------------------------------------------------------------------------


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"energymodel {energymodel.__version__}"


def test_help_is_fast_and_loads_neither_torch_nor_pandas() -> None:
    code = ("import sys, energymodel.cli as c\n"
            "try:\n    c.main(['profile', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'pandas' in sys.modules)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "False False"
    assert "--energy-table TABLE" in proc.stdout and "(default: 45nm)" in proc.stdout
    assert "(default: momentum)" in proc.stdout and "(default: 0.0005)" in proc.stdout
    assert elapsed < 3.0, elapsed  # about 0.1 s (the module check above is the strict one)


@pytest.mark.parametrize("command", ["profile", "compare", "sweep", "points"])
def test_defaults_shown_in_help(command: str) -> None:
    from energymodel.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # noqa: SLF001
    text = sub.format_help()
    for action in sub._actions:  # noqa: SLF001
        if action.option_strings and action.help and action.help != "==SUPPRESS==" and action.default not in (
                None, False, "==SUPPRESS==") and action.dest != "help":
            assert "default" in (action.help or "") or f"(default: {action.default})" in " ".join(text.split()), \
                action.dest


# -- registering a counting rule ---------------------------------------------------------------------------


class Doubler(nn.Module):
    def forward(self, x):
        return x * 2.0


class UsesCumsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return torch.cumsum(self.fc(x), 1)


def test_register_rule_for_a_module_and_an_aten_op() -> None:
    from energymodel.count.custom_rules import register_rule, registered_rule, unregister_rule
    from energymodel.count.work import OpVec, Work

    net = nn.Sequential(nn.Linear(4, 4), Doubler())
    assert energymodel.profile(net, (4,), warn=False).unmodelled == ["1"]
    with registered_rule(Doubler, lambda call: Work(forward=OpVec(mult=call.out_words))):
        p = energymodel.profile(net, (4,), batch=3)
        assert p.unmodelled == [] and p.layers.iloc[1]["mult_ops"] == 3 * 4
    assert energymodel.profile(net, (4,), warn=False).unmodelled == ["1"]  # the rule is gone again

    model = UsesCumsum()
    assert energymodel.profile(model, (6,), warn=False).unmodelled == ["(cumsum)"]
    register_rule("aten.cumsum", lambda call: Work(forward=OpVec(add=call.out_words - 1)))
    try:
        with pytest.raises(UserError, match="already has a counting rule"):
            register_rule("cumsum", lambda call: Work())
        p = energymodel.profile(model, (6,))
        assert p.unmodelled == [] and p.layers[p.layers["name"] == "(cumsum)"].iloc[0]["add_ops"] == 5
    finally:
        unregister_rule("cumsum")
    with pytest.raises(UserError, match="nn.Module class or an aten operator"):
        register_rule(42, lambda call: Work())  # type: ignore[arg-type]


def test_unmodelled_listed_by_kind_and_modelled_column_shown(capsys, tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("import torch\nfrom torch import nn\n\n\nclass Doubler(nn.Module):\n    def forward(self, x):\n"
                    "        return x * 2.0\n\n\ndef net():\n    return nn.Sequential(nn.Linear(4, 4), Doubler(), "
                    "Doubler())\n", encoding="utf-8")
    assert main(["profile", f"{path}:net", "--input", "4"]) == 0
    captured = capsys.readouterr()
    assert "unmodelled (no counting rule, counted as 0): Doubler: 2 calls (1, 2)" in captured.out
    lines = captured.out.splitlines()
    assert lines[3].split()[:3] == ["module", "kind", "output"]
    rows = {ln.split()[0]: ln for ln in lines[4:7]}
    assert "Doubler (no rule)" in rows["1"] and "(no rule)" not in rows["0"]
    assert captured.out.count("Doubler: 2 calls") == 1 and "no counting rule" not in captured.err  # listed once
    assert main(["profile", f"{path}:net", "--input", "4", "--format", "json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)["data"]
    assert data["unmodelled"] == ["1", "2"] and data["unmodelled_by_kind"] == {"Doubler": ["1", "2"]}


def test_fvcore_check_flags_batch_norm_with_its_reason(capsys) -> None:
    from energymodel.models.zoo import build

    check = energymodel.fvcore_check(build("smallcnn"), (1, 28, 28))
    rows = {r["module"]: r for r in check.to_dict(orient="records")}
    assert rows["blocks.conv2.conv"]["macs"] == rows["blocks.conv2.conv"]["fvcore_flops"] == 32 * 32 * 9 * 28 * 28
    assert rows["blocks.conv2.conv"]["agrees"] and rows["blocks.conv2.conv"]["reason"] == ""
    # fvcore counts two flops per element of an affine BN in eval form (2 x C x H x W), we count 0 MACs
    bn = rows["blocks.conv3.bn"]
    assert (bn["macs"], bn["fvcore_flops"], bn["agrees"]) == (0, 2 * 64 * 14 * 14, False)
    assert bn["reason"].startswith("fvcore counts batch norm")
    assert all(r["agrees"] for m, r in rows.items() if not m.endswith(".bn") and m != "(total)")
    total = rows["(total)"]
    assert total["macs"] == 18_691_840 and total["difference"] == 2 * (2 * 32 * 28 * 28 + 2 * 64 * 14 * 14)
    assert main(["profile", "smallcnn", "--check", "fvcore"]) == 0
    assert "5 of 20 rows differ" in capsys.readouterr().out  # 19 leaf modules + (total): the 4 BNs and the total


def test_progress_bar_counts_traces_and_is_off_when_not_a_terminal(capsys) -> None:
    import io

    from energymodel.progress import on_trace, progress

    labels: list[str] = []
    with on_trace(labels.append):
        energymodel.compare("smallcnn", k=[0, 5], samples_new=100, samples_old=100, epochs=1, batch=100)
    # training traces at k=0 and k=5, full retraining, and inference of base, branch and full networks
    assert labels == ["BlockNet"] * 6
    buf = io.StringIO()
    with progress("compare smallcnn", stream=buf, enabled=True):
        energymodel.sharing_points("smallcnn")
    assert buf.getvalue().startswith("\rcompare smallcnn: 0 traces") and buf.getvalue().endswith("\r")
    assert main(["compare", "smallcnn", "--k", "0,5", "--samples-new", "100", "--samples-old", "100", "--epochs",
                 "1", "--batch", "100"]) == 0
    assert "\r" not in capsys.readouterr().err  # stderr is not a terminal here: no bar
