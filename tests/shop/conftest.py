"""Fixtures of the shop's tests: ``web``, an app whose jobs wait for ``finish_jobs``."""

from __future__ import annotations

import pytest

from support.shop import (
    ADMIN_PASSWORD,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
    NullDispatcher,
    make_catalog,
    make_settings,
)


@pytest.fixture
def web(tmp_path):
    """(TestClient, Shop) of an app whose jobs wait for ``finish_jobs`` (no renders)."""
    from fastapi.testclient import TestClient

    from impasto.service.shop.app import create_app, shop_of

    settings = make_settings(tmp_path, admin_password=ADMIN_PASSWORD, max_upload_bytes=MAX_UPLOAD_BYTES,
                             max_upload_pixels=MAX_UPLOAD_PIXELS)
    app = create_app(settings, catalog=make_catalog(tmp_path, ("starry", "scream")), dispatcher=NullDispatcher())
    with TestClient(app) as client:
        yield client, shop_of(app)
