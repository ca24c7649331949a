"""A farm for tests: real `impasto worker` subprocesses, a real broker, PostgreSQL, shared files.

``Farm`` plays the shop: it enqueues jobs in the table and runs a ``CeleryDispatcher``
(sweeping every second); the workers are `impasto worker` processes, each in its own
process group so a test can SIGKILL a whole worker (main process and render process).
Isolation: a RabbitMQ virtual host or a Redis database per farm, a PostgreSQL schema per
farm, files in a temp folder. Renders are tiny (32 px, 2 iterations, one scale, one
thread). Every wait has a ceiling, and teardown kills every worker group it started.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import signal
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from impasto.catalog import Catalog
from impasto.service.core import jobs
from impasto.service.core.db import make_engine, migrate, session_factory
from impasto.service.core.models import Email, Job, JobKind, Portrait, Worker
from impasto.service.farm.dispatcher import CeleryDispatcher
from support.db import postgres_schema
from support.redisdb import redis_database  # noqa: F401 - the farm's tests take it from here
from support.net import wait_until  # noqa: F401 - the farm's tests take it from here

HERE = Path(__file__).resolve().parent
IMPASTO = str(Path(sys.executable).with_name("impasto"))
PHOTO_KEY = "portraits/p/photo.png"
TINY = {"start_size": 0}                # previews: 32 px, 2 iterations (the workers' settings)
LEASE_SECONDS = 6                        # short, so a killed worker's job comes back soon
READY_SECONDS = 180                      # a worker start on a loaded 2-core machine
STOP_SECONDS = 30
POISON_LAUNCHER = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import farm_poison; "
                   "from impasto.cli import main; sys.exit(main(sys.argv[1:]))")


def png_bytes(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# --- isolated brokers and databases ------------------------------------------------------

def missing(reason: str) -> None:
    """Skip, or fail under IMPASTO_REQUIRE_SERVICES=1 (as tests/conftest.py's service fixtures)."""
    if os.environ.get("IMPASTO_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing: {reason}", pytrace=False)
    pytest.skip(reason)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def amqp_vhost(amqp_url: str) -> Iterator[str]:
    """A fresh RabbitMQ virtual host for one farm (its queues vanish with it)."""
    vhost = f"impasto-test-{uuid.uuid4().hex[:10]}"
    try:
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        missing(f"cannot make a RabbitMQ virtual host with rabbitmqctl: {exc}")
    try:
        yield urllib.parse.urlsplit(amqp_url)._replace(path="/" + vhost).geturl()
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            rabbitmqctl("delete_vhost", vhost)


@contextlib.contextmanager
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A migrated PostgreSQL schema of its own, dropped afterwards."""
    with postgres_schema(postgres_url, prefix="farm") as url:
        migrate(url)
        yield url


# --- the farm ----------------------------------------------------------------------------

class Farm:
    """Worker subprocesses, the job table, the shared files and the shop's dispatcher."""

    def __init__(self, root: Path, *, broker_url: str, database_url: str):
        self.root, self.broker_url, self.database_url = root, broker_url, database_url
        self.files = root / "files"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True)
        self.engine = make_engine(database_url)
        self.sessions = session_factory(self.engine)
        self.procs: dict[str, subprocess.Popen] = {}
        self._make_files()
        self.env = {**os.environ, "IMPASTO_CATALOG_DIR": str(root / "styles"),
                    "IMPASTO_DATA_DIR": str(root / "data"), "IMPASTO_PREVIEW_SIZE": "32",
                    "IMPASTO_PREVIEW_ITERATIONS": "2", "IMPASTO_PUBLIC_URL": "http://shop.test",
                    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.dispatcher = CeleryDispatcher(session_factory=self.sessions, broker_url=broker_url,
                                           sweep_seconds=1.0)
        self.dispatcher.start()

    def _make_files(self) -> None:
        (self.files / PHOTO_KEY).parent.mkdir(parents=True)
        (self.files / PHOTO_KEY).write_bytes(png_bytes(40, 32, seed=1))
        catalog = Catalog(self.root / "styles")
        for seed, name in enumerate(["tiny", "poison"], start=2):
            (self.root / f"{name}.png").write_bytes(png_bytes(32, 32, seed=seed))
            catalog.add(name, self.root / f"{name}.png", {"style_weight": 200.0})

    # --- workers -------------------------------------------------------------------------

    def start_worker(self, name: str, *, queues: str | None = None, poisoned: bool = False,
                     extra: tuple[str, ...] = ()) -> subprocess.Popen:
        args = ["worker", "--broker", self.broker_url, "--database-url", self.database_url,
                "--storage-url", self.files.as_uri(), "--device", "cpu", "--name", name,
                "--lease-seconds", str(LEASE_SECONDS), "-v", *extra]
        if queues:
            args += ["--queues", queues]
        command = ([sys.executable, "-c", POISON_LAUNCHER, str(HERE), *args] if poisoned
                   else [IMPASTO, *args])
        log = open(self.logs / f"{name}.log", "ab")   # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        log.close()
        return self.procs[name]

    def wait_ready(self, *names: str) -> None:
        def ready() -> bool:
            for name in names:
                if self.procs[name].poll() is not None:
                    pytest.fail(f"worker {name} exited ({self.procs[name].returncode}):\n{self.log_tail(name)}",
                                pytrace=False)
            with self.sessions() as session:
                found = set(session.scalars(select(Worker.name).where(Worker.name.in_(names))))
            return found == set(names)
        wait_until(ready, f"workers {', '.join(names)} to be ready", seconds=READY_SECONDS, poll=0.3,
                   on_timeout=lambda: "\n".join(self.log_tail(name) for name in names))

    def kill_group(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def stop_worker(self, name: str) -> None:
        """SIGTERM (warm shutdown), then SIGKILL of the whole group if it lingers."""
        proc = self.procs.pop(name)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)   # the render process too, whatever happened
        proc.wait(STOP_SECONDS)

    def close(self) -> None:
        self.dispatcher.stop(timeout_seconds=STOP_SECONDS)
        for name in list(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.procs[name].pid, signal.SIGTERM)
        for name in list(self.procs):
            self.stop_worker(name)
        self.engine.dispose()

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        text_ = path.read_text(errors="replace") if path.exists() else ""
        return f"--- {name} ---\n" + "\n".join(text_.splitlines()[-lines:])

    # --- jobs ----------------------------------------------------------------------------

    def enqueue(self, count: int, *, kind: JobKind = JobKind.PREVIEW, style: str = "tiny",
                params: dict | None = None) -> list[int]:
        """``count`` jobs, each on its own portrait (so each gets its own email), then notify()."""
        with self.sessions() as session:
            ids = []
            for _ in range(count):
                portrait = Portrait(email="ada@example.com", photo_key=PHOTO_KEY, consent=True)
                session.add(portrait)
                session.flush()
                ids.append(jobs.enqueue(session=session, portrait_id=portrait.id, kind=kind, style=style,
                                        params=TINY if params is None else params).id)
            session.commit()
        self.dispatcher.notify()
        return ids

    def jobs(self, ids: list[int]) -> list[Job]:
        with self.sessions() as session:
            return list(session.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id)))

    def job(self, job_id: int) -> Job:
        return self.jobs([job_id])[0]

    def wait_finished(self, ids: list[int], *, seconds: float) -> list[Job]:
        def finished():
            rows = self.jobs(ids)
            return rows if all(row.status in jobs.FINISHED for row in rows) else None
        return wait_until(finished, f"{len(ids)} job(s) to finish", seconds=seconds, poll=0.25,
                          on_timeout=lambda: self.summary(ids))

    def summary(self, ids: list[int]) -> str:
        rows = self.jobs(ids)
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.status.value] = counts.get(row.status.value, 0) + 1
        return f"jobs: {counts}\n" + "\n".join(self.log_tail(name, 15) for name in self.procs)

    def wait_emails(self, portrait_ids: list[int]) -> list[Email]:
        """The outbox rows of these portraits, once each has one (queued just after its job ends)."""
        wait_until(lambda: len(self.emails(portrait_ids)) >= len(set(portrait_ids)),
                   f"{len(portrait_ids)} email(s) in the outbox", seconds=30)
        return self.emails(portrait_ids)

    def emails(self, portrait_ids: list[int]) -> list[Email]:
        keys = [f"previews_ready:{pid}" for pid in portrait_ids]
        with self.sessions() as session:
            return list(session.scalars(select(Email).where(Email.dedupe_key.in_(keys))))

    def outputs(self, job_id: int) -> list[str]:
        """The files stored under the job's key, except the live tile's passing snapshot."""
        folder = self.files / "jobs" / str(job_id)
        names = sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []
        return [name for name in names if name != "snapshot.jpg"]


def idle_gaps(rows: list[Job], *, tolerance_seconds: float) -> tuple[list[str], float]:
    """Times a worker sat idle between two of its jobs while another job waited in the queue.

    Returns the gaps longer than ``tolerance_seconds`` (described) and the longest such
    overlap seen: a worker's idle time (its previous job's end to its next job's start)
    overlapping a job's wait (enqueued, not yet started).
    """
    by_worker: dict[str, list[Job]] = {}
    for row in rows:
        by_worker.setdefault(row.worker, []).append(row)
    problems, longest = [], 0.0
    for worker, runs in by_worker.items():
        runs.sort(key=lambda row: row.started_at)
        for before, after in itertools.pairwise(runs):
            gap_start, gap_end = before.finished_at, after.started_at
            for waiting in rows:
                overlap = (min(gap_end, waiting.started_at) - max(gap_start, waiting.created_at))
                seconds = overlap / timedelta(seconds=1)
                longest = max(longest, seconds)
                if seconds > tolerance_seconds:
                    problems.append(f"{worker} idle {seconds:.2f} s while job {waiting.id} waited")
    return problems, longest
