"""Round three of "no run is ever lost" (issue 18): planning under the lock, links never followed, marked
staging folders, checkpoint digests, corrupt records, a resumed run's whole results (cost ledger included),
the model's source closure, and SIGKILL at random moments.

A kill is simulated in-process where the moment is a named point (``Killed`` raised from the engine's own
event or write, which leaves the disk exactly as a SIGKILL there would); the kill-anywhere test uses real
SIGKILLs of a child process (``benchmarks/bench_kill_resume.py``).
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_run import write_fashion_idx, write_toml
from test_rundir import small, snapshot

import incremental.run.phases as phases_module
import incremental.run.runner as runner_module
from energymodel.errors import UserError
from incremental.cli import main as cli_main
from incremental.model.checkpoint import load_checkpoint, save_checkpoint
from incremental.run.config import RunConfig, load_config
from incremental.run.directory import staging_dir
from incremental.run.runner import load_results, run, run_status

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_kill_resume", REPO / "benchmarks" / "bench_kill_resume.py")
kill_bench = sys.modules.setdefault("bench_kill_resume", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(kill_bench)


class Killed(BaseException):
    """Stands for a SIGKILL at a named moment (not an Exception: nothing in the engine catches it)."""


def kill_at_event(monkeypatch, name: str) -> None:
    plain = phases_module._event

    def event(what: str) -> None:
        plain(what)
        if what == name:
            raise Killed(what)

    monkeypatch.setattr(phases_module, "_event", event)


def kill_inside_write(monkeypatch, filename: str) -> None:
    """Kill in the middle of writing ``filename`` (a phase record): its temporary file half written."""
    plain = phases_module.write_text

    def write_text(target, text, *a, **k):
        if Path(target).name == filename:
            tmp = Path(target).parent / f".{filename}.{os.getpid()}-deadbeef.tmp"
            tmp.write_text(text[: len(text) // 2])
            raise Killed(filename)
        return plain(target, text, *a, **k)

    monkeypatch.setattr(phases_module, "write_text", write_text)


@pytest.fixture(scope="module")
def idx(tmp_path_factory) -> Path:
    return write_fashion_idx(tmp_path_factory.mktemp("idx"), train=20, test=6)


@pytest.fixture(scope="module")
def reference(idx, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference") / "run"
    return load_results(run(RunConfig.from_dict(small(idx, out))))


@pytest.fixture(scope="module")
def finished_other(idx, tmp_path_factory) -> Path:
    """A finished run of another configuration (two branch epochs)."""
    out = tmp_path_factory.mktemp("other") / "run"
    return run(RunConfig.from_dict(other(idx, out)))


def other(idx: Path, out: Path) -> dict:
    """``small`` with two branch epochs: another configuration."""
    cfg = small(idx, out)
    return {**cfg, "branch": {**cfg["branch"], "epochs": 2}}


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("incremental: error:"), err
    return err[0]


# ---------------------------------------------------------------------------- planning under the lock
def test_a_run_finished_while_another_was_loading_its_data_is_not_emptied(idx, finished_other, tmp_path,
                                                                          monkeypatch) -> None:
    """B judged ``out`` new; while B loaded its data, A finished a run of another config there. B must refuse."""
    out = tmp_path / "x"
    plain = runner_module._load_raw

    def slow_load(*a, **k):
        shutil.copytree(finished_other, out)  # A ran and finished meanwhile
        return plain(*a, **k)

    monkeypatch.setattr(runner_module, "_load_raw", slow_load)
    with pytest.raises(UserError, match="different configuration"):
        run(RunConfig.from_dict(small(idx, out)))
    assert run_status(out) == "done"
    assert snapshot(out) == snapshot(finished_other)


def test_a_swap_interrupted_by_a_kill_is_repaired_only_under_the_lock(idx, finished_other, tmp_path) -> None:
    """``recover_swap`` renames folders: planning alone (a refused or dry call) must not touch them."""
    from incremental.run.directory import plan_run

    out = tmp_path / "run"
    shutil.copytree(finished_other, staging_dir(out))
    (staging_dir(out) / "STAGING").write_text("")
    shutil.copytree(finished_other, out.parent / f".{out.name}.replaced")
    before = {p: snapshot(p) for p in (staging_dir(out), out.parent / f".{out.name}.replaced")}
    cfg = RunConfig.from_dict(other(idx, out))
    plan = plan_run(out, cfg.to_dict(), cfg.fingerprint(), None, False)
    assert plan.state == "done"
    assert not out.exists() and {p: snapshot(p) for p in before} == before
    assert run(cfg) == out and run_status(out) == "done"  # the run itself repairs it, holding the lock
    assert not staging_dir(out).exists() and not (out.parent / f".{out.name}.replaced").exists()


# ---------------------------------------------------------------------------- links and marks
@pytest.mark.parametrize("force", [False, True])
def test_a_lock_file_that_is_a_symlink_is_never_followed(idx, finished_other, tmp_path, force, capsys) -> None:
    out = tmp_path / "x"
    shutil.copytree(finished_other, out)
    precious = out / "precious.txt"
    precious.write_text("keep me\n")
    (out / "run.lock").unlink(missing_ok=True)
    (out / "run.lock").symlink_to(precious)
    cfg = small(idx, out) if force else other(idx, out)  # with --force: another config; without: the same (done)
    config = write_toml(tmp_path / "c.toml", cfg)
    assert cli_main(["run", str(config), "--quiet", *(["--force"] if force else [])]) == 2
    assert "run.lock" in one_line(capsys) and precious.read_text() == "keep me\n"
    assert not staging_dir(out).exists()


@pytest.mark.parametrize("kind", ["folder", "file", "symlink"])
def test_force_never_deletes_a_staging_folder_it_did_not_make(idx, finished_other, tmp_path, kind, capsys) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished_other, out)
    users = tmp_path / "users"
    users.mkdir()
    (users / "thesis.tex").write_text("years of work\n")
    stage = staging_dir(out)
    if kind == "folder":
        shutil.copytree(users, stage)
    elif kind == "file":
        stage.write_text("a user's file\n")
    else:
        stage.symlink_to(users, target_is_directory=True)
    before_run, before_stage = snapshot(out), (stage.read_text() if kind == "file" else snapshot(stage))
    config = write_toml(tmp_path / "c.toml", small(idx, out))  # another config than the run's: --force needed
    assert cli_main(["run", str(config), "--force", "--quiet"]) == 2
    assert stage.name in one_line(capsys)
    assert snapshot(out) == before_run
    assert (stage.read_text() if kind == "file" else snapshot(stage)) == before_stage
    assert (users / "thesis.tex").read_text() == "years of work\n"


def test_out_a_dangling_symlink_is_one_line(idx, tmp_path, capsys) -> None:
    link = tmp_path / "x"
    link.symlink_to(tmp_path / "nowhere")
    config = write_toml(tmp_path / "c.toml", small(idx, link))
    assert cli_main(["run", str(config), "--quiet"]) == 2
    assert "symbolic link" in one_line(capsys) and link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_a_run_folder_on_a_read_only_file_system_is_one_line(idx, tmp_path, capsys, monkeypatch) -> None:
    """As root no permission bit stops a write; the file system's refusal (EROFS) is simulated at mkdir."""
    plain = Path.mkdir

    def mkdir(self, *a, **k):
        if self.name == "ro":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return plain(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    config = write_toml(tmp_path / "c.toml", small(idx, tmp_path / "ro"))
    assert cli_main(["run", str(config), "--quiet"]) == 2
    assert "Read-only file system" in one_line(capsys)


# ---------------------------------------------------------------------------- checkpoints and records
@pytest.fixture(scope="module")
def killed_template(idx, tmp_path_factory) -> Path:
    """A run killed right after its ``base-eval`` phase (``base.pt``, ``base-agnostic.pt`` and their records)."""
    out = tmp_path_factory.mktemp("killed") / "run"
    with pytest.MonkeyPatch.context() as m:
        kill_at_event(m, "phase:base-eval")
        with pytest.raises(Killed):
            run(RunConfig.from_dict(small(idx, out)))
    assert run_status(out) == "unfinished"
    return out


@pytest.fixture()
def killed_after_base_eval(idx, killed_template, tmp_path) -> Path:
    """A private copy of the killed run; returns its configuration file."""
    out = tmp_path / "killed"
    shutil.copytree(killed_template, out)
    return write_toml(tmp_path / "k.toml", small(idx, out))


def test_a_flipped_bit_in_a_checkpoint_is_refused(killed_after_base_eval) -> None:
    config = killed_after_base_eval
    path = Path(load_config(config).out) / "seed-0" / "checkpoints" / "base.pt"
    ck = torch.load(path, weights_only=True)
    w = next(v for v in ck["state_dict"].values() if v.is_floating_point() and v.numel() > 10)
    w.view(torch.int32).view(-1)[3] ^= 1 << 7  # one bit of one weight
    torch.save(ck, path)
    with pytest.raises(UserError, match=r"checkpoint .*base\.pt .*digest.*--force"):
        run(load_config(config))


def test_corrupt_bytes_in_a_checkpoint_are_refused(killed_after_base_eval) -> None:
    config = killed_after_base_eval
    path = Path(load_config(config).out) / "seed-0" / "checkpoints" / "base.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"checkpoint .*base\.pt"):
        run(load_config(config))


def test_every_checkpoint_carries_a_digest_of_its_content(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "a.pt", {"w": torch.arange(6.0), "n": 3, "nested": {"b": [1.5, "x"]}})
    raw = torch.load(path, weights_only=True)
    assert set(raw) - {"w", "n", "nested"}  # something beside the content: the digest
    assert load_checkpoint(path)["n"] == 3
    raw["n"] = 4
    torch.save(raw, path)
    with pytest.raises(UserError, match="digest"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", ["[]", '{"samples": 16}', '"text"'])
def test_a_phase_record_that_is_not_a_record_is_one_line(killed_after_base_eval, content, capsys) -> None:
    config = killed_after_base_eval
    record = Path(load_config(config).out) / "seed-0" / "phases" / "base.json"
    record.write_text(content)
    assert cli_main(["run", str(config), "--quiet"]) == 2
    line = one_line(capsys)
    assert "base.json" in line and "delete it" in line


@pytest.mark.parametrize("damage", ["empty", "too many tasks", "too few statistics"])
def test_task_agnostic_statistics_that_do_not_fit_are_one_line(killed_after_base_eval, damage, capsys) -> None:
    config = killed_after_base_eval
    out = Path(load_config(config).out)
    path = out / "seed-0" / "checkpoints" / "base-agnostic.pt"
    state = load_checkpoint(path)["agnostic"]
    if damage == "empty":
        state = {}
    elif damage == "too many tasks":
        state["fitted"] = 3
    else:
        method = next(m for m, s in state["methods"].items() if any(isinstance(v, list) and v for v in s.values()))
        space = next(k for k, v in state["methods"][method].items() if isinstance(v, list) and v)
        state["methods"][method][space] = []
    save_checkpoint(path, {"agnostic": state})  # a valid digest: the content itself is wrong
    assert cli_main(["run", str(config), "--quiet"]) == 2
    line = one_line(capsys)
    assert "base-agnostic.pt" in line and "--force" in line


# ---------------------------------------------------------------------------- the resumed ledger
def test_a_kill_inside_a_phase_record_write_resumes_to_the_same_whole_results(idx, reference, tmp_path,
                                                                             monkeypatch) -> None:
    """The fit has no epoch left when resumed: its feature cache must still be priced as it ran."""
    out = tmp_path / "mid"
    config = write_toml(tmp_path / "mid.toml", small(idx, out))
    with monkeypatch.context() as m:
        kill_inside_write(m, "partial-sharing-task1.json")
        with pytest.raises(Killed):
            run(load_config(config))
    assert (out / "seed-0" / "checkpoints" / "partial-sharing-task1.partial.pt").is_file()
    resumed = load_results(run(load_config(config)))
    task = resumed["per_seed"][0]["strategies"]["partial-sharing"]["tasks"][0]
    assert task["cache_mode"] == "memory" and task["resumed_from_epoch"] == 1
    assert kill_bench.differences(kill_bench.comparable(reference), kill_bench.comparable(resumed)) == []


def test_the_whole_results_comparison_sees_a_changed_ledger(reference) -> None:
    """The comparison the kill tests rely on is not blind to the ledger."""
    changed = json.loads(json.dumps(reference))
    changed["per_seed"][0]["strategies"]["partial-sharing"]["cost"]["macs"] += 1
    changed["created"] = "another time"
    diff = kill_bench.differences(kill_bench.comparable(reference), kill_bench.comparable(changed))
    assert diff == [f".per_seed[0].strategies.partial-sharing.cost.macs: "
                    f"{reference['per_seed'][0]['strategies']['partial-sharing']['cost']['macs']!r} != "
                    f"{changed['per_seed'][0]['strategies']['partial-sharing']['cost']['macs']!r}"]


# ---------------------------------------------------------------------------- the model's source closure
def test_a_change_in_a_module_the_model_imports_is_refused_and_named(idx, tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "mylib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "width.py").write_text("WIDTH = 1\n")
    model = tmp_path / "net.py"
    model.write_text("from energymodel.models.zoo import build\nfrom mylib.width import WIDTH\n\n"
                     "def net(num_classes):\n    return build('smallcnn', num_classes * WIDTH)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "closure"
    config = write_toml(tmp_path / "m.toml", small(idx, out, model=f"{model}:net"))
    with monkeypatch.context() as m:
        kill_at_event(m, "phase:base")
        with pytest.raises(Killed):
            run(load_config(config))
    (pkg / "width.py").write_text("WIDTH = 1  # edited\n")
    with pytest.raises(UserError, match=r"mylib/width\.py"):
        run(load_config(config))


# ---------------------------------------------------------------------------- SIGKILL anywhere
def test_sigkill_at_random_moments_resumes_to_the_same_whole_results(tmp_path) -> None:
    """Real SIGKILLs of a child run: inside the write of partial sharing's phase record (the issue's case: the
    fit resumes with no epoch left), at a random time of what is left, inside a random atomic write (its
    temporary file half written); then the run to its end. The whole results must equal an uninterrupted run's.
    ``python benchmarks/bench_kill_resume.py`` runs the long sweep of random moments on the same harness."""
    data_root = write_fashion_idx(tmp_path / "idx", train=16, test=6)
    ref = kill_bench.reference(data_root, tmp_path, kill_bench.QUICK, in_process=True)
    assert ref.writes > 10
    seq = kill_bench.kill_sequence(3, 3, ref, data_root, tmp_path, kill_bench.QUICK,
                                   modes=["write:partial-sharing-task1.json", "time", "write"], finish_in_process=True)
    assert seq.error == "" and seq.killed >= 2 and seq.moments[0] == "write:partial-sharing-task1.json", seq
    assert seq.differences == [], (seq.moments, seq.differences[:10])


# ---------------------------------------------------------------------------- one line, not a traceback
def test_report_on_results_whose_curve_share_is_not_a_sharing_point_is_one_line(reference, tmp_path, capsys) -> None:
    from energymodel.cli import main as energymodel_main

    run_dir = Path(reference["run_dir"])
    for i, share in enumerate(("two", r"$\frac{1}{2}$", 1.5)):
        bad = tmp_path / f"bad-{i}"
        shutil.copytree(run_dir, bad)
        results = json.loads((bad / "results.json").read_text())
        results["report"]["calibration_curve"] = [{"share": share, "fraction": 0.5, "accuracy": 0.9, "energy_pj": 1.0,
                                                   "within_tolerance": True}]
        (bad / "results.json").write_text(json.dumps(results))
        assert cli_main(["report", str(bad), "-o", str(tmp_path / "r.html")]) == 2
        assert "calibration_curve[0].share" in one_line(capsys)
        assert energymodel_main(["report", str(REPO / "reports" / "fashion-mnist-demo.toml"), "--engine", str(bad),
                                 "-o", str(tmp_path / "e.html")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "calibration_curve[0].share" in err[0], err


def test_an_idx_file_larger_than_memory_says_the_data_does_not_fit(tmp_path) -> None:
    """``ulimit -v 4000000`` and an IDX file that inflates to 6 GiB: one line, exit 2 (once a MemoryError)."""
    import gzip
    import resource
    import struct

    root = write_fashion_idx(tmp_path / "idx", train=4, test=2)
    n = 8_300_000  # 8.3 M images of 28 x 28: 6.1 GiB
    expected = 16 + n * 28 * 28
    member = gzip.compress(struct.pack(">IIII", 0x803, n, 28, 28))  # the header; the data is never reached
    filler = bytes(expected // 1032 + 1 - len(member) - 4)  # as long as deflate needs for that much
    (root / "train-images-idx3-ubyte.gz").write_bytes(member + filler + (expected % 2**32).to_bytes(4, "little"))
    config = write_toml(tmp_path / "big.toml", small(root, tmp_path / "big"))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4_000_000 * 1024, 4_000_000 * 1024))

    proc = subprocess.run([sys.executable, "-m", "incremental", "run", str(config), "--quiet"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, preexec_fn=limit)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-3000:]
    assert "train-images-idx3-ubyte.gz" in err[0] and "does not fit" in err[0]
    assert not (tmp_path / "big").exists()


def test_a_path_longer_than_the_file_system_allows_is_one_line(reference, tmp_path, capsys) -> None:
    long = "a" * 300
    assert cli_main(["report", reference["run_dir"], "-o", str(tmp_path / f"{long}.html")]) == 2
    assert "File name too long" in one_line(capsys)
    assert cli_main(["run", str(tmp_path / f"{long}.toml")]) == 2
    one_line(capsys)
