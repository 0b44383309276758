"""SDP payload maps as the RTP layer wants them (codec name, clock, packet kind)."""

from __future__ import annotations

from agent.rtp.payload_types import STATIC_PAYLOAD_TYPES, PayloadInfo, PayloadKind
from agent.sip.sdp import MediaDescription

_KINDS = {"TELEPHONE-EVENT": PayloadKind.TELEPHONE_EVENT, "CN": PayloadKind.COMFORT_NOISE}


def payload_hints(m: MediaDescription) -> dict[int, PayloadInfo]:
    """PT -> what it carries in this media section. Static types keep the RFC 3551
    table's names (``g711A``) so one codec has one name whether or not SDP was seen."""
    out: dict[int, PayloadInfo] = {}
    for p in m.payloads:
        static = STATIC_PAYLOAD_TYPES.get(p.pt)
        if static is not None and (p.static or static.clock_rate == p.clock_rate_hz):
            out[p.pt] = static  # listed bare, or an rtpmap restating it (PCMA/8000 for 8)
            continue
        kind = _KINDS.get(p.encoding_upper, PayloadKind.MEDIA)
        out[p.pt] = PayloadInfo(p.encoding, p.clock_rate_hz or None, kind)
    return out
