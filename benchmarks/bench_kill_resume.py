"""Kill anywhere, resume, compare: SIGKILL a tiny run at random moments and check the resumed results.

A *kill sequence* starts a run in a fresh process, SIGKILLs it at a moment drawn from a seeded random
generator, starts it again (perhaps killing it again), and finally lets it finish. Its ``results.json`` is
then compared, **whole**, with the one of an uninterrupted run, leaving out only what measures the process
rather than the experiment (:data:`VOLATILE`: wall-clock times, paths, peak memory, and the epoch a fit was
resumed from). The cost ledger is compared too.

Kill moments are of two kinds, both drawn from the seed:

* ``write:N``: inside the N-th atomic write of the run (its temporary file half written, not yet renamed);
  N is drawn among the writes an uninterrupted run makes, checkpoints included (``write:NAME``: inside the
  first write of the file NAME);
* ``time:T``: T seconds after the run started (anywhere: a training step, a checkpoint, a rename ...).

No hook of the product is involved: the child process wraps ``energymodel.atomic._fsync_file`` (called after
a temporary file is written, before its rename) and starts a timer.

    python benchmarks/bench_kill_resume.py                      # 12 sequences (seeds 0-11), 2 kills each
    python benchmarks/bench_kill_resume.py --sequences 40 --kills 3 --json out/bench/kill.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: keys left out of the comparison: times, paths, and what measures the process rather than the experiment
VOLATILE = ("created", "finished", "run_dir", "cwd", "out", "data_root", "file", "peak_rss_bytes",
            "resumed_from_epoch")

CHILD = r"""
import os, signal, sys, threading, time
config, mode, arg = sys.argv[1], sys.argv[2], sys.argv[3]
from energymodel import atomic
from incremental.run import load_config, run

writes = [0]
plain_fsync = atomic._fsync_file

