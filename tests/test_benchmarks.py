"""The benchmark harness: bench_train / bench_memory at the tiniest settings, and their JSON in the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from energymodel.report import ReportData, measured_section, render_report

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
ROW_KEYS = {"label", "share", "measured_seconds_per_epoch", "modelled_macs", "modelled_energy_pj",
            "speedup_measured", "speedup_modelled_macs", "speedup_modelled_energy"}


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "measured.json"
    proc = _run("bench_train.py", "--samples", "48", "--batch", "16", "--epochs", "2", "--warmup", "1",
                "--repeats", "2", "--shares", "0,4", "--device", "cpu", "--out", str(out))
    return json.loads(out.read_text()), proc.stdout


def test_bench_train_json_has_measured_format(measured):
    obj, stdout = measured
    assert isinstance(obj["machine"], str) and obj["machine"]
    rows = obj["rows"]
    # k=0 once (no prefix to cache), k=4 cached and uncached
    assert [(r["share"], r["cache"]) for r in rows] == [(0, "off"), (4, "on"), (4, "off")]
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["measured_seconds_per_epoch"] > 0 and r["modelled_macs"] > 0 and r["modelled_energy_pj"] > 0
        assert [len(e) for e in r["epoch_seconds"]] == [2, 2]  # 2 repeats x 2 epochs
        assert r["verdict"] in ("PASS", "MISS", "-")
    base, cached, uncached = rows
    assert base["speedup_measured"] == 1.0 and base["speedup_modelled_macs"] == 1.0
    assert cached["cache_mode"] == "memory" and cached["feature_seconds"] > 0
    assert uncached["cache_mode"] == "off" and uncached["feature_seconds"] == 0
    # caching at a deep point: the model prices the prefix once per sample, so fewer MACs than uncached
    assert cached["modelled_macs"] < uncached["modelled_macs"] < base["modelled_macs"]
    assert set(obj["targets"]) == {"a", "b"}
    assert obj["targets"]["a"]["pass"] + obj["targets"]["a"]["miss"] == [4]
    # CPU-only test machine: no energy meter, said so
    assert obj["energy_meter"] == "none available" and "nvml" not in obj
    assert "target (a)" in stdout and "target (b)" in stdout


def test_bench_train_json_renders_in_report(measured):
    obj, _ = measured
    section = measured_section(obj)
    assert section["extra"]["benchmark"] == "bench_train"
    html = render_report(ReportData(title="bench", measured=section))
    assert "Measured vs modelled" in html
    assert "k=4 cached" in html and "none available" in html


def test_nvml_figures_render_in_report(measured):
    obj = dict(measured[0])
    obj.pop("energy_meter")
    obj["nvml"] = {r["label"]: {"joules": 1.5, "modelled_joules": r["modelled_energy_pj"] * 1e-12} for r in obj["rows"]}
    html = render_report(ReportData(title="bench", measured=measured_section(obj)))
    assert "k=0 full fine-tune" in html and "joules" in html


def test_verdicts_can_miss():
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_train import verdict

    row = {"share": 2, "cache": "on", "speedup_measured": 1.5, "speedup_modelled_macs": 1.6}
    assert verdict(row)[1] == "MISS"
    assert verdict({**row, "speedup_measured": 1.6})[1] == "PASS"
    row = {"share": 2, "cache": "off", "modelled_ratio_error": 0.25}
    assert verdict(row)[1] == "MISS"
    assert verdict({**row, "modelled_ratio_error": 0.1})[1] == "PASS"
    assert verdict({"share": 0, "cache": "off"})[1] == "-"


def test_bench_memory_tiny(tmp_path):
    out = tmp_path / "memory.json"
    proc = _run("bench_memory.py", "--samples", "48", "--batch", "16", "--shares", "0,4", "--device", "cpu",
                "--json", str(out))
    obj = json.loads(out.read_text())
    rows = obj["rows"]
    assert [(r["share"], r["cache"]) for r in rows] == [(0, "off"), (4, "on")]
    for r in rows:
        assert r["peak_rss_bytes"] >= r["baseline_rss_bytes"] > 0
        assert r["predicted_training_memory_bytes"] > 0 and r["peak_cuda_bytes"] is None
    assert rows[1]["predicted_training_memory_bytes"] < rows[0]["predicted_training_memory_bytes"]
    assert rows[1]["feature_cache_bytes"] == 48 * 64 * 7 * 7 * 4
    assert "meas/pred" in proc.stdout
