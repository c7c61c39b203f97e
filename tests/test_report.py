"""Tests for HTML reports: structure, self-containment, escaping, plots, recipes, atomic writes, browser check."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from energymodel.cli import main
from energymodel.errors import UserError
from energymodel.report import (
    ReportData,
    build_report,
    engine_section_from_results,
    measured_section,
    render_report,
    write_report,
)
from energymodel.report.plots import pareto_front
from energymodel.report.recipe import load_recipe, parse_recipe

EVIL = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)

RECIPE = f"""
[report]
title = "Small {EVIL} & co"
description = "a <b>tiny</b> recipe"

[model]
name = "smallcnn"
input = [1, 28, 28]
classes = 5

[train]
batch = 100
epochs = 2
samples_new = 300
samples_old = 300
new_classes = 5

[energy]
table = "45nm"

[[sweep]]
vary = {{ dram = "20:2000:6" }}
target = 1.6

[[sweep]]
title = "two keys"
vary = {{ dram = "50:2000:4", buffer_bytes = "1e4:1e7:3log" }}

[engine]
run_dir = "run"

[measured]
file = "measured.json"
"""


def engine_results() -> dict:
    return {
        "strategies": [
            {"strategy": "clone-and-branch k=3", "share": 3, "fraction": 0.6, "task_aware_accuracy": 0.91,
             "task_agnostic_accuracy": 0.84, "energy_pj": 7.7e11, "macs": 3.2e10, "measured_train_seconds": 12.5,
             "modelled_train_energy_pj": 7.7e11},
            {"strategy": f"full retraining {EVIL}", "share": 0, "fraction": 0.0, "task_aware_accuracy": 0.94,
             "energy_pj": 3.4e12, "modelled_train_energy_pj": 3.4e12, "extra_column": "kept"},
        ],
        "matrices": {"task-aware accuracy": {"tasks": ["T0", "T1"], "values": [[0.95, None], [0.94, 0.91]]}},
        "calibration_curve": [{"share": k, "fraction": k / 5, "accuracy": 0.93 - 0.01 * k,
                               "energy_pj": 1.7e12 * (1 - 0.17 * k), "within_tolerance": k <= 3} for k in range(6)],
        "chosen_share": 3,
        "timing": [{"label": f"k={k}", "measured_seconds": 25.0 - 4 * k, "modelled_macs": 6.7e10 * (1 - 0.17 * k),
                    "modelled_energy_pj": 1.7e12 * (1 - 0.17 * k)} for k in range(4)],
        "run": {"seed": 0},
    }


def measured() -> dict:
    return {"machine": "test box", "energy_meter": "none available",
            "rows": [{"label": f"k={k}", "share": k, "measured_seconds_per_epoch": 2.0 - 0.3 * k,
                      "modelled_macs": 1e9 * (1 - 0.2 * k), "modelled_energy_pj": 1e11 * (1 - 0.2 * k),
                      "speedup_measured": 2.0 / (2.0 - 0.3 * k), "speedup_modelled_macs": 1 / (1 - 0.2 * k),
                      "speedup_modelled_energy": 1 / (1 - 0.2 * k)} for k in range(3)]}


def write_inputs(folder: Path) -> Path:
    (folder / "run").mkdir(parents=True, exist_ok=True)
    (folder / "run" / "results.json").write_text(json.dumps(engine_results()))
    (folder / "measured.json").write_text(json.dumps(measured()))
    path = folder / "recipe.toml"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    recipe = load_recipe(write_inputs(folder))
    data = build_report(recipe)
    out = write_report(data, folder / "out" / "report.html")
    return data, out.read_text(encoding="utf-8"), out


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.ids: list[str] = []
        self.sections: list[str] = []
        self.text: list[str] = []
        self.stack: list[str] = []
        self.section_svgs: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "section":
            self.sections.append(a.get("id", ""))
        if tag == "svg" and self.sections:
            self.section_svgs[self.sections[-1]] = self.section_svgs.get(self.sections[-1], 0) + 1

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Collector:
    c = Collector()
    c.feed(html)
    c.close()
    return c


def test_required_sections_in_order(report):
    _, html, _ = report
    c = parse(html)
    assert c.sections == ["setup", "layers", "sharing", "sweep", "engine", "measured", "appendix"]
    nav = [a["href"] for t, a in c.tags if t == "a"]
    assert nav == [f"#{s}" for s in c.sections]


def test_every_svg_is_well_formed_xml_with_unique_ids(report):
    _, html, _ = report
    svgs = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    assert len(svgs) == html.count("<svg")
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg")
        assert len(list(root.iter())) > 20  # something is drawn
    c = parse(html)
    assert len(c.ids) == len(set(c.ids)), "duplicate ids across inline SVGs"
    for ref in re.findall(r'(?:href="#|url\(#)([^")]+)', html):
        assert ref in c.ids, f"dangling reference #{ref}"


def test_plots_present_in_each_section(report):
    _, html, _ = report
    c = parse(html)
    n = c.section_svgs
    assert n.get("layers", 0) >= 1
    assert n.get("sharing", 0) >= 1
    # sweep 1: ratio plot; sweep 2: ratio plot + buffer plot + heatmap
    assert n.get("sweep", 0) >= 4
    # strategies scatter, one matrix, calibration, timing
    assert n.get("engine", 0) >= 4
    assert n.get("measured", 0) >= 1
    assert "Pareto front" in html and "chosen (k=3)" in html


def test_self_contained_no_scripts_no_fetches(report):
    _, html, _ = report
    c = parse(html)
    tags = {t for t, _ in c.tags}
    assert "script" not in tags and "link" not in tags and "iframe" not in tags and "img" not in tags
    for tag, attrs in c.tags:
        for name in ("src", "href", "xlink:href", "data", "action", "srcset", "poster"):
            v = attrs.get(name)
            if v is not None:
                inline = v.startswith("#") or v.startswith("data:image/")  # an anchor or embedded pixels
                assert inline, f"<{tag} {name}={v[:60]!r}> points outside the document"
        style = attrs.get("style") or ""
        assert "url(" not in style or re.fullmatch(r".*url\(#[^)]+\).*", style)
    assert "@import" not in html
    # the only absolute URLs are XML namespace names, which are never fetched
    for m in re.finditer(r"https?://", html):
        before = html[max(0, m.start() - 20):m.start()]
        assert re.search(r'xmlns(:\w+)?="$', before), html[m.start() - 40:m.start() + 40]


def test_text_is_escaped(report):
    _, html, _ = report
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "a &lt;b&gt;tiny&lt;/b&gt; recipe" in html
    c = parse(html)
    assert any(EVIL in t for t in c.text)  # shown to the reader as text


def test_content_numbers_and_appendix(report):
    data, html, _ = report
    text = " ".join(parse(html).text)
    assert "45nm" in text and "Horowitz" in text  # table and its source
    for v in ("python", "torch", "energymodel"):
        assert v in data.setup["versions"]
    assert "1 MiB" in text  # dataflow assumption: buffer size
    # every layer of the profile is in the per-layer table
    for name in data.layers["name"]:
        assert name in text
    assert "regular" in text and "retraining" in text
    # the residency plan of the profiled step: a line per phase and every tensor with its writer
    plan = data.residency
    for phase in ("forward", "backward"):
        sel = plan[plan["phase"] == phase]
        assert f"{phase}: {int(sel['on_chip'].sum())} of {len(sel)} tensors on chip" in text
    assert "Residency plan" in text and "written by" in text and "read by" in text
    # break-even of the first sweep is in the report
    be = data.sweeps[0]["breakeven"]
    assert len(be)
    always = [f"k = {k}" for k in be.loc[be["pays_off"] == "always", "share"]]
    never = [f"k = {k}" for k in be.loc[be["pays_off"] == "never", "share"]]
    if always:
        assert f"at least 1.6× everywhere on the grid: {', '.join(always)}" in text
    if never:
        assert f"below 1.6× everywhere on the grid: {', '.join(never)}" in text
    assert always or never or "break-even DRAM / MAC energy ratio" in text
    assert "DRAM access energy: 6 evenly spaced values, 20 pJ/access – 2,000 pJ/access" in text  # units, no "20:2000:6"
    assert "20:2000:6" not in text
    # appendix: the docstrings are the source
    from energymodel.analysis import points as sharing
    from energymodel.memory import levels as price

    assert "Dataflow model" in price.__doc__ and "Dataflow model" in text
    assert "Sharing fraction" in sharing.__doc__ and "Sharing fraction" in text
    assert "conv_rule" in text and "relu_rule" in text and "Element-wise, per output element" in text
    assert "w ← w − lr·g" in text  # optimizer formula
    assert "extra column" in text and "kept" in text and "seed" in text  # unknown engine keys are still shown
    assert "91.0 %" in text and "84.0 %" in text  # accuracies as xx.x %, never 0.91


def test_file_is_an_ordinary_readable_file(report):
    _, _, out = report
    assert out.stat().st_mode & 0o444 == 0o444 or os.name != "posix"


def test_a_failed_render_never_replaces_a_good_report(report, tmp_path, monkeypatch):
    data, html, _ = report
    target = tmp_path / "r.html"
    write_report(data, target)
    good = target.read_text()
    import energymodel.report.views as rep

    def broken(*a, **k):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(rep, "layers_view", broken)
    with pytest.raises(RuntimeError):
        write_report(data, target)
    assert target.read_text() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # no temporary left behind


def test_engine_only_report_renders_just_that(tmp_path):
    data = ReportData(title="run", engine=engine_section_from_results({"chosen_share": 2,
                                                                       "strategies": [{"strategy": "a", "share": 2}]}))
    html = render_report(data)
    assert parse(html).sections == ["engine", "appendix"]
    assert "Chosen sharing point: 2" in html


def test_engine_section_validation():
    assert engine_section_from_results({}) == {}
    out = engine_section_from_results(engine_results())
    assert out["extra"] == {"run": {"seed": 0}} and out["chosen_share"] == 3
    with pytest.raises(UserError, match="strategies"):
        engine_section_from_results({"strategies": {"a": 1}})
    with pytest.raises(UserError, match="same length"):
        engine_section_from_results({"matrices": {"m": {"tasks": [0, 1], "values": [[1, 2], [3]]}}})
    with pytest.raises(UserError, match="numbers or null"):
        engine_section_from_results({"matrices": {"m": {"values": [["x"]]}}})
    with pytest.raises(UserError, match="chosen_share"):
        engine_section_from_results({"chosen_share": "3"})
    with pytest.raises(UserError, match="rows"):
        measured_section({"machine": "x"})
    with pytest.raises(UserError, match="label"):
        measured_section({"rows": [{"share": 1}]})


def test_pareto_front():
    energy = [5, 1, 3, 2, 4]
    acc = [0.9, 0.5, 0.8, 0.85, 0.7]
    assert list(pareto_front(energy, acc)) == [1, 3, 0]


# -- recipes ----------------------------------------------------------------------------------------------


def _recipe(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


BASE = '[report]\ntitle = "t"\n[model]\nname = "smallcnn"\n'


@pytest.mark.parametrize("text, msg", [
    ('[model]\nname = "smallcnn"\n', r"missing section \[report\]"),
    ('[report]\ntitle = "t"\n[model]\ninput = [1, 28, 28]\n', r"\[model\]: missing field 'name'"),
    (BASE + "[train]\nepoch = 3\n", r"\[train\]: unknown field 'epoch'"),
    (BASE + '[train]\nbatch = "128"\n', r"\[train\] batch must be a positive integer"),
    (BASE + "[train]\ncache_prefix = 1\n", r"cache_prefix must be true or false"),
    (BASE + '[train]\noptimizer = "lbfgs"\n', r"optimizer must be one of"),
    (BASE + "[model2]\nx = 1\n", r"unknown section \[model2\]"),
    ('[report]\ntitle = 3\n[model]\nname = "smallcnn"\n', r"\[report\] title must be a string"),
    (BASE + "input = [1, 0, 28]\n", r"\[model\] input must be a list of positive integers"),
    (BASE + '[[sweep]]\nvary = { foo = "1:2:3" }\n', r"\[\[sweep\]\] #1 vary.foo: unknown table key"),
    (BASE + '[[sweep]]\nvary = { dram = "5:1:3" }\n', r"vary.dram: reversed range"),
    (BASE + "[[sweep]]\nvary = { dram = true }\n", r"vary.dram must be"),
    (BASE + "[[sweep]]\ntarget = 2.0\n", r"\[\[sweep\]\] #1: missing field 'vary'"),
    (BASE + '[engine]\nrun_dir = "nowhere"\n', r"\[engine\] run_dir .*nowhere does not exist"),
    (BASE + '[measured]\nfile = "m.json"\n', r"\[measured\] file .*m.json does not exist"),
    (BASE + "title = [\n", r"not valid TOML"),
])
def test_recipe_errors_name_the_field(tmp_path, text, msg):
    with pytest.raises(UserError, match=msg):
        load_recipe(_recipe(tmp_path, text))


def test_recipe_paths_resolve_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "deep" / "er"
    folder.mkdir(parents=True)
    path = write_inputs(folder)
    monkeypatch.chdir(tmp_path)
    r = load_recipe(path.relative_to(tmp_path))
    assert r.engine_dir == folder / "run" or r.engine_dir.resolve() == (folder / "run").resolve()
    assert r.measured_file.resolve() == (folder / "measured.json").resolve()
    assert r.table == "45nm"
    r2 = parse_recipe({"report": {"title": "t"}, "model": {"name": "models/net.py:make"},
                       "energy": {"table": "tables/x.toml"}}, base=folder)
    assert r2.model == f"{folder / 'models/net.py'}:make"
    assert r2.table == str(folder / "tables/x.toml")


def test_cli_writes_default_output_and_errors_are_one_line(tmp_path, capsys, monkeypatch):
    path = _recipe(tmp_path, BASE + 'input = [1, 28, 28]\n[train]\nsamples_new = 200\nsamples_old = 200\nbatch = 100\nepochs = 1\n'
                             '[[sweep]]\nvary = { dram = [100, 1000] }\n')
    monkeypatch.chdir(tmp_path)
    assert main(["report", "r.toml"]) == 0
    out = tmp_path / "out" / "r.html"
    assert out.is_file() and "wrote" in capsys.readouterr().err
    assert parse(out.read_text()).sections == ["setup", "layers", "sharing", "sweep", "appendix"]
    bad = _recipe(tmp_path, BASE + "[train]\nbatch = 0\n", "bad.toml")
    assert main(["report", str(bad), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch must be a positive integer" in err
    assert not (tmp_path / "x.html").exists()
    assert main(["report", str(tmp_path / "missing.toml")]) == 2
    assert main(["report", str(path), "--engine", str(tmp_path / "norun")]) == 2
    assert "results.json" in capsys.readouterr().err


# -- a real browser ---------------------------------------------------------------------------------------


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_headless_chromium_renders_the_report(report, tmp_path):
    from PIL import Image

    _, _, out = report
    png = tmp_path / "r.png"
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             f"--screenshot={png}", "--window-size=1200,3000", out.resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    img = Image.open(png).convert("RGB")
    assert img.size == (1200, 3000)
    small = img.resize((120, 300))
    colours = small.getcolors(maxcolors=120 * 300)
    assert colours is not None and len(colours) > 200  # text, tables and plots, not a blank page
    # the header band is drawn in the accent colour
    r, g, b = img.getpixel((600, 20))
    assert b > r and b > 100


def test_build_report_from_a_recipe_made_in_code(tmp_path):
    """How ``incremental report`` can use it: a Recipe built in code plus an engine section."""
    from energymodel.report.recipe import Recipe

    recipe = Recipe(title="run", model="smallcnn", input_shape=(1, 28, 28), classes=5, samples_new=100,
                    samples_old=100, epochs=1, batch=50, share=[0, 3])
    data = build_report(recipe, engine=engine_section_from_results({"chosen_share": 3}))
    assert sorted(data.compare["share"]) == [0, 0, 3]
    out = write_report(data, tmp_path / "r.html")
    assert parse(out.read_text()).sections == ["setup", "layers", "sharing", "engine", "appendix"]


def test_measured_section_with_nvml_renders_table_and_chart():
    m = measured()
    m.pop("energy_meter")
    m["nvml"] = {"gpu": "H100", "energy_joules": 123.4}
    html = render_report(ReportData(title="m", measured=measured_section(m)))
    c = parse(html)
    assert c.sections == ["measured", "appendix"] and c.section_svgs.get("measured") == 1
    text = " ".join(c.text)
    assert "H100" in text and "123.4" in text and "speedup measured" in text


# -- reads at a glance: one format per quantity, the headline, the new engine keys, literal labels -----------


def test_one_format_per_quantity():
    from energymodel.report.fmt import fmt_fraction, fmt_key_value, fmt_pct, fmt_pp, fmt_x
    from energymodel.report.views import storage_ratio

    assert fmt_pct(0.9154) == "91.5 %"
    assert fmt_pct(0.9154, 0.0042) == "91.5 ± 0.4 %"
    assert fmt_pct(None) == "–"
    assert fmt_pp(0.032) == "3.2 pp"
    assert fmt_pp(-0.032, signed=True) == "−3.2 pp" and fmt_pp(0.01, signed=True) == "+1.0 pp"
    assert fmt_pp(0.0, signed=True) == "0.0 pp" and fmt_pp(-0.0001, signed=True) == "0.0 pp"
    assert fmt_fraction(0.6) == "0.60" and fmt_fraction(1) == "1.00"
    assert fmt_x(3.14159) == "3.14×" and fmt_x(2) == "2.00×" and fmt_x(12.345) == "12.3×" and fmt_x(150.2) == "150×"
    assert fmt_key_value("dram", 581.8) == "581.8 pJ/access"
    assert fmt_key_value("mac", 4.6) == "4.6 pJ/op"
    assert fmt_key_value("buffer_bytes", 1048576) == "1 MiB"
    assert fmt_key_value("rf_accesses_per_op", 3) == "3 RF accesses/op"
    assert storage_ratio(0.501) == "2.00×"  # storage over retraining's: a cost, not a "saving" of 0.501×


def rich_engine() -> dict:
    """The engine keys the report renders beyond today's results: std over seeds, forgetting, backward
    transfer, task-agnostic prediction methods, the search's tolerance, per-seed choices and oracle."""
    def strategy(name, share, aware, agn, energy, forget, bwt):
        return {"strategy": name, "share": share, "fraction": share / 5, "task_aware_accuracy": aware,
                "task_aware_accuracy_std": 0.0042, "task_agnostic_accuracy": agn, "task_agnostic_accuracy_std": None,
                "forgetting_task_aware": 0.0, "forgetting_task_agnostic": forget, "backward_transfer_task_aware": 0.0,
                "backward_transfer_task_agnostic": bwt, "modelled_train_energy_pj": energy, "energy_pj": energy,
                "storage_bytes": 2 * 2**20,
                "agnostic": {"calibrated-logits": {"accuracy": agn, "std": 0.011, "storage_bytes": 80.0},
                             "branch-gaussian": {"accuracy": 0.6612, "std": None, "storage_bytes": 40960.0}}}

    return {
        "strategies": [strategy("partial-sharing", 3, 0.9154, 0.7123, 7.7e11, 0.032, -0.032),
                       strategy("regular-incremental", 0, 0.9311, 0.7302, 1.7e12, 0.041, -0.041),
                       strategy("full-retraining", 0, 0.9402, 0.8011, 3.4e12, 0.0, 0.01)],
        "calibration_curve": [{"share": k, "fraction": k / 5, "accuracy": 0.93 - 0.01 * k, "energy_pj": 1.7e12 - 2e11 * k,
                               "within_tolerance": k <= 3} for k in range(6)],
        "chosen_share": 3, "tolerance": 0.02,
        "agnostic_methods": [{"method": "calibrated-logits", "description": "logits / T + b per task", "default": True},
                             {"method": "branch-gaussian", "description": "a Gaussian per branch", "default": False}],
        "agnostic_default": "calibrated-logits",
        "search": {"per_seed": [{"seed": 0, "chosen": 3, "reference_accuracy": 0.93, "warning": None},
                                {"seed": 1, "chosen": 3, "reference_accuracy": 0.92, "warning": "close to chance"}],
                   "oracle": [{"share": k, "accuracy": 0.94 - 0.01 * k, "energy_pj": 1.7e12 - 2e11 * k} for k in range(6)]},
    }


