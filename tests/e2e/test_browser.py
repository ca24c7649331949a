"""The shop in a real browser: Chromium (Debian's, driven by Playwright) against the app under
uvicorn, with render threads painting tiny previews, mail through aiosmtpd.

upload Grace Hopper's portrait → previews appear with progress → order a print → the
"print ready" email arrives → its link downloads the print file. Each page is screenshotted
(JPEG) into a temp folder, or into ``$IMPASTO_SCREENSHOTS`` (``docs/`` for the README's).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from impasto.catalog import Catalog
from impasto.config import PrintOption, Settings
from support.browser import LOADED, TIMEOUT_MS, fill_address, shoot, watch_errors
from support.shop import free_port, serving, wait_for

STYLES = {"starry": ("starry_night.jpg", "The Starry Night"), "scream": ("the_scream.jpg", "The Scream"),
          "hat": ("woman-with-hat-matisse.jpg", "Woman with a Hat")}


@pytest.fixture
def shop_server(tmp_path, shared_images, smtp_box):
    """The app under uvicorn on a free port; yields (base URL, MailBox)."""
    from impasto.service.shop.app import create_app, shop_of

    catalog = Catalog(tmp_path / "styles")
    for name, (filename, title) in STYLES.items():
        catalog.add(name, shared_images / "style" / filename, {"start_size": 0, "seed": 1}, title=title)
    port = free_port()
    smtp_url, box = smtp_box
    settings = Settings(data_dir=tmp_path, public_url=f"http://127.0.0.1:{port}", secret_key="e2e-secret-0123456789abcdef",
                        admin_password="e2e-admin-password", smtp_url=smtp_url, preview_size=64,
                        preview_iterations=8, print_dpi=50,
                        prints=[PrintOption(size="2x2.5in", price_cents=2900), PrintOption(size="4x5in", price_cents=4900)])
    app = create_app(settings, catalog=catalog)
    shop_of(app).outbox_seconds = 0.2
    with serving(app, port):
        yield settings.public_url, box


def test_upload_watch_order_email_download(shop_server, browser, shared_images, shots):
    base, box = shop_server
    page = browser.new_page(viewport={"width": 1200, "height": 820})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    watch_errors(page, errors)
    page.goto(base + "/")
    shoot(page, shots, "upload")
    page.set_input_files("input[name=photo]", str(shared_images / "content" / "grace_hopper.jpg"))
    page.fill("input[name=email]", "grace@example.com")
    page.check("input[name=consent]")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/portraits/[A-Za-z0-9_-]+$"))
    portrait_url = page.url
    _watch_previews(page, shots)

    page.click(".tile >> nth=0 >> text=Order a print")
    page.wait_for_url(re.compile(r"/order\?preview=\d+$"))
    page.fill("input[name=shipping_name]", "Grace Hopper")
    fill_address(page, line1="1 Harvard Yard", city="Cambridge", region="MA", postal_code="02138", country="US")
    shoot(page, shots, "order")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/orders/IMP-[A-Z2-9]{4}-[A-Z2-9]{4}$"))
    number = page.inner_text(".order-number")
    page.wait_for_selector("[data-download]:not([hidden])")      # the event stream revealed it
    shoot(page, shots, "confirmation")
    with page.expect_download() as download:
        page.click("[data-download]")
    assert download.value.suggested_filename == f"impasto-{number}-2x2.5in.png"

    link = _emailed_link(box, number)
    response = page.request.get(link)                  # the link mints a signed URL and redirects to it
    assert response.ok and response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.body())) as image:
        assert image.size == (100, 125)                 # 2×2.5 in at 50 dpi, upright like the photo
    _admin(browser, base, shots, errors)
    _mobile(browser, portrait_url, shots)
    assert errors == []


def _watch_previews(page, shots: Path) -> None:
    """Record every state the tiles pass through (the page updates itself from the event stream)."""
    page.evaluate("""() => {
        window.seen = new Set();
        const note = () => document.querySelectorAll('.tile').forEach(t => {
            window.seen.add(t.className);
            const bar = t.querySelector('[data-progress]');
            if (bar && bar.value > 0 && bar.value < 1) window.seen.add('progress');
            if (!t.querySelector('[data-image]').hidden) window.seen.add('image');
        });
        note();
        new MutationObserver(note).observe(document.body, {subtree: true, attributes: true, childList: true});
    }""")
    page.wait_for_selector(".tile.status-done")
    if page.locator(".tile:not(.status-done)").count():
        shoot(page, shots, "portrait-painting")
    page.wait_for_function("() => document.querySelectorAll('.tile.status-done').length === 3")
    page.wait_for_function(LOADED)
    seen = set(page.evaluate("() => [...window.seen]"))
    assert {"tile status-running", "tile status-done", "image"} <= seen, seen
    assert "All done" in page.inner_text("[data-summary]")
    shoot(page, shots, "portrait")


def _emailed_link(box, number: str) -> str:
    wait_for(lambda: "Your print file is ready" in box.texts(), "the print-ready email")
    text = box.texts()["Your print file is ready"]
    assert number in text and "Grace Hopper" in text
    return re.search(r"http://\S+/download", text).group(0)


def _admin(browser, base: str, shots: Path, errors: list[str]) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 820})
    watch_errors(page, errors)
    page.goto(base + "/admin")
    page.wait_for_url(re.compile(r"/admin/login"))
    page.fill("input[name=password]", "e2e-admin-password")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/admin$"))
    assert "ready" in page.inner_text("#orders") and "done" in page.inner_text("#jobs")
    shoot(page, shots, "admin")
    page.wait_for_timeout(3500)          # htmx refreshes the jobs table (under the CSP)
    assert "done" in page.inner_text("#jobs")
    page.close()


def _mobile(browser, portrait_url: str, shots: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(portrait_url)
    page.wait_for_function(LOADED)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390                                   # nothing wider than the phone
    shoot(page, shots, "mobile", full_page=False)
    context.close()
