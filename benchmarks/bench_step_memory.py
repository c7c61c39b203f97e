"""The peak memory of one training step: modelled (``energymodel.count.footprint``) vs PyTorch's memory profiler.

For every model and sharing point ``k`` (blocks ``[0, k)`` frozen, evaluation mode, no gradients: a shared
prefix), the modelled peak of a training step beside the one measured on this machine's CPU by
:func:`energymodel.referee.memory.measure_step_memory` (a real step after a warm-up step, replayed from
``torch.profiler``'s memory timeline). Target: every point within ±10 % (PASS / MISS per point, never adjusted;
every point is printed and written, the misses too).

    python benchmarks/bench_step_memory.py                         # the zoo, a MobileNet-style, transformers
    python benchmarks/bench_step_memory.py --quick                 # three small models (~1 min)
    python benchmarks/bench_step_memory.py --json benchmarks/results/step-memory.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 2**20
TOLERANCE = 0.10


def _examples():
    spec = importlib.util.spec_from_file_location("models_people_bring", ROOT / "examples" / "models_people_bring.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def cases(quick: bool) -> list[dict]:
    """(name, factory, input, batch, optimizer, sharing points) of every measured configuration."""
    import torch

    from energymodel.models.chain import block_view
    from energymodel.models.zoo import build

    m = _examples()
    ids = torch.zeros(1, 32, dtype=torch.int64)
    every = [
        ("smallcnn", lambda: build("smallcnn"), (1, 28, 28), 64, "momentum", [0, 2, 4]),
        ("smallcnn", lambda: build("smallcnn"), (1, 28, 28), 64, "adam", [0]),
        ("cifar_resnet20", lambda: build("cifar_resnet20"), (3, 32, 32), 32, "momentum", [0, 5, 10]),
        ("cifar_resnet18", lambda: build("cifar_resnet18"), (3, 32, 32), 16, "momentum", [0, 4, 8]),
        ("cifar_vgg16", lambda: build("cifar_vgg16"), (3, 32, 32), 16, "sgd", [0, 7]),
        ("resnet18 (torchvision layout)", lambda: block_view(m.resnet18(10), (3, 224, 224)), (3, 224, 224), 4,
         "momentum", [0, 5]),
        ("mobilenet_v3_small (torchvision layout)", lambda: block_view(m.mobilenet_v3_small(10), (3, 224, 224)),
         (3, 224, 224), 4, "momentum", [0, 7]),
        ("mobilenet_v3_mnist", lambda: block_view(m.mobilenet_v3_mnist(), (1, 28, 28)), (1, 28, 28), 32,
         "momentum", [0, 6, 12]),
        ("patch_transformer", lambda: block_view(m.patch_transformer(), (1, 28, 28)), (1, 28, 28), 32, "adam",
         [0, 2, 4]),
        ("vit_tiny (torchvision layout)", lambda: block_view(m.vit_tiny(), (3, 32, 32)), (3, 32, 32), 16,
         "momentum", [0, 3]),
        ("text_transformer (token ids)", lambda: block_view(m.text_transformer(), None, inputs=ids), None, 16,
         "adam", [0, 1]),
    ]
    if quick:
        every = [c for c in every if c[0] in ("smallcnn", "mobilenet_v3_mnist", "patch_transformer")][:4]
    return [{"name": n, "factory": f, "input": s, "batch": b, "optimizer": o, "points": p, "inputs": ids}
            for n, f, s, b, o, p in every]


def run_case(case: dict) -> list[dict]:
    import torch

    from energymodel.analysis.points import block_prefixes
    from energymodel.count.footprint import footprint
    from energymodel.referee.memory import measure_step_memory

    rows = []
    for k in case["points"]:
        torch.manual_seed(0)
        model = case["factory"]()
        frozen = block_prefixes(model)[:k]
        spec = {"inputs": case["inputs"]} if case["input"] is None else {}
        t0 = time.perf_counter()
        fp = footprint(model, case["input"], batch=case["batch"], frozen=frozen, optimizer=case["optimizer"],
                       weight_decay=True, **spec)
        t1 = time.perf_counter()
        measured = measure_step_memory(model, case["input"], batch=case["batch"], frozen=frozen,
                                       optimizer=case["optimizer"], weight_decay=5e-4, **spec)
        t2 = time.perf_counter()
        ratio = fp.peak / measured["peak_bytes"]
        rows.append({
            "model": case["name"], "input": list(case["input"]) if case["input"] else "32:int64",
            "batch": case["batch"], "optimizer": case["optimizer"], "weight_decay": 5e-4, "k": k,
            "frozen": frozen, "modelled_peak_bytes": fp.peak, "measured_peak_bytes": measured["peak_bytes"],
            "ratio_modelled_to_measured": ratio, "verdict": "PASS" if abs(ratio - 1) <= TOLERANCE else "MISS",
            "modelled_phase": fp.phase, "modelled_resident_bytes": fp.resident,
            "measured_start_bytes": measured["start_bytes"], "modelled_saved_bytes": fp.saved,
            "modelled_gradients_bytes": fp.gradients, "model_seconds": t1 - t0, "measure_seconds": t2 - t1,
        })
        r = rows[-1]
        print(f"{r['model'][:38]:38} k={k:<2} B={r['batch']:<3} {r['optimizer']:8} modelled "
              f"{fp.peak / MIB:9.3f} MiB ({fp.phase:8.8}) measured {measured['peak_bytes'] / MIB:9.3f} MiB  "
              f"ratio {ratio:.3f} {r['verdict']}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="three small models only")
    ap.add_argument("--json", default=None, help="also write every point here")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)

    import torch

    from benchmarks.common import machine
    from energymodel.atomic import write_text

    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# the peak of one training step, modelled vs measured (PyTorch's memory profiler, CPU); "
          f"target ±{TOLERANCE:.0%} per point\n# machine: {machine()}")
    start = time.perf_counter()
    rows = [r for case in cases(args.quick) for r in run_case(case)]
    passed = sum(r["verdict"] == "PASS" for r in rows)
    ratios = [r["ratio_modelled_to_measured"] for r in rows]
    print(f"{passed} of {len(rows)} points within ±{TOLERANCE:.0%}; modelled / measured {min(ratios):.3f} .. "
          f"{max(ratios):.3f}; {time.perf_counter() - start:.0f} s")
    if args.json:
        out = {"benchmark": "bench_step_memory", "machine": machine(), "command": " ".join(sys.argv),
               "tolerance": TOLERANCE, "passed": passed, "points": len(rows), "rows": rows}
        print(f"wrote {write_text(args.json, json.dumps(out, indent=2) + chr(10))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
