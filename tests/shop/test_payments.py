"""Stripe Checkout end to end through the app, against a local fake of Stripe's API
(tests/support/fake_stripe.py: a test double, since Stripe cannot run here).

What the shop sends (amount, currency, reference, idempotency key), that nothing renders
before the webhook says paid, the webhook's signature check (good, bad, stale, replayed),
and the refund an admin cancel makes.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from impasto.service.core.models import Email, Job, JobKind, JobStatus, Order, OrderStatus, PaymentEvent
from support.fake_stripe import FakeStripeServer
from support.shop import ADDRESS, ADMIN_PASSWORD, CSRF, FORM_ADDRESS, NullDispatcher, csrf_token, finish_jobs
from support.shop import make_catalog, make_settings, new_portrait

WEBHOOK_SECRET = "whsec_test_0123456789abcdef"
SECRET_KEY = "sk_test_fake_0123456789"
ADMIN = ("admin", ADMIN_PASSWORD)


@pytest.fixture
def stripe_shop(tmp_path):
    """(TestClient, Shop, FakeStripe): the shop selling through the fake Stripe; no renders."""
    from impasto.service.shop.app import create_app, shop_of

    with FakeStripeServer(WEBHOOK_SECRET) as fake:
        settings = make_settings(tmp_path, admin_password=ADMIN_PASSWORD, payment_provider="stripe",
                                 stripe_secret_key=SECRET_KEY, stripe_webhook_secret=WEBHOOK_SECRET,
                                 stripe_api_base=fake.base_url)
        app = create_app(settings, catalog=make_catalog(tmp_path), dispatcher=NullDispatcher())
        with TestClient(app) as client:
            yield client, shop_of(app), fake


def _order(client, shop) -> tuple[dict, dict]:
    portrait = new_portrait(client, shop)
    response = client.post(f"/api/v1{portrait['url']}/orders",
                           json={"preview_id": portrait["previews"][0]["id"], "print_size": "1x1.25in",
                                 "shipping_address": ADDRESS})
    assert response.status_code == 201, response.text
    return portrait, response.json()


def _webhook(client, fake, event, **signing):
    payload, header = fake.signed(event, **signing)
    return client.post("/webhooks/stripe", content=payload,
                       headers={"stripe-signature": header, "content-type": "application/json"})


def _row(shop, number: str) -> Order:
    with shop.sessions() as session:
        return session.scalars(select(Order).where(Order.number == number)).one()


def _print_jobs(shop) -> list[Job]:
    with shop.sessions() as session:
        return session.scalars(select(Job).where(Job.kind == JobKind.PRINT)).all()


def test_an_order_opens_a_checkout_at_the_configured_price_and_nothing_renders(stripe_shop):
    client, shop, fake = stripe_shop
    _, order = _order(client, shop)
    number = order["number"]
    assert order["status"] == "awaiting_payment" and order["payment_method"] == "stripe"
    assert order["payment_url"] == f"{fake.base_url}/pay/cs_fake_1" and order["download_url"] is None
    (call,) = fake.api_calls("/v1/checkout/sessions")
    params = call.params
    assert params["line_items[0][price_data][unit_amount]"] == "1500"     # 1x1.25in's configured price
    assert params["line_items[0][price_data][currency]"] == "eur" and params["line_items[0][quantity]"] == "1"
    assert params["client_reference_id"] == number and params["mode"] == "payment"
    assert params["success_url"] == f"http://testserver{order['url']}?paid=1"
    assert params["cancel_url"] == f"http://testserver{order['url']}"
    assert params["customer_email"] == "ada@example.com"
    assert call.headers["idempotency-key"] == f"impasto-checkout-{number}"
    assert call.headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert _print_jobs(shop) == []                                     # no render before payment
    assert finish_jobs(shop, JobKind.PRINT) == []
    row = _row(shop, number)
    assert row.status is OrderStatus.AWAITING_PAYMENT and row.payment_ref == "cs_fake_1" and row.print_job_id is None


def test_the_client_cannot_name_an_amount_and_only_the_configured_provider_is_offered(stripe_shop):
    client, shop, _ = stripe_shop
    portrait = new_portrait(client, shop)
    body = {"preview_id": portrait["previews"][0]["id"], "print_size": "1x1in", "shipping_address": ADDRESS}
    assert client.post(f"/api/v1{portrait['url']}/orders", json={**body, "price_cents": 1}).status_code == 422
    invoice = client.post(f"/api/v1{portrait['url']}/orders", json={**body, "payment_method": "invoice"})
    assert invoice.status_code == 422 and "stripe" in invoice.json()["detail"]    # no unpaid print by invoice
    assert client.get("/api/v1/prints").json()["payment_methods"].keys() == {"stripe"}


def test_the_order_form_redirects_to_the_checkout_which_its_csp_allows(stripe_shop):
    client, shop, fake = stripe_shop
    portrait = new_portrait(client, shop)
    form_page = client.get(portrait["previews"][0]["order_url"])
    assert fake.base_url in form_page.headers["content-security-policy"].split("form-action")[1].split(";")[0]
    token = CSRF.search(form_page.text).group(1)
    placed = client.post(f"{portrait['url']}/orders", follow_redirects=False,
                         data={"csrf_token": token, "preview_id": str(portrait["previews"][0]["id"]),
                               "print_size": "1x1in", **FORM_ADDRESS})
    assert placed.status_code == 303 and placed.headers["location"] == f"{fake.base_url}/pay/cs_fake_1"
    number = fake.sessions["cs_fake_1"]["client_reference_id"]
    back = client.get(f"{portrait['url']}/orders/{number}?paid=1")
    assert "confirming your payment" in back.text and "Pay now" not in back.text
    assert "Pay now" in client.get(f"{portrait['url']}/orders/{number}").text


def test_a_completed_checkout_pays_the_order_queues_its_print_and_a_receipt_once(stripe_shop):
    client, shop, fake = stripe_shop
    portrait, order = _order(client, shop)
    event = fake.pay("cs_fake_1")
    answer = _webhook(client, fake, event)
    assert answer.status_code == 200 and answer.json()["outcome"] == "paid"
    row = _row(shop, order["number"])
    assert row.status is OrderStatus.PAID and row.paid_at is not None
    assert row.payment_intent == fake.sessions["cs_fake_1"]["payment_intent"]
    (job,) = _print_jobs(shop)
    assert job.id == row.print_job_id and job.parent_job_id == portrait["previews"][0]["id"]
    assert job.status is JobStatus.QUEUED and job.params == {"print_size": "1x1.25in"}
    assert shop.dispatcher.notified >= 2                              # the upload, then the payment

    replay = _webhook(client, fake, event)                            # Stripe delivers at least once
    assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"
    assert len(_print_jobs(shop)) == 1
    with shop.sessions() as session:
        receipts = session.scalars(select(Email).where(Email.template == "payment_received")).all()
        assert [r.context["amount"] for r in receipts] == ["€15.00"] and receipts[0].to == "ada@example.com"
        assert session.scalar(select(func.count()).select_from(PaymentEvent)) == 1

    finish_jobs(shop, JobKind.PRINT)                                  # the print renders, as any other
    assert _row(shop, order["number"]).status is OrderStatus.READY


@pytest.mark.parametrize("how", ["wrong secret", "stale timestamp", "tampered body", "no header", "not json"])
def test_a_webhook_that_does_not_check_out_is_refused_and_changes_nothing(stripe_shop, how):
    client, shop, fake = stripe_shop
    _, order = _order(client, shop)
    event = fake.pay("cs_fake_1")
    headers = {"content-type": "application/json"}
    if how == "wrong secret":
        payload, headers["stripe-signature"] = fake.signed(event, secret="whsec_someone_else")
    elif how == "stale timestamp":    # a replay of a captured request, past the 300 s tolerance
        payload, headers["stripe-signature"] = fake.signed(event, timestamp=int(time.time()) - 600)
    elif how == "tampered body":
        payload, headers["stripe-signature"] = fake.signed(event)
        payload = payload.replace(b'"amount_total": 1500', b'"amount_total": 15')
    elif how == "no header":
        payload, _ = fake.signed(event)
    else:
        payload = b"\xff not json"
        headers["stripe-signature"] = fake.signed(event)[1]
    response = client.post("/webhooks/stripe", content=payload, headers=headers)
    assert response.status_code == 400, response.text
    assert _row(shop, order["number"]).status is OrderStatus.AWAITING_PAYMENT and _print_jobs(shop) == []
    with shop.sessions() as session:
        assert session.scalar(select(func.count()).select_from(PaymentEvent)) == 0


def test_a_fresh_signature_inside_the_tolerance_is_accepted(stripe_shop):
    client, shop, fake = stripe_shop
    _order(client, shop)
    response = _webhook(client, fake, fake.pay("cs_fake_1"), timestamp=int(time.time()) - 200)
    assert response.status_code == 200 and response.json()["outcome"] == "paid"


def test_an_expired_checkout_expires_the_order_and_a_late_event_changes_nothing(stripe_shop):
    client, shop, fake = stripe_shop
    portrait, order = _order(client, shop)
    answer = _webhook(client, fake, fake.event("checkout.session.expired", "cs_fake_1", status="expired"))
    assert answer.json()["outcome"] == "expired"
    row = _row(shop, order["number"])
    assert row.status is OrderStatus.EXPIRED and row.expired_at is not None and _print_jobs(shop) == []
    assert "checkout expired" in client.get(f"{portrait['url']}/orders/{order['number']}").text
    again = _webhook(client, fake, fake.event("checkout.session.expired", "cs_fake_1", status="expired"))
    assert again.json()["outcome"] == "already expired"


def test_a_payment_not_matching_the_order_is_not_taken(stripe_shop):
    client, shop, fake = stripe_shop
    _, order = _order(client, shop)
    fake.pay("cs_fake_1")
    short = fake.event("checkout.session.completed", "cs_fake_1", amount_total=1)
    assert _webhook(client, fake, short).json()["outcome"] == "amount mismatch"
    other = fake.event("checkout.session.completed", "cs_fake_1", id="cs_someone_elses")
    assert _webhook(client, fake, other).json()["outcome"] == "ignored"
    unpaid = fake.event("checkout.session.completed", "cs_fake_1", payment_status="unpaid")
    assert _webhook(client, fake, unpaid).json()["outcome"] == "not paid yet"
    assert _row(shop, order["number"]).status is OrderStatus.AWAITING_PAYMENT and _print_jobs(shop) == []


def _admin_cancel(client, order_id: int):
    token = CSRF.search(client.get("/admin", auth=ADMIN).text).group(1)
    return client.post(f"/admin/orders/{order_id}/status", auth=ADMIN, headers={"accept": "application/json"},
                       data={"csrf_token": token, "status": "cancelled"})


def test_an_admin_cancel_of_a_paid_order_refunds_it_and_stops_its_print(stripe_shop):
    client, shop, fake = stripe_shop
    portrait, order = _order(client, shop)
    _webhook(client, fake, fake.pay("cs_fake_1"))
    row = _row(shop, order["number"])
    assert "Cancel and refund" in client.get("/admin", auth=ADMIN).text
    assert _admin_cancel(client, row.id).status_code == 200
    (call,) = fake.api_calls("/v1/refunds")
    assert call.params["payment_intent"] == row.payment_intent
    assert call.headers["idempotency-key"] == f"impasto-refund-{order['number']}"
    cancelled = _row(shop, order["number"])
    assert cancelled.status is OrderStatus.CANCELLED and cancelled.refund_ref == "re_fake_1"
    assert cancelled.refunded_at is not None
    assert _print_jobs(shop)[0].cancel_requested or _print_jobs(shop)[0].status is JobStatus.CANCELLED
    assert "payment refunded" in client.get(f"{portrait['url']}/orders/{order['number']}").text


def test_a_refund_the_provider_refuses_leaves_the_order_as_it_was(stripe_shop):
    client, shop, fake = stripe_shop
    _, order = _order(client, shop)
    _webhook(client, fake, fake.pay("cs_fake_1"))
    fake.fail_next = 1
    response = _admin_cancel(client, _row(shop, order["number"]).id)
    assert response.status_code == 503 and "refund" in response.json()["detail"]
    row = _row(shop, order["number"])
    assert row.status is OrderStatus.PAID and row.refund_ref is None


def test_cancelling_an_unpaid_order_closes_its_checkout_and_a_late_payment_is_refunded(stripe_shop):
    client, shop, fake = stripe_shop
    _, order = _order(client, shop)
    event = fake.pay("cs_fake_1")        # paid on Stripe's page just as the admin cancels
    fake.sessions["cs_fake_1"]["status"] = "open"
    assert _admin_cancel(client, _row(shop, order["number"]).id).status_code == 200
    assert [c.path for c in fake.calls][-1] == "/v1/checkout/sessions/cs_fake_1/expire"
    assert fake.api_calls("/v1/refunds") == []
    assert _webhook(client, fake, event).json()["outcome"] == "refunded"
    row = _row(shop, order["number"])
    assert row.status is OrderStatus.CANCELLED and row.refund_ref == "re_fake_1" and _print_jobs(shop) == []


def test_a_checkout_stripe_refuses_places_no_order(stripe_shop):
    client, shop, fake = stripe_shop
    portrait = new_portrait(client, shop)
    fake.fail_next = 1
    response = client.post(f"/api/v1{portrait['url']}/orders",
                           json={"preview_id": portrait["previews"][0]["id"], "print_size": "1x1in",
                                 "shipping_address": ADDRESS})
    assert response.status_code == 503 and "payment service" in response.json()["detail"]
    with shop.sessions() as session:
        assert session.scalars(select(Order)).all() == []
    token = csrf_token(client, portrait["previews"][0]["order_url"])
    fake.fail_next = 1
    page = client.post(f"{portrait['url']}/orders", data={"csrf_token": token, "print_size": "1x1in",
                                                          "preview_id": str(portrait["previews"][0]["id"]),
                                                          **FORM_ADDRESS})
    assert page.status_code == 503 and "payment service" in page.text and 'value="Ada Lovelace"' in page.text


def test_the_same_order_twice_goes_back_to_its_open_checkout(stripe_shop):
    client, shop, fake = stripe_shop
    portrait, first = _order(client, shop)
    again = client.post(f"/api/v1{portrait['url']}/orders",
                        json={"preview_id": portrait["previews"][0]["id"], "print_size": "1x1.25in",
                              "shipping_address": ADDRESS})
    assert again.json()["number"] == first["number"] and again.json()["payment_url"] == first["payment_url"]
    assert len(fake.api_calls("/v1/checkout/sessions")) == 1


def test_webhooks_are_refused_when_stripe_is_not_the_provider(web):
    client, _ = web
    response = client.post("/webhooks/stripe", content=b"{}", headers={"stripe-signature": "t=1,v1=00"})
    assert response.status_code == 400 and "not enabled" in response.json()["detail"]


def test_a_replayed_event_is_handled_once_on_postgresql(tmp_path, postgres_url):
    """``ON CONFLICT DO NOTHING`` on PostgreSQL's side: the second delivery finds the first's row."""
    from impasto.service.shop.app import create_app, shop_of
    from support.shop import postgres_schema

    with FakeStripeServer(WEBHOOK_SECRET) as fake, postgres_schema(postgres_url) as url:
        settings = make_settings(tmp_path, database_url=url, payment_provider="stripe",
                                 stripe_secret_key=SECRET_KEY, stripe_webhook_secret=WEBHOOK_SECRET,
                                 stripe_api_base=fake.base_url)
        app = create_app(settings, catalog=make_catalog(tmp_path), dispatcher=NullDispatcher())
        with TestClient(app) as client:
            shop = shop_of(app)
            _, order = _order(client, shop)
            event = fake.pay("cs_fake_1")
            assert [_webhook(client, fake, event).json()["outcome"] for _ in range(2)] == ["paid", "duplicate"]
            assert _row(shop, order["number"]).status is OrderStatus.PAID and len(_print_jobs(shop)) == 1


@pytest.mark.parametrize(("settings", "named"), [
    ({"payment_provider": "stripe", "stripe_webhook_secret": WEBHOOK_SECRET}, "IMPASTO_STRIPE_SECRET_KEY"),
    ({"payment_provider": "stripe", "stripe_secret_key": SECRET_KEY}, "IMPASTO_STRIPE_WEBHOOK_SECRET"),
    ({"fulfilment_provider": "http", "lab_api_key": "k"}, "IMPASTO_LAB_API_BASE"),
])
def test_a_provider_without_its_keys_is_a_config_error_at_start(tmp_path, settings, named):
    from impasto.errors import ConfigError
    from impasto.service.shop.app import create_app

    with pytest.raises(ConfigError, match=named):
        create_app(make_settings(tmp_path, **settings), catalog=make_catalog(tmp_path), dispatcher=NullDispatcher())
