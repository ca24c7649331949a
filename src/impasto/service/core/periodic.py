"""A background round every few seconds: the outbox's mail, the print lab, retention."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Periodic:
    """A daemon thread calling ``run_round()`` every ``interval_seconds`` until ``stop()``;
    ``wake()`` starts the next round now. A round that raises is logged and the next one
    tried: a database hiccup must not end the thread."""

    name = "periodic"

    def __init__(self, *, interval_seconds: float, join_seconds: float = 30.0) -> None:
        self.interval_seconds, self.join_seconds = interval_seconds, join_seconds
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"impasto-{self.name}", daemon=True)

    def run_round(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(self.join_seconds)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_round()
            except Exception:   # a database hiccup: log it, try again at the next round
                log.exception("%s: round failed", self.name)
            self._wake.wait(self.interval_seconds)
            self._wake.clear()
