"""Limits shared by several app processes over the real Redis, and a secret-key rotation that
ends no signed value before its time."""

from __future__ import annotations

import contextlib

import pytest
from fastapi.testclient import TestClient

from impasto.service.shop import security
from impasto.service.shop.app import create_app, shop_of
from support.net import free_port
from support.redisdb import redis_database
from support.shop import ADMIN_PASSWORD, SECRET, NullDispatcher, csrf_token, make_catalog, make_settings, upload

NEW_SECRET = "the-new-secret-key-after-rotation-0123"


@contextlib.contextmanager
def app(tmp_path, name: str, **overrides):
    """A shop of its own (its own folder, database and limiter objects): what a second
    process behind the same load balancer would have in common with the first is Redis."""
    folder = tmp_path / name
    folder.mkdir()
    settings = make_settings(folder, sketches=False, admin_password=ADMIN_PASSWORD, **overrides)
    with TestClient(create_app(settings, catalog=make_catalog(folder), dispatcher=NullDispatcher())) as client:
        yield client


@pytest.fixture
def redis_db(redis_url):
    with redis_database(redis_url) as url:
        yield url


def test_an_upload_limit_is_shared_by_two_app_processes_over_redis(tmp_path, redis_db):
    with app(tmp_path, "a", rate_limit_per_hour=3, redis_url=redis_db) as first, \
            app(tmp_path, "b", rate_limit_per_hour=3, redis_url=redis_db) as second:
        answers = [upload(client, email=f"u{i}@example.com").status_code
                   for i, client in enumerate([first, second, first, second, first])]
        assert answers == [201, 201, 201, 429, 429]           # per IP: 3 in all, not 3 each
        refused = upload(second, email="late@example.com")
        assert 0 < int(refused.headers["retry-after"]) <= 3600


def test_without_redis_each_process_counts_alone(tmp_path):
    with app(tmp_path, "a", rate_limit_per_hour=3) as first, app(tmp_path, "b", rate_limit_per_hour=3) as second:
        answers = [upload(client, email=f"u{i}@example.com").status_code
                   for i, client in enumerate([first, second, first, second])]
        assert answers == [201] * 4


def test_a_logout_in_one_process_ends_the_session_in_the_other(tmp_path, redis_db):
    json = {"accept": "application/json"}
    with app(tmp_path, "a", redis_url=redis_db) as first, app(tmp_path, "b", redis_url=redis_db) as second:
        token = csrf_token(first, "/admin/login")
        assert first.post("/admin/login", data={"csrf_token": token, "user": "admin", "password": ADMIN_PASSWORD},
                          follow_redirects=False).status_code == 303
        cookie = first.cookies[security.ADMIN_COOKIE]
        second.cookies.set(security.ADMIN_COOKIE, cookie)
        assert second.get("/admin", headers=json).status_code == 200      # one secret: both accept it
        assert first.post("/admin/logout", data={"csrf_token": csrf_token(first, "/admin")},
                          follow_redirects=False).status_code == 303
        assert second.get("/admin", headers=json).status_code == 401


def test_an_unreachable_redis_lets_uploads_through_and_refuses_admin_cookies(tmp_path, caplog):
    json = {"accept": "application/json"}
    with app(tmp_path, "a", rate_limit_per_hour=3, redis_url=f"redis://127.0.0.1:{free_port()}/0") as client:
        assert upload(client).status_code == 201
        token = csrf_token(client, "/admin/login")
        client.post("/admin/login", data={"csrf_token": token, "user": "admin", "password": ADMIN_PASSWORD})
        assert client.get("/admin", headers=json).status_code == 401          # no session during the outage
        assert client.get("/admin", headers=json, auth=("admin", ADMIN_PASSWORD)).status_code == 200
    assert "Redis unreachable" in caplog.text


# --- key rotation ------------------------------------------------------------------------

