"""Migration 0003 (payments, structured addresses) from the schema before it, with rows in it.

Each test starts from an empty database brought to 0002 (today's schema before this change),
fills it through plain SQL as the shop of then wrote it, and upgrades: on SQLite and on
PostgreSQL (a schema of its own; skipped with the reason when the server is absent).
"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from impasto.service.core.db import make_engine, migrate, session_factory
from impasto.service.core.models import Order, OrderStatus
from support.db import postgres_schema

OLD_ADDRESS = "12 St James's Square\nLondon SW1Y 4LB\nUnited Kingdom"


@pytest.fixture(params=["sqlite", "postgresql"])
def url_at_0002(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        migrate(url, revision="0002")
        yield url
        return
    with postgres_schema(request.getfixturevalue("postgres_url"), prefix="mig") as url:
        migrate(url, revision="0002")
        yield url


def _old_rows(engine) -> None:
    """A portrait, its print job and two orders, as the shop wrote them before 0003."""
    now = "2026-11-30 12:00:00"
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO portraits (id, public_id, email, photo_key, consent, created_at) "
                                "VALUES (1, 'p-0123456789abcdefgh', 'ada@example.com', 'k', true, :now)"),
                           {"now": now})
        connection.execute(text(
            "INSERT INTO jobs (id, portrait_id, kind, style, params, priority, status, attempts, max_attempts, "
            "progress, iteration, total, cancel_requested, created_at) VALUES "
            "(1, 1, 'print', 'starry', '{}', 10, 'done', 1, 3, 1.0, 4, 4, false, :now)"), {"now": now})
        for number, status, address in [("IMP-AAAA-AAAA", "ready", OLD_ADDRESS), ("IMP-BBBB-BBBB", "shipped", "1 Way")]:
            connection.execute(text(
                "INSERT INTO orders (number, portrait_id, print_job_id, print_size, price_cents, currency, "
                "shipping_name, shipping_address, status, payment_method, created_at, updated_at) VALUES "
                "(:number, 1, 1, '8x10in', 4900, 'EUR', 'Ada Lovelace', :address, :status, 'invoice', :now, :now)"),
                {"number": number, "address": address, "status": status, "now": now})


def test_upgrade_keeps_every_order_and_its_free_text_address_in_line_1(url_at_0002):
    engine = make_engine(url_at_0002)
    try:
        _old_rows(engine)
        migrate(engine)
        columns = {c["name"] for c in inspect(engine).get_columns("orders")}
        assert "shipping_address" not in columns
        assert {"shipping_line1", "shipping_country", "payment_ref", "refund_ref", "tracking_number"} <= columns
        with session_factory(engine)() as session:
            orders = {o.number: o for o in session.query(Order).all()}
            old = orders["IMP-AAAA-AAAA"]
            assert old.shipping_line1 == OLD_ADDRESS and old.shipping_name == "Ada Lovelace"
            assert (old.shipping_line2, old.shipping_city, old.shipping_country, old.shipping_phone) == ("", "", "", "")
            assert old.status is OrderStatus.READY and old.print_job_id == 1
            assert orders["IMP-BBBB-BBBB"].status is OrderStatus.SHIPPED
            assert old.payment_ref is None and old.paid_at is None
    finally:
        engine.dispose()


def test_the_new_statuses_pass_the_check_constraint_and_others_still_fail(url_at_0002):
    engine = make_engine(url_at_0002)
    try:
        _old_rows(engine)
        migrate(engine)
        with engine.begin() as connection:
            connection.execute(text("UPDATE orders SET status = 'awaiting_payment' WHERE number = 'IMP-AAAA-AAAA'"))
            connection.execute(text("UPDATE orders SET status = 'expired' WHERE number = 'IMP-BBBB-BBBB'"))
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text("UPDATE orders SET status = 'lost' WHERE number = 'IMP-AAAA-AAAA'"))
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO payment_events (provider, event_id, type, received_at) "
                                    "VALUES ('stripe', 'evt_1', 'checkout.session.completed', '2026-12-01')"))
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text("INSERT INTO payment_events (provider, event_id, type, received_at) "
                                    "VALUES ('stripe', 'evt_1', 'checkout.session.completed', '2026-12-01')"))
    finally:
        engine.dispose()


def test_downgrade_joins_a_structured_address_back_into_one_text(url_at_0002):
    from alembic import command

    from impasto.service.core.db import alembic_config

    engine = make_engine(url_at_0002)
    try:
        _old_rows(engine)
        migrate(engine)
        with engine.begin() as connection:
            connection.execute(text(
                "UPDATE orders SET shipping_line1 = '1 Rue de Rivoli', shipping_line2 = 'Apt 4', "
                "shipping_city = 'Paris', shipping_postal_code = '75001', shipping_country = 'FR', "
                "status = 'awaiting_payment' WHERE number = 'IMP-AAAA-AAAA'"))
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0002")
        with engine.connect() as connection:
            rows = dict(connection.execute(text("SELECT number, shipping_address || '|' || status FROM orders")).all())
        assert rows == {"IMP-AAAA-AAAA": "1 Rue de Rivoli\nApt 4\n75001 Paris\nFR|cancelled",
                        "IMP-BBBB-BBBB": "1 Way|shipped"}
    finally:
        engine.dispose()
