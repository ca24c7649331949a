"""``impasto worker``: one Celery worker per device, rendering the shop's jobs.

What a worker does, in order:

1. Detects its device and memory: ``torch.cuda`` in a short probe subprocess (so CUDA is
   never initialised in the main process, which forks the render process), else the CPU
   and the system's RAM.
2. Chooses its queues: a GPU with at least 8 GB renders previews and prints; a smaller GPU
   or a CPU box previews only, unless ``--queues`` says otherwise. Print jobs get a
   ``memory_budget`` from the worker's own memory, which sets their tile size.
3. Runs Celery with one render process (prefork, concurrency 1): the main process keeps
   the broker connection and the worker's row (heartbeat, sweeper); the child renders,
   and may die (SIGKILL, out of memory) without taking the worker down.

Each process builds its own database engine, storage and catalog on first use (the child
after the fork): connections are never shared across a fork.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from impasto.service.core import jobs, workers
from impasto.service.core.models import Job, JobKind, JobStatus, Worker, utcnow
from impasto.service.farm import celery_app
from impasto.service.farm.celery_app import QUEUES, FarmError

if TYPE_CHECKING:
    from celery import Celery

    from impasto.config import Settings

log = logging.getLogger(__name__)

SMALL_GPU_BYTES = 8 * 2**30      # below this a GPU renders previews only (unless --queues)
GPU_BUDGET_SHARE = 0.85          # of the GPU's memory, for a print (the CUDA context needs the rest)
CPU_BUDGET_SHARE = 0.5           # of the system's RAM (the OS, the worker, the page cache)
HEARTBEAT_SECONDS = 10.0
WORKER_SWEEP_SECONDS = 60.0      # the shop sweeps more often; workers sweep when no shop runs
PROBE_TIMEOUT_SECONDS = 120.0
SNAPSHOT_SECONDS = 3.0           # a preview's picture in progress, for the shop's live tiles

# run as its own process (_probe_gpus): its one line on stdout is the answer, not a message
_PROBE = """
import json, torch
devices = []
if torch.cuda.is_available():
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        devices.append({"name": props.name, "memory": props.total_memory})
print(json.dumps(devices))
"""


@dataclass(frozen=True)
class Machine:
    """The device a worker renders on and how much memory it has."""

    device: str             # "cpu" or "cuda:N"
    label: str              # "NVIDIA H200", "cpu"
    memory_bytes: int

    @property
    def is_gpu(self) -> bool:
        return self.device.startswith("cuda")


def system_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def detect_machine(device: str = "auto") -> Machine:
    """``auto``: the first GPU when torch sees one, else the CPU; ``cuda:N`` must exist."""
    if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise FarmError(f"--device {device!r}: use auto, cpu, cuda or cuda:N")
    if device == "cpu":
        return Machine("cpu", "cpu", system_memory_bytes())
    gpus = _probe_gpus()
    if not gpus:
        if device != "auto":
            raise FarmError(f"--device {device}: CUDA is not available here")
        return Machine("cpu", "cpu", system_memory_bytes())
    index = int(device.partition(":")[2] or 0)
    if index >= len(gpus):
        raise FarmError(f"--device {device}: this machine has {len(gpus)} CUDA device(s)")
    return Machine(f"cuda:{index}", gpus[index]["name"], int(gpus[index]["memory"]))


@functools.lru_cache(maxsize=1)
def _probe_gpus() -> tuple[dict, ...]:
    """The GPUs torch sees, asked in a subprocess: CUDA is initialised there, never here."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_SECONDS, check=True)
        return tuple(json.loads(done.stdout.strip().splitlines()[-1]))
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise FarmError(f"could not look for GPUs (torch in a subprocess): {exc}") from None


def choose_queues(machine: Machine, requested: list[str] | None = None) -> list[str]:
    """The queues to listen to: ``requested``, else what the machine can render."""
    if requested:
        unknown = sorted(set(requested) - set(QUEUES))
        if unknown:
            raise FarmError(f"--queues: unknown queue(s) {', '.join(unknown)} (known: {', '.join(QUEUES)})")
        return [queue for queue in QUEUES if queue in requested]
    if machine.is_gpu and machine.memory_bytes >= SMALL_GPU_BYTES:
        return list(QUEUES)
    return ["preview"]


def memory_budget(machine: Machine) -> str:
    """A print's memory budget on this machine, as ``RenderParams.memory_budget`` text (MiB)."""
    share = GPU_BUDGET_SHARE if machine.is_gpu else CPU_BUDGET_SHARE
    return f"{max(int(machine.memory_bytes * share) // 2**20, 1)}MB"


def default_name(machine: Machine) -> str:
    return f"{socket.gethostname()}:{machine.device}:{os.getpid()}"


