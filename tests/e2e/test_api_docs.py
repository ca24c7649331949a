"""``/docs`` in a real browser: Swagger UI from the shop's own files, under its CSP, offline."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
import support.shop as app_common
from support.shop import free_port, serving

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@pytest.fixture
def docs_server(tmp_path):
    from impasto.service.shop.app import create_app

    settings = app_common.make_settings(tmp_path)
    app = create_app(settings, catalog=app_common.make_catalog(tmp_path),
                     dispatcher=app_common.NullDispatcher())
    port = free_port()
    with serving(app, port):
        yield f"http://127.0.0.1:{port}"


def test_swagger_ui_renders_from_local_files_under_the_csp(docs_server, chromium_path):
    from playwright.sync_api import sync_playwright

    errors, requested = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: requested.append(r.url))
            response = page.goto(docs_server + "/docs")
            assert "script-src 'self'" in response.headers["content-security-policy"]
            page.wait_for_selector(".swagger-ui .info .title", timeout=60_000)
            assert "impasto shop" in page.inner_text(".swagger-ui .info .title")
            page.wait_for_selector(".opblock-tag", timeout=60_000)        # the operations, from /openapi.json
        finally:
            browser.close()
    assert not errors, errors
    assert requested and all(url.startswith(docs_server) for url in requested), requested
