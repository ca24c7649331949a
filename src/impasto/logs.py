"""Log lines for machines: ``IMPASTO_LOG_FORMAT=json``, and the ids every line can carry.

Two context variables say what a line is about: ``REQUEST_ID`` (set by the shop's
``RequestMiddleware`` for one request, and returned as ``X-Request-ID``) and ``JOB_ID``
(set by ``render_job.run_job`` while it renders, in a shop thread or a farm worker). Both
follow the work into ``run_in_threadpool`` (it copies the context), not into threads a
task starts itself.

``JsonFormatter`` writes one JSON object a line — ``time`` (UTC, ISO 8601), ``level``,
``logger``, ``message``, ``request_id`` and ``job_id`` when set, ``exception`` with the
traceback — so a log shipper needs no parser. Text stays the default: it is what a person
at a terminal reads.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

REQUEST_ID: ContextVar[str | None] = ContextVar("impasto_request_id", default=None)
JOB_ID: ContextVar[int | None] = ContextVar("impasto_job_id", default=None)

# What an incoming X-Request-ID may be (a proxy's, a client's): short, no spaces or quotes,
# nothing a log viewer would interpret. Anything else is replaced by one of ours.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")
LOG_FORMATS = ("text", "json")

P = ParamSpec("P")
R = TypeVar("R")


def request_id_from(header: str | None) -> str:
    """The incoming id when it is sane, else a new random one (32 hex digits)."""
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return secrets.token_hex(16)


@contextlib.contextmanager
def job_context(job_id: int) -> Iterator[None]:
    """Lines logged inside carry ``job_id``."""
    token = JOB_ID.set(job_id)
    try:
        yield
    finally:
        JOB_ID.reset(token)


def with_job_context(function: Callable[P, R]) -> Callable[P, R]:
    """``function(job_id, ...)`` run inside ``job_context(job_id)``."""
    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with job_context(args[0] if args else kwargs["job_id"]):
            return function(*args, **kwargs)
    return wrapper


class JsonFormatter(logging.Formatter):
    """One line of JSON per record, with the request and job ids of its context."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        request_id, job_id = REQUEST_ID.get(), JOB_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        if job_id is not None:
            line["job_id"] = job_id
        if record.processName and record.processName != "MainProcess":
            line["process"] = record.processName
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter_for(log_format: str, *, text: str) -> logging.Formatter:
    """``JsonFormatter`` for ``json``; a plain ``logging.Formatter(text)`` otherwise."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(text)
