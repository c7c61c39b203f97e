"""End-to-end engine runs on Fashion-MNIST-format IDX files that the tests write themselves.

The images are class-dependent blobs (a bright spot whose position encodes the class) on a noisy
background, 28 x 28 greyscale, gzipped IDX exactly like the real Fashion-MNIST files, so the whole path
(IDX reader, subsampling, tasks, training, search, calibration, baselines, costs, checkpoints, resume,
results.json) runs as it does on the real data, in seconds.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from incremental.run.config import STRATEGIES, RunConfig, load_config
from incremental.run.runner import KILL_ENV, KINDS, format_summary, load_results, run, run_status

REPO = Path(__file__).resolve().parents[1]
REPORT_KEYS = {"strategies", "matrices", "calibration_curve", "chosen_share", "timing", "tolerance",
               "agnostic_default", "agnostic_methods", "search", "headline", "references"}
STRATEGY_ROW_KEYS = {
    "strategy", "share", "fraction", "task_aware_accuracy", "task_agnostic_accuracy",
    "task_agnostic_uncalibrated_accuracy", "energy_pj", "macs", "measured_train_seconds", "modelled_train_energy_pj",
    "task_aware_accuracy_std", "task_agnostic_accuracy_std", "forgetting_task_aware", "forgetting_task_agnostic",
    "backward_transfer_task_aware", "backward_transfer_task_agnostic", "storage_bytes", "agnostic_method", "agnostic",
    "search_energy_pj", "statistics_energy_pj", "calibration_energy_pj", "inference_energy_pj",
}
METHODS = ["raw-logits", "calibrated-logits", "branch-gaussian", "common-gaussian", "trunk-gaussian",
           "combined-gaussian", "routed", "gaussian-ensemble", "analytic-head", "analytic-ensemble"]


def write_fashion_idx(folder: Path, train: int = 30, test: int = 10, seed: int = 0, learnable: bool = True) -> Path:
    """Fashion-MNIST-format files (gzipped IDX) of 10 learnable classes: blob position = class (with
    ``learnable=False`` the labels are drawn independently of the images: every classifier is at chance)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(10), n)
        rng.shuffle(labels)
        out = np.empty((len(labels), 28, 28), np.uint8)
        for i, c in enumerate(labels):
            cy, cx = 7 + 14 * (c // 5) + rng.normal(0, 1), 3 + 5.5 * (c % 5) + rng.normal(0, 1)
            blob = 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5**2))
            out[i] = np.clip(40 + blob + rng.normal(0, 20, (28, 28)), 0, 255)
        if not learnable:
            rng.shuffle(labels)
        return out, labels.astype(np.uint8)

    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        x, y = images(n)
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as fh:
            fh.write(struct.pack(">IIII", 0x803, len(x), 28, 28) + x.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as fh:
            fh.write(struct.pack(">II", 0x801, len(y)) + y.tobytes())
    return folder


def tiny_config(data_root: Path, out: Path, **changes) -> dict:
    cfg = {
        "name": "tiny",
        "dataset": "fashion-mnist",
        "data_root": str(data_root),
        "model": "smallcnn",
        "tasks": "5+5",
        "device": "cpu",
        "progress": False,
        "out": str(out),
        "eval_batch": 64,
        "base": {"epochs": 2, "batch": 32, "lr": 0.05},
        "branch": {"epochs": 2, "batch": 32, "lr": 0.05},
        "search": {"subset_per_class": 12, "epochs": 1, "candidates": [0, 2, 5], "tolerance": 0.05,
                        "min_steps": 6, "full_curve": True},
        "output_calibration": {"holdout_fraction": 0.2},
        "agnostic": {"expansion": 128},  # the analytic heads' sums: 128 x 128 for tiny data (default 2048)
    }
    for key, value in changes.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    return cfg


def write_toml(path: Path, cfg: dict) -> Path:
    path.write_text(RunConfig.from_dict(cfg).to_toml())
    return path


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory) -> Path:
    return write_fashion_idx(tmp_path_factory.mktemp("fashion-idx"))


@pytest.fixture(scope="module")
def auto_run(idx_root, tmp_path_factory) -> tuple[Path, dict, dict]:
    """An uninterrupted run with the sharing-point search and every strategy."""
    out = tmp_path_factory.mktemp("runs") / "auto"
    cfg = tiny_config(idx_root, out)
    folder = run(RunConfig.from_dict(cfg))
    return folder, load_results(folder), cfg


