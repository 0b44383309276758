"""`MessageLimits`: the most work one SIP message may cost the probe.

A SIP message and its SDP come from the network, so their size and shape do too:
without a bound, one crafted message (thousands of headers, a 5,000-m-line SDP,
multipart nested a hundred deep) costs as much as a million honest ones, and the
parsed SDP a dialog keeps is retained for the whole call. Past any limit the
message is refused with the parser's one error type, carrying which limit it was
(`SipParseError.limit`, `SdpParseError.limit`) so the caller counts the drop by
limit. The defaults sit far above what deployed UAs, proxies and SBCs send: an
INVITE through a dozen proxies has ~40 header fields and 2-6 KB of headers; an
audio+video SDP has 2-4 m= sections and 0.3-3 KB; a WebRTC offer with ICE candidates
~10 KB; bodies other than SDP (PIDF, RLMI, ISUP) stay well under 64 KB.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """Bounds per message (bytes unless named otherwise); config ``sip_limits``."""

    max_header_bytes: int = 64 * KIB  # start line + header fields, before the empty line
    max_headers: int = 256  # header fields (after unfolding)
    max_header_line_bytes: int = 8 * KIB  # one header field, continuation lines included
    max_content_length: int = 256 * KIB  # a body declared longer is refused unread
    max_multipart_depth: int = 3  # multipart/* inside multipart/* (RFC 5621 nesting)
    max_sdp_media: int = 32  # m= sections of one session description
    max_sdp_bytes: int = 32 * KIB  # one session description


DEFAULT_LIMITS = MessageLimits()
# `SipParseError.limit` / `SdpParseError.limit` values: the counter names of the drops
LIMIT_NAMES = ("header_bytes", "headers", "header_line_bytes", "content_length",
               "multipart_depth", "sdp_media", "sdp_bytes")