def test_engine_section_shows_std_forgetting_methods_and_search():
    html = render_report(ReportData(title="rich", engine=engine_section_from_results(rich_engine())))
    text = " ".join(parse(html).text)
    assert "91.5 ± 0.4 %" in text and "71.2 %" in text  # mean ± std over seeds; no std -> plain
    assert "Task-IL accuracy" in text and "Class-IL accuracy (calibrated-logits)" in text
    assert "3.2 pp" in text and "−3.2 pp" in text and "+1.0 pp" in text  # forgetting, backward transfer
    assert "calibrated-logits (default)" in text and "branch-gaussian" in text and "66.1 %" in text
    assert "71.2 ± 1.1 %" in text  # a method's accuracy with its std
    assert "40 KiB" in text and "80 B" in text  # the storage each method's statistics need
    assert "within 2.0 pp of the accuracy without sharing" in text
    assert "close to chance" in text  # per-seed warning
    assert "oracle (test accuracy)" in html  # the oracle curve in the search plot
    assert "2 MiB" in text
    assert "forgetting Class-IL" not in text  # no raw key names: the table has its own headers


def test_headline_names_the_deepest_point_within_the_tolerance():
    html = render_report(ReportData(title="h", engine=engine_section_from_results(rich_engine())))
    m = re.search(r'<div class="callout headline" id="headline">(.*?)</div>', html, flags=re.S)
    assert m
    head = m.group(1)
    # k = 3 is the deepest point within tolerance (k = 4, 5 are cheaper but lose accuracy); savings from the
    # run's modelled training energy: 1.7e12 / 7.7e11 = 2.2078, 3.4e12 / 7.7e11 = 4.4156
    assert "k = 3 (fraction 0.60)" in head and "within 2.0 pp of no sharing" in head
    assert "2.21× less training energy than regular incremental learning" in head
    assert "4.42× less than full retraining" in head
    assert "Task-IL accuracy 91.5 ± 0.4 % (regular incremental: 93.1 ± 0.4 %)" in head
    assert "k = 5" not in head


