"""Checkpoints: weights in safetensors, the rest of the training state for ``torch.load(weights_only=True)``.

A checkpoint is a folder ``<name>/`` holding ``model.safetensors``, ``state.pt`` (optimizer,
scheduler, RNG states, progress counters) and ``checksums.json`` (sha256 of both). It is written
into a temporary sibling folder and renamed into place, so a crash mid-write never leaves a
half-written checkpoint under the real name; the previous one stays as ``<name>.prev`` and is used,
with a warning, when the newest is corrupted or truncated (:func:`load_latest_checkpoint`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ragtune.errors import RagtuneError

log = logging.getLogger("ragtune")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Write ``model``'s parameters and buffers to a safetensors file (tied tensors are cloned), from
    whatever device they are on: the file is the same for a model trained on a GPU or a CPU."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
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
    """The torch (CPU, and each GPU's when CUDA is there), Python and NumPy random states."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`. A checkpoint written on a GPU resumes on a CPU (its CUDA states are
    ignored) and one from a CPU on a GPU (the CUDA generators keep their seeded state)."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    internal, version, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def save_checkpoint(folder: str | Path, model: torch.nn.Module, state: dict) -> None:
    """Atomically write ``model`` weights and ``state`` (tensors and plain Python values) to ``folder``.

    The files go to ``folder.tmp`` first, with their sha256 in ``checksums.json`` written last; then the
    current ``folder`` becomes ``folder.prev`` (the previous good checkpoint, replacing an older one) and
    ``folder.tmp`` becomes ``folder``. A crash at any moment leaves at least one complete checkpoint, which
    :func:`load_latest_checkpoint` finds. A full disk (or any write error) removes the partial
    ``folder.tmp`` and raises a RagtuneError; ``folder`` and ``folder.prev`` are not touched.
    """
    folder = Path(folder)
    tmp, prev = _sibling(folder, "tmp"), _sibling(folder, "prev")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_weights(model, tmp / "model.safetensors")
        torch.save(state, tmp / "state.pt")
        sums = {name: sha256_file(tmp / name) for name in ("model.safetensors", "state.pt")}
        (tmp / "checksums.json").write_text(json.dumps(sums, indent=2))
    except (OSError, RuntimeError, SafetensorError) as exc:  # ENOSPC and friends, as each library reports them
        shutil.rmtree(tmp, ignore_errors=True)
        kept = folder if folder.exists() else (prev if prev.exists() else None)
        raise RagtuneError(
            f"cannot write the checkpoint {folder} ({_reason(exc)}); "
            + (f"the last good checkpoint {kept} is intact" if kept else "no earlier checkpoint exists")
            + ". Free disk space, then continue with --resume"
        ) from None
    if folder.exists():
        if prev.exists():
            shutil.rmtree(prev)
        os.replace(folder, prev)
    os.replace(tmp, folder)


def _sibling(folder: Path, suffix: str) -> Path:
    return folder.with_name(f"{folder.name}.{suffix}")


def _reason(exc: BaseException) -> str:
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "no space left on device" in str(exc).lower():
        return "no space left on device"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def checkpoint_exists(folder: str | Path) -> bool:
    """Whether ``folder`` or one of its fallbacks (``.tmp`` complete, ``.prev``) holds a checkpoint."""
    folder = Path(folder)
    return any((f / "checksums.json").exists() for f in (folder, _sibling(folder, "tmp"), _sibling(folder, "prev")))


def load_latest_checkpoint(folder: str | Path, model: torch.nn.Module) -> tuple[dict, Path]:
    """The newest good checkpoint of ``folder``: ``folder`` itself, else a complete ``folder.tmp`` (a
    crash between the two renames of :func:`save_checkpoint`), else ``folder.prev``. A corrupted or
    truncated one is skipped with a warning naming it. Returns ``(state, the folder used)``."""
    folder = Path(folder)
    problems = []
    for candidate in (folder, _sibling(folder, "tmp"), _sibling(folder, "prev")):
        if not (candidate / "checksums.json").exists():
            if candidate == folder:
                problems.append(f"{candidate}: missing or incomplete")
            continue
        try:
            state = load_checkpoint(candidate, model)
        except RagtuneError as exc:
            problems.append(str(exc))
            continue
        if problems:
            log.warning("%s; resuming from the previous good checkpoint %s", "; ".join(problems), candidate)
        return state, candidate
    raise RagtuneError("no usable checkpoint to resume from: " + "; ".join(problems))


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
    try:
        # map_location cpu: a checkpoint written on a GPU loads anywhere; the optimizer's load_state_dict then
        # moves its state to the device of the parameters (tests/train/test_devices.py)
        return torch.load(folder / "state.pt", weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises several types for a damaged file; the checksum matched, so report it
        raise RagtuneError(f"checkpoint file {folder / 'state.pt'} cannot be read ({_reason(exc)})") from None
