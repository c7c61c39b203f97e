"""The ``incremental`` command line: run / demo / report, flags over the file, one-line errors (exit 2)."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from incremental.cli import main
from incremental.cli.demo import demo_config
from incremental.run.config import FIELDS, RunConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def write_fashion_idx(folder: Path, train: int = 24, test: int = 8, seed: int = 1) -> Path:
    """Fashion-MNIST-format gzipped IDX files of 10 learnable blob classes (blob position = class)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        labels = np.repeat(np.arange(10), n).astype(np.uint8)
        rng.shuffle(labels)
        cy = 7 + 14 * (labels // 5)[:, None, None] + rng.normal(0, 1, (len(labels), 1, 1))
        cx = 3 + 5.5 * (labels % 5)[:, None, None] + rng.normal(0, 1, (len(labels), 1, 1))
        blob = 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5**2))
        images = np.clip(40 + blob + rng.normal(0, 20, blob.shape), 0, 255).astype(np.uint8)
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as fh:
            fh.write(struct.pack(">IIII", 0x803, len(images), 28, 28) + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as fh:
            fh.write(struct.pack(">II", 0x801, len(labels)) + labels.tobytes())
    return folder


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory) -> Path:
    return write_fashion_idx(tmp_path_factory.mktemp("fashion-idx-cli"))


TINY_TOML = """\
name = "cli-tiny"
dataset = "fashion-mnist"
data_root = "{root}"
model = "smallcnn"
tasks = "5+5"
device = "cpu"
out = "{out}"
share = 2
strategies = ["partial-sharing", "regular-incremental"]

[base]
epochs = 1
batch = 32

[branch]
epochs = 1
batch = 32

[output_calibration]
holdout_fraction = 0.2
"""


@pytest.fixture()
def tiny_toml(tmp_path, idx_root) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML.format(root=idx_root, out=tmp_path / "run"))
    return path


def one_error_line(capsys, code: int, *needles: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("incremental: error: "), lines[0]
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "edit, needles",
    [
        (lambda t: "batchsize = 3\n" + t, ["unknown field 'batchsize'"]),
        (lambda t: t.replace("epochs = 1\nbatch = 32\n\n[branch]", "epoch = 1\nbatch = 32\n\n[branch]"),
         ["unknown field 'base.epoch'", "did you mean 'base.epochs'"]),
        (lambda t: t.replace('tasks = "5+5"', 'tasks = "5+five"'), ["field 'tasks'"]),
        (lambda t: t.replace("[base]\nepochs = 1", '[base]\nepochs = "one"'), ["field 'base.epochs'", "integer"]),
        (lambda t: t.replace("share = 2", "share = true"), ["field 'share'"]),
        (lambda t: t.replace('model = "smallcnn"\n', ""), ["missing required field 'model'"]),
        (lambda t: t.replace('model = "smallcnn"', 'model = "smalcnn"'), ["field 'model'", "did you mean 'smallcnn'"]),
        (lambda t: t.replace('strategies = ["partial-sharing"', 'strategies = ["partial"'), ["field 'strategies[0]'"]),
        (lambda t: t.replace("[base]", "[base"), ["invalid TOML"]),
    ],
)
def test_bad_config_is_one_line_exit_2(tiny_toml, capsys, edit, needles) -> None:
    tiny_toml.write_text(edit(tiny_toml.read_text()))
    one_error_line(capsys, main(["run", str(tiny_toml)]), str(tiny_toml), *needles)


def test_bad_flags_are_one_line_exit_2(tiny_toml, capsys) -> None:
    one_error_line(capsys, main(["run", str(tiny_toml), "--base-epochs", "three"]), "base.epochs")
    one_error_line(capsys, main(["run", str(tiny_toml), "--set", "base.epoch=3"]), "unknown field 'base.epoch'")
    one_error_line(capsys, main(["run", str(tiny_toml), "--set", "nonsense"]), "FIELD=VALUE")
    one_error_line(capsys, main(["run", str(tiny_toml.parent / "missing.toml")]), "not found")
    one_error_line(capsys, main(["run", "--dataset", "mnist", "--model", "smallcnn"]), "missing required field 'tasks'")


def test_missing_data_is_one_line_exit_2(tiny_toml, tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["run", str(tiny_toml), "--data-root", str(empty), "--quiet"])
    one_error_line(capsys, code, "missing IDX file", "train-images-idx3-ubyte")
    code = main(["run", str(tiny_toml), "--data-root", str(tmp_path / "nowhere"), "--quiet"])
    one_error_line(capsys, code, "does not exist")
    assert not (tmp_path / "run" / "run.json").exists()  # nothing written for a run that never started


def test_model_that_does_not_fit_the_data(tiny_toml, capsys) -> None:
    code = main(["run", str(tiny_toml), "--model", "cifar_resnet20", "--quiet"])
    one_error_line(capsys, code, "cifar_resnet20", "1x28x28")


