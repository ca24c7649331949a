"""Worker rows: who renders (embedded threads and farm workers alike), on what, since when.

The admin lists them (``dispatch.list_workers``); each helper commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from impasto.service.core.models import Worker, utcnow


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