def test_run_directory_layout(auto_run) -> None:
    folder, results, _ = auto_run
    assert run_status(folder) == "done"
    for name in ("run.json", "config.resolved.toml", "results.json", "DONE", "accuracy.csv", "matrices.csv",
                 "calibration_curve.csv", "costs.csv", "timing.csv"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "run.json").read_text())["status"] == "done"
    ckpts = {p.name for p in (folder / "seed-0" / "checkpoints").iterdir()}
    assert "base.pt" in ckpts and "partial-sharing-task1.pt" in ckpts
    assert not [c for c in ckpts if c.endswith(".partial.pt")]  # in-progress checkpoints are cleaned up
    # the resolved config reloads to the same configuration
    assert load_config(folder / "config.resolved.toml") == RunConfig.from_dict(results["config"] | {"name": "tiny"})
    versions = results["versions"]
    assert {"python", "torch", "numpy", "incremental", "energymodel"} <= set(versions)
    assert results["seeds"] == [0] and len(results["per_seed"]) == 1


def test_results_structure_and_accuracy_matrices(auto_run) -> None:
    _, results, _ = auto_run
    seed = results["per_seed"][0]
    assert set(seed["strategies"]) == set(STRATEGIES)
    assert [t["classes"] for t in results["dataset"]["tasks"]] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert seed["base"]["accuracy"] > 0.5  # the blobs are learnable
    for name, st in seed["strategies"].items():
        for kind in KINDS:
            m = st["matrices"][kind]["matrix"]
            assert len(m) == 2 and all(len(row) == 2 for row in m), (name, kind)
            assert m[0][1] is None and None not in (m[0][0], m[1][0], m[1][1])
            assert math.isclose(st[f"{kind}_accuracy"], (m[1][0] + m[1][1]) / 2)
        # every strategy starts from the same base: row 0 of the task-aware matrix is the base's accuracy (its
        # task-agnostic row 0 is the base's under the headline method, which need not read the classifier)
        assert st["matrices"]["task_aware"]["matrix"][0][0] == seed["base"]["accuracy"]
    for kind in KINDS:  # the same base evaluation for every strategy
        assert len({st["matrices"][kind]["matrix"][0][0] for st in seed["strategies"].values()}) == 1, kind
    for st in seed["strategies"].values():
        # Chaudhry forgetting and GEM backward transfer from the task-aware matrix
        aware = st["matrices"]["task_aware"]["matrix"]
        assert math.isclose(st["forgetting"]["task_aware"], aware[0][0] - aware[1][0], abs_tol=1e-12)
        assert math.isclose(st["backward_transfer"]["task_aware"], aware[1][0] - aware[0][0], abs_tol=1e-12)
        assert len(st["per_task_final"]["task_aware"]) == 2
    # single-network strategies have no output calibration: calibrated == uncalibrated
    for name in ("naive-finetune", "full-retraining"):
        st = seed["strategies"][name]
        assert st["task_agnostic_accuracy"] == st["task_agnostic_uncalibrated_accuracy"]
    assert seed["strategies"]["full-retraining"]["tasks"][0]["used_old_data"] is True


def test_old_tasks_are_bit_identical_for_clone_and_branch(auto_run) -> None:
    _, results, _ = auto_run
    seed = results["per_seed"][0]
    for name in ("partial-sharing", "regular-incremental", "feature-extraction"):
        st = seed["strategies"][name]
        hashes = st["task0_logits_sha256"]
        assert len(hashes) == 2 and hashes[0] == hashes[1] == seed["base"]["logits_sha256"]
        assert st["old_tasks_unchanged"] is True
        assert st["forgetting"]["task_aware"] == 0.0 and st["backward_transfer"]["task_aware"] == 0.0
    ft = seed["strategies"]["naive-finetune"]
    assert ft["old_tasks_unchanged"] is False and ft["task0_logits_sha256"][0] != ft["task0_logits_sha256"][1]


