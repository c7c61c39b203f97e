"""Run every benchmark with small default settings (a few minutes on 2 CPU cores) and collect the figures.

Writes ``out/bench/`` (or ``--out``):

- ``measured.json``: :mod:`bench_train` (measured vs modelled training cost per sharing point, the report's
  "measured" section format: ``python -m energymodel report RECIPE.toml --measured out/bench/measured.json``, or a recipe's
  ``[measured]``);
- ``memory.json``: :mod:`bench_memory` (peak memory, deep sharing point with cached features vs k = 0);
- ``step-memory.json``: :mod:`bench_step_memory` (the modelled peak of a training step vs PyTorch's memory
  profiler, every model and sharing point; PASS/MISS per point);
- ``profile.json``: :mod:`bench_profile` (``energymodel.profile`` vs fvcore);
- ``sweep.json``: :mod:`bench_sweep` (its printed figures, which it does not write itself);
- ``summary.json``: per benchmark the command, exit status, seconds and the last lines it printed.

Exit status 0 when every benchmark exited 0 (a benchmark exits non-zero when it crashed, or -- bench_sweep,
bench_profile -- when its own target was missed); bench_train's targets are PASS/MISS in its output and JSON.

    python benchmarks/run_all.py                 # make bench
    python benchmarks/run_all.py --quick         # seconds: tiny settings, a smoke test of the harness
    python benchmarks/run_all.py --only train,memory
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from energymodel.atomic import write_text  # noqa: E402

HERE = Path(__file__).resolve().parent
NAMES = ("train", "memory", "step-memory", "profile", "sweep")


def commands(out: Path, quick: bool) -> dict[str, list[str]]:
    py = sys.executable
    train = ["--out", str(out / "measured.json")]
    memory = ["--json", str(out / "memory.json")]
    step_memory = ["--json", str(out / "step-memory.json")]
    profile = ["--json", str(out / "profile.json")]
    sweep: list[str] = []
    if quick:
        train += ["--samples", "256", "--batch", "64", "--epochs", "2", "--repeats", "1", "--shares", "0,2,4"]
        memory += ["--samples", "256", "--batch", "64"]
        step_memory += ["--quick"]
        profile += ["--model", "smallcnn", "--repeats", "3", "--warmup", "1"]
        sweep += ["--model", "cifar_resnet20", "--classes", "10", "--points", "2000", "--subset", "3", "--repeat", "1"]
    else:
        profile += ["--repeats", "5", "--warmup", "1"]
    return {
        "train": [py, str(HERE / "bench_train.py"), *train],
        "memory": [py, str(HERE / "bench_memory.py"), *memory],
        "step-memory": [py, str(HERE / "bench_step_memory.py"), *step_memory],
        "profile": [py, str(HERE / "bench_profile.py"), *profile],
        "sweep": [py, str(HERE / "bench_sweep.py"), *sweep],
    }


def run(name: str, cmd: list[str]) -> dict:
    """Run one benchmark, echoing its output as it comes; return its summary."""
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line.rstrip("\n"))
    rc = proc.wait()
    seconds = time.perf_counter() - t0
    print(f"== {name}: exit {rc} after {seconds:.1f} s\n", flush=True)
    return {"command": cmd[1:], "returncode": rc, "seconds": seconds, "output": lines}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/bench", help="folder for the JSON files")
    ap.add_argument("--quick", action="store_true", help="tiny settings (seconds): checks the harness only")
    ap.add_argument("--only", default=",".join(NAMES), help=f"comma-separated subset of {','.join(NAMES)}")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in NAMES]
    if bad:
        ap.error(f"unknown benchmark(s) {bad}; choose from {', '.join(NAMES)}")
    out = Path(args.out)
    if not out.is_absolute():
        out = Path.cwd() / out
    out.mkdir(parents=True, exist_ok=True)
    cmds = commands(out, args.quick)
    summary: dict[str, dict] = {}
    for name in only:
        res = run(name, cmds[name])
        if name == "sweep":  # bench_sweep prints its figures and writes no file
            write_text(out / "sweep.json", json.dumps({"benchmark": "bench_sweep", **res}, indent=2) + "\n")
        summary[name] = {**res, "output": res["output"][-25:]}
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    failed = [n for n, r in summary.items() if r["returncode"] != 0]
    for n, r in summary.items():
        print(f"{n:<8} exit {r['returncode']}  {r['seconds']:6.1f} s")
    print(f"wrote {out}/" + (f"; non-zero exit: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
