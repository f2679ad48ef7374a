"""The HTTP service: a FastAPI app over the one predictor ``ragtune predict`` uses.

Start it with ``ragtune serve RUN_DIR`` (see ``ragtune serve --help``), or build the app in
Python and run it with any ASGI server::

    from ragtune.serve.app import create_app
    from ragtune.serve.service import load_service
    app = create_app(load_service("runs/demo"), api_key="s3cret")
    # uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints (those that fit what is served; ``GET /healthz`` lists them):

``POST /v1/predict``   ``{"texts": ["...", ...], "explain": false}`` →
                       ``{"predictions": [{"label": "politics", "scores": {"politics": 0.9, ...}}, ...]}``
                       (regression: ``{"value": 3.2}``; retrieval runs add ``passages``; ``explain: true``
                       adds ``explanation``: token attributions, see :mod:`ragtune.explain`)
``POST /v1/answer``    ``{"questions": [...], "contexts": null}`` → ``{"answers": [{"answer", "score",
                       "passage", "passages"}, ...]}`` (QA runs; ``contexts``: one passage per question
                       instead of retrieval)
``POST /v1/translate`` ``{"texts": [...], "strategy": null, "beam_size": null, ...}`` →
                       ``{"translations": [{"output": "..."}, ...]}`` (translation runs; null options keep the
                       run's ``decode:`` settings)
``POST /v1/generate``  ``{"prompts": [...], "strategy": null, ...}`` → ``{"outputs": [{"output": "...",
                       "passages": [...]}, ...]}`` (generation runs; ``passages`` when the run retrieves)
``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``
                       the OpenAI API for generation runs (:mod:`ragtune.serve.openai_api`; the ``openai``
                       client works with ``base_url="http://HOST:PORT/v1"``), streaming included
``POST /v1/retrieve``  ``{"queries": [...], "k": 5}`` → ``{"results": [[{"id", "doc_id", "score", "text",
                       "title", "source"}, ...], ...]}`` (index folders, QA and retrieval runs)
``GET /healthz``       (and ``HEAD``, as for ``/``) model loaded, ragtune version, task, engine, device, labels, endpoints
``GET /metrics``       Prometheus text format (:mod:`ragtune.serve.metrics`)
``GET /``              a web page: paste text, see the label and a bar chart of the class scores, or the
                       answer and its passages (English and Chinese)
``GET /docs``          Swagger UI (offline: its files come from the swagger-ui-bundle package); ``GET /openapi.json`` the OpenAPI schema

**Batching.** Texts of ``/v1/predict`` and questions of ``/v1/answer`` that arrive together run in one
forward pass (:class:`ragtune.serve.batcher.MicroBatcher`; ``serve.max_batch_size``,
``serve.max_wait_ms``).

**Limits.** More than ``serve.max_texts_per_request`` texts, a text longer than
``serve.max_chars_per_text`` characters, or a body over ``serve.max_body_bytes`` bytes get 413 with a
message naming the limit and its config key; an empty list, a wrong type or malformed JSON get 422; a
missing or wrong API key 401. A text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``) gets
422 naming its field and index, before it reaches the model; should the model still fail on one request
of a batch, only that request gets the error (the batch's requests are retried one by one). A body not
complete ``serve.body_timeout_s`` seconds after its headers (slow, or promised by ``Content-Length`` and
never sent) gets 408 and the connection is closed. Every error body is ``{"detail": "one clear sentence"}``
(the OpenAI-compatible routes add OpenAI's ``"error": {"message", "type", "code", "param"}``).

**API key.** With ``api_key`` set (``ragtune serve --api-key KEY`` or ``RAGTUNE_API_KEY``) every
``/v1/*`` call must send ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. ``/``, ``/healthz``,
``/metrics`` and the docs stay open (put the server behind a proxy to restrict them).

**Files.** No endpoint takes a path: the app serves the model it was given and one packaged page, so
nothing else on the machine can be read through it. Retrieved passages report their source file by
name only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
import time
from importlib import resources
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragtune.version import __version__
from ragtune.config import ServeConfig
from ragtune.errors import RagtuneError
from ragtune.serve.schemas import Passage
from ragtune.serve.batcher import MicroBatcher
from ragtune.serve.metrics import ServerMetrics
from ragtune.serve.service import Service

log = logging.getLogger("ragtune.serve")


# -------------------------------------------------------------------------------------------------
SWAGGER_STATIC = "/static/swagger-ui"


def _swagger_ui_folder() -> str | None:
    """Swagger UI's files from the ``swagger-ui-bundle`` package (``ragtune[serve]``), or None without it
    (then ``/docs`` is FastAPI's own page, which loads them from a CDN)."""
    try:
        import swagger_ui_bundle
    except ImportError:
        log.info("swagger-ui-bundle is not installed: /docs loads Swagger UI from a CDN (pip install swagger-ui-bundle)")
        return None
    return str(swagger_ui_bundle.swagger_ui_path)


# request and response bodies (the OpenAPI schema at /openapi.json)
# -------------------------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Body):
    texts: list[str] = Field(..., description="Texts to classify (or score, for regression). At least one; "
                                              "at most serve.max_texts_per_request.",
                             examples=[["Parliament passed the budget bill", "央行宣布下调存款准备金率"]])
    explain: bool = Field(False, description="Add token attributions (integrated gradients) to each prediction; "
                                             "about 32 forward and backward passes per text.")


class Prediction(BaseModel):
    label: str | None = Field(None, description="Classification: the predicted class.")
    scores: dict[str, float] | None = Field(None, description="Classification: probability of every class.")
    value: float | None = Field(None, description="Regression: the predicted number.")
    passages: list[Passage] | None = Field(None, description="Retrieval runs: the passages the text was read with.")
    explanation: dict[str, Any] | None = Field(None, description="With explain: true: token attributions "
                                                                  "(see ragtune.explain).")


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class AnswerRequest(_Body):
    questions: list[str] = Field(..., description="Questions. At least one; at most serve.max_texts_per_request.",
                                 examples=[["Which team won Super Bowl 50?"]])
    contexts: list[str] | None = Field(None, description="Optional: one passage per question to read instead of "
                                                         "retrieving (needed when the run has no index).")


class Answer(BaseModel):
    answer: str
    score: float | None = Field(None, description="How much the reader prefers this span over 'no answer here' "
                                                  "(RAG runs: log p(passage) + log p(span)).")
    passage: Passage | None = Field(None, description="The passage the answer comes from (a generative reader: the first one it cites).")
    passages: list[Passage] | None = None
    citations: list[str] | None = Field(None, description="Generative readers: the ids of the passages the answer cites (qa.cite).")
    abstained: bool | None = Field(None, description="Generative readers: whether the answer is the run's qa.no_answer.")


class AnswerResponse(BaseModel):
    answers: list[Answer]


class _DecodeOptions(_Body):
    strategy: Literal["greedy", "beam", "sample"] | None = Field(None, description="Decoding; null: the run's decode.strategy.")
    beam_size: int | None = Field(None, ge=1, le=16, description="Beam search: beams kept.")
    max_new_tokens: int | None = Field(None, ge=1, description="Most output tokens (at most the run's max_length - 1).")
    seed: int | None = Field(None, description="Sampling seed (the same seed gives the same outputs).")
    top_k: int | None = Field(None, ge=1, description="Sampling: keep the k most likely tokens.")
    top_p: float | None = Field(None, gt=0, le=1, description="Sampling: keep the smallest set of tokens with this much probability.")

    def overrides(self) -> dict:
        return {k: v for k, v in self.model_dump(exclude={"texts", "prompts"}).items() if v is not None}


class TranslateRequest(_DecodeOptions):
    texts: list[str] = Field(..., description="Source sentences. At least one; at most serve.max_texts_per_request.",
                             examples=[["A man is riding a bicycle down the street."]])


class Translation(BaseModel):
    output: str


class TranslateResponse(BaseModel):
    translations: list[Translation]


class GenerateRequest(_DecodeOptions):
    prompts: list[str] = Field(..., description="Prompts (or beginnings to continue, for a run trained on texts "
                                                "without prompts). At least one; at most serve.max_texts_per_request.",
                               examples=[["Which team won Super Bowl 50?"]])


class Generation(BaseModel):
    output: str
    passages: list[Passage] | None = Field(None, description="Runs with retrieval: the passages the prompt was read with, best first.")


class GenerateResponse(BaseModel):
    outputs: list[Generation]


class RetrieveRequest(_Body):
    queries: list[str] = Field(..., description="Search queries. At least one; at most serve.max_texts_per_request.",
                               examples=[["Which team won Super Bowl 50?"]])
    k: int = Field(5, description="Passages per query, best first (1 to serve.max_k).")


class RetrieveResponse(BaseModel):
    results: list[list[Passage]]


class Health(BaseModel):
    status: str
    model_loaded: bool
    version: str
    task: str
    engine: str
    device: str
    name: str
    labels: list[str]
    endpoints: list[str]
    max_batch_size: int
    max_texts_per_request: int
    max_chars_per_text: int


class ErrorBody(BaseModel):
    detail: str


_ERRORS = {400: {"model": ErrorBody, "description": "The model could not process the input."},
           401: {"model": ErrorBody, "description": "Missing or wrong API key."},
           413: {"model": ErrorBody, "description": "Over a limit: texts per request, characters per text, body size."},
           422: {"model": ErrorBody, "description": "Malformed JSON, a wrong type, an empty list."}}


# -------------------------------------------------------------------------------------------------
# middleware: body size limit and request metrics (plain ASGI, so they see every request)
# -------------------------------------------------------------------------------------------------
class _BodyLimit:
    """Refuse a body over ``limit`` bytes with 413, from its Content-Length or while reading it, and a body
    not complete ``timeout`` seconds after its headers (slow, or a Content-Length promised but never sent)
    with 408 and ``Connection: close`` (the rest of the body would otherwise be read as the next request)."""

    def __init__(self, app, limit: int, timeout: float | None = None) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = f"the request body is larger than {self.limit} bytes (serve.max_body_bytes)"
        if declared is not None:
            try:
                declared_bytes = int(declared)
            except ValueError:
                return await _send_json(send, 400, {"detail": "Content-Length is not a number"})
            if declared_bytes > self.limit:
                return await _send_json(send, 413, {"detail": too_big})
        chunks, size = [], 0
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:  # read the body up to the limit, then replay it to the app
            try:
                message = await asyncio.wait_for(receive(), None if deadline is None
                                                 else max(deadline - time.monotonic(), 0.0))
            except asyncio.TimeoutError:
                return await _send_json(send, 408, {"detail": f"the request body did not arrive within {self.timeout:g} s "
                                                              "(serve.body_timeout_s)"}, close=True)
            except asyncio.CancelledError:  # the server stops (serve.shutdown_timeout_s ran out) while the body
                with contextlib.suppress(Exception):  # is still awaited: say so, rather than a logged traceback
                    await _send_json(send, 503, {"detail": "the server is shutting down"}, close=True)
                return
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                return await _send_json(send, 413, {"detail": too_big})
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _send_json(send, status: int, body: dict, close: bool = False) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + ([(b"connection", b"close")] if close else [])})
    await send({"type": "http.response.body", "body": data})