def test_headline_without_accuracy_names_no_point(report):
    _, html, _ = report
    # the recipe report has engine results: the headline follows their search (k <= 3 within tolerance)
    assert "Deepest sharing point with accuracy within the search" in html and "k = 3" in html
    data = ReportData(title="no run", compare=report[0].compare)
    head = re.search(r'id="headline">(.*?)</div>', render_report(data), flags=re.S).group(1)
    assert "names no sharing point" in head and "Deepest" not in head


def test_new_engine_keys_are_checked():
    with pytest.raises(UserError, match="tolerance"):
        engine_section_from_results({"tolerance": "2 %"})
    with pytest.raises(UserError, match="search"):
        engine_section_from_results({"search": [1]})
    with pytest.raises(UserError, match="per_seed"):
        engine_section_from_results({"search": {"per_seed": [3]}})
    with pytest.raises(UserError, match="agnostic_methods"):
        engine_section_from_results({"agnostic_methods": [{"description": "no name"}]})
    with pytest.raises(UserError, match=r"strategies\[0\].agnostic"):
        engine_section_from_results({"strategies": [{"strategy": "a", "agnostic": {"m": 0.5}}]})
    out = engine_section_from_results(rich_engine())
    assert "extra" not in out and out["tolerance"] == 0.02 and out["search"]["oracle"][0]["share"] == 0


