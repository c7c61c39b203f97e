"""The ``energymodel`` command line: the JSON contract, model specs, one-line errors with exit 2, atomic output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from energymodel.atomic import atomic_path, write_text
from energymodel.cli import main
from energymodel.errors import UserError

ROOT = Path(__file__).resolve().parent.parent

CONTRACT = ["name", "kind", "trainable", "macs_forward", "macs_backward_input", "macs_backward_weight", "params",
            "weight_accesses", "activation_accesses", "storage_bytes", "energy_pj"]
NUMERIC = CONTRACT[3:]

USER_MODEL = textwrap.dedent(
    """
    from collections import OrderedDict

    from torch import nn


    def tiny(num_classes=3):
        blocks = [("conv", nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())),
                  ("pool", nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()))]
        return nn.Sequential(OrderedDict([*blocks, ("fc", nn.Linear(16, num_classes))]))


    def fixed():
        # needs inputs of exactly 1x6x6: anything else fails in the Linear
        return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))


    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)


    def plain():
        # neither an nn.Sequential nor blocks + head: no sharing points
        return Plain()


    def broken():
        raise RuntimeError("no weights here")


    NOT_CALLABLE = 3
    """
)


@pytest.fixture()
def user_model(tmp_path: Path) -> Path:
    path = tmp_path / "usermodels.py"
    path.write_text(USER_MODEL, encoding="utf-8")
    return path


def data(text: str):
    """The ``data`` of a JSON envelope (checking the envelope)."""
    doc = json.loads(text)
    assert doc["tool"] == "energymodel" and set(doc) == {"tool", "version", "command", "model", "data"}
    return doc["data"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("energymodel: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_profile_json_contract(capsys) -> None:
    rc, out, err = run(["profile", "smallcnn", "--format", "json", "--batch", "2"], capsys)
    assert rc == 0, err
    doc = data(out)
    assert doc["layers"] and doc["settings"]["batch"] == 2 and doc["unmodelled"] == []
    for layer in doc["layers"]:
        assert list(layer)[: len(CONTRACT)] == CONTRACT
        assert isinstance(layer["name"], str) and isinstance(layer["trainable"], bool)
        for k in NUMERIC:
            assert isinstance(layer[k], (int, float)) and layer[k] >= 0, k
    totals = doc["totals"]
    for k in NUMERIC:
        assert isinstance(totals[k], (int, float)), k
    for k in ("macs_forward", "weight_accesses", "activation_accesses", "storage_bytes"):
        assert totals[k] == pytest.approx(sum(layer[k] for layer in doc["layers"]))
    assert totals["energy_pj"] == pytest.approx(sum(layer["energy_pj"] for layer in doc["layers"]), rel=1e-9)
    assert totals["params"] == 468_010
    assert totals["macs_forward"] == 2 * 18_691_840  # fvcore's conv + linear for smallcnn, twice


def test_profile_training_json_and_csv(capsys, tmp_path: Path) -> None:
    out_json = tmp_path / "p.json"
    rc, _, err = run(["profile", "cifar_resnet20", "--mode", "training", "--frozen", "blocks.stem",
                      "--optimizer", "adam", "--format", "json", "-o", str(out_json)], capsys)
    assert rc == 0 and f"wrote {out_json}" in err
    doc = data(out_json.read_text())
    stem = [la for la in doc["layers"] if la["name"].startswith("blocks.stem.")]
    assert stem and not any(la["trainable"] for la in stem)
    assert doc["totals"]["macs_backward_weight"] > 0 and doc["settings"]["optimizer"] == "adam"
    rc, out, _ = run(["profile", "smallcnn", "--format", "csv"], capsys)
    assert rc == 0 and out.splitlines()[0].split(",")[: len(CONTRACT)] == CONTRACT
    rc, out, _ = run(["profile", "smallcnn"], capsys)
    assert rc == 0 and "\n    conv " in out  # blocks > conv1 > conv, indented as a tree
    assert out.startswith("model smallcnn (BlockNet) · input 1x28x28 · batch 1 · mode inference · table 45nm "
                          "(fp32, 32-bit words)\n")
    # 468,010 params, 18,691,840 MACs; rows and total per batch, the per-sample figures said once
    assert "total for the batch of 1: params 468 k · MACs 18.69 M · energy" in out
    assert "(per sample: MACs 18.69 M, energy" in out and "trainable" not in out  # nothing trains in inference


def test_model_from_file_and_from_package(capsys, user_model: Path, monkeypatch) -> None:
    rc, out, err = run(["profile", f"{user_model}:tiny", "--input", "1,8,8", "--format", "json"], capsys)
    assert rc == 0, err
    doc = data(out)
    assert [la["name"] for la in doc["layers"]][:2] == ["conv.0", "conv.1"]
    assert doc["totals"]["macs_forward"] == 4 * 64 * 9 + 16 * 3
    rc, out, err = run(["profile", f"{user_model}:tiny", "--input", "1,8,8", "--classes", "7", "--format", "json"],
                       capsys)
    assert rc == 0 and data(out)["totals"]["macs_forward"] == 4 * 64 * 9 + 16 * 7
    monkeypatch.syspath_prepend(str(user_model.parent))
    rc, out, err = run(["profile", "usermodels:tiny", "--input", "1,8,8", "--format", "json"], capsys)
    assert rc == 0, err
    assert data(out)["totals"]["params"] == 40 + 51
    rc, out, err = run(["profile", "energymodel.models.zoo.small:smallcnn", "--input", "1,28,28", "--format", "json"], capsys)
    assert rc == 0 and data(out)["totals"]["params"] == 468_010
    rc, out, err = run(["points", f"{user_model}:tiny", "--input", "1,8,8", "--format", "json"], capsys)
    assert rc == 0 and [p["k"] for p in data(out)] == [0, 1, 2]


@pytest.mark.parametrize("argv,needles", [
    (["profile", "no_such_model"], ["unknown model 'no_such_model'"]),
    (["profile", "energymodel.models.zoo:"], ["malformed model spec"]),
    (["profile", ":smallcnn"], ["malformed model spec"]),
    (["profile", "no_such_package_xyz:f"], ["cannot import module 'no_such_package_xyz'"]),
    (["profile", "energymodel.models.zoo.small:nothing"], ["no attribute 'nothing'"]),
    (["profile", "/no/such/file.py:f"], ["model file not found"]),
    (["profile", "smallcnn", "--input", "1,1,1"], ["rejects input shape 1,1,1"]),
    (["profile", "smallcnn", "--input", "3,28,28"], ["rejects input shape 3,28,28"]),
    (["profile", "smallcnn", "--input", "a,b"], ["bad input shape"]),
    (["profile", "smallcnn", "--input", "0,28,28"], ["bad input shape"]),
    (["profile", "smallcnn", "--table", "no_such_table"], ["unknown energy table 'no_such_table'"]),
    (["profile", "smallcnn", "--frozen", "blocks.nothing"], ["--frozen 'blocks.nothing' names no module"]),
    (["profile", "smallcnn", "--batch", "0"], ["batch must be >= 1"]),
    (["compare", "smallcnn", "--share", "x"], ["bad --share entry 'x'"]),
    (["compare", "smallcnn", "--share", "1.5"], ["sharing fraction 1.5 must lie in [0, 1]"]),
    (["compare", "smallcnn", "--k", "x"], ["bad --k entry 'x'"]),
    (["compare", "smallcnn", "--k", "6"], ["sharing point k=6 out of range 0..5"]),
    (["compare", "smallcnn", "--fraction", "1.5"], ["sharing fraction 1.5 must lie in [0, 1]"]),
    (["profile", "smallcnn", "--energy-table", "no_such_table"], ["unknown energy table 'no_such_table'"]),
    (["compare", "smallcnn", "--new-classes", "0"], ["new_classes must be a positive integer, got 0"]),
    (["compare", "smallcnn", "--new-classes", "-3"], ["new_classes must be a positive integer, got -3"]),
    (["compare", "smallcnn", "--epochs", "0"], ["must be >= 1"]),
    (["tables", "no_such_table"], ["unknown energy table"]),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, needles) -> None:
    rc, out, err = run(argv, capsys)
    assert_one_line_error(rc, err, *needles)
    assert out == ""


def test_bad_user_models(capsys, user_model: Path) -> None:
    rc, _, err = run(["profile", f"{user_model}:fixed", "--input", "1,7,7"], capsys)
    assert_one_line_error(rc, err, "rejects input shape 1,7,7")
    rc, _, err = run(["profile", f"{user_model}:fixed", "--input", "1,6,6"], capsys)
    assert rc == 0, err
    rc, _, err = run(["profile", f"{user_model}:broken", "--input", "1,6,6"], capsys)
    assert_one_line_error(rc, err, "factory raised RuntimeError: no weights here")
    rc, _, err = run(["profile", f"{user_model}:NOT_CALLABLE", "--input", "1,6,6"], capsys)
    assert_one_line_error(rc, err, "is not callable")
    rc, _, err = run(["profile", f"{user_model}:tiny"], capsys)
    assert_one_line_error(rc, err, "give --input")
    rc, _, err = run(["profile", f"{user_model}:plain", "--input", "4"], capsys)
    assert rc == 0, err
    for cmd in ("compare", "points"):
        rc, _, err = run([cmd, f"{user_model}:plain", "--input", "4"], capsys)
        assert_one_line_error(rc, err, "no sharing points")


def test_bad_table_file(capsys, tmp_path: Path) -> None:
    text = (ROOT / "energymodel" / "price" / "tables" / "45nm.toml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("pj = 640.0", "pj = -640.0"), encoding="utf-8")
    rc, out, err = run(["tables", str(bad)], capsys)
    assert_one_line_error(rc, err, "memory.dram.pj", str(bad))
    rc, out, err = run(["profile", "smallcnn", "--table", str(bad)], capsys)
    assert_one_line_error(rc, err, "memory.dram.pj")
    rc, out, err = run(["tables", str(ROOT / "energymodel" / "price" / "tables" / "45nm.toml")], capsys)
    assert rc == 0 and "640 pJ per 32-bit access" in out
    rc, out, err = run(["tables", "--format", "json"], capsys)
    assert rc == 0 and {t["name"] for t in data(out)} >= {"45nm", "45nm-fp16", "45nm-int8"}


def test_bad_arguments_exit_2_with_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["profile", "smallcnn", "--mode", "sideways"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid choice" in err


def test_unwritable_output(capsys, tmp_path: Path) -> None:
    regular = tmp_path / "a_file"
    regular.write_text("x")
    target = regular / "out.json"  # below a regular file: cannot be created
    rc, out, err = run(["profile", "smallcnn", "--format", "json", "-o", str(target)], capsys)
    assert_one_line_error(rc, err, "cannot write", str(target))
    assert regular.read_text() == "x"


def test_output_is_atomic(capsys, tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    # a failing run leaves the old file as it was and no temporary file behind
    rc, _, err = run(["profile", "smallcnn", "--input", "1,1,1", "--format", "json", "-o", str(target)], capsys)
    assert rc == 2
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    # a successful run replaces it whole
    rc, _, _ = run(["profile", "smallcnn", "--format", "json", "-o", str(target)], capsys)
    assert rc == 0 and data(target.read_text())["layers"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    # failing half-way through a write: the target is untouched, the temporary file removed
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("disk full")
    assert data(target.read_text())["layers"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    with pytest.raises(UserError, match="cannot write"):
        write_text(tmp_path / "out.json" / "x", "y")


def test_subprocess_entry_point(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, "-m", "energymodel", "profile", "smallcnn", "--format", "json"],
                        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert data(ok.stdout)["totals"]["macs_forward"] == 18_691_840
    bad = subprocess.run([sys.executable, "-m", "energymodel", "profile", "smallcnn", "--input", "1,1,1"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def test_recipe_k_and_fraction(tmp_path: Path) -> None:
    from energymodel import defaults
    from energymodel.report.recipe import parse_recipe

    base = {"report": {"title": "t"}, "model": {"name": "smallcnn"}}
    r = parse_recipe({**base, "train": {"k": [0, 3], "fraction": [1, 0.5]}}, tmp_path)
    assert r.share == [0, 3, 1.0, 0.5] and isinstance(r.share[2], float)  # a fraction 1 is 1.0, not index 1
    r = parse_recipe(base, tmp_path)
    assert (r.epochs, r.optimizer, r.batch, r.table) == (5, "momentum", 128, "45nm")
    assert (r.epochs, r.optimizer) == (defaults.EPOCHS, defaults.OPTIMIZER)
    with pytest.raises(UserError, match="fraction must be a list of fractions in"):
        parse_recipe({**base, "train": {"fraction": [1.5]}}, tmp_path)
    with pytest.raises(UserError, match="k must be a list of sharing point indices"):
        parse_recipe({**base, "train": {"k": [0.5]}}, tmp_path)


def test_csv_counts_are_integers(capsys) -> None:
    rc, out, _ = run(["profile", "smallcnn", "--format", "csv"], capsys)
    assert rc == 0
    header = out.splitlines()[0].split(",")
    conv = next(ln.split(",") for ln in out.splitlines() if ln.startswith("blocks.conv2.conv,"))
    assert conv[header.index("macs_forward")] == str(32 * 32 * 9 * 28 * 28)  # not 7225344.0
    assert conv[header.index("params")] == str(32 * 32 * 9)
    assert "." in conv[header.index("energy_pj")] or "e" in conv[header.index("energy_pj")]


def test_sweep_table_says_when_it_is_truncated(capsys) -> None:
    rc, out, err = run(["sweep", "smallcnn", "--vary", "dram=100:2000:40", "--k", "0,5", "--samples-new", "100",
                        "--samples-old", "100", "--epochs", "1", "--batch", "100"], capsys)
    assert rc == 0, err
    assert "... 20 of 80 rows not shown (all rows: --format csv or json) ..." in out  # 60 of 80 rows shown
    assert "40 grid points x 2 sharing points = 80 rows" in out
    assert "units: dram in pJ per access" in out
    rows = [ln for ln in out.split("break-even")[0].splitlines() if ln.strip()[:1].isdigit()]
    assert len(rows) == 60 + 1  # the shown rows and the "N grid points" line
