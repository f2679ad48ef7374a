"""The HTTP service on a tiny trained run: endpoints, limits, API key, metrics, batching, bad input."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from serve.live import live_server

from ragtune.config import ServeConfig
from ragtune.tasks import load_config
from ragtune.tasks.classification.predictor import Predictor
from ragtune.serve.app import create_app

TEXTS = ["the parliament vote on the election", "股市 银行 inflation market", "film actor award music"]






@pytest.fixture
def client(service):
    with TestClient(create_app(service)) as c:  # `with`: runs the lifespan (the batcher)
        yield c


def test_predict_is_the_predictor(client, run_dir):
    response = client.post("/v1/predict", json={"texts": TEXTS})
    assert response.status_code == 200, response.text
    expected = Predictor.from_run_dir(run_dir).predict(TEXTS)
    got = response.json()["predictions"]
    assert [p["label"] for p in got] == [p["label"] for p in expected]
    for g, e in zip(got, expected):
        assert g["scores"] == pytest.approx(e["scores"], abs=1e-6)
        assert sum(g["scores"].values()) == pytest.approx(1, abs=1e-4)
    assert "passages" not in got[0] and "explanation" not in got[0]  # None fields are left out


def test_healthz_docs_and_schema(client, service):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model_loaded"] is True
    assert health["task"] == "classification" and health["engine"] == "torch" and health["device"] == "cpu"
    assert health["labels"] == service.labels and health["endpoints"] == ["/v1/predict"]
    assert health["max_texts_per_request"] == 4  # the run's serve: section
    schema = client.get("/openapi.json").json()
    assert "/v1/predict" in schema["paths"] and "/v1/answer" not in schema["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    if _has("swagger_ui_bundle"):  # offline: Swagger UI's files from the package
        assert "cdn" not in docs.text and "/static/swagger-ui/swagger-ui-bundle.js" in docs.text
        js = client.get("/static/swagger-ui/swagger-ui-bundle.js")
        assert js.status_code == 200 and len(js.content) > 100_000
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"texts": []}, 422, "texts: give at least one"),
    ({"texts": "one string"}, 422, "texts: Input should be a valid list"),
    ({"texts": [1, 2]}, 422, "texts.0: Input should be a valid string"),
    ({"texts": ["a"], "unknown": 1}, 422, "unknown: Extra inputs are not permitted"),
    ({}, 422, "texts: Field required"),
    ({"texts": ["a"] * 5}, 413, "texts: 5 in one request; the limit is 4 (serve.max_texts_per_request)"),
    ({"texts": ["ok", "x" * 201]}, 413, "texts[1]: 201 characters; the limit is 200 (serve.max_chars_per_text)"),
    ({"texts": ["y" * 190] * 4, "explain": False}, 200, None),
])
def test_bad_bodies_get_a_clear_4xx(client, body, status, message):
    response = client.post("/v1/predict", json=body)
    assert response.status_code == status, response.text
    if message:
        assert message in response.json()["detail"]
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(("content", "headers", "status"), [
    (b'{"texts": ["unclosed"', {"content-type": "application/json"}, 422),  # malformed JSON
    (b'{"texts": ["\xff\xfe bytes"]}', {"content-type": "application/json"}, 400),  # not UTF-8
    (b"texts=a", {"content-type": "application/x-www-form-urlencoded"}, 422),  # not JSON at all
    (b'{"texts": ["' + b"z" * 5000 + b'"]}', {"content-type": "application/json"}, 413),  # body over 4096 bytes
])
def test_malformed_bodies(client, content, headers, status):
    response = client.post("/v1/predict", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], str)
    assert client.post("/v1/predict", json={"texts": ["still serving"]}).status_code == 200


def test_a_streamed_body_over_the_limit_is_cut_off(client):
    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"texts": ["'
        for _ in range(10):
            yield b"w" * 1000
        yield b'"]}'

    response = client.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "larger than 4096 bytes (serve.max_body_bytes)" in response.json()["detail"]


def test_endpoints_that_a_classification_run_lacks(client):
    response = client.post("/v1/answer", json={"questions": ["who?"]})
    assert response.status_code == 404
    assert "this server offers /v1/predict" in response.json()["detail"]
    assert client.get("/../../etc/passwd").status_code == 404
    assert client.get("/static/../../config.yaml").status_code == 404


def test_api_key(service):
    with TestClient(create_app(service, api_key="s3cret")) as c:
        body = {"texts": ["vote"]}
        assert c.post("/v1/predict", json=body).status_code == 401
        wrong = c.post("/v1/predict", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "API key" in wrong.json()["detail"]
        assert wrong.headers["www-authenticate"] == "Bearer"
        assert c.post("/v1/predict", json=body, headers={"X-API-Key": "nope"}).status_code == 401
        assert c.post("/v1/predict", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/v1/predict", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # liveness stays open
        schema = c.get("/openapi.json").json()
        assert set(schema["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}


def _metric(text: str, name: str, **labels) -> float:
    pattern = re.escape(name) + r"\{([^}]*)\} ([0-9.e+-]+)" if labels else re.escape(name) + r" ([0-9.e+-]+)"
    for match in re.finditer(pattern, text):
        if not labels:
            return float(match.group(1))
        got = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(match.group(2))
    raise AssertionError(f"{name} {labels} not in /metrics")


def test_metrics_count_requests_latency_and_batches(client):
    for _ in range(3):
        assert client.post("/v1/predict", json={"texts": TEXTS[:2]}).status_code == 200
    client.post("/v1/predict", json={"texts": []})
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert _metric(text, "ragtune_requests_total", endpoint="/v1/predict", method="POST", status="200") == 3
    assert _metric(text, "ragtune_requests_total", endpoint="/v1/predict", method="POST", status="422") == 1
    assert _metric(text, "ragtune_requests_total", endpoint="other", status="404") == 1  # no series per random path
    assert _metric(text, "ragtune_request_duration_seconds_count", endpoint="/v1/predict") == 4
    assert _metric(text, "ragtune_batch_size_count") == 3
    assert _metric(text, "ragtune_batch_size_sum") == 6
    assert _metric(text, "ragtune_items_total", endpoint="/v1/predict") == 6


def test_concurrent_requests_share_batches(service):
    """16 clients at once over real HTTP with a 200 ms window: fewer forward passes than requests, and
    every client gets its own texts' predictions."""
    settings = service.settings.model_copy(update={"max_batch_size": 8, "max_wait_ms": 200.0})
    texts = [f"{w} {w} today" for w in ("vote", "market", "film", "minister", "bank", "actor", "选举", "电影")] * 2
    expected = service.predictor.predict(texts)
    with live_server(create_app(service, settings=settings)) as url:
        def call(text):
            return httpx.post(f"{url}/v1/predict", json={"texts": [text]}, timeout=30).json()["predictions"][0]

        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(call, texts))
        metrics = httpx.get(f"{url}/metrics").text
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    batches = _metric(metrics, "ragtune_batch_size_count")
    assert _metric(metrics, "ragtune_batch_size_sum") == 16
    assert batches < 16  # requests were batched together
    assert _metric(metrics, "ragtune_batch_size_bucket", le="8.0") == batches  # never over max_batch_size


