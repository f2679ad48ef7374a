"""The OpenAI-compatible API of a served generation run (``ragtune/serve/openai_api.py``), spoken to by the
official ``openai`` Python client against a real uvicorn server.

Two tiny runs are trained once for the module (``tests/serve/generation_runs.py``): a from-scratch
decoder (its reply comes as one piece) and the tiny random Llama fine-tuned with ``model.backbone: hf``
(it streams token by token). Every answer is compared with what the run's own predictor gives.
"""

from __future__ import annotations

import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from serve.generation_runs import train_llama_run, train_reversal_run
from serve.live import live_server

from ragtune.config import ServeConfig
from ragtune.errors import RagtuneError
from ragtune.serve.app import create_app
from ragtune.serve.service import load_service

openai = pytest.importorskip("openai")

LIMITS = ServeConfig(max_texts_per_request=4, max_chars_per_text=200)
KEY = "s3cret"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("openai_runs")
    return {"scratch": train_reversal_run(root), "llama": train_llama_run(root)}


@pytest.fixture(scope="module", params=["scratch", "llama"])
def served(request, runs):
    """``(service, base URL, client)``: a run served with an API key and small limits; an ``openai.OpenAI`` client."""
    service = load_service(runs[request.param])
    with live_server(create_app(service, api_key=KEY, settings=LIMITS)) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=60)
        yield service, base, client


@pytest.fixture(scope="module")
def llama(runs):
    """The Llama run served without an API key (the openai client then sends any string)."""
    service = load_service(runs["llama"])
    with live_server(create_app(service, settings=LIMITS)) as base:
        yield service, base, openai.OpenAI(base_url=base + "/v1", api_key="anything", max_retries=0, timeout=60)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# -------------------------------------------------------------------------------------------------
# models, chat, completions
# -------------------------------------------------------------------------------------------------
def test_models_list_and_health(served):
    service, base, client = served
    models = client.models.list()
    assert [m.id for m in models.data] == [service.name]
    assert models.data[0].object == "model" and models.data[0].owned_by == "ragtune"
    assert isinstance(models.data[0].created, int)
    assert client.models.retrieve(service.name).id == service.name
    endpoints = httpx.get(base + "/healthz").json()["endpoints"]
    assert {"/v1/generate", "/v1/models", "/v1/chat/completions", "/v1/completions"} <= set(endpoints)


def test_chat_with_temperature_0_is_the_predictors_greedy_reply(served):
    service, _, client = served
    messages = [{"role": "system", "content": "reverse the words"}, *user("alpha beta gamma")]
    want = service.predictor.chat([messages], strategy="greedy")[0]
    reply = client.chat.completions.create(model=service.name, messages=messages, temperature=0)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.model == service.name
    assert len(reply.choices) == 1
    choice = reply.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.message.content == want["output"]
    assert choice.finish_reason == want["finish_reason"]
    assert reply.usage.prompt_tokens == want["prompt_tokens"]
    assert reply.usage.completion_tokens == want["completion_tokens"]
    assert reply.usage.total_tokens == want["prompt_tokens"] + want["completion_tokens"]
    parts = [{"type": "text", "text": "alpha beta"}, {"type": "text", "text": "gamma"}]  # joined with a newline
    by_parts = client.chat.completions.create(model=service.name, messages=[{"role": "user", "content": parts}],
                                              temperature=0, max_tokens=8)
    assert by_parts.choices[0].message.content == service.predictor.chat(
        [user("alpha beta\ngamma")], strategy="greedy", max_new_tokens=8)[0]["output"]


def test_no_temperature_keeps_the_runs_decode_settings(served):
    service, _, client = served
    reply = client.chat.completions.create(model=service.name, messages=user("eta theta"))  # the run: greedy
    assert reply.choices[0].message.content == service.predictor.chat([user("eta theta")])[0]["output"]


def test_completions_of_several_prompts(served):
    service, _, client = served
    prompts = ["alpha beta", "eta theta iota"]
    want = service.predictor.generate(prompts, details=True, strategy="greedy", max_new_tokens=10)
    got = client.completions.create(model=service.name, prompt=prompts, temperature=0, max_tokens=10)
    assert got.object == "text_completion" and got.id.startswith("cmpl-")
    assert [c.text for c in got.choices] == [w["output"] for w in want]
    assert [c.index for c in got.choices] == [0, 1]
    assert [c.finish_reason for c in got.choices] == [w["finish_reason"] for w in want]
    assert got.usage.prompt_tokens == sum(w["prompt_tokens"] for w in want)
    assert got.usage.completion_tokens == sum(w["completion_tokens"] for w in want)
    one = client.completions.create(model=service.name, prompt="alpha beta", temperature=0, max_tokens=10)
    assert one.choices[0].text == want[0]["output"]


