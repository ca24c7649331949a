"""Paying by card in a real browser: Chromium against the shop under uvicorn, selling through
a local fake of Stripe (tests/support/fake_stripe.py, a test double: Stripe cannot run here),
with real render threads painting tiny renders and mail through aiosmtpd.

upload → preview → order form (structured address) → redirected to the fake checkout → "Pay"
→ the fake's signed webhook → the order is paid and its print painted → receipt and
print-ready emails → the download.
"""

from __future__ import annotations

import re

import pytest

from support.browser import TIMEOUT_MS, fill_address, shoot, watch_errors
from support.fake_stripe import FakeStripeServer
from support.shop import free_port, make_catalog, make_settings, photo_bytes, serving, wait_for

WEBHOOK_SECRET = "whsec_e2e_0123456789abcdef"


@pytest.fixture
def stripe_server(tmp_path, smtp_box):
    """The shop selling through the fake Stripe, under uvicorn; yields (base URL, FakeStripe, MailBox)."""
    from impasto.service.shop.app import create_app, shop_of

    port = free_port()
    smtp_url, box = smtp_box
    with FakeStripeServer(WEBHOOK_SECRET) as fake:
        settings = make_settings(tmp_path, public_url=f"http://127.0.0.1:{port}", smtp_url=smtp_url,
                                 payment_provider="stripe", stripe_secret_key="sk_test_e2e",
                                 stripe_webhook_secret=WEBHOOK_SECRET, stripe_api_base=fake.base_url)
        fake.webhook_url = f"{settings.public_url}/webhooks/stripe"
        app = create_app(settings, catalog=make_catalog(tmp_path))
        shop_of(app).outbox_seconds = 0.2
        with serving(app, port):
            yield settings.public_url, fake, box


def test_order_pay_on_the_checkout_then_the_print_is_painted(stripe_server, browser, tmp_path, shots):
    base, fake, box = stripe_server
    photo = tmp_path / "me.jpg"
    photo.write_bytes(photo_bytes())
    page = browser.new_page(viewport={"width": 1200, "height": 820})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    watch_errors(page, errors)
    page.goto(base + "/")
    page.set_input_files("input[name=photo]", str(photo))
    page.fill("input[name=email]", "grace@example.com")
    page.check("input[name=consent]")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/portraits/[A-Za-z0-9_-]+$"))
    page.wait_for_selector(".tile.status-done")
    page.click(".tile >> nth=0 >> text=Order a print")
    page.wait_for_url(re.compile(r"/order\?preview=\d+$"))
    page.fill("input[name=shipping_name]", "Grace Hopper")
    fill_address(page, line1="1 Harvard Yard", city="Cambridge", region="MA", postal_code="02138", country="US")
    page.click("button[type=submit]")

    page.wait_for_url(f"{fake.base_url}/pay/cs_fake_1")             # the shop sent the browser to "Stripe"
    assert page.inner_text("[data-amount]") == "9.00 EUR"
    number = page.inner_text("[data-reference]")
    assert re.fullmatch(r"IMP-[A-Z2-9]{4}-[A-Z2-9]{4}", number)
    assert not box.messages or "Payment received" not in " ".join(box.texts())
    shoot(page, shots, "fake-checkout")
    page.click("#pay")

    page.wait_for_url(re.compile(rf"/orders/{number}\?paid=1$"))
    assert fake.deliveries == [200]                                  # the signed webhook was taken
    page.wait_for_selector("[data-download]:not([hidden])")          # paid, painted, ready
    shoot(page, shots, "paid-confirmation")
    with page.expect_download() as download:
        page.click("[data-download]")
    assert download.value.suggested_filename == f"impasto-{number}-1x1in.png"
    wait_for(lambda: {f"Payment received — order {number}", "Your print file is ready"} <= set(box.texts()),
             "the receipt and the print-ready email")
    assert "€9.00" in box.texts()[f"Payment received — order {number}"]
    assert errors == []
