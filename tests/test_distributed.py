"""DDP through torchrun: two CPU processes (gloo) train with fit() and end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from incremental.train import distributed

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import hashlib
    import sys
    from pathlib import Path

    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from energymodel.models.blocks import BlockNet
    from incremental import distributed
    from incremental.model.branching import GrownNet
    from incremental.train import TrainConfig, fit, fit_branch

    out = Path(sys.argv[1])
    info = distributed.init_from_env()
    assert info.world == 2 and info.backend == "gloo", info


    def net(seed):
        torch.manual_seed(seed)
        block = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())
        return BlockNet([("b0", block(1, 4)), ("b1", block(4, 4))],
                        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)))


    def digest(module):
        h = hashlib.sha256()
        for key, value in module.state_dict().items():
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(50, 1, 8, 8, generator=g), torch.randint(0, 2, (50,), generator=g))
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, progress=True, device="cpu")

    # 1) a full network whose initial weights differ per rank: DDP starts everyone from rank 0's
    base = net(seed=info.rank)
    result = fit(base, data, cfg)
    assert result.world == 2 and result.steps == 4, result  # 25 samples per rank, batches of 8

    # 2) a branch on a frozen trunk, with cached features
    grown = GrownNet(net(seed=0), [0, 1])
    grown.add_branch(1, [2, 3])
    branch_result = fit_branch(grown, 1, data, cfg)
    assert branch_result.cache_mode == "memory", branch_result

    (out / f"hash_{info.rank}.txt").write_text(digest(base) + " " + digest(grown))
    if distributed.is_main():
        torch.save(base.state_dict(), out / "final.pt")
    distributed.barrier()
    distributed.destroy()
    """
)


def test_two_process_ddp_training_ends_with_identical_weights(tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        CUDA_VISIBLE_DEVICES="",  # CPU + gloo even on a GPU machine
        OMP_NUM_THREADS="1",
    )
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
         str(script), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    hashes = [(tmp_path / f"hash_{r}.txt").read_text() for r in (0, 1)]
    assert hashes[0] == hashes[1]
    final = tmp_path / "final.pt"
    assert final.is_file()
    state = torch.load(final, weights_only=True)
    assert "blocks.b0.0.weight" in state


def test_single_process_is_a_no_op(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = distributed.init_from_env()
    assert info == distributed.DistInfo() and not info.distributed and info.is_main
    assert distributed.current().world == 1
    assert distributed.is_main()
    distributed.barrier()  # returns at once
    assert distributed.all_reduce_sum([1.5, 2.0]) == [1.5, 2.0]
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_from_env().world == 1
