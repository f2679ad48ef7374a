"""Run the app under uvicorn: ``ragtune serve`` calls :func:`run_server`.

One worker (the default) loads the model once and serves from one process; server-side batching
then keeps the CPU busy with few, large forward passes. ``workers=N`` starts N processes through
uvicorn's own process manager, each loading its own copy of the model (memory × N) with
``threads`` torch threads; they share the port, and ``/metrics`` adds up all of them.

Worker processes cannot be handed a Python object, so :func:`run_server` passes what to serve through
environment variables that :func:`app_from_env` (the factory uvicorn imports in each worker) reads:
``RAGTUNE_SERVE_PATH``, ``RAGTUNE_SERVE_ENGINE``, ``RAGTUNE_SERVE_DEVICE``, ``RAGTUNE_SERVE_SETTINGS``
(JSON), ``RAGTUNE_SERVE_THREADS`` and ``RAGTUNE_API_KEY``.

**Devices.** ``device`` (``--device``: ``auto``, the default, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``) is
where each worker loads its model (and an index's encoder); a device the machine lacks fails before
the port is bound. ``workers=N`` on one GPU puts N copies of the model in its memory.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile

from pydantic import ValidationError

from ragtune.config import ServeConfig
from ragtune.errors import RagtuneError

ENV_PATH = "RAGTUNE_SERVE_PATH"
ENV_ENGINE = "RAGTUNE_SERVE_ENGINE"
ENV_DEVICE = "RAGTUNE_SERVE_DEVICE"
ENV_SETTINGS = "RAGTUNE_SERVE_SETTINGS"
ENV_THREADS = "RAGTUNE_SERVE_THREADS"
ENV_API_KEY = "RAGTUNE_API_KEY"


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def app_from_env():
    """The app of one worker process, from the environment :func:`run_server` set (uvicorn ``factory=True``)."""
    from ragtune.serve.app import create_app
    from ragtune.serve.service import load_service

    threads = os.environ.get(ENV_THREADS)
    _set_threads(int(threads) if threads else None)
    service = load_service(os.environ[ENV_PATH], os.environ.get(ENV_ENGINE, "torch"),
                           os.environ.get(ENV_DEVICE, "auto"))
    settings = ServeConfig(**json.loads(os.environ[ENV_SETTINGS])) if os.environ.get(ENV_SETTINGS) else None
    return create_app(service, api_key=os.environ.get(ENV_API_KEY), settings=settings)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``SO_REUSEADDR``, as uvicorn binds), not yet listening.

    Raises :class:`RagtuneError` naming the host and port when the host is not an address of this machine
    (or not an address at all), the port is taken, or binding it needs privileges."""
    shown = f"[{host}]" if ":" in host else host
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise RagtuneError(f"--host {host!r} is not an IP address or a name this machine can resolve "
                           f"({getattr(exc, 'strerror', None) or exc}); use e.g. 127.0.0.1, 0.0.0.0 or ::") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise RagtuneError(f"port {port} on {shown} is in use; choose another --port") from None
        if exc.errno == errno.EACCES:
            raise RagtuneError(f"port {port} on {shown}: permission denied (ports below 1024 need privileges); "
                               "choose another --port") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise RagtuneError(f"--host {host}: not an address of this machine, cannot listen on it; "
                               "use e.g. 127.0.0.1, 0.0.0.0 or ::") from None
        raise RagtuneError(f"cannot listen on port {port} on {shown}: {exc.strerror or exc}") from None
    return sock


def run_server(path: str, host: str = "127.0.0.1", port: int = 8000, engine: str = "torch",
               api_key: str | None = None, workers: int = 1, threads: int | None = None,
               overrides: dict | None = None, log_level: str = "info", device: str = "auto") -> None:
    """Load what ``path`` holds and serve it until interrupted (Ctrl-C).

    ``overrides``: ``serve:`` settings that replace the run's (e.g. ``{"max_batch_size": 16}``);
    ``device``: where the model runs (module docstring, Devices).
    The address is bound first (:func:`bind_socket`: a port in use or a bad host fails at once, before the
    model loads), then the model is loaded, so a bad folder also fails with its message before any request.
    One worker serves on that very socket (port 0 picks a free port, and the message names it); ``workers=N``
    release it and let uvicorn bind it again for its processes.

    Stopping: on SIGTERM or Ctrl-C the server stops taking connections, waits up to
    ``serve.shutdown_timeout_s`` seconds for requests in flight, cancels what is left and exits; a body that
    never comes is answered 408 after ``serve.body_timeout_s`` (uvicorn's ``timeout_graceful_shutdown``
    and the app's body timeout).
    """
    import uvicorn

    from ragtune.serve.app import create_app
    from ragtune.serve.service import load_service

    if api_key is not None and not api_key.strip():
        raise RagtuneError("--api-key is empty; give a non-empty key (--api-key KEY or RAGTUNE_API_KEY), "
                           "or none to serve without one")
    _set_threads(threads)
    try:  # the flags' values are checked by the serve: schema before the model loads
        ServeConfig.model_validate({**ServeConfig().model_dump(), **(overrides or {})})
    except ValidationError as exc:
        raise RagtuneError("; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg'][0].lower()}{e['msg'][1:]} "
                                     f"(got {e['input']!r})" for e in exc.errors())) from None
    from ragtune.devices import resolve

    resolve(device, key="--device")  # a device this machine lacks fails before the port is taken
    sock = bind_socket(host, port)
    try:
        service = load_service(path, engine, device)  # also checks the folder before any worker starts
    except BaseException:
        sock.close()
        raise
    settings = service.settings.model_copy(update=overrides or {})
    shown = f"[{host}]" if ":" in host else host
    if workers <= 1:
        port = sock.getsockname()[1]
    print(f"ragtune serve: {path} ({service.kind}, engine {engine}, device {resolve(device)}) on http://{shown}:{port}/ "
          f"with {workers} worker{'s' if workers > 1 else ''}; Ctrl-C stops it", flush=True)
    stop = {"timeout_graceful_shutdown": settings.shutdown_timeout_s}
    if workers <= 1:
        config = uvicorn.Config(create_app(service, api_key=api_key, settings=settings), host=host, port=port,
                                log_level=log_level, **stop)
        server = uvicorn.Server(config)
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        finally:
            sock.close()
        if not server.started:  # the app's startup failed (uvicorn.run's exit status)
            raise SystemExit(3)
        return
    sock.close()
    del service
    metrics_dir = tempfile.mkdtemp(prefix="ragtune-metrics-")
    os.environ.update({ENV_PATH: str(path), ENV_ENGINE: engine, ENV_DEVICE: str(device),
                       ENV_SETTINGS: settings.model_dump_json(),
                       "PROMETHEUS_MULTIPROC_DIR": metrics_dir})
    if threads:
        os.environ[ENV_THREADS] = str(threads)
    if api_key:
        os.environ[ENV_API_KEY] = api_key
    try:
        uvicorn.run("ragtune.serve.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, **stop)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
