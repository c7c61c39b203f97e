"""Bad inputs and faults against the ``energymodel`` command line (issue 9): one line on stderr, exit 2.

Each case runs the CLI in-process (``energymodel.cli.main``) and checks the exit status and that stderr
holds exactly one line, ``energymodel: error: ...``, naming the culprit.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from torch import nn

import energymodel.atomic as atomic
from energymodel.atomic import stale_temp_files, write_text
from energymodel.cli import main
from energymodel.count.trace import trace
from energymodel.price.table import MAX_TABLE_BYTES, load_table

ROOT = Path(__file__).resolve().parent.parent
TABLE_45NM = (ROOT / "energymodel" / "price" / "tables" / "45nm.toml").read_text(encoding="utf-8")


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *needles: str) -> str:
    assert rc == 2, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("energymodel: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# -- input shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, needle", [
    ("3,100000,100000", "more than the 2,147,483,648"),  # 3e10 elements: once a 120 GB allocation
    ("99999999999999999999999,28,28", "bad input shape"),  # once an overflow in torch.zeros
    ("1,0,28", "positive"),
    ("1,-3,28", "bad input shape"),
    ("3;32;32", "rejects input shapes 3; 32; 32"),  # three inputs (";" separates inputs): one line too
])
def test_absurd_input_shapes(capsys, shape: str, needle: str) -> None:
    rc, out, err = run(["profile", "smallcnn", "--input", shape], capsys)
    one_line_error(rc, err, needle)
    assert out == ""


def test_large_input_traced_without_allocating_it(tmp_path: Path) -> None:
    """1x20000x20000 into a conv net: 1.6 GB of input and 51 GB of conv output if it ran on real tensors.

    The child runs under a 4 GiB address-space limit, so a real allocation fails instead of swapping.
    """
    code = textwrap.dedent(
        """
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        from torch import nn
        from energymodel.profile import profile
        net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(32, 10))
        p = profile(net, (1, 20000, 20000), warn=False)
        print(p.totals["macs_forward"], p.layers.loc[p.layers.name == "0", "macs_forward"].item())
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    total, conv1 = (float(v) for v in proc.stdout.split())
    assert conv1 == 20000 * 20000 * 32 * 9  # 3x3 conv, 1 -> 32 channels, padding 1: one MAC per tap
    assert total == conv1 + 32 * 10  # and the classifier's 32 x 10


def test_trace_on_meta_matches_a_real_forward() -> None:
    """A model that reads tensor values (``.item()``) cannot run on meta: traced on CPU, same layers."""

    class ReadsValues(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 4 * 4, 3)

        def forward(self, x):
            y = self.conv(x)
            if y.sum().item() > 1e9:  # data-dependent: impossible on the meta device
                y = y * 0
            return self.fc(y.flatten(1))

    tr = trace(ReadsValues(), (1, 6, 6))
    assert [c.name for c in tr.calls if c.module is not None] == ["conv", "fc"]
    assert tr.output_shape == (3,)


# -- models ------------------------------------------------------------------------------------------

BAD_MODELS = textwrap.dedent(
    """
    from torch import nn


    def lazy():
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(10))


    class Shaped(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.input_shape = shape

        def forward(self, x):
            return self.fc(x)


    def shape_string():
        return Shaped("abc")


    def shape_int():
        return Shaped(5)


    def shape_negative():
        return Shaped([4, -1])


    def multiline():
        raise ValueError("first line of the problem\\nsecond line\\nthird line")
    """
)


@pytest.fixture()
def bad_models(tmp_path: Path) -> Path:
    path = tmp_path / "badmodels.py"
    path.write_text(BAD_MODELS, encoding="utf-8")
    return path


def test_lazy_modules_are_initialised_then_profiled(capsys, bad_models: Path) -> None:
    rc, out, err = run(["profile", f"{bad_models}:lazy", "--input", "1,28,28", "--format", "json"], capsys)
    assert rc == 0, err
    layers = {r["name"]: r for r in json.loads(out)["data"]["layers"]}
    assert layers["1"]["macs_forward"] == 28 * 28 * 10  # LazyLinear(10) became Linear(784, 10)
    assert layers["1"]["params"] == 28 * 28 * 10 + 10


@pytest.mark.parametrize("factory, needle", [
    ("shape_string", "input_shape attribute is not a usable shape"),
    ("shape_int", "input_shape attribute is not a usable shape"),
    ("shape_negative", "input_shape attribute is not a usable shape"),
])
def test_input_shape_attribute_that_is_not_a_shape(capsys, bad_models: Path, factory: str, needle: str) -> None:
    rc, _, err = run(["profile", f"{bad_models}:{factory}"], capsys)
    one_line_error(rc, err, needle)


