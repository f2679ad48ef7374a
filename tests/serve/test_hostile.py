"""Hostile input: a text that is not valid Unicode, a model call that fails for one request of a
batch, an empty API key, HEAD requests, clients that hang up mid-body."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from ragtune.cli import main
from ragtune.serve.app import create_app
from ragtune.serve.batcher import MicroBatcher


@pytest.fixture
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


def test_a_lone_surrogate_is_a_422_naming_the_field_and_index(client):
    raw = b'{"texts": ["ok", "\\ud800"]}'  # legal JSON; not encodable as UTF-8
    response = client.post("/v1/predict", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": "texts[1]: not valid Unicode text (a lone surrogate)"}
    assert client.post("/v1/predict", json={"texts": ["ok"]}).status_code == 200  # the server still answers


def test_a_lone_surrogate_in_a_retrieval_query_is_a_422(tmp_path):
    from ragtune.serve.service import load_service

    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Paris is the capital of France.", encoding="utf-8")
    assert main(["index", str(corpus), "--out", str(tmp_path / "index"), "--kind", "bm25", "--quiet"]) == 0
    with TestClient(create_app(load_service(tmp_path / "index"))) as c:
        raw = b'{"queries": ["\\udfff x"], "k": 1}'
        response = c.post("/v1/retrieve", content=raw, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["detail"] == "queries[0]: not valid Unicode text (a lone surrogate)"


def test_a_failing_item_fails_only_its_own_request():
    """Three requests share a batch; the model raises on one text. The other two get their results."""
    calls = []

    def fn(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("cannot encode")
        return [item.upper() for item in items]

    async def scenario():
        batcher = MicroBatcher(fn, max_batch_size=8, max_wait_s=0.2)
        batcher.start()
        try:
            return await asyncio.gather(batcher.submit(["a", "b"]), batcher.submit(["bad"]), batcher.submit(["c"]),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    first, second, third = asyncio.run(scenario())
    assert first == ["A", "B"] and third == ["C"]
    assert isinstance(second, ValueError) and str(second) == "cannot encode"
    assert calls[0] == ["a", "b", "bad", "c"]  # one batch first, then each request alone


def test_an_empty_api_key_is_refused(run_dir, capsys, monkeypatch):
    for key in ("", "   "):
        assert main(["serve", str(run_dir), "--api-key", key]) == 2
        assert "--api-key" in capsys.readouterr().err
    monkeypatch.setenv("RAGTUNE_API_KEY", "")
    assert main(["serve", str(run_dir)]) == 2
    assert "RAGTUNE_API_KEY" in capsys.readouterr().err


def test_an_empty_api_key_is_refused_by_create_app(service):
    with pytest.raises(ValueError, match="api_key"):
        create_app(service, api_key=" ")


def test_head_requests_are_answered_like_get(client):
    for path in ("/healthz", "/"):
        response = client.head(path)
        assert response.status_code == 200, (path, response.status_code)
        assert response.content == b""


def test_a_client_that_hangs_up_mid_body_is_counted_as_499(service):
    app = create_app(service)
    messages = [{"type": "http.request", "body": b'{"texts": ["o', "more_body": True}, {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "raw_path": b"/v1/predict",
             "headers": [(b"content-type", b"application/json")], "query_string": b"", "http_version": "1.1",
             "scheme": "http", "server": ("test", 80), "client": ("test", 1), "root_path": ""}
    asyncio.run(app(scope, receive, send))
    text = app.state.metrics.render().decode()
    assert 'status="499"' in text and 'status="500"' not in text
