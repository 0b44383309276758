"""SIP header fields: names, the ordered header table, and the structured values
the rest of the probe needs (name-addr, CSeq, Via).

Theory of operation
-------------------
A header line is kept as (canonical name, raw value), in wire order. Names are
case-insensitive (RFC 3261 §7.3.1) and have compact forms (§7.3.3 plus the
extensions that registered one), so both are folded to one canonical spelling
at parse time and looked up by lower-case key. Several header fields may also
be sent as one line with comma-separated values (§7.3.1: "if and only if the
entire field-value for that header field is defined as a comma-separated
list"); for those, `get_all` splits on commas outside quoted strings and angle
brackets, so `Via: a, b` and two `Via:` lines read the same. Headers that are
not lists (From, To, WWW-Authenticate, Date ...) are never split: their commas
are part of the value.

The structured parsers here (`parse_name_addr`, `parse_cseq`, `parse_via`) are
total over `str`: they return a value or raise `SipParseError`, nothing else.
`name_addr_tag` and `via_branch` make the same checks and raise in the same
cases, but return only the one parameter a dialog reads of every message
(`param_value`), without the parameter tuples: the message parser's lean path
(see `agent.sip.message`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from agent.sip.errors import SipParseError

# RFC 3261 §7.3.3 (c e f i k l m s t v) and the extensions that define a
# compact form: a/j/d RFC 3841, b RFC 3892, n/y RFC 4474, o/u RFC 6665,
# r RFC 3515, x RFC 4028.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# Spellings that str.title() gets wrong, and the common ones for display.
_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        *COMPACT_FORMS.values(),
        "Call-ID", "CSeq", "WWW-Authenticate", "Max-Forwards", "Record-Route", "Route",
        "MIME-Version", "RAck", "RSeq", "P-Asserted-Identity", "P-Preferred-Identity",
        "Min-SE", "SIP-ETag", "SIP-If-Match", "User-Agent", "Proxy-Authenticate",
        "Proxy-Authorization", "Authorization", "Authentication-Info", "Content-Disposition",
    )
}

# Header fields whose whole value is a comma-separated list (RFC 3261 §20 and
# the extension RFCs), so one line may carry several values.
LIST_HEADERS: frozenset[str] = frozenset(
    name.lower()
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language",
        "Error-Info", "In-Reply-To", "Path", "Proxy-Require", "Reason", "Record-Route",
        "Require", "Route", "Security-Client", "Security-Server", "Security-Verify",
        "Service-Route", "Supported", "Unsupported", "Via", "Warning",
        "P-Asserted-Identity", "P-Preferred-Identity", "Accept-Contact", "Reject-Contact",
        "Request-Disposition", "Privacy",
    )
)

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")


@functools.lru_cache(maxsize=1024)  # header names repeat in every message; bounded
def canonical_name(name: str) -> str:
    """Canonical spelling of a header name; compact forms expanded (RFC 3261 §7.3.3)."""
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    known = _CANONICAL.get(lower)
    if known is not None:
        return known
    return "-".join(part.capitalize() for part in name.split("-"))


@functools.lru_cache(maxsize=1024)  # bounded; names repeat in every message
def lookup_key(name: str) -> str:
    """The key a header is indexed and looked up by: its canonical name, lower-case."""
    return canonical_name(name).lower()


@functools.lru_cache(maxsize=1024)  # bounded; names repeat in every message
def field_name(name: str) -> str | None:
    """Canonical name of a header line's name, None if it is not a token."""
    return canonical_name(name) if _TOKEN_RE.match(name) is not None else None


def is_token(text: str) -> bool:
    """True if `text` is an RFC 3261 §25.1 token (method names, header names)."""
    return _TOKEN_RE.match(text) is not None


def split_outside_quotes(value: str, sep: str) -> list[str]:
    """Split on `sep` where it is outside "quoted strings" and <angle brackets>.

    Empty elements are dropped and whitespace stripped; a backslash escapes the
    next character inside a quoted string (RFC 3261 §25.1 quoted-pair).
    """
    if '"' not in value and "<" not in value:  # the common case: nothing to protect
        return [p for p in (x.strip() for x in value.split(sep)) if p]
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == sep and not in_angle:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p.strip() for p in parts if p.strip()]


