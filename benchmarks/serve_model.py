"""Model-level inference speed and accuracy: PyTorch fp32, PyTorch bf16, ONNX fp32 and ONNX int8.

    python benchmarks/serve_model.py --run bench_out/bbc3_minilm --threads 1
    # the run: ragtune run configs/bbc3_minilm.yaml train.threads=1 train.precision=fp32 --out bench_out/bbc3_minilm

No HTTP: every engine goes through ragtune's one inference path, ``Predictor.outputs`` (tokenise,
sort by length, pad, forward), on the run's test split (BBC-3: 256 news articles, nearly all cut at
256 tokens). For each engine and batch size B in ``--batch-sizes`` (default 1 and 32) it times
``outputs`` on consecutive chunks of B texts after 2 warm-up calls and reports docs/s and the median
and p95 latency of one call; then the test accuracy of that engine over the whole test split.

Engines: ``torch-fp32`` (the run as trained), ``torch-bf16`` (the same model cast to bfloat16;
this CPU has no native bf16 instructions — ``lscpu`` lists no avx512_bf16 or amx — so PyTorch
emulates it and it is slow here; on a CPU with AMX it would not be), ``onnx-fp32`` and
``onnx-int8`` (``ragtune export --format onnx [--quantize int8]``, run by ONNX Runtime with the
same thread count).

Output: a Markdown table on stdout, JSON in ``benchmarks/results/serve_model.json``, and as the last
line ``RESULT int8_speedup_b1=.. int8_speedup_b32=.. int8_acc_drop_pts=..`` (ONNX int8 docs/s over
PyTorch fp32 docs/s, and fp32 accuracy minus int8 accuracy in points).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENGINES = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8")


def export(run: Path, out: Path, quantize: bool) -> Path:
    """``ragtune export`` (the CLI users run) into ``out``, reused when it is already there."""
    if (out / "export.json").exists():
        return out
    cmd = [sys.executable, "-m", "ragtune", "export", str(run), "--format", "onnx", "--out", str(out), "--overwrite"]
    if quantize:
        cmd += ["--quantize", "int8"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return out


def load(engine: str, run: Path, exports: Path, batch_size: int):
    import torch

    from ragtune.tasks.classification.predictor import Predictor

    if engine.startswith("torch"):
        p = Predictor.from_run_dir(run, batch_size=batch_size)
        if engine == "torch-bf16":
            p.model.to(torch.bfloat16)
        return p
    folder = export(run, exports / engine, quantize=engine == "onnx-int8")
    return Predictor.from_run_dir(folder, batch_size=batch_size, engine="onnx")


def time_engine(predictor, texts: list[str], batch: int, max_docs: int) -> dict:
    predictor.batch_size = batch
    chunks = [texts[i : i + batch] for i in range(0, min(len(texts), max_docs), batch)]
    for chunk in chunks[:2]:  # warm-up
        predictor.outputs(chunk)
    latencies = []
    start = time.perf_counter()
    for chunk in chunks:
        t = time.perf_counter()
        predictor.outputs(chunk)
        latencies.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    docs = sum(len(c) for c in chunks)
    latencies.sort()
    return {"batch": batch, "docs": docs, "seconds": round(total, 3), "docs_per_s": round(docs / total, 2),
            "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
            "latency_p95_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=ROOT / "bench_out" / "bbc3_minilm", help="a MiniLM classification run")
    ap.add_argument("--exports", type=Path, default=None, help="where the ONNX exports go (default: RUN.exports/)")
    ap.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads (default: 1)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--max-docs", type=int, default=128, help="texts timed per engine and batch size (default: 128)")
    ap.add_argument("--bf16-max-docs", type=int, default=32, help="texts timed for torch-bf16, which is slow here (default: 32)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_model.json")
    args = ap.parse_args()

    import torch

    from ragtune.config import read_yaml
    from ragtune.tasks import config_from_dict
    from ragtune.tasks.classification.data import prepare_data

    torch.set_num_threads(args.threads)
    exports = args.exports or args.run.with_name(args.run.name + ".exports")
    cfg = config_from_dict(read_yaml(args.run / "config.yaml"), str(args.run / "config.yaml"), saved=True)
    test = prepare_data(cfg).test
    texts, labels = test.text.tolist(), test.label.tolist()
    print(f"{args.run}: {len(texts)} test texts, {args.threads} thread(s)", flush=True)
    rows = []
    for engine in args.engines:
        predictor = load(engine, args.run, exports, max(args.batch_sizes))
        max_docs = args.bf16_max_docs if engine == "torch-bf16" else args.max_docs
        for batch in args.batch_sizes:
            row = {"engine": engine, **time_engine(predictor, texts, batch, max_docs)}
            print(json.dumps(row), flush=True)
            rows.append(row)
        predictor.batch_size = 32
        t = time.perf_counter()
        accuracy = predictor.evaluate(texts, labels)["accuracy"]
        for row in rows:
            if row["engine"] == engine:
                row["test_accuracy"] = round(accuracy, 4)
        print(f"{engine}: test accuracy {accuracy:.4f} ({time.perf_counter() - t:.0f} s)", flush=True)
        if engine.startswith("onnx"):
            model_file = json.loads((exports / engine / "export.json").read_text())["model_file"]
            size = (exports / engine / model_file).stat().st_size
            for row in rows:
                if row["engine"] == engine:
                    row["model_mb"] = round(size / 2**20, 1)
        del predictor

    print("\n| engine | batch | docs/s | p50 latency (ms) | p95 latency (ms) | test accuracy |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['batch']} | {r['docs_per_s']} | {r['latency_p50_ms']} | {r['latency_p95_ms']} | "
              f"{r['test_accuracy']:.4f} |")

    def get(engine, batch, key):
        return next((r[key] for r in rows if r["engine"] == engine and r["batch"] == batch), float("nan"))

    speedups = {b: get("onnx-int8", b, "docs_per_s") / get("torch-fp32", b, "docs_per_s") for b in args.batch_sizes}
    drop = 100 * (get("torch-fp32", args.batch_sizes[0], "test_accuracy") - get("onnx-int8", args.batch_sizes[0], "test_accuracy"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(["python", "benchmarks/serve_model.py", *sys.argv[1:]]),
        "run": str(args.run), "threads": args.threads, "n_test": len(texts), "rows": rows,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": __import__("os").cpu_count(),
                    "bf16_native": "avx512_bf16" in (shutil.which("lscpu") and subprocess.run(
                        ["lscpu"], capture_output=True, text=True).stdout or "")},
    }, indent=2))
    print(" ".join(["RESULT"] + [f"int8_speedup_b{b}={s:.2f}" for b, s in speedups.items()] + [f"int8_acc_drop_pts={drop:.2f}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
