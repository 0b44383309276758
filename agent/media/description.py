"""What an SDP media section tells the RTP layer about media sent to one endpoint.

`agent.calls.correlate.MediaIndex` builds one `EndpointMedia` per advertised
endpoint and hands it over through `agent.rtp.hints.MediaHints.media_for`: the
payload map (PT -> codec, clock, packet kind), the transport profile of the
``m=`` line (``RTP/AVP``, ``RTP/SAVP``, ``RTP/SAVPF``,
``UDP/TLS/RTP/SAVPF``...) and, for SRTP, the bytes of MKI + authentication tag
that follow the encrypted payload (`agent.media.srtp`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.media.payloads import PayloadInfo
from agent.media.srtp import AUTH_TAG_BYTES, MAX_MKI_BYTES, PLAUSIBLE_TRAILERS

EVENT_PAYLOAD_BYTES = 4  # RFC 4733 §2.3: event, E/R/volume, duration
# the longest an SRTP event payload can be: the longest tag and MKI the registry knows
MAX_EVENT_PAYLOAD_BYTES = EVENT_PAYLOAD_BYTES + max(AUTH_TAG_BYTES.values()) + MAX_MKI_BYTES

PayloadMap = Mapping[int, PayloadInfo]


@dataclass(frozen=True, slots=True)
class EndpointMedia:
    """Media sent to one endpoint, as its SDP describes it."""

    payloads: PayloadMap = field(default_factory=dict)
    profile: str | None = None  # the m= line's transport, as written
    # SRTP: the possible MKI + tag byte counts (one once an answer picked a suite);
    # () for plain RTP.
    srtp_trailers: tuple[int, ...] = ()

    @property
    def srtp(self) -> bool:
        return bool(self.srtp_trailers)

    @property
    def srtp_trailer_bytes(self) -> int | None:
        """MKI + tag bytes when the SDP fixes them to one value, else None."""
        return self.srtp_trailers[0] if len(self.srtp_trailers) == 1 else None

    @property
    def event_payload_bytes(self) -> tuple[int, ...]:
        """The RTP payload lengths an RFC 4733 event packet can have on this stream."""
        if not self.srtp_trailers:
            return (EVENT_PAYLOAD_BYTES,)
        return tuple(EVENT_PAYLOAD_BYTES + t for t in self.srtp_trailers)


def srtp_trailers(profile: str, trailers: tuple[int | None, ...]) -> tuple[int, ...]:
    """MKI + tag byte counts for a section with this profile and ``a=crypto`` trailers
    (None: a suite the table lacks). Plain RTP: (); SRTP without usable SDES (DTLS-SRTP,
    an unknown suite): every plausible count."""
    srtp = "SAVP" in profile.upper() or bool(trailers)
    if not srtp:
        return ()
    known = tuple(sorted({t for t in trailers if t is not None}))
    if not known or len(known) < len(trailers):
        return PLAUSIBLE_TRAILERS if not known else tuple(sorted({*known, *PLAUSIBLE_TRAILERS}))
    return known


UNSIGNALLED_EVENT_PAYLOAD_BYTES: tuple[int, ...] = (
    EVENT_PAYLOAD_BYTES, *(EVENT_PAYLOAD_BYTES + t for t in PLAUSIBLE_TRAILERS))
