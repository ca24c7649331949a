"""The shop's records: portraits, render jobs, orders, the mail outbox and the render workers.

These SQLAlchemy 2 models are the single record of the schema; the Alembic migrations in
``migrations/versions`` must match them (a test autogenerates the diff and expects none).

Choices that hold across SQLite and PostgreSQL:

- Status values are ``StrEnum``s stored as short strings with a CHECK constraint, not as
  PostgreSQL ENUM types: adding a status is then a one-line migration on both databases.
- Timestamps are timezone-aware UTC in Python on both backends (``UTCDateTime``); SQLite
  keeps them as naive UTC text, which still sorts and compares correctly.
- Times are set by Python (``utcnow()``), not by the database clock, so tests can pass
  ``now=`` and a farm of machines never mixes database time with worker time.
- Table names are plural: ``order`` is an SQL keyword, ``orders`` is not.
"""

from __future__ import annotations

import enum
import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
PREVIEW_PRIORITY = 0    # smaller runs first: a customer waits on the page for previews
PRINT_PRIORITY = 10
DEFAULT_MAX_ATTEMPTS = 3
ORDER_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"   # no 0/O, 1/I: read out on the phone


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_public_id() -> str:
    """An unguessable id for URLs (192 bits): a portrait's pages need no login."""
    return secrets.token_urlsafe(24)


