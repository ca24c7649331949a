"""The shop's small security kit: the secret key, signed values, CSRF, admin login, rate limits.

- **Secret key**: ``Settings.secret_key``, else a random key generated once per data dir
  (``<data_dir>/secret_key``, mode 0600), so signed URLs and cookies survive a restart.
- **Signed values** (``Signer``): ``value.expiry.mac`` with an HMAC-SHA256 over a
  *purpose* too, so a CSRF token can never pass as an admin session or the reverse.
- **CSRF**: signed double submit, bound to the session. The ``impasto_csrf`` cookie holds a
  random nonce; every form carries ``csrf_token`` = the nonce signed with the secret *and*
  the admin session it was made for (none for a customer, the session id for a signed-in
  admin, ``basic`` for HTTP Basic). A cross-site page can make the browser send the cookie
  but can neither read it nor forge its signature. A nonce and token that a stranger
  fetched for himself and plants into the admin's browser (from a sibling domain, or over
  plain http) were signed for no session, so they fail on every admin form. On an https
  site the cookies carry the ``__Host-`` prefix, which a sibling domain or an http page
  cannot set at all.
- **Admin**: a login form sets ``impasto_admin``, a signed, expiring, HttpOnly,
  SameSite=Strict cookie naming a random session id; logging out revokes that id
  (``AdminSessions``), so the cookie stops working at once, not 12 hours later. HTTP Basic
  works as well (scripts, curl). Passwords compare in constant time. No
  ``Settings.admin_password``: the admin stays closed (403) for everyone.
- **Sign-in lockout** (``LoginGuard``, for the form and HTTP Basic alike): failed attempts
  count per IP *and* user name (10 in 15 minutes) and per user name from everywhere (100),
  and a locked key is refused before its password is looked at, so guessing stops. A
  browser that signed in before carries a signed ``impasto_device`` cookie; its attempts
  count on that device alone, so an attacker, who has no such cookie, cannot lock the owner
  out of the admin from a browser the owner has used — only a first sign-in from a new
  browser on the attacker's own network, or during a distributed attack, has to wait.
- **Rate limits** (``RateLimiter``): a sliding window per key (an IP, an email) kept in
  memory — exact behind one process. Behind several, set ``IMPASTO_REDIS_URL``: the limits
  and the revoked admin sessions are then kept in Redis (``shop/limits.py``), so every
  process counts the same hits and honours the same logouts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from pathlib import Path

from impasto.errors import SecurityError
from impasto.service.core.untrusted import MAX_TIMESTAMP, parse_int

log = logging.getLogger(__name__)

CSRF_COOKIE = "impasto_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
ADMIN_COOKIE = "impasto_admin"
ADMIN_SESSION_SECONDS = 12 * 3600
DEVICE_COOKIE = "impasto_device"
DEVICE_SECONDS = 90 * 24 * 3600
BASIC_BINDING = "basic"           # what a CSRF token is bound to for an HTTP Basic admin
SECRET_FILE = "secret_key"
MIN_SECRET_BYTES = 16


def load_secret(secret_key: str, data_dir: Path) -> bytes:
    """The signing key: the configured one, else one generated and kept in ``data_dir``."""
    if secret_key:
        if len(secret_key.encode()) < MIN_SECRET_BYTES:
            raise SecurityError(f"IMPASTO_SECRET_KEY must be at least {MIN_SECRET_BYTES} characters")
        return secret_key.encode()
    path = Path(data_dir) / SECRET_FILE
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:   # O_EXCL: two processes starting together agree on one key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    log.info("generated a new secret key in %s", path)
    return key.encode()


def _read_secret(path: Path) -> bytes:
    key = path.read_text().strip()
    if len(key) < MIN_SECRET_BYTES:
        raise SecurityError(f"the secret key in {path} is too short; delete it to make a new one")
    return key.encode()


class Signer:
    """HMAC-SHA256 signatures over ``purpose``, ``value`` and an expiry (unix seconds).

    Signs with ``secret``; also accepts what ``old_secrets`` signed (``core.signing.Keyring``),
    so a key rotation ends no session, cookie or form before its own expiry.
    """

    def __init__(self, secret: bytes, *, old_secrets: Iterable[bytes] = (),
                 clock: Callable[[], float] = time.time) -> None:
        from impasto.service.core.signing import Keyring

        if len(secret) < MIN_SECRET_BYTES or any(len(old) < MIN_SECRET_BYTES for old in old_secrets):
            raise SecurityError("a signing secret needs at least 16 bytes")
        self._keys = Keyring(secret, old_secrets)
        self.clock = clock

    @staticmethod
    def _message(purpose: str, value: str, expires: int) -> bytes:
        # surrogatepass: a lone surrogate (JSON can carry one) must not make unsign raise
        return "\0".join([purpose, value, str(expires)]).encode("utf-8", "surrogatepass")

    def mac(self, purpose: str, value: str, expires: int) -> str:
        return self._keys.mac(self._message(purpose, value, expires))

    def sign(self, purpose: str, value: str, *, seconds: int) -> str:
        """``value.expires.mac``; ``value`` must not contain ``.``."""
        if "." in value:
            raise ValueError("a signed value may not contain '.'")
        expires = int(self.clock()) + seconds
        return f"{value}.{expires}.{self.mac(purpose, value, expires)}"

    def unsign(self, purpose: str, token: str | None) -> str | None:
        """The value of a valid, unexpired token; None for anything else (never raises)."""
        if not token or not isinstance(token, str) or len(token) > 512:
            return None
        parts = token.split(".")
        expires = parse_int(parts[1], maximum=MAX_TIMESTAMP) if len(parts) == 3 else None
        if expires is None:
            return None
        value, mac = parts[0], parts[2]
        if expires < self.clock():
            return None
        if not self._keys.verify(self._message(purpose, value, expires), mac):
            return None
        return value


# --- CSRF --------------------------------------------------------------------------------

CSRF_SECONDS = 7 * 24 * 3600


def cookie_name(name: str, *, secure: bool) -> str:
    """``__Host-name`` on an https site: browsers then refuse the cookie from a sibling
    domain, from plain http, or with a Domain or a Path other than ``/``."""
    return f"__Host-{name}" if secure else name


def new_csrf_nonce() -> str:
    return secrets.token_urlsafe(24)


def csrf_token_for(signer: Signer, nonce: str, *, session: str = "") -> str:
    """The form field value for the cookie's nonce and the visitor's admin session ("" for
    none); its own expiry: a week-old page fails."""
    return signer.sign(f"csrf:{session}", nonce, seconds=CSRF_SECONDS)


def csrf_valid(signer: Signer, cookie_nonce: str | None, submitted: str | None, *, session: str = "") -> bool:
    """Whether ``submitted`` signs the nonce in the visitor's cookie for this same session."""
    if not cookie_nonce or not isinstance(cookie_nonce, str):
        return False
    value = signer.unsign(f"csrf:{session}", submitted)
    return value is not None and hmac.compare_digest(value.encode(), cookie_nonce.encode("utf-8", "replace"))


