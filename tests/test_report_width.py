"""No table of a report is wider than its box at 1,400 px: the report is opened in headless Chromium.

A copy of the report gets a small inline script (the report itself has none) that opens every
``<details>``, measures every table against the element that holds it and the page against the
window, and writes the result into the DOM, which ``chromium --dump-dom`` prints. Without chromium
the test skips locally and FAILS under ``CI=true`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from energymodel.report import (
    ReportData,
    build_report,
    engine_section_from_results,
    measured_section,
    render_report,
)
from energymodel.report.recipe import Recipe, SweepSpec

WIDTH = 1400
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and os.path.exists(p)), None)

_PROBE = """<script>
(function () {
  document.querySelectorAll('details').forEach(function (d) { d.open = true; });
  var wide = [];
  document.querySelectorAll('table').forEach(function (t, i) {
    var box = t.parentElement, room = box.clientWidth;
    var width = Math.max(t.scrollWidth, Math.ceil(t.getBoundingClientRect().width));
    if (width > room + 1) {
      var sec = t.closest('section');
      wide.push({table: i, section: sec ? sec.id : '', width: width, room: room,
                 first_header: ((t.querySelector('th') || {}).textContent || '').trim()});
    }
  });
  var out = document.createElement('pre');
  out.id = 'width-probe';
  out.textContent = JSON.stringify({wide: wide, tables: document.querySelectorAll('table').length,
                                    page: document.documentElement.scrollWidth, window: window.innerWidth});
  document.body.appendChild(out);
})();
</script>
"""


def need_chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed (CI installs it in .ci/run)")
        pytest.skip("chromium is not installed")
    return CHROMIUM


def measure(html: str, width: int = WIDTH) -> dict:
    """Open ``html`` in headless Chromium at ``width`` px and return what the probe measured."""
    browser = need_chromium()
    folder = Path(tempfile.mkdtemp(prefix="report-width-"))
    try:
        page = folder / "r.html"
        page.write_text(html.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={folder / 'profile'}", f"--window-size={width},1000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    m = re.search(r'<pre id="width-probe">(.*?)</pre>', done.stdout, flags=re.S)
    assert m, f"chromium printed no probe result (exit {done.returncode}): {done.stderr[-500:]}"
    return json.loads(htmllib.unescape(m.group(1)))


def wide_engine_results() -> dict:
    """Every key the engine section knows, with long names and several seeds (the widest case)."""
    methods = ["calibrated-logits", "raw-logits", "branch-gaussian", "common-gaussian", "routed"]
    names = ["partial-sharing", "regular-incremental", "feature-extraction", "naive-finetune", "full-retraining"]
    strategies = []
    for i, name in enumerate(names):
        strategies.append({
            "strategy": name, "share": i, "fraction": i / 5, "task_aware_accuracy": 0.9154 - 0.01 * i,
            "task_aware_accuracy_std": 0.0042, "task_agnostic_accuracy": 0.7123, "task_agnostic_accuracy_std": 0.0311,
            "task_agnostic_uncalibrated_accuracy": 0.55, "forgetting_task_aware": 0.0,
            "forgetting_task_agnostic": 0.123, "backward_transfer_task_aware": 0.0,
            "backward_transfer_task_agnostic": -0.123, "energy_pj": 3.4e12, "macs": 1.2e11,
            "measured_train_seconds": 1234.5, "modelled_train_energy_pj": 3.1e12, "storage_bytes": 123456789,
            "agnostic": {m: {"accuracy": 0.7 + 0.01 * j, "std": 0.012, "storage_bytes": 4096.0 * j}
                         for j, m in enumerate(methods)},
        })
    tasks = [f"task {t}" for t in range(4)]
    matrix = [[0.9 if j <= i else None for j in range(4)] for i in range(4)]
    return {
        "strategies": strategies,
        "matrices": {f"{n} ({kind})": {"tasks": tasks, "values": matrix}
                     for n in names[:1] for kind in ["task-aware", "task-agnostic", methods[1]]},
        "calibration_curve": [{"share": k, "fraction": k / 5, "accuracy": 0.9 - 0.02 * k, "energy_pj": 1e12 * (6 - k),
                               "within_tolerance": k <= 2} for k in range(6)],
        "chosen_share": 2, "tolerance": 0.02,
        "agnostic_methods": [{"method": m, "description": f"the {m} rule, described at some length for the reader",
                              "default": m == "calibrated-logits"} for m in methods],
        "agnostic_default": "calibrated-logits",
        "search": {"per_seed": [{"seed": s, "chosen": 2, "reference_accuracy": 0.9,
                                 "warning": "the reference accuracy is close to chance; the choice may be noise"}
                                for s in range(3)],
                   "oracle": [{"share": k, "accuracy": 0.91 - 0.02 * k, "energy_pj": 1e12 * (6 - k)} for k in range(6)]},
        "timing": [{"label": f"a rather long phase label number {k}", "measured_seconds": 10.0 + k,
                    "modelled_macs": 1e9 * (k + 1), "modelled_energy_pj": 1e11 * (k + 1)} for k in range(8)],
    }


@pytest.fixture(scope="module")
def full_report() -> str:
    sweeps = [SweepSpec(vary={"dram": np.array([1.0, 500.0, 2000.0]), "buffer_bytes": np.array([1e4, 1e5, 1e7])},
                        target=2.2)]  # a target some sharing point crosses (2.1-2.4x at share 3)
    recipe = Recipe(title="width check", model="smallcnn", input_shape=(1, 28, 28), classes=5, samples_new=100,
                    samples_old=100, epochs=1, batch=50, sweeps=sweeps)
    data = build_report(recipe, engine=engine_section_from_results(wide_engine_results()),
                        measured=measured_section({"machine": "m", "rows": [
                            {"label": f"k={k}", "share": k, "measured_seconds_per_epoch": 2.0, "modelled_macs": 1e9,
                             "modelled_energy_pj": 1e11, "speedup_measured": 1.1, "speedup_modelled_macs": 1.2,
                             "speedup_modelled_energy": 1.3} for k in range(3)]}))
    assert any(sw["breakeven"] is not None and sw["breakeven"]["pays_off"].isin(["below", "above"]).any()
               for sw in data.sweeps), "the sweeps should give a break-even table to measure"
    return render_report(data)


def test_no_table_is_wider_than_its_box_at_1400_px(full_report):
    got = measure(full_report)
    assert got["tables"] >= 8  # setup tables, per-layer, comparison, strategies, methods ... all measured
    assert got["wide"] == [], f"tables wider than their box at {WIDTH} px: {got['wide']}"
    assert got["page"] <= got["window"], "the page scrolls sideways"


def test_the_probe_sees_a_table_that_is_too_wide():
    """The check can fail: a report with one table of 40 columns is caught."""
    m = measured_section({"rows": [{"label": "x", **{f"column_{i}_with_a_long_name": 1e9 + i for i in range(40)}}]})
    html = render_report(ReportData(title="too wide", measured=m))
    got = measure(html)
    assert [w["section"] for w in got["wide"]] == ["measured"]
    assert got["wide"][0]["width"] > got["wide"][0]["room"]
