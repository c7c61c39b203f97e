"""The Makefile's set-up logic: the data step of `make demo` and the checks before the venv is built.

Each test runs `make` in a copy of the Makefile (and pyproject.toml) in tmp_path, so nothing here touches
the checkout's .venv or the real Fashion-MNIST folder: FASHION_MNIST_DIR points at a folder of the test,
and `apt-get`, `id` and `sudo` are small fakes first on PATH that log how they were called.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
NEED_DATA = (
    "make demo needs Fashion-MNIST: run `sudo apt-get install dataset-fashion-mnist` or pass DATA_ROOT=DIR"
)

pytestmark = pytest.mark.skipif(MAKE is None, reason="make not installed")


def script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def box(tmp_path: Path) -> dict[str, Path]:
    """A work folder with the Makefile, an empty data folder, a log and a bin/ of fakes."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, work / name)
    data = tmp_path / "fashion"
    data.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    # apt-get: logs its arguments; `install` puts the four files where the package would.
    script(
        bin_dir / "apt-get",
        f'echo "apt-get $*" >> {log}\n'
        f'case "$1" in install) for f in {" ".join(FILES)}; do : > "{data}/$f"; done;; esac\n',
    )
    script(bin_dir / "id", 'echo "${FAKE_UID:-0}"\n')
    return {"work": work, "data": data, "bin": bin_dir, "log": log}


def make(box: dict[str, Path], *args: str, path: str | None = None, **env: str) -> subprocess.CompletedProcess:
    # A make that runs these tests (`make test`, as CI does) exports MAKELEVEL and MAKEFLAGS: the make
    # started here would then be a sub-make and print "make[1]: ***" instead of "make: ***".
    full_env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    full_env.update(env)
    full_env["PATH"] = path if path is not None else f"{box['bin']}:{os.environ['PATH']}"
    return subprocess.run(
        [MAKE, "--no-print-directory", *args],
        cwd=box["work"],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def log_lines(box: dict[str, Path]) -> list[str]:
    return box["log"].read_text().splitlines() if box["log"].exists() else []


def own_lines(stderr: str) -> list[str]:
    """stderr without make's own closing "make: *** [...] Error 2" (or "make[N]: ***") line."""
    return [line for line in stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)]


def test_data_present_does_nothing(box):
    for name in FILES:
        (box["data"] / name).write_bytes(b"")
    res = make(box, "data", f"FASHION_MNIST_DIR={box['data']}")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and log_lines(box) == []


def test_data_root_skips_the_package_and_reaches_the_demo(box):
    res = make(box, "data", f"FASHION_MNIST_DIR={box['data']}", "DATA_ROOT=/srv/fmnist")
    assert res.returncode == 0, res.stderr
    assert log_lines(box) == []
    dry = make(box, "-n", "demo", "DATA_ROOT=/srv/fmnist")
    demo_line = [line for line in dry.stdout.splitlines() if "-m incremental demo" in line]
    assert demo_line == [".venv/bin/python -m incremental demo --out out/demo --data-root '/srv/fmnist'"]
    plain = make(box, "-n", "demo", f"FASHION_MNIST_DIR={box['data']}")
    assert ".venv/bin/python -m incremental demo --out out/demo\n" in plain.stdout


def test_data_installs_package_as_root(box):
    res = make(box, "data", f"FASHION_MNIST_DIR={box['data']}", FAKE_UID="0")
    assert res.returncode == 0, res.stderr
    assert log_lines(box) == ["apt-get update -q", "apt-get install -y -q dataset-fashion-mnist"]
    assert "installing Debian's dataset-fashion-mnist" in res.stdout
    assert sorted(p.name for p in box["data"].iterdir()) == sorted(FILES)


def test_data_uses_passwordless_sudo(box):
    script(box["bin"] / "sudo", f'echo "sudo $*" >> {box["log"]}\n[ "$1" = -n ] && shift\nexec "$@"\n')
    res = make(box, "data", f"FASHION_MNIST_DIR={box['data']}", FAKE_UID="1000")
    assert res.returncode == 0, res.stderr
    assert log_lines(box) == [
        "sudo -n true",
        "sudo -n apt-get update -q",
        "apt-get update -q",
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist",
        "apt-get install -y -q dataset-fashion-mnist",
    ]