def new_order_number() -> str:
    """``IMP-XXXX-XXXX``: short enough to read out, random so numbers reveal no sales count."""
    chars = "".join(secrets.choice(ORDER_ALPHABET) for _ in range(8))
    return f"IMP-{chars[:4]}-{chars[4:]}"


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out, on SQLite (naive text) and PostgreSQL (timestamptz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC time (models.utcnow())")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JobKind(enum.StrEnum):
    PREVIEW = "preview"
    PRINT = "print"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OrderStatus(enum.StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"   # a hosted checkout is open; nothing renders yet
    PAID = "paid"                           # the provider confirmed it; the print job is queued
    EXPIRED = "expired"                     # the checkout ran out unpaid
    ORDERED = "ordered"                     # pay on invoice: renders at once
    RENDERING = "rendering"
    READY = "ready"
    PRINTED = "printed"
    SHIPPED = "shipped"
    CANCELLED = "cancelled"


class EmailStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


def _str_enum(cls: type[enum.Enum], name: str) -> Enum:
    """A VARCHAR holding the enum's values, checked by the database (no native ENUM type)."""
    return Enum(cls, name=name, native_enum=False, create_constraint=True, length=16,
                values_callable=lambda members: [m.value for m in members], validate_strings=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


class Portrait(Base):
    """A customer's photo: the root of its previews and orders."""

    __tablename__ = "portraits"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(64), unique=True, default=new_public_id)
    email: Mapped[str] = mapped_column(String(320))
    photo_key: Mapped[str] = mapped_column(String(512))
    consent: Mapped[bool] = mapped_column(Boolean, default=False)   # to render and keep the photo
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="portrait", cascade="all, delete-orphan",
                                           passive_deletes=True, foreign_keys="Job.portrait_id")
    orders: Mapped[list[Order]] = relationship(back_populates="portrait")


class Job(Base):
    """One render: a preview in one style, or a print continuing a preview.

    The row is the source of truth in both modes (threads or Celery): status, attempts,
    progress and the storage keys of its outputs. ``params`` holds RenderParams fields
    that override the style's preset; ``parent_job_id`` is the preview a print continues.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "status", "priority", "created_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    portrait_id: Mapped[int] = mapped_column(ForeignKey("portraits.id", ondelete="CASCADE"), index=True)
    parent_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    kind: Mapped[JobKind] = mapped_column(_str_enum(JobKind, "job_kind"))
    style: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=PREVIEW_PRIORITY)   # smaller runs first
    status: Mapped[JobStatus] = mapped_column(_str_enum(JobStatus, "job_status"), default=JobStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=DEFAULT_MAX_ATTEMPTS)
    progress: Mapped[float] = mapped_column(Float, default=0.0)      # 0..1
    iteration: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    result_key: Mapped[str | None] = mapped_column(String(512))
    state_key: Mapped[str | None] = mapped_column(String(512))     # resumable state, for the print
    sketch_key: Mapped[str | None] = mapped_column(String(512))    # a preview's feed-forward sketch
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    portrait: Mapped[Portrait] = relationship(back_populates="jobs", foreign_keys=[portrait_id])
    parent: Mapped[Job | None] = relationship(remote_side=[id], foreign_keys=[parent_job_id])


class Order(Base):
    """A print ordered from one preview, paid (by invoice or a hosted checkout), tracked until shipped.

    The shipping address is structured, as print labs take it; ``shipping_country`` is an
    ISO 3166-1 alpha-2 code. Orders placed before the structure (migration 0003) keep their
    free text in ``shipping_line1`` and have an empty city and country.
    ``payment_ref`` is the provider's checkout id (Stripe: ``cs_…``), ``payment_intent`` what a
    refund names (``pi_…``), ``refund_ref`` the refund made when the admin cancelled it.
    """

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(16), unique=True, default=new_order_number)
    portrait_id: Mapped[int] = mapped_column(ForeignKey("portraits.id", ondelete="RESTRICT"), index=True)
    preview_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    print_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    print_size: Mapped[str] = mapped_column(String(16))
    price_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    shipping_name: Mapped[str] = mapped_column(String(200))
    shipping_line1: Mapped[str] = mapped_column(Text)
    shipping_line2: Mapped[str] = mapped_column(String(200), default="")
    shipping_city: Mapped[str] = mapped_column(String(100), default="")
    shipping_region: Mapped[str] = mapped_column(String(100), default="")
    shipping_postal_code: Mapped[str] = mapped_column(String(20), default="")
    shipping_country: Mapped[str] = mapped_column(String(2), default="")
    shipping_phone: Mapped[str] = mapped_column(String(40), default="")
    status: Mapped[OrderStatus] = mapped_column(_str_enum(OrderStatus, "order_status"),
                                                default=OrderStatus.ORDERED)
    payment_method: Mapped[str] = mapped_column(String(16), default="invoice")
    payment_ref: Mapped[str | None] = mapped_column(String(255), index=True)
    payment_url: Mapped[str | None] = mapped_column(Text)
    payment_intent: Mapped[str | None] = mapped_column(String(255))
    refund_ref: Mapped[str | None] = mapped_column(String(255))
    carrier: Mapped[str | None] = mapped_column(String(64))
    tracking_number: Mapped[str | None] = mapped_column(String(128))
    tracking_url: Mapped[str | None] = mapped_column(Text)
    # a print lab's side (IMPASTO_FULFILMENT_PROVIDER=http): its order id, and the tries to get it there
    print_file_key: Mapped[str | None] = mapped_column(String(512))    # the print file in the lab's format
    fulfilment_ref: Mapped[str | None] = mapped_column(String(64))
    fulfilment_attempts: Mapped[int] = mapped_column(Integer, default=0)
    fulfilment_error: Mapped[str | None] = mapped_column(Text)
    fulfilment_next_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    paid_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    ready_at: Mapped[datetime | None]
    printed_at: Mapped[datetime | None]
    shipped_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    refunded_at: Mapped[datetime | None]

    portrait: Mapped[Portrait] = relationship(back_populates="orders")
    preview_job: Mapped[Job | None] = relationship(foreign_keys=[preview_job_id])
    print_job: Mapped[Job | None] = relationship(foreign_keys=[print_job_id])


class PaymentEvent(Base):
    """A payment provider's webhook event, stored when handled: each event id is handled once.

    Providers deliver at least once (Stripe retries for days); the row is inserted in the
    same transaction as the change the event makes, so a crash loses neither.
    """

    __tablename__ = "payment_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(100))
    order_number: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Email(Base):
    """The mail outbox: a row per message, sent by a worker, never inside a request.

    ``dedupe_key`` (``previews_ready:<portrait id>``, ``print_ready:<order number>``) is
    unique, so queueing the same news twice stores it once and it is sent once.
    """

    __tablename__ = "emails"
    __table_args__ = (Index("ix_emails_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    to: Mapped[str] = mapped_column(String(320))
    template: Mapped[str] = mapped_column(String(64))
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[EmailStatus] = mapped_column(_str_enum(EmailStatus, "email_status"),
                                                default=EmailStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class Worker(Base):
    """A render worker (a thread in embedded mode, a Celery worker on a farm machine)."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    host: Mapped[str] = mapped_column(String(200))
    device: Mapped[str] = mapped_column(String(64))
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    queues: Mapped[list[str]] = mapped_column(default=list)
    current_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    last_heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
