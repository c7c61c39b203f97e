"""CIFAR-10 5+5 with CIFAR ResNet-20 at full size: throughput against a bare PyTorch loop, then the whole run.

Two parts, both on an ImageFolder copy of CIFAR-10 (``--data-root``; the project's benchmark used the JPEG copy
beside the checkout — JPEG re-encodings, expect 2-3 points below the original files):

* ``--throughput``: training images per second of the engine's loop (:func:`incremental.train.loop.fit`, the
  run's data pipeline: uint8 images, per-sample crop + flip, normalisation) against a bare PyTorch loop on the
  same data, model, batch and optimizer (a ``DataLoader`` over the same dataset, ``loss.backward()``,
  ``opt.step()``); the same with channels-last memory format (bare and ours), with one thread fewer or more, and
  with ``--compile`` the bare channels-last loop under ``torch.compile`` (compile time reported). Each figure is
  the median of ``--repeats`` timed epochs of ``--samples`` images after one warm-up epoch, every
  configuration interleaved; the ratio ours / bare is the figure that matters (same machine, same minutes).
* ``--run``: ``incremental run reports/cifar10-resnet20-run.toml`` on the **whole** training set, one seed,
  ``--epochs`` for base and branches, the search, and the oracle at ``--oracle-points``; writes every
  strategy's Task-IL and Class-IL, the search's choice, the oracle, the headline, wall time and images/s.

    python benchmarks/bench_cifar.py --throughput --data-root ../shared/data/cifar10-jpeg
    python benchmarks/bench_cifar.py --run --epochs 15 --data-root ../shared/data/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine  # noqa: E402
from energymodel.atomic import write_text  # noqa: E402
from energymodel.models.zoo import build  # noqa: E402
from incremental.data import TensorImageDataset, cifar_augment, dataset_stats, load_dataset, subsample  # noqa: E402
from incremental.train.config import TrainConfig  # noqa: E402
from incremental.train.loop import fit  # noqa: E402

CONFIG = ROOT / "reports" / "cifar10-resnet20-run.toml"


def _data(args: argparse.Namespace) -> TensorImageDataset:
    train = load_dataset("imagefolder", args.data_root, "train", cache_dir=args.data_cache, progress=False)
    part = subsample(train, args.samples // 10 + 1, seed=0)
    mean, std = dataset_stats("imagefolder", train)
    return TensorImageDataset(part, mean, std, augment=cifar_augment())


def _bare_epoch(model: torch.nn.Module, data, batch: int, channels_last: bool) -> float:
    """One epoch of the plainest training loop PyTorch offers; returns seconds."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x.to(memory_format=fmt)), y.long())
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def _our_epoch(model: torch.nn.Module, data, batch: int, memory_format: str = "contiguous") -> float:
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=0.1, optimizer="momentum", device="cpu", progress=False,
                      lr_schedule="none", seed=0, memory_format=memory_format)
    t0 = time.perf_counter()
    fit(model, data, cfg)
    return time.perf_counter() - t0


def _compiled(data, batch: int, repeats: int) -> dict:
    """``torch.compile`` on the bare channels-last loop: the first epoch (compilation included), then the
    median of ``repeats`` epochs on the same compiled model (a new model would compile again)."""
    torch.manual_seed(0)
    model = torch.compile(build("cifar_resnet20", num_classes=10).to(memory_format=torch.channels_last))
    first = _bare_epoch(model, data, batch, True)
    rest = [_bare_epoch(model, data, batch, True) for _ in range(repeats)]
    return {"first_epoch_seconds": first, "seconds": rest, "images_per_second": len(data) / statistics.median(rest),
            "compile_seconds": first - statistics.median(rest)}


