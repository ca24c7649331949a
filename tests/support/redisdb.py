"""An empty Redis database of a test's own (1..15), flushed afterwards: the farm's brokers and
the shop's shared limits."""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Iterator

import numpy as np
import pytest


@contextlib.contextmanager
def redis_database(redis_url: str) -> Iterator[str]:
    """An empty Redis database (1..15), flushed afterwards; yields its URL."""
    import redis

    base = urllib.parse.urlsplit(redis_url)._replace(path="").geturl()
    for number in np.random.default_rng().permutation(np.arange(1, 16)):
        client = redis.Redis.from_url(f"{base}/{number}")
        if client.dbsize() == 0:
            break
    else:
        reason = "no empty Redis database among 1..15"
        if os.environ.get("IMPASTO_REQUIRE_SERVICES") == "1":
            pytest.fail(f"required service missing: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield f"{base}/{number}"
    finally:
        client.flushdb()
        client.close()