# --- admin -------------------------------------------------------------------------------

def password_matches(expected: str, user: str, password: str, *, expected_user: str) -> bool:
    """Constant-time comparison of both the user name and the password."""
    ok_user = hmac.compare_digest(user.encode("utf-8", "replace"), expected_user.encode())
    ok_password = hmac.compare_digest(password.encode("utf-8", "replace"), expected.encode())
    return bool(expected) and ok_user and ok_password


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic …`` header, else None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def admin_session(signer: Signer, password: str) -> str:
    """A new admin cookie naming a random session id; bound to the password, so changing
    it logs every session out."""
    return signer.sign(f"admin:{_fingerprint(password)}", secrets.token_urlsafe(16),
                       seconds=ADMIN_SESSION_SECONDS)


def admin_session_id(signer: Signer, password: str, token: str | None) -> str | None:
    """The session id of a valid admin cookie (revocation is the caller's: ``AdminSessions``)."""
    if not password:
        return None
    return signer.unsign(f"admin:{_fingerprint(password)}", token) or None


def device_token(signer: Signer, password: str) -> str:
    """The ``impasto_device`` cookie set on a successful sign-in: this browser is known."""
    return signer.sign(f"device:{_fingerprint(password)}", secrets.token_urlsafe(16), seconds=DEVICE_SECONDS)


def device_id(signer: Signer, password: str, token: str | None) -> str | None:
    if not password:
        return None
    return signer.unsign(f"device:{_fingerprint(password)}", token) or None


