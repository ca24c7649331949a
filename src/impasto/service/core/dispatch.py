"""Dispatchers: how queued jobs reach a worker. The job table is the queue in both modes.

``LocalDispatcher`` (embedded, one machine): threads in the app's process claim jobs from
the table (previews before prints) and run them; ``notify()`` after an enqueue wakes an
idle thread at once, and polling catches anything else (a job queued by another process,
a re-run from the admin). The farm's ``CeleryDispatcher`` (issue 6) offers the same
protocol, so the app never knows which one it has.

Stopping: ``stop()`` sets ``stopping``. A ``run_job`` that was given that event as its
``interrupt`` (``render_job.run_job(..., interrupt=stopping)``) hands its job back
to the queue without using up an attempt; one that was not is waited for up to
``timeout_seconds``, and a render cut off by the process exiting is requeued at the next
start (or when its lease expires).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from impasto.service.core import jobs, workers
from impasto.service.core.models import Job, JobKind, Worker, utcnow

if TYPE_CHECKING:
    from impasto.catalog import Catalog
    from impasto.config import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0
WORKER_STALE_SECONDS = 120     # a worker row not seen for this long is shown as not alive
STALE_CHECK_SECONDS = 60       # how often idle threads look for jobs whose lease expired


@dataclass(frozen=True)
class WorkerInfo:
    """A worker's status, as the admin page shows it (a detached copy of its row)."""

    name: str
    host: str
    device: str
    memory_bytes: int | None
    queues: tuple[str, ...]
    current_job_id: int | None
    jobs_done: int
    last_heartbeat_at: datetime
    started_at: datetime
    alive: bool
    progress: float | None = None      # of the current job, 0..1

    @classmethod
    def from_row(cls, row: Worker, *, now: datetime | None = None,
                 stale_seconds: float = WORKER_STALE_SECONDS, progress: float | None = None) -> WorkerInfo:
        now = now or utcnow()
        return cls(row.name, row.host, row.device, row.memory_bytes, tuple(row.queues), row.current_job_id,
                   row.jobs_done, row.last_heartbeat_at, row.started_at,
                   alive=now - row.last_heartbeat_at < timedelta(seconds=stale_seconds), progress=progress)


@runtime_checkable
class Dispatcher(Protocol):
    """What the app needs from whatever runs its jobs."""

    def start(self) -> None:
        """Begin taking jobs (embedded: requeue what a crash left running, start threads)."""

    def stop(self, *, timeout_seconds: float | None = None) -> None:
        """Stop taking jobs and wait for the running ones to end or be handed back."""

    def notify(self) -> None:
        """Jobs were queued (and committed): wake an idle worker now rather than at its next poll."""

    def workers(self) -> list[WorkerInfo]:
        """The workers this dispatcher knows, with what each is doing."""


def list_workers(*, session: Session, stale_seconds: float = WORKER_STALE_SECONDS) -> list[WorkerInfo]:
    """Every worker row (embedded threads and farm machines alike), by name, with its job's progress.

    A worker not heard from for ``stale_seconds`` is not ``alive``: shown as gone.
    """
    now = utcnow()
    rows = session.execute(select(Worker, Job.progress).outerjoin(Job, Job.id == Worker.current_job_id)
                           .order_by(Worker.name)).all()
    return [WorkerInfo.from_row(row, now=now, stale_seconds=stale_seconds, progress=progress)
            for row, progress in rows]


