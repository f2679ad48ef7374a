"""What a run ran on: library versions, the git commit, the machine and its accelerator.

Every run writes :func:`describe` into ``RUN_DIR/environment.json`` (ragtune/runs.py); ``ragtune env``
prints it for this machine::

    $ ragtune env
    ragtune              0.1.0
    python               3.11.7
    torch                2.13.0+cpu
    transformers         5.25.0
    ...
    git_commit           e703d67... (clean)
    device               cpu: AMD EPYC (2 cores; avx2)
    world_size           1

Versions are read from the installed packages' metadata (``importlib.metadata``), so nothing is imported
that is not installed, and a package that is missing shows as null. The git commit is the one of the
repository holding the current folder (``git rev-parse HEAD``; null outside one or without git), with
``dirty`` when the work tree has changes.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

from ragtune.version import __version__

#: The packages whose versions every run records (the issue's list and the ones results depend on).
PACKAGES = ("ragtune", "torch", "transformers", "tokenizers", "sentence-transformers", "peft", "numpy", "safetensors",
            "accelerate", "bitsandbytes", "faiss-cpu", "faiss-gpu", "bm25s", "optuna", "onnxruntime", "scikit-learn",
            "pandas", "datasets", "sacrebleu", "fastapi", "uvicorn")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """``{package: installed version or None}``, ``python`` first."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        if name == "ragtune":  # this copy's own, also when run from a checkout that is not installed
            out[name] = __version__
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(folder: str | os.PathLike | None = None) -> dict | None:
    """``{"commit": sha, "dirty": bool}`` of the git work tree holding ``folder`` (default: the current
    folder), or None outside one (or when git is not installed)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}


def cpu() -> dict:
    """The CPU: its model name, core count and the vector flags that decide bf16 speed (Linux: /proc/cpuinfo)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"name": name, "cores": os.cpu_count(), "flags": [f for f in CPU_FLAGS if f in flags]}


def accelerators() -> list[dict]:
    """The CUDA GPUs torch sees (name, memory in GiB); empty without torch or CUDA."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [{"name": torch.cuda.get_device_name(i),
             "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
            for i in range(torch.cuda.device_count())]


def describe(device: str | None = None) -> dict:
    """Everything above as one JSON-ready dict; ``device``: the device a run uses (e.g. ``cuda:0``)."""
    return {"versions": versions(), "git": git_commit(), "platform": platform.platform(), "cpu": cpu(),
            "gpus": accelerators(), "device": device, "world_size": int(os.environ.get("WORLD_SIZE", "1"))}


def lines(info: dict) -> list[str]:
    """``describe()`` as aligned ``key  value`` lines (``ragtune env``)."""
    rows = [(name, version or "-") for name, version in info["versions"].items()]
    git = info["git"]
    rows.append(("git_commit", f"{git['commit']} ({'dirty' if git['dirty'] else 'clean'})" if git else "-"))
    rows.append(("platform", info["platform"]))
    c = info["cpu"]
    rows.append(("cpu", f"{c['name']} ({c['cores']} cores; {', '.join(c['flags']) or 'no avx2'})"))
    rows += [(f"gpu{i}", f"{g['name']} ({g['memory_gib']} GiB)") for i, g in enumerate(info["gpus"])] or [("gpu", "-")]
    if info.get("device"):
        rows.append(("device", info["device"]))
    rows.append(("world_size", str(info["world_size"])))
    return [f"{key:<22} {value}" for key, value in rows]