def throughput(args: argparse.Namespace) -> dict:
    data = _data(args)
    n = len(data)
    base_threads = torch.get_num_threads()
    configs = {
        "bare": lambda m: _bare_epoch(m, data, args.batch, False),
        "ours": lambda m: _our_epoch(m, data, args.batch),
        "bare, channels-last": lambda m: _bare_epoch(m.to(memory_format=torch.channels_last), data, args.batch, True),
        "ours, channels-last": lambda m: _our_epoch(m, data, args.batch, "channels_last"),
    }
    times: dict[str, list[float]] = {k: [] for k in configs}
    thread_counts = sorted({max(1, base_threads - 1), base_threads, base_threads + 1})
    thread_times: dict[int, list[float]] = {t: [] for t in thread_counts}
    for rep in range(args.repeats + 1):  # the first round warms up and is dropped
        for name, run in configs.items():
            torch.manual_seed(rep)
            seconds = run(build("cifar_resnet20", num_classes=10))
            if rep:
                times[name].append(seconds)
        for t in thread_counts:
            torch.set_num_threads(t)
            seconds = _bare_epoch(build("cifar_resnet20", num_classes=10), data, args.batch, False)
            if rep:
                thread_times[t].append(seconds)
        torch.set_num_threads(base_threads)
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    compiled = _compiled(data, args.batch, args.repeats) if args.compile else None
    return {"benchmark": "bench_cifar throughput", "machine": machine(), "images": n, "batch": args.batch,
            "repeats": args.repeats, "threads": base_threads, "images_per_second": rate,
            "ours_over_bare": rate["ours"] / rate["bare"],
            "channels_last_over_bare": rate["bare, channels-last"] / rate["bare"],
            "ours_channels_last_over_bare": rate["ours, channels-last"] / rate["bare"],
            "threads_images_per_second": {str(t): n / statistics.median(v) for t, v in thread_times.items()},
            "compiled": compiled, "seconds": times}


def full_run(args: argparse.Namespace) -> dict:
    from incremental.run import load_config, load_results, run

    overrides = {"seeds": "0", "base.epochs": str(args.epochs), "branch.epochs": str(args.epochs),
                 "data_root": args.data_root, "out": str(Path(args.out) / "cifar10-5p5-full"), "progress": "false",
                 "num_workers": "0", "search.oracle": "true" if args.oracle_points else "false",
                 "search.candidates": args.oracle_points or "all"}
    if args.data_cache:
        overrides["data_cache"] = args.data_cache
    cfg = load_config(CONFIG, overrides)
    t0 = time.perf_counter()
    results = load_results(run(cfg, force=not args.reuse))
    wall = time.perf_counter() - t0
    seed = results["per_seed"][0]
    trained = sum(t["samples"] * t["epochs"] for st in seed["strategies"].values() for t in st["tasks"])
    trained += seed["base"]["samples"] * seed["base"]["epochs"]
    summ = results["summary"]["strategies"]
    return {"benchmark": "bench_cifar run", "machine": machine(), "epochs": args.epochs, "wall_seconds": wall,
            "images_trained": trained, "images_per_second": trained / wall,
            "strategies": {n: {"task_il": e["task_aware_accuracy"]["mean"], "class_il": e["task_agnostic_accuracy"]["mean"],
                               "energy_pj": e["energy_pj"]["mean"], "share": e["share"]["values"]}
                           for n, e in summ.items()},
            "chosen": seed["sharing"]["share"], "oracle": seed["sharing"].get("oracle"),
            "headline": results["summary"]["headline"], "sizes": seed["sizes"], "run_dir": overrides["out"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, help="ImageFolder CIFAR-10: DIR/train/<class>/*, DIR/test/...")
    ap.add_argument("--data-cache", default=None)
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--run", action="store_true")
    ap.add_argument("--samples", type=int, default=2560, help="throughput: images per timed epoch")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="throughput: also time torch.compile (needs a C compiler)")
    ap.add_argument("--epochs", type=int, default=15, help="run: epochs of the base network and every branch")
    ap.add_argument("--oracle-points", default="", help="run: candidate points, e.g. 0,4,8,10 (oracle at each)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench"))
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--reuse", action="store_true")
    args = ap.parse_args()
    if args.throughput:
        res = throughput(args)
        write_text(Path(args.results) / "cifar-throughput.json", json.dumps(res, indent=1) + "\n")
        print(json.dumps({k: v for k, v in res.items() if k != "seconds"}, indent=1))
    if args.run:
        res = full_run(args)
        write_text(Path(args.results) / "cifar10-5p5-full.json", json.dumps(res, indent=1, default=str) + "\n")
        print(json.dumps({k: v for k, v in res.items() if k not in ("oracle",)}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
