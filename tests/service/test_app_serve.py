"""``impasto serve``: configuration errors are one line and exit code 2; a real start prints
the URL, serves the shop and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest
from test_app_common import free_port, wait_for

from impasto.cli import main


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
    assert (tmp_path / "impasto.db").is_file() and (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def _get(url: str):
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None
