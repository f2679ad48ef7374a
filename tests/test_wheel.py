"""The package a user installs: a wheel built from this tree, installed into a fresh virtual environment
outside the repository, runs the packaged demo and copies a packaged config, with nothing of the repository
on its path.

The fresh environment gets ragtune's dependencies from this test run's environment (a ``.pth`` line naming its
site-packages) and the wheel with ``--no-deps``: the test installs nothing from the network."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out),
                           str(ROOT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("ragtune-*.whl")
    return built


def test_the_wheel_holds_the_configs_and_the_web_pages(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    configs = sorted(n for n in names if n.startswith("ragtune/configs/") and n.endswith(".yaml"))
    assert len(configs) == len(list((ROOT / "ragtune" / "configs").glob("*.yaml")))
    assert "ragtune/serve/static/index.html" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel (no deps) and this environment's packages beneath it."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    purelib = Path(subprocess.run([str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (purelib / "deps.pth").write_text("\n".join(sorted(ours)) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True, timeout=600)
    if done.returncode:  # pip older than 22.3 has no --python: install into the target folder instead
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
                               str(purelib), str(wheel)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return bin_dir


def run_installed(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["RAGTUNE_CACHE_DIR"] = str(cwd / "cache")
    return subprocess.run([str(bin_dir / "python"), "-m", "ragtune", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_the_installed_wheel_runs_the_packaged_demo(installed, tmp_path):
    where = run_installed(installed, tmp_path, "env", "--json")
    assert where.returncode == 0, where.stderr
    found = subprocess.run([str(installed / "python"), "-c", "import ragtune, sys; print(ragtune.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert not Path(found.stdout.strip()).is_relative_to(ROOT)  # the wheel's copy, not this checkout
    listed = run_installed(installed, tmp_path, "configs")
    assert listed.returncode == 0 and "demo " in listed.stdout and "squad_rag_llm" in listed.stdout
    copied = run_installed(installed, tmp_path, "cp", "demo", "mine.yaml")
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "mine.yaml").read_text(encoding="utf-8").startswith("#")
    again = run_installed(installed, tmp_path, "cp", "demo", "mine.yaml")
    assert again.returncode == 2 and "--overwrite" in again.stderr  # nothing already written is lost
    done = run_installed(installed, tmp_path, "run", "demo", "train.epochs=1", "--out", "runs/demo", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "demo" / "metrics.json").read_text())
    assert 0 <= metrics["test"]["accuracy"] <= 1
    predicted = run_installed(installed, tmp_path, "predict", "runs/demo", "Parliament passed the budget bill")
    assert predicted.returncode == 0 and json.loads(predicted.stdout.splitlines()[0])["label"]
