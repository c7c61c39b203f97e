"""Time ``energymodel.profile(resnet50, (3, 224, 224))`` against fvcore's ``FlopCountAnalysis(...).total()``.

Both run in the same process on the same model and a batch-1 input, after warm-up; the figure is the
median of ``--repeats`` runs. The target is ``profile / fvcore <= 1.2``: the cost model (which also counts
accesses, storage and energy per layer) should cost about what a bare FLOP counter costs.

    python benchmarks/bench_profile.py [--repeats 7] [--warmup 2] [--model resnet50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from energymodel.analysis.profile import profile  # noqa: E402
from energymodel.models.zoo import build, get_entry  # noqa: E402

TARGET = 1.2


def interleaved_runs(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Run each function ``warmup`` times, then ``repeats`` rounds of one call each, interleaved (so that
    load from other processes hits both alike); returns the per-call seconds of each."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    from fvcore.nn import FlopCountAnalysis

    torch.manual_seed(0)
    shape = get_entry(args.model).input_shape
    model = build(args.model).eval()
    x = torch.zeros(1, *shape)

    def fvcore_total() -> float:
        fa = FlopCountAnalysis(model, x)
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        return fa.total()

    def energymodel_profile() -> object:
        return profile(model, shape)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notes from fvcore's tracer
        runs = interleaved_runs({"fvcore": fvcore_total, "profile": energymodel_profile}, args.repeats, args.warmup)
        flops = fvcore_total()
    fv_runs, em_runs = runs["fvcore"], runs["profile"]
    t_fv, t_em = statistics.median(fv_runs), statistics.median(em_runs)
    prof = profile(model, shape)
    ratio = t_em / t_fv
    print(f"model {args.model} {shape}, batch 1, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"fvcore FlopCountAnalysis.total(): median {t_fv * 1e3:8.1f} ms  ({args.repeats} interleaved runs after {args.warmup} warm-up)")
    print(f"energymodel.profile():            median {t_em * 1e3:8.1f} ms")
    print(f"ratio profile / fvcore:           {ratio:8.2f}  (target <= {TARGET})  {'OK' if ratio <= TARGET else 'ABOVE TARGET'}")
    print(f"results: fvcore total {flops:,.0f} (its conv/linear/BN/pool 'flops'); profile forward MACs "
          f"{prof.totals['macs_forward']:,.0f}, energy {prof.totals['energy_pj'] / 1e6:,.1f} uJ")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model, "input_shape": list(shape), "repeats": args.repeats, "warmup": args.warmup,
            "fvcore_s": t_fv, "profile_s": t_em, "ratio": ratio, "target": TARGET,
            "fvcore_runs_s": fv_runs, "profile_runs_s": em_runs,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
