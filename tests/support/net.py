"""A free TCP port on 127.0.0.1 (for the test servers: moto, SMTP, the shop, the farm), and
``wait_until``, the tests' one polling loop."""

from __future__ import annotations

import socket
import time

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, what: str, *, seconds: float, on_timeout=None, poll: float = 0.1):
    """``condition()``'s first truthy value, polled every ``poll`` s; a test failure after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            details = on_timeout() if on_timeout else ""
            pytest.fail(f"gave up after {seconds:.0f} s waiting for {what}\n{details}", pytrace=False)
        time.sleep(poll)
