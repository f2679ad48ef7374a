"""An OpenAI-compatible API for ``task: generation`` runs and generative ``task: qa`` runs: ``/v1/models``,
``/v1/chat/completions``, ``/v1/completions``.

Any client of the OpenAI API (the ``openai`` Python package, LangChain, curl) talks to a served
generation run as it would to OpenAI; the answers come from the same
:class:`~ragtune.tasks.generation.predictor.GenerationPredictor` that ``ragtune predict`` and
``/v1/generate`` use::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="s3cret")   # any string without --api-key
    reply = client.chat.completions.create(model="squad_gen", temperature=0,
                                           messages=[{"role": "user", "content": "Who won Super Bowl 50?"}])
    print(reply.choices[0].message.content)
    for chunk in client.chat.completions.create(model="squad_gen", messages=[...], stream=True):
        print(chunk.choices[0].delta.content or "", end="")

Endpoints (added by :func:`add_openai_routes`, which :func:`ragtune.serve.app.create_app` calls for
generation runs only):

``GET /v1/models``            ``{"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created",
                              "owned_by": "ragtune"}]}``; ``MODEL_ID`` is the run directory's name
                              (``GET /v1/models/MODEL_ID``: that one entry)
``POST /v1/chat/completions`` ``model``, ``messages`` (roles ``system``, ``user``, ``assistant``; ``developer``
                              reads as ``system``; ``content`` a string or a list of ``{"type": "text", "text"}``
                              parts, joined with newlines) → ``{"id": "chatcmpl-…", "object": "chat.completion",
                              "created", "model", "choices": [{"index": 0, "message": {"role": "assistant",
                              "content"}, "finish_reason": "stop"|"length"}], "usage": {"prompt_tokens",
                              "completion_tokens", "total_tokens"}}``
``POST /v1/completions``      ``prompt`` (a string or a list of strings, read as ``/v1/generate`` reads them) →
                              ``{"object": "text_completion", "choices": [{"index", "text", "finish_reason"}],
                              "usage"}`` (usage summed over the prompts)

**Decoding.** ``temperature: 0`` decodes greedily; any other temperature samples with it (``top_p``,
``seed`` apply). *When a request gives neither ``temperature`` nor ``top_p`` the run's own ``decode:``
settings are used* (e.g. greedy or beam search), not OpenAI's default of sampling at temperature 1: a
run trained to answer is asked the way it was evaluated, and a client that wants sampling says so.
A request with ``top_p`` alone samples at temperature 1. ``max_tokens`` (or ``max_completion_tokens``)
is at most the run's ``model.max_length - 2`` (more: 422); ``stop`` is a string or up to 4; ``seed``
makes sampling repeatable. Not OpenAI's but accepted (as vLLM does): ``top_k`` and
``repetition_penalty`` (pretrained Hugging Face models only). ``n`` other than 1 and a non-zero
``frequency_penalty`` or ``presence_penalty`` get 422 naming the field; fields this API does not know
(``user``, ``logprobs``, ``tools``, ...) are ignored, as OpenAI ignores what a model does not use.

**Streaming.** ``stream: true`` answers ``text/event-stream``: ``data: {chunk}`` events
(``chat.completion.chunk``: a first ``delta: {"role": "assistant"}``, then ``delta: {"content": piece}``,
then an empty delta with the ``finish_reason``; ``text_completion`` chunks for ``/v1/completions``),
then ``data: [DONE]``; with ``stream_options: {"include_usage": true}`` one more chunk before
``[DONE]`` carries ``usage`` and empty ``choices``. A pretrained Hugging Face model streams token by
token; ragtune's own models write the reply whole, so it comes as one piece. Whitespace at the
reply's start and end is not sent, as the non-streamed reply has none: the pieces join to it. The model runs in the
server's model thread (never on the event loop), so other requests are answered meanwhile and wait
for the model in turn. When a client hangs up, nothing more is sent and the reply is finished unread
(at most ``max_tokens``), so that the model is never used by two threads at once. An error before the
first piece (a bad setting) is an ordinary error response; one after it is a last
``data: {"error": {...}}`` event, which the ``openai`` client raises as an ``APIError``.

**Retrieval runs** add a field OpenAI's clients ignore: ``"ragtune": {"passages": [...]}`` (chat: the
passages of the last user message; completions: one list per prompt; streaming: in the first chunk).

**QA runs with a generative reader** (``model.reader: generative``) answer the *last user message* as a
question, from the passages their retriever returns for it (the same retrieval and prompt as
``/v1/answer``, ``ragtune predict`` and the run's evaluation; earlier turns are not read). The reply
is what the model wrote (with its ``[n]`` citations when the run was trained with ``qa.cite``, ``[n]``
being the n-th of ``ragtune.passages``); a streamed reply comes as one piece.

**Protections** are those of every ``/v1`` endpoint (:mod:`ragtune.serve.app`): the API key
(``Authorization: Bearer KEY``, which the ``openai`` client sends as its ``api_key``), 413 over
``serve.max_texts_per_request`` messages or prompts or ``serve.max_chars_per_text`` characters in one
message's content or prompt, 422 for a malformed body. Requests without their own decoding settings
share the micro-batches of ``/v1/generate``; a failing request never fails another. Error bodies
keep ragtune's ``{"detail": message}`` and add OpenAI's ``{"error": {"message", "type", "code",
"param"}}``, from which the ``openai`` client takes the message of its exception
(:class:`OpenAIErrorBodies`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ragtune.errors import RagtuneError
from ragtune.serve.schemas import Passage

log = logging.getLogger("ragtune.serve")

OPENAI_PATHS = ("/v1/models", "/v1/chat/completions", "/v1/completions")
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


# -------------------------------------------------------------------------------------------------
# request bodies: OpenAI's field names; unknown fields are ignored, as OpenAI ignores them
# -------------------------------------------------------------------------------------------------
class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Lenient):
    include_usage: bool = Field(False, description="One more chunk before [DONE] with the usage and no choices.")


class _Sampling(_Lenient):
    model: str | None = Field(None, description="The served model's id (GET /v1/models: the run directory's name); "
                                                "null: the served model.")
    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy decoding; more: sampling at this "
                                      "temperature. Null with top_p null: the run's decode: settings.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling (sampling at temperature 1 when "
                                                              "temperature is null).")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to write (at most model.max_length - 2).")
    max_completion_tokens: int | None = Field(None, ge=1, description="The newer name of max_tokens (wins over it).")
    stop: str | list[str] | None = Field(None, description="A string, or up to 4, that end the output (not included).")
    seed: int | None = Field(None, description="Sampling seed: the same seed and settings give the same output.")
    n: int | None = Field(None, description="Choices per prompt: only 1.")
    stream: bool = Field(False, description="Server-sent events, one chunk per piece of text, then data: [DONE].")
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = Field(None, description="Not supported: only 0 (or null).")
    presence_penalty: float | None = Field(None, description="Not supported: only 0 (or null).")
    top_k: int | None = Field(None, ge=1, description="Not OpenAI's (vLLM's): sample among the k most likely tokens.")
    repetition_penalty: float | None = Field(None, gt=0, description="Not OpenAI's (vLLM's): transformers' "
                                                                     "repetition penalty (pretrained models only).")


class ChatMessage(_Lenient):
    role: str = Field(..., description="system, user or assistant (developer reads as system).")
    content: Any = Field(None, description='A string, or a list of {"type": "text", "text": ...} parts.')


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., description="The conversation so far; the reply is the assistant's "
                                                         "next turn.",
                                        examples=[[{"role": "user", "content": "Which team won Super Bowl 50?"}]])


class CompletionRequest(_Sampling):
    prompt: Any = Field(..., description="A prompt, or a list of prompts (one choice each).",
                        examples=["Which team won Super Bowl 50?"])


# -------------------------------------------------------------------------------------------------
# response bodies: the fields of the openai package's ChatCompletion, Completion and Model types
# -------------------------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: str = "assistant"
    content: str


class _Choice(BaseModel):
    index: int
    finish_reason: str = Field(..., description="stop: the end of the reply or a stop string; length: max_tokens.")
    logprobs: None = None


class ChatChoice(_Choice):
    message: AssistantMessage


class CompletionChoice(_Choice):
    text: str


class RagtuneExtra(BaseModel):
    passages: list[Passage] | list[list[Passage]] = Field(..., description="Retrieval runs: the passages read.")


class _Answer(BaseModel):
    id: str
    created: int
    model: str
    usage: Usage
    ragtune: RagtuneExtra | None = Field(None, description="Not OpenAI's: the passages of a retrieval run (chat: of "
                                                           "the last user message; completions: one list per prompt).")


class ChatCompletion(_Answer):
    object: str = "chat.completion"
    choices: list[ChatChoice]


class Completion(_Answer):
    object: str = "text_completion"
    choices: list[CompletionChoice]


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "ragtune"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


# -------------------------------------------------------------------------------------------------
# errors: ragtune's {"detail"} plus OpenAI's {"error": {...}}
# -------------------------------------------------------------------------------------------------
_CODES = {401: ("authentication_error", "invalid_api_key"), 404: ("invalid_request_error", "not_found"),
          408: ("invalid_request_error", "timeout"), 413: ("invalid_request_error", "request_too_large"),
          422: ("invalid_request_error", "invalid_value"), 400: ("invalid_request_error", "invalid_value")}


def error_object(status: int, message: str) -> dict:
    """OpenAI's ``error`` object for a status and message (``code: model_not_found`` for an unknown model)."""
    kind, code = _CODES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    if status == 404 and message.startswith("model:"):
        code = "model_not_found"
    return {"message": message, "type": kind, "code": code, "param": None}