# -------------------------------------------------------------------------------------------------
# streaming
# -------------------------------------------------------------------------------------------------
def test_streamed_chat_joins_to_the_non_streamed_reply_and_reports_usage(served):
    service, _, client = served
    kw = dict(model=service.name, messages=user("alpha beta"), temperature=0, max_tokens=20)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == {**whole.usage.model_dump(), **chunks[-1].usage.model_dump()}
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    if service.predictor.meta.get("hf"):  # a pretrained model streams token by token
        assert len(pieces) > 1, pieces
    else:  # ragtune's own model writes the reply whole
        assert len(pieces) <= 1
    plain = list(client.chat.completions.create(**kw, stream=True))  # no include_usage: no usage chunk
    assert all(c.choices for c in plain) and all(c.usage is None for c in plain)


def test_streamed_completion(served):
    service, _, client = served
    whole = client.completions.create(model=service.name, prompt=["alpha beta", "eta"], temperature=0, max_tokens=12)
    chunks = list(client.completions.create(model=service.name, prompt=["alpha beta", "eta"], temperature=0,
                                            max_tokens=12, stream=True))
    for i in (0, 1):
        text = "".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == i)
        assert text == whole.choices[i].text


def test_stop_strings(llama):
    service, _, client = llama
    base = client.chat.completions.create(model=service.name, messages=user("alpha beta"), temperature=0)
    text = base.choices[0].message.content
    words = text.split()
    assert len(words) >= 2, text
    stop = " " + words[1]
    want = text[:text.index(stop)]
    got = client.chat.completions.create(model=service.name, messages=user("alpha beta"), temperature=0,
                                         stop=[stop, "never-there"])
    assert got.choices[0].message.content == want and got.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model=service.name, messages=user("alpha beta"), temperature=0,
                                              stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == want


def test_a_seed_repeats_sampling_at_temperature_1(llama):
    service, _, client = llama

    def sample(seed):
        reply = client.chat.completions.create(model=service.name, messages=user("alpha beta"), temperature=1,
                                               seed=seed, max_tokens=16)
        return reply.choices[0].message.content

    first = sample(3)
    assert sample(3) == first
    assert any(sample(s) != first for s in (4, 5, 6))  # a random model: other seeds draw other tokens


