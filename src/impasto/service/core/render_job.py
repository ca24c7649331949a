"""The task body, the same under both dispatchers: fetch → engine → store → record → notify.

``run_job`` takes a job already claimed (``running``), renders it with the style's preset
and the job's own options, stores the result under ``jobs/<id>/result.png`` (a re-run
overwrites it) and a resumable state under ``jobs/<id>/state.safetensors``, marks the job
done and queues the customer's email in the outbox (sent later by whoever runs
``outbox.deliver_pending``, never here).

- A print continues its preview: it starts from the preview's state (same seed and
  options) and renders only the scales above the preview's size.
- A retry continues its own last attempt when that attempt stored a state: an hour-long
  print that lost its machine at the last scale does not start again from the preview.
- Progress goes to the job row at most once per ``progress_seconds``; a lease keeper
  thread renews the lease meanwhile (one iteration of a large print can outlast it), and
  either one learning of a cancel request stops the render at the next iteration.
- Failures: an ImpastoError is the input's fault and is recorded as its message (a bad
  or missing photo, option or style fails for good at once; others are retried up to the
  attempt cap); anything else is a bug, logged with its traceback and retried.
- Emails are queued after the job's outcome is committed, in a second short transaction:
  two previews finishing together then cannot both miss that all are done (the later
  commit sees both). A process that dies between the two commits loses that email.
"""

from __future__ import annotations

import io
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from impasto.errors import ImageError, ImpastoError, ParamError, RenderCancelled, RenderDiverged
from impasto.logs import with_job_context
from impasto.service.core import jobs, metrics, orders, outbox
from impasto.service.core.models import Job, JobKind, JobStatus, Order, OrderStatus, Portrait

if TYPE_CHECKING:
    from impasto.catalog import Catalog, Style
    from impasto.config import Settings
    from impasto.engine.params import RenderParams
    from impasto.engine.scale import Progress
    from impasto.state import RenderState

log = logging.getLogger(__name__)

PORTRAIT_PATH = "/portraits/{public_id}"                              # the previews page
DOWNLOAD_PATH = "/portraits/{public_id}/orders/{number}/download"      # mints a signed URL per click
DELETE_PATH = "/portraits/{public_id}/delete"                          # "delete my photo now" (asks first)


def result_key(job_id: int) -> str:
    return f"jobs/{job_id}/result.png"


def state_key(job_id: int) -> str:
    return f"jobs/{job_id}/state.safetensors"


def snapshot_key(job_id: int) -> str:
    """The picture a preview is painting right now (with ``run_job(snapshot_seconds=…)``)."""
    return f"jobs/{job_id}/snapshot.jpg"


class _Interrupted(Exception):
    """The dispatcher is stopping: hand the job back, it is not the job's fault."""


@dataclass(frozen=True)
class _Task:
    """What a render needs from the rows, read in one short transaction."""

    job_id: int
    kind: JobKind
    style: str
    params: dict[str, Any]
    worker: str | None
    attempts: int
    portrait_id: int
    photo_key: str
    parent_state_key: str | None


