"""The keys that sign: the current one, and the previous ones still accepted during a rotation.

One ``Keyring`` is behind every signature the service makes — the shop's ``Signer`` (CSRF
tokens, admin sessions, device cookies) and ``LocalStorage``'s file URLs. It signs with
the current key only and accepts a signature by any key it holds, so rotating
``IMPASTO_SECRET_KEY`` (the old one moved to ``IMPASTO_OLD_SECRET_KEYS``) keeps every
signed value valid until its own expiry; drop the old key once the longest of them
(the 90-day device cookie; a week for CSRF tokens) has run out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Keyring:
    """HMAC-SHA256 with ``current``; ``verify`` also accepts the ``old`` keys' signatures."""

    def __init__(self, current: bytes, old: Iterable[bytes] = ()) -> None:
        self._current = bytes(current)
        self._all = [self._current, *(bytes(key) for key in old if key and bytes(key) != self._current)]

    def mac(self, message: bytes) -> str:
        return _b64(hmac.new(self._current, message, hashlib.sha256).digest())

    def verify(self, message: bytes, mac: str) -> bool:
        """Whether ``mac`` signs ``message`` under any key held (each compared in constant time)."""
        given = mac.encode("utf-8", "replace") if isinstance(mac, str) else b""
        found = False
        for key in self._all:   # no early exit: the time taken does not say which key matched
            expected = _b64(hmac.new(key, message, hashlib.sha256).digest()).encode()
            found |= hmac.compare_digest(expected, given)
        return found


def split_keys(value: str) -> list[bytes]:
    """``IMPASTO_OLD_SECRET_KEYS``: keys separated by commas or whitespace."""
    return [part.encode() for part in value.replace(",", " ").split()]
