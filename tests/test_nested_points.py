"""Sharing points of the models people bring (torchvision layouts written in ``examples/models_people_bring.py``):
nested containers opened, points at the same conv/linear count merged, dotted ``--blocks``, ``torch.fx`` segments
for code between blocks, and the engine growing a MobileNet-style and a transformer model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from example_models import PATH as MODELS  # noqa: E402
from example_models import load as load_models  # noqa: E402

import energymodel
from energymodel.cli import main
from energymodel.errors import UserError
from energymodel.models.chain import block_view

ROOT = Path(__file__).resolve().parents[1]


M = load_models()


def _same_function(model, view, x) -> None:
    model.eval()
    view.eval()
    with torch.no_grad():
        assert torch.allclose(view(x), model(x), rtol=1e-5, atol=1e-6)


def test_mobilenet_v3_one_point_per_stage() -> None:
    model = M.mobilenet_v3_small(num_classes=10)
    pts = energymodel.sharing_points(model, (3, 64, 64))
    assert [p.after for p in pts] == ["input", *(f"features.{i}" for i in range(13))]
    # conv layers per stage of MobileNetV3-Small: stem 1, stage 1 3 (dw, 2 SE convs, project) ... by hand:
    per_stage = [1, 4, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 1]  # exp + dw + project, + 2 for squeeze-excite
    assert [p.layers_shared for p in pts] == [sum(per_stage[:k]) for k in range(14)]
    fractions = [p.fraction for p in pts]
    assert fractions == sorted(set(fractions))  # every point shares more
    view = block_view(model, (3, 64, 64))
    assert all(not isinstance(b, torch.fx.GraphModule) for b in view.blocks)  # modules in a chain, no fx
    _same_function(model, view, torch.randn(2, 3, 64, 64))


def test_resnet18_stem_merged_and_compare_rows_distinct() -> None:
    model = M.resnet18(num_classes=10)
    pts = energymodel.sharing_points(model, (3, 64, 64))
    stages = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert [p.after for p in pts] == ["input", "maxpool", *stages]
    assert [p.layers_shared for p in pts] == [0, 1, 3, 5, 8, 10, 13, 15, 18, 20]
    df = energymodel.compare(model, (3, 32, 32), k=[1, 2, 3], samples_new=64, samples_old=64, epochs=1, batch=32)
    shared = df[df["strategy"] == "partial-sharing"]
    assert shared["fraction"].nunique() == len(shared) == 4  # k = 0 and three distinct points
    assert shared["energy_pj"].nunique() == 4


def test_vit_is_cut_with_fx_between_its_encoder_layers() -> None:
    model = M.vit_tiny(num_classes=10)
    pts = energymodel.sharing_points(model)
    layers = [f"encoder.layers.encoder_layer_{i}" for i in range(3)]
    # the class token and positional embedding run before encoder.dropout: block 0 holds them; encoder.ln adds
    # no conv/linear layer after the last encoder layer, so it stands for that point
    assert [p.after for p in pts] == ["input", "encoder.dropout", *layers, "encoder.ln"]
    view = block_view(model, (3, 32, 32))
    assert all(isinstance(b, torch.fx.GraphModule) for b in view.blocks)
    _same_function(model, view, torch.randn(2, 3, 32, 32))
    # counts of the view equal those of the model
    a = energymodel.profile(model, warn=False).totals
    b = energymodel.profile(view, (3, 32, 32), warn=False).totals
    for key in ("macs_forward", "add_ops", "mult_ops", "params"):
        assert a[key] == b[key], key


def test_dotted_blocks_inside_a_transformer_encoder() -> None:
    model = M.patch_transformer(num_classes=5)
    pts = energymodel.sharing_points(model, blocks=["encoder.layers.0", "encoder.layers.1"])
    assert [p.after for p in pts] == ["input", "encoder.layers.0", "encoder.layers.1"]
    view = block_view(model, (1, 28, 28), blocks=["encoder.layers.1"])
    _same_function(model, view, torch.randn(3, 1, 28, 28))
    assert [p.after for p in energymodel.sharing_points(model, blocks=["encoder"])] == ["input", "encoder"]
    with pytest.raises(UserError, match=r"cannot be cut after 'encoder.layers.0.linear1'.*modules it can be cut "
                       r"after: patch, encoder.layers.0.norm1, encoder.layers.0, encoder.layers.1.norm1, encoder.layers.1, "
                       r"encoder.layers.2.norm1, encoder, norm, fc$"):
        energymodel.sharing_points(model, blocks=["encoder.layers.0.linear1"])


def test_cli_points_and_refusal(capsys) -> None:
    assert main(["points", f"{MODELS}:mobilenet_v3_small", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["data"]
    assert [r["after"] for r in rows][1:4] == ["features.0", "features.1", "features.2"]
    assert main(["points", f"{MODELS}:patch_transformer", "--blocks", "encoder.layers.0,nothing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nothing' names no module; modules it can be cut after: patch," in err


@pytest.mark.parametrize("factory,blocks", [("mobilenet_v3_tiny", None),
                                            ("patch_transformer", "patch,encoder.layers.0,encoder.layers.1")])
def test_engine_grows_models_people_bring(factory, blocks, tmp_path) -> None:
    from test_run import tiny_config, write_fashion_idx

    from incremental.run.config import RunConfig
    from incremental.run.runner import load_results, run

    root = write_fashion_idx(tmp_path / "idx", train=8, test=4)
    cfg = tiny_config(root, tmp_path / "out", model=f"{MODELS}:{factory}", share=2, strategies=["partial-sharing"],
                      seeds=[0])
    cfg["base"]["epochs"] = cfg["branch"]["epochs"] = 1
    cfg["output_calibration"] = {"enabled": False}
    cfg["agnostic"] = {"method": "raw-logits", "methods": ["raw-logits"]}
    if blocks:
        cfg["blocks"] = blocks.split(",")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions on a shared 2-core box: one thread is ~10x faster
    try:
        results = load_results(run(RunConfig.from_dict(cfg)))
    finally:
        torch.set_num_threads(threads)
    row = next(r for r in results["report"]["strategies"] if r["strategy"] == "partial-sharing")
    assert row["share"] == 2 and 0 < row["fraction"] < 1 and row["energy_pj"] > 0
    assert results["config"]["blocks"] == (blocks.split(",") if blocks else None)