def test_share_out_of_range(tiny_toml, capsys) -> None:
    code = main(["run", str(tiny_toml), "--share", "9", "--quiet"])
    one_error_line(capsys, code, "field 'share'", "out of range 0..5")


def test_report_refuses_unfinished_and_foreign_folders(tmp_path, capsys) -> None:
    run_dir = tmp_path / "half"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"status": "running"}))
    one_error_line(capsys, main(["report", str(run_dir)]), f"run directory {run_dir} is unfinished")
    other = tmp_path / "other"
    other.mkdir()
    one_error_line(capsys, main(["report", str(other)]), "not a run directory")
    one_error_line(capsys, main(["report", str(tmp_path / "nothing")]), "not found")


# ---------------------------------------------------------------------------- flags
def test_every_field_has_a_flag_and_flags_override_the_file(tiny_toml, capsys) -> None:
    flags = {f.flag for f in FIELDS}
    assert {"--data-root", "--base-epochs", "--branch-lr", "--search-tolerance", "--share", "--seeds",
            "--output-calibration-enabled", "--strategies", "--energy-table"} <= flags
    code = main(["run", str(tiny_toml), "--print-config", "--base-epochs", "3", "--set", "branch.lr=0.2",
                 "--seeds", "0,1", "--share", "auto", "--output-calibration-enabled", "false"])
    assert code == 0
    cfg = RunConfig.from_dict(__import__("tomllib").loads(capsys.readouterr().out))
    assert (cfg.base.epochs, cfg.branch.lr, cfg.seeds, cfg.share) == (3, 0.2, [0, 1], "auto")
    assert cfg.output_calibration.enabled is False and cfg.branch.epochs == 1  # the rest comes from the file
    assert cfg == load_config(tiny_toml, {"base.epochs": "3", "branch.lr": "0.2", "seeds": "0,1", "share": "auto",
                                          "output_calibration.enabled": "false"})


def test_shipped_configs_load(capsys) -> None:
    demo = load_config(REPO / "reports" / "fashion-mnist-demo-run.toml")
    assert demo == demo_config()  # the file and `incremental demo` are the same experiment
    cifar = load_config(REPO / "reports" / "cifar10-resnet20-run.toml")
    assert (cifar.dataset, cifar.model, cifar.tasks, cifar.data_root) == ("imagefolder", "cifar_resnet20", "5+5", None)
    # without --data-root the CIFAR-10 config says what to pass
    code = main(["run", str(REPO / "reports" / "cifar10-resnet20-run.toml"), "--out", "/nonexistent/x", "--quiet"])
    one_error_line(capsys, code, "--data-root")


# ---------------------------------------------------------------------------- end to end
def test_run_rerun_and_report(tiny_toml, tmp_path, capsys) -> None:
    assert main(["run", str(tiny_toml), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "partial-sharing" in out and "results:" in out
    run_dir = tmp_path / "run"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["per_seed"][0]["sharing"]["share"] == 2
    stamp = (run_dir / "results.json").stat().st_mtime_ns
    assert main(["run", str(tiny_toml)]) == 0  # finished: reported, not recomputed
    captured = capsys.readouterr()
    assert "is finished" in captured.err and (run_dir / "results.json").stat().st_mtime_ns == stamp
    assert main(["report", str(run_dir), "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "<html" in html.lower() and "partial-sharing" in html and "Engine results" in html


def test_demo_quick_via_python_m(idx_root, tmp_path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "incremental", "demo", "--quick", "--quiet", "--out", str(out),
                           "--data-root", str(idx_root)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout and (out / "report.html").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["name"] == "fashion-mnist-demo-quick" and results["dataset"]["source"].startswith(str(idx_root))
    assert set(results["summary"]["strategies"]) == {"partial-sharing", "regular-incremental", "feature-extraction",
                                                     "naive-finetune", "full-retraining"}
    # no Fashion-MNIST where it is looked for: one line naming the package and the flag, exit 2
    proc = subprocess.run([sys.executable, "-m", "incremental", "demo", "--quick", "--quiet", "--out",
                           str(tmp_path / "d2"), "--data-root", str(tmp_path / "no-such-folder")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_torchrun_two_processes(tiny_toml, tmp_path) -> None:
    """Data-parallel run under torchrun (gloo on CPU): one results.json written by rank 0, same guarantees."""
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "incremental",
         "run", str(tiny_toml), "--out", str(out), "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["world_size"] == 2 and results["environment"]["backend"] == "gloo"
    assert proc.stdout.count("results:") == 1  # only rank 0 prints
    for name in ("partial-sharing", "regular-incremental"):
        assert results["summary"]["strategies"][name]["old_tasks_unchanged"] is True