class AdminSessions:
    """Admin session ids revoked by a logout, remembered until their cookies would expire."""

    def __init__(self, *, max_ids: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.max_ids, self.clock = max_ids, clock
        self._revoked: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def revoke(self, session_id: str) -> None:
        with self._lock:
            now = self.clock()
            self._revoked[session_id] = now + ADMIN_SESSION_SECONDS
            # oldest first: drop the ones whose cookies have expired anyway, and any over the cap
            while self._revoked and (len(self._revoked) > self.max_ids
                                     or next(iter(self._revoked.values())) < now):
                self._revoked.popitem(last=False)

    def revoked(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._revoked


def _fingerprint(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()[:16]


# --- rate limits -------------------------------------------------------------------------

class RateLimiter:
    """At most ``limit`` hits per key in any ``window_seconds`` (a sliding window).

    ``hit(key)`` records a hit and says whether it is allowed; a refused hit is not
    recorded, so a client that backs off gets in again when its oldest hit ages out.
    At most ``max_keys`` keys are remembered (the least recently used are dropped), so a
    flood of spoofed keys cannot grow memory without bound.
    """

    def __init__(self, limit: int, window_seconds: float = 3600.0, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_seconds, self.max_keys, self.clock = limit, window_seconds, max_keys, clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str) -> bool:
        """Record a hit if ``key`` is under its limit; whether it was."""
        return self._hit(key, record_refused=False)

    def record(self, key: str) -> None:
        """Count a hit whether or not the key is over its limit (a failed sign-in)."""
        self._hit(key, record_refused=True)

    def blocked(self, key: str) -> bool:
        """Whether ``key`` is at its limit now (records nothing)."""
        if self.limit <= 0:
            return False
        with self._lock:
            hits = self._hits.get(key)
            if not hits:
                return False
            self._expire(hits, self.clock())
            return len(hits) >= self.limit

    def _hit(self, key: str, *, record_refused: bool) -> bool:
        if self.limit <= 0:
            return True
        now = self.clock()
        with self._lock:
            hits = self._hits.pop(key, None) or deque(maxlen=self.limit)
            self._expire(hits, now)
            allowed = len(hits) < self.limit
            if allowed or record_refused:
                hits.append(now)        # maxlen: a flood of failures keeps only the latest
            self._hits[key] = hits
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
            return allowed

    def _expire(self, hits: deque[float], now: float) -> None:
        while hits and hits[0] <= now - self.window_seconds:
            hits.popleft()

    def retry_after_seconds(self, key: str) -> int:
        """Seconds until ``key`` may hit again (0 when it may now)."""
        with self._lock:
            hits = self._hits.get(key)
            if not hits or len(hits) < self.limit:
                return 0
            return max(1, int(hits[0] + self.window_seconds - self.clock()) + 1)


class LoginGuard:
    """Failed admin sign-ins (form and HTTP Basic), counted so no attacker alone locks the owner out.

    An attempt from a known browser (``device``: the id in its ``impasto_device`` cookie, or
    its valid admin session) counts on that device only. Any other attempt counts per IP and
    user name and per user name overall. Only failures count: the right password from an
    unlocked key leaves no trace. A locked key is refused before the password is checked.
    """

    def __init__(self, *, per_source: int = 10, per_user: int = 100, window_seconds: float = 900.0,
                 clock: Callable[[], float] = time.monotonic,
                 limiter: Callable[[str, int, float], RateLimiter] | None = None) -> None:
        # limiter(name, limit, window): another store's limiter (shop/limits.py), named apart
        make = limiter or (lambda name, count, window: RateLimiter(count, window, clock=clock))
        self.per_source = make("source", per_source, window_seconds)
        self.per_user = make("user", per_user, window_seconds)

    def _keys(self, ip: str, user: str, device: str | None) -> list[tuple[RateLimiter, str]]:
        if device:
            return [(self.per_source, f"device:{device}")]
        user = user[:128]
        return [(self.per_source, f"ip:{ip}\0{user}"), (self.per_user, f"user:{user}")]

    def retry_after_seconds(self, *, ip: str, user: str, device: str | None = None) -> int:
        """0 when this attempt may be checked, else seconds until it may."""
        waits = [limiter.retry_after_seconds(key) for limiter, key in self._keys(ip, user, device)
                 if limiter.blocked(key)]
        return max(waits, default=0)

    def failed(self, *, ip: str, user: str, device: str | None = None) -> None:
        for limiter, key in self._keys(ip, user, device):
            limiter.record(key)
