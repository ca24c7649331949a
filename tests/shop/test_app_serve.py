"""``impasto serve``: configuration errors are one line and exit code 2; a real start prints
the URL, serves the shop and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from impasto.cli import main
from support.shop import free_port, wait_for


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["serve", "--port", "70000"], {}, "--port must be 1..65535"),
    (["serve", "--workers", "0"], {}, "--workers must be at least 1"),
    (["serve"], {"IMPASTO_PRINTS": "not json"}, "configuration:"),
    (["serve"], {"IMPASTO_MAX_UPLOAD_BYTES": "lots"}, "IMPASTO_MAX_UPLOAD_BYTES"),
    (["serve"], {"IMPASTO_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}, "database:"),
    (["serve"], {"IMPASTO_SECRET_KEY": "short"}, "IMPASTO_SECRET_KEY"),
])
def test_configuration_errors_are_one_line_and_exit_2(argv, env, message, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("IMPASTO_DATA_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([*argv, "--port", str(free_port())] if "--port" not in argv else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("impasto: error: ") and message in err[0], err


def test_serve_starts_the_shop_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    env = {**os.environ, "IMPASTO_DATA_DIR": str(tmp_path), "IMPASTO_CATALOG_DIR": str(tmp_path / "styles"),
           "IMPASTO_ADMIN_PASSWORD": "", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "impasto.cli", "serve", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line and "closed until IMPASTO_ADMIN_PASSWORD" in line
        home = wait_for(lambda: _get(f"http://127.0.0.1:{port}/"), "the shop to answer", seconds=60)
        assert home.status_code == 200 and "Paint my previews" in home.text
        assert _get(f"http://127.0.0.1:{port}/admin/login").status_code == 403
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
    assert code == 0
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert (tmp_path / "impasto.db").stat().st_mode & 0o077 == 0      # customers' emails and addresses


def test_serve_with_json_logs_writes_one_object_a_line_with_the_request_id(tmp_path):
    import json

    port = free_port()
    env = {**os.environ, "IMPASTO_DATA_DIR": str(tmp_path), "IMPASTO_CATALOG_DIR": str(tmp_path / "styles"),
           "IMPASTO_LOG_FORMAT": "json", "IMPASTO_SKETCHES": "0", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "impasto.cli", "serve", "-v", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        process.stdout.readline()
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz"), "the shop to answer", seconds=60)
        answer = httpx.get(f"http://127.0.0.1:{port}/privacy", headers={"X-Request-ID": "edge-0123456789"})
        assert answer.headers["x-request-id"] == "edge-0123456789"
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]   # every line is JSON
    assert {"uvicorn.error", "impasto.service.shop.middleware"} <= {r["logger"] for r in records}, stderr
    assert any(r.get("request_id") == "edge-0123456789" and r["message"].startswith("GET /privacy")
               for r in records), stderr


def _get(url: str):
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None


# --- read timeouts (issue 12): a slow client cannot hold a connection --------------------------

@pytest.fixture
def served(tmp_path):
    """The shop under the real server (uvicorn + the read timeouts) in a thread; yields its port."""
    import threading

    import uvicorn

    from impasto.service.shop.app import create_app
    from impasto.service.shop.server import uvicorn_config
    from support.shop import NullDispatcher, make_catalog, make_settings

    settings = make_settings(tmp_path, header_timeout_seconds=0.5, body_timeout_seconds=0.5)
    app = create_app(settings, catalog=make_catalog(tmp_path), dispatcher=NullDispatcher())
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port, settings=settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the server to start", seconds=60)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def _closed_by_server(sock, trickle: bytes = b"", rounds: int = 50) -> bytes | None:
    """What the server sends before closing, or None if it still held the connection after
    ``rounds`` pauses of 0.2 s (a ceiling: the timeouts under test are 0.5 s)."""
    sock.settimeout(0.2)
    received = b""
    for _ in range(rounds):
        try:
            if trickle:
                sock.sendall(trickle)
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return received
        if not chunk:
            return received
        received += chunk
    return None


def test_slow_headers_are_cut_off(served):
    import socket

    with socket.create_connection(("127.0.0.1", served)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert _closed_by_server(sock, trickle=b"X") == b""        # a header byte every 0.2 s does not help
    assert httpx.get(f"http://127.0.0.1:{served}/", timeout=10).status_code == 200
    with socket.create_connection(("127.0.0.1", served)) as sock:   # nor does saying nothing at all
        assert _closed_by_server(sock) == b""


def test_a_stalled_body_gets_a_408(served):
    import socket

    with socket.create_connection(("127.0.0.1", served)) as sock:
        sock.sendall(b"POST /api/v1/portraits HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n")
        answer = _closed_by_server(sock)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408")
    assert b"content-security-policy" in answer.lower()


def test_a_kept_alive_connection_still_serves_its_next_request(served):
    with httpx.Client(base_url=f"http://127.0.0.1:{served}", timeout=10) as client:
        assert [client.get("/").status_code for _ in range(3)] == [200, 200, 200]
