"""What the RTP layer asks of the signalling above it: the one small interface.

`agent.calls.correlate.MediaIndex` implements it from SDP; the RTP layer never
imports the call layer, it is handed an object with this shape (or None, for a
tracker that works on heuristics alone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from agent.decode.endpoint import Endpoint
from agent.rtp.payload_types import PayloadInfo

PayloadMap = Mapping[int, PayloadInfo]


class MediaHints(Protocol):
    def payloads_for(self, src: Endpoint, dst: Endpoint, now: float) -> PayloadMap | None:
        """The payload map SDP announced for RTP from ``src`` to ``dst``, as known at
        packet time ``now``; None when no SDP announced either endpoint."""
        ...
