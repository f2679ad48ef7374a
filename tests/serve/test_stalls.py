"""A live ``ragtune serve`` process against clients that stall and against a busy or bad address: a body
promised by Content-Length but never sent is answered 408 after ``serve.body_timeout_s`` while others are
served, SIGTERM stops the server within ``serve.shutdown_timeout_s`` even with such a client connected, and
a port in use or a host that is no address of this machine is one clear error (exit 2) before the model loads."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import pytest
from serve.live import serve_process, stalled_request

from ragtune.cli import main
from ragtune.config import ServeConfig


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_a_body_that_never_comes_gets_408_and_others_are_served(run_dir):
    with serve_process(run_dir, "--body-timeout-s", "1") as (proc, url):
        sock = stalled_request(url)
        try:
            start = time.monotonic()
            ok = httpx.post(f"{url}/v1/predict", json={"texts": ["parliament vote"]}, timeout=10)
            assert ok.status_code == 200 and ok.json()["predictions"][0]["label"]
            sock.settimeout(10)
            answer = _read_response(sock)  # the server answers and closes the connection
            waited = time.monotonic() - start
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"serve.body_timeout_s" in answer and b"connection: close" in answer.lower()
        assert 0.8 < waited < 5, waited
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200  # still serving
        text = httpx.get(f"{url}/metrics", timeout=5).text
        assert 'status="408"' in text and 'status="500"' not in text


def test_sigterm_stops_the_server_with_a_stalled_client_connected(run_dir):
    with serve_process(run_dir, "--body-timeout-s", "60", "--shutdown-timeout-s", "1") as (proc, url):
        socks = [stalled_request(url) for _ in range(2)]
        try:
            assert httpx.post(f"{url}/v1/predict", json={"texts": ["vote"]}, timeout=10).status_code == 200
            time.sleep(0.3)  # the stalled requests are in the app, waiting for their bodies
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except Exception:
                pytest.fail("ragtune serve was still running 15 s after SIGTERM")
            assert time.monotonic() - start < 1 + 4  # serve.shutdown_timeout_s plus the lifespan's stop
            for sock in socks:  # the requests cut off are told so (503), not left hanging or logged as crashes
                sock.settimeout(5)
                assert _read_response(sock).startswith(b"HTTP/1.1 503")
            assert "Traceback" not in proc.stdout.read()
        finally:
            for sock in socks:
                sock.close()


def test_the_timeouts_and_max_wait_ms_are_bounded(run_dir, capsys):
    assert ServeConfig().body_timeout_s == 30 and ServeConfig().shutdown_timeout_s == 5
    for key, value in (("max_wait_ms", 1001), ("max_wait_ms", 1e9), ("body_timeout_s", 0), ("shutdown_timeout_s", -1)):
        with pytest.raises(ValueError, match=key):
            ServeConfig(**{key: value})
    ServeConfig(max_wait_ms=1000)
    for flag, value in (("--max-wait-ms", "5000"), ("--body-timeout-s", "0"), ("--shutdown-timeout-s", "-1")):
        assert main(["serve", str(run_dir), flag, value]) == 2
        err = capsys.readouterr().err
        assert flag in err and value in err and "Traceback" not in err, err
    assert main(["serve", str(run_dir), "--max-wait-ms", "5000"]) == 2
    assert "less than or equal to 1000" in capsys.readouterr().err


def test_a_port_in_use_is_refused_before_the_model_loads(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # the folder does not exist: the bind is checked first, so the port is what the message names
        assert main(["serve", str(tmp_path / "nothing-here"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use; choose another --port" in err and "Traceback" not in err


@pytest.mark.parametrize("host", ["no.such.host.invalid", "300.1.1.1", "192.0.2.1"])
def test_a_bad_host_is_refused_before_the_model_loads(tmp_path, capsys, host):
    assert main(["serve", str(tmp_path / "nothing-here"), "--host", host, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"--host {host}" in err.replace(repr(host), host) and "Traceback" not in err, err
