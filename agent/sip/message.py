"""SIP message parsing, stream framing and content sniffing (RFC 3261 §7, §18.3).

Theory of operation
-------------------
`parse_message` takes one complete message (a UDP datagram, or a byte range
that `split_stream` cut from a TCP stream) and returns a frozen `SipMessage`,
or raises `SipParseError`. What a dialog reads of every message (start line,
Call-ID, CSeq, From/To tags, the top Via's branch, Content-Length, the SDP
body) is checked and extracted eagerly, so a message that parses is usable by
the dialog layer without further checks. The rest is kept as text and built on
first use, once: the `Headers` table, the From/To name-addrs and the top `Via`
with their parameter tuples. Their parsers' checks already ran (a malformed
From or top Via is refused at parse time, as ever), so no property can fail
later.

The lean path (issue 11: most messages cost a dialog only these few values)
scans the header section with one regex that matches a plain field line; when
every line matches and no limit is near, that scan is the header table, and
only the fields above are looked at. A folded line, a bad line or a section
near a limit goes through `parse_header_lines`, the line-by-line loop that
unfolds, checks and raises, so what is accepted, what is refused and under
which limit is the same on both paths (`tests/sip/test_sip_lean.py` holds the
lean path to the eager parser it replaced).

Leniency follows what deployed UAs send, not the strict grammar: bare LF line
ends, header folding (§7.3.1), leading CRLFs (§7.5), a missing empty line at
the end of a body-less datagram, any case in header names. What is rejected
is what makes a message unusable: no parseable start line, a header line
without a colon, a missing Call-ID/CSeq/From/To (mandatory per §8.1.1), a
malformed top Via, or a Content-Length that is not a number or is larger than
what arrived (§18.3: such a datagram is discarded). One exception to that
last rule: a body short by exactly its number of bare-LF line ends is accepted
(`SipMessage.body_length_lenient`): its sender wrote LF but counted CRLF, as
the hepgen sample capture of sipcapture/hep-wireshark does (Wireshark and
sngrep accept it). A body cut short on the way is, but for a coincidence,
short by some other amount and still refused. Stream framing always hands over the declared
length, so the exception only ever applies to datagrams.

Framing of stream transports is by Content-Length (§18.3, mandatory there);
`split_stream` returns the byte ranges of complete messages and how much of
the buffer they consumed, and refuses headers longer than `MAX_HEADER_BYTES`
or bodies longer than `MAX_BODY_BYTES` so a lying peer cannot make the
reassembler buffer without bound.

Work per message is bounded (`agent.sip.limits`): header section size, header
count and field length, Content-Length, multipart nesting and the SDP's size and
m= sections; past one the message is refused with `SipParseError.limit` naming it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

from agent.sip.errors import SipParseError
from agent.sip.headers import (
    LIST_HEADERS,
    CSeq,
    Headers,
    NameAddr,
    Via,
    canonical_name,
    field_name,
    is_token,
    lookup_key,
    name_addr_tag,
    parse_cseq,
    parse_name_addr,
    parse_params,
    parse_via,
    split_outside_quotes,
    via_branch,
)
from agent.sip.limits import DEFAULT_LIMITS, MessageLimits

_T = TypeVar("_T")
MAX_HEADER_BYTES = DEFAULT_LIMITS.max_header_bytes  # start line + fields, before the empty line
MAX_BODY_BYTES = 1024 * 1024  # Content-Length accepted on stream transports

_STATUS_LINE_RE = re.compile(r"SIP/2\.0[ \t]+([1-6][0-9][0-9])(?:[ \t]+(.*))?\Z", re.IGNORECASE)
_REQUEST_LINE_RE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+) (\S+) SIP/2\.0\Z")
_SNIFF_RESPONSE_RE = re.compile(rb"SIP/2\.0 [1-6][0-9][0-9][ \r\n]")
_SNIFF_REQUEST_RE = re.compile(rb"[A-Za-z0-9\-.!%*_+`'~]{1,32} [^ \r\n]{1,1000} SIP/2\.0\r?\n")
_FRAMING_CL_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I | re.M)
# One header line that `parse_header_lines` would take as it is: a token name, optional
# SP/HT, the colon, the raw value. Scanning the whole header section with it is the
# lean path; a line it does not match (or a folded one) sends the section to the loop.
_FIELD_RE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:(.*)", re.M)
# Lookup keys of the fields parse_message checks; the rest wait for `SipMessage.headers`.
_PICKED = frozenset(("call-id", "cseq", "from", "to", "via", "content-length", "content-type"))
_SNIFF_WINDOW = 1100


@dataclass(frozen=True)
class SipMessage:
    """One parsed SIP request or response.

    `method` is the request method, or for a response the method of its CSeq
    (RFC 3261 §8.2.6.2: a response copies the request's CSeq), which is what a
    transaction or dialog needs to match it.

    What a dialog reads of every message is a field, checked and extracted when the
    message is parsed. The rest (`headers`, `from_addr`, `to_addr`, `top_via`) is built
    from the raw text on first use, once: `parse_message` has run the checks those
    parsers make, so building them cannot fail.
    """

    is_request: bool
    method: str
    request_uri: str | None
    status_code: int | None
    reason: str | None
    body: bytes
    call_id: str
    cseq: CSeq
    from_tag: str | None
    to_tag: str | None
    via_branch: str | None  # of the top Via: the transaction id (RFC 3261 §17.2.3)
    content_length: int | None
    sdp: bytes | None  # the application/sdp body, or the SDP part of a multipart body
    # The body is shorter than Content-Length by exactly its bare-LF line ends: the
    # sender counted CRLF but wrote LF (accepted; see the module docstring)
    body_length_lenient: bool
    # The raw material of the parts built on first use: header fields as (name, value),
    # names checked tokens, values not yet stripped; the From, To, top Via values and
    # the Content-Type, stripped.
    _raw_fields: tuple[tuple[str, str], ...]
    _raw_from: str
    _raw_to: str
    _raw_via: str | None
    _raw_content_type: str | None

    @cached_property
    def headers(self) -> Headers:
        return Headers(tuple([(canonical_name(n), v.strip()) for n, v in self._raw_fields]))

    @cached_property
    def from_addr(self) -> NameAddr:
        return parse_name_addr(self._raw_from)

    @cached_property
    def to_addr(self) -> NameAddr:
        return parse_name_addr(self._raw_to)

    @cached_property
    def top_via(self) -> Via | None:
        return parse_via(self._raw_via) if self._raw_via is not None else None

    def header(self, name: str) -> str | None:
        """``headers.get(name)``, without building `headers` for a header that is not a
        list: a dialog reads a User-Agent or a Session-Expires of most messages, and
        nothing else of the fields `parse_message` did not pick."""
        key = lookup_key(name)
        if key in LIST_HEADERS or "headers" in self.__dict__:
            return self.headers.get(name)
        for field, value in self._raw_fields:
            if lookup_key(field) == key:
                return value.strip()
        return None

    @property
    def is_response(self) -> bool:
        return not self.is_request

    @property
    def from_uri(self) -> str:
        return self.from_addr.uri

    @property
    def from_display(self) -> str | None:
        return self.from_addr.display

    @property
    def to_uri(self) -> str:
        return self.to_addr.uri

    @property
    def to_display(self) -> str | None:
        return self.to_addr.display

    @property
    def content_type(self) -> str | None:
        """Media type of the body, lower case, without parameters (`application/sdp`)."""
        return _media_type(self._raw_content_type)

    def vias(self) -> tuple[Via, ...]:
        """Every Via value, top first. Raises `SipParseError` if one is malformed."""
        return tuple(parse_via(v) for v in self.headers.get_all("Via"))


def looks_like_sip(payload: bytes | bytearray) -> bool:
    """Cheap sniff: does this payload start like a SIP request or response?

    Matches `SIP/2.0 NNN` or `METHOD SP Request-URI SP SIP/2.0` on the first
    line (RFC 3261 §7.1, §7.2); used to find SIP on ports other than 5060.
    """
    head = payload[:_SNIFF_WINDOW]
    if head.startswith(b"SIP/2.0 "):
        return _SNIFF_RESPONSE_RE.match(head) is not None
    return _SNIFF_REQUEST_RE.match(head) is not None


def is_keepalive(payload: bytes) -> bool:
    """CRLF keep-alives (RFC 5626 §3.5.1 ping/pong) and the all-zero NAT keep-alives
    some UAs send; not messages, not errors."""
    return bool(payload) and (payload.strip(b"\r\n") == b"" or payload.strip(b"\x00") == b"")


def parse_message(data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> SipMessage:
    """Parse one complete SIP message (a datagram or a range from `split_stream`).

    Without Content-Length the body is the rest of the datagram (RFC 3261
    §18.3 permits that for UDP); with it, extra bytes are ignored and a
    shorter body is an error, unless CRLF line ends would make up the
    difference exactly (`SipMessage.body_length_lenient`).
    """
    start, head_end, body_start = _head_bounds(data, limits)
    head = data[start:head_end].decode("utf-8", errors="replace")
    eol = head.find("\n")
    line = head if eol < 0 else head[:eol]
    is_request, method, uri, code, reason = _parse_start_line(
        line[:-1] if line.endswith("\r") else line)
    fields = _header_fields(head, eol, limits)
    first, repeated = _pick(fields)
    content_length = _content_length(first, repeated)
    body, lenient = _body(data, body_start, content_length, limits)
    return _build(is_request, method, uri, code, reason, fields, first, repeated, body,
                  content_length, lenient, limits)


def _head_bounds(data: bytes, limits: MessageLimits) -> tuple[int, int, int]:
    """(start, end, body start) of the header section: leading CRLFs skipped, up to
    the first empty line, or the whole of a body-less datagram that has none."""
    start = _skip_crlf(data, 0) if data[:1] in (b"\r", b"\n") else 0
    if start >= len(data):
        raise SipParseError("empty message")
    cap = limits.max_header_bytes
    match = header_end(data, start, start + cap + 4)
    if match is not None and match[0] - start > cap:
        match = None
    if match is not None:
        return start, match[0], match[1]
    if len(data) - start > cap:
        raise SipParseError("header section exceeds max_header_bytes", "header_bytes")
    return start, len(data), len(data)  # body-less datagram without the final empty line


def _body(data: bytes, body_start: int, content_length: int | None, limits: MessageLimits
          ) -> tuple[bytes, bool]:
    """(body, body_length_lenient) after Content-Length (see `parse_message`)."""
    if content_length is None:
        return data[body_start:], False
    if content_length > limits.max_content_length:
        raise SipParseError(f"Content-Length {content_length} exceeds max_content_length",
                            "content_length")
    body = data[body_start : body_start + content_length]
    if len(body) < content_length:
        if len(body) + _bare_lf(body) != content_length:
            raise SipParseError(f"body truncated: {len(body)} of {content_length} bytes")
        return body, True
    return body, False


def split_stream(
    buffer: bytes,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> tuple[list[tuple[int, int]], int]:
    """Cut complete messages out of a reassembled stream (RFC 3261 §18.3).

    Returns ([(start, end), ...], consumed): byte ranges of complete messages
    in `buffer` and the number of leading bytes the caller may drop (ranges
    plus CRLF keep-alives between messages). An incomplete trailing message is
    left unconsumed. Missing Content-Length counts as 0. Raises
    `SipParseError` for a header section longer than `max_header_bytes`, or a
    bad or over-large Content-Length: the stream cannot be resynchronised and
    the caller should drop it.
    """
    ranges, consumed, _ = split_stream_from(buffer, 0, max_header_bytes, max_body_bytes)
    return ranges, consumed


def split_stream_from(
    buffer: bytes | bytearray,
    scanned: int,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> tuple[list[tuple[int, int]], int, int]:
    """`split_stream` for a buffer that grows: the first ``scanned`` bytes were searched
    for the end of the pending message's header before and are not again, so a
    stream that delivers a header in many segments costs time linear in its bytes.
    Returns (ranges, consumed, scanned): the new ``scanned`` for the next call, relative
    to the buffer after ``consumed`` bytes are dropped."""
    ranges: list[tuple[int, int]] = []
    pos = 0
    size = len(buffer)
    while True:
        pos = _skip_crlf(buffer, pos)
        if pos >= size:
            return ranges, pos, 0
        begin = max(pos, scanned - 3) if not ranges else pos  # "\r\n\r\n" may straddle
        match = header_end(buffer, begin, min(size, pos + max_header_bytes + 4))
        if match is None:
            if size - pos > max_header_bytes:
                raise SipParseError("header section exceeds the stream cap", "header_bytes")
            return ranges, pos, size - pos
        length = _framing_content_length(bytes(buffer[pos : match[0]]))
        if length > max_body_bytes:
            raise SipParseError(f"Content-Length {length} exceeds the stream cap",
                                "content_length")
        end = match[1] + length
        if end > size:
            return ranges, pos, match[0] - pos
        ranges.append((pos, end))
        pos = end


def parse_header_lines(lines: list[str], limits: MessageLimits = DEFAULT_LIMITS) -> Headers:
    """Header field lines (no start line) -> `Headers`; unfolds continuation lines
    (RFC 3261 §7.3.1: a line starting with SP or HT continues the previous one).
    More than ``limits.max_headers`` fields, or one longer than
    ``limits.max_header_line_bytes``, is refused."""
    fields: list[tuple[str, str]] = []
    max_line = limits.max_header_line_bytes
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            if not fields:
                raise SipParseError("continuation line before the first header")
            name, value = fields[-1]
            value = f"{value} {line.strip()}".strip()
            if len(value) > max_line:
                raise SipParseError("header field exceeds max_header_line_bytes",
                                    "header_line_bytes")
            fields[-1] = (name, value)
            continue
        if len(line) > max_line:
            raise SipParseError("header field exceeds max_header_line_bytes",
                                "header_line_bytes")
        if len(fields) >= limits.max_headers:
            raise SipParseError("more header fields than max_headers", "headers")
        name, colon, value = line.partition(":")
        canonical = field_name(name.rstrip(" \t")) if colon else None
        if canonical is None:
            raise SipParseError(f"bad header line {line[:40]!r}")
        fields.append((canonical, value.strip()))
    return Headers(tuple(fields))


def _header_fields(head: str, eol: int, limits: MessageLimits
                   ) -> tuple[tuple[str, str], ...]:
    """The header fields of a header section (its start line ends at ``eol``) as
    (name, value), values unstripped: by one regex scan when every line is a plain
    field and no limit is near, else by `parse_header_lines`, which unfolds, checks
    each line and raises where that is due (the same error, in the same order, as
    always). A CR before a line end stays in the value: stripping it removes it."""
    if eol < 0:
        return ()
    # an empty last line (no empty line ended the datagram) is no field
    end = len(head) - 1 if head.endswith("\n") else len(head)
    if end <= eol + 1:
        return ()
    if end - eol <= limits.max_header_line_bytes:  # so is every line
        fields: list[tuple[str, str]] = _FIELD_RE.findall(head, eol + 1, end)
        if len(fields) == head.count("\n", eol + 1, end) + 1 and len(fields) <= limits.max_headers:
            return tuple(fields)  # every line matched: no continuation, every name a token
    return parse_header_lines(_split_lines(head)[1:], limits).fields


def _pick(fields: Sequence[tuple[str, str]]
          ) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The values of `_PICKED` fields, stripped: ({key: first value}, [(key, value) of
    the later Via and Content-Length lines]), the only repeats parse_message reads."""
    first: dict[str, str] = {}
    repeated: list[tuple[str, str]] = []
    for name, value in fields:
        key = lookup_key(name)
        if key in _PICKED:
            if key not in first:
                first[key] = value.strip()
            elif key in ("via", "content-length"):
                repeated.append((key, value.strip()))
    return first, repeated


def header_end(data: bytes | bytearray, start: int = 0, stop: int | None = None
               ) -> tuple[int, int] | None:
    """(start, end) of the first empty line in ``data[start:stop]``: the leftmost match of
    ``\r?\n\r?\n`` (CRLF or bare-LF line ends), by two ``bytes.find`` scans (a regex
    whose first character is optional tries every position: ~25 µs per KB, several
    times slower). None: no empty line there."""
    stop = len(data) if stop is None else min(stop, len(data))
    crlf = data.find(b"\n\r\n", start, stop)
    # Only an LF-LF before it can win: a CRLF message is not searched on into its body.
    lf = data.find(b"\n\n", start, stop if crlf < 0 else crlf + 1)
    if crlf >= 0 and (lf < 0 or crlf < lf):
        i, end = crlf, crlf + 3
    elif lf >= 0:
        i, end = lf, lf + 2
    else:
        return None
    return (i - 1 if i > start and data[i - 1] == 0x0D else i), end


def _skip_crlf(data: bytes | bytearray, pos: int) -> int:
    # RFC 3261 §7.5: CRLFs before a start line are ignored on streams.
    size = len(data)
    while pos < size and data[pos] in (0x0D, 0x0A):
        pos += 1
    return pos


def _bare_lf(body: bytes) -> int:
    """Line ends in ``body`` that are LF without the CR before it."""
    return body.count(b"\n") - body.count(b"\r\n")


def _split_lines(head: str) -> list[str]:
    return [line[:-1] if line.endswith("\r") else line for line in head.split("\n")]


def _parse_start_line(line: str) -> tuple[bool, str, str | None, int | None, str | None]:
    """(is_request, method, request_uri, status_code, reason) of RFC 3261 §7.1/§7.2."""
    match = _REQUEST_LINE_RE.match(line)
    if match is not None:  # the usual request line, which the full checks accept
        return True, match.group(1), match.group(2), None, None
    return start_line_checked(line)


def start_line_checked(line: str) -> tuple[bool, str, str | None, int | None, str | None]:
    """`_parse_start_line` without its shortcut for the usual request line: the rules
    as RFC 3261 §7.1/§7.2 state them, with the leniency of ``str.split``/``upper``."""
    if line[:4].upper() == "SIP/":
        match = _STATUS_LINE_RE.match(line)
        if match is None:
            raise SipParseError(f"bad status line {line[:60]!r}")
        return False, "", None, int(match.group(1)), (match.group(2) or "").strip()
    parts = line.split()
    if len(parts) != 3 or parts[2].upper() != "SIP/2.0" or not is_token(parts[0]):
        raise SipParseError(f"bad request line {line[:60]!r}")
    return True, parts[0], parts[1], None, None


def _content_length(first: dict[str, str], repeated: list[tuple[str, str]]) -> int | None:
    text = first.get("content-length")
    if text is None:
        return None
    if repeated and any(k == "content-length" and v != text for k, v in repeated):
        raise SipParseError("conflicting Content-Length headers")
    return _parse_length(text)


def _parse_length(text: str) -> int:
    text = text.strip()
    if not text or len(text) > 10 or not text.isascii() or not text.isdigit():
        raise SipParseError(f"bad Content-Length {text[:20]!r}")
    return int(text)


def _framing_content_length(head: bytes) -> int:
    values = {m.group(1).strip() for m in _FRAMING_CL_RE.finditer(head)}
    if not values:
        return 0
    if len(values) > 1:
        raise SipParseError("conflicting Content-Length headers")
    return _parse_length(values.pop().decode("ascii", errors="replace"))


def _required(first: dict[str, str], key: str, name: str) -> str:
    value = first.get(key)
    if not value:
        raise SipParseError(f"missing {name}")
    return value


def _top_via(first: dict[str, str], repeated: list[tuple[str, str]]) -> str | None:
    """``Headers.get("Via")``: the first element of the first Via line that has one."""
    value = first.get("via")
    if value is None:
        return None
    if value and "," not in value:
        return value  # the one element, stripped already
    for line in (value, *(v for k, v in repeated if k == "via")):
        parts = split_outside_quotes(line, ",")
        if parts:
            return parts[0]
    return None


def _build(
    is_request: bool,
    method: str,
    uri: str | None,
    code: int | None,
    reason: str | None,
    fields: tuple[tuple[str, str], ...],
    first: dict[str, str],
    repeated: list[tuple[str, str]],
    body: bytes,
    content_length: int | None,
    body_length_lenient: bool,
    limits: MessageLimits,
) -> SipMessage:
    """The message, after the checks the old eager parse made, in its order (which
    check fails first decides the `SipParseError.limit` a message is counted under)."""
    cseq = _memo(_cseq, parse_cseq, _required(first, "cseq", "CSeq"))
    top = _top_via(first, repeated)
    content_type = first.get("content-type")
    sdp = _sdp_part(content_type, body, 0, limits) if body else None
    if sdp is not None:
        _check_sdp(sdp, limits)
    call_id = _required(first, "call-id", "Call-ID")
    from_value = _required(first, "from", "From")
    from_tag = _memo(_tag, name_addr_tag, from_value)
    to_value = _required(first, "to", "To")
    to_tag = _memo(_tag, name_addr_tag, to_value)
    branch = _memo(_branch, via_branch, top) if top is not None else None
    return _new(SipMessage, {
        "is_request": is_request,
        "method": method if is_request else cseq.method,
        "request_uri": uri,
        "status_code": code,
        "reason": reason,
        "body": body,
        "call_id": call_id,
        "cseq": cseq,
        "from_tag": from_tag,
        "to_tag": to_tag,
        "via_branch": branch,
        "content_length": content_length,
        "sdp": sdp,
        "body_length_lenient": body_length_lenient,
        "_raw_fields": fields,
        "_raw_from": from_value,
        "_raw_to": to_value,
        "_raw_via": top,
        "_raw_content_type": content_type,
    })


# What a dialog reads of From, To, CSeq and the top Via, by the value as sent. A
# dialog repeats those values verbatim (From and To in each of its messages, CSeq and
# the top Via in every response of a transaction, and the usual CSeq values recur
# across dialogs), so most messages find them here. Bounded both ways: entries, and
# the length of a value kept (a longer one is parsed every time); a value that is
# refused raises and is not kept. The parsers are pure, the values immutable.
_MEMO_ENTRIES = 2048
_MEMO_CHARS = 256
_cseq = functools.lru_cache(maxsize=_MEMO_ENTRIES)(parse_cseq)
_tag = functools.lru_cache(maxsize=_MEMO_ENTRIES)(name_addr_tag)
_branch = functools.lru_cache(maxsize=_MEMO_ENTRIES)(via_branch)


def _memo(memo: Callable[[str], _T], parse: Callable[[str], _T], value: str) -> _T:
    return memo(value) if len(value) <= _MEMO_CHARS else parse(value)


def _new(cls: type[SipMessage], values: dict[str, object]) -> SipMessage:
    """``cls(**values)`` in one step: a frozen dataclass's ``__init__`` pays one
    ``object.__setattr__`` per field (~2 µs for these 19, as much as the rest of the
    lean parse); the instance dict is filled at once instead. A test holds the two
    equal."""
    msg = object.__new__(cls)
    object.__setattr__(msg, "__dict__", values)
    return msg


def _media_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    return media or None


def find_sdp(content_type: str | None, body: bytes) -> bytes | None:
    """The application/sdp body, directly or inside multipart/* (RFC 2046 §5.1,
    RFC 5621). Malformed multipart yields None rather than an error: the
    message itself is still valid signalling; so does multipart nested deeper than
    the default limit (`parse_message` refuses such a message)."""
    try:
        return _sdp_part(content_type, body, 0, DEFAULT_LIMITS)
    except SipParseError:
        return None


def _sdp_part(content_type: str | None, body: bytes, depth: int, limits: MessageLimits
              ) -> bytes | None:
    """`find_sdp`, raising `SipParseError` (limit ``multipart_depth``) for multipart
    nested deeper than ``limits.max_multipart_depth``."""
    media = _media_type(content_type)
    if media == "application/sdp":
        return body
    if media is None or not media.startswith("multipart/"):
        return None
    if depth >= limits.max_multipart_depth:
        raise SipParseError("multipart nested deeper than max_multipart_depth",
                            "multipart_depth")
    boundary = _boundary(content_type or "")
    if boundary is None:
        return None
    for part in _multipart_parts(body, boundary):
        part_type, part_body = _split_part(part)
        found = _sdp_part(part_type, part_body, depth + 1, limits)
        if found is not None:
            return found
    return None


def _check_sdp(sdp: bytes, limits: MessageLimits) -> None:
    """Refuse an SDP body beyond the size or m= section limits (counted, not parsed)."""
    if len(sdp) > limits.max_sdp_bytes:
        raise SipParseError("SDP exceeds max_sdp_bytes", "sdp_bytes")
    if sdp_media_sections(sdp) > limits.max_sdp_media:
        raise SipParseError("SDP has more m= sections than max_sdp_media", "sdp_media")


def sdp_media_sections(sdp: bytes) -> int:
    """m= lines of an SDP body (RFC 4566 §5.14), counted without parsing it."""
    return sdp.count(b"\nm=") + sdp.startswith(b"m=")


def _boundary(content_type: str) -> bytes | None:
    _, _, params = content_type.partition(";")
    for name, value in parse_params(params):
        if name == "boundary" and value:
            text = value.strip('"')
            # RFC 2046 §5.1.1: 1..70 characters.
            if 0 < len(text) <= 70:
                return text.encode("utf-8", errors="replace")
    return None


def _multipart_parts(body: bytes, boundary: bytes) -> list[bytes]:
    """Body parts between `--boundary` lines (RFC 2046 §5.1.1); the CRLF before a
    delimiter belongs to the delimiter. A missing close delimiter keeps the
    last part as it is."""
    delim = b"--" + boundary
    parts: list[bytes] = []
    content_start: int | None = None
    pos = 0
    while (i := body.find(delim, pos)) >= 0:
        pos = i + 1
        if i > 0 and body[i - 1] != 0x0A:
            continue
        if content_start is not None:
            end = i - 1 if i > 0 else i
            if end > content_start and body[end - 1] == 0x0D:
                end -= 1
            parts.append(body[content_start : max(end, content_start)])
            content_start = None
        after = i + len(delim)
        if body[after : after + 2] == b"--":
            return parts
        newline = body.find(b"\n", after)
        if newline < 0:
            return parts
        content_start = pos = newline + 1
    if content_start is not None:
        parts.append(body[content_start:])
    return parts


def _split_part(part: bytes) -> tuple[str | None, bytes]:
    """(Content-Type, content) of one body part; no headers means text/plain."""
    if part.startswith((b"\r\n", b"\n")):
        return "text/plain", part[2 if part.startswith(b"\r\n") else 1 :]
    match = header_end(part)
    if match is None:
        return None, b""
    try:
        headers = parse_header_lines(_split_lines(part[: match[0]].decode("utf-8", "replace")))
    except SipParseError:
        return None, b""
    return headers.get("Content-Type"), part[match[1] :]