def test_a_model_error_is_a_500_with_a_message_and_the_server_recovers(service, monkeypatch):
    app = create_app(service)
    calls = {"n": 0}

    def flaky(items):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return service.predictor.predict(items)

    app.state.batcher.fn = flaky
    with TestClient(app, raise_server_exceptions=False) as c:
        first = c.post("/v1/predict", json={"texts": ["vote"]})
        assert first.status_code == 500 and "internal error (RuntimeError)" in first.json()["detail"]
        assert c.post("/v1/predict", json={"texts": ["vote"]}).status_code == 200


def test_settings_reject_bad_values():
    with pytest.raises(ValueError):
        ServeConfig(max_batch_size=0)
    cfg = load_config(None, ["data.demo=true", "serve.max_wait_ms=0", "serve.max_batch_size=1"])
    assert cfg.serve.max_batch_size == 1 and cfg.serve.max_wait_ms == 0


def test_openapi_schema_fuzzed_by_schemathesis_gives_no_5xx(service):
    """schemathesis generates bodies from the live app's OpenAPI schema (valid and invalid); none may
    get a 5xx, and the server must still answer afterwards."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    with live_server(create_app(service, api_key="k")) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        failures = []
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} >= {"POST /v1/predict", "GET /healthz", "GET /metrics"}
        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def fuzz(case):
                for headers in ({"Authorization": "Bearer k"}, {}):
                    response = case.call(headers=headers)
                    if response.status_code >= 500:
                        failures.append((case.operation.label, case.body, response.status_code, response.text[:200]))

            fuzz()
        assert not failures, failures[:3]
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"


def test_cli_serve_with_two_workers(run_dir, tmp_path):
    """`ragtune serve` as users start it: two worker processes behind one port, metrics summed over both."""
    import os
    import subprocess
    import sys
    import time

    from serve.live import free_port

    port = free_port()
    env = {**os.environ, "RAGTUNE_API_KEY": "from-env"}
    proc = subprocess.Popen([sys.executable, "-m", "ragtune", "serve", str(run_dir), "--port", str(port),
                             "--workers", "2", "--threads", "1", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.3)
        assert httpx.post(f"{url}/v1/predict", json={"texts": ["vote"]}).status_code == 401  # key from the env
        headers = {"X-API-Key": "from-env"}
        for _ in range(6):
            r = httpx.post(f"{url}/v1/predict", json={"texts": ["vote", "电影"]}, headers=headers, timeout=30)
            assert r.status_code == 200 and len(r.json()["predictions"]) == 2
        metrics = httpx.get(f"{url}/metrics").text
        assert _metric(metrics, "ragtune_items_total", endpoint="/v1/predict") == 12
    finally:
        proc.terminate()
        proc.wait(30)


def test_cli_serve_bad_folder_exits_2(tmp_path, capsys):
    from ragtune.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["serve", str(tmp_path / "empty")]) == 2
    assert "neither a ragtune run" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "empty"), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_response_json_is_utf8(client):
    response = client.post("/v1/predict", json={"texts": ["电影 明星"]})
    assert response.headers["content-type"].startswith("application/json")
    json.loads(response.content.decode("utf-8"))


def test_predict_with_explanations(client, service):
    from ragtune.explain import explain

    response = client.post("/v1/predict", json={"texts": ["parliament vote 选举"], "explain": True})
    assert response.status_code == 200, response.text
    got = response.json()["predictions"][0]
    expected = explain(service.predictor, "parliament vote 选举")
    assert got["explanation"]["target"] == got["label"] == expected["label"]
    assert [t["token"] for t in got["explanation"]["tokens"]] == [t["token"] for t in expected["tokens"]]
    assert [t["attribution"] for t in got["explanation"]["tokens"]] == pytest.approx(
        [t["attribution"] for t in expected["tokens"]], abs=1e-5)
    settings = service.settings.model_copy(update={"max_explain_texts": 1})
    with TestClient(create_app(service, settings=settings)) as c:
        too_many = c.post("/v1/predict", json={"texts": ["a", "b"], "explain": True})
        assert too_many.status_code == 413
        assert "explanations are limited to 1 (serve.max_explain_texts)" in too_many.json()["detail"]
        assert c.post("/v1/predict", json={"texts": ["a", "b"]}).status_code == 200


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
