"""The service's Prometheus metrics: what this process counted, and what the tables hold.

Two kinds, kept apart on purpose:

- **Counted in the process** (``REGISTRY``): render seconds (``impasto_render_seconds``, a
  histogram by ``kind`` and ``size``, observed by ``render_job.run_job`` wherever it runs — a
  shop thread in embedded mode, a farm worker with a broker), and the shop's own request and
  upload counters (``service/shop/metrics.py``). Each process has its own; Prometheus scrapes
  each (the shop's ``/metrics``, a worker's ``--metrics-port``) and sums them.
- **Read from the tables at scrape time** (``TableCollector``): jobs by queue and status,
  the workers and the age of their last heartbeat, the mail outbox by status. The job table
  is the farm's single record, so one process — the shop — serves these for the whole
  farm; a worker serving them too would only duplicate every series.

Nothing is built at import but the metric objects themselves (prometheus-client is small).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# A preview takes seconds on a GPU and minutes on a CPU; a large print up to hours.
RENDER_BUCKETS_SECONDS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
RENDER_SECONDS = Histogram("impasto_render_seconds", "Seconds a finished render took, by job kind and size",
                           ["kind", "size"], buckets=RENDER_BUCKETS_SECONDS, registry=REGISTRY)


def observe_render(*, kind: str, size: str, seconds: float) -> None:
    RENDER_SECONDS.labels(kind=kind, size=size).observe(seconds)


class TableCollector:
    """Gauges read from the job, worker and email tables on every scrape (a few ``GROUP BY``s).

    A database that cannot be read gives ``impasto_database_up 0`` and no table gauges,
    rather than a failed scrape: the outage is then a series an alert can watch.
    """

    def __init__(self, sessions: sessionmaker[Session], *, clock: Callable[[], datetime] | None = None) -> None:
        self.sessions, self.clock = sessions, clock

    def describe(self) -> list[Metric]:
        return []     # unchecked: the families depend on the database's answer

    def collect(self) -> Iterator[Metric]:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.sessions() as session:
                families = list(self._families(session))
        except (SQLAlchemyError, OSError):
            log.warning("metrics: the tables could not be read", exc_info=True)
            families = []
        up = GaugeMetricFamily("impasto_database_up", "1 when the metrics could read the database")
        up.add_metric([], 1.0 if families else 0.0)
        yield up
        yield from families

    def _families(self, session: Session) -> Iterator[Metric]:
        from sqlalchemy import func, select

        from impasto.service.core.models import Email, EmailStatus, Job, JobKind, JobStatus, Worker, utcnow

        jobs = GaugeMetricFamily("impasto_jobs", "Jobs in the job table, by queue (job kind) and status",
                                 labels=["queue", "status"])
        counts = {(kind, status): count for kind, status, count in session.execute(
            select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status))}
        for kind in JobKind:
            for status in JobStatus:
                jobs.add_metric([kind.value, status.value], float(counts.get((kind, status), 0)))
        yield jobs
        now = (self.clock or utcnow)()
        beats = session.execute(select(Worker.name, Worker.last_heartbeat_at)).all()
        workers = GaugeMetricFamily("impasto_workers", "Render workers registered in the worker table")
        workers.add_metric([], float(len(beats)))
        yield workers
        age = GaugeMetricFamily("impasto_worker_heartbeat_age_seconds",
                                "Seconds since each worker's last heartbeat", labels=["worker"])
        for name, beat in beats:
            age.add_metric([name], max(0.0, (now - beat).total_seconds()))
        yield age
        outbox = GaugeMetricFamily("impasto_mail_outbox_emails",
                                   "Emails in the outbox by status (pending: the queue's depth)", labels=["status"])
        by_status: dict[Any, int] = dict(
            session.execute(select(Email.status, func.count()).group_by(Email.status)).all())
        for status in EmailStatus:
            outbox.add_metric([status.value], float(by_status.get(status, 0)))
        yield outbox


class Combined:
    """Several collectors read as one registry (``generate_latest`` takes anything with ``collect``)."""

    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()
