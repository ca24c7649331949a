"""Fulfilment through a print lab's API (``IMPASTO_FULFILMENT_PROVIDER=http``), against a local
fake shaped like Prodigi's v4 Orders (tests/support/fake_lab.py, a test double: no lab runs here).

A ready order goes to the lab with its address, SKU, copies and a signed URL of its print file
(sRGB JPEG at the print dpi); a failure is kept on the order and retried with backoff; the
lab's status (polled, or nudged by its callback) moves the order to printed, then shipped.
"""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from impasto.imaging import srgb_profile
from impasto.service.core.models import Email, JobKind, Order, OrderStatus, utcnow
from impasto.service.shop import lab as labs
from support.fake_lab import FakeLabServer
from support.shop import ADDRESS, ADMIN_PASSWORD, NullDispatcher, finish_jobs, make_catalog, make_settings
from support.shop import new_portrait, wait_for

LAB_KEY = "lab-key-0123456789"


@pytest.fixture
def lab_shop(tmp_path):
    """(TestClient, Shop, FakeLab) with one ready invoice order (its print finished by hand)."""
    from impasto.service.shop.app import create_app, shop_of

    with FakeLabServer() as lab:
        settings = make_settings(tmp_path, admin_password=ADMIN_PASSWORD, fulfilment_provider="http",
                                 lab_api_base=lab.base_url, lab_api_key=LAB_KEY,
                                 lab_skus={"1x1in": "GLOBAL-FAP-1x1"})
        app = create_app(settings, catalog=make_catalog(tmp_path), dispatcher=NullDispatcher())
        shop = shop_of(app)
        shop.lab_seconds = 3600                       # the thread's rounds only when woken: the test drives them
        with TestClient(app) as client:
            portrait = new_portrait(client, shop)
            client.post(f"/api/v1{portrait['url']}/orders",
                        json={"preview_id": portrait["previews"][0]["id"], "print_size": "1x1in",
                              "shipping_address": {**ADDRESS, "line2": "Flat 2", "phone": "+44 20 7946 0000"}})
            finish_jobs(shop, JobKind.PRINT)
            yield client, shop, lab


def _order(shop) -> Order:
    with shop.sessions() as session:
        return session.scalars(select(Order)).one()


def test_a_ready_order_goes_to_the_lab_with_its_address_and_print_file(lab_shop):
    client, shop, lab = lab_shop
    order = _order(shop)
    assert order.status is OrderStatus.READY
    assert labs.submit_due(shop) == 1
    (sent,) = lab.received
    assert sent["headers"]["x-api-key"] == LAB_KEY
    body = sent["body"]
    assert body["merchantReference"] == body["idempotencyKey"] == order.number
    assert body["recipient"] == {"name": "Ada Lovelace", "email": "ada@example.com", "phoneNumber": "+44 20 7946 0000",
                                 "address": {"line1": "12 St James's Square", "line2": "Flat 2",
                                             "postalOrZipCode": "SW1Y 4LB", "countryCode": "GB",
                                             "townOrCity": "London", "stateOrCounty": None}}
    (item,) = body["items"]
    assert (item["sku"], item["copies"]) == ("GLOBAL-FAP-1x1", 1)
    print_file = client.get(item["assets"][0]["url"])
    assert print_file.status_code == 200
    with Image.open(io.BytesIO(print_file.content)) as image:
        assert image.format == "JPEG" and image.size == (48, 40)        # finish_jobs' render, not resampled
        assert image.info["dpi"] == (64, 64)
        assert image.info["icc_profile"] == srgb_profile()
    assert _order(shop).fulfilment_ref == "ord_fake_1"
    assert labs.submit_due(shop) == 0 and len(lab.received) == 1       # submitted once


def test_a_lab_failure_is_kept_on_the_order_retried_with_backoff_and_shown(lab_shop):
    client, shop, lab = lab_shop
    lab.fail_next = 2
    start = utcnow()
    assert labs.submit_due(shop, now=start) == 0
    order = _order(shop)
    assert order.status is OrderStatus.READY and order.fulfilment_ref is None
    assert order.fulfilment_attempts == 1 and "503" in order.fulfilment_error
    assert order.fulfilment_next_at == start + timedelta(seconds=60)
    page = client.get("/admin", auth=("admin", ADMIN_PASSWORD)).text
    assert "lab: the lab answered 503" in page and "tries: 1" in page

    assert labs.submit_due(shop, now=start + timedelta(seconds=30)) == 0 and len(lab.received) == 1   # not yet
    later = start + timedelta(seconds=61)
    assert labs.submit_due(shop, now=later) == 0
    assert _order(shop).fulfilment_next_at == later + timedelta(seconds=120)   # doubled
    assert labs.submit_due(shop, now=later + timedelta(seconds=121)) == 1
    order = _order(shop)
    assert order.fulfilment_ref == "ord_fake_1" and order.fulfilment_error is None and order.fulfilment_attempts == 2


def test_the_labs_status_moves_the_order_to_printed_then_shipped_with_the_email(lab_shop):
    _, shop, lab = lab_shop
    labs.submit_due(shop)
    later = utcnow() + timedelta(hours=1)
    assert labs.poll(shop, now=later) == 0 and _order(shop).status is OrderStatus.READY
    lab.produced("ord_fake_1")
    assert labs.poll(shop, now=later) == 0                              # asked a moment ago: not due
    assert labs.poll(shop, now=later + timedelta(hours=1)) == 1 and _order(shop).status is OrderStatus.PRINTED
    lab.shipped("ord_fake_1", carrier="Royal Mail", number="RM123GB", url="https://track.example/RM123GB")
    assert labs.poll(shop, now=later + timedelta(hours=2)) == 1
    order = _order(shop)
    assert order.status is OrderStatus.SHIPPED and (order.carrier, order.tracking_number) == ("Royal Mail", "RM123GB")
    with shop.sessions() as session:
        mail = session.scalars(select(Email).where(Email.template == "shipped")).one()
        assert mail.context["tracking_url"] == "https://track.example/RM123GB"


def test_the_labs_callback_only_nudges_a_poll_of_the_api(lab_shop):
    client, shop, lab = lab_shop
    labs.submit_due(shop)
    forged = client.post("/webhooks/lab", json={"data": {"order": {"id": "ord_fake_1", "status": "Shipped"}}})
    assert forged.status_code == 200
    wait_for(lambda: not shop.lab._nudged, "the nudge's round")
    assert _order(shop).status is OrderStatus.READY                    # the API says: not shipped
    lab.shipped("ord_fake_1", carrier="DHL", number="JD1", url="https://track.example/JD1")
    client.post("/webhooks/lab", json={"type": "com.prodigi.order.status.stage.changed#Complete",
                                       "data": {"order": {"id": "ord_fake_1"}}})
    wait_for(lambda: _order(shop).status is OrderStatus.SHIPPED, "the shipped order")
    assert client.post("/webhooks/lab", content=b"not json").status_code == 200


def test_without_a_lab_the_callback_is_not_found(web):
    client, _ = web
    assert client.post("/webhooks/lab", json={}).status_code == 404