class OpenAIErrorBodies:
    """ASGI middleware: a JSON error answer (status 400 or more) of an :data:`OPENAI_PATHS` route gets
    OpenAI's ``"error": {"message", "type", "code", "param"}`` next to its ``"detail"`` (the ``openai``
    client reads ``error.message``). Outermost, so the body limit's 413 and 408 get it too."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope.get("path", "").startswith(OPENAI_PATHS):
            return await self.app(scope, receive, send)
        held: dict = {}

        async def send_with_error(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held["start"], held["body"] = message, b""
                return None
            if "start" not in held or message["type"] != "http.response.body":
                return await send(message)
            held["body"] += message.get("body", b"")
            if message.get("more_body", False):
                return None
            start, body = held.pop("start"), held.pop("body")
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("detail"), str) and "error" not in data:
                data["error"] = error_object(start["status"], data["detail"])
                body = json.dumps(data).encode()
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                start = {**start, "headers": headers + [(b"content-length", str(len(body)).encode())]}
            await send(start)
            await send({"type": "http.response.body", "body": body})

        return await self.app(scope, receive, send_with_error)


class _Trim:
    """Streamed pieces as the non-streamed reply reads: whitespace at the reply's start dropped, and
    whitespace held back until more text follows it (so whitespace at the end is never sent)."""

    def __init__(self) -> None:
        self.started, self.pending = False, ""

    def feed(self, piece: str) -> str:
        if not self.started:
            piece = piece.lstrip()
            self.started = bool(piece)
        text = self.pending + piece
        ready = text.rstrip()
        self.pending = text[len(ready):]
        return ready


# -------------------------------------------------------------------------------------------------
# the routes
# -------------------------------------------------------------------------------------------------
def add_openai_routes(app: FastAPI, service, settings, batcher, metrics, require_key) -> list[str]:
    """Add :data:`OPENAI_PATHS` to ``app`` for ``service`` (a generation run); returns the paths added.

    ``batcher`` is the app's :class:`~ragtune.serve.batcher.MicroBatcher` (its function:
    ``predictor.generate(items, details=True)``), ``require_key`` its API-key dependency.
    """
    predictor = service.predictor
    model_id = service.name
    created = int(time.time())
    most_new = predictor.max_length - 2
    protected = [Depends(require_key)]

    def check_model(name: str | None) -> None:
        if name is not None and name != model_id:
            raise HTTPException(404, f"model: {name!r} is not served here; this server serves {model_id!r} "
                                     "(GET /v1/models)")

    def check_text(text: str, field: str) -> None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise HTTPException(422, f"{field}: not valid Unicode text (a lone surrogate)") from None
        if len(text) > settings.max_chars_per_text:
            raise HTTPException(413, f"{field}: {len(text)} characters; the limit is {settings.max_chars_per_text} "
                                     "(serve.max_chars_per_text)")

    def check_count(n: int, field: str) -> None:
        if n < 1:
            raise HTTPException(422, f"{field}: give at least one")
        if n > settings.max_texts_per_request:
            raise HTTPException(413, f"{field}: {n} in one request; the limit is {settings.max_texts_per_request} "
                                     "(serve.max_texts_per_request)")

    def overrides(body: _Sampling) -> dict:
        """The predictor's decoding overrides of a request (see the module docs), after checking it."""
        if body.n not in (None, 1):
            raise HTTPException(422, f"n: only 1 choice per request is supported (got {body.n})")
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(body, name):
                raise HTTPException(422, f"{name}: not supported; give 0 or leave it out (got {getattr(body, name)})")
        out: dict = {}
        if body.temperature == 0:
            out["strategy"] = "greedy"
        elif body.temperature is not None or body.top_p is not None:
            out.update(strategy="sample", temperature=1.0 if body.temperature is None else body.temperature)
            if body.top_p is not None:
                out["top_p"] = body.top_p
        new = body.max_completion_tokens or body.max_tokens
        if new is not None:
            field = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
            if new > most_new:
                raise HTTPException(422, f"{field}: {new} is over the run's limit of {most_new} "
                                         "(model.max_length - 2)")
            out["max_new_tokens"] = new
        stop = [body.stop] if isinstance(body.stop, str) else body.stop
        if stop:
            if len(stop) > 4 or not all(stop):
                raise HTTPException(422, f"stop: up to 4 non-empty strings (got {len(stop)})")
            for i, s in enumerate(stop):
                check_text(s, f"stop[{i}]")
            out["stop"] = stop
        for name in ("seed", "top_k", "repetition_penalty"):
            if getattr(body, name) is not None:
                out[name] = getattr(body, name)
        return out

    def conversation(messages: list[ChatMessage]) -> list[dict]:
        check_count(len(messages), "messages")
        out = []
        for i, m in enumerate(messages):
            role = ROLES.get(m.role)
            if role is None:
                raise HTTPException(422, f"messages[{i}].role: {m.role!r:.40} is not supported; use system, user "
                                         "or assistant")
            content = m.content
            if content is None:
                content = ""
            elif isinstance(content, list):
                texts = []
                for j, part in enumerate(content):
                    if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                        raise HTTPException(422, f"messages[{i}].content[{j}]: only text parts "
                                                 '({"type": "text", "text": "..."}) are supported')
                    texts.append(part["text"])
                content = "\n".join(texts)
            elif not isinstance(content, str):
                raise HTTPException(422, f"messages[{i}].content: a string or a list of text parts "
                                         f"(got {type(content).__name__})")
            check_text(content, f"messages[{i}].content")
            out.append({"role": role, "content": content})
        return out

    def prompts_of(prompt: Any) -> list[str]:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise HTTPException(422, "prompt: a string or a list of strings (token ids are not supported)")
        check_count(len(prompts), "prompt")
        for i, p in enumerate(prompts):
            check_text(p, f"prompt[{i}]" if isinstance(prompt, list) else "prompt")
        return prompts

    async def run(items: list, options: dict) -> list[dict]:
        """``generate(items, details=True)``: alone with its own settings, else in the shared micro-batches."""
        if options or service.kind != "generation":  # a qa run's micro-batches answer /v1/answer's questions
            return await batcher.call(lambda: predictor.generate(items, details=True, **options))
        return await batcher.submit(items)

    def usage(rows: list[dict]) -> dict:
        p, c = sum(r["prompt_tokens"] for r in rows), sum(r["completion_tokens"] for r in rows)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    # -- models --------------------------------------------------------------------------------------
    card = {"id": model_id, "object": "model", "created": created, "owned_by": "ragtune"}

    @app.get("/v1/models", response_model=ModelList, dependencies=protected, summary="The served model (OpenAI API)")
    async def list_models():
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model}", response_model=ModelCard, dependencies=protected,
             summary="One model (OpenAI API)")
    async def get_model(model: str):
        check_model(model)
        return card

    async def answer(body: _Sampling, route: str, items: list, chunks: str, prefix: str):
        """The rows of ``items`` (``generate(..., details=True)``), or the StreamingResponse of ``stream: true``."""
        options = overrides(body)
        metrics.items.labels(route).inc(len(items))
        if body.stream:
            return await stream_response(chunks, prefix, items, options, body)
        return await run(items, options)

    def envelope(kind: str, prefix: str, rows: list[dict], choices: list[dict]) -> dict:
        return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": model_id,
                "choices": choices, "usage": usage(rows)}

    # -- chat ----------------------------------------------------------------------------------------
    @app.post("/v1/chat/completions", response_model=ChatCompletion, response_model_exclude_none=True,
              dependencies=protected, summary="Chat completion (OpenAI API; stream: true for server-sent events)",
              responses={200: {"content": {"text/event-stream": {}}}})
    async def chat_completions(body: ChatCompletionRequest):
        check_model(body.model)
        rows = await answer(body, "/v1/chat/completions", [conversation(body.messages)], "chat.completion.chunk",
                            "chatcmpl")
        if isinstance(rows, StreamingResponse):
            return rows
        row = rows[0]
        out = envelope("chat.completion", "chatcmpl", rows, [{"index": 0, "finish_reason": row["finish_reason"],
                                                              "message": {"role": "assistant", "content": row["output"]}}])
        if row.get("passages") is not None:
            out["ragtune"] = {"passages": row["passages"]}
        return out

    # -- completions ---------------------------------------------------------------------------------
    @app.post("/v1/completions", response_model=Completion, response_model_exclude_none=True,
              dependencies=protected, summary="Text completion (OpenAI API; stream: true for server-sent events)",
              responses={200: {"content": {"text/event-stream": {}}}})
    async def completions(body: CompletionRequest):
        check_model(body.model)
        rows = await answer(body, "/v1/completions", prompts_of(body.prompt), "text_completion", "cmpl")
        if isinstance(rows, StreamingResponse):
            return rows
        out = envelope("text_completion", "cmpl", rows, [{"index": i, "text": r["output"],
                                                          "finish_reason": r["finish_reason"]}
                                                         for i, r in enumerate(rows)])
        if predictor.retriever is not None:
            out["ragtune"] = {"passages": [r.get("passages") or [] for r in rows]}
        return out

    # -- streaming -----------------------------------------------------------------------------------
    async def stream_response(kind: str, prefix: str, items: list, options: dict, body: _Sampling):
        """A StreamingResponse of server-sent events for ``items`` (one conversation, or prompts in turn).

        One job in the model thread runs ``predictor.stream`` over the items and hands each event to
        the event loop through a queue; an error before the first piece is raised here (an ordinary
        error answer), one after it becomes an ``error`` event."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        gone = threading.Event()
        chat = kind == "chat.completion.chunk"

        def put(event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        def work() -> None:
            try:
                for index, item in enumerate(items):
                    if gone.is_set():  # the client hung up: the prompts not begun are not written
                        break
                    if predictor.retriever is not None:
                        put(("passages", index, predictor.passages_of([item])[0]))
                    for event in predictor.stream(item, **options):
                        if not gone.is_set():  # a client gone: finish the reply unread (see the module docs)
                            put(("event", index, event))
            except Exception as exc:  # handed to the response (the status or an error event)
                if not isinstance(exc, RagtuneError):
                    log.error("internal error while streaming", exc_info=exc)
                put(("error", None, exc))
            finally:
                put(("end", None, None))

        job = loop.run_in_executor(batcher.executor, work)
        first = await queue.get()
        if first[0] == "error":
            await job
            raise first[2]
        rid, now = f"{prefix}-{uuid.uuid4().hex}", int(time.time())
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(index: int, delta: dict | None = None, text: str | None = None, finish=None, **extra) -> str:
            choice = {"index": index, "delta": delta or {}} if chat else {"index": index, "text": text or ""}
            data = {"id": rid, "object": kind, "created": now, "model": model_id,
                    "choices": [{**choice, "logprobs": None, "finish_reason": finish}], **extra}
            if include_usage:
                data["usage"] = None
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        async def events():
            totals = {"prompt_tokens": 0, "completion_tokens": 0}
            message = first
            started: set[int] = set()
            trims: dict[int, _Trim] = {}
            try:
                while message[0] != "end":
                    what, index, value = message
                    if what == "error":
                        status = 400 if isinstance(value, RagtuneError) else 500
                        text = str(value) if status == 400 else f"internal error ({type(value).__name__}); see the server log"
                        yield f"data: {json.dumps({'error': error_object(status, text)}, ensure_ascii=False)}\n\n"
                        return
                    extra = {}
                    if what == "passages":
                        extra["ragtune"] = {"passages": [Passage(**p).model_dump(exclude_none=True) for p in value]}
                    if chat and index not in started:
                        started.add(index)
                        yield chunk(index, {"role": "assistant", "content": ""}, **extra)
                    elif extra:
                        yield chunk(index, {}, "", **extra)
                    if what == "event":
                        text = trims.setdefault(index, _Trim()).feed(value.get("text") or "")
                        if text:
                            yield chunk(index, {"content": text}, text)
                        if "finish_reason" in value:
                            totals["prompt_tokens"] += value["prompt_tokens"]
                            totals["completion_tokens"] += value["completion_tokens"]
                            yield chunk(index, {}, "", finish=value["finish_reason"])
                    message = await queue.get()
                if include_usage:
                    data = {"id": rid, "object": kind, "created": now, "model": model_id, "choices": [],
                            "usage": {**totals, "total_tokens": sum(totals.values())}}
                    yield f"data: {json.dumps(data)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                gone.set()  # a client that hung up (the task is cancelled): nothing more is sent

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return list(OPENAI_PATHS)
