"""Orders are paid online and shipped to structured addresses; webhook events are kept once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

- ``orders.shipping_address`` (free text) becomes ``shipping_line1``: an order placed
  before keeps its whole address there, with an empty city and country, so the packing
  slip still shows it as it was typed. The other address parts are new columns.
- Payment (checkout id and URL, payment intent, refund), shipping (carrier, tracking) and
  print lab (its order id, the print file, tries and last error) columns, and the times
  ``paid_at``, ``expired_at``, ``refunded_at``.
- ``order_status`` gains ``awaiting_payment``, ``paid`` and ``expired``: the CHECK constraint
  is replaced (the statuses are VARCHARs with a CHECK, no native ENUM: see models.py).
- ``payment_events``: each provider event id once.

Written out in full, like 0001: later model changes never alter what this migration does.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_STATUSES = ("ordered", "rendering", "ready", "printed", "shipped", "cancelled")
NEW_STATUSES = ("awaiting_payment", "paid", "expired", *OLD_STATUSES)
ADDRESS_COLUMNS = [("shipping_line2", 200), ("shipping_city", 100), ("shipping_region", 100),
                   ("shipping_postal_code", 20), ("shipping_country", 2), ("shipping_phone", 40)]
NULLABLE_COLUMNS = [("payment_ref", sa.String(255)), ("payment_url", sa.Text()),
                    ("payment_intent", sa.String(255)), ("refund_ref", sa.String(255)),
                    ("carrier", sa.String(64)), ("tracking_number", sa.String(128)),
                    ("tracking_url", sa.Text()), ("paid_at", sa.DateTime(timezone=True)),
                    ("expired_at", sa.DateTime(timezone=True)), ("refunded_at", sa.DateTime(timezone=True)),
                    ("print_file_key", sa.String(512)), ("fulfilment_ref", sa.String(64)),
                    ("fulfilment_error", sa.Text()), ("fulfilment_next_at", sa.DateTime(timezone=True))]


def _status(*values: str) -> sa.Enum:
    return sa.Enum(*values, name="order_status", native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("shipping_address", new_column_name="shipping_line1",
                           existing_type=sa.Text(), existing_nullable=False)
        for name, length in ADDRESS_COLUMNS:
            batch.add_column(sa.Column(name, sa.String(length=length), nullable=False, server_default=""))
        for name, type_ in NULLABLE_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
        batch.add_column(sa.Column("fulfilment_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.alter_column("status", existing_type=_status(*OLD_STATUSES), type_=_status(*NEW_STATUSES),
                           existing_nullable=False)
        batch.create_index(batch.f("ix_orders_payment_ref"), ["payment_ref"], unique=False)
    # The server defaults only filled the rows already there; the models set the values.
    with op.batch_alter_table("orders") as batch:
        for name, length in ADDRESS_COLUMNS:
            batch.alter_column(name, server_default=None, existing_type=sa.String(length=length),
                               existing_nullable=False)
        batch.alter_column("fulfilment_attempts", server_default=None, existing_type=sa.Integer(),
                           existing_nullable=False)
    op.create_table("payment_events",
                    sa.Column("id", sa.Integer(), nullable=False),
                    sa.Column("provider", sa.String(length=16), nullable=False),
                    sa.Column("event_id", sa.String(length=255), nullable=False),
                    sa.Column("type", sa.String(length=100), nullable=False),
                    sa.Column("order_number", sa.String(length=16), nullable=True),
                    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_events")),
                    sa.UniqueConstraint("event_id", name=op.f("uq_payment_events_event_id")))


def downgrade() -> None:
    """Back to one free-text address (its parts joined by lines); new statuses become cancelled."""
    op.drop_table("payment_events")
    orders = sa.table("orders", sa.column("status", sa.String))
    op.execute(orders.update().where(orders.c.status.in_(["awaiting_payment", "expired"]))
               .values(status="cancelled"))
    op.execute(orders.update().where(orders.c.status == "paid").values(status="ordered"))
    _join_address_lines()
    with op.batch_alter_table("orders") as batch:
        batch.drop_index(batch.f("ix_orders_payment_ref"))
        batch.alter_column("status", existing_type=_status(*NEW_STATUSES), type_=_status(*OLD_STATUSES),
                           existing_nullable=False)
        batch.drop_column("fulfilment_attempts")
        for name, _ in reversed(NULLABLE_COLUMNS):
            batch.drop_column(name)
        for name, _ in reversed(ADDRESS_COLUMNS):
            batch.drop_column(name)
        batch.alter_column("shipping_line1", new_column_name="shipping_address",
                           existing_type=sa.Text(), existing_nullable=False)


def _join_address_lines() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.text(
        "SELECT id, shipping_line1, shipping_line2, shipping_city, shipping_region, shipping_postal_code, "
        "shipping_country FROM orders")).all()
    for row in rows:
        place = " ".join(part for part in (row[5], row[3], row[4]) if part)
        text = "\n".join(part for part in (row[1], row[2], place, row[6]) if part)
        connection.execute(sa.text("UPDATE orders SET shipping_line1 = :text WHERE id = :id"),
                           {"text": text, "id": row[0]})