def test_data_without_root_or_sudo_says_one_line(box):
    script(box["bin"] / "sudo", f'echo "sudo $*" >> {box["log"]}\necho "sudo: a password is required" >&2\nexit 1\n')
    res = make(box, "data", f"FASHION_MNIST_DIR={box['data']}", FAKE_UID="1000")
    assert res.returncode == 2
    assert own_lines(res.stderr) == [NEED_DATA]
    assert log_lines(box) == ["sudo -n true"]  # asked, never installed


def test_data_when_apt_get_fails(box):
    script(box["bin"] / "apt-get", f'echo "apt-get $*" >> {box["log"]}\nexit 100\n')
    res = make(box, "data", f"FASHION_MNIST_DIR={box['data']}", FAKE_UID="0")
    assert res.returncode == 2
    assert own_lines(res.stderr) == [
        "make demo needs Fashion-MNIST: `apt-get install dataset-fashion-mnist` failed (see above): "
        "fix that or pass DATA_ROOT=DIR"
    ]
    assert log_lines(box) == ["apt-get update -q"]


def test_data_without_apt_get(box):
    (box["bin"] / "apt-get").unlink()
    res = make(box, "data", f"FASHION_MNIST_DIR={box['data']}", path=str(box["bin"]))
    assert res.returncode == 2
    assert own_lines(res.stderr) == [
        "make demo needs Fashion-MNIST and this machine has no apt-get: pass DATA_ROOT=DIR, "
        "a folder with its four *-ubyte.gz IDX files"
    ]


def test_demo_runs_data_step_first_and_test_never(box):
    demo = make(box, "-n", "demo", f"FASHION_MNIST_DIR={box['data']}").stdout
    assert "dataset-fashion-mnist" in demo
    assert demo.index("dataset-fashion-mnist") < demo.index("-m venv") < demo.index("-m incremental demo")
    test = make(box, "-n", "test", f"FASHION_MNIST_DIR={box['data']}").stdout
    assert "dataset-fashion-mnist" not in test and test.rstrip().endswith(".venv/bin/python -m pytest")


def test_setup_refuses_missing_python(box):
    res = make(box, "setup", "PY=python-none-such")
    assert res.returncode == 2
    assert own_lines(res.stderr) == [
        "setup: python-none-such not found: install Python >= 3.11 and name it, e.g. make PY=python3.11"
    ]
    assert not (box["work"] / ".venv").exists()


def test_setup_refuses_old_python(box):
    # A python that reports itself as 3.9.2: the Makefile's own check code runs in it.
    old = box["bin"] / "python3.9"
    script(
        old,
        f"exec {sys.executable} -c 'import sys; sys.version_info = (3, 9, 2, \"final\", 0); "
        "code = sys.argv[1]; sys.argv = [\"-c\"]; exec(code)' \"$2\"\n",
    )
    res = make(box, "setup", f"PY={old}")
    assert res.returncode == 2
    assert own_lines(res.stderr) == [
        f"setup: needs Python >= 3.11 but {old} is 3.9.2: name a newer one, e.g. make PY=python3.11"
    ]
    assert not (box["work"] / ".venv").exists()


def test_setup_names_the_venv_package(box, tmp_path):
    # Debian's python3 without python3-venv has no ensurepip; a module that fails to import stands in.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "ensurepip.py").write_text("raise ImportError('ensurepip is in python3-venv')\n")
    script(box["bin"] / "python3", f'exec {sys.executable} "$@"\n')
    res = make(box, "setup", PYTHONPATH=str(shadow))
    assert res.returncode == 2
    assert own_lines(res.stderr) == [
        "setup: python3 cannot create a virtual environment (no ensurepip): "
        "run `sudo apt-get install python3-venv`, then make again"
    ]
    assert not (box["work"] / ".venv").exists()
