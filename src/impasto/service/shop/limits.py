"""Limits that hold across every process of the shop: in Redis when ``IMPASTO_REDIS_URL`` is set.

Behind one process the in-memory ``security.RateLimiter`` and ``security.AdminSessions`` are
exact. Behind several (uvicorn ``--workers``, replicas behind a load balancer) each would
count alone, multiplying every limit and forgetting a logout the next process never saw;
with a Redis URL the same objects count in Redis instead:

- ``RedisRateLimiter``: the same sliding window (the ``limits`` package's moving window,
  one sorted list per key, checked and recorded atomically by a Lua script), the same
  methods (``hit``, ``record``, ``blocked``, ``retry_after_seconds``).
- ``RedisAdminSessions``: a revoked session id is a key that expires with the cookie.

Redis unreachable: the limiter lets the request through and logs, rather than answering
every upload and sign-in with a 500 (the password, the CSRF check and the caps still
apply); the admin's session cookies are refused (HTTP Basic still works), so a logged-out
session cannot come back during the outage.
``make_limiters`` picks the backend from the settings.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from impasto.service.shop.security import ADMIN_SESSION_SECONDS, AdminSessions, LoginGuard, RateLimiter

log = logging.getLogger(__name__)

PREFIX = "impasto"


class RedisRateLimiter:
    """At most ``limit`` hits per key in any ``window_seconds``, counted in Redis (``name``
    keeps one limit's keys apart from another's)."""

    def __init__(self, limit: int, window_seconds: float = 3600.0, *, url: str, name: str) -> None:
        from limits import RateLimitItemPerSecond
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        self.limit, self.window_seconds = limit, window_seconds
        self._item = RateLimitItemPerSecond(max(limit, 1), max(int(window_seconds), 1),
                                            namespace=f"{PREFIX}:{name}")
        self._strategy = MovingWindowRateLimiter(storage_from_string(url))

    def _safely(self, call, *args: Any, default: Any) -> Any:
        try:
            return call(self._item, *args)
        except Exception:     # redis.ConnectionError and friends: no limit rather than no shop
            log.warning("rate limit %s: Redis unreachable, not limiting", self._item.namespace, exc_info=True)
            return default

    def hit(self, key: str) -> bool:
        return self.limit <= 0 or self._safely(self._strategy.hit, key, default=True)

    def record(self, key: str) -> None:
        # over the limit the hit is not counted again: the key is locked until its oldest ages out
        if self.limit > 0:
            self._safely(self._strategy.hit, key, default=True)

    def blocked(self, key: str) -> bool:
        return self.limit > 0 and not self._safely(self._strategy.test, key, default=True)

    def retry_after_seconds(self, key: str) -> int:
        if self.limit <= 0:
            return 0
        stats = self._safely(self._strategy.get_window_stats, key, default=None)
        if stats is None or stats.remaining > 0:
            return 0
        return max(1, int(stats.reset_time - time.time()) + 1)


class RedisAdminSessions:
    """``AdminSessions`` in Redis: a logout in one process ends the session in all of them.

    Redis unreachable: every session counts as revoked (a logged-out cookie must not come
    back to life in an outage); HTTP Basic, which has no session, still signs the admin in.
    """

    def __init__(self, *, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)

    def revoke(self, session_id: str) -> None:
        try:
            self._client.set(f"{PREFIX}:admin-revoked:{session_id}", b"1", ex=ADMIN_SESSION_SECONDS)
        except Exception:
            log.error("admin logout not recorded: Redis unreachable (the browser's cookie is cleared)",
                      exc_info=True)

    def revoked(self, session_id: str) -> bool:
        try:
            return bool(self._client.exists(f"{PREFIX}:admin-revoked:{session_id}"))
        except Exception:
            log.warning("admin sessions: Redis unreachable, refusing session cookies", exc_info=True)
            return True


def make_limiters(settings: Any) -> dict[str, Any]:
    """The shop's limits (``upload_limit_ip``, ``upload_limit_email``, ``login_guard``,
    ``admin_sessions``): in Redis with ``Settings.redis_url``, else in this process."""
    limit, url = settings.rate_limit_per_hour, settings.redis_url
    if not url:
        return {"upload_limit_ip": RateLimiter(limit), "upload_limit_email": RateLimiter(limit),
                "login_guard": LoginGuard(), "admin_sessions": AdminSessions()}

    def limiter(count: int, window_seconds: float, name: str) -> RedisRateLimiter:
        return RedisRateLimiter(count, window_seconds, url=url, name=name)

    return {"upload_limit_ip": limiter(limit, 3600.0, "uploads-ip"),
            "upload_limit_email": limiter(limit, 3600.0, "uploads-email"),
            "login_guard": LoginGuard(
                limiter=lambda name, count, window: limiter(count, window, f"login-{name}")),
            "admin_sessions": RedisAdminSessions(url=url)}