@dataclass
class WorkerConfig:
    """Everything a worker needs to know, decided once in the main process."""

    name: str
    machine: Machine
    queues: list[str]
    budget: str
    settings: Settings
    lease_seconds: float = jobs.LEASE_SECONDS
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    sweep_seconds: float = WORKER_SWEEP_SECONDS
    snapshot_seconds: float | None = SNAPSHOT_SECONDS
    host: str = field(default_factory=socket.gethostname)

    @property
    def kinds(self) -> list[JobKind]:
        return [JobKind(queue) for queue in self.queues]

    def machine_options(self, kind: JobKind) -> dict[str, Any]:
        """Render options this machine sets: its device; a print also its memory budget."""
        options: dict[str, Any] = {"device": self.machine.device}
        if kind is JobKind.PRINT:
            options["memory_budget"] = self.budget
        return options


@dataclass
class _Resources:
    """One process's engine, sessions, storage and catalog."""

    pid: int
    engine: Any
    sessions: Any
    storage: Any
    catalog: Any


class WorkerRuntime:
    """The task body and the main process's bookkeeping (row, heartbeat, sweeper)."""

    def __init__(self, config: WorkerConfig):
        self.config = config
        self._resources: _Resources | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def resources(self) -> _Resources:
        """This process's resources, rebuilt after a fork (never a connection shared with the parent)."""
        current = self._resources
        if current is not None and current.pid == os.getpid():
            return current
        if current is not None:
            current.engine.dispose(close=False)   # the parent's connections stay the parent's
        self._resources = _build_resources(self.config.settings)
        return self._resources

    # --- the render process --------------------------------------------------------------

    def run(self, job_id: int, *, app: Celery) -> str:
        """Claim ``job_id`` if it is still queued and render it; requeued jobs are re-published."""
        res, config = self.resources(), self.config
        with res.sessions() as session:
            job = jobs.claim(session=session, worker=config.name, kinds=config.kinds, job_id=job_id,
                             lease_seconds=config.lease_seconds)
        if job is None:
            log.info("job %s is not queued (done, running elsewhere or cancelled): nothing to do", job_id)
            self._seen(None)      # nothing runs here now (a render process that died left its job)
            return "skipped"
        kind, priority = job.kind, job.priority
        self._seen(job_id)
        try:
            from impasto.service.core import render_job

            status = render_job.run_job(job_id, session_factory=res.sessions, storage=res.storage,
                                    catalog=res.catalog, settings=config.settings,
                                    lease_seconds=config.lease_seconds, snapshot_seconds=config.snapshot_seconds,
                                    machine=config.machine_options(kind))
        finally:
            self._seen(None, finished_job=True)
        if status is JobStatus.QUEUED:   # failed, attempts left: its next attempt needs a message
            try:
                celery_app.send_job(app, job_id=job_id, kind=kind.value, priority=priority)
            except Exception:
                log.exception("job %s: could not publish its retry; the sweeper will", job_id)
        return status.value if status else "not ours"

    def _seen(self, job_id: int | None, *, finished_job: bool = False) -> None:
        try:
            with self.resources().sessions() as session:
                workers.worker_seen(session=session, name=self.config.name, current_job_id=job_id,
                                 finished_job=finished_job)
        except Exception:
            log.exception("worker row of %s not updated", self.config.name)

    # --- the main process ----------------------------------------------------------------

    def register(self) -> None:
        config = self.config
        with self.resources().sessions() as session:
            workers.register_worker(session=session, name=config.name, host=config.host,
                                 device=_device_label(config.machine), queues=config.queues,
                                 memory_bytes=config.machine.memory_bytes)
        log.info("worker %s ready: %s, %.1f GB, queues %s, print budget %s", config.name,
                 _device_label(config.machine), config.machine.memory_bytes / 2**30,
                 ",".join(config.queues), config.budget)

    def start_housekeeping(self, app: Celery) -> None:
        """Register the row; then heartbeat every few seconds and sweep now and then."""
        self.register()
        self._stop.clear()
        self._thread = threading.Thread(target=self._housekeeping, args=(app,), daemon=True,
                                        name="impasto-worker-heartbeat")
        self._thread.start()

    def stop_housekeeping(self, *, remove_row: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.config.heartbeat_seconds + 5)
        if remove_row:
            try:
                with self.resources().sessions() as session:
                    workers.remove_worker(session=session, name=self.config.name)
            except Exception:
                log.exception("worker row of %s not removed", self.config.name)

    def _housekeeping(self, app: Celery) -> None:
        from impasto.service.farm.dispatcher import Sweeper

        sweeper = Sweeper(app, self.resources().sessions)
        sweep_every = self.config.sweep_seconds
        next_sweep = random.uniform(0.5, 1.0) * sweep_every   # workers started together spread out
        waited = 0.0
        while not self._stop.wait(self.config.heartbeat_seconds):
            waited += self.config.heartbeat_seconds
            try:
                self._heartbeat()
                if waited >= next_sweep:
                    waited, next_sweep = 0.0, sweep_every
                    sweeper.sweep()
            except Exception:
                log.exception("worker %s: heartbeat or sweep failed", self.config.name)

    def _heartbeat(self) -> None:
        """The row's heartbeat; and its current job cleared when that job is no longer ours
        (the render process died with it, so it could not say so itself)."""
        name = self.config.name
        ours = select(Job.id).where(Job.id == Worker.current_job_id, Job.status == JobStatus.RUNNING,
                                    Job.worker == name)
        with self.resources().sessions() as session:
            found = session.execute(update(Worker).where(Worker.name == name)
                                    .values(last_heartbeat_at=utcnow())).rowcount
            session.execute(update(Worker).where(Worker.name == name, Worker.current_job_id.is_not(None),
                                                 ~ours.exists()).values(current_job_id=None))
            session.commit()
        if not found:     # the row was removed (an admin cleaning up): put it back
            self.register()


