"""The job table as a queue: enqueue, claim, progress, finish, fail, cancel, requeue.

The table is the source of truth in both modes (embedded threads, Celery farm), so every
transition is one conditional UPDATE (compare-and-set on ``status``, and on ``worker``
when a caller fences its writes): correct under concurrency on PostgreSQL and SQLite
alike, and on SQLite each write transaction starts with its write (see ``db``).

Who commits:

- Worker-side steps commit (``claim``, ``heartbeat``, ``report_progress``, ``finish``,
  ``fail``, ``mark_cancelled``, ``release``, ``requeue_stale``, ``deliver_pending``, the
  worker-row helpers): others must see each step at once, and a render must never hold a
  write lock on SQLite while it runs.
- Request-side helpers only flush (``enqueue``, ``cancel``, ``rerun``,
  ``set_order_status``, ``queue_email``): the request commits, so a portrait and its
  preview jobs, or an order, its print job and its new status, appear together or not at all.

Priorities: smaller runs first (previews 0, prints 10), then oldest first.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, aliased

from impasto.errors import JobError, OrderStatusError
from impasto.service.core.models import (
    DEFAULT_MAX_ATTEMPTS,
    PREVIEW_PRIORITY,
    PRINT_PRIORITY,
    Email,
    EmailStatus,
    Job,
    JobKind,
    JobStatus,
    Order,
    OrderStatus,
    Worker,
    utcnow,
)

log = logging.getLogger(__name__)

LEASE_SECONDS = 300            # a running job whose lease is not renewed for this long is requeued
PROGRESS_SECONDS = 1.0         # at most one progress write per job per second
EMAIL_RETRY_SECONDS = 60       # first retry after a minute, doubling ...
EMAIL_RETRY_MAX_SECONDS = 6 * 3600   # ... up to six hours
EMAIL_MAX_ATTEMPTS = 10        # about 14 hours of SMTP outage before an email is marked failed
EMAIL_SEND_LEASE_SECONDS = 300  # a message being sent is not picked by another sender meanwhile
MAX_ERROR_CHARS = 4000
FINISHED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)

ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.ORDERED: frozenset({OrderStatus.RENDERING, OrderStatus.CANCELLED}),
    OrderStatus.RENDERING: frozenset({OrderStatus.READY, OrderStatus.CANCELLED}),
    # READY → RENDERING: the print is re-rendered (a re-run) before it goes to the printer
    OrderStatus.READY: frozenset({OrderStatus.PRINTED, OrderStatus.RENDERING, OrderStatus.CANCELLED}),
    OrderStatus.PRINTED: frozenset({OrderStatus.SHIPPED}),
    OrderStatus.SHIPPED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}
_ORDER_TIMESTAMPS = {OrderStatus.READY: "ready_at", OrderStatus.PRINTED: "printed_at",
                     OrderStatus.SHIPPED: "shipped_at", OrderStatus.CANCELLED: "cancelled_at"}


class Throttle:
    """``due()`` is true at most once per ``interval_seconds`` (and on the first call).

    Progress arrives every optimiser iteration (many per second on a GPU); the job row
    needs one write a second at most, or SQLite's single writer becomes the bottleneck.
    """

    def __init__(self, interval_seconds: float = PROGRESS_SECONDS, *,
                 clock: Callable[[], float] = time.monotonic):
        self.interval_seconds = interval_seconds
        self.clock = clock
        self._last: float | None = None

    def due(self, *, force: bool = False) -> bool:
        now = self.clock()
        if force or self._last is None or now - self._last >= self.interval_seconds:
            self._last = now
            return True
        return False


# --- jobs: the request side --------------------------------------------------------------

def enqueue(*, session: Session, portrait_id: int, kind: JobKind | str, style: str,
            params: dict[str, Any] | None = None, priority: int | None = None,
            parent_job_id: int | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Job:
    """Add a queued job (flushed, so it has an id); notify the dispatcher after commit.

    ``params`` are RenderParams fields overriding the style's preset; unknown names fail
    here (ParamError) rather than in a worker minutes later.
    """
    kind = JobKind(kind)
    if priority is None:
        priority = PREVIEW_PRIORITY if kind is JobKind.PREVIEW else PRINT_PRIORITY
    job = Job(portrait_id=portrait_id, kind=kind, style=style, params=_checked_params(params or {}),
              priority=priority, parent_job_id=parent_job_id, max_attempts=max_attempts)
    session.add(job)
    session.flush()
    log.info("job %s queued: %s of portrait %s in style %s", job.id, kind.value, portrait_id, style)
    return job


def _checked_params(params: dict[str, Any]) -> dict[str, Any]:
    from impasto.engine.params import RenderParams  # here, not at import: it pulls in torch
    from impasto.errors import ParamError

    unknown = sorted(set(params) - set(RenderParams.model_fields))
    if unknown:
        raise ParamError(f"unknown render option(s): {', '.join(unknown)}")
    try:
        return json.loads(json.dumps(params))
    except (TypeError, ValueError) as exc:
        raise ParamError(f"render options must be JSON values ({exc})") from None


def cancel(*, session: Session, job_id: int, now: datetime | None = None) -> Job:
    """Cancel: a queued job at once; a running one by a flag its render loop checks.

    A finished job is left as it is (cancelling is idempotent).
    """
    now = now or utcnow()
    stopped = _cas(session, job_id, JobStatus.QUEUED, status=JobStatus.CANCELLED, finished_at=now)
    if not stopped:
        _cas(session, job_id, JobStatus.RUNNING, cancel_requested=True)
    return _get(session, job_id)


def rerun(*, session: Session, job_id: int) -> Job:
    """Queue a finished job again, with a fresh attempt count; its outputs are overwritten.

    A queued job is left queued; a running one is a JobError (cancel it first).
    """
    ok = _cas(session, job_id, FINISHED, status=JobStatus.QUEUED, attempts=0, progress=0.0, iteration=0,
              total=0, error=None, worker=None, lease_expires_at=None, cancel_requested=False,
              started_at=None, finished_at=None)
    job = _get(session, job_id)
    if not ok and job.status is JobStatus.RUNNING:
        raise JobError(f"job {job_id} is running: cancel it before re-running it")
    return job


# --- jobs: the worker side ---------------------------------------------------------------

def claim(*, session: Session, worker: str, kinds: Iterable[JobKind | str] = tuple(JobKind),
          job_id: int | None = None, lease_seconds: float = LEASE_SECONDS,
          now: datetime | None = None) -> Job | None:
    """Take the next queued job (smallest priority, then oldest) for ``worker``; commits.

    One statement: ``UPDATE … WHERE id = (SELECT … LIMIT 1 FOR UPDATE SKIP LOCKED) AND
    status = 'queued'``. On PostgreSQL, SKIP LOCKED lets concurrent claimers take
    different rows without waiting; SQLite has no FOR UPDATE but runs one writer at a
    time, and the ``status = 'queued'`` condition makes the UPDATE a compare-and-set.
    ``job_id`` claims that job only (a broker delivered it by id): None unless it is queued.
    """
    now = now or utcnow()
    kinds = [JobKind(kind) for kind in kinds]
    queued = aliased(Job)
    wanted = [queued.status == JobStatus.QUEUED, queued.kind.in_(kinds)]
    if job_id is not None:
        wanted.append(queued.id == job_id)
    candidate = (select(queued.id).where(*wanted)
                 .order_by(queued.priority, queued.created_at, queued.id).limit(1)
                 .with_for_update(skip_locked=True).scalar_subquery())
    statement = (update(Job).where(Job.id == candidate, Job.status == JobStatus.QUEUED)
                 .values(status=JobStatus.RUNNING, attempts=Job.attempts + 1, worker=worker,
                         started_at=now, heartbeat_at=now, finished_at=None,
                         lease_expires_at=now + timedelta(seconds=lease_seconds),
                         progress=0.0, iteration=0, total=0)
                 .returning(Job.id).execution_options(synchronize_session=False))
    claimed = session.execute(statement).scalar_one_or_none()
    session.commit()
    if claimed is None:
        return None
    job = session.get(Job, claimed, populate_existing=True)
    log.info("job %s claimed by %s (attempt %s of %s)", claimed, worker, job.attempts, job.max_attempts)
    return job


def heartbeat(*, session: Session, job_id: int, worker: str | None = None,
              lease_seconds: float = LEASE_SECONDS, now: datetime | None = None) -> bool:
    """Renew a running job's lease (and its worker's heartbeat); commits.

    Returns True when the render should stop: cancel requested, or the job is no longer
    this worker's to run (it was requeued after a lost lease and claimed elsewhere).
    """
    now = now or utcnow()
    flag = _renew(session, job_id, worker, now, lease_seconds)
    if worker is not None:
        session.execute(update(Worker).where(Worker.name == worker).values(last_heartbeat_at=now))
    session.commit()
    return flag is None or flag


def report_progress(*, session: Session, job_id: int, progress: float, iteration: int, total: int,
                    worker: str | None = None, lease_seconds: float = LEASE_SECONDS,
                    now: datetime | None = None) -> bool:
    """Record progress (which also renews the lease); commits. Callers throttle (``Throttle``).

    Returns True when the render should stop, as ``heartbeat`` does.
    """
    now = now or utcnow()
    flag = _renew(session, job_id, worker, now, lease_seconds,
                  progress=min(max(float(progress), 0.0), 1.0), iteration=iteration, total=total)
    session.commit()
    return flag is None or flag


def _renew(session: Session, job_id: int, worker: str | None, now: datetime, lease_seconds: float,
           **values) -> bool | None:
    """Renew the lease of a running job; its cancel flag, or None when it is not ours/running."""
    statement = (update(Job).where(*_running(job_id, worker))
                 .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds), **values)
                 .returning(Job.cancel_requested).execution_options(synchronize_session=False))
    return session.execute(statement).scalar_one_or_none()


def finish(*, session: Session, job_id: int, result_key: str, state_key: str | None = None,
           worker: str | None = None, now: datetime | None = None) -> bool:
    """Mark a running job done with its outputs; commits. False when it was not running (ours)."""
    now = now or utcnow()
    ok = _set(session, _running(job_id, worker), status=JobStatus.DONE, result_key=result_key,
              state_key=state_key, progress=1.0, iteration=Job.total, error=None, finished_at=now,
              lease_expires_at=None, cancel_requested=False)
    session.commit()
    if ok:
        log.info("job %s done: %s", job_id, result_key)
    return ok


def fail(*, session: Session, job_id: int, error: str, retry: bool = True, worker: str | None = None,
         now: datetime | None = None) -> JobStatus | None:
    """A running job failed: requeue it while attempts < max_attempts, else failed; commits.

    ``retry=False`` fails it for good (a bad photo fails the same way every time). A job
    whose cancel was requested ends cancelled. Returns the new status, None if it was not
    running (ours).
    """
    now = now or utcnow()
    status = _end_attempt(session, _running(job_id, worker), error=error[:MAX_ERROR_CHARS], retry=retry,
                          now=now)
    session.commit()
    if status is not None:
        log.log(logging.INFO if status is JobStatus.QUEUED else logging.WARNING,
                "job %s %s after an error: %s", job_id, status.value, error)
    return status


def _end_attempt(session: Session, where: list, *, error: str, retry: bool,
                 now: datetime) -> JobStatus | None:
    """Cancelled if asked; else queued again while attempts remain; else failed."""
    if _set(session, [*where, Job.cancel_requested.is_(True)], status=JobStatus.CANCELLED, error=error,
            finished_at=now, lease_expires_at=None):
        return JobStatus.CANCELLED
    if retry and _set(session, [*where, Job.attempts < Job.max_attempts], status=JobStatus.QUEUED,
                      error=error, worker=None, lease_expires_at=None):
        return JobStatus.QUEUED
    if _set(session, where, status=JobStatus.FAILED, error=error, finished_at=now, lease_expires_at=None):
        return JobStatus.FAILED
    return None


def mark_cancelled(*, session: Session, job_id: int, worker: str | None = None,
                   now: datetime | None = None) -> bool:
    """The render loop saw the cancel flag and stopped: the job ends cancelled; commits."""
    ok = _set(session, _running(job_id, worker), status=JobStatus.CANCELLED, finished_at=now or utcnow(),
              lease_expires_at=None)
    session.commit()
    return ok


def release(*, session: Session, job_id: int, worker: str | None = None) -> bool:
    """Give a running job back to the queue without counting the attempt (a clean shutdown)."""
    ok = _set(session, _running(job_id, worker), status=JobStatus.QUEUED, attempts=Job.attempts - 1,
              worker=None, lease_expires_at=None)
    session.commit()
    return ok


def requeue_stale(*, session: Session, now: datetime | None = None, all_running: bool = False) -> int:
    """Requeue running jobs whose lease expired (a worker died); commits. Returns how many.

    ``all_running=True`` is for an embedded start-up: no thread of this process runs yet,
    so any ``running`` row was left by a crash. The lost attempt counts, so a job that
    kills its worker every time (out of memory) ends failed instead of looping.
    """
    now = now or utcnow()
    stale = [Job.status == JobStatus.RUNNING]
    if not all_running:
        stale.append((Job.lease_expires_at < now) | Job.lease_expires_at.is_(None))
    ids = session.scalars(select(Job.id).where(*stale)).all()
    for job_id in ids:
        status = _end_attempt(session, [Job.id == job_id, *stale], error="worker lost (no heartbeat)",
                              retry=True, now=now)
        log.warning("job %s: its worker was lost; now %s", job_id, status.value if status else "changed")
    session.commit()
    return len(ids)


def _running(job_id: int, worker: str | None) -> list:
    where = [Job.id == job_id, Job.status == JobStatus.RUNNING]
    if worker is not None:
        where.append(Job.worker == worker)
    return where


def _set(session: Session, where: list, **values) -> bool:
    """One conditional UPDATE on jobs; whether it matched a row."""
    result = session.execute(update(Job).where(*where).values(**values)
                             .execution_options(synchronize_session=False))
    return result.rowcount > 0


def _cas(session: Session, job_id: int, expected: JobStatus | Iterable[JobStatus], **values) -> bool:
    statuses = [expected] if isinstance(expected, JobStatus) else list(expected)
    return _set(session, [Job.id == job_id, Job.status.in_(statuses)], **values)


def _get(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise JobError(f"no job {job_id}")
    return job


# --- orders ------------------------------------------------------------------------------

def set_order_status(*, session: Session, order_id: int, status: OrderStatus | str,
                     now: datetime | None = None) -> Order:
    """Move an order along ordered → rendering → ready → printed → shipped (or cancelled).

    Setting the status it already has is a no-op (a re-run print finishing twice); any
    other step outside ``ORDER_TRANSITIONS`` is an OrderStatusError. Flushes; the caller commits.
    """
    status, now = OrderStatus(status), now or utcnow()
    order = session.get(Order, order_id, populate_existing=True)
    if order is None:
        raise OrderStatusError(f"no order {order_id}")
    current = order.status
    if status is current:
        return order
    if status not in ORDER_TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in ORDER_TRANSITIONS[current])) or "none (final)"
        raise OrderStatusError(f"order {order.number}: cannot go from {current.value} to {status.value} "
                               f"(allowed from {current.value}: {allowed})")
    values = {"status": status, "updated_at": now}
    if status in _ORDER_TIMESTAMPS:
        values[_ORDER_TIMESTAMPS[status]] = now
    result = session.execute(update(Order).where(Order.id == order_id, Order.status == current)
                             .values(**values).execution_options(synchronize_session=False))
    if result.rowcount == 0:
        raise OrderStatusError(f"order {order.number} changed status meanwhile; try again")
    session.refresh(order)
    log.info("order %s: %s → %s", order.number, current.value, status.value)
    return order


# --- the mail outbox ---------------------------------------------------------------------

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


# --- workers -----------------------------------------------------------------------------

def register_worker(*, session: Session, name: str, host: str, device: str, queues: Iterable[str],
                    memory_bytes: int | None = None, now: datetime | None = None) -> Worker:
    """Create or refresh the row of a worker that is starting; commits."""
    now = now or utcnow()
    worker = session.scalars(select(Worker).where(Worker.name == name)).one_or_none()
    if worker is None:
        worker = Worker(name=name)
        session.add(worker)
    worker.host, worker.device, worker.memory_bytes, worker.queues = host, device, memory_bytes, list(queues)
    worker.current_job_id, worker.jobs_done, worker.started_at, worker.last_heartbeat_at = None, 0, now, now
    session.commit()
    return worker


def worker_seen(*, session: Session, name: str, current_job_id: int | None, finished_job: bool = False,
                now: datetime | None = None) -> None:
    """A worker's heartbeat: what it runs now, and one more job done when it just finished one."""
    values: dict[str, Any] = {"last_heartbeat_at": now or utcnow(), "current_job_id": current_job_id}
    if finished_job:
        values["jobs_done"] = Worker.jobs_done + 1
    session.execute(update(Worker).where(Worker.name == name).values(**values))
    session.commit()


def remove_worker(*, session: Session, name: str) -> None:
    session.execute(delete(Worker).where(Worker.name == name))
    session.commit()
