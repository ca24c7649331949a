"""How long a customer's photo is kept, and deleting it: on schedule or when the customer asks.

A portrait is *due* ``Settings.retention_days`` (default 30) after the last thing that needed
it: its upload when it was never ordered; the last of its orders to end otherwise (shipped,
or cancelled). A portrait with an order still under way (ordered, rendering, ready,
printed) is never due. ``purge_expired`` deletes what is due; the shop runs it every
``SWEEP_SECONDS`` (``RetentionSweeper``), and a customer's "delete my photo now" calls
``delete_portrait`` at once, refused (``PortraitInUse``) only while a print is under way.

Deleting a portrait removes, in this order, every file (the photo; each job's folder
``jobs/<id>/``: result, state, snapshot, sketch) and then, in one transaction, every row
(its emails in the outbox, its orders, its jobs, the portrait). Files first: a crash in
between leaves rows that the next sweep finds and deletes again (each step is idempotent),
never rows gone with files left behind that nothing points at any more. A render still
running for a deleted job finds its row gone, stops, and drops what it stored
(``render_job``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, or_, select, update

from impasto.errors import PortraitInUse
from impasto.service.core.models import Email, Job, JobStatus, Order, OrderStatus, Portrait, utcnow
from impasto.service.core.periodic import Periodic

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 30
SWEEP_SECONDS = 3600.0               # how often the shop looks for what is due
BATCH = 100                          # portraits deleted per round at most
ENDED = (OrderStatus.SHIPPED, OrderStatus.CANCELLED)


def due_portraits(*, session: Session, days: int, now: datetime | None = None,
                  limit: int = BATCH) -> list[int]:
    """Ids of the portraits whose retention has run out at ``now``, oldest first."""
    cutoff = (now or utcnow()) - timedelta(days=days)
    open_orders = select(Order.id).where(Order.portrait_id == Portrait.id, Order.status.not_in(ENDED))
    last_end = (select(func.max(func.coalesce(Order.shipped_at, Order.cancelled_at, Order.updated_at)))
                .where(Order.portrait_id == Portrait.id).scalar_subquery())
    any_order = select(Order.id).where(Order.portrait_id == Portrait.id)
    statement = (select(Portrait.id)
                 .where(~open_orders.exists(), Portrait.created_at < cutoff,
                        or_(~any_order.exists(), last_end < cutoff))
                 .order_by(Portrait.created_at).limit(limit))
    return list(session.scalars(statement))


def delete_portrait(*, session: Session, storage, portrait_id: int, force: bool = False) -> bool:
    """Delete the portrait's files, then its rows (commits); False when it was gone already.

    ``PortraitInUse`` while one of its orders is under way, unless ``force``.
    """
    portrait = session.get(Portrait, portrait_id)
    if portrait is None:
        return False
    orders = list(session.scalars(select(Order).where(Order.portrait_id == portrait_id)))
    if not force and any(order.status not in ENDED for order in orders):
        raise PortraitInUse("Your print is still being made. We delete your photo "
                            "and everything painted from it once it has shipped.")
    job_ids = list(session.scalars(select(Job.id).where(Job.portrait_id == portrait_id)))
    # running renders stop at their next progress report, finding their row gone
    session.execute(update(Job).where(Job.id.in_(job_ids), Job.status == JobStatus.RUNNING)
                    .values(cancel_requested=True))
    session.commit()
    storage.delete(portrait.photo_key)
    files = 1 + sum(storage.delete_folder(f"jobs/{job_id}") for job_id in job_ids)
    keys = [f"previews_ready:{portrait_id}", *(f"print_ready:{order.number}" for order in orders)]
    session.execute(delete(Email).where(Email.dedupe_key.in_(keys)))
    session.execute(delete(Order).where(Order.portrait_id == portrait_id))
    session.execute(update(Job).where(Job.id.in_(job_ids)).values(parent_job_id=None))
    session.execute(delete(Job).where(Job.portrait_id == portrait_id))
    session.execute(delete(Portrait).where(Portrait.id == portrait_id))
    session.commit()
    log.info("portrait %s deleted: %d job(s), %d order(s), up to %d file(s)", portrait_id, len(job_ids),
             len(orders), files)
    return True


def purge_expired(*, sessions: sessionmaker[Session], storage, days: int, now: datetime | None = None,
                  limit: int = BATCH) -> int:
    """Delete every portrait due at ``now`` (at most ``limit``), each in its own transaction."""
    with sessions() as session:
        due = due_portraits(session=session, days=days, now=now, limit=limit)
    deleted = 0
    for portrait_id in due:
        try:
            with sessions() as session:
                deleted += delete_portrait(session=session, storage=storage, portrait_id=portrait_id)
        except Exception:    # one portrait's storage hiccup must not keep the others
            log.exception("retention: portrait %s not deleted; next round tries again", portrait_id)
    if deleted:
        log.info("retention: %d portrait(s) older than %d day(s) deleted", deleted, days)
    return deleted


class RetentionSweeper(Periodic):
    """A thread that runs ``purge_expired`` every ``interval_seconds`` (the first time at start)."""

    name = "retention"

    def __init__(self, *, sessions: sessionmaker[Session], storage, days: int,
                 interval_seconds: float = SWEEP_SECONDS, clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(interval_seconds=interval_seconds)
        self.sessions, self.storage, self.days, self.clock = sessions, storage, days, clock

    def run_round(self) -> None:
        purge_expired(sessions=self.sessions, storage=self.storage, days=self.days, now=self.clock())
