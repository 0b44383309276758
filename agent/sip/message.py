"""SIP message parsing, stream framing and content sniffing (RFC 3261 §7, §18.3).

Theory of operation
-------------------
`parse_message` takes one complete message (a UDP datagram, or a byte range
that `split_stream` cut from a TCP stream) and returns a frozen `SipMessage`,
or raises `SipParseError`. The fields every consumer needs (Call-ID, CSeq,
From, To, top Via, Content-Length, the SDP body) are parsed eagerly, so a
message that parses is usable by the dialog layer without further checks,
and no property can fail later.

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

import re
from dataclasses import dataclass

from agent.sip.errors import SipParseError
from agent.sip.headers import (
    CSeq,
    Headers,
    NameAddr,
    Via,
    field_name,
    is_token,
    parse_cseq,
    parse_name_addr,
    parse_params,
    parse_via,
)
from agent.sip.limits import DEFAULT_LIMITS, MessageLimits

MAX_HEADER_BYTES = DEFAULT_LIMITS.max_header_bytes  # start line + fields, before the empty line
MAX_BODY_BYTES = 1024 * 1024  # Content-Length accepted on stream transports

_STATUS_LINE_RE = re.compile(r"SIP/2\.0[ \t]+([1-6][0-9][0-9])(?:[ \t]+(.*))?\Z", re.IGNORECASE)
_SNIFF_RESPONSE_RE = re.compile(rb"SIP/2\.0 [1-6][0-9][0-9][ \r\n]")
_SNIFF_REQUEST_RE = re.compile(rb"[A-Za-z0-9\-.!%*_+`'~]{1,32} [^ \r\n]{1,1000} SIP/2\.0\r?\n")
_FRAMING_CL_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I | re.M)
_SNIFF_WINDOW = 1100


@dataclass(frozen=True, slots=True)
class SipMessage:
    """One parsed SIP request or response.

    `method` is the request method, or for a response the method of its CSeq
    (RFC 3261 §8.2.6.2: a response copies the request's CSeq), which is what a
    transaction or dialog needs to match it.
    """

    is_request: bool
    method: str
    request_uri: str | None
    status_code: int | None
    reason: str | None
    headers: Headers
    body: bytes
    call_id: str
    cseq: CSeq
    from_addr: NameAddr
    to_addr: NameAddr
    top_via: Via | None
    content_length: int | None
    sdp: bytes | None  # the application/sdp body, or the SDP part of a multipart body
    # The body is shorter than Content-Length by exactly its bare-LF line ends: the
    # sender counted CRLF but wrote LF (accepted; see the module docstring)
    body_length_lenient: bool = False

    @property
    def is_response(self) -> bool:
        return not self.is_request

    @property
    def from_uri(self) -> str:
        return self.from_addr.uri

    @property
    def from_tag(self) -> str | None:
        return self.from_addr.tag

    @property
    def from_display(self) -> str | None:
        return self.from_addr.display

    @property
    def to_uri(self) -> str:
        return self.to_addr.uri

    @property
    def to_tag(self) -> str | None:
        return self.to_addr.tag

    @property
    def to_display(self) -> str | None:
        return self.to_addr.display

    @property
    def via_branch(self) -> str | None:
        """Branch parameter of the top Via (the transaction id, RFC 3261 §17.2.3)."""
        return self.top_via.branch if self.top_via is not None else None

    @property
    def content_type(self) -> str | None:
        """Media type of the body, lower case, without parameters (`application/sdp`)."""
        return _media_type(self.headers.get("Content-Type"))

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
    start = _skip_crlf(data, 0)
    if start >= len(data):
        raise SipParseError("empty message")
    cap = limits.max_header_bytes
    match = header_end(data, start, start + cap + 4)
    if match is not None and match[0] - start > cap:
        match = None
    if match is not None:
        head_end, body_start = match
    elif len(data) - start > cap:
        raise SipParseError("header section exceeds max_header_bytes", "header_bytes")
    else:  # body-less datagram without the final empty line
        head_end = body_start = len(data)
    lines = _split_lines(data[start:head_end].decode("utf-8", errors="replace"))
    is_request, method, uri, code, reason = _parse_start_line(lines[0])
    headers = parse_header_lines(lines[1:], limits)
    content_length = _content_length(headers)
    if content_length is not None and content_length > limits.max_content_length:
        raise SipParseError(f"Content-Length {content_length} exceeds max_content_length",
                            "content_length")
    lenient = False
    if content_length is None:
        body = data[body_start:]
    else:
        body = data[body_start : body_start + content_length]
        if len(body) < content_length:
            if len(body) + _bare_lf(body) != content_length:
                raise SipParseError(f"body truncated: {len(body)} of {content_length} bytes")
            lenient = True
    return _build(is_request, method, uri, code, reason, headers, body, content_length,
                  lenient, limits)


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


def header_end(data: bytes | bytearray, start: int = 0, stop: int | None = None
               ) -> tuple[int, int] | None:
    """(start, end) of the first empty line in ``data[start:stop]``: the leftmost match of
    ``\r?\n\r?\n`` (CRLF or bare-LF line ends), by two ``bytes.find`` scans (a regex
    whose first character is optional tries every position: ~25 µs per KB, several
    times slower). None: no empty line there."""
    stop = len(data) if stop is None else min(stop, len(data))
    lf = data.find(b"\n\n", start, stop)
    crlf = data.find(b"\n\r\n", start, stop)
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
    if line[:4].upper() == "SIP/":
        match = _STATUS_LINE_RE.match(line)
        if match is None:
            raise SipParseError(f"bad status line {line[:60]!r}")
        return False, "", None, int(match.group(1)), (match.group(2) or "").strip()
    parts = line.split()
    if len(parts) != 3 or parts[2].upper() != "SIP/2.0" or not is_token(parts[0]):
        raise SipParseError(f"bad request line {line[:60]!r}")
    return True, parts[0], parts[1], None, None


def _content_length(headers: Headers) -> int | None:
    values = {v.strip() for v in headers.lines("Content-Length")}
    if not values:
        return None
    if len(values) > 1:
        raise SipParseError("conflicting Content-Length headers")
    return _parse_length(values.pop())


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


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if not value:
        raise SipParseError(f"missing {name}")
    return value


def _build(
    is_request: bool,
    method: str,
    uri: str | None,
    code: int | None,
    reason: str | None,
    headers: Headers,
    body: bytes,
    content_length: int | None,
    body_length_lenient: bool = False,
    limits: MessageLimits = DEFAULT_LIMITS,
) -> SipMessage:
    cseq = parse_cseq(_required(headers, "CSeq"))
    top = headers.get("Via")
    sdp = _sdp_part(headers.get("Content-Type"), body, 0, limits) if body else None
    if sdp is not None:
        _check_sdp(sdp, limits)
    return SipMessage(
        is_request=is_request,
        method=method if is_request else cseq.method,
        request_uri=uri,
        status_code=code,
        reason=reason,
        headers=headers,
        body=body,
        call_id=_required(headers, "Call-ID"),
        cseq=cseq,
        from_addr=parse_name_addr(_required(headers, "From")),
        to_addr=parse_name_addr(_required(headers, "To")),
        top_via=parse_via(top) if top is not None else None,
        content_length=content_length,
        sdp=sdp,
        body_length_lenient=body_length_lenient,
    )


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
