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

``addresses`` (``clear``, ``hash``, ``prefix``) does the same for IP addresses:
stream sources and destinations, URI hosts, the remote exporters named in
observation points. ``prefix`` keeps the /24 of IPv4 and /48 of IPv6.

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
import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

PrivacyMode = Literal["clear", "hash", "drop"]
AddressMode = Literal["clear", "hash", "prefix"]
KEY_FILE = "privacy.key"
KEY_BYTES = 32
TOKEN_HEX = 12
_MODES = ("clear", "hash", "drop")
_ADDRESS_MODES = ("clear", "hash", "prefix")

# scheme : user @ rest  (rest: host, port, URI parameters; kept as is)
_SIP_USER = re.compile(r"^(?P<scheme>sips?):(?P<user>[^@]*)@(?P<rest>.*)$", re.IGNORECASE)
# scheme : host-or-number [; params]  (no user part)
_SIP_HOST = re.compile(r"^(?P<scheme>sips?):(?P<host>[^;?]*)(?P<params>[;?].*)?$",
                       re.IGNORECASE)
_TEL = re.compile(r"^(?P<scheme>tel):(?P<number>[^;]*)(?P<params>;.*)?$", re.IGNORECASE)
_VISUAL = re.compile(r"[-.() ]")  # RFC 3966 visual separators: not part of the number
# an IPv4 address, or a bracketed IPv6 one, with an optional port
_HOSTPORT = re.compile(r"^(?P<host>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\])"
                       r"(?P<port>:\d+)?$")
# an address inside a text (a point name like vxlan/198.18.9.1/vni5001)
_ADDR_IN = re.compile(r"(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]*:[0-9A-Fa-f:]*:"
                      r"[0-9A-Fa-f:.]*)(?![\w.:])")


class PrivacyError(ValueError):
    """An unusable privacy setting or key file."""


class Pseudonymiser:
    """One privacy mode, one address mode, one key: every identity in a record, in
    every form, gets the same pseudonym everywhere (an operator can still follow one
    party across calls, the log never shows who it is).

    ``addresses`` (clear, hash, prefix) decides for IP addresses: stream ends, URI
    hosts, remote exporters in point names; ``prefix`` keeps the /24 (IPv4) or /48
    (IPv6) network, enough to tell sites and subnets apart."""

    def __init__(self, mode: PrivacyMode, key: bytes = b"",
                 addresses: AddressMode = "clear") -> None:
        if mode not in _MODES:
            raise PrivacyError(f"privacy mode must be one of {_MODES}, got {mode!r}")
        if addresses not in _ADDRESS_MODES:
            raise PrivacyError(f"addresses must be one of {_ADDRESS_MODES}, got {addresses!r}")
        if (mode != "clear" or addresses == "hash") and len(key) < 16:
            raise PrivacyError(f"privacy mode {mode!r} needs a key of at least 16 bytes")
        self.mode: PrivacyMode = mode
        self.addresses: AddressMode = "clear" if mode == "clear" else addresses
        self._key = key

    def token(self, text: str) -> str:
        """``h:`` + the first 12 hex digits of HMAC-SHA256(key, text)."""
        digest = hmac.new(self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return "h:" + digest.hexdigest()[:TOKEN_HEX]

    def number(self, user: str) -> str:
        """The pseudonym of a user part or number: one per party, whatever its spelling
        (``tel:+1-555-0100`` and ``sip:+15550100@host`` are one party)."""
        bare = _VISUAL.sub("", user)
        return self.token(bare if bare.lstrip("+").isdigit() else user)

    def address(self, text: str) -> str:
        """An IP address (optionally ``:port`` or ``[v6]:port``) as ``addresses`` says."""
        if self.addresses == "clear":
            return text
        m = _HOSTPORT.match(text)
        host, port = (m["host"], m["port"] or "") if m else (text, "")
        bare = host.strip("[]")
        try:
            ip = ipaddress.ip_address(bare)
        except ValueError:
            return text  # not an address: a name, kept
        if self.addresses == "hash":
            return self.token(str(ip)) + port
        net = ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}", strict=False)
        return str(net) + port

    def _host(self, rest: str) -> str:
        """A URI's host[:port][;params]: the address handled, names kept."""
        hostport, sep, params = rest.partition(";")
        return self.address(hostport) + sep + params

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
            return f"{m['scheme']}:{self.number(user)}@{self._host(m['rest'])}"
        m = _TEL.match(value)
        if m:
            return f"{m['scheme']}:{self.number(m['number'])}{m['params'] or ''}"
        m = _SIP_HOST.match(value)
        if m:  # no user part: a host, or a number written where the host goes
            host = m["host"]
            name = host.split(":")[0]
            is_name = any(c.isalpha() for c in name) and not _HOSTPORT.match(host)
            shown = host if is_name else (self.address(host) if _HOSTPORT.match(host)
                                          else self.number(host))
            return f"{m['scheme']}:{shown}{m['params'] or ''}"
        return self.number(value)

    def call_id(self, value: str | None) -> str | None:
        """A Call-ID (hashed whole, in hash and drop modes: it may name a host)."""
        if value is None or self.mode == "clear":
            return value
        return self.token(value)

    def point(self, value: str | None) -> str | None:
        """An observation point name: a remote exporter's address in it handled."""
        if value is None or self.addresses == "clear":
            return value
        return _ADDR_IN.sub(lambda m: self.address(m[1]), value)

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``record`` (a `CallRecord.to_json()`) with every number, URI and
        Call-ID handled, and every address as ``addresses`` says (stream ends, points)."""
        if self.mode == "clear":
            return record
        out = copy.copy(record)
        for field in ("from", "to", "from_", "from_display", "contact",
                      "p_asserted_identity"):
            if field in out and isinstance(out[field], str | None):
                out[field] = self.uri(out[field])
        if "call_id" in out:
            out["call_id"] = self.call_id(out["call_id"])
        if self.addresses != "clear" and out.get("directions"):
            out["directions"] = [self._direction(d) for d in out["directions"]]
        return out

    def _direction(self, d: dict[str, Any]) -> dict[str, Any]:
        d = copy.copy(d)
        if isinstance(d.get("stream"), dict):
            d["stream"] = self._stream(d["stream"])
        d["event_streams"] = [self._stream(e) for e in d.get("event_streams") or []]
        if "point" in d:
            d["point"] = self.point(d["point"])
        d["points"] = [{**p, "point": self.point(p["point"])} for p in d.get("points") or []]
        d["loss_between_points"] = [
            {**h, "upstream": self.point(h["upstream"]),
             "downstream": self.point(h["downstream"])}
            for h in d.get("loss_between_points") or []]
        return d

    def _stream(self, s: dict[str, Any]) -> dict[str, Any]:
        s = dict(s)
        for k in ("src", "dst"):
            if isinstance(s.get(k), str):
                s[k] = self.address(s[k])
        if "point" in s:
            s["point"] = self.point(s["point"])
        return s


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


def read_key(state_dir: Path) -> bytes:
    """The key in ``state_dir`` (never created): `FileNotFoundError` when absent,
    `PrivacyError` when unreadable or corrupt."""
    return _read_key(Path(state_dir) / KEY_FILE)


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
