"""Peak memory of branch training at a deep sharing point (cached features) vs full fine-tuning (k = 0).

Each configuration runs in a fresh subprocess (``ru_maxrss`` is a lifetime maximum, so processes must not
be shared). The child builds the model and the random data set, records its peak RSS so far (the
baseline: interpreter + torch + data + frozen base), trains a branch with
:func:`incremental.train.loop.fit_branch` and records the peak again; on CUDA also
``torch.cuda.max_memory_allocated`` during training. Printed beside the cost model's prediction
(:attr:`energymodel.analysis.sharing.TrainingCost.training_memory_bytes`: the modelled peak of one training
step, :mod:`energymodel.count.footprint`; ``bench_step_memory.py`` checks it against PyTorch's memory profiler) and the
ratio measured / predicted, where "measured" is the training increment ``peak - baseline`` on the CPU
(the feature cache, which the model does not count as training memory, is listed beside it) and the
CUDA peak on a GPU.

    python benchmarks/bench_memory.py                       # smallcnn, k = 0 vs the deepest conv point
    python benchmarks/bench_memory.py --model cifar_resnet20 --shares 0,3,9 --json out/bench/memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIB = 2**20


def child(args: argparse.Namespace) -> int:
    """One measurement; prints a JSON line."""
    import torch

    from benchmarks.common import NUM_CLASSES, grown_with_branch, parse_shape, random_data
    from energymodel.analysis.sharing import training_cost
    from energymodel.models.zoo import build, get_entry
    from incremental.train.config import TrainConfig, peak_rss_bytes, resolve_device
    from incremental.train.loop import fit_branch

    if args.threads:
        torch.set_num_threads(args.threads)
    shape = parse_shape(args.input) if args.input else get_entry(args.model).input_shape
    cache = "on" if args.share > 0 else "off"
    data = random_data(args.samples, shape, seed=args.seed)
    grown, task = grown_with_branch(args.model, args.share, seed=args.seed)
    device = resolve_device(args.device)
    grown.to(device)
    baseline = peak_rss_bytes()
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=0.01, optimizer=args.optimizer,
                      weight_decay=5e-4, device=args.device, cache_features=cache, progress=False,
                      lr_schedule="none")
    res = fit_branch(grown, task, data, cfg, desc=f"k={args.share}")
    cost = training_cost(build(args.model, num_classes=NUM_CLASSES), shape, share=args.share, samples=args.samples,
                         epochs=args.epochs, batch=args.batch, optimizer=args.optimizer, num_classes=NUM_CLASSES,
                         cache_prefix=cache == "on", weight_decay=True)
    print(json.dumps({
        "share": args.share, "cache": cache, "cache_mode": res.cache_mode, "device": str(device),
        "baseline_rss_bytes": baseline, "peak_rss_bytes": res.peak_rss_bytes,
        "training_rss_bytes": res.peak_rss_bytes - baseline, "peak_cuda_bytes": res.peak_cuda_bytes,
        "feature_cache_bytes": res.feature_bytes, "predicted_training_memory_bytes": cost.training_memory_bytes,
        "trainable_params": res.trainable_params,
    }))
    return 0


def measure(args: argparse.Namespace, share: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--share", str(share), "--model", args.model,
           "--samples", str(args.samples), "--batch", str(args.batch), "--epochs", str(args.epochs),
           "--optimizer", args.optimizer, "--device", args.device, "--threads", str(args.threads),
           "--seed", str(args.seed)]
    if args.input:
        cmd += ["--input", args.input]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child k={share} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smallcnn")
    ap.add_argument("--input", default=None, help="C,H,W (default: the zoo entry's input shape)")
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--optimizer", default="momentum", choices=["sgd", "momentum", "adam"])
    ap.add_argument("--shares", default=None, help="comma-separated sharing points (default: 0 and n-1)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--share", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    import torch

    from benchmarks.common import machine, num_blocks
    from energymodel.atomic import write_text

    if args.threads:
        torch.set_num_threads(args.threads)  # as in the children, for the machine line

    n = num_blocks(args.model)
    shares = [0, max(n - 1, 1)] if args.shares is None else sorted({int(s) for s in args.shares.split(",")})
    print(f"# {args.model}, {args.samples} samples, batch {args.batch}, {args.epochs} epoch(s), {args.optimizer}; "
          f"each configuration in a fresh process")
    print(f"# machine: {machine()}")
    rows = []
    for k in shares:
        r = measure(args, k)
        measured = r["peak_cuda_bytes"] if r["peak_cuda_bytes"] is not None else r["training_rss_bytes"]
        r["measured_training_bytes"] = measured
        r["measured_source"] = "cuda max_memory_allocated" if r["peak_cuda_bytes"] is not None else \
            "ru_maxrss peak - baseline"
        r["ratio_measured_to_predicted"] = measured / r["predicted_training_memory_bytes"]
        rows.append(r)
    base = rows[0]
    for r in rows:
        r["reduction_measured"] = base["measured_training_bytes"] / max(r["measured_training_bytes"], 1)
        r["reduction_predicted"] = base["predicted_training_memory_bytes"] / r["predicted_training_memory_bytes"]
    head = (f"{'k':>3} {'cache':>5} {'base RSS':>10} {'peak RSS':>10} {'train':>9} {'CUDA':>9} {'feat cache':>10} "
            f"{'predicted':>10} {'meas/pred':>9} {'red meas':>8} {'red pred':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        cuda = f"{r['peak_cuda_bytes'] / MIB:7.1f}Mi" if r["peak_cuda_bytes"] is not None else "-"
        print(f"{r['share']:>3} {r['cache']:>5} {r['baseline_rss_bytes'] / MIB:8.1f}Mi {r['peak_rss_bytes'] / MIB:8.1f}Mi "
              f"{r['training_rss_bytes'] / MIB:7.1f}Mi {cuda:>9} {r['feature_cache_bytes'] / MIB:8.1f}Mi "
              f"{r['predicted_training_memory_bytes'] / MIB:8.1f}Mi {r['ratio_measured_to_predicted']:9.2f} "
              f"{r['reduction_measured']:7.2f}x {r['reduction_predicted']:7.2f}x")
    print("(train = peak RSS - baseline: what training added; measured = CUDA peak on a GPU, else train)")
    if args.json:
        out = {"benchmark": "bench_memory", "machine": machine(), "rows": rows,
               "settings": {k: v for k, v in vars(args).items() if k not in ("json", "child", "share")}}
        print(f"wrote {write_text(args.json, json.dumps(out, indent=2) + chr(10))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