def test_sharing_search_and_costs(auto_run) -> None:
    _, results, _ = auto_run
    seed = results["per_seed"][0]
    sharing = seed["sharing"]
    assert sharing["mode"] == "auto"
    curve = sharing["search"]["curve"]
    assert [r["share"] for r in curve] == [0, 2, 5]
    # the choice follows the rule on the recorded curve: the deepest point within tolerance of k = 0
    ref = curve[0]["accuracy"]
    assert sharing["share"] == max(r["share"] for r in curve if r["accuracy"] >= ref - 0.05 - 1e-12)
    # trials are at least min_steps optimizer steps (6) whatever the configured epochs (1)
    steps_per_epoch = math.ceil(sharing["search"]["samples"] / 32)
    assert sharing["search"]["epochs"] * steps_per_epoch >= 6
    for row in curve:
        assert {"accuracy", "fraction", "energy_pj", "trial_energy_pj", "within_tolerance", "seconds"} <= set(row)
    # modelled cost of a branch falls as more blocks are shared
    energies = [r["energy_pj"] for r in curve]
    assert energies[0] > energies[1] > energies[2] > 0
    sts = seed["strategies"]
    ps, reg = sts["partial-sharing"], sts["regular-incremental"]
    assert ps["share"] == sharing["share"] and ps["fraction"] == sharing["fraction"]
    by_share = {r["share"]: r["energy_pj"] for r in curve}
    assert ps["modelled_train_energy_pj"] == pytest.approx(by_share[ps["share"]])  # the curve priced the real branch
    assert reg["modelled_train_energy_pj"] == pytest.approx(by_share[0])
    # the whole lifecycle: training + the search's trials (partial sharing only) + statistics + calibration passes
    assert ps["cost"]["energy_pj"] == pytest.approx(ps["modelled_train_energy_pj"] + ps["cost"]["search"]["energy_pj"]
                                                    + ps["cost"]["statistics"]["energy_pj"]
                                                    + ps["cost"]["calibration"]["energy_pj"])
    assert reg["cost"]["search"] is None and reg["cost"]["energy_pj"] == pytest.approx(
        reg["modelled_train_energy_pj"] + reg["cost"]["statistics"]["energy_pj"] + reg["cost"]["calibration"]["energy_pj"])
    assert min(ps["cost"][part]["energy_pj"] for part in ("search", "statistics", "calibration")) > 0
    # full retraining trains on old + new data: twice the samples of naive fine-tuning, more energy
    full, ft = sts["full-retraining"], sts["naive-finetune"]
    assert full["tasks"][0]["samples"] == seed["sizes"]["train"][0] + seed["sizes"]["train"][1]
    assert full["modelled_train_energy_pj"] > ft["modelled_train_energy_pj"]
    assert full["cost"]["data_storage_bytes"] == seed["sizes"]["train"][0] * 28 * 28
    for st in sts.values():
        cost = st["cost"]["training"]
        assert cost["macs"] > 0 and cost["dram_accesses"] > 0 and cost["energy_pj"] > 0
        assert st["cost"]["storage_bytes"] > 0 and st["measured_train_seconds"] > 0
    # storage: the grown network stores the shared trunk once
    assert sts["partial-sharing"]["cost"]["storage_bytes"] <= sts["regular-incremental"]["cost"]["storage_bytes"]


def test_statistics_cost_by_hand(auto_run) -> None:
    """trunk-gaussian with one covariance per task, smallcnn (trunk 32 + 32 + 64 + 64 + 128 = 320 dims), 5 classes
    per task: each task stores 5 x 320 + 320^2 = 104,000 float32 numbers (one 32-bit word each under 45nm) and
    costs N_t 320^2 + 320^3 MACs; the energy is the forward passes + those MACs at (mac + RF accesses) pJ + the
    words at the DRAM pJ. Zeroing the words or the energy anywhere in the ledger fails this."""
    from energymodel.analysis.profile import as_table
    from energymodel.memory.levels import rf_accesses

    _, results, _ = auto_run
    seed = results["per_seed"][0]
    entry = seed["strategies"]["partial-sharing"]["agnostic"]["trunk-gaussian"]
    cost = entry["cost"]
    words = 2 * (5 * 320 + 320**2)
    assert entry["stored_words"] == words and entry["storage_bytes"] == 4 * words
    assert cost["dram_words"] == words
    n = seed["sizes"]["train"]
    assert cost["arithmetic_macs"] == sum(n_t * 320**2 + 320**3 for n_t in n)
    tab = as_table("45nm")
    per_mac = tab.op_pj("mac") + float(rf_accesses(1.0, 0.0, tab.dataflow.rf_accesses_per_op,
                                                    tab.dataflow.rf_words)) * tab.level_pj("rf")
    assert cost["energy_pj"] == pytest.approx(cost["forward_energy_pj"] + cost["arithmetic_macs"] * per_mac
                                              + words * tab.level_pj("dram"), rel=1e-9)
    assert cost["forward_energy_pj"] > 0