def test_multiline_factory_error_prints_one_line(capsys, bad_models: Path) -> None:
    rc, _, err = run(["profile", f"{bad_models}:multiline", "--input", "4"], capsys)
    line = one_line_error(rc, err, "factory raised ValueError: first line of the problem")
    assert "second line" not in line


# -- sweeps ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("points", ["1000000000", "1000000000000"])
def test_huge_sweep_grid_refused_before_it_is_built(capsys, points: str) -> None:
    t0 = time.perf_counter()
    rc, _, err = run(["sweep", "smallcnn", "--vary", f"dram=100:2000:{points}"], capsys)
    one_line_error(rc, err, "--vary dram", f"{points} points")
    assert time.perf_counter() - t0 < 5  # no 8 GB grid first


def test_huge_sweep_grid_in_a_recipe(capsys, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[report]\ntitle = "t"\n[model]\nname = "smallcnn"\n'
                      '[[sweep]]\nvary = { dram = "100:2000:1000000000000" }\n', encoding="utf-8")
    rc, _, err = run(["report", str(recipe)], capsys)
    one_line_error(rc, err, "vary.dram", "1000000000000 points")


# -- tables and recipes ------------------------------------------------------------------------------


def test_table_entry_1e308_is_refused(capsys, tmp_path: Path) -> None:
    table = tmp_path / "big.toml"
    table.write_text(TABLE_45NM.replace("pj = 640.0", "pj = 1e308"),
                     encoding="utf-8")
    assert "1e308" in table.read_text(encoding="utf-8")
    rc, _, err = run(["compare", "smallcnn", "--energy-table", str(table), "--format", "json"], capsys)
    one_line_error(rc, err, "memory.dram.pj must be at most 1e+15")


def test_json_output_writes_null_for_an_overflow(capsys, tmp_path: Path) -> None:
    """A sweep value itself may be huge (1e300 pJ): energies overflow to inf and JSON says null."""
    rc, out, err = run(["sweep", "smallcnn", "--vary", "dram=1e300,1e308", "--k", "0", "--format", "json"], capsys)
    assert rc == 0, err
    rows = json.loads(out)["data"]["rows"]
    assert rows and all(r["energy_pj"] is None or r["energy_pj"] > 1e300 for r in rows)
    assert any(r["energy_pj"] is None for r in rows)


def test_table_file_too_large_is_refused_before_parsing(capsys, tmp_path: Path) -> None:
    table = tmp_path / "huge.toml"
    with table.open("w", encoding="utf-8") as f:
        f.write(TABLE_45NM)
        f.write("#" + "x" * (MAX_TABLE_BYTES + 10) + "\n")
    t0 = time.perf_counter()
    rc, _, err = run(["tables", str(table)], capsys)
    one_line_error(rc, err, "larger than the 1,048,576 bytes accepted")
    assert time.perf_counter() - t0 < 2