@with_job_context
def run_job(job_id: int, *, session_factory: sessionmaker[Session], storage, catalog: Catalog,
            settings: Settings, progress_seconds: float = jobs.PROGRESS_SECONDS,
            lease_seconds: float = jobs.LEASE_SECONDS,
            interrupt: threading.Event | None = None,
            snapshot_seconds: float | None = None,
            machine: dict[str, Any] | None = None,
            yield_to: Callable[[], None] | None = None) -> JobStatus | None:
    """Run the claimed job ``job_id`` to its end; returns its new status (None: not ours to run).

    ``interrupt`` (the dispatcher's ``stopping`` event) hands the job back to the queue.
    ``snapshot_seconds``: a preview also stores its image in progress under ``snapshot_key``
    at most this often, for the shop's live tiles (None: never).
    ``machine``: options of the machine that renders (a farm worker's ``device`` and
    ``memory_budget``), over the preset's, the preview's and the job's own.
    ``yield_to``: called between iterations; it may block a moment (the embedded shop's
    sketches take the CPU first: an upload's cards get their looks before more is painted).
    Every line logged meanwhile carries the job's id (``logs.JOB_ID``); a finished render's
    seconds go to ``metrics.RENDER_SECONDS``.
    """
    task = _load_task(session_factory, job_id)
    if task is None:
        return None
    if yield_to is not None:     # a render's set-up (weights, faces, targets) is a second of CPU too
        yield_to()
    stop = threading.Event()
    fenced = {"job_id": job_id, "worker": task.worker}   # every write: only while the job is still ours
    try:
        with _LeaseKeeper(sessions=session_factory, **fenced, lease_seconds=lease_seconds, stop=stop):
            report = _progress_reporter(sessions=session_factory, **fenced, seconds=progress_seconds,
                                        lease_seconds=lease_seconds, stop=stop, interrupt=interrupt,
                                        yield_to=yield_to)
            if snapshot_seconds and task.kind is JobKind.PREVIEW:
                report = _with_snapshots(report, storage, job_id, snapshot_seconds)
            started = time.monotonic()
            result, state = _render(task, storage=storage, catalog=catalog, settings=settings, report=report,
                                    machine=machine or {})
    except RenderCancelled:
        log.info("job %s cancelled while rendering", job_id)
        status = _record(session_factory, jobs.mark_cancelled, **fenced) and JobStatus.CANCELLED
    except _Interrupted:
        log.info("job %s handed back to the queue: the dispatcher is stopping", job_id)
        status = _record(session_factory, jobs.release, **fenced) and JobStatus.QUEUED
    except ImpastoError as exc:
        log.warning("job %s failed: %s", job_id, exc)
        status = _record(session_factory, jobs.fail, **fenced, error=str(exc),
                         retry=not isinstance(exc, _permanent_errors()))
    except Exception as exc:
        log.exception("job %s: unexpected error", job_id)
        status = _record(session_factory, jobs.fail, **fenced,
                         error=f"internal error: {type(exc).__name__}: {exc}")
    else:
        done = _record(session_factory, jobs.finish, **fenced, result_key=result, state_key=state)
        status = done and JobStatus.DONE
        metrics.observe_render(kind=task.kind.value, size=_size_label(task, settings),
                               seconds=time.monotonic() - started)
    if status in jobs.FINISHED:
        _safely_notify(session_factory, task, settings)
    elif not status:
        _drop_if_deleted(session_factory, storage, job_id)
    return status or None


def _drop_if_deleted(session_factory: sessionmaker[Session], storage, job_id: int) -> None:
    """The job's row is gone (its portrait was deleted while it rendered): so go its files."""
    with session_factory() as session:
        if session.get(Job, job_id) is not None:
            return              # not ours any more (another worker has it): its files are its
    count = storage.delete_folder(f"jobs/{job_id}")
    log.info("job %s was deleted while it rendered: %d file(s) it stored dropped", job_id, count)


def _size_label(task: _Task, settings: Settings) -> str:
    """A print's size (``8x10in``), a preview's long side (``384px``): few values, a fair label."""
    size = task.params.get("print_size") or f"{task.params.get('image_size') or settings.preview_size}px"
    return str(size)[:16]


def _permanent_errors() -> tuple[type[Exception], ...]:
    """Errors that recur on every retry: the photo (bad or gone), the options (a diverging
    render diverges again: it is deterministic), the style, the state."""
    from impasto.catalog import CatalogError
    from impasto.service.core.storage import KeyNotFound
    from impasto.state import StateError

    return ImageError, ParamError, RenderDiverged, CatalogError, StateError, KeyNotFound


def _load_task(session_factory: sessionmaker[Session], job_id: int) -> _Task | None:
    with session_factory() as session:
        job = session.get(Job, job_id)
        if job is None or job.status is not JobStatus.RUNNING:
            log.warning("job %s is not running (%s): not rendering it", job_id, job and job.status.value)
            return None
        parent = session.get(Job, job.parent_job_id) if job.parent_job_id else None
        return _Task(job.id, job.kind, job.style, dict(job.params), job.worker, job.attempts, job.portrait_id,
                     job.portrait.photo_key, parent.state_key if parent else None)


def _record(session_factory: sessionmaker[Session], step: Callable, **values):
    """Record an outcome (``jobs.finish`` & co.) in a session of its own."""
    with session_factory() as session:
        return step(session=session, **values)


# --- rendering ---------------------------------------------------------------------------

def _render(task: _Task, *, storage, catalog: Catalog, settings: Settings,
            report: Callable[[Progress], None], machine: dict[str, Any]) -> tuple[str, str]:
    """Render the task; store and return (result key, state key)."""
    from impasto import imaging
    from impasto.engine import render
    from impasto.state import RenderState

    style = catalog.get(task.style)
    with tempfile.TemporaryDirectory(prefix=f"impasto-job-{task.job_id}-") as folder:
        workdir = Path(folder)
        photo = _image_from_bytes(storage.get(task.photo_key), workdir / "photo")
        parent = _stored_state(storage, task.parent_state_key, workdir / "parent.state")
        if task.kind is JobKind.PRINT and parent is None:
            log.warning("print job %s has no preview state to continue: rendering from the preset",
                        task.job_id)
        params = _params(task, style, settings, parent.params if parent else None, machine)
        own = (_stored_state(storage, state_key(task.job_id), workdir / "own.state")
               if task.attempts > 1 else None)
        start = own if own is not None and _same_render(own.params, params) else parent
        saved = RenderState(params, dict(start.scales) if start and task.kind is JobKind.PREVIEW else {})
        result = render(photo, [style.image()], params, report, resume=start.latest() if start else None,
                        on_scale=_state_saver(saved, storage, task, workdir / "state.safetensors"))
        imaging.save(result, workdir / "result.png", dpi=params.dpi if params.print_size else None)
        storage.put(result_key(task.job_id), (workdir / "result.png").read_bytes(), content_type="image/png")
        if not saved.scales:   # resumed at the final size: nothing new was rendered
            saved.scales[max(result.shape[-2:])] = result
            _put_state(saved, storage, task, workdir / "state.safetensors")
    return result_key(task.job_id), state_key(task.job_id)


