"""What the RTP layer asks of the signalling above it: the one small interface.

`agent.calls.correlate.MediaIndex` implements it from SDP; the RTP layer never
imports the call layer, it is handed an object with this shape (or None, for a
tracker that works on heuristics alone).
"""

from __future__ import annotations

from typing import Protocol

from agent.decode.endpoint import Endpoint
from agent.media.description import EndpointMedia, PayloadMap

__all__ = ["EndpointMedia", "MediaHints", "PayloadMap"]


class MediaHints(Protocol):
    def media_for(self, src: Endpoint, dst: Endpoint, now: float) -> EndpointMedia | None:
        """What SDP announced for RTP from ``src`` to ``dst`` (payload map, profile,
        SRTP trailer bytes), as known at packet time ``now``; None when no SDP
        announced either endpoint."""
        ...
