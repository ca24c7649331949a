"""The mail outbox: messages queued in the database with the change that causes them, sent later.

``queue_email`` (flushes only) puts a message in once per ``dedupe_key``;
``deliver_pending`` (commits each step) sends what is due, with exponential backoff:
an SMTP outage loses nothing, and a crash mid-send means at-least-once delivery.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from impasto.service.core.jobs import MAX_ERROR_CHARS
from impasto.service.core.models import Email, EmailStatus, utcnow

log = logging.getLogger(__name__)

EMAIL_RETRY_SECONDS = 60       # first retry after a minute, doubling ...
EMAIL_RETRY_MAX_SECONDS = 6 * 3600   # ... up to six hours
EMAIL_MAX_ATTEMPTS = 10        # about 14 hours of SMTP outage before an email is marked failed
EMAIL_SEND_LEASE_SECONDS = 300  # a message being sent is not picked by another sender meanwhile


def queue_email(*, session: Session, dedupe_key: str, to: str, template: str,
                context: dict[str, Any] | None = None, now: datetime | None = None) -> bool:
    """Put a message in the outbox once per ``dedupe_key``; True when it was new. Flushes only.

    ``INSERT … ON CONFLICT DO NOTHING`` rather than catching IntegrityError: a failed
    insert would abort the caller's whole transaction on PostgreSQL.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"queue_email on {dialect}")
    statement = (insert(Email).values(dedupe_key=dedupe_key, to=to, template=template,
                                      context=json.loads(json.dumps(context or {})),
                                      next_attempt_at=now or utcnow(), created_at=now or utcnow())
                 .on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(Email.id))
    new = session.execute(statement).scalar_one_or_none() is not None
    if new:
        log.info("email %s queued (%s to %s)", dedupe_key, template, to)
    return new


def deliver_pending(*, session: Session, send: Callable[[Email], None], now: datetime | None = None,
                    limit: int = 100, max_attempts: int = EMAIL_MAX_ATTEMPTS) -> int:
    """Send due outbox rows with ``send(row)``; commits after each step. Returns how many were sent.

    Each row is first claimed (its next attempt pushed past the send) and committed, then
    sent outside any transaction (SMTP may be slow), then marked. ``send`` raising only
    reschedules the row, with exponential backoff, and after ``max_attempts`` marks it
    failed (kept, for the admin): an SMTP outage loses nothing. A crash during a send
    leaves the row to be retried after ``EMAIL_SEND_LEASE_SECONDS``: at least once delivery.
    """
    due_at = now or utcnow()
    due = select(Email.id).where(Email.status == EmailStatus.PENDING, Email.next_attempt_at <= due_at)
    ids = session.scalars(due.order_by(Email.next_attempt_at, Email.id).limit(limit)).all()
    session.commit()
    sent = 0
    for email_id in ids:
        email = _claim_email(session, email_id, now or utcnow())
        if email is None:
            continue
        try:
            send(email)
        except Exception as exc:  # noqa: BLE001 - any failure of a send is retried, never lost
            _email_failed(session, email, exc, now or utcnow(), max_attempts)
        else:
            session.execute(update(Email).where(Email.id == email_id)
                            .values(status=EmailStatus.SENT, sent_at=now or utcnow(), last_error=None))
            session.commit()
            sent += 1
            log.info("email %s sent to %s", email.dedupe_key, email.to)
    return sent


def _claim_email(session: Session, email_id: int, now: datetime) -> Email | None:
    statement = (update(Email).where(Email.id == email_id, Email.status == EmailStatus.PENDING,
                                     Email.next_attempt_at <= now)
                 .values(attempts=Email.attempts + 1,
                         next_attempt_at=now + timedelta(seconds=EMAIL_SEND_LEASE_SECONDS))
                 .returning(Email.id).execution_options(synchronize_session=False))
    claimed = session.execute(statement).scalar_one_or_none()
    session.commit()
    return None if claimed is None else session.get(Email, email_id, populate_existing=True)


def _email_failed(session: Session, email: Email, exc: Exception, now: datetime, max_attempts: int) -> None:
    final = email.attempts >= max_attempts
    delay_seconds = retry_delay_seconds(email.attempts)
    session.execute(update(Email).where(Email.id == email.id).values(
        status=EmailStatus.FAILED if final else EmailStatus.PENDING,
        last_error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS],
        next_attempt_at=now + timedelta(seconds=delay_seconds)))
    session.commit()
    log.warning("email %s to %s: send failed (attempt %s): %s; %s", email.dedupe_key, email.to,
                email.attempts, exc, "giving up" if final else f"retrying in {delay_seconds:.0f} s")


def retry_delay_seconds(attempts: int) -> float:
    """Exponential backoff after ``attempts`` failed sends: 60 s, 120 s, 240 s … up to 6 h."""
    return min(EMAIL_RETRY_SECONDS * 2.0 ** max(attempts - 1, 0), EMAIL_RETRY_MAX_SECONDS)