class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_an_old_keys_signature_stays_valid_until_its_own_expiry():
    clock = Clock(1_800_000_000.0)
    old = security.Signer(SECRET.encode(), clock=clock)
    token = old.sign("admin:x", "session-id", seconds=3600)
    rotated = security.Signer(NEW_SECRET.encode(), old_secrets=[SECRET.encode()], clock=clock)
    assert rotated.unsign("admin:x", token) == "session-id"
    assert security.Signer(NEW_SECRET.encode(), clock=clock).unsign("admin:x", token) is None   # without it
    assert old.unsign("admin:x", rotated.sign("admin:x", "new", seconds=60)) is None    # new ones: new key
    assert rotated.unsign("admin:y", token) is None                                      # purpose still binds
    clock.now += 3601
    assert rotated.unsign("admin:x", token) is None                                      # its expiry holds


def test_a_rotation_keeps_signed_file_links_and_admin_sessions_working(tmp_path):
    json = {"accept": "application/json"}
    with app(tmp_path, "before") as before:
        shop = shop_of(before.app)
        shop.storage.put("jobs/1/result.png", b"\x89PNG print", content_type="image/png")
        link = shop.storage.signed_url("jobs/1/result.png", expires_seconds=300).removeprefix("http://testserver")
        token = csrf_token(before, "/admin/login")
        before.post("/admin/login", data={"csrf_token": token, "user": "admin", "password": ADMIN_PASSWORD})
        cookie = before.cookies[security.ADMIN_COOKIE]
        root = shop.storage.root
    rotated = {"secret_key": NEW_SECRET, "old_secret_keys": f"{SECRET}, another-retired-key-0123456789",
               "storage_url": root.as_uri()}
    with app(tmp_path, "after", **rotated) as after:
        assert after.get(link).content == b"\x89PNG print"
        after.cookies.set(security.ADMIN_COOKIE, cookie)
        assert after.get("/admin", headers=json).status_code == 200
    with app(tmp_path, "dropped", secret_key=NEW_SECRET, storage_url=root.as_uri()) as dropped:
        assert dropped.get(link).status_code == 403
        dropped.cookies.set(security.ADMIN_COOKIE, cookie)
        assert dropped.get("/admin", headers=json).status_code == 401


def test_two_real_shop_processes_share_one_upload_limit(tmp_path, redis_db):
    """`impasto serve` twice (no styles: nothing renders), one Redis: the limit holds across both."""
    import os
    import subprocess
    import sys

    import httpx

    from support.shop import photo_bytes, wait_for

    ports, processes = [free_port(), free_port()], []
    try:
        for index, port in enumerate(ports):
            folder = tmp_path / f"shop{index}"
            env = {**os.environ, "IMPASTO_DATA_DIR": str(folder), "IMPASTO_CATALOG_DIR": str(folder / "styles"),
                   "IMPASTO_STARTER_STYLES": "0", "IMPASTO_SKETCHES": "0", "IMPASTO_REDIS_URL": redis_db,
                   "IMPASTO_RATE_LIMIT_PER_HOUR": "2", "IMPASTO_SECRET_KEY": SECRET, "OMP_NUM_THREADS": "1"}
            processes.append(subprocess.Popen([sys.executable, "-m", "impasto.cli", "serve", "--port", str(port)],
                                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            wait_for(lambda port=port: _answers(f"http://127.0.0.1:{port}/healthz"), "a shop to answer", seconds=60)

        def post(port: int) -> int:
            files = {"photo": ("me.jpg", photo_bytes(), "image/jpeg")}
            return httpx.post(f"http://127.0.0.1:{port}/api/v1/portraits", files=files, timeout=30,
                              data={"email": "ada@example.com", "consent": "true"}).status_code

        # With no style on offer an upload that passes the limit ends 503 ("nothing to paint"):
        # what counts here is that the limit let two through in all, not two per process.
        answers = [post(ports[0]), post(ports[1]), post(ports[0]), post(ports[1])]
        assert 429 not in answers[:2] and answers[2:] == [429, 429], answers
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False
