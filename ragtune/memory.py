"""Memory for a model: how much is available, and one clear error when building a model runs out of it.

:func:`ragtune.config.check_model_memory` compares a config's model with
:func:`available_memory` before anything is allocated; :func:`building_model` catches what the estimate
missed while the weights are allocated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ragtune.errors import RagtuneError


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation: psutil's ``virtual_memory().available`` when
    psutil is installed, else ``MemAvailable`` of ``/proc/meminfo``; None where neither is known."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 (no psutil, or it cannot read this system)
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def gib(n_bytes: float) -> str:
    """``n_bytes`` in GiB for a message (``1.5 GiB``, ``1,234 GiB``; under 1 GiB in MiB)."""
    value = n_bytes / 2**30
    if value < 1:
        return f"{n_bytes / 2**20:,.1f} MiB"
    return f"{value:,.1f} GiB" if value < 100 else f"{value:,.0f} GiB"


SIZE_KEYS = "model.d_model, model.layers, model.ffn_dim, model.heads, model.head_dim, model.max_length, tokenizer.vocab_size"


@contextlib.contextmanager
def building_model(sizes: str = "") -> Iterator[None]:
    """Turn an allocation failure while a model is built (``MemoryError``, or torch's RuntimeError
    ``DefaultCPUAllocator: can't allocate memory``) into a RagtuneError naming the size keys.
    ``sizes`` describes the model (e.g. ``"model.d_model 65536, model.layers 96"``)."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        text = str(exc).lower()
        if not isinstance(exc, MemoryError) and not any(
                s in text for s in ("can't allocate memory", "not enough memory", "out of memory")):
            raise
        available = available_memory()
        raise RagtuneError(
            f"not enough memory to build the model{f' ({sizes})' if sizes else ''}"
            f"{f'; available memory: {gib(available)}' if available is not None else ''}; "
            f"make it smaller ({SIZE_KEYS})") from None


def checkpoint_parameters(path: str) -> int | None:
    """About how many parameters the checkpoint at ``path`` holds, read from its headers only (nothing
    is loaded): a ``.gguf`` file's tensor shapes (through the optional package ``gguf``), or the tensor
    shapes in the headers of a folder's ``*.safetensors`` files. None when it cannot tell (a hub id, a
    folder of ``.bin`` files, no ``gguf`` package)."""
    import json
    import math
    import os
    import struct

    if path.lower().endswith(".gguf") and os.path.isfile(path):
        try:
            from gguf import GGUFReader

            return sum(int(t.n_elements) for t in GGUFReader(path).tensors)
        except Exception:  # noqa: BLE001 (no gguf package, or not a readable file: the loader says which)
            return None
    if not os.path.isdir(path):
        return None
    files = [os.path.join(path, name) for name in sorted(os.listdir(path)) if name.endswith(".safetensors")]
    if not files:
        return None
    total = 0
    try:
        for file in files:
            with open(file, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
            total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    return total