def test_labels_with_dollars_are_drawn_literally():
    """Issue 9: labels from results files must never be parsed as maths (matplotlib would raise or eat them)."""
    from energymodel.report.plots import (
        calibration_plot,
        matrix_heatmap,
        measured_plot,
        strategies_plot,
        timing_plot,
    )

    odd = [r"$\frac{1}{$", r"cost \$5", "a_$b^{c", r"$\undefinedcommand$", "$$", "50 $"]
    svgs = [
        matrix_heatmap(odd[0], odd[:2], [[0.5, None], [0.4, 0.3]]),
        strategies_plot([{"strategy": s, "task_aware_accuracy": 0.5, "energy_pj": 1e9 * (i + 1)}
                         for i, s in enumerate(odd)]),
        timing_plot([{"label": s, "measured_seconds": 1.0 + i, "modelled_macs": 1e9 * (i + 1)} for i, s in enumerate(odd)]),
        measured_plot([{"label": s, "speedup_measured": 1.2} for s in odd]),
        calibration_plot([{"share": 1, "accuracy": 0.5, "energy_pj": 1e9, "within_tolerance": True}], 1),
    ]
    texts = [t for svg in svgs for t in re.findall(r"<text\b[^>]*>([^<]*)</text>", svg)]
    import html as htmllib

    texts = [htmllib.unescape(t) for t in texts]
    for label in odd:
        assert label in texts, f"{label!r} not drawn as it is"
    data = ReportData(title="$x$", engine=engine_section_from_results(
        {"strategies": [{"strategy": odd[3], "task_aware_accuracy": 0.5, "energy_pj": 1e9}],
         "matrices": {odd[2]: {"tasks": odd[:2], "values": [[0.5, None], [0.4, 0.3]]}}}))
    assert odd[3] in render_report(data)


