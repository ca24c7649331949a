"""Sketches: every preview card gets a feed-forward look within a second or two of the upload.

The Gatys preview of a style takes tens of seconds; the feed-forward network
(``impasto.engine.quick``) paints the same photo in the same style in a fraction of a
second. Right after an upload commits, the shop process paints one sketch per preview job
on a thread of its own (the request does not wait), stores it under ``sketch_key`` and
records the key on the job row, so every page and stream — in any process — can show it.
The preview job starts its optimisation from the same feed-forward picture
(``init="quick"``), so the Gatys render visibly paints over the sketch rather than
replacing it with something else.

The shop makes the sketches itself in both modes (embedded threads and the farm): they
are cheap, and a farm's queue may be busy for minutes. A sketch that fails is logged and
the card waits for its Gatys preview, as before.
"""

from __future__ import annotations

import io
import logging
import queue
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import update

from impasto.service.core.models import Job

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from impasto.catalog import Catalog
    from impasto.service.core.storage import Storage

log = logging.getLogger(__name__)

SKETCH_QUALITY = 88
STOP_SECONDS = 10.0
YIELD_SECONDS = 5.0     # the longest a render thread waits for the sketches to be painted


def sketch_key(job_id: int) -> str:
    return f"jobs/{job_id}/sketch.jpg"


@dataclass(frozen=True)
class SketchRequest:
    photo: bytes                           # the clean, stored photo's bytes
    jobs: tuple[tuple[int, str], ...]      # (job id, style name) per preview card


class SketchPainter:
    """A thread that paints the sketches of each upload, in the order uploads arrive."""

    def __init__(self, *, sessions: sessionmaker[Session], storage: Storage, catalog: Catalog,
                 size: int) -> None:
        self.sessions, self.storage, self.catalog, self.size = sessions, storage, catalog, size
        self._queue: queue.Queue[SketchRequest | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="impasto-sketches", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(STOP_SECONDS)

    def submit(self, request: SketchRequest) -> None:
        if self._thread is None:      # not started (a test's shop without its lifespan): paint now
            self.paint(request)
        else:
            self._idle.clear()
            self._queue.put(request)

    def wait_until_idle(self, seconds: float) -> bool:
        """Wait until every submitted upload's sketches are painted (or left behind, for a
        portrait deleted meanwhile); False if that took longer than ``seconds``."""
        return self._idle.wait(seconds)

    def yield_to(self) -> None:
        """For the embedded render threads, between iterations: wait while sketches are painted.

        On two cores a Gatys iteration beside the sketch thread halves its speed; a customer
        who just uploaded waits for the sketches, while a preview's few seconds more go unseen.
        """
        self._idle.wait(YIELD_SECONDS)

    def _loop(self) -> None:
        self._warm_up()
        while (request := self._queue.get()) is not None:
            try:
                self.paint(request)
            except Exception:     # never let one upload stop the sketches of the next
                log.exception("sketches of jobs %s failed", [job for job, _ in request.jobs])
            finally:
                if self._queue.empty():
                    self._idle.set()
        self._idle.set()

    def _warm_up(self) -> None:
        """Load the networks now: the first upload's sketches would otherwise wait ~1 s for them."""
        import torch

        from impasto.engine.quick import shared_stylizer

        try:
            shared_stylizer().stylize(torch.full((1, 3, 64, 64), 0.5), torch.rand(1, 3, 64, 64), size=64)
        except Exception as exc:  # noqa: BLE001 - paint() will say what is wrong, per job
            log.warning("sketches: the feed-forward network did not load (%s: %s)", type(exc).__name__, exc)

    def paint(self, request: SketchRequest) -> int:
        """Paint, store and record each job's sketch; returns how many were made."""
        from impasto import imaging
        from impasto.engine.quick import shared_stylizer

        with tempfile.TemporaryDirectory(prefix="impasto-sketch-") as folder:
            path = Path(folder) / "photo"
            path.write_bytes(request.photo)
            photo = imaging.load(path)
        stylizer, made = shared_stylizer(), 0
        for job_id, style_name in request.jobs:
            try:
                sketch = stylizer.stylize(photo, self.catalog.get(style_name).image(), size=self.size)
                buffer = io.BytesIO()
                imaging.to_pil(sketch).save(buffer, format="JPEG", quality=SKETCH_QUALITY)
                self.storage.put(sketch_key(job_id), buffer.getvalue(), content_type="image/jpeg")
                with self.sessions() as session:
                    recorded = session.execute(update(Job).where(Job.id == job_id)
                                               .values(sketch_key=sketch_key(job_id))).rowcount
                    session.commit()
                if not recorded:   # the portrait was deleted while this painted: leave nothing behind
                    self.storage.delete(sketch_key(job_id))
                    continue
                made += 1
            except Exception as exc:  # noqa: BLE001 - the Gatys preview still comes; the card waits for it
                log.warning("job %s: no sketch in style %r (%s: %s)", job_id, style_name, type(exc).__name__, exc)
        return made
