"""Checkpoints: round trip of a grown network, atomic writes, one-line errors for bad files."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
import torch
from torch import nn

from energymodel.errors import UserError
from energymodel.models.blocks import BlockNet
from incremental.model.branching import GrownNet
from incremental.model.checkpoint import load_checkpoint, save_checkpoint
from incremental.model.single import rebuild_predictor


def tiny_net(num_classes: int, seed: int = 0) -> BlockNet:
    torch.manual_seed(seed)
    return BlockNet(
        [("b0", nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())),
         ("b1", nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()))],
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes)),
    )


def test_round_trip_rebuilds_grown_network(tmp_path) -> None:
    grown = GrownNet(tiny_net(3, seed=1), [0, 1, 2])
    grown.add_branch(1, [3, 4])
    grown.add_branch(2, [5])
    grown.set_calibration(2, 0.5, 1.25)
    opt = torch.optim.SGD(grown.branch(2).module.parameters(), lr=0.1, momentum=0.9)
    grown.branch(2).module(torch.randn(2, 4, 8, 8)).sum().backward()
    opt.step()
    obj = {
        "structure": grown.structure(),
        "state": grown.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "losses": [0.5, float("nan")],
        "note": None,
    }
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", obj)
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file left behind
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["note"] is None and loaded["structure"] == grown.structure()
    assert loaded["losses"][0] == 0.5 and np.isnan(loaded["losses"][1])
    for k, v in grown.state_dict().items():
        assert torch.equal(v, loaded["state"][k]), k
    rebuilt = rebuild_predictor(loaded["structure"], lambda n: tiny_net(n, seed=9))
    assert isinstance(rebuilt, GrownNet)
    rebuilt.load_state_dict(loaded["state"])
    grown.eval()
    rebuilt.eval()
    x = torch.randn(5, 1, 8, 8)
    for a, b in zip(grown.forward_all(x), rebuilt.forward_all(x)):
        assert torch.equal(a, b)
    assert rebuilt.get_calibration(2) == (0.5, 1.25)
    opt2 = torch.optim.SGD(rebuilt.branch(2).module.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])


def test_disallowed_objects_are_refused_before_writing(tmp_path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(TypeError, match="ndarray"):
        save_checkpoint(path, {"epoch": 2, "array": np.zeros(3)})
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(path, {"nested": [1, {"x": object()}]})
    with pytest.raises(TypeError):
        save_checkpoint(path, [1, 2])  # type: ignore[arg-type]
    assert load_checkpoint(path) == {"epoch": 1}  # the good checkpoint survived
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_missing_corrupt_and_non_dict_files_raise_user_error(tmp_path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(UserError, match="nope.pt") as info:
        load_checkpoint(missing)
    assert "\n" not in str(info.value)

    good = tmp_path / "good.pt"
    save_checkpoint(good, {"w": torch.arange(1000.0)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint at all" * 10)
    for bad in (truncated, garbage):
        with pytest.raises(UserError, match=bad.name) as info:
            load_checkpoint(bad)
        assert "\n" not in str(info.value)

    listed = tmp_path / "list.pt"
    torch.save([1, 2, 3], listed)
    with pytest.raises(UserError, match="not a dict"):
        load_checkpoint(listed)

    pickled = tmp_path / "evil.pt"
    torch.save({"x": fractions.Fraction(1, 3)}, pickled)
    with pytest.raises(UserError, match="evil.pt"):
        load_checkpoint(pickled)  # weights_only refuses arbitrary objects
