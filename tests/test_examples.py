"""The example scripts run with small settings and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_profile_custom_model():
    out = run_example("profile_custom_model.py", "--batch", "2", "--width", "4")
    assert "sharing points:" in out and "k=3: after b3" in out
    for layer in ("b1.0", "b2.0", "b3.0", "head.2", "(loss)"):
        assert layer in out
    assert "per training step of 2 images" in out


def test_compare_sharing():
    out = run_example("compare_sharing.py", "--samples", "200", "--batch", "100", "--epochs", "1", "--share", "0,5,9")
    lines = [ln for ln in out.splitlines() if ln.strip().startswith(("partial-sharing", "full-retraining"))]
    assert len(lines) == 4  # three sharing points and full retraining
    assert "savings_energy_vs_regular" in out
    assert "cheapest: sharing point 9" in out


@pytest.mark.parametrize("target", ["1.6"])
def test_sweep_dram_energy_prints_breakeven(target):
    out = run_example("sweep_dram_energy.py", "--model", "smallcnn", "--points", "30", "--samples", "300",
                      "--epochs", "1", "--target", target)
    assert "30 DRAM energies x 6 sharing points = 180 rows" in out
    assert "break-even dram_mac_ratio" in out
    assert "pays off (1.6x) only" in out


def test_custom_rule():
    out = run_example("custom_rule.py", "--batch", "2", "--mode", "inference")
    lines = out.splitlines()
    assert lines[0].startswith("without a rule: unmodelled ['1']")
    assert lines[1].startswith("with the rule:  unmodelled []")
    n = 2 * 8 * 16 * 16  # batch x channels x H x W: one mult and one add per element
    assert lines[2] == f"ScaleShift: mult_ops {n}, add_ops {n} for a batch of 2"