def test_a_run_at_chance_claims_no_saving(tmp_path) -> None:
    """Labels drawn independently of the images: every accuracy is at chance, the headline and the console say
    so, and no saving is claimed whatever the energy ratios."""
    idx = write_fashion_idx(tmp_path / "noise", train=20, test=20, learnable=False)
    cfg = tiny_config(idx, tmp_path / "chance", share=2, strategies=["partial-sharing", "regular-incremental"],
                      agnostic={"methods": ["raw-logits", "routed"], "method": "routed", "references": False})
    results = load_results(run(RunConfig.from_dict(cfg)))
    head = results["summary"]["headline"]
    assert head["chance"]["class_il"] == pytest.approx(0.1) and head["test_images"] == 200
    assert set(head["at_chance"]) == {"partial-sharing", "regular-incremental"}
    assert head["claims_saving"] is False
    assert all(not head["class_il"][n]["above_chance"] for n in head["at_chance"])
    assert "[at chance]" in " ".join(head["text"]) and "no saving is claimed" in head["text"][-1]
    text = format_summary(results)
    assert "[at chance]" in text


def test_report_section_has_exactly_the_report_keys(auto_run) -> None:
    _, results, _ = auto_run
    rep = results["report"]
    assert set(rep) == REPORT_KEYS
    assert [s["strategy"] for s in rep["strategies"]] == list(STRATEGIES)
    assert all(set(s) == STRATEGY_ROW_KEYS for s in rep["strategies"])
    assert len(rep["matrices"]) == 2 * len(STRATEGIES)
    assert [m["method"] for m in rep["agnostic_methods"]] == METHODS and rep["agnostic_default"] == "analytic-ensemble"
    for m in rep["matrices"].values():
        assert m["tasks"] == ["task 0", "task 1"] and m["values"][0][1] is None
    assert [set(r) for r in rep["calibration_curve"]] == [{"share", "fraction", "accuracy", "energy_pj",
                                                           "within_tolerance"}] * 3
    assert rep["chosen_share"] == results["per_seed"][0]["sharing"]["share"]
    labels = [t["label"] for t in rep["timing"]]
    assert "base training (task 0)" in labels and "partial-sharing task 1 training" in labels
    assert any(label.startswith("sharing search trial") for label in labels)
    assert all(set(t) == {"label", "measured_seconds", "modelled_macs", "modelled_energy_pj"} for t in rep["timing"])
    # the report section passes energymodel's own check
    from energymodel.report import engine_section_from_results

    section = engine_section_from_results(rep)
    assert "extra" not in section and section["chosen_share"] == rep["chosen_share"]


def test_finished_run_is_not_recomputed(auto_run) -> None:
    folder, _, cfg = auto_run
    before = (folder / "results.json").stat().st_mtime_ns
    assert run(RunConfig.from_dict(cfg)) == folder
    assert (folder / "results.json").stat().st_mtime_ns == before


