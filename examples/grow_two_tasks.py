"""Grow a small network by two tasks with the Python API, then write an HTML report.

scikit-learn's 8x8 digits (or, with ``--data synthetic`` or without scikit-learn, class-dependent blobs)
arrive as three tasks: digits 0-3 train the base network, then 4-6 and 7-9 each get a branch grown by
clone-and-branch at the sharing point the sharing-point search picks. The baselines learn the same tasks;
everything is costed with energymodel. Seconds on a laptop CPU::

    python examples/grow_two_tasks.py                  # out/grow-two-tasks/{results.json,report.html}
    python examples/grow_two_tasks.py --tiny           # a smaller setting (for a smoke test)
    python examples/grow_two_tasks.py --data synthetic --out /tmp/grow

At the end the grown network is loaded back from its checkpoint and used for task-agnostic prediction.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from energymodel.errors import UserError
from energymodel.models.blocks import BlockNet
from incremental.cli import setup_logging, write_html_report
from incremental.data import ImageArrays, TensorImageDataset, dataset_stats
from incremental.data.arrays import per_channel_mean_std
from incremental.model.checkpoint import load_checkpoint
from incremental.model.single import rebuild_predictor
from incremental.run.config import RunConfig
from incremental.run.runner import format_summary, load_results, run


def tiny_cnn(num_classes: int = 10) -> BlockNet:
    """Four blocks for 1 x 8 x 8 images: conv16, conv32 (stride 2), conv32, fc64; head Linear(64, classes)."""

    def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU())

    blocks = [
        ("conv1", conv(1, 16)),
        ("conv2", conv(16, 32, stride=2)),
        ("conv3", conv(32, 32)),
        ("fc1", nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU())),
    ]
    return BlockNet(blocks, nn.Sequential(OrderedDict(fc=nn.Linear(64, num_classes))))


def synthetic_digits(per_class_train: int = 120, per_class_test: int = 40, seed: int = 0) -> tuple[ImageArrays, ImageArrays]:
    """Ten classes of noisy 8x8 blobs (one fixed random prototype per class), as uint8 image arrays."""
    rng = np.random.default_rng(seed)
    protos = rng.uniform(0, 255, size=(10, 1, 8, 8))

    def draw(n: int) -> ImageArrays:
        images = np.concatenate([np.clip(p + rng.normal(0, 60, size=(n, 1, 8, 8)), 0, 255) for p in protos])
        labels = np.repeat(np.arange(10), n)
        return ImageArrays(images.astype(np.uint8), labels, [str(c) for c in range(10)], "synthetic blobs")

    return draw(per_class_train), draw(per_class_test)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/grow-two-tasks", help="run directory")
    parser.add_argument("--data", choices=("digits", "synthetic"), default="digits")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the base and of every branch")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (several: mean ± std)")
    parser.add_argument("--tiny", action="store_true", help="30 training images per class, 2 epochs")
    parser.add_argument("--force", action="store_true", help="recompute a finished run directory")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.quiet)

    data = None
    if args.data == "synthetic":
        data = synthetic_digits()
    else:
        try:
            import sklearn  # noqa: F401
        except ImportError:
            logging.getLogger("incremental").warning("scikit-learn is not installed: using synthetic digits")
            data = synthetic_digits()
    settings = {
        "name": "grow-two-tasks",
        "dataset": "digits",  # ignored when `data` is given
        "model": f"{Path(__file__).resolve()}:tiny_cnn",  # resolvable from anywhere (the report needs it)
        "tasks": "4+3+3",
        "seeds": [int(s) for s in args.seeds.split(",") if s.strip()],
        "out": args.out,
        "progress": not args.quiet,
        "base": {"epochs": args.epochs, "batch": 32, "lr": 0.05},
        "branch": {"epochs": args.epochs, "batch": 32, "lr": 0.05},
        "search": {"tolerance": 0.03, "subset_per_class": None, "epochs": args.epochs},
        "output_calibration": {"holdout_fraction": 0.15},
    }
    if args.tiny:
        settings.update(name="grow-two-tasks-tiny", train_per_class=30, test_per_class=15)
        for section in ("base", "branch", "search"):
            settings[section]["epochs"] = 2
        # 30 images a class: a 256-wide random expansion for the analytic heads (the default 2048 solves
        # 2048 x 2048 systems per task and strategy, most of a smoke test's minutes)
        settings["agnostic"] = {"expansion": 256}
    cfg = RunConfig.from_dict(settings, source="grow_two_tasks.py")
    try:
        folder = run(cfg, force=args.force, data=data)
        results = load_results(folder)
        report = write_html_report(results, folder / "report.html")
    except UserError as exc:
        print(f"grow_two_tasks.py: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(format_summary(results))

    # The grown network is an ordinary checkpoint: rebuild it and predict without knowing the task.
    seed = cfg.seeds[0]
    ck = load_checkpoint(folder / f"seed-{seed}" / "checkpoints" / "partial-sharing-task2.pt")
    grown = rebuild_predictor(ck["structure"], tiny_cnn)
    grown.load_state_dict(ck["state_dict"])
    grown.eval()
    test = data[1] if data is not None else None
    if test is None:
        from incremental.data import load_dataset

        test = load_dataset("digits", split="test")
    mean, std = per_channel_mean_std(data[0]) if data is not None else dataset_stats("digits")
    x = torch.stack([TensorImageDataset(test, mean, std)[i][0] for i in range(0, len(test), max(1, len(test) // 8))])
    labels = test.labels[:: max(1, len(test) // 8)][: len(x)]
    pred = grown.predict_agnostic(x)
    print(f"grown network: {grown.tasks} tasks, sharing points {[b.share for b in grown.branches]}; "
          f"task-agnostic predictions {pred.tolist()} for labels {labels.tolist()}")
    print(f"report: {report.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