@pytest.mark.parametrize("kind", ["table", "recipe"])
def test_deeply_nested_toml(capsys, tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"deep-{kind}.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    argv = ["tables", str(path)] if kind == "table" else ["report", str(path)]
    rc, _, err = run(argv, capsys)
    one_line_error(rc, err, "nested too deeply")


def test_tables_csv_is_csv(capsys) -> None:
    rc, out, err = run(["tables", "45nm", "--format", "csv"], capsys)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "section,entry,pj,bits,source"
    t = load_table("45nm")
    assert lines[1].startswith(f"operations,mac,{t.op_pj('mac')},")
    assert len(lines) == 1 + 4 + 3  # four operations, three memory levels


# -- output files: full disk, fsync, stale temporary files -------------------------------------------


def _full_disk(monkeypatch) -> None:
    def no_space(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)


def test_full_disk_one_line_naming_the_file(capsys, tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.json"
    target.write_text("old", encoding="utf-8")
    _full_disk(monkeypatch)
    rc, _, err = run(["profile", "smallcnn", "--format", "json", "-o", str(target)], capsys)
    one_line_error(rc, err, f"cannot write {target}", "No space left on device")
    monkeypatch.undo()
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary file left


def test_fsync_before_rename(tmp_path: Path, monkeypatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write_text(tmp_path / "a.txt", "hello")
    assert events[:2] == ["fsync", "replace"]
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "hello"


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    killed = tmp_path / f".out.json.{dead}-0123abcd.tmp"  # its writer (that process) is gone
    live = tmp_path / f".out.json.{os.getppid()}-4567cdef.tmp"  # a live process is writing it
    old_legacy = tmp_path / ".out.json.ab_cd123.tmp"  # mkstemp name, no pid: stale after an hour
    new_legacy = tmp_path / ".out.json.zz_yy987.tmp"
    other = tmp_path / ".other.json.999999-0123abcd.tmp"  # another target's
    user_file = tmp_path / ".out.json.backup.tmp"  # not the writer's pattern
    for p in (killed, live, old_legacy, new_legacy, other, user_file):
        p.write_text("partial", encoding="utf-8")
    hours_ago = time.time() - 2 * 3600
    os.utime(old_legacy, (hours_ago, hours_ago))
    assert sorted(stale_temp_files(target)) == sorted([killed, old_legacy])
    write_text(target, "new")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["out.json", live.name, new_legacy.name, other.name, user_file.name])


# -- issue 18: the last tracebacks ---------------------------------------------------------------------


@pytest.mark.parametrize("batch", ["100000000000000000000", str(2**31 + 1)])
def test_a_batch_beyond_the_counted_range_is_one_line(capsys, batch: str) -> None:
    rc, out, err = run(["profile", "smallcnn", "--batch", batch], capsys)
    one_line_error(rc, err, "batch", "2,147,483,648")
    assert out == ""


def test_profile_api_refuses_a_batch_beyond_the_counted_range() -> None:
    from energymodel import profile
    from energymodel.errors import UserError

    with pytest.raises(UserError, match="larger than the 2,147,483,648"):
        profile("smallcnn", batch=10**18)


def test_a_sweep_grid_beyond_a_table_entry_is_one_line_not_an_overflow(capsys) -> None:
    rc, out, err = run(["sweep", "smallcnn", "--vary", "buffer=1e300:1e308:3", "--format", "json"], capsys)
    one_line_error(rc, err, "buffer", "at most 1e+15")
    assert out == ""
    rc, out, err = run(["sweep", "smallcnn", "--vary", "buffer=1e14:1e15:2", "--format", "json"], capsys)
    assert rc == 0, err
    assert sorted({r["buffer_bytes"] for r in json.loads(out)["data"]["rows"]}) == [10**14, 10**15]


LAZY_MODEL = """
from torch import nn

def net(num_classes=10):
    return nn.Sequential(nn.LazyConv2d(8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(num_classes))
"""


@pytest.mark.parametrize("command", ["points", "compare"])
def test_lazy_layers_work_in_points_and_compare_as_in_profile(tmp_path, capsys, command: str) -> None:
    model = tmp_path / "lazy.py"
    model.write_text(LAZY_MODEL)
    rc, out, err = run([command, f"{model}:net", "--input", "3,8,8", "--format", "json"], capsys)
    assert rc == 0, err
    data = json.loads(out)["data"]
    rows = data if command == "points" else data["rows"]
    assert {r["k"] for r in rows} == {0, 1, 2, 3}


@pytest.mark.parametrize("flag", ["--engine", "--measured"])
def test_report_inputs_nested_too_deeply_are_one_line(tmp_path, capsys, flag: str) -> None:
    deep = "[" * 100000 + "]" * 100000
    if flag == "--engine":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "results.json").write_text(deep)
        arg = str(tmp_path / "run")
    else:
        (tmp_path / "m.json").write_text(deep)
        arg = str(tmp_path / "m.json")
    recipe = ROOT / "reports" / "fashion-mnist-demo.toml"
    rc, out, err = run(["report", str(recipe), flag, arg, "-o", str(tmp_path / "r.html")], capsys)
    one_line_error(rc, err, "nested too deeply")


@pytest.mark.parametrize("argv", [
    ["report", "{long}.toml"],
    ["report", str(ROOT / "reports" / "fashion-mnist-demo.toml"), "-o", "{tmp}/{long}.html"],
    ["profile", "smallcnn", "-o", "{tmp}/{long}.json"],
    ["profile", "{tmp}/{long}.py:net"],
    ["profile", "smallcnn", "--energy-table", "{tmp}/{long}.toml"],
])
def test_a_path_longer_than_the_file_system_allows_is_one_line(tmp_path, capsys, argv: list[str]) -> None:
    long = "a" * 300
    rc, out, err = run([a.format(long=long, tmp=tmp_path) for a in argv], capsys)
    one_line_error(rc, err, "File name too long")
