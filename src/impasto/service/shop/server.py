"""The shop's HTTP server: uvicorn, with read timeouts for request headers and bodies.

uvicorn closes an idle kept-alive connection (``timeout_keep_alive``) but has no limit on how
long a client may take to send a request: one that sends a header line now and then, or a
body byte now and then (slowloris), holds its connection and its memory for as long as it
likes. Two limits close that:

- **headers** (``Settings.header_timeout_seconds``, 10 s): from a connection's first byte (or
  a kept-alive connection's next one) to the end of the request's headers, in total, so a
  trickle does not reset it. ``HeaderTimeoutH11Protocol`` keeps it: uvicorn's h11 protocol
  with a timer that closes the connection if h11 still waits for a request line and headers.
- **bodies** (``Settings.body_timeout_seconds``, 30 s): the longest wait for the next piece
  of a body the app is reading (an upload that stalls), and ``body_total_seconds`` (600 s,
  a 20 MB photo at 270 kbit/s) for a whole body. ``BodyTimeoutMiddleware`` times each
  ``receive()`` the app awaits — only the client's part, never a slow handler — and answers
  408, which also ends the connection (the body was not read to its end). It sits inside
  the shop's middleware (``create_app`` adds it), so the 408 has the security headers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers take too long."""

    header_timeout_seconds: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()            # the first byte of a kept-alive connection's next request
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_seconds, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closing a connection from %s: no complete request headers in %.0f s",
                     self.client[0] if self.client else "?", self.header_timeout_seconds)
            self.transport.close()


class BodyTimeoutMiddleware:
    """408 when a request body stalls for ``idle_seconds`` or takes over ``total_seconds``.

    The 408 is sent from inside ``receive()``, and the app is then told the client left
    (``http.disconnect``), as ASGI has it; whatever the app answers after that is dropped.
    Raising instead would not do: FastAPI turns any error while reading a form into a 400.
    """

    def __init__(self, app: ASGIApp, *, idle_seconds: float = 30.0, total_seconds: float = 600.0) -> None:
        self.app, self.idle_seconds, self.total_seconds = app, idle_seconds, total_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.total_seconds
        state = {"body_done": False, "started": False, "answered": False}

        async def timed_receive() -> Message:
            if state["body_done"] or state["answered"]:
                return await receive()          # http.disconnect: the app may wait as long as it likes
            wait = max(min(self.idle_seconds, deadline - time.monotonic()), 0.0)
            try:
                message = await asyncio.wait_for(receive(), timeout=wait)
            except TimeoutError:
                await self._answer_408(scope, state, send)
                return {"type": "http.disconnect"}
            state["body_done"] = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def watched_send(message: Message) -> None:
            if state["answered"]:
                return
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, timed_receive, watched_send)

    @staticmethod
    async def _answer_408(scope: Scope, state: dict, send: Send) -> None:
        log.info("request body from %s stalled: 408", (scope.get("client") or ("?",))[0])
        if not state["started"]:
            from starlette.responses import PlainTextResponse

            response = PlainTextResponse("The request body took too long to arrive.", status_code=408,
                                         headers={"Connection": "close"})
            await response(scope, _nothing, send)
        state["answered"] = True


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def uvicorn_config(app: Any, *, host: str, port: int, settings: Any, log_level: str = "warning"):
    """A uvicorn ``Config`` for the shop: h11 with the header timeout from ``settings``; with
    ``IMPASTO_LOG_FORMAT=json`` uvicorn's own lines are JSON too."""
    import uvicorn

    protocol = type("ShopH11Protocol", (HeaderTimeoutH11Protocol,),
                    {"header_timeout_seconds": settings.header_timeout_seconds})
    extra = {"log_config": json_log_config()} if getattr(settings, "log_format", "text") == "json" else {}
    return uvicorn.Config(app, host=host, port=port, proxy_headers=True, http=protocol, log_level=log_level,
                          **extra)


def json_log_config() -> dict[str, Any]:
    """uvicorn's loggers (``uvicorn``, ``uvicorn.error``, ``uvicorn.access``) through ``logs.JsonFormatter``."""
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"json": {"()": "impasto.logs.JsonFormatter"}},
            "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json",
                                  "stream": "ext://sys.stderr"}},
            "loggers": {"uvicorn": {"handlers": ["json"], "propagate": False},
                        "uvicorn.error": {"propagate": True},
                        "uvicorn.access": {"handlers": ["json"], "propagate": False}}}


def run(app: Any, *, host: str, port: int, settings: Any, log_level: str = "warning") -> None:
    """Serve ``app`` until Ctrl-C (uvicorn's signal handling); ``ImpastoError`` if it never started."""
    import uvicorn

    from impasto.errors import ImpastoError

    server = uvicorn.Server(uvicorn_config(app, host=host, port=port, settings=settings, log_level=log_level))
    try:
        server.run()
    except KeyboardInterrupt:
        pass      # uvicorn re-raises the Ctrl-C it shut down for; that stop was the clean one
    if not server.started:
        raise ImpastoError(f"the shop did not start on {host}:{port} (see the log above)")
