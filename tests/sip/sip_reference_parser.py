"""The SIP message parser as it was before the lean path (issue 11): the readable
twin that `tests/sip/test_sip_lean.py` holds `agent.sip.message.parse_message` to.

It parses everything eagerly: every header line into a `Headers`, From and To into
`NameAddr`s with their parameters, the top Via into a `Via`. What the lean path left
as it was (the header-section bounds and the body, the folded-header loop, the
multipart and SDP checks, `Headers`, the name-addr and Via parsers) is imported from
the tree rather than copied, and so are the full checks of the start line and of
CSeq that its shortcuts (one regex each) fall back on; the parts it rewrote (header
scanning, the required-field checks, `SipMessage`) are kept here as they were. The
empty-line search it changed is held to its regex by `test_sip_message.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.sip.errors import SipParseError
from agent.sip.headers import (
    CSeq,
    Headers,
    NameAddr,
    Via,
    cseq_checked,
    parse_name_addr,
    parse_via,
)
from agent.sip.limits import DEFAULT_LIMITS, MessageLimits
from agent.sip.message import (
    _body,
    _check_sdp,
    _head_bounds,
    _media_type,
    _parse_length,
    _sdp_part,
    parse_header_lines,
    start_line_checked,
)


@dataclass(frozen=True, slots=True)
class RefMessage:
    """`SipMessage` as it was: every part a field, computed when parsed."""

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
    sdp: bytes | None
    body_length_lenient: bool = False

    @property
    def content_type(self) -> str | None:
        return _media_type(self.headers.get("Content-Type"))

    def vias(self) -> tuple[Via, ...]:
        return tuple(parse_via(v) for v in self.headers.get_all("Via"))


def parse_message(data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> RefMessage:
    start, head_end, body_start = _head_bounds(data, limits)
    lines = _split_lines(data[start:head_end].decode("utf-8", errors="replace"))
    is_request, method, uri, code, reason = start_line_checked(lines[0])
    headers = parse_header_lines(lines[1:], limits)
    content_length = _content_length(headers)
    body, lenient = _body(data, body_start, content_length, limits)
    return _build(is_request, method, uri, code, reason, headers, body, content_length,
                  lenient, limits)


def _split_lines(head: str) -> list[str]:
    return [line[:-1] if line.endswith("\r") else line for line in head.split("\n")]


def _content_length(headers: Headers) -> int | None:
    values = {v.strip() for v in headers.lines("Content-Length")}
    if not values:
        return None
    if len(values) > 1:
        raise SipParseError("conflicting Content-Length headers")
    return _parse_length(values.pop())


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if not value:
        raise SipParseError(f"missing {name}")
    return value


def _build(is_request: bool, method: str, uri: str | None, code: int | None,
           reason: str | None, headers: Headers, body: bytes, content_length: int | None,
           body_length_lenient: bool, limits: MessageLimits) -> RefMessage:
    cseq = cseq_checked(_required(headers, "CSeq"))
    top = headers.get("Via")
    sdp = _sdp_part(headers.get("Content-Type"), body, 0, limits) if body else None
    if sdp is not None:
        _check_sdp(sdp, limits)
    return RefMessage(
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
