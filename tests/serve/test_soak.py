"""Soak: a live ``ragtune serve`` process under bounded load from many clients for ``SOAK_S`` seconds
(``RAGTUNE_SOAK_S`` overrides it, e.g. ``RAGTUNE_SOAK_S=5`` for a quick run or 600 for a long one).

Sixteen client threads (httpx, keep-alive) send a mix of valid requests and hostile ones: malformed JSON,
wrong types, a lone surrogate, an oversize text, too many texts, an oversize body, a body that is not
UTF-8, missing keys, an empty list, a wrong or missing API key. Every valid request must get 200 with one
well-formed prediction per text; every invalid one its 4xx (never a 5xx, never a dropped connection).
The server's resident memory is read after a warm-up and at the end; it must grow less than
``RSS_GROWTH_LIMIT_MIB``. ``pytest -s`` prints the figures."""

from __future__ import annotations

import json
import os
import random
import threading
import time

import httpx
import psutil
from serve.live import serve_process

SOAK_S = 45.0  # seconds of load, warm-up included (the whole test takes about 55 s)
CLIENTS = 16
WARMUP_FRACTION = 0.2  # the first 20% of the time (at least 3 s): memory grows as caches fill
RSS_GROWTH_LIMIT_MIB = 50
KEY = "soak-key"
WORDS = ["parliament", "vote", "budget", "market", "bank", "film", "star", "award", "银行", "股市", "电影", "选举"]


def _valid(rng: random.Random) -> tuple[str, dict, bytes, dict]:
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(rng.randint(1, 4))]
    return "valid", {"Authorization": f"Bearer {KEY}"}, json.dumps({"texts": texts}).encode(), {"texts": texts}


AUTH = {"Authorization": f"Bearer {KEY}"}
INVALID = [  # (name, headers, body, expected status); the run's limits: 4 texts, 200 characters, 4096 bytes
    ("malformed JSON", AUTH, b'{"texts": ["par', 422),
    ("texts not a list", AUTH, b'{"texts": "parliament"}', 422),
    ("numbers for texts", AUTH, b'{"texts": [1, 2]}', 422),
    ("lone surrogate", AUTH, b'{"texts": ["ok", "\\ud800"]}', 422),
    ("oversize text", AUTH, json.dumps({"texts": ["x" * 201]}).encode(), 413),
    ("too many texts", AUTH, json.dumps({"texts": ["vote"] * 5}).encode(), 413),
    ("oversize body", AUTH, json.dumps({"texts": ["vote"], "pad": "y" * 5000}).encode(), 413),
    ("not UTF-8", AUTH, b'{"texts": ["\xff\xfe"]}', 400),
    ("missing key", AUTH, b'{}', 422),
    ("empty list", AUTH, b'{"texts": []}', 422),
    ("wrong API key", {"Authorization": "Bearer nope"}, b'{"texts": ["vote"]}', 401),
    ("no API key", {}, b'{"texts": ["vote"]}', 401),
]


def _client(url: str, seed: int, stop: threading.Event, results: list, labels: set) -> None:
    rng = random.Random(seed)
    tally = {"valid": 0, "invalid": 0, "failures": []}
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            if rng.random() < 0.5:
                name, headers, body, sent = _valid(rng)
                expected = 200
            else:
                name, headers, body, expected = rng.choice(INVALID)
            try:
                response = client.post("/v1/predict", content=body,
                                       headers={"Content-Type": "application/json", **headers})
            except httpx.HTTPError as exc:
                tally["failures"].append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            if name == "valid":
                tally["valid"] += 1
                ok = response.status_code == 200
                if ok:
                    predictions = response.json()["predictions"]
                    ok = len(predictions) == len(sent["texts"]) and all(
                        p["label"] in labels and set(p["scores"]) == labels
                        and abs(sum(p["scores"].values()) - 1) < 1e-3 for p in predictions)
            else:
                tally["invalid"] += 1
                ok = response.status_code == expected and "detail" in response.json()
            if not ok:
                tally["failures"].append(f"{name}: {response.status_code} {response.text[:200]}")
    results.append(tally)


def test_soak_mixed_valid_and_hostile_traffic_keeps_the_server_correct_and_flat(run_dir):
    duration = float(os.environ.get("RAGTUNE_SOAK_S", SOAK_S))
    warmup = max(3.0, WARMUP_FRACTION * duration)
    with serve_process(run_dir, "--api-key", KEY) as (proc, url):
        server = psutil.Process(proc.pid)
        labels = set(httpx.get(f"{url}/healthz", timeout=10).json()["labels"])
        stop, results = threading.Event(), []
        threads = [threading.Thread(target=_client, args=(url, seed, stop, results, labels)) for seed in range(CLIENTS)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(warmup)
        rss_start = server.memory_info().rss
        rss_peak = rss_start
        while time.monotonic() - start < duration:
            time.sleep(min(1.0, max(0.0, duration - (time.monotonic() - start))))
            rss_peak = max(rss_peak, server.memory_info().rss)
        stop.set()
        for thread in threads:
            thread.join(60)
        elapsed = time.monotonic() - start
        rss_end = server.memory_info().rss
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert proc.poll() is None, "the server died under load"
    valid = sum(r["valid"] for r in results)
    invalid = sum(r["invalid"] for r in results)
    failures = [f for r in results for f in r["failures"]]
    mib = 1024 * 1024
    growth = (rss_end - rss_start) / mib
    print(f"\nsoak: {CLIENTS} clients, {elapsed:.1f} s: {valid + invalid} requests ({valid} valid, {invalid} invalid), "
          f"{(valid + invalid) / elapsed:.1f} req/s; server RSS after {warmup:.0f} s warm-up {rss_start / mib:.1f} MiB, "
          f"end {rss_end / mib:.1f} MiB (growth {growth:+.1f} MiB, peak {rss_peak / mib:.1f} MiB); "
          f"{len(failures)} failures")
    assert len(results) == CLIENTS
    assert not failures, failures[:10]
    assert valid > 0 and invalid > 0
    assert 'status="5' not in metrics
    assert growth < RSS_GROWTH_LIMIT_MIB, f"server RSS grew {growth:.1f} MiB under load (limit {RSS_GROWTH_LIMIT_MIB})"
