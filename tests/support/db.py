"""The database tests' pieces: a PostgreSQL schema of one's own, a portrait, an order."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from sqlalchemy import make_url, text

from impasto.service.core.models import Order, Portrait


def add_portrait(session, *, email: str = "ada@example.com") -> Portrait:
    portrait = Portrait(email=email, photo_key="portraits/p/photo.png", consent=True)
    session.add(portrait)
    session.flush()
    return portrait


def add_order(session, portrait: Portrait, **fields) -> Order:
    address = {"shipping_name": "Ada Lovelace", "shipping_line1": "1 Analytical Way", "shipping_city": "London",
               "shipping_postal_code": "N1 1AA", "shipping_country": "GB"}
    order = Order(portrait_id=portrait.id, print_size="8x10in", price_cents=4900, currency="EUR",
                  **{**address, **fields})
    session.add(order)
    session.flush()
    return order


@contextlib.contextmanager
def postgres_schema(base_url: str, *, prefix: str = "test") -> Iterator[str]:
    """A fresh, empty schema on the test server (dropped afterwards); yields its SQLAlchemy URL."""
    from impasto.service.core.db import make_engine

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