def _device_label(machine: Machine) -> str:
    label = machine.device if machine.label == machine.device else f"{machine.device} ({machine.label})"
    return label[:64]     # the column's width


def _build_resources(settings: Settings) -> _Resources:
    from impasto.catalog import Catalog
    from impasto.service.core.db import make_engine, session_factory
    from impasto.service.core.storage import storage_from_url

    engine = make_engine(settings.resolved_database_url())
    # A worker never signs download links (the shop does); LocalStorage wants a key all the same.
    secret = settings.secret_key.get_secret_value().encode() or os.urandom(32)
    storage = storage_from_url(settings.resolved_storage_url(), secret=secret, base_url=settings.public_url,
                               endpoint_url=settings.s3_endpoint_url or None)
    return _Resources(os.getpid(), engine, session_factory(engine), storage, Catalog())


# --- running it --------------------------------------------------------------------------

def serve_metrics(port: int) -> None:
    """This worker's Prometheus metrics on ``port`` (every address), summed over its processes.

    The renders run in the prefork child, so the child's observations must reach the main
    process's HTTP server: prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
    a fresh folder per worker, set here before the client is first imported; the child
    inherits it with the fork) keeps each process's values in a file and sums them per scrape.
    Only the render seconds are served: the job table's gauges are the shop's ``/metrics``.
    """
    import atexit
    import shutil
    import tempfile

    if "prometheus_client" in sys.modules and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        log.warning("metrics: prometheus_client was imported before --metrics-port took effect; "
                    "the render process's numbers will be missing")
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        folder = tempfile.mkdtemp(prefix="impasto-worker-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder      # prometheus-client's own variable, for it to read
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    import impasto.service.core.metrics  # noqa: F401 - the render histogram, made in multiprocess mode

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    try:
        start_http_server(port, registry=registry)
    except OSError as exc:
        raise FarmError(f"--metrics-port {port}: cannot listen: {exc.strerror or exc}") from None
    log.info("metrics on port %s (%s)", port, folder)


def json_celery_logs(level: str) -> None:
    """Celery's own lines as JSON too (``IMPASTO_LOG_FORMAT=json``): with a receiver on its
    ``setup_logging`` signal Celery configures no logging itself, so the root logger gets a
    JSON handler here."""
    from celery import signals

    from impasto.logs import JsonFormatter

    def configure(**_: Any) -> None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level)

    signals.setup_logging.connect(configure, weak=False, dispatch_uid="impasto-json-logs")


def run_worker(config: WorkerConfig, *, loglevel: str = "WARNING", metrics_port: int | None = None) -> int:
    """Check the broker, migrate the database, run the Celery worker until it is stopped."""
    from celery import signals

    from impasto.service.core.db import migrate

    settings = config.settings
    if metrics_port is not None:
        serve_metrics(metrics_port)
    if settings.log_format == "json":
        json_celery_logs(loglevel)
    app = celery_app.make_celery(settings.broker_url,
                                 visibility_timeout_seconds=settings.broker_visibility_timeout_seconds)
    celery_app.ping_broker(app)
    try:
        migrate(settings.resolved_database_url())
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise FarmError(f"database: {reason}") from None
    import impasto.engine.scale  # noqa: F401 - loaded once here, shared by every forked render process

    runtime = WorkerRuntime(config)
    celery_app._runtime = runtime
    signals.worker_ready.connect(lambda **_: runtime.start_housekeeping(app), weak=False,
                                 dispatch_uid="impasto-worker-ready")
    signals.worker_shutdown.connect(lambda **_: runtime.stop_housekeeping(), weak=False,
                                    dispatch_uid="impasto-worker-shutdown")
    node = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in config.name)
    worker = app.Worker(hostname=f"{node}@{config.host}", queues=config.queues, concurrency=1,
                        pool_cls="prefork", loglevel=loglevel, without_gossip=True, without_mingle=True,
                        quiet=True, redirect_stdouts=False, optimization="fair")
    worker.start()
    return int(worker.exitcode or 0)
