"""Structured shipping addresses (checked, with 422s naming the field), the admin's packing
slip, and manual fulfilment: printed → shipped with a carrier and tracking number → the
customer's "shipped" email, through the outbox to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from impasto.errors import InvalidInput
from impasto.service.core.models import Job, JobKind, Order, OrderStatus
from impasto.service.shop.addresses import Address, check_address, countries
from support.db import add_order, add_portrait
from support.shop import ADDRESS, ADMIN_PASSWORD, CSRF, NullDispatcher, finish_jobs, make_catalog, make_settings
from support.shop import new_portrait, photo_bytes, wait_for

ADMIN = ("admin", ADMIN_PASSWORD)


def test_an_address_is_tidied_and_its_country_code_checked():
    address = check_address({**ADDRESS, "name": "  Ada   Lovelace ", "country": "gb", "postal_code": "sw1y 4lb",
                             "line2": "Flat\t2"})
    assert address == Address(name="Ada Lovelace", line1="12 St James's Square", line2="Flat 2", city="London",
                              postal_code="SW1Y 4LB", country="GB")
    assert address.lines() == ["Ada Lovelace", "12 St James's Square", "Flat 2", "SW1Y 4LB London", "United Kingdom"]
    assert check_address({**ADDRESS, "country": "HK", "postal_code": ""}).postal_code == ""   # Hong Kong has none
    assert len(countries()) == 249 and countries()["DE"] == "Germany"


@pytest.mark.parametrize(("change", "message"), [
    ({"name": " "}, "name"), ({"line1": ""}, "street address"), ({"city": ""}, "city"),
    ({"country": "XX"}, "country"), ({"country": ""}, "country"), ({"postal_code": ""}, "postal code"),
    ({"postal_code": "SW1Y<4LB"}, "postal code"), ({"phone": "call me"}, "phone"),
    ({"line1": "x" * 201}, "too long"), ({"region": "Kent\x00"}, "region"),
])
def test_an_address_field_that_is_not_acceptable_is_named(change, message):
    with pytest.raises(InvalidInput, match=message):
        check_address({**ADDRESS, **change})


def test_the_api_answers_a_bad_address_with_a_422_naming_the_field(web):
    client, shop = web
    portrait = new_portrait(client, shop)
    response = client.post(f"/api/v1{portrait['url']}/orders",
                           json={"preview_id": portrait["previews"][0]["id"], "print_size": "1x1in",
                                 "shipping_address": {**ADDRESS, "country": "ZZ"}})
    assert response.status_code == 422 and "country" in response.json()["detail"]
    missing = client.post(f"/api/v1{portrait['url']}/orders",
                          json={"preview_id": portrait["previews"][0]["id"], "print_size": "1x1in",
                                "shipping_address": {"name": "Ada"}})
    assert missing.status_code == 422
    with shop.sessions() as session:
        assert session.scalars(select(Order)).all() == []


def test_an_invoice_order_keeps_its_address_and_renders_at_once(web):
    client, shop = web
    portrait = new_portrait(client, shop)
    response = client.post(f"/api/v1{portrait['url']}/orders",
                           json={"preview_id": portrait["previews"][0]["id"], "print_size": "1x1in",
                                 "shipping_address": {**ADDRESS, "phone": "+44 20 7946 0000"}})
    order = response.json()
    assert order["status"] == "ordered" and order["payment_url"] is None
    assert order["shipping_address"] == {**ADDRESS, "line2": "", "region": "", "phone": "+44 20 7946 0000"}
    assert finish_jobs(shop, JobKind.PRINT)             # the print job was queued with the order


def _ready_order(client, shop) -> Order:
    portrait = new_portrait(client, shop)
    client.post(f"/api/v1{portrait['url']}/orders", json={"preview_id": portrait["previews"][0]["id"],
                                                          "print_size": "1x1in", "shipping_address": ADDRESS})
    finish_jobs(shop, JobKind.PRINT)
    with shop.sessions() as session:
        return session.scalars(select(Order)).one()


def test_the_packing_slip_shows_the_label_and_the_print_file(web):
    client, shop = web
    order = _ready_order(client, shop)
    slip = client.get(f"/admin/orders/{order.id}/slip", auth=ADMIN)
    assert slip.status_code == 200
    label = slip.text.split("data-label>")[1].split("</address>")[0]
    assert label.split("<br>")[:-1] == ["Ada Lovelace", "12 St James&#39;s Square", "SW1Y 4LB London",
                                        "United Kingdom"]
    assert f"/orders/{order.number}/download" in slip.text and "1x1in · 1 copy" in slip.text
    stranger = client.get(f"/admin/orders/{order.id}/slip", follow_redirects=False)   # the admin's only
    assert stranger.status_code == 303 and stranger.headers["location"].startswith("/admin/login")
    assert client.get("/admin/orders/999/slip", auth=ADMIN).status_code == 404


def test_an_order_from_before_structured_addresses_shows_its_text_as_typed(web):
    client, shop = web
    with shop.sessions() as session:
        order = add_order(session, add_portrait(session), shipping_line1="1 Way\nLondon", shipping_city="",
                          shipping_postal_code="", shipping_country="")
        session.commit()
    slip = client.get(f"/admin/orders/{order.id}/slip", auth=ADMIN)
    assert "1 Way<br>London<br>" in slip.text and "check the address as typed" in slip.text


def test_shipping_with_tracking_emails_the_customer_the_tracking_link(tmp_path, smtp_box):
    from impasto.service.shop.app import create_app, shop_of

    smtp_url, box = smtp_box
    settings = make_settings(tmp_path, admin_password=ADMIN_PASSWORD, smtp_url=smtp_url,
                             tracking_url_template="https://track.example/{tracking}")
    app = create_app(settings, catalog=make_catalog(tmp_path), dispatcher=NullDispatcher())
    with TestClient(app) as client:
        shop = shop_of(app)
        order = _ready_order(client, shop)
        token = CSRF.search(client.get("/admin", auth=ADMIN).text).group(1)
        url = f"/admin/orders/{order.id}/status"
        early = client.post(url, auth=ADMIN, headers={"accept": "application/json"},
                            data={"csrf_token": token, "status": "shipped", "carrier": "DHL", "tracking_number": "1"})
        assert early.status_code == 409                              # ready → shipped skips printed
        assert client.post(url, auth=ADMIN, data={"csrf_token": token, "status": "printed"}).status_code == 200
        shipped = client.post(url, auth=ADMIN, data={"csrf_token": token, "status": "shipped", "carrier": "DHL Express",
                                                     "tracking_number": "JD 0123/45"})
        assert shipped.status_code == 200
        shop.outbox.wake()
        wait_for(lambda: "Your print is on its way" in " ".join(box.texts()), "the shipped email")
        subject, text = next((s, t) for s, t in box.texts().items() if "on its way" in s)
        assert order.number in subject and "DHL Express" in text and "JD 0123/45" in text
        assert "https://track.example/JD%200123%2F45" in text
        with shop.sessions() as session:
            row = session.get(Order, order.id)
            assert row.status is OrderStatus.SHIPPED and row.tracking_url == "https://track.example/JD%200123%2F45"
            public_id = row.portrait.public_id
        page = client.get(f"/api/v1/portraits/{public_id}/orders/{order.number}").json()
        assert (page["carrier"], page["tracking_number"]) == ("DHL Express", "JD 0123/45")


def test_a_print_with_bleed_is_painted_larger_not_stretched(tmp_path):
    """1×1 in at 64 dpi with 1/8 in (3.175 mm) of bleed on each edge: a 1.25 in sheet, 80 px a
    side, painted by the real render threads (the engine renders the bleed like the rest)."""
    from impasto.service.shop.app import create_app, shop_of
    from impasto.service.shop.flows import render_size

    assert render_size("8x10in", 0) == "8x10in" and render_size("8x10in", 3.175) == "8.2500x10.2500in"
    settings = make_settings(tmp_path, print_bleed_mm=3.175)
    app = create_app(settings, catalog=make_catalog(tmp_path))
    shop = shop_of(app)
    with TestClient(app) as client:
        created = client.post("/api/v1/portraits", data={"email": "ada@example.com", "consent": "true"},
                              files={"photo": ("me.jpg", photo_bytes(), "image/jpeg")})
        url = f"/api/v1/portraits/{created.json()['id']}"
        view = wait_for(lambda: (v := client.get(url).json())["done"] and v, "the previews")
        order = client.post(f"{url}/orders", json={"preview_id": view["previews"][0]["id"], "print_size": "1x1in",
                                                   "shipping_address": ADDRESS}).json()
        ready = wait_for(lambda: (o := client.get(f"{url}/orders/{order['number']}").json())["download_url"] and o,
                         "the print")
        assert ready["print_size"] == "1x1in"
        with shop.sessions() as session:
            job = session.get(Job, session.scalars(select(Order)).one().print_job_id)
            assert job.params["print_size"] == "1.2500x1.2500in"
            data = shop.storage.get(job.result_key)
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (80, 80)