# -------------------------------------------------------------------------------------------------
# errors the openai client raises
# -------------------------------------------------------------------------------------------------
def test_a_wrong_api_key_is_an_authentication_error(served):
    service, base, _ = served
    bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="API key") as err:
        bad.chat.completions.create(model=service.name, messages=user("alpha"))
    assert err.value.body["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_bad_requests_get_422_naming_the_field(served):
    service, _, client = served
    with pytest.raises(openai.UnprocessableEntityError, match="n: only 1 choice"):
        client.chat.completions.create(model=service.name, messages=user("alpha"), n=2)
    with pytest.raises(openai.UnprocessableEntityError, match="frequency_penalty"):
        client.chat.completions.create(model=service.name, messages=user("alpha"), frequency_penalty=0.5)
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens: 500 is over the run's limit"):
        client.completions.create(model=service.name, prompt="alpha", max_tokens=500)
    with pytest.raises(openai.UnprocessableEntityError, match="stop: up to 4"):
        client.chat.completions.create(model=service.name, messages=user("alpha"), stop=list("abcde"))


def test_over_a_limit_is_413_naming_the_key(served):
    service, _, client = served
    with pytest.raises(openai.APIStatusError, match="serve.max_chars_per_text") as err:
        client.chat.completions.create(model=service.name, messages=user("alpha " * 50))
    assert err.value.status_code == 413
    assert "messages[0].content" in err.value.message
    with pytest.raises(openai.APIStatusError, match="serve.max_texts_per_request") as err:
        client.completions.create(model=service.name, prompt=["alpha"] * 5)
    assert err.value.status_code == 413


def test_a_wrong_model_is_404_naming_the_served_one(served):
    service, _, client = served
    with pytest.raises(openai.NotFoundError, match=service.name) as err:
        client.chat.completions.create(model="gpt-4o", messages=user("alpha"))
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


# -------------------------------------------------------------------------------------------------
# without the client: malformed bodies, a failing request in a batch, a client that hangs up
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scratch_service(runs):
    return load_service(runs["scratch"])


@pytest.mark.parametrize("messages, said", [
    ([], "messages: give at least one"),
    ([{"role": "tool", "content": "x"}], "messages[0].role"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": 3}], "messages[1].content: a string or a list"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "messages[0].content[0]"),
    ([{"content": "no role"}], "messages.0.role"),
    (["just a string"], "messages.0"),
    ("not a list", "messages"),
])
def test_malformed_messages_get_one_clear_422(scratch_service, messages, said):
    with TestClient(create_app(scratch_service)) as http:
        r = http.post("/v1/chat/completions", json={"model": scratch_service.name, "messages": messages})
    assert r.status_code == 422, r.text
    body = r.json()
    assert said in body["detail"]
    assert body["error"]["message"] == body["detail"] and body["error"]["type"] == "invalid_request_error"


def test_unknown_fields_are_ignored_and_errors_elsewhere_keep_their_shape(scratch_service):
    with TestClient(create_app(scratch_service)) as http:
        r = http.post("/v1/chat/completions", json={"messages": user("alpha"), "user": "me", "logprobs": False,
                                                    "temperature": 0, "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == scratch_service.name  # no model: the served one
        r = http.post("/v1/generate", json={"prompts": []})  # the other routes: {"detail"} only
        assert r.status_code == 422 and "error" not in r.json()
        r = http.post("/v1/completions", json={"prompt": [1, 2, 3]})
        assert r.status_code == 422 and "token ids" in r.json()["error"]["message"]


def test_a_failing_request_in_a_batch_does_not_fail_the_other(runs, monkeypatch):
    service = load_service(runs["scratch"])
    real, batches = service.predictor.generate, []

    def generate(prompts, **kw):  # the model fails on one request's text
        batches.append(len(prompts))
        if any("BOOM" in str(p) for p in prompts):
            raise RagtuneError("this prompt breaks the model")
        return real(prompts, **kw)

    monkeypatch.setattr(service.predictor, "generate", generate)
    settings = ServeConfig(max_wait_ms=1000, max_batch_size=8)
    with live_server(create_app(service, settings=settings)) as base:
        results = {}

        def ask(name, text):
            results[name] = httpx.post(base + "/v1/chat/completions", timeout=60,
                                       json={"model": service.name, "messages": user(text)})

        threads = [threading.Thread(target=ask, args=(n, t)) for n, t in (("good", "alpha beta"), ("bad", "BOOM"))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert 2 in batches  # the two requests shared a batch, then each ran alone
    assert results["bad"].status_code == 400 and "breaks the model" in results["bad"].json()["error"]["message"]
    assert results["good"].status_code == 200, results["good"].text
    assert results["good"].json()["choices"][0]["message"]["content"] == real([user("alpha beta")])[0]["output"]


def test_a_client_that_hangs_up_mid_stream_leaves_the_server_well(llama):
    service, base, client = llama
    body = {"model": service.name, "messages": user("alpha beta"), "stream": True, "temperature": 0, "max_tokens": 16}
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        first = next(r.iter_lines())
        assert first.startswith("data: {")
    # the connection is closed after one event; the next request is answered as usual
    again = client.chat.completions.create(model=service.name, messages=user("alpha beta"), temperature=0)
    want = service.predictor.chat([user("alpha beta")], strategy="greedy")[0]["output"]
    assert again.choices[0].message.content == want


def test_a_bad_setting_in_a_stream_is_an_error_status_not_an_event(scratch_service):
    body = {"messages": user("alpha"), "stream": True, "temperature": 0, "repetition_penalty": 1.3}
    with TestClient(create_app(scratch_service)) as http:  # the predictor refuses it for ragtune's own models
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 400 and "repetition_penalty" in r.json()["error"]["message"]
        r = http.post("/v1/chat/completions", json={**body, "repetition_penalty": None, "top_k": 0})
        assert r.status_code == 422 and "top_k" in r.json()["error"]["message"]


def test_a_failure_mid_stream_is_an_error_event_the_client_raises(runs, monkeypatch):
    service = load_service(runs["scratch"])

    def stream(prompt, **overrides):
        yield {"text": "half a reply"}
        raise RagtuneError("the model gave up")

    monkeypatch.setattr(service.predictor, "stream", stream)
    with live_server(create_app(service)) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=60)
        got = []
        with pytest.raises(openai.APIError, match="the model gave up"):
            for chunk in client.chat.completions.create(model=service.name, messages=user("alpha"), stream=True):
                got.append(chunk.choices[0].delta.content or "")
        assert "".join(got) == "half a reply"
        monkeypatch.undo()  # the next request is served as usual
        reply = client.chat.completions.create(model=service.name, messages=user("alpha"), stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in reply) == service.predictor.chat([user("alpha")])[0]["output"]