@dataclass(frozen=True, slots=True)
class Headers:
    """Header fields in wire order, canonical names, case-insensitive access."""

    fields: tuple[tuple[str, str], ...]
    _index: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index: dict[str, tuple[str, ...]] = {}
        for name, value in self.fields:  # most names occur once: one tuple each
            key = name.lower()
            seen = index.get(key)
            index[key] = (value,) if seen is None else (*seen, value)
        object.__setattr__(self, "_index", index)

    def _key(self, name: str) -> str:
        return lookup_key(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def lines(self, name: str) -> tuple[str, ...]:
        """Raw values of every line of this header, in order (never split)."""
        return self._index.get(self._key(name), ())

    def get_all(self, name: str) -> list[str]:
        """Every value of this header in order; list headers split on commas."""
        key = self._key(name)
        raw = self._index.get(key, ())
        if key not in LIST_HEADERS:
            return list(raw)
        out: list[str] = []
        for line in raw:
            out.extend(split_outside_quotes(line, ","))
        return out

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of this header (first list element for list headers): what
        ``get_all(name)[0]`` is, splitting no more lines than it takes."""
        key = self._key(name)
        raw = self._index.get(key)
        if not raw:
            return default
        if key not in LIST_HEADERS:
            return raw[0]
        for line in raw:
            parts = split_outside_quotes(line, ",")
            if parts:
                return parts[0]
        return default


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From/To/Contact value: display name, URI and header parameters (RFC 3261 §20.10)."""

    display: str | None
    uri: str
    params: tuple[tuple[str, str | None], ...]

    def param(self, name: str) -> str | None:
        return find_param(self.params, name)

    @property
    def tag(self) -> str | None:
        return self.param("tag")


def find_param(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    """Value of header parameter ``name`` (names are case-insensitive, stored lower-case)."""
    lower = name.lower()
    for key, value in params:
        if key == lower:
            return value
    return None


@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq: sequence number (32-bit) and method (RFC 3261 §20.16)."""

    number: int
    method: str


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: transport, sent-by host/port and parameters (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...]

    def param(self, name: str) -> str | None:
        return find_param(self.params, name)

    @property
    def branch(self) -> str | None:
        return self.param("branch")


def parse_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """`;a=b;c` -> (("a", "b"), ("c", None)); names lower-cased, quotes kept."""
    out: list[tuple[str, str | None]] = []
    for item in split_outside_quotes(text, ";"):
        name, eq, value = item.partition("=")
        out.append((name.strip().lower(), value.strip() if eq else None))
    return tuple(out)


def param_value(text: str, name: str) -> str | None:
    """``find_param(parse_params(text), name)`` without building the parameter tuple:
    the one parameter a dialog reads of a value (From/To ``tag``, Via ``branch``).
    ``name`` is lower case. Text with quotes or angle brackets takes `parse_params`."""
    if '"' in text or "<" in text:
        return find_param(parse_params(text), name)
    for item in text.split(";"):  # what split_outside_quotes does here, less the list
        key, eq, value = item.partition("=")
        if key.strip().lower() == name:
            return value.strip() if eq else None
    return None


_QUOTED_PAIR_RE = re.compile(r"\\(.)")
_DISPLAY_RE = re.compile(r'"((?:[^"\\]|\\.)*)"\s*')
# The common name-addr as `_name_addr_parts` takes it apart: a quoted display name
# (the same quoted-string as _DISPLAY_RE) or text without a quote first, the <URI> up
# to the first ">", then no parameter or only a plain tag. Anything else (an
# addr-spec, more parameters, a value it refuses) goes the long way.
_NAME_ADDR_TAG_RE = re.compile(r'(?:"(?:[^"\\]|\\.)*"\s*|(?!")[^<]*)<([^>]*)>(?:;tag=([^;"<]*))?\Z')


def _unquote(text: str) -> str:
    return _QUOTED_PAIR_RE.sub(r"\1", text) if "\\" in text else text


def parse_name_addr(value: str) -> NameAddr:
    """Parse a name-addr or addr-spec with header parameters (RFC 3261 §20.10, §25.1).

    In the addr-spec form (no angle brackets) everything after the first `;`
    is a header parameter, not a URI parameter (§20.10).
    """
    display, uri, rest = _name_addr_parts(value)
    return NameAddr(display=display, uri=uri, params=parse_params(rest))


def name_addr_tag(value: str) -> str | None:
    """``parse_name_addr(value).tag``, raising `SipParseError` exactly where that does,
    without building the name-addr: what a dialog reads of every From and To."""
    text = value.strip()
    match = _NAME_ADDR_TAG_RE.match(text)
    if match is not None and match.group(1).strip():
        tag = match.group(2)
        return tag.strip() if tag is not None else None
    return param_value(_name_addr_parts(text)[2], "tag")  # other parameters, or the error


def _name_addr_parts(value: str) -> tuple[str | None, str, str]:
    """(display name, URI, header-parameter text) of a name-addr or addr-spec."""
    text = value.strip()
    display: str | None = None
    if text.startswith('"'):
        match = _DISPLAY_RE.match(text)
        if match is None:
            raise SipParseError("unterminated quoted display name")
        display = _unquote(match.group(1))
        text = text[match.end() :]
        if not text.startswith("<"):
            raise SipParseError("quoted display name without <uri>")
    lt = text.find("<")
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError("unterminated <uri>")
        if display is None:
            display = text[:lt].strip() or None
        uri = text[lt + 1 : gt].strip()
        rest = text[gt + 1 :]
    else:
        uri, _, rest = text.partition(";")
        uri = uri.strip()
        rest = ";" + rest
    if not uri:
        raise SipParseError("empty URI in name-addr")
    return display, uri, rest


_CSEQ_RE = re.compile(r"\s*([0-9]{1,10})\s+([A-Za-z0-9\-.!%*_+`'~]+)\s*\Z")


def parse_cseq(value: str) -> CSeq:
    """`CSeq: 314159 INVITE` (RFC 3261 §20.16; number < 2**31 by §8.1.1.5, we allow 32 bits)."""
    match = _CSEQ_RE.match(value)  # what the full checks accept (\s is what split() splits)
    if match is not None and int(match.group(1)) <= 0xFFFFFFFF:
        return CSeq(number=int(match.group(1)), method=match.group(2))
    return cseq_checked(value)


def cseq_checked(value: str) -> CSeq:
    """`parse_cseq` without its regex shortcut: the checks one by one."""
    parts = value.split()
    if len(parts) != 2 or not parts[0].isascii() or not parts[0].isdigit():
        raise SipParseError(f"bad CSeq {value[:40]!r}")
    if len(parts[0]) > 10 or int(parts[0]) > 0xFFFFFFFF:
        raise SipParseError("CSeq number out of range")
    if not is_token(parts[1]):
        raise SipParseError("bad CSeq method")
    return CSeq(number=int(parts[0]), method=parts[1])


_VIA_RE = re.compile(
    r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-]+)\s+"  # sent-protocol
    r"(\[[0-9A-Fa-f:.]+\]|[^\s:;]+)"  # host or [IPv6reference]
    r"(?:\s*:\s*(\d{1,5}))?\s*"  # port
    r"(.*)\Z",
    re.IGNORECASE | re.DOTALL,
)


def parse_via(value: str) -> Via:
    """One Via value (already split from a comma list), RFC 3261 §20.42."""
    match = _via_match(value)
    port = int(match.group(3)) if match.group(3) else None
    host = match.group(2)
    if host.startswith("["):
        host = host[1:-1]
    return Via(
        transport=match.group(1).upper(),
        host=host,
        port=port,
        params=parse_params(match.group(4)),
    )


def via_branch(value: str) -> str | None:
    """``parse_via(value).branch``, raising `SipParseError` exactly where that does,
    without building the Via: what a dialog reads of the top Via of every message."""
    return param_value(_via_match(value).group(4), "branch")


def _via_match(value: str) -> re.Match[str]:
    match = _VIA_RE.match(value)
    if match is None:
        raise SipParseError(f"bad Via {value[:40]!r}")
    if match.group(3) and int(match.group(3)) > 65535:
        raise SipParseError("Via port out of range")
    return match
