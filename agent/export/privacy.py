"""Pseudonymisation of phone numbers, SIP URIs and Call-IDs in call records.

DESIGN.md rule 7: numbers and URIs are pseudonymised in logs unless the config
says otherwise. Three modes (``Config.privacy``):

- ``clear``: records as measured;
- ``hash``: a keyed hash (HMAC-SHA256, truncated to 12 hex digits = 48 bits)
  replaces the user part of a SIP URI, keeping its structure readable
  (``sip:h:3f9a12c4e07b@carrier.example``); ``tel:`` numbers and bare numbers
  are hashed whole (``tel:h:...``). The same number gives the same token with
  the same key, so an operator can still follow one party across calls; a
  plain (unkeyed) hash of a phone number would be reversed by enumerating
  the number space in seconds, hence the key;
- ``drop``: numbers and URIs are removed (``null``).

Call-IDs often embed a host name or IP address (``a84b4c76e66710@pc33.example``):
in ``hash`` and ``drop`` modes they are replaced by a token of the whole value,
so records of one call still correlate.

The key is 32 random bytes in ``<state dir>/privacy.key`` (`load_or_create_key`),
created once with mode 0600 and reused, so tokens stay stable across restarts. A key
file that cannot be read or holds anything but 32 bytes is a `PrivacyError` naming it:
the agent does not start, a reload is refused.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import Any, Literal

PrivacyMode = Literal["clear", "hash", "drop"]
KEY_FILE = "privacy.key"
KEY_BYTES = 32
TOKEN_HEX = 12
_MODES = ("clear", "hash", "drop")

# scheme : user @ rest  (rest: host, port, URI parameters; kept as is)
_SIP_USER = re.compile(r"^(?P<scheme>sips?):(?P<user>[^@]*)@(?P<rest>.*)$", re.IGNORECASE)
_TEL = re.compile(r"^(?P<scheme>tel):(?P<number>[^;]*)(?P<params>;.*)?$", re.IGNORECASE)


class PrivacyError(ValueError):
    """An unusable privacy setting or key file."""


class Pseudonymiser:
    """Applies one privacy mode with one key to URIs, numbers and records."""

    def __init__(self, mode: PrivacyMode, key: bytes = b"") -> None:
        if mode not in _MODES:
            raise PrivacyError(f"privacy mode must be one of {_MODES}, got {mode!r}")
        if mode != "clear" and len(key) < 16:
            raise PrivacyError(f"privacy mode {mode!r} needs a key of at least 16 bytes")
        self.mode: PrivacyMode = mode
        self._key = key

    def token(self, text: str) -> str:
        """``h:`` + the first 12 hex digits of HMAC-SHA256(key, text)."""
        digest = hmac.new(self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return "h:" + digest.hexdigest()[:TOKEN_HEX]

    def uri(self, value: str | None) -> str | None:
        """A SIP/tel URI or a number as the mode wants it (``None`` in drop mode)."""
        if value is None or self.mode == "clear":
            return value
        if self.mode == "drop":
            return None
        m = _SIP_USER.match(value)
        if m:
            user, _, password = m["user"].partition(":")
            del password  # a password in a URI is never worth keeping
            return f"{m['scheme']}:{self.token(user)}@{m['rest']}"
        m = _TEL.match(value)
        if m:
            return f"{m['scheme']}:{self.token(m['number'])}{m['params'] or ''}"
        if value.lower().startswith(("sip:", "sips:")):
            return value  # no user part: a host only, nothing personal to hide
        return self.token(value)

    def call_id(self, value: str | None) -> str | None:
        """A Call-ID (hashed whole, in hash and drop modes: it may name a host)."""
        if value is None or self.mode == "clear":
            return value
        return self.token(value)

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``record`` (a `CallRecord.to_json()`) with every number, URI and
        Call-ID handled. Stream addresses and the user agent are kept: they identify
        equipment, not people."""
        if self.mode == "clear":
            return record
        out = copy.copy(record)
        for field in ("from", "to", "from_", "from_display", "contact",
                      "p_asserted_identity"):
            if field in out and isinstance(out[field], str | None):
                out[field] = self.uri(out[field])
        if "call_id" in out:
            out["call_id"] = self.call_id(out["call_id"])
        return out


def load_or_create_key(state_dir: Path) -> bytes:
    """The pseudonymisation key in ``state_dir/privacy.key``: read it, or create it
    (32 random bytes, mode 0600, exclusive create so two starting agents agree).

    Raise `PrivacyError` naming the file when it cannot be read or created, or does not
    hold exactly 32 bytes (a truncated or foreign file: tokens made with it would not
    match the earlier ones, so it is refused rather than used)."""
    path = Path(state_dir) / KEY_FILE
    try:
        return _read_key(path)
    except (FileNotFoundError, NotADirectoryError):
        pass  # absent (a path under a file cannot hold one either): create it
    key = os.urandom(KEY_BYTES)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return _read_key(path)  # another process won the race: use its key
    except OSError as exc:
        raise PrivacyError(f"{path}: cannot create the privacy key (state_dir "
                           f"{state_dir}): {exc.strerror or exc}") from None
    try:
        written, reason = os.write(fd, key), "short write"
        os.fsync(fd)
    except OSError as exc:
        written, reason = -1, exc.strerror or str(exc)
    finally:
        os.close(fd)
    if written != KEY_BYTES:
        with contextlib.suppress(OSError):
            path.unlink()  # never leave a short key behind for the next start
        raise PrivacyError(f"{path}: cannot write the privacy key: {reason}")
    return key


def _read_key(path: Path) -> bytes:
    """The key file's bytes; `FileNotFoundError` (`NotADirectoryError`) when absent,
    else `PrivacyError`."""
    try:
        key = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise
    except OSError as exc:
        raise PrivacyError(f"{path}: cannot read the privacy key: "
                           f"{exc.strerror or exc}") from None
    if len(key) != KEY_BYTES:
        raise PrivacyError(f"{path}: corrupt privacy key: {len(key)} bytes, expected "
                           f"{KEY_BYTES}. Restore it from a backup, or remove it to have a "
                           "new one created (pseudonyms then change)")
    return key
