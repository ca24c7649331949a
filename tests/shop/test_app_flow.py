"""The shop end to end through the JSON API, with real parts: render threads (LocalDispatcher)
painting tiny renders, the database (SQLite and PostgreSQL), storage (local files and S3 on a
moto server), and mail through the outbox to an aiosmtpd server.

upload → previews painted (progress, SSE) → order → print painted → "print ready" email →
its link → a fresh signed URL → the PNG.
"""

from __future__ import annotations

import io
import json
import re

import boto3
import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from impasto.service.core.models import Email, EmailStatus, Order, OrderStatus
from impasto.service.core.storage import S3Storage
from impasto.service.shop.app import create_app, shop_of
from support.shop import (
    ADDRESS,
    PUBLIC_URL,
    make_catalog,
    make_settings,
    photo_bytes,
    postgres_schema,
    read_events,
    wait_for,
)

BACKENDS = ["sqlite-local", "postgresql-local", "sqlite-s3"]


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    """(settings overrides, storage or None) for one database × storage combination."""
    database, store = request.param.split("-")
    storage = None
    if store == "s3":
        endpoint = request.getfixturevalue("moto_endpoint")
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        bucket = f"shop-{tmp_path.name.lower().replace('_', '-')[-40:]}"
        client.create_bucket(Bucket=bucket)
        storage = S3Storage(bucket, "shop", client=client)
    if database == "postgresql":
        with postgres_schema(request.getfixturevalue("postgres_url")) as url:
            yield {"database_url": url}, storage
    else:
        yield {}, storage


def fetch(client: TestClient, url: str) -> bytes:
    """Follow a redirect to a signed URL: the app's own /files route, or S3 over HTTP."""
    response = client.get(url, follow_redirects=False)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    if location.startswith(PUBLIC_URL):
        signed = client.get(location)
    else:
        signed = httpx.get(location, timeout=30)
    assert signed.status_code == 200, signed.text
    return signed.content


def test_upload_preview_order_email_download(backend, tmp_path, smtp_box):
    overrides, storage = backend
    smtp_url, box = smtp_box
    settings = make_settings(tmp_path, smtp_url=smtp_url, mail_from="impasto <shop@impasto.example>", **overrides)
    app = create_app(settings, catalog=make_catalog(tmp_path), storage=storage)
    shop = shop_of(app)
    with TestClient(app) as client:
        created = client.post("/api/v1/portraits", data={"email": "Ada@Example.COM", "consent": "true"},
                              files={"photo": ("me.jpg", photo_bytes(), "image/jpeg")})
        assert created.status_code == 201, created.text
        portrait = created.json()
        assert [p["style"] for p in portrait["previews"]] == ["starry"]
        view = _previews_painted(client, portrait["id"])

        events = read_events(client, view["events_url"])      # all done: one snapshot, then "done"
        assert [name for name, _ in events] == ["portrait", "done"]
        assert json.loads(events[0][1])["previews"][0]["status"] == "done"
        preview = view["previews"][0]
        with Image.open(io.BytesIO(fetch(client, preview["image_url"]))) as image:
            assert image.format == "PNG" and max(image.size) == 48

        order = _order_print(client, portrait["id"], preview["id"])
        number = order["number"]
        ready = wait_for(lambda: _ready(client, portrait["id"], number), "the print")
        assert ready["status"] == "ready" and ready["print_progress"] == 1.0

        shop.outbox.wake()
        wait_for(lambda: len(box.messages) == 2, "two emails")
        link = _download_link(box, number)
        assert link == f"{PUBLIC_URL}/portraits/{portrait['id']}/orders/{number}/download"
        with Image.open(io.BytesIO(fetch(client, link))) as image:
            assert image.format == "PNG" and image.size == (64, 64)   # 1x1in at 64 dpi
    _check_rows(shop, number)


def _previews_painted(client: TestClient, public_id: str) -> dict:
    def done():
        view = client.get(f"/api/v1/portraits/{public_id}").json()
        return view if view["done"] else None

    view = wait_for(done, "the previews")
    assert all(p["status"] == "done" and p["image_url"] and p["order_url"] for p in view["previews"])
    return view


def _order_print(client: TestClient, public_id: str, preview_id: int) -> dict:
    response = client.post(f"/api/v1/portraits/{public_id}/orders",
                           json={"preview_id": preview_id, "print_size": "1x1in", "shipping_address": ADDRESS})
    assert response.status_code == 201, response.text
    order = response.json()
    assert re.fullmatch(r"IMP-[A-Z2-9]{4}-[A-Z2-9]{4}", order["number"])
    assert (order["price_cents"], order["currency"], order["payment_method"]) == (900, "EUR", "invoice")
    assert order["download_url"] is None and "invoice" in order["payment_instructions"]
    return order


def _ready(client: TestClient, public_id: str, number: str) -> dict | None:
    order = client.get(f"/api/v1/portraits/{public_id}/orders/{number}").json()
    return order if order["download_url"] else None


def _download_link(box, number: str) -> str:
    texts = box.texts()
    assert set(texts) == {"Your previews are ready", "Your print file is ready"}
    assert all(m["To"] == "Ada@example.com" for m in box.messages)     # the domain normalised
    links = re.findall(r"https?://\S+", texts["Your print file is ready"])
    downloads = [link for link in links if link.endswith("/download")]
    assert len(downloads) == 1 and number in downloads[0]
    assert [link for link in links if link.endswith("/delete")]          # "delete my photo now"
    return downloads[0]


def _check_rows(shop, number: str) -> None:
    with shop.sessions() as session:
        order = session.scalars(select(Order).where(Order.number == number)).one()
        assert order.status is OrderStatus.READY and order.ready_at is not None
        assert {e.status for e in session.scalars(select(Email))} == {EmailStatus.SENT}
