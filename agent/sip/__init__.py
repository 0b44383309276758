"""SIP signalling: message parsing and framing (RFC 3261), SDP (RFC 4566).

The parsers are pure: bytes in, frozen dataclasses out, one error type each.
"""

from agent.sip.errors import SdpParseError, SipParseError
from agent.sip.headers import CSeq, Headers, NameAddr, Via
from agent.sip.message import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    SipMessage,
    is_keepalive,
    looks_like_sip,
    parse_message,
    split_stream,
)
from agent.sip.sdp import (
    Connection,
    Direction,
    MediaDescription,
    PayloadType,
    SessionDescription,
    parse_sdp,
)

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "CSeq",
    "Connection",
    "Direction",
    "Headers",
    "MediaDescription",
    "NameAddr",
    "PayloadType",
    "SdpParseError",
    "SessionDescription",
    "SipMessage",
    "SipParseError",
    "Via",
    "is_keepalive",
    "looks_like_sip",
    "parse_message",
    "parse_sdp",
    "split_stream",
]
