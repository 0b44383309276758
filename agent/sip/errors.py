"""The one error type per parser of the SIP layer (DESIGN.md, rule 3 of the core).

Bad input from the network raises exactly one of these; the caller counts it
and drops the packet. Nothing else may escape a parser, whatever the bytes.
"""

from __future__ import annotations


class SipParseError(ValueError):
    """A SIP message (RFC 3261 §7) or its stream framing is malformed, or exceeds a
    limit of `agent.sip.limits` (then ``limit`` names it: ``headers``, ...)."""

    def __init__(self, message: str, limit: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit


class SdpParseError(ValueError):
    """A session description (RFC 4566 §5) is malformed, or exceeds a limit of
    `agent.sip.limits` (then ``limit`` names it: ``sdp_media`` or ``sdp_bytes``)."""

    def __init__(self, message: str, limit: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit
