"""``/healthz`` and ``/readyz``: the probes' answers against real and unreachable parts.

The apps here run without their lifespan (``TestClient`` outside ``with``): a shop whose
database cannot be reached would not start, and the probe must still answer for it.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from impasto.catalog import Catalog
from impasto.service.core.storage import LocalStorage
from impasto.service.shop.app import create_app, shop_of
from support.net import free_port
from support.shop import NullDispatcher, make_catalog, make_settings

SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options", "referrer-policy")


def probe_app(tmp_path, monkeypatch, *, database_url: str | None = None, **overrides):
    if database_url is not None:
        monkeypatch.setenv("IMPASTO_DATABASE_URL", database_url)   # read by Settings, as in production
    settings = make_settings(tmp_path, sketches=False, **overrides)
    styles = tmp_path / "styles"
    catalog = Catalog(styles) if styles.exists() else make_catalog(tmp_path)   # a second app in one test
    app = create_app(settings, catalog=catalog, dispatcher=NullDispatcher())
    return TestClient(app), shop_of(app)


def closed_port() -> int:
    """A port nobody listens on: bound for a moment by ``free_port`` and released."""
    return free_port()


def test_healthz_is_ok_without_touching_the_database(tmp_path, monkeypatch):
    client, _ = probe_app(tmp_path, monkeypatch,
                          database_url=f"postgresql://nobody@127.0.0.1:{closed_port()}/none")
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_is_503_naming_the_database_on_a_closed_port(tmp_path, monkeypatch, caplog):
    client, shop = probe_app(tmp_path, monkeypatch,
                             database_url=f"postgresql://nobody@127.0.0.1:{closed_port()}/none")
    assert shop.engine.url.get_backend_name() == "postgresql"
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["database"]
    assert body["checks"] == {"database": "failing", "storage": "ok"}
    assert "127.0.0.1" not in response.text          # the reason is logged, not published
    assert "readyz: database failing" in caplog.text


def test_readyz_is_200_against_the_real_postgresql(tmp_path, monkeypatch, postgres_url):
    client, _ = probe_app(tmp_path, monkeypatch, database_url=postgres_url)
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "storage": "ok"}}


def test_readyz_names_a_storage_root_that_is_a_file(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage root should be")
    client, shop = probe_app(tmp_path, monkeypatch, storage_url=(blocker / "files").as_uri())
    assert isinstance(shop.storage, LocalStorage)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["storage"]
    assert response.json()["checks"]["database"] == "ok"


def test_readyz_is_ok_before_the_first_upload_made_the_storage_root(tmp_path, monkeypatch):
    client, shop = probe_app(tmp_path, monkeypatch, storage_url=(tmp_path / "later" / "files").as_uri())
    assert not shop.storage.root.exists()
    assert client.get("/readyz").status_code == 200
    assert not shop.storage.root.exists()           # the probe creates nothing


def test_readyz_names_an_s3_bucket_that_does_not_exist_and_passes_one_that_does(tmp_path, monkeypatch,
                                                                               moto_endpoint):
    import boto3

    client, _ = probe_app(tmp_path, monkeypatch, storage_url="s3://no-such-bucket/prefix",
                          s3_endpoint_url=moto_endpoint)
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["failing"] == ["storage"]

    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket="probe-bucket")
    client, _ = probe_app(tmp_path, monkeypatch, storage_url="s3://probe-bucket/prefix",
                          s3_endpoint_url=moto_endpoint)
    response = client.get("/readyz")
    assert response.status_code == 200, response.text


def test_readyz_names_a_broker_nobody_answers_and_passes_a_real_one(tmp_path, monkeypatch, redis_url):
    client, _ = probe_app(tmp_path, monkeypatch, broker_url=f"redis://127.0.0.1:{closed_port()}/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "storage": "ok", "broker": "failing"}

    client, _ = probe_app(tmp_path, monkeypatch, broker_url=redis_url)
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["broker"] == "ok"


def test_a_hung_part_times_out_instead_of_hanging_the_probe(tmp_path, monkeypatch):
    import threading

    from impasto.service.shop.routes import health

    _, shop = probe_app(tmp_path, monkeypatch)
    release = threading.Event()
    monkeypatch.setattr(shop.storage, "check", lambda: release.wait(30))
    try:
        assert health.readiness(shop, seconds=0.2) == {"database": "ok", "storage": "timed out"}
    finally:
        release.set()


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_carry_the_security_headers_and_no_csrf_cookie(tmp_path, monkeypatch, path):
    client, _ = probe_app(tmp_path, monkeypatch)
    response = client.get(path)
    assert response.status_code == 200
    for header in SECURITY_HEADERS:
        assert header in response.headers, header
    assert "set-cookie" not in response.headers
    assert client.get("/").headers.get("set-cookie")     # a page does get one: the exemption is the probes'


def test_probes_are_not_rate_limited(tmp_path, monkeypatch):
    client, _ = probe_app(tmp_path, monkeypatch, rate_limit_per_hour=1)
    assert {client.get("/healthz").status_code for _ in range(5)} == {200}
    assert {client.get("/readyz").status_code for _ in range(5)} == {200}
