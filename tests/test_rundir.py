"""No run is ever lost: ``--force``, the lock, interrupted starts, changed code, unreadable files.

Every scenario runs the real engine (tiny Fashion-MNIST-format data written by the tests) and, for the
lock, a real second process holding it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_run import tiny_config, write_fashion_idx, write_toml  # noqa: E402

from energymodel.errors import UserError
from incremental.cli import main as cli_main
from incremental.run.config import RunConfig, load_config
from incremental.run.directory import staging_dir
from incremental.run.runner import KILL_ENV, load_results, run, run_status

REPO = Path(__file__).resolve().parents[1]


def small(idx: Path, out: Path, **changes) -> dict:
    return tiny_config(idx, out, share=2, strategies=["partial-sharing"], train_per_class=16,
                       base={"epochs": 1}, branch={"epochs": 1}, **changes)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of a run and its hash (the lock file is not part of the run: a killed holder leaves it)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "run.lock"}


@pytest.fixture(scope="module")
def idx(tmp_path_factory) -> Path:
    return write_fashion_idx(tmp_path_factory.mktemp("idx"), train=20, test=6)


@pytest.fixture(scope="module")
def finished_once(idx, tmp_path_factory) -> tuple[Path, dict]:
    cfg = small(idx, tmp_path_factory.mktemp("finished") / "run")
    out = run(RunConfig.from_dict(cfg))
    assert run_status(out) == "done"
    return out, cfg


@pytest.fixture()
def finished(finished_once, tmp_path) -> tuple[Path, dict]:
    """A private copy of one finished run (its config pointed at the copy)."""
    src, cfg = finished_once
    out = tmp_path / "run"
    shutil.copytree(src, out)
    return out, {**cfg, "out": str(out)}


class Holder:
    """A second process that holds ``folder``'s run lock until it is stopped."""

    def __init__(self, folder: Path) -> None:
        code = textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from incremental.run.directory import RunLock
            lock = RunLock(Path({str(folder)!r})).acquire()
            print("locked", flush=True)
            sys.stdin.read()
        """)
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=REPO)
        assert self.proc.stdout.readline().strip() == "locked"

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def test_refused_force_leaves_the_old_run_exactly_as_it_was(finished, capsys) -> None:
    out, cfg = finished
    before = snapshot(out)
    bad = RunConfig.from_dict({**cfg, "data_root": "/nonexistent/fashion"})
    with pytest.raises(UserError, match="nonexistent"):
        run(bad, force=True)
    assert snapshot(out) == before and not staging_dir(out).exists()
    # the same through the command line: one line, exit 2, nothing changed
    config = write_toml(out.parent / "cfg.toml", cfg)
    assert cli_main(["run", str(config), "--force", "--data-root", "/nonexistent/fashion", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("incremental: error:")
    assert snapshot(out) == before


def test_force_is_refused_while_another_process_holds_the_run(finished) -> None:
    out, cfg = finished
    before = snapshot(out)
    holder = Holder(out)
    try:
        with pytest.raises(UserError, match=f"in use by process {holder.proc.pid}"):
            run(RunConfig.from_dict({**cfg, "branch": {**cfg["branch"], "epochs": 2}}), force=True)
        with pytest.raises(UserError, match=f"in use by process {holder.proc.pid}"):
            run(RunConfig.from_dict(cfg))
    finally:
        holder.stop()
    assert snapshot(out) == before
    # once the holder is gone its lock file is stale and the directory is usable again
    assert run(RunConfig.from_dict(cfg)) == out


def test_force_replaces_the_run_only_when_the_new_one_has_finished(finished, tmp_path) -> None:
    out, cfg = finished
    before = snapshot(out)
    new = {**cfg, "branch": {**cfg["branch"], "epochs": 2}}
    config = write_toml(tmp_path / "new.toml", new)
    env = {**os.environ, KILL_ENV: "partial-sharing-task1:epoch:1"}
    proc = subprocess.run([sys.executable, "-m", "incremental", "run", str(config), "--force", "--quiet"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (-9, 137), proc.stderr[-2000:]
    assert snapshot(out) == before  # killed mid-run: the old run is intact
    assert run_status(staging_dir(out)) == "unfinished"
    run(load_config(config), force=True)  # the forced run resumes from its staging folder and is swapped in
    assert not staging_dir(out).exists()
    results = load_results(out)
    assert results["config"]["branch"]["epochs"] == 2 and results["run_dir"] == str(out)
    assert results["per_seed"][0]["strategies"]["partial-sharing"]["tasks"][0]["resumed_from_epoch"] == 1


def test_a_kill_between_the_two_renames_of_a_swap_is_repaired(finished, tmp_path) -> None:
    out, cfg = finished
    new = {**cfg, "seeds": [1]}
    config = write_toml(tmp_path / "new.toml", new)
    env = {**os.environ, KILL_ENV: "swap"}
    proc = subprocess.run([sys.executable, "-m", "incremental", "run", str(config), "--force", "--quiet"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (-9, 137), proc.stderr[-2000:]
    assert not out.exists() and run_status(staging_dir(out)) == "done"
    assert run(load_config(config)) == out  # the next call finishes the swap; nothing is recomputed
    assert load_results(out)["seeds"] == [1]


def test_an_interrupted_start_can_be_run_again(idx, tmp_path) -> None:
    out = tmp_path / "fresh"
    out.mkdir()
    (out / "run.lock").write_text("999999\n")  # a kill right after taking the lock, before run.json
    (out / ".run.json.abc123.tmp").write_text("{")  # and a half-written file of the atomic writer
    cfg = small(idx, out)
    run(RunConfig.from_dict(cfg))
    assert run_status(out) == "done" and not list(out.rglob(".*.tmp"))


def test_stale_temporaries_are_removed_when_a_run_resumes(idx, tmp_path) -> None:
    out = tmp_path / "tmpfiles"
    config = write_toml(tmp_path / "c.toml", small(idx, out))
    env = {**os.environ, KILL_ENV: "phase:base"}
    proc = subprocess.run([sys.executable, "-m", "incremental", "run", str(config), "--quiet"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (-9, 137)
    (out / "seed-0" / "checkpoints" / ".base.pt.xyz.tmp").write_bytes(b"half")
    run(load_config(config))
    assert run_status(out) == "done" and not list(out.rglob(".*.tmp"))


def test_resume_with_changed_model_code_is_refused(idx, tmp_path) -> None:
    model = tmp_path / "net.py"
    model.write_text("from energymodel.models.zoo import build\n\ndef net(num_classes):\n    return build('smallcnn', num_classes)\n")
    out = tmp_path / "model-run"
    config = write_toml(tmp_path / "m.toml", small(idx, out, model=f"{model}:net"))
    env = {**os.environ, KILL_ENV: "phase:base"}
    proc = subprocess.run([sys.executable, "-m", "incremental", "run", str(config), "--quiet"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (-9, 137), proc.stderr[-2000:]
    model.write_text(model.read_text() + "# edited\n")
    with pytest.raises(UserError, match=r"model's code \(.*net\.py\) changed since"):
        run(load_config(config))
    run(load_config(config), force=True)  # --force starts over with the new code
    assert run_status(out) == "done"


def test_checkpoint_that_does_not_fit_the_model_is_one_line(idx, tmp_path) -> None:
    out = tmp_path / "ck"
    config = write_toml(tmp_path / "ck.toml", small(idx, out))
    env = {**os.environ, KILL_ENV: "phase:base"}
    subprocess.run([sys.executable, "-m", "incremental", "run", str(config), "--quiet"], cwd=REPO, env=env,
                   capture_output=True, text=True, timeout=300)
    from incremental.model.checkpoint import load_checkpoint, save_checkpoint

    ck = out / "seed-0" / "checkpoints" / "base.pt"
    state = load_checkpoint(ck)
    state["state_dict"].pop(next(iter(state["state_dict"])))
    save_checkpoint(ck, state)  # a sound checkpoint (its digest matches) of another model
    with pytest.raises(UserError, match=r"checkpoint .*base\.pt does not fit the model \(missing blocks\."):
        run(load_config(config))


@pytest.mark.parametrize("content", [b"{}", b"[1, 2]", b"\xff\xfe not utf-8", b"[" * 100000 + b"]" * 100000])
def test_report_on_a_broken_results_file_is_one_line(finished, content, capsys) -> None:
    out, _ = finished
    (out / "results.json").write_bytes(content)
    assert cli_main(["report", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out / "results.json") in err[0]


def test_config_that_is_not_utf8_is_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    assert cli_main(["run", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not UTF-8" in err[0]
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert cli_main(["run", str(deep), "--print-config"]) == 2
    assert "nested too deeply" in capsys.readouterr().err


def test_run_json_that_is_corrupt_is_named_as_such(finished) -> None:
    out, cfg = finished
    (out / "run.json").write_text("{not json")
    with pytest.raises(UserError, match="run.json is corrupt or unreadable"):
        run(RunConfig.from_dict({**cfg, "base": {**cfg["base"], "epochs": 2}}))
    assert json.loads((out / "results.json").read_text())["status"] == "done"


def test_learning_rate_out_of_range_or_diverging_is_one_line(idx, tmp_path, capsys) -> None:
    config = write_toml(tmp_path / "lr.toml", small(idx, tmp_path / "lr-run"))
    assert cli_main(["run", str(config), "--base-lr", "1e308", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "base.lr" in err[0] and not (tmp_path / "lr-run").exists()  # refused before any write
    assert cli_main(["run", str(config), "--base-lr", "1e30", "--quiet"]) == 2  # representable, but diverges
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverged in epoch 1" in err[0]
