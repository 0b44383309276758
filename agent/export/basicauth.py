"""HTTP basic authentication (RFC 7617) against the web config's bcrypt hashes.

bcrypt is slow on purpose: ~70 ms at cost 10, which is what makes a stolen hash
expensive to crack, and what would make every scrape cost a core-tenth. So, as the
exporter-toolkit does, a successful check is cached: the key is an HMAC (under a
random per-process key) of user, stored hash and password, never the password itself;
a changed hash (a reloaded file) misses the cache by construction. Failures are not
cached, and a guess always costs one bcrypt: an unknown user is checked against a
dummy hash of the same cost, so the time of a 401 does not tell which users exist.

`BasicAuth.cached` is the cheap part (no bcrypt), `BasicAuth.verify` the expensive
one; the server answers cache hits at once and queues the rest on a bounded pool, so
a password-guessing client slows down only other guesses, never a scrape whose
credentials were seen before, nor the capture loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping

import bcrypt

CACHE_SIZE = 256  # successful (user, password) pairs remembered
BCRYPT_MAX_PASSWORD = 72  # bytes bcrypt reads (bcrypt 5 refuses longer ones)


def parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    """``Authorization: Basic base64(user:password)`` -> (user, password); None when the
    header is missing or is not well-formed basic credentials."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    return user, password


class BasicAuth:
    """Checks credentials against ``users`` (name -> bcrypt hash). Thread-safe."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {u.encode(): h.encode() for u, h in users.items()}
        cost = max(int(h[4:6]) for h in self._users.values()) if self._users else 4
        # One bcrypt at load, so an unknown user costs what a known one does.
        self._dummy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(cost))
        self._key = os.urandom(32)
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def _cache_key(self, user: bytes, password: bytes) -> bytes:
        stored = self._users.get(user, b"")
        msg = b"\0".join((user, stored, password))
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def cached(self, credentials: tuple[bytes, bytes]) -> bool:
        """True when these credentials passed `verify` before (no bcrypt)."""
        key = self._cache_key(*credentials)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return True
        return False

    def verify(self, credentials: tuple[bytes, bytes]) -> bool:
        """The bcrypt check (tens of milliseconds); a success is cached."""
        user, password = credentials
        stored = self._users.get(user)
        candidate = password[:BCRYPT_MAX_PASSWORD]
        ok = bcrypt.checkpw(candidate, stored if stored is not None else self._dummy)
        ok = ok and stored is not None and len(password) <= BCRYPT_MAX_PASSWORD
        if ok:
            key = self._cache_key(user, password)
            with self._lock:
                self._cache[key] = None
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return ok