def fsync(path):
    writes[0] += 1
    name = os.path.basename(path)[1:].rsplit(".", 2)[0]  # .NAME.<pid>-<hex>.tmp
    if mode == "write" and (writes[0] == int(arg) if arg.isdigit() else name == arg):
        size = os.path.getsize(path)
        os.truncate(path, size // 2)  # a write cut in the middle
        print(f"killed inside the write of {name}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    plain_fsync(path)

atomic._fsync_file = fsync
if mode == "time":
    threading.Timer(float(arg), lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
t0 = time.perf_counter()
run(load_config(config))
print(f"writes {writes[0]} seconds {time.perf_counter() - t0:.3f}", flush=True)
os._exit(0)
"""


#: the test suite's smaller run (partial sharing alone, one task-agnostic method): the search, a fit resumed
#: mid-way, a cached branch, the statistics and the ledger, in a few seconds
QUICK = {"strategies": ["partial-sharing"], "agnostic": {"methods": ["routed"]}, "train_per_class": 8}


def tiny_config(data_root: Path, out: Path, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run of a few seconds that still has every kind of phase: the search, a cached branch, the baselines."""
    return {**_TINY(data_root, out), **(changes or {})}


def _TINY(data_root: Path, out: Path) -> dict[str, Any]:  # noqa: N802
    return {
        "name": "kill", "dataset": "fashion-mnist", "data_root": str(data_root), "model": "smallcnn",
        "tasks": "5+5", "device": "cpu", "progress": False, "out": str(out), "eval_batch": 64,
        "train_per_class": 12, "share": "auto",
        "strategies": ["partial-sharing", "feature-extraction", "naive-finetune"],
        "base": {"epochs": 2, "batch": 32, "lr": 0.05},
        "branch": {"epochs": 2, "batch": 32, "lr": 0.05},
        "search": {"subset_per_class": 8, "epochs": 1, "candidates": [0, 2], "tolerance": 0.5,
                        "min_steps": 2, "full_curve": True},
        "output_calibration": {"holdout_fraction": 0.2},
        "agnostic": {"methods": ["routed", "raw-logits"], "expansion": 128},
    }


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    from incremental.run.config import RunConfig

    path.write_text(RunConfig.from_dict(cfg).to_toml())
    return path


def start(config: Path, mode: str, arg: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", CHILD, str(config), mode, arg], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def comparable(obj: Any) -> Any:
    """``obj`` without the :data:`VOLATILE` keys and every key that holds seconds."""
    if isinstance(obj, dict):
        return {k: comparable(v) for k, v in obj.items() if k not in VOLATILE and "seconds" not in k}
    if isinstance(obj, list):
        return [comparable(v) for v in obj]
    return obj


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Dotted paths at which two JSON values differ (leaves)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{where}.{k} (only in {'one' if k in a else 'the other'})")
            else:
                out += differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"[:300]]


@dataclass
class Reference:
    results: dict[str, Any]
    writes: int
    seconds: float


@dataclass
class Sequence:
    seed: int
    moments: list[str] = field(default_factory=list)
    killed: int = 0
    differences: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def identical(self) -> bool:
        return not self.error and not self.differences


def reference(data_root: Path, folder: Path, changes: dict[str, Any] | None = None,
              in_process: bool = False) -> Reference:
    """An uninterrupted run (a fresh process, as every sequence, or this one): its results, writes and seconds."""
    out = folder / "reference"
    config = write_config(folder / "reference.toml", tiny_config(data_root, out, changes))
    if in_process:
        from energymodel import atomic
        from incremental.run import load_config, run

        writes, plain = [0], atomic._fsync_file

        def counting(path: Path) -> None:
            writes[0] += 1
            plain(path)

        atomic._fsync_file = counting
        try:
            t0 = time.perf_counter()
            run(load_config(config))
            seconds = time.perf_counter() - t0
        finally:
            atomic._fsync_file = plain
        return Reference(json.loads((out / "results.json").read_text()), writes[0], seconds)
    proc = start(config, "none", "0")
    if proc.returncode != 0:
        raise RuntimeError(f"the reference run failed: {proc.stderr[-2000:]}")
    words = proc.stdout.split()
    return Reference(json.loads((out / "results.json").read_text()), int(words[1]), float(words[3]))


def draw(rng: random.Random, writes: float, seconds: float, mode: str | None = None) -> tuple[str, str]:
    """A kill moment among ``writes`` atomic writes or ``seconds`` of run time (what is left of the run);
    ``mode`` (``"write"`` or ``"time"``) instead of a coin."""
    if (mode or ("write" if rng.random() < 0.5 else "time")) == "write":
        return "write", str(rng.randint(1, max(1, int(writes))))
    return "time", f"{rng.uniform(0.05, max(0.1, seconds)):.3f}"


def kill_sequence(seed: int, kills: int, ref: Reference, data_root: Path, folder: Path,
                  changes: dict[str, Any] | None = None, modes: list[str] | None = None,
                  finish_in_process: bool = False) -> Sequence:
    """Up to ``kills`` SIGKILLs at seeded random moments (of the kinds ``modes`` when given, in order: ``"write"``,
    ``"time"``, or ``"write:NAME"`` for the write of file NAME), then a run to the end (in this process when
    asked); compared with ``ref``."""
    rng = random.Random(seed)
    out = folder / f"seq-{seed}"
    config = write_config(folder / f"seq-{seed}.toml", tiny_config(data_root, out, changes))
    seq = Sequence(seed)
    writes, seconds = float(ref.writes), ref.seconds  # left to do (estimated from the reference run)
    for i in range(kills):
        wanted = modes[i] if modes else None
        if wanted and wanted.startswith("write:"):  # a named write
            mode, arg = wanted.split(":", 1)
        else:
            mode, arg = draw(rng, writes, seconds, wanted)
        proc = start(config, mode, arg)
        if proc.returncode in (-9, 137):
            inside = [line.split(" of ", 1)[1] for line in proc.stderr.splitlines() if line.startswith("killed inside")]
            seq.moments.append(f"{mode}:{arg}" + (f" ({inside[0]})" if inside and arg.isdigit() else ""))
            seq.killed += 1
            if arg.replace(".", "", 1).isdigit():
                done = float(arg) / (ref.writes if mode == "write" else ref.seconds)
                writes, seconds = writes - done * ref.writes, seconds - done * ref.seconds
        elif proc.returncode == 0:
            seq.moments.append(f"{mode}:{arg} (finished first)")
            break
        else:
            seq.error = f"after {mode}:{arg}: exit {proc.returncode}: {proc.stderr.strip()[-600:]}"
            return seq
    if finish_in_process:
        from incremental.run import load_config, run

        run(load_config(config))
    else:
        proc = start(config, "none", "0")
        if proc.returncode != 0:
            seq.error = f"the resume failed: exit {proc.returncode}: {proc.stderr.strip()[-600:]}"
            return seq
    resumed = json.loads((out / "results.json").read_text())
    seq.differences = differences(comparable(ref.results), comparable(resumed))
    return seq


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=12, help="kill sequences (seeds 0..N-1)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--kills", type=int, default=2, help="kills per sequence before the final resume")
    parser.add_argument("--quick", action="store_true", help="the test suite's smaller run (QUICK)")
    parser.add_argument("--json", help="write the sequences here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from test_run import write_fashion_idx

    with tempfile.TemporaryDirectory(prefix="kill-resume-") as tmp:
        folder = Path(tmp)
        data_root = write_fashion_idx(folder / "idx", train=16, test=6)
        t0 = time.perf_counter()
        changes = QUICK if args.quick else None
        ref = reference(data_root, folder, changes)
        print(f"reference: {ref.writes} atomic writes, {ref.seconds:.1f} s")
        seqs = []
        for seed in range(args.first_seed, args.first_seed + args.sequences):
            seq = kill_sequence(seed, args.kills, ref, data_root, folder, changes)
            seqs.append(seq)
            verdict = "identical" if seq.identical else (seq.error or f"{len(seq.differences)} leaves differ")
            print(f"seed {seed:3d}: kills {', '.join(seq.moments):40s} -> {verdict}", flush=True)
            for d in seq.differences[:8]:
                print(f"    {d}")
        same = sum(s.identical for s in seqs)
        kills = sum(s.killed for s in seqs)
        print(f"{same} of {len(seqs)} sequences identical ({kills} SIGKILLs), {time.perf_counter() - t0:.0f} s")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({
                "command": " ".join(sys.argv), "config": tiny_config(Path("IDX"), Path("OUT"), changes),
                "reference_writes": ref.writes, "reference_seconds": ref.seconds, "kills": kills,
                "identical": same, "sequences": [vars(s) | {"identical": s.identical} for s in seqs]}, indent=1))
    return 0 if same == len(seqs) else 1


if __name__ == "__main__":
    sys.exit(main())
