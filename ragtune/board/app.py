"""ragtune board: a web page to configure, launch, watch and compare runs and studies (FastAPI, like
``ragtune serve``)::

    ragtune board --runs runs --configs configs          # http://127.0.0.1:7860/

The page (``static/board.html``, English and Chinese) reads this JSON API:

=====================================  ===========================================================================
``GET /api/runs``                      every run and study under ``--runs``: kind, task, status, main metric, times
``GET /api/runs/{id}``                 one run: config, metrics, history, step log, report, data report, pictures, log
``GET /api/runs/{id}/events``          server-sent events while it trains: new step-log lines, epochs, status
``GET /api/runs/{id}/files/{name}``    one of its pictures
``GET /api/compare?ids=a&ids=b``       several runs: config differences, metrics, curves
``GET /api/configs``                   the packaged configs and the YAML files under ``--configs``
``GET /api/configs/{name}``            one config's text
``GET /api/schema``                    the config's JSON Schema (the page's form is generated from it)
``POST /api/validate``                 ``{"yaml": ...}``: every error of a config, as ``ragtune validate`` finds them
``POST /api/jobs``                     launch ``run`` / ``tune``: ``{"command", "config" or "yaml", "out", "overrides"}``
``POST /api/jobs/{id}/stop``           Ctrl-C the job: the run keeps its last checkpoint
``POST /api/runs/{id}/resume``         continue a killed run from its last checkpoint, a killed study from its trials
``POST /api/runs/{id}/serve``          ``ragtune serve`` a finished run on a free port (its page: ``port``)
``POST /api/runs/{id}/export``         ``{"quantize": "int8" | null}``: ``ragtune export`` to ``RUNS/exports/RUN[-int8]``
``POST /api/runs/{id}/explain``        ``{"text", "target"}``: ``ragtune explain``; the HTML at ``/api/jobs/{id}/result``
``GET /api/jobs``, ``/api/jobs/{id}``  the launched jobs (``ready``: a server answers on its port)
``GET /api/jobs/{id}/log``             a job's log
=====================================  ===========================================================================

**Safety.** The board binds to 127.0.0.1 unless told otherwise. With ``api_key`` set, every ``POST`` must send
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; bound to another address it refuses to start without a
key. Runs are read and written only under ``--runs`` and configs only under ``--configs`` (a path that leaves
them is a 404); pasted YAML is parsed with ``yaml.safe_load``; a config error is answered 422 with every
error, and nothing is launched.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from ragtune.board import catalog
from ragtune.board.jobs import COMMANDS, Jobs
from ragtune.errors import RagtuneError
from ragtune.paths import check_writable_folder, os_errors
from ragtune.serve.app import key_dependency

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
NAME = re.compile(r"[\w][\w.-]{0,99}")  # a run folder or config file the board creates


class JobRequest(BaseModel):
    command: str = Field("run", description="`run` or `tune`")
    config: str | None = Field(None, description="a packaged config's name or a YAML file under --configs")
    yaml: str | None = Field(None, description="a config's text (saved under --configs as `save_as`)")
    tree: dict | None = Field(None, description="a config as a mapping, what the page's form edits (saved as YAML)")
    save_as: str | None = Field(None, description="file name for `yaml` under --configs (default board-<out>.yaml)")
    out: str = Field(..., description="the run folder, a name under --runs")
    overrides: list[str] = Field(default_factory=list, description="KEY=VALUE overrides")


class ValidateRequest(BaseModel):
    yaml: str | None = Field(None, description="a config's text")
    tree: dict | None = Field(None, description="or a config as a mapping (the form's)")
    overrides: list[str] = Field(default_factory=list)


class ExportRequest(BaseModel):
    quantize: str | None = Field(None, description="`int8`: also write and check an int8 model")


class ExplainRequest(BaseModel):
    text: str = Field(..., description="the text to explain", max_length=20_000)
    target: str | None = Field(None, description="the class to explain (default: the predicted one)")


EXPLAINABLE = ("classification", "regression")  # the tasks `ragtune export` and `ragtune explain` take


def create_board(runs: Path, configs: Path | None = None, api_key: str | None = None, host: str = "127.0.0.1",
                 max_parallel: int = 1) -> FastAPI:
    """The board's app over the folders ``runs`` (created if missing) and ``configs``."""
    if api_key is not None and not api_key.strip():
        raise RagtuneError("board: the API key is empty; give a non-empty key, or none on 127.0.0.1")
    if host not in LOOPBACK and not api_key:
        raise RagtuneError(f"board: bound to {host}, the board launches processes for whoever reaches it: give "
                           "--api-key KEY (or RAGTUNE_API_KEY), or bind to 127.0.0.1")
    runs = check_writable_folder(Path(runs), "--runs").resolve()
    with os_errors(runs, "--runs"):
        runs.mkdir(parents=True, exist_ok=True)
    configs = check_writable_folder(Path(configs), "--configs").resolve() if configs else None
    jobs = Jobs(runs, max_parallel)
    app = FastAPI(title="ragtune board", docs_url=None, redoc_url=None)
    app.state.jobs = jobs
    app.router.on_shutdown.append(jobs.close)

    require_key = key_dependency(api_key)

    def folder_of(run_id: str) -> Path:
        try:
            folder = catalog.inside(runs, run_id)
        except catalog.OutsideError:
            raise HTTPException(404, f"no run {run_id!r} under the board's folder") from None
        if not (catalog.is_run(folder) or catalog.is_study(folder)):
            raise HTTPException(404, f"no run {run_id!r} under the board's folder")
        return folder

    def config_path(name: str) -> Path:
        from ragtune.api import packaged_configs

        packaged = packaged_configs()
        if name in packaged:
            return packaged[name]
        if configs is not None:
            try:
                path = catalog.inside(configs, name)
            except catalog.OutsideError:
                path = None
            if path is not None and path.is_file() and path.suffix in (".yaml", ".yml"):
                return path
        raise HTTPException(404, f"no config {name!r}: a packaged name ({', '.join(packaged)}) or a YAML file "
                                 "under --configs")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (STATIC / "board.html").read_text(encoding="utf-8")

    @app.get("/api/runs")
    def list_runs() -> dict:
        return {"root": str(runs), "runs": catalog.scan(runs), "jobs": jobs.listing()}

    @app.get("/api/runs/{run_id:path}/events")
    async def events(run_id: str, request: Request, start: int = 0) -> StreamingResponse:
        folder = folder_of(run_id)

        async def stream():
            offset, epochs, status = max(0, start), -1, None
            while not await request.is_disconnected():
                rows, offset = catalog.read_lines(folder / "train_log.jsonl", offset)
                history = catalog.read_json(folder / "history.json", []) or []
                now = catalog.run_status(folder)
                if rows or len(history) != epochs or now != status:
                    epochs, status = len(history), now
                    yield f"data: {json.dumps({'steps': rows, 'history': history, 'status': now, 'offset': offset})}\n\n"
                if now != "running" and not rows:
                    if now in ("finished", "failed", "killed"):
                        yield f"event: end\ndata: {json.dumps({'status': now})}\n\n"
                        return
                await asyncio.sleep(1.0)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/api/runs/{run_id:path}/files/{name}")
    def picture(run_id: str, name: str) -> FileResponse:
        folder = folder_of(run_id)
        if "/" in name or Path(name).suffix.lower() not in catalog.PICTURES or not (folder / name).is_file():
            raise HTTPException(404, f"no picture {name!r} in {run_id}")
        return FileResponse(folder / name)

    @app.post("/api/runs/{run_id:path}/resume", dependencies=[Depends(require_key)])
    def resume(run_id: str) -> dict:
        folder = folder_of(run_id)
        line = catalog.summary(runs, folder)
        if line["status"] != "killed":
            raise HTTPException(409, f"{run_id} is {line['status']}: only a killed run with a checkpoint, or a "
                                     "killed study, resumes")
        try:
            if line["kind"] == "study":  # an existing study under --out goes on from its finished trials
                job = jobs.submit("tune", folder / "config.yaml", folder)
            else:
                job = jobs.submit("run", folder / "config.yaml", folder, resume=True)
        except RagtuneError as exc:
            raise HTTPException(409, str(exc)) from None
        return job.public()

    def tool(command: str, args: list, out: Path, **extra):
        try:
            return jobs.start_tool(command, args, out, **extra)
        except RagtuneError as exc:
            raise HTTPException(409, str(exc)) from None

    def finished_run(run_id: str, tasks: tuple[str, ...] | None = None) -> Path:
        folder = folder_of(run_id)
        line = catalog.summary(runs, folder)
        if line["kind"] != "run":
            raise HTTPException(409, f"{run_id} is a study: serve, export and explain take a finished run (open a trial)")
        if line["status"] != "finished":
            raise HTTPException(409, f"{run_id} is {line['status']}: serve, export and explain take a finished run")
        if tasks and line["task"] not in tasks:
            raise HTTPException(409, f"{run_id} is a {line['task']} run: this takes a run of {' or '.join(tasks)}")
        return folder

    @app.post("/api/runs/{run_id:path}/serve", dependencies=[Depends(require_key)])
    def serve(run_id: str) -> dict:
        folder = finished_run(run_id)
        job = jobs.running("serve", folder)  # one server a run: a second click opens the same page
        if job is None:
            port = _free_port(host)
            job = tool("serve", [folder, "--host", host, "--port", port], folder, port=port,
                       env={"RAGTUNE_API_KEY": api_key} if api_key else {})
        return job.public()

    @app.post("/api/runs/{run_id:path}/export", dependencies=[Depends(require_key)])
    def export(run_id: str, body: ExportRequest | None = None) -> dict:
        folder = finished_run(run_id, EXPLAINABLE)
        body = body or ExportRequest()
        if body.quantize not in (None, "int8"):
            raise HTTPException(422, f"quantize: {body.quantize!r}; choose int8 or null")
        # a folder of its own (export refuses one inside the run): RUNS/exports/<run>[-int8]
        out = runs / "exports" / (folder.relative_to(runs).as_posix().replace("/", "--") + ("-int8" if body.quantize else ""))
        if out.exists():
            raise HTTPException(409, f"{out.relative_to(runs)} exists: the run is exported there already")
        if jobs.running("export", out):
            raise HTTPException(409, f"{out.relative_to(runs)}: an export into it is running")
        args = [folder, "--format", "onnx", "--out", out] + (["--quantize", "int8"] if body.quantize else [])
        return tool("export", args, out).public()

    @app.post("/api/runs/{run_id:path}/explain", dependencies=[Depends(require_key)])
    def explain(run_id: str, body: ExplainRequest) -> dict:
        folder = finished_run(run_id, EXPLAINABLE)
        if not body.text.strip():
            raise HTTPException(422, "text: empty; give the text whose prediction to explain")
        if "\x00" in body.text or "\x00" in (body.target or ""):
            raise HTTPException(422, "text, target: a NUL character cannot be passed on; remove it")
        result = runs / ".board" / "explain" / f"{uuid.uuid4().hex[:12]}.html"
        result.parent.mkdir(parents=True, exist_ok=True)
        # --target=X and "--" before the text: a target or text starting with "-" is not read as an option
        args = [folder, "--out", result] + ([f"--target={body.target}"] if body.target else []) + ["--", body.text]
        return tool("explain", args, folder, result=result).public()

    @app.get("/api/runs/{run_id:path}")
    def run_detail(run_id: str) -> dict:
        return catalog.detail(runs, folder_of(run_id))

    @app.get("/api/compare")
    def compare(ids: list[str] = Query(..., min_length=2)) -> dict:
        folders = [folder_of(i) for i in ids]
        import yaml

        config_trees = [catalog.read_yaml(f / "config.yaml") for f in folders]
        return {"ids": ids, "differences": catalog.config_differences(config_trees),
                "metrics": [catalog.read_json(f / "metrics.json") for f in folders],
                "history": [catalog.read_json(f / "history.json", []) or [] for f in folders],
                "steps": [catalog.read_lines(f / "train_log.jsonl")[0] for f in folders],
                "configs": [yaml.safe_dump(t, allow_unicode=True, sort_keys=False) for t in config_trees]}

    @app.get("/api/configs")
    def list_configs() -> dict:
        from ragtune.api import describe_config, packaged_configs

        packaged, local = packaged_configs(), []
        shipped = {p.resolve() for p in packaged.values()}  # a checkout's configs/ are the packaged ones
        if configs is not None and configs.is_dir():
            local = [{"name": p.relative_to(configs).as_posix(), "about": describe_config(p)}
                     for p in sorted(configs.rglob("*.y*ml")) if p.suffix in (".yaml", ".yml") and p.resolve() not in shipped]
        return {"packaged": [{"name": n, "about": describe_config(p)} for n, p in packaged.items()], "local": local}

    @app.get("/api/configs/{name:path}", response_class=PlainTextResponse)
    def config_text(name: str) -> str:
        return config_path(name).read_text(encoding="utf-8")

    @app.get("/api/schema")
    def schema() -> dict:
        from ragtune.tasks import config_json_schema

        return config_json_schema()

    @app.post("/api/validate")
    def validate(body: ValidateRequest) -> dict:
        """Every error of the config, its mapping (what the form shows) and its YAML (what the editor shows)."""
        if (body.yaml is None) == (body.tree is None):
            raise HTTPException(422, "give `yaml` (a config's text) or `tree` (a mapping), one of the two")
        text = body.yaml if body.yaml is not None else _yaml_of(body.tree)
        tree, errors = _check(text, body.overrides, configs or runs)
        return {"ok": not errors, "errors": errors, "tree": tree, "yaml": text}

    @app.post("/api/jobs", dependencies=[Depends(require_key)])
    def launch(body: JobRequest) -> dict:
        if body.command not in COMMANDS:
            raise HTTPException(422, f"command: {body.command!r}; choose one of {list(COMMANDS)}")
        if not NAME.fullmatch(body.out):
            raise HTTPException(422, f"out: {body.out!r} must be a folder name (letters, digits, '-', '_', '.') "
                                     "under the board's runs folder")
        out = runs / body.out
        if out.exists():
            raise HTTPException(409, f"out: {body.out} exists under {runs}; choose another name")
        if sum(x is not None for x in (body.config, body.yaml, body.tree)) != 1:
            raise HTTPException(422, "give `config` (a name), `yaml` (a config's text) or `tree` (a mapping), one of them")
        if body.tree is not None:
            body.yaml = _yaml_of(body.tree)
        if body.yaml is not None:
            if configs is None:
                raise HTTPException(422, "yaml: the board has no --configs folder to save a pasted config in")
            name = body.save_as or f"board-{body.out}.yaml"
            if not NAME.fullmatch(name) or not name.endswith((".yaml", ".yml")):
                raise HTTPException(422, f"save_as: {name!r} must be a file name ending in .yaml")
            tree, errors = _check(body.yaml, body.overrides, configs)
            if errors:
                raise HTTPException(422, {"errors": errors})
            path = configs / name
            if path.exists() and path.read_text(encoding="utf-8") != body.yaml:
                if body.save_as:
                    raise HTTPException(409, f"save_as: {name} exists under {configs} with other content; choose another name")
                path = next(p for p in (configs / f"board-{body.out}-{i}.yaml" for i in range(2, 10_000))
                            if not p.exists() or p.read_text(encoding="utf-8") == body.yaml)  # never overwritten
            configs.mkdir(parents=True, exist_ok=True)
            path.write_text(body.yaml, encoding="utf-8")
        else:
            path = config_path(body.config)
            _, errors = _check(path.read_text(encoding="utf-8"), body.overrides, path.parent, path)
            if errors:
                raise HTTPException(422, {"errors": errors})
        if body.overrides:  # the child reads the config with the overrides applied: write the resolved config
            from ragtune.config import to_yaml
            from ragtune.tasks import load_config

            resolved = runs / ".board" / f"{body.out}.yaml"
            resolved.parent.mkdir(parents=True, exist_ok=True)
            resolved.write_text(to_yaml(load_config(str(path), body.overrides)), encoding="utf-8")
            path = resolved
        try:
            job = jobs.submit(body.command, path, out)
        except RagtuneError as exc:
            raise HTTPException(409, str(exc)) from None
        return job.public()

    @app.get("/api/jobs")
    def list_jobs() -> dict:
        return {"jobs": jobs.listing()}

    def job_of(job_id: str):
        try:
            return jobs.get(job_id)
        except KeyError:
            raise HTTPException(404, f"no job {job_id!r}") from None

    @app.get("/api/jobs/{job_id}")
    def job_detail(job_id: str) -> dict:
        job = job_of(job_id)
        ready = job.state == "running" and job.port is not None and _answers(host, job.port)
        return {**job.public(), "ready": ready}

    @app.get("/api/jobs/{job_id}/result")
    def job_result(job_id: str, picture: bool = False) -> FileResponse:
        """An explain job's highlighted HTML (``picture=true``: its PNG chart), sandboxed: it runs no script."""
        job = job_of(job_id)
        path = Path(job.result).with_suffix(".png") if job.result and picture else Path(job.result or "")
        if job.state != "finished" or not job.result or not path.is_file():
            raise HTTPException(404, f"job {job_id} has no result ({job.state})")
        return FileResponse(path, headers={"Content-Security-Policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"})

    @app.post("/api/jobs/{job_id}/stop", dependencies=[Depends(require_key)])
    def stop(job_id: str) -> dict:
        try:
            return jobs.stop(job_id).public()
        except KeyError:
            raise HTTPException(404, f"no job {job_id!r}") from None

    @app.get("/api/jobs/{job_id}/log", response_class=PlainTextResponse)
    def job_log(job_id: str) -> str:
        job = job_of(job_id)
        try:
            return Path(job.log).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    return app


def _yaml_of(tree: dict) -> str:
    import yaml

    return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)


def _free_port(host: str) -> int:
    """A port free on ``host`` now (the server binds it a moment later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _answers(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port`` (a server that has started)."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def _check(text: str, overrides: list[str], base: Path, path: Path | None = None) -> tuple[dict | None, list[str]]:
    """``(tree, errors)`` of a config's text: YAML parsed safely, then the config validator and the input check
    (every error, as ``ragtune validate`` reports them; relative paths against ``base``)."""
    import yaml

    from ragtune.config import check_inputs
    from ragtune.tasks import load_config

    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return None, [f"YAML: {exc}"]
    if not isinstance(tree, dict):
        return None, ["the config must be a YAML mapping of keys to values"]
    try:
        cfg = load_config(str(path), overrides) if path else load_config(None, overrides, cwd=base, tree=tree)
        check_inputs(cfg, str(path or "<config>"))
    except RagtuneError as exc:
        lines = str(exc).splitlines()
        return tree, [line.strip()[2:] if line.strip().startswith("- ") else line for line in lines[1:]] or lines
    return tree, []
