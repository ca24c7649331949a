"""The job table as a queue: enqueue, claim, progress, finish, fail, cancel, requeue.

Its neighbours: ``orders`` (an order's status machine), ``outbox`` (the mail queue) and
``workers`` (the rows the admin lists).

The table is the source of truth in both modes (embedded threads, Celery farm), so every
transition is one conditional UPDATE (compare-and-set on ``status``, and on ``worker``
when a caller fences its writes): correct under concurrency on PostgreSQL and SQLite
alike, and on SQLite each write transaction starts with its write (see ``db``).

Who commits:

- Worker-side steps commit (``claim``, ``heartbeat``, ``report_progress``, ``finish``,
  ``fail``, ``mark_cancelled``, ``release``, ``requeue_stale``, ``outbox.deliver_pending``,
  the ``workers`` helpers): others must see each step at once, and a render must never hold a
  write lock on SQLite while it runs.
- Request-side helpers only flush (``enqueue``, ``cancel``, ``rerun``,
  ``orders.set_order_status``, ``outbox.queue_email``): the request commits, so a portrait and its
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

from sqlalchemy import select, update
from sqlalchemy.orm import Session, aliased

from impasto.errors import JobError
from impasto.service.core.models import (
    DEFAULT_MAX_ATTEMPTS,
    PREVIEW_PRIORITY,
    PRINT_PRIORITY,
    Job,
    JobKind,
    JobStatus,
    Worker,
    utcnow,
)

log = logging.getLogger(__name__)

LEASE_SECONDS = 300            # a running job whose lease is not renewed for this long is requeued
PROGRESS_SECONDS = 1.0         # at most one progress write per job per second
MAX_ERROR_CHARS = 4000
FINISHED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)



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
