"""Checkpoints: weights in safetensors, the rest of the training state for ``torch.load(weights_only=True)``.

A checkpoint is a folder ``<name>/`` holding ``model.safetensors``, ``state.pt`` (optimizer,
scheduler, RNG states, progress counters) and ``checksums.json`` (sha256 of both). It is written
into a temporary sibling folder and renamed into place, so a crash mid-write never leaves a
half-written checkpoint under the real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ragtune.errors import RagtuneError


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Write ``model``'s parameters and buffers to a safetensors file (tied tensors are cloned)."""
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(path))


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load safetensors weights into ``model``; a missing or mismatched file is a RagtuneError."""
    path = Path(path)
    if not path.exists():
        raise RagtuneError(f"weights file not found: {path}")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise RagtuneError(f"{path}: cannot read weights ({exc})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RagtuneError(f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    internal, version, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def save_checkpoint(folder: str | Path, model: torch.nn.Module, state: dict) -> None:
    """Atomically write ``model`` weights and ``state`` (tensors and plain Python values) to ``folder``."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "model.safetensors")
    torch.save(state, tmp / "state.pt")
    sums = {name: sha256_file(tmp / name) for name in ("model.safetensors", "state.pt")}
    (tmp / "checksums.json").write_text(json.dumps(sums, indent=2))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)


def load_checkpoint(folder: str | Path, model: torch.nn.Module) -> dict:
    """Load weights into ``model`` and return the saved state; checksums are verified first."""
    folder = Path(folder)
    sums_path = folder / "checksums.json"
    if not sums_path.exists():
        raise RagtuneError(f"no checkpoint in {folder} (checksums.json missing)")
    sums = json.loads(sums_path.read_text())
    for name, digest in sums.items():
        if not (folder / name).exists() or sha256_file(folder / name) != digest:
            raise RagtuneError(f"checkpoint file {folder / name} is missing or corrupted (checksum mismatch)")
    load_weights(model, folder / "model.safetensors")
    return torch.load(folder / "state.pt", weights_only=True)
