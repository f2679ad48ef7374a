"""Devices and precision: the one place that turns a config's ``device`` / ``precision`` into torch objects.

A device is named as in the config (``train.device``) and on the command line (``--device``)::

    auto      CUDA when torch sees a GPU, else Apple's MPS, else the CPU
    cpu
    cuda      the first GPU (under torchrun: the process's own GPU, cuda:LOCAL_RANK)
    cuda:N    GPU N (under torchrun, too, each process still takes cuda:LOCAL_RANK)
    mps       Apple silicon

Precision (``train.precision``): ``fp32``; ``bf16`` (autocast to bfloat16 — native on Ampere or later
GPUs and on CPUs with AVX-512-bf16/AMX; emulated, and slow, on other CPUs); ``fp16`` (autocast to
float16 with a gradient scaler, ``torch.amp.GradScaler``: for GPUs without bf16, such as a T4 or V100).
The weights stay in float32 in every mode (autocast computes in the lower precision, the optimizer
updates fp32 weights), so a checkpoint is the same whatever the precision and device.

Everything here works, and is tested, on a CPU-only machine: the CUDA and MPS branches only read
``torch.cuda`` / ``torch.backends.mps`` state, which a test can replace.
"""

from __future__ import annotations

import contextlib
import platform
import re
import resource
import sys

import torch

from ragtune.errors import RagtuneError

#: what ``train.device`` and ``--device`` accept (checked by the config without importing torch)
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve(spec: str = "auto", local_rank: int | None = None, key: str = "train.device") -> torch.device:
    """The torch device for ``spec`` (module docstring); ``local_rank`` (torchrun's ``LOCAL_RANK``) picks
    this process's GPU. A device this machine lacks is a :class:`RagtuneError` naming ``key``, what was
    asked, what is there and the valid choices."""
    spec = str(spec).strip().lower()
    if not re.fullmatch(DEVICE_PATTERN, spec):
        raise RagtuneError(f"{key}: {spec!r} is not a device; choose auto, cpu, cuda, cuda:N or mps")
    if spec == "auto":
        if torch.cuda.is_available():
            spec = "cuda"
        elif mps_available():
            spec = "mps"
        else:
            return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not mps_available():
            raise RagtuneError(f"{key}: mps, but this machine has no usable Apple MPS device; choose auto or cpu")
        return torch.device("mps")
    # cuda or cuda:N
    if not torch.cuda.is_available():
        built = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}, but no GPU is visible"
        raise RagtuneError(f"{key}: {spec}, but torch {torch.__version__} is {built}; choose auto or cpu "
                           "(or install a CUDA build of torch)")
    count = torch.cuda.device_count()
    index = local_rank if local_rank is not None else (int(spec.split(":")[1]) if ":" in spec else 0)
    if index >= count:
        raise RagtuneError(f"{key}: {spec} (GPU {index}), but this machine has {count} GPU"
                           f"{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def describe(device: torch.device) -> dict:
    """``{"device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3"}`` — what ``metrics.json`` and
    ``report.md`` record. For the CPU, its model name and the vector extensions that matter for bf16."""
    if device.type == "cuda":
        return {"device": str(device), "device_name": torch.cuda.get_device_name(device)}
    if device.type == "mps":
        return {"device": "mps", "device_name": f"Apple MPS ({platform.machine()})"}
    return {"device": "cpu", "device_name": cpu_name()}


def cpu_name() -> str:
    """The CPU's model name and its widest vector unit (``AMD EPYC (avx2)``)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    units = [u for u in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if u in flags]
    return f"{name} ({units[0]})" if units else name


def check_precision(device: torch.device, precision: str, key: str = "train.precision") -> None:
    """Refuse a precision the device cannot run: bf16 on a GPU without it (before Ampere). fp16 on a CPU
    runs (torch has CPU fp16 autocast, and the gradient scaler works there: what the CPU tests use) but
    is rarely faster than fp32."""
    if precision not in PRECISIONS:
        raise RagtuneError(f"{key}: {precision!r} is not a precision; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RagtuneError(f"{key}: bf16, but {torch.cuda.get_device_name(device)} ({device}) does not support "
                           "bfloat16; set train.precision: fp16 (with its gradient scaler) or fp32")


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` on ``device`` (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16's gradient scaler (``torch.amp.GradScaler``); a disabled one, whose calls pass through, otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def set_tf32(enabled: bool) -> None:
    """Let CUDA matmuls and convolutions use TF32 tensor cores (``train.tf32``); no effect on a CPU."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    """The peak memory of this run's device: ``{"peak_memory_gib", "peak_memory_of"}``. On CUDA the peak
    of tensors allocated since :func:`reset_peak_memory` (``torch.cuda.max_memory_allocated``); on
    MPS what the driver holds now; on the CPU the process's peak resident memory (everything, data
    and libraries included — the CPU has no separate tensor allocator to ask)."""
    if device.type == "cuda":
        used, of = torch.cuda.max_memory_allocated(device), "cuda tensors (max_memory_allocated)"
    elif device.type == "mps":
        used, of = torch.mps.driver_allocated_memory(), "mps driver (allocated now)"
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        used, of = rss if sys.platform == "darwin" else rss * 1024, "process peak RSS"
    return {"peak_memory_gib": round(used / 2**30, 3), "peak_memory_of": of}


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device (or CPU allocator) out-of-memory error."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_cached_memory(device: torch.device) -> None:
    """Give the caching allocator's free blocks back (after an out-of-memory error)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def to_device(value, device: torch.device):
    """``value`` with every tensor in it (nested dicts, lists and tuples) on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value
