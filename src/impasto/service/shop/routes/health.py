"""Probes for a load balancer or an orchestrator: ``/healthz`` (alive) and ``/readyz`` (ready).

``/healthz`` touches nothing: 200 while the process answers requests. ``/readyz`` checks what
a request needs — the database (``SELECT 1``), the storage (``Storage.check``: a listing of
one key, or the root folder's state; nothing is written) and, with a broker configured, the
broker (one connection) — each within ``CHECK_SECONDS``, and answers 200 with every part's
state, or 503 naming the parts that fail. The reasons go to the log, not to the answer: the
probe is public and an error message can carry host names and paths.

Neither takes a CSRF token or counts against a rate limit (they are GETs no limit applies
to), and neither sets the CSRF cookie (``middleware.PROBE_PATHS``: ``ShopMiddleware`` skips them); both carry
the security headers every answer has.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from impasto.service.shop.app import Shop

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

CHECK_SECONDS = 3.0     # each part's answer; a hung database or bucket fails the probe, not hangs it
OK, FAILING, TIMED_OUT = "ok", "failing", "timed out"


@router.get("/healthz")
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    shop: Shop = request.app.state.shop
    checks = await run_in_threadpool(readiness, shop)
    failing = [part for part, state in checks.items() if state != OK]
    if failing:
        return JSONResponse({"status": "unavailable", "failing": failing, "checks": checks}, status_code=503)
    return JSONResponse({"status": "ok", "checks": checks})


def readiness(shop: Shop, *, seconds: float = CHECK_SECONDS) -> dict[str, str]:
    """Each part's state (``ok``, ``failing``, ``timed out``), the parts checked side by side."""
    parts: dict[str, Callable[[], None]] = {"database": lambda: check_database(shop),
                                            "storage": shop.storage.check}
    if shop.settings.broker_url:
        parts["broker"] = lambda: check_broker(shop.settings.broker_url, seconds=seconds)
    probes = {name: _Probe(name, check) for name, check in parts.items()}
    return {name: probe.state(seconds) for name, probe in probes.items()}


def check_database(shop: Shop) -> None:
    from sqlalchemy import text

    with shop.engine.connect() as connection:
        connection.execute(text("SELECT 1")).scalar_one()


def check_broker(url: str, *, seconds: float) -> None:
    """One connection to the broker (RabbitMQ or Redis), given up after ``seconds``."""
    from kombu import Connection

    with Connection(url, connect_timeout=seconds) as connection:
        connection.ensure_connection(max_retries=1, timeout=seconds)


class _Probe:
    """A check on a daemon thread, so one that hangs past its time is abandoned, not waited for."""

    def __init__(self, name: str, check: Callable[[], None]) -> None:
        self.name, self.check = name, check
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"impasto-readyz-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.check()
        except Exception as exc:  # noqa: BLE001 - every failure is the same answer: not ready
            self.error = exc

    def state(self, seconds: float) -> str:
        self._thread.join(seconds)
        if self._thread.is_alive():
            log.warning("readyz: %s gave no answer within %.1f s", self.name, seconds)
            return TIMED_OUT
        if self.error is not None:
            log.warning("readyz: %s failing: %s: %s", self.name, type(self.error).__name__, self.error)
            return FAILING
        return OK