class LocalDispatcher:
    """In-process render threads that take their jobs from the job table.

    ``run_job(job_id)`` runs one claimed job to its end and records the outcome, usually
    ``functools.partial(render_job.run_job, session_factory=…, storage=…, catalog=…,
    settings=…, interrupt=stopping)`` with the same ``stopping`` event given here, so
    ``stop()`` hands running jobs back to the queue. Embedded mode is one process per
    database: at ``start()`` every ``running`` row is requeued as a crash's leftover. Run
    several processes on one database with ``requeue_running_on_start=False`` instead;
    expired leases then recover from crashes.
    """

    def __init__(self, *, session_factory: sessionmaker[Session], run_job: Callable[[int], object],
                 threads: int = 1, poll_seconds: float = POLL_SECONDS,
                 kinds: Iterable[JobKind | str] = tuple(JobKind), device: str = "auto",
                 memory_bytes: int | None = None, requeue_running_on_start: bool = True,
                 stopping: threading.Event | None = None):
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.session_factory, self.run_job = session_factory, run_job
        self.poll_seconds, self.kinds = poll_seconds, [JobKind(kind) for kind in kinds]
        self.device, self.memory_bytes = device, memory_bytes
        self.requeue_running_on_start = requeue_running_on_start
        self.stopping = stopping if stopping is not None else threading.Event()
        host = socket.gethostname()
        self.host = host
        self.names = [f"{host}:{os.getpid()}:{index}" for index in range(threads)]
        self._wake = [threading.Event() for _ in self.names]
        self._threads: list[threading.Thread] = []
        self._stale_check = jobs.Throttle(STALE_CHECK_SECONDS)
        self._stale_lock = threading.Lock()

    # --- the protocol --------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("dispatcher already started")
        self.stopping.clear()
        with self.session_factory() as session:
            if self.requeue_running_on_start:
                count = jobs.requeue_stale(session=session, all_running=True)
                if count:
                    log.warning("requeued %d job(s) left running by an earlier process", count)
            for name in self.names:
                workers.register_worker(session=session, name=name, host=self.host, device=self.device,
                                     queues=[kind.value for kind in self.kinds],
                                     memory_bytes=self.memory_bytes)
        self._threads = [threading.Thread(target=self._loop, args=(name, wake), daemon=True,
                                          name=f"impasto-worker-{index}")
                         for index, (name, wake) in enumerate(zip(self.names, self._wake, strict=True))]
        for thread in self._threads:
            thread.start()
        log.info("local dispatcher started: %d render thread(s) for %s", len(self._threads),
                 ", ".join(kind.value for kind in self.kinds))

    def stop(self, *, timeout_seconds: float | None = None) -> None:
        self.stopping.set()
        self.notify()
        still_running = []
        for name, thread in zip(self.names, self._threads, strict=True):
            thread.join(timeout_seconds)
            if thread.is_alive():
                still_running.append(name)
        with self.session_factory() as session:
            for name in self.names:
                if name not in still_running:
                    workers.remove_worker(session=session, name=name)
        if still_running:
            log.warning("render thread(s) %s still running after %s s", ", ".join(still_running),
                        timeout_seconds)
        self._threads = []

    def notify(self) -> None:
        for wake in self._wake:
            wake.set()

    def workers(self) -> list[WorkerInfo]:
        with self.session_factory() as session:
            return [info for info in list_workers(session=session) if info.name in self.names]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- one render thread ---------------------------------------------------------------

    def _loop(self, name: str, wake: threading.Event) -> None:
        while not self.stopping.is_set():
            wake.clear()   # before claiming: a notify() arriving during the claim is not lost
            job_id = self._safely(self._claim, name)
            if job_id is None:
                self._safely(self._idle, name)
                wake.wait(self.poll_seconds)
                continue
            self._run(name, job_id)

    def _claim(self, name: str) -> int | None:
        with self.session_factory() as session:
            job = jobs.claim(session=session, worker=name, kinds=self.kinds)
            return None if job is None else job.id

    def _idle(self, name: str) -> None:
        with self.session_factory() as session:
            workers.worker_seen(session=session, name=name, current_job_id=None)
            with self._stale_lock:
                due = self._stale_check.due()
            if due:
                jobs.requeue_stale(session=session)

    def _run(self, name: str, job_id: int) -> None:
        self._safely(self._seen, name, job_id)
        try:
            self.run_job(job_id)
        except Exception:
            log.exception("run_job(%s) raised; its lease will expire and it will be retried", job_id)
        finally:
            self._safely(self._seen, name, None, finished_job=True)

    def _seen(self, name: str, job_id: int | None, *, finished_job: bool = False) -> None:
        with self.session_factory() as session:
            workers.worker_seen(session=session, name=name, current_job_id=job_id, finished_job=finished_job)

    def _safely(self, step: Callable, *args, **kwargs):
        """Run a bookkeeping step; a database hiccup is logged and the loop carries on."""
        try:
            return step(*args, **kwargs)
        except Exception:
            log.exception("render thread: %s failed", step.__name__)
            return None


def local_dispatcher(settings: Settings, *, session_factory: sessionmaker[Session], storage, catalog: Catalog,
                     snapshot_seconds: float | None = None, run_options: dict[str, Any] | None = None,
                     **options) -> LocalDispatcher:
    """Embedded mode's dispatcher: ``settings.workers`` threads running ``render_job.run_job``.

    The one place the local dispatcher is wired (the shop's default, and the farm's
    ``make_dispatcher`` without a broker). ``snapshot_seconds`` is for the live tiles;
    ``run_options`` go to every ``run_job`` call, ``options`` to ``LocalDispatcher``.
    """
    from impasto.service.core import render_job

    stopping = threading.Event()
    run = functools.partial(render_job.run_job, session_factory=session_factory, storage=storage,
                            catalog=catalog, settings=settings, interrupt=stopping,
                            snapshot_seconds=snapshot_seconds, **(run_options or {}))
    return LocalDispatcher(session_factory=session_factory, run_job=run, threads=settings.workers,
                           stopping=stopping, **options)
