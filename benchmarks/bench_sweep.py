"""Benchmark: a hardware energy sweep evaluated as array arithmetic vs re-pricing every table variant.

ResNet-18 at ImageNet shapes, every sharing point. The ledgers (trace + count) are built once; then
``--points`` table variants (default 100,000: DRAM x SRAM x MAC energies, and a second grid that also
varies the on-chip buffer) are evaluated by :meth:`SweepLedgers.evaluate`, and a subset is re-priced
point by point with ``price_ledger(ledger, table.with_values(...))``, in the same run. Prints seconds,
the per-point cost of both and their ratio, and checks both give the same energies.

    python benchmarks/bench_sweep.py                 # the target: 1e5 variants x 10 sharing points < 1 s
    python benchmarks/bench_sweep.py --points 2000 --subset 5 --model cifar_resnet20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energymodel.analysis.sharing import price_ledger  # noqa: E402
from energymodel.analysis.sweep import prepare_sweep  # noqa: E402
from energymodel.models.zoo import build, get_entry  # noqa: E402


def _grid(points: int, with_buffer: bool) -> dict[str, np.ndarray]:
    """``points`` variants: DRAM x SRAM energies (n x n) x 10 MAC energies or 10 buffer sizes."""
    n = max(1, round((points / 10) ** 0.5))
    m = max(1, points // (n * n))
    grid = {"dram": np.linspace(50, 2000, n), "sram": np.linspace(1, 20, n)}
    if with_buffer:
        grid["buffer_bytes"] = np.geomspace(2**14, 2**28, m)
    else:
        grid["mac"] = np.linspace(0.2, 5, m)
    return grid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--classes", type=int, default=500, help="classes of the base network and of the new task")
    ap.add_argument("--points", type=int, default=100_000, help="table variants per grid")
    ap.add_argument("--subset", type=int, default=20, help="variants re-priced one by one for the comparison")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many evaluations")
    args = ap.parse_args()

    net = build(args.model, num_classes=args.classes)
    shape = get_entry(args.model).input_shape
    t0 = time.perf_counter()
    prepared = prepare_sweep(net, shape, samples_new=5000, samples_old=5000, epochs=10, batch=128,
                             new_classes=args.classes)
    t_build = time.perf_counter() - t0
    n_sh = len(prepared.shares)
    print(f"{args.model} {'x'.join(map(str, shape))}, {n_sh} sharing points; ledgers built once in {t_build:.2f} s")
    prepared.evaluate({"dram": [640.0]})  # warm-up: the access spectra, imports

    ok = True
    for label, with_buffer in (("prices only (dram x sram x mac)", False), ("with buffer size (dram x sram x buffer)", True)):
        grid = _grid(args.points, with_buffer)
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            df = prepared.evaluate(grid)
            best = min(best, time.perf_counter() - t0)
        n_points = df.attrs["grid_points"]
        keys = list(grid)
        rng = np.random.default_rng(0)
        pick = rng.choice(n_points, size=min(args.subset, n_points), replace=False)
        cases = []
        for p in pick:  # rows of grid point p: p * n_sh .. (p + 1) * n_sh - 1
            rows = df.iloc[p * n_sh:(p + 1) * n_sh]
            cases.append(({k: float(rows[k].iloc[0]) for k in keys}, rows["share"].tolist(), rows["energy_pj"].tolist()))
        t0 = time.perf_counter()
        got = []
        for values, shares, _ in cases:
            table = prepared.table.with_values(values)
            got.append([price_ledger(prepared.ledgers[k], table)["energy_pj"] for k in shares])
        t_ref = (time.perf_counter() - t0) / len(pick)  # per grid point, all sharing points
        worst = max(abs(e - x) / e for (_, _, exp), g in zip(cases, got) for x, e in zip(exp, g))
        per_point = best / n_points
        print(f"{label}: {n_points} variants x {n_sh} sharing points = {len(df)} rows in {best:.3f} s "
              f"({per_point * 1e6:.2f} us per variant)")
        print(f"  re-pricing with price_ledger(ledger, table.with_values(...)): {t_ref * 1e3:.1f} ms per variant "
              f"({len(pick)} variants timed) -> {t_ref * n_points:.0f} s for the whole grid; "
              f"speed-up {t_ref / per_point:,.0f}x; max relative difference {worst:.1e}")
        ok &= worst < 1e-9
        if not with_buffer and args.points >= 100_000 and args.model == "resnet18":
            verdict = "met" if best < 1.0 else "NOT met"
            print(f"  target (1e5 variants x all sharing points of ResNet-18 in < 1 s after the ledgers): {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