def _params(task: _Task, style: Style, settings: Settings, parent: RenderParams | None,
            machine: dict[str, Any]) -> RenderParams:
    """The style's preset (or, for a print, its preview's options), the job's own options, the machine's."""
    from impasto.engine.params import RenderParams

    if task.kind is JobKind.PREVIEW:
        base = {**style.preset, "image_size": settings.preview_size,
                "num_iterations": settings.preview_iterations, "init": settings.preview_init,
                "start_size": settings.preview_start_size,
                "portrait_face_iterations": settings.preview_face_iterations,
                "precision": _preview_precision(settings, machine)}
    else:
        base = parent.model_dump() if parent is not None else dict(style.preset)
        # its own iteration budget: the preview's few (from the sketch) are shared over the
        # print's schedule too, and would leave its large scales one iteration each; the
        # preview's short face pass is the preset's again
        base.update(dpi=settings.print_dpi, num_iterations=settings.print_iterations,
                    portrait_face_iterations=style.preset.get("portrait_face_iterations"),
                    precision=style.preset.get("precision", "float32"))
    return RenderParams.build(**{**base, **task.params, **machine})


def _preview_precision(settings: Settings, machine: dict[str, Any]) -> str:
    """``settings.preview_precision``, with ``auto`` resolved for the device that renders."""
    from impasto.engine.features import native_bfloat16
    from impasto.engine.scale import resolve_device

    if settings.preview_precision != "auto":
        return settings.preview_precision
    native = native_bfloat16(resolve_device(machine.get("device", "auto")))
    return "bfloat16" if native else "float32"


MACHINE_OPTIONS = ("device", "memory_budget", "tile_size")   # where and how, never what is rendered


def _same_render(saved: RenderParams, params: RenderParams) -> bool:
    """Whether a saved state continues this render: equal options but the machine's (tiling is exact)."""
    return saved.model_dump(exclude=set(MACHINE_OPTIONS)) == params.model_dump(exclude=set(MACHINE_OPTIONS))


def _image_from_bytes(data: bytes, path: Path):
    """Decode stored bytes through ``imaging.load`` (EXIF, colour profile and size checks)."""
    from impasto import imaging

    path.write_bytes(data)
    return imaging.load(path)


def _stored_state(storage, key: str | None, path: Path) -> RenderState | None:
    from impasto.state import load_state

    if key is None or not storage.exists(key):
        return None
    path.write_bytes(storage.get(key))
    return load_state(path)


def _state_saver(state: RenderState, storage, task: _Task, path: Path) -> Callable:
    """on_scale: keep each finished scale (a print keeps only its latest: it may be large)."""
    def save(size: int, image) -> None:
        if task.kind is JobKind.PRINT:
            state.scales.clear()
        state.scales[size] = image
        _put_state(state, storage, task, path)
    return save


def _put_state(state: RenderState, storage, task: _Task, path: Path) -> None:
    state.save(path)
    storage.put(state_key(task.job_id), path.read_bytes(), content_type="application/octet-stream")


# --- progress, lease and cancellation ----------------------------------------------------

def _progress_reporter(*, sessions: sessionmaker[Session], job_id: int, worker: str | None, seconds: float,
                       lease_seconds: float, stop: threading.Event,
                       interrupt: threading.Event | None,
                       yield_to: Callable[[], None] | None = None) -> Callable[[Progress], None]:
    """The render callback: throttled progress rows; raises to stop the render when asked."""
    throttle = jobs.Throttle(seconds)

    def report(progress: Progress) -> None:
        if yield_to is not None:
            yield_to()
        if interrupt is not None and interrupt.is_set():
            raise _Interrupted()
        if stop.is_set():
            raise RenderCancelled(f"job {job_id} cancelled")
        if throttle.due(force=progress.iteration >= progress.total):
            with sessions() as session:
                if jobs.report_progress(session=session, job_id=job_id, worker=worker,
                                        progress=progress.fraction,
                                        iteration=progress.iteration, total=progress.total,
                                        lease_seconds=lease_seconds):
                    raise RenderCancelled(f"job {job_id} cancelled")
    return report


