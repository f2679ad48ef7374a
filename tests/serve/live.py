"""A real uvicorn server in a background thread, for tests that talk HTTP to the app (schemathesis,
concurrent clients, the browser test)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app, timeout: float = 30.0):
    """Serve ``app`` on a free loopback port; yields its base URL (``http://127.0.0.1:PORT``)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


@contextlib.contextmanager
def serve_process(path, *flags: str, timeout: float = 60.0):
    """``ragtune serve PATH FLAGS`` as a real process on a free loopback port (SIGTERM, raw sockets and the
    server's own memory are then what a deployment sees). Yields ``(process, base URL)``; the process is
    killed at the end if it still runs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    port = free_port()
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    env.pop("RAGTUNE_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "ragtune", "serve", str(path), "--port", str(port),
                             "--log-level", "warning", "--threads", "1", *flags],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ragtune serve exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("ragtune serve did not start")
            time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()


def stalled_request(url: str, promised: int = 100) -> socket.socket:
    """A raw connection that sends a POST's headers promising ``promised`` body bytes and then nothing."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {promised}\r\n\r\n".encode())
    return sock