def test_accuracy_heatmaps_share_one_scale():
    from energymodel.report.plots import matrix_heatmap

    low = matrix_heatmap("low", ["a", "b"], [[0.10, None], [0.12, 0.2]])
    high = matrix_heatmap("high", ["a", "b"], [[0.90, None], [0.95, 0.99]])
    for svg, cells in ((low, ["10.0", "12.0", "20.0"]), (high, ["90.0", "95.0", "99.0"])):
        texts = re.findall(r"<text\b[^>]*>([^<]*)</text>", svg)
        assert texts[-7:] == ["0", "20", "40", "60", "80", "100", "accuracy (%)"]  # the colour bar: 0-100 %
        assert all(c in texts for c in cells)  # cells in percent, one decimal


def test_appendix_docstrings_are_reflowed_html():
    from energymodel.report.appendix import _doc_html

    doc = '''Summary line.

    A paragraph broken
    over two lines with ``code`` and :func:`~energymodel.price.pricing.price` and *emphasis*::

        y = a * x

    - item one
      continued
    - item **two**
    '''
    assert str(_doc_html(doc)) == (
        "<p>Summary line.</p>\n"
        "<p>A paragraph broken over two lines with <code>code</code> and <code>price</code> and "
        "<em>emphasis</em>:</p>\n"
        '<pre class="formula">y = a * x</pre>\n'
        "<ul><li>item one continued</li><li>item <strong>two</strong></li></ul>")


def test_wide_tables_keep_their_details_behind_details(report):
    _, html, _ = report
    layers = html[html.index('<section id="layers">'):html.index('<section id="sharing">')]
    main, _, details = layers.partition("<details>")
    assert "DRAM accesses" not in main and "DRAM accesses (32-bit words)" in details
    assert "MACs forward" in details and "<th class=\"num\">energy</th>" in main
    sharing = html[html.index('<section id="sharing">'):html.index('<section id="sweep">')]
    assert "storage vs retraining" in sharing and "storage savings" not in sharing