class _Metrics:
    """Count every response by route template and status, and time it. A request whose client hung up
    before any answer was sent (e.g. mid-upload) counts as 499 ("client closed request", as nginx)."""

    def __init__(self, app, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status, started, gone = 500, False, False

        async def receive_and_note():
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
            return message

        async def send_and_note(message):
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive_and_note, send_and_note)
        finally:
            if gone and not started:  # the client hung up before any answer (mid-body): nginx's 499
                status = 499
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            self.metrics.observe_request(endpoint, scope.get("method", ""), status, time.perf_counter() - start)


# -------------------------------------------------------------------------------------------------
# the app
# -------------------------------------------------------------------------------------------------
def _page() -> str:
    return resources.files("ragtune.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def key_dependency(api_key: str | None):
    """A FastAPI dependency that accepts a request only with ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``
    (compared in constant time), else 401; every request when ``api_key`` is None (``ragtune board`` uses it too)."""
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY")

    async def require_key(credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                          x_api_key: str | None = Depends(header_key)) -> None:
        if not api_key:
            return
        given = [c for c in (credentials.credentials if credentials else None, x_api_key) if c]
        if not any(secrets.compare_digest(g.encode(), api_key.encode()) for g in given):
            raise HTTPException(401, "missing or wrong API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                                headers={"WWW-Authenticate": "Bearer"})

    return require_key


def create_app(service: Service, api_key: str | None = None, settings: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving ``service`` (see the module docs). ``settings`` default to ``service.settings``."""
    if api_key is not None and not api_key.strip():  # "" would otherwise turn authentication off
        raise ValueError("api_key is empty; give a non-empty key, or None to serve without one")
    settings = settings or service.settings
    metrics = ServerMetrics()
    model_fn = None
    endpoints = service.endpoints
    if "/v1/predict" in endpoints:
        service.predictor.batch_size = settings.max_batch_size  # the forward passes the batcher's batches get
        service.predictor.max_batch_tokens = settings.max_batch_tokens
        model_fn = service.predictor.predict
    elif "/v1/answer" in endpoints:
        model_fn = service.predictor.answer
    elif "/v1/translate" in endpoints:
        service.predictor.batch_size = settings.max_batch_size
        model_fn = service.predictor.generate  # the run's own decoding settings; a request with others runs alone
    elif "/v1/generate" in endpoints:  # details: the finish reasons and token counts of the OpenAI API
        service.predictor.batch_size = settings.max_batch_size
        model_fn = functools.partial(service.predictor.generate, details=True)
    batcher = MicroBatcher(model_fn or (lambda items: items), settings.max_batch_size, settings.max_wait_ms / 1000,
                           on_batch=metrics.batch_size.observe)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        log.info("serving %s (%s, engine %s): %s, a web page at /, docs at /docs", service.name, service.kind,
                 service.engine, ", ".join(endpoints) or "no model endpoint")
        yield
        await batcher.stop()

    swagger = _swagger_ui_folder()
    app = FastAPI(title="ragtune", version=__version__, lifespan=lifespan, docs_url=None if swagger else "/docs",
                  description=f"ragtune {__version__} serving `{service.name}` ({service.kind}, engine "
                              f"{service.engine}). Errors are `{{\"detail\": message}}`.")
    if swagger:  # /docs offline: Swagger UI's files from the swagger-ui-bundle package, not a CDN
        from fastapi.openapi.docs import get_swagger_ui_html
        from fastapi.staticfiles import StaticFiles

        app.mount(SWAGGER_STATIC, StaticFiles(directory=swagger), name="swagger-ui")

        @app.get("/docs", include_in_schema=False)
        async def docs():
            return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"ragtune {service.name}: API",
                                       swagger_js_url=f"{SWAGGER_STATIC}/swagger-ui-bundle.js",
                                       swagger_css_url=f"{SWAGGER_STATIC}/swagger-ui.css",
                                       swagger_favicon_url=f"{SWAGGER_STATIC}/favicon-32x32.png")
    app.state.service, app.state.metrics, app.state.batcher = service, metrics, batcher

    # -- errors: one clear sentence in "detail" ----------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors()[:5]:  # never echo the input: it may be huge or not text
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "invalid request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail
        if exc.status_code == 400 and detail == "There was an error parsing the body":  # FastAPI's words
            detail = "the request body is not JSON in UTF-8; send Content-Type: application/json and a UTF-8 body"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RagtuneError)
    async def _user_error(request: Request, exc: RagtuneError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    # -- authentication ----------------------------------------------------------------------------
    require_key = key_dependency(api_key)

    # -- limits --------------------------------------------------------------------------------------
    def check_texts(texts: list[str], field: str) -> None:
        if not texts:
            raise HTTPException(422, f"{field}: give at least one")
        if len(texts) > settings.max_texts_per_request:
            raise HTTPException(413, f"{field}: {len(texts)} in one request; the limit is "
                                     f"{settings.max_texts_per_request} (serve.max_texts_per_request)")
        for i, text in enumerate(texts):
            try:  # legal JSON ("\\ud800") but no tokenizer can take it: refuse it before it joins a batch
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise HTTPException(422, f"{field}[{i}]: not valid Unicode text (a lone surrogate)") from None
            if len(text) > settings.max_chars_per_text:
                raise HTTPException(413, f"{field}[{i}]: {len(text)} characters; the limit is "
                                         f"{settings.max_chars_per_text} (serve.max_chars_per_text)")

    async def decode(route: str, field: str, texts: list[str], body, model, reserved: int) -> list:
        """The outputs of a decoding request (/v1/translate, /v1/generate): checks ``texts`` and
        ``max_new_tokens`` (at most ``model.max_length - reserved``); a request with its own decoding
        settings runs as one call, one without them joins the micro-batches."""
        check_texts(texts, field)
        limit = model.max_length - reserved
        if body.max_new_tokens is not None and body.max_new_tokens > limit:
            raise HTTPException(422, f"max_new_tokens: {body.max_new_tokens} is over the run's limit of {limit} "
                                     f"(model.max_length - {reserved})")
        metrics.items.labels(route).inc(len(texts))
        overrides = body.overrides()
        if overrides:
            return await batcher.call(lambda: model.generate(texts, **overrides))
        return await batcher.submit(texts)

    # -- endpoints ---------------------------------------------------------------------------------
    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(_page(), headers={"Content-Security-Policy": "default-src 'self'; style-src 'self' "
                                              "'unsafe-inline'; script-src 'self' 'unsafe-inline'"})

    @app.get("/healthz", response_model=Health, summary="Liveness and what is served (HEAD: the status alone)")
    @app.head("/healthz", include_in_schema=False)  # one operation in the schema (a HEAD answers without a body)
    async def healthz():
        return Health(status="ok", model_loaded=True, version=__version__, task=service.kind,
                      engine=service.engine, device=service.device, name=service.name, labels=service.labels,
                      endpoints=endpoints, max_batch_size=settings.max_batch_size,
                      max_texts_per_request=settings.max_texts_per_request,
                      max_chars_per_text=settings.max_chars_per_text)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    protected = [Depends(require_key)]
    if "/v1/predict" in endpoints:
        @app.post("/v1/predict", response_model=PredictResponse, response_model_exclude_none=True,
                  dependencies=protected, responses=_ERRORS, summary="Classify or score texts")
        async def predict(body: PredictRequest):
            check_texts(body.texts, "texts")
            if body.explain and len(body.texts) > settings.max_explain_texts:
                raise HTTPException(413, f"explain: {len(body.texts)} texts in one request; explanations are limited "
                                         f"to {settings.max_explain_texts} (serve.max_explain_texts)")
            metrics.items.labels("/v1/predict").inc(len(body.texts))
            predictions = [dict(p) for p in await batcher.submit(body.texts)]  # the response model picks the fields
            if body.explain:
                for text, row in zip(body.texts, predictions):
                    row["explanation"] = await batcher.call(_explain, service.predictor, text)
            return {"predictions": predictions}

    if "/v1/answer" in endpoints:
        @app.post("/v1/answer", response_model=AnswerResponse, response_model_exclude_none=True,
                  dependencies=protected, responses=_ERRORS, summary="Answer questions (QA runs)")
        async def answer(body: AnswerRequest):
            check_texts(body.questions, "questions")
            metrics.items.labels("/v1/answer").inc(len(body.questions))
            if body.contexts is not None:
                if len(body.contexts) != len(body.questions):
                    raise HTTPException(422, f"contexts: {len(body.contexts)} for {len(body.questions)} questions; "
                                             "give one context per question, or none")
                check_texts(body.contexts, "contexts")
                results = await batcher.call(service.predictor.answer, body.questions, body.contexts)
            else:
                results = await batcher.submit(body.questions)
            return {"answers": [{**r, "score": r["score"] if r["score"] != float("-inf") else None,
                                 "passage": r.get("passage") or None} for r in results]}

    if "/v1/translate" in endpoints:
        @app.post("/v1/translate", response_model=TranslateResponse, dependencies=protected, responses=_ERRORS,
                  summary="Translate texts (translation runs)")
        async def translate(body: TranslateRequest):
            return {"translations": await decode("/v1/translate", "texts", body.texts, body, service.predictor, 1)}

    if "/v1/generate" in endpoints:
        @app.post("/v1/generate", response_model=GenerateResponse, response_model_exclude_none=True,
                  dependencies=protected, responses=_ERRORS, summary="Generate responses (generation runs)")
        async def generate(body: GenerateRequest):
            return {"outputs": await decode("/v1/generate", "prompts", body.prompts, body, service.predictor, 2)}

    if "/v1/generate" in endpoints or getattr(service.predictor, "generative", False):  # a generation or generative qa run
        from ragtune.serve.openai_api import add_openai_routes  # /v1/models, /v1/chat/completions, /v1/completions

        endpoints.extend(add_openai_routes(app, service, settings, batcher, metrics, require_key))

    if service.index is not None:
        @app.post("/v1/retrieve", response_model=RetrieveResponse, response_model_exclude_none=True,
                  dependencies=protected, responses=_ERRORS, summary="Search the index")
        async def retrieve(body: RetrieveRequest):
            check_texts(body.queries, "queries")
            limit = min(settings.max_k, len(service.index))
            if not 1 <= body.k <= limit:
                raise HTTPException(422, f"k: {body.k} is out of range; give 1 to {limit} (serve.max_k, or the "
                                         "number of passages in the index)")
            metrics.items.labels("/v1/retrieve").inc(len(body.queries))
            hits = await batcher.call(service.index.search_batch, body.queries, body.k)
            return {"results": [[h.to_dict() for h in per_query] for per_query in hits]}

    async def not_served(request: Request):
        raise HTTPException(404, f"{request.scope['route'].path} is not served for a {service.kind} "
                                 f"{'folder' if service.kind == 'index' else 'run'}; this server offers "
                                 f"{', '.join(service.endpoints) or 'no model endpoint'}")

    for path in ("/v1/predict", "/v1/answer", "/v1/translate", "/v1/generate", "/v1/retrieve"):
        if path not in endpoints:
            app.add_api_route(path, not_served, methods=["POST"], include_in_schema=False)

    # the plain-ASGI middleware (metrics outside, so a 413 from the body limit is counted too)
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes, timeout=settings.body_timeout_s)
    app.add_middleware(_Metrics, metrics=metrics)
    if "/v1/chat/completions" in endpoints:  # outermost: OpenAI's {"error": ...} in every error of those routes
        from ragtune.serve.openai_api import OpenAIErrorBodies

        app.add_middleware(OpenAIErrorBodies)
    return app


def _explain(predictor, text: str) -> dict:
    from ragtune.explain import explain

    return explain(predictor, text)
