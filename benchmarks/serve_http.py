"""HTTP-level throughput and latency of ``POST /v1/predict``: ragtune's server against the peer a user
would write (FastAPI + ``transformers.pipeline("text-classification")``, ``benchmarks/peer_pipeline_app.py``),
on the same MiniLM run, in the same run of this script.

    python benchmarks/serve_http.py --run bench_out/bbc3_minilm
    # the run: ragtune run configs/bbc3_minilm.yaml train.threads=1 train.precision=fp32 --out bench_out/bbc3_minilm

Setup (2 cores): each server runs alone, pinned to core 0 (``taskset -c 0``) with 1 torch / ONNX
Runtime thread; this script, the load generator, pins itself to core 1. Servers, one after another:

* ``ragtune-torch``: ``ragtune serve RUN --threads 1`` (PyTorch fp32; server-side batching, default
  ``serve.max_batch_size`` 32 and ``serve.max_wait_ms`` 5);
* ``ragtune-onnx-int8``: ``ragtune serve EXPORT --engine onnx --threads 1`` on the folder of
  ``ragtune export RUN --format onnx --quantize int8``;
* ``peer``: ``uvicorn benchmarks.peer_pipeline_app:app`` (PyTorch fp32, one pipeline call per request,
  texts cut at the same 256 tokens).

Load: a closed loop of C concurrent clients (``--clients``, default 8 and 32) on one asyncio
``httpx.AsyncClient``; each client sends one test text per request and sends the next as soon as the
answer arrives, until ``--requests`` requests (default 256) have been answered. After ``2*C`` warm-up
requests. Throughput = requests / wall seconds; latency percentiles over the measured requests. Every
response's label is kept, and the accuracy of the served labels on the texts sent is reported too
(so a fast server that answers wrongly shows).

Output: a Markdown table on stdout, JSON in ``benchmarks/results/serve_http.json``, and as the last
line ``RESULT torch_vs_peer_c32=.. int8_vs_peer_c32=..`` (throughput ratios at 32 clients).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name: str, run: Path, export_dir: Path, port: int, extra: list[str]) -> subprocess.Popen:
    pin = ["taskset", "-c", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if name == "ragtune-torch":
        cmd = [*pin, sys.executable, "-m", "ragtune", "serve", str(run), "--threads", "1", "--port", str(port),
               "--log-level", "warning", *extra]
    elif name == "ragtune-onnx-int8":
        cmd = [*pin, sys.executable, "-m", "ragtune", "serve", str(export_dir), "--engine", "onnx", "--threads", "1",
               "--port", str(port), "--log-level", "warning", *extra]
    else:
        env.update(PEER_MODEL=str(run / "hf_model"), PEER_THREADS="1")
        cmd = [*pin, sys.executable, "-m", "uvicorn", "benchmarks.peer_pipeline_app:app", "--port", str(port),
               "--log-level", "warning"]
    print("$", " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, env=env, cwd=ROOT)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not come up")


async def load(url: str, texts: list[str], clients: int, requests: int) -> dict:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=300,
                                 limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients)) as client:
        async def one(i: int) -> tuple[float, str]:
            t = time.perf_counter()
            r = await client.post("/v1/predict", json={"texts": [texts[i % len(texts)]]})
            r.raise_for_status()
            return time.perf_counter() - t, r.json()["predictions"][0]["label"]

        async def worker(queue: asyncio.Queue, out: list) -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                out.append((i, *await one(i)))

        async def closed_loop(n: int) -> tuple[list, float]:
            queue: asyncio.Queue = asyncio.Queue()
            for i in range(n):
                queue.put_nowait(i)
            out: list = []
            t = time.perf_counter()
            await asyncio.gather(*(worker(queue, out) for _ in range(clients)))
            return out, time.perf_counter() - t

        await closed_loop(2 * clients)  # warm-up
        results, wall = await closed_loop(requests)
    latencies = sorted(r[1] for r in results)

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)

    return {"requests": len(results), "seconds": round(wall, 2), "throughput_rps": round(len(results) / wall, 2),
            "p50_ms": round(1000 * statistics.median(latencies), 1), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
            "labels": {i: label for i, _, label in results}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=ROOT / "bench_out" / "bbc3_minilm")
    ap.add_argument("--servers", nargs="+", default=["peer", "ragtune-torch", "ragtune-onnx-int8"],
                    choices=["peer", "ragtune-torch", "ragtune-onnx-int8"])
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--max-batch-tokens", type=int, default=None,
                    help="passed to ragtune serve (0: no token cap); default: the run's serve.max_batch_tokens")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_http.json")
    args = ap.parse_args()

    from ragtune.config import read_yaml
    from ragtune.tasks import config_from_dict
    from ragtune.tasks.classification.data import prepare_data

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the load generator stays off the server's core
    cfg = config_from_dict(read_yaml(args.run / "config.yaml"), str(args.run / "config.yaml"), saved=True)
    test = prepare_data(cfg).test
    texts, gold = test.text.tolist(), test.label.tolist()
    export_dir = args.run.with_name(args.run.name + ".exports") / "onnx-int8"
    if "ragtune-onnx-int8" in args.servers and not (export_dir / "export.json").exists():
        subprocess.run([sys.executable, "-m", "ragtune", "export", str(args.run), "--format", "onnx", "--quantize",
                        "int8", "--out", str(export_dir), "--overwrite"], check=True)
    rows = []
    for name in args.servers:
        port = free_port()
        extra = [] if args.max_batch_tokens is None else ["--max-batch-tokens", str(args.max_batch_tokens)]
        proc = start(name, args.run, export_dir, port, extra)
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            for clients in args.clients:
                result = asyncio.run(load(f"http://127.0.0.1:{port}", texts, clients, args.requests))
                labels = result.pop("labels")
                result["served_accuracy"] = round(sum(labels[i] == gold[i % len(gold)] for i in labels) / len(labels), 4)
                row = {"server": name, "clients": clients, **result}
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            proc.terminate()
            proc.wait(60)

    print("\n| server | clients | requests/s | p50 (ms) | p95 (ms) | p99 (ms) | accuracy of served labels |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['server']} | {r['clients']} | {r['throughput_rps']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['p99_ms']} | {r['served_accuracy']:.4f} |")

    def rps(server: str, clients: int) -> float:
        return next((r["throughput_rps"] for r in rows if r["server"] == server and r["clients"] == clients), float("nan"))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(["python", "benchmarks/serve_http.py", *sys.argv[1:]]),
                                    "run": str(args.run), "rows": rows}, indent=2))
    print(f"RESULT torch_vs_peer_c32={rps('ragtune-torch', 32) / rps('peer', 32):.2f} "
          f"int8_vs_peer_c32={rps('ragtune-onnx-int8', 32) / rps('peer', 32):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