def _with_snapshots(report: Callable[[Progress], None], storage, job_id: int,
                    seconds: float) -> Callable[[Progress], None]:
    """``report``, then at most every ``seconds`` the image in progress as a JPEG (best effort)."""
    throttle = jobs.Throttle(seconds)

    def report_and_snapshot(progress: Progress) -> None:
        report(progress)
        if progress.iteration < progress.total and throttle.due():
            try:
                from impasto import imaging

                buffer = io.BytesIO()
                imaging.to_pil(progress.image()).save(buffer, format="JPEG", quality=85)
                storage.put(snapshot_key(job_id), buffer.getvalue(), content_type="image/jpeg")
            except Exception:     # a snapshot is a nicety: never fail the render for it
                log.warning("job %s: snapshot not stored", job_id, exc_info=True)
    return report_and_snapshot


class _LeaseKeeper:
    """A thread renewing the job's lease while the render runs; sets ``stop`` on a cancel."""

    def __init__(self, *, sessions: sessionmaker[Session], job_id: int, worker: str | None,
                 lease_seconds: float, stop: threading.Event):
        self.sessions, self.job_id, self.worker = sessions, job_id, worker
        self.interval_seconds, self.lease_seconds, self.stop = lease_seconds / 3, lease_seconds, stop
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"impasto-lease-{job_id}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.interval_seconds):
            try:
                with self.sessions() as session:
                    if jobs.heartbeat(session=session, job_id=self.job_id, worker=self.worker,
                                      lease_seconds=self.lease_seconds):
                        self.stop.set()
            except Exception:
                log.exception("job %s: heartbeat failed", self.job_id)


# --- notifications -----------------------------------------------------------------------

def _safely_notify(session_factory: sessionmaker[Session], task: _Task, settings: Settings) -> None:
    """Queue the customer's email; the job's outcome is already recorded whatever happens here."""
    try:
        with session_factory() as session:
            if task.kind is JobKind.PREVIEW:
                _previews_ready(session, task.portrait_id, settings)
            else:
                _print_ready(session, task.job_id, settings)
            session.commit()
    except Exception:
        log.exception("job %s: could not queue its notification", task.job_id)


def _previews_ready(session: Session, portrait_id: int, settings: Settings) -> None:
    """Once no preview of the portrait is queued or running and one is done: one email."""
    counts = dict(session.execute(select(Job.status, func.count()).where(
        Job.portrait_id == portrait_id, Job.kind == JobKind.PREVIEW).group_by(Job.status)).all())
    if counts.get(JobStatus.QUEUED) or counts.get(JobStatus.RUNNING) or not counts.get(JobStatus.DONE):
        return
    portrait = session.get(Portrait, portrait_id)
    base = settings.public_url.rstrip("/")
    url = base + PORTRAIT_PATH.format(public_id=portrait.public_id)
    outbox.queue_email(session=session, dedupe_key=f"previews_ready:{portrait_id}", to=portrait.email,
                     template="previews_ready",
                     context={"portrait": portrait.public_id, "portrait_url": url,
                              "delete_url": base + DELETE_PATH.format(public_id=portrait.public_id),
                              "retention_days": settings.retention_days})


def _print_ready(session: Session, job_id: int, settings: Settings) -> None:
    """The order of this print goes to ``ready`` and its customer gets the download link."""
    order = session.scalars(select(Order).where(Order.print_job_id == job_id)).one_or_none()
    if order is None or session.get(Job, job_id).status is not JobStatus.DONE:
        return
    if order.status is OrderStatus.CANCELLED:
        log.info("order %s was cancelled: its print is kept, no email", order.number)
        return
    try:
        if order.status in orders.AWAITING_RENDER:
            orders.set_order_status(session=session, order_id=order.id, status=OrderStatus.RENDERING)
        orders.set_order_status(session=session, order_id=order.id, status=OrderStatus.READY)
    except orders.OrderStatusError as exc:   # printed or shipped already: a re-render; no new email
        log.info("print job %s done: %s", job_id, exc)
        return
    public_id = order.portrait.public_id
    url = settings.public_url.rstrip("/") + DOWNLOAD_PATH.format(public_id=public_id, number=order.number)
    outbox.queue_email(session=session, dedupe_key=f"print_ready:{order.number}", to=order.portrait.email,
                     template="print_ready",
                     context={"order": order.number, "portrait": public_id, "name": order.shipping_name,
                              "size": order.print_size, "download_url": url,
                              "link_days": settings.download_link_seconds // 86400,
                              "delete_url": (settings.public_url.rstrip("/")
                                             + DELETE_PATH.format(public_id=public_id)),
                              "retention_days": settings.retention_days})