def test_killed_run_resumes_to_identical_results(auto_run, idx_root, tmp_path) -> None:
    """SIGKILL in the middle of the partial-sharing branch's training (after epoch 1 of 2), then resume."""
    _, reference, cfg = auto_run
    out = tmp_path / "killed"
    config = write_toml(tmp_path / "tiny.toml", {**cfg, "out": str(out)})
    env = {**os.environ, KILL_ENV: "partial-sharing-task1:epoch:1"}
    proc = subprocess.run([sys.executable, "-m", "incremental", "run", str(config), "--quiet"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (-9, 137), proc.stderr
    assert run_status(out) == "unfinished"
    assert (out / "seed-0" / "checkpoints" / "partial-sharing-task1.partial.pt").is_file()
    assert (out / "seed-0" / "phases" / "base.json").is_file()
    assert not (out / "seed-0" / "phases" / "partial-sharing-task1.json").exists()
    with pytest.raises(Exception, match="is unfinished"):
        load_results(out)
    # the killed process's lock file is left behind, but the kernel released its lock: not "in use"
    assert (out / "run.lock").is_file()
    run(load_config(config))
    resumed = load_results(out)
    a, b = reference["per_seed"][0], resumed["per_seed"][0]
    ps = b["strategies"]["partial-sharing"]
    assert ps["tasks"][0]["resumed_from_epoch"] == 1
    assert b["sharing"]["search"]["curve"] == [
        {**row, "seconds": b["sharing"]["search"]["curve"][i]["seconds"]}
        for i, row in enumerate(a["sharing"]["search"]["curve"])
    ]
    for name in STRATEGIES:
        x, y = a["strategies"][name], b["strategies"][name]
        assert x["matrices"] == y["matrices"], name  # bit-for-bit equal accuracies
        assert x["logits_sha256"] == y["logits_sha256"], name  # and bit-identical logits
        assert x["tasks"][0]["losses"] == y["tasks"][0]["losses"], name
    assert [r["task_aware_accuracy"] for r in reference["report"]["strategies"]] == \
        [r["task_aware_accuracy"] for r in resumed["report"]["strategies"]]


def test_fixed_share_several_seeds(idx_root, tmp_path) -> None:
    cfg = tiny_config(idx_root, tmp_path / "fixed", share=3, seeds=[0, 1],
                      strategies=["partial-sharing", "regular-incremental"], train_per_class=20,
                      base={"epochs": 1}, branch={"epochs": 1})
    results = load_results(run(RunConfig.from_dict(cfg)))
    assert [r["seed"] for r in results["per_seed"]] == [0, 1]
    assert results["per_seed"][0]["sharing"] == {**results["per_seed"][0]["sharing"], "mode": "fixed", "share": 3,
                                                 "search": None}
    ps = results["summary"]["strategies"]["partial-sharing"]
    acc = ps["task_aware_accuracy"]
    assert len(acc["values"]) == 2 and acc["mean"] == pytest.approx(np.mean(acc["values"]))
    assert acc["std"] == pytest.approx(np.std(acc["values"], ddof=1))
    reg = results["summary"]["strategies"]["regular-incremental"]
    assert ps["modelled_train_energy_pj"]["mean"] < reg["modelled_train_energy_pj"]["mean"]
    rep = results["report"]
    assert rep["chosen_share"] == 3 and rep["calibration_curve"] == []
    assert [s["share"] for s in rep["strategies"]] == [3, 0]
    # different seeds draw different subsamples and initialisations
    assert results["per_seed"][0]["base"]["logits_sha256"] != results["per_seed"][1]["base"]["logits_sha256"]


def test_changed_config_on_existing_run_is_refused(auto_run) -> None:
    from energymodel.errors import UserError

    _, _, cfg = auto_run
    with pytest.raises(UserError, match=r"different configuration \(differs in base\.epochs\)"):
        run(RunConfig.from_dict({**cfg, "base": {**cfg["base"], "epochs": 3}}))


def test_example_grow_two_tasks(tmp_path) -> None:
    """examples/grow_two_tasks.py: three tasks (base + two branches) through the Python API, then a report."""
    out = tmp_path / "grow"
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "grow_two_tasks.py"), "--tiny", "--data", "synthetic",
                           "--quiet", "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "grown network: 3 tasks" in proc.stdout and (out / "report.html").is_file()
    results = load_results(out)
    assert results["dataset"]["source"] == "synthetic blobs"
    ps = results["per_seed"][0]["strategies"]["partial-sharing"]
    assert len(ps["matrices"]["task_aware"]["matrix"]) == 3 and ps["old_tasks_unchanged"] is True
    assert len(set(ps["logits_sha256"]["1"])) == 1 and len(ps["logits_sha256"]["1"]) == 2  # task 1 unchanged by task 2


def test_per_task_search_and_oracle(idx_root, tmp_path) -> None:
    """Three tasks, a search per task, and the oracle: full branches at every candidate of task 1."""
    cfg = tiny_config(idx_root, tmp_path / "pertask", tasks="4+3+3", strategies=["partial-sharing"],
                      search={"per_task": True, "oracle": True})
    results = load_results(run(RunConfig.from_dict(cfg)))
    seed = results["per_seed"][0]
    sharing = seed["sharing"]
    assert set(sharing["per_task"]) == {"1", "2"} and sharing["shares"] == {
        "1": sharing["per_task"]["1"]["chosen"], "2": sharing["per_task"]["2"]["chosen"]}
    ps = seed["strategies"]["partial-sharing"]
    assert ps["shares"] == sharing["shares"]  # each branch grew at its own task's point
    assert [t["share"] for t in ps["tasks"]] == [sharing["shares"]["1"], sharing["shares"]["2"]]
    oracle = sharing["oracle"]
    assert [r["share"] for r in oracle["curve"]] == [0, 2, 5]
    # the oracle branch at the chosen point is the real partial-sharing branch (same seeds): same accuracy
    by_share = {r["share"]: r["accuracy"] for r in oracle["curve"]}
    assert by_share[sharing["share"]] == ps["matrices"]["task_aware"]["matrix"][1][1]
    ref = by_share[0]
    assert oracle["oracle_choice"] == max(k for k, a in by_share.items() if a >= ref - 0.05 - 1e-12)
    assert oracle["deeper_missed"] == [k for k in (2, 5) if k > sharing["share"] and by_share[k] >= ref - 0.05 - 1e-12]
    # the search of both tasks is charged to partial sharing
    total = sum(s["cost"]["energy_pj"] for s in sharing["per_task"].values())
    assert ps["cost"]["search"]["energy_pj"] == pytest.approx(total)
