"""The farm's side of the shop: ``CeleryDispatcher``, the sweeper, and ``make_dispatcher``.

The shop enqueues jobs in the table and calls ``notify()``; the dispatcher's thread then
publishes ``render_job(id)`` for each new queued job to the queue of its kind. Workers
(``impasto worker``, one per device) pull from the queues they can render.

The table stays the truth, so a lost message never loses a job. The sweeper
(``Sweeper.sweep``, every ``sweep_seconds`` in the shop, and now and then in every worker):

1. requeues running jobs whose lease expired (their worker died: SIGKILL, power, OOM),
   counting the attempt, so a job that kills every worker ends ``failed`` at the cap;
2. for each queue, compares the queued jobs in the table with the messages waiting in
   the broker, and publishes the missing ones (a message lost with a Redis restart, a
   publish that failed while the broker was down, a re-run from the admin, a job the
   sweeper just requeued). A job published twice is harmless: the second delivery finds
   it no longer queued and does nothing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import func, select

from impasto.service.core import jobs
from impasto.service.core.dispatch import (
    WORKER_STALE_SECONDS,
    Dispatcher,
    WorkerInfo,
    list_workers,
    local_dispatcher,
)
from impasto.service.core.models import Job, JobKind, JobStatus, utcnow
from impasto.service.farm.celery_app import (
    VISIBILITY_TIMEOUT_SECONDS,
    make_celery,
    send_job,
    waiting_messages,
)

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.orm import Session, sessionmaker

    from impasto.catalog import Catalog
    from impasto.config import Settings

log = logging.getLogger(__name__)

SWEEP_SECONDS = 5.0             # the shop's sweeper (a few cheap queries); workers sweep less often
RETRY_SECONDS = 2.0             # after a failed publish (broker down), try again this soon
RESEND_GRACE_SECONDS = 60.0     # a job this process published this lately is not re-sent yet


def make_dispatcher(settings: Settings, *, session_factory: sessionmaker[Session], storage,
                    catalog: Catalog, snapshot_seconds: float | None = None, **options: Any) -> Dispatcher:
    """The shop's dispatcher: render threads (no broker) or the farm (``settings.broker_url``).

    ``impasto serve --broker URL`` sets ``broker_url``. Without one, ``settings.workers``
    threads run ``render_job.run_job`` (with ``snapshot_seconds`` for the live tiles; farm
    workers store their own snapshots). ``options`` go to the dispatcher's constructor.
    """
    if settings.broker_url:
        return CeleryDispatcher(session_factory=session_factory, broker_url=settings.broker_url,
                                visibility_timeout_seconds=settings.broker_visibility_timeout_seconds,
                                **options)
    return local_dispatcher(settings, session_factory=session_factory, storage=storage, catalog=catalog,
                            snapshot_seconds=snapshot_seconds, **options)


class CeleryDispatcher:
    """Publishes queued jobs to the farm's broker; renders nothing itself.

    ``notify()`` only wakes the dispatcher's thread (a request never waits on the broker);
    the thread publishes jobs queued since its last look (ids above a high-water mark)
    and runs the sweeper every ``sweep_seconds``. ``start()`` sweeps once first, so jobs
    queued while no shop was running reach the farm.
    """

    def __init__(self, *, session_factory: sessionmaker[Session], broker_url: str | None = None,
                 app: Celery | None = None, sweep_seconds: float = SWEEP_SECONDS,
                 visibility_timeout_seconds: int = VISIBILITY_TIMEOUT_SECONDS,
                 worker_stale_seconds: float = WORKER_STALE_SECONDS):
        if app is None and not broker_url:
            raise ValueError("CeleryDispatcher needs broker_url or app")
        self.session_factory = session_factory
        self.app = app or make_celery(broker_url, visibility_timeout_seconds=visibility_timeout_seconds)
        self.sweep_seconds, self.worker_stale_seconds = sweep_seconds, worker_stale_seconds
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._high_water: int | None = None
        self.sweeper = Sweeper(self.app, session_factory)

    # --- the protocol --------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("dispatcher already started")
        self.stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="impasto-dispatch", daemon=True)
        self._thread.start()
        log.info("farm dispatcher started on %s", _shown(self.app))

    def stop(self, *, timeout_seconds: float | None = None) -> None:
        self.stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
            self._thread = None
        self.app.close()

    def notify(self) -> None:
        self._wake.set()

    def workers(self) -> list[WorkerInfo]:
        with self.session_factory() as session:
            return list_workers(session=session, stale_seconds=self.worker_stale_seconds)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- the thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        next_sweep = 0.0
        while not self.stopping.is_set():
            delay = max(0.0, next_sweep - time.monotonic())
            self._wake.wait(min(delay, self.sweep_seconds))
            self._wake.clear()
            if self.stopping.is_set():
                break
            try:
                if time.monotonic() >= next_sweep:
                    self.sweep()
                    next_sweep = time.monotonic() + self.sweep_seconds
                self.send_new()
            except Exception:
                log.exception("farm dispatcher: publishing failed; retrying in %s s", RETRY_SECONDS)
                next_sweep = min(next_sweep, time.monotonic() + RETRY_SECONDS)

    def send_new(self) -> int:
        """Publish every queued job above the high-water mark, in id order; returns how many.

        One query for every job above the mark: those not queued any more (claimed after a
        sweeper published them, cancelled) need nothing. A job committed out of id order,
        below a newer one already seen, is left to the sweeper.
        """
        if self._high_water is None:
            return 0
        with self.session_factory() as session:
            rows = session.execute(select(Job.id, Job.kind, Job.priority, Job.status)
                                   .where(Job.id > self._high_water).order_by(Job.id)).all()
        sent = 0
        for job_id, kind, priority, status in rows:
            if status is JobStatus.QUEUED:
                send_job(self.app, job_id=job_id, kind=kind.value, priority=priority)
                self.sweeper.published(job_id)
                sent += 1
            self._high_water = job_id
        return sent

    def sweep(self) -> dict[str, int]:
        """The sweeper, once; the first sweep also sets the high-water mark (it covers what is below)."""
        with self.session_factory() as session:
            newest = session.scalar(select(func.max(Job.id))) or 0
        counts = self.sweeper.sweep()
        if self._high_water is None:
            self._high_water = newest
        return counts


def _shown(app: Celery) -> str:
    from impasto.service.farm.celery_app import redact

    return redact(str(app.conf.broker_url))


# --- the sweeper -------------------------------------------------------------------------

class Sweeper:
    """Requeues jobs whose lease expired, then publishes queued jobs that have no message.

    ``sweep()`` returns ``{"requeued": n, "preview": published, "print": published}``.

    - Jobs it requeues are published at once: their message was taken by the worker
      that died (or by a worker that found them still running and let it go).
    - Others: for each queue, the queued jobs in the table are counted against the
      messages waiting in the broker. A worker that has just received a message and not
      yet claimed its job makes the count one short for an instant, so a shortfall is
      acted on only when the previous sweep saw it too, and jobs this process published
      in the last minute (``published()``) are not re-sent yet: a message lost that soon
      after its publish (a broker that lost persisted data) is re-sent a minute later.
    """

    def __init__(self, app: Celery, session_factory: sessionmaker[Session]):
        self.app, self.session_factory = app, session_factory
        self.sent: dict[int, float] = {}           # job id → monotonic time of our last publish
        self._short: dict[JobKind, int] = {}      # each queue's shortfall at the previous sweep

    def published(self, job_id: int) -> None:
        self.sent[job_id] = time.monotonic()

    def sweep(self, *, now=None) -> dict[str, int]:
        requeued = self._requeue_stale(now or utcnow())
        for job_id, kind, priority in requeued:
            send_job(self.app, job_id=job_id, kind=kind.value, priority=priority)
            self.published(job_id)
        counts = {"requeued": len(requeued)}
        for kind in JobKind:
            counts[kind.value] = self._publish_missing(kind)
        cutoff = time.monotonic() - RESEND_GRACE_SECONDS
        self.sent = {job_id: at for job_id, at in self.sent.items() if at > cutoff}
        if any(counts.values()):
            log.info("sweeper: %s", ", ".join(f"{key} {value}" for key, value in counts.items()))
        return counts

    def _requeue_stale(self, now) -> list:
        with self.session_factory() as session:
            stale = session.scalars(select(Job.id).where(
                Job.status == JobStatus.RUNNING,
                (Job.lease_expires_at < now) | Job.lease_expires_at.is_(None))).all()
            session.commit()
            if not stale:
                return []
            jobs.requeue_stale(session=session, now=now)
            return session.execute(select(Job.id, Job.kind, Job.priority).where(
                Job.id.in_(stale), Job.status == JobStatus.QUEUED).order_by(Job.id)).all()

    def _publish_missing(self, kind: JobKind) -> int:
        with self.session_factory() as session:
            queued = session.execute(select(Job.id, Job.priority).where(
                Job.status == JobStatus.QUEUED, Job.kind == kind)
                .order_by(Job.priority, Job.created_at, Job.id)).all()
        short = len(queued) - waiting_messages(self.app, kind.value) if queued else 0
        confirmed = min(short, self._short.get(kind, 0))
        self._short[kind] = max(short, 0)
        if confirmed <= 0:
            return 0
        now = time.monotonic()
        candidates = [row for row in queued if now - self.sent.get(row[0], -math.inf) >= RESEND_GRACE_SECONDS]
        confirmed = min(confirmed, len(candidates))
        for job_id, priority in candidates[:confirmed]:
            send_job(self.app, job_id=job_id, kind=kind.value, priority=priority)
            self.published(job_id)
        if not confirmed:
            return 0
        log.warning("sweeper: %d %s job(s) had no message in the broker; published them again",
                    confirmed, kind.value)
        self._short[kind] = 0
        return confirmed
