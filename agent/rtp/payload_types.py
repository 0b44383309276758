"""RTP payload types: the RFC 3551 static table, SDP-style hints, clock-rate estimation.

Static types (RFC 3551 §6, Table 4 and 5) carry a fixed RTP clock. G.722 (PT 9)
uses an 8000 Hz RTP clock although it samples at 16 kHz (RFC 3551 §4.5.2, a
historical error kept for compatibility). Names follow what tshark prints
(``g711U``, ``g711A``, ``g729``...), so a report lines up with a Wireshark view.

Dynamic types (96-127) are bound by SDP ``a=rtpmap``. Until the SIP layer
passes that knowledge in (`PayloadInfo` hints), the tracker estimates the clock
from how fast RTP timestamps advance against arrival time, snapped to the
nearest common rate, and flags the estimate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum


class PayloadKind(IntEnum):
    """What a packet carries, as far as the statistics are concerned."""

    MEDIA = 0  # audio or video: counted in sequence space and in jitter
    COMFORT_NOISE = 1  # RFC 3389: counted as received, excluded from jitter
    TELEPHONE_EVENT = 2  # RFC 4733: counted in sequence space, excluded from jitter


@dataclass(frozen=True, slots=True)
class PayloadInfo:
    """What a payload type number means: codec name, RTP clock (Hz) and kind."""

    name: str
    clock_rate: int | None
    kind: PayloadKind = PayloadKind.MEDIA


# RFC 3551 §6 Table 4 (audio) and Table 5 (video).
STATIC_PAYLOAD_TYPES: Mapping[int, PayloadInfo] = {
    0: PayloadInfo("g711U", 8000),
    3: PayloadInfo("GSM", 8000),
    4: PayloadInfo("g723", 8000),
    5: PayloadInfo("DVI4 8k", 8000),
    6: PayloadInfo("DVI4 16k", 16000),
    7: PayloadInfo("LPC", 8000),
    8: PayloadInfo("g711A", 8000),
    9: PayloadInfo("g722", 8000),  # RFC 3551 §4.5.2: 8000 Hz RTP clock
    10: PayloadInfo("L16 stereo", 44100),
    11: PayloadInfo("L16 mono", 44100),
    12: PayloadInfo("QCELP", 8000),
    13: PayloadInfo("CN", 8000, PayloadKind.COMFORT_NOISE),  # RFC 3389
    14: PayloadInfo("MPA", 90000),
    15: PayloadInfo("g728", 8000),
    16: PayloadInfo("DVI4 11k", 11025),
    17: PayloadInfo("DVI4 22k", 22050),
    18: PayloadInfo("g729", 8000),
    19: PayloadInfo("CN (old)", 8000, PayloadKind.COMFORT_NOISE),  # pre-RFC 3389 CN
    25: PayloadInfo("CelB", 90000),
    26: PayloadInfo("JPEG", 90000),
    28: PayloadInfo("nv", 90000),
    31: PayloadInfo("h261", 90000),
    32: PayloadInfo("MPV", 90000),
    33: PayloadInfo("MP2T", 90000),
    34: PayloadInfo("h263", 90000),
}

TELEPHONE_EVENT = PayloadInfo("telephone-event", 8000, PayloadKind.TELEPHONE_EVENT)

# Rates an estimate snaps to: narrowband, wideband, super-wideband, CD, fullband/Opus
# (RFC 7587), video (RFC 3551 §5).
COMMON_CLOCK_RATES: tuple[int, ...] = (8000, 16000, 32000, 44100, 48000, 90000)

DYNAMIC_PT_MIN = 96


def lookup(pt: int, hints: Mapping[int, PayloadInfo] | None = None) -> PayloadInfo | None:
    """Hint (from SDP) first, then the static table; None for an unknown dynamic type."""
    if hints is not None and pt in hints:
        return hints[pt]
    return STATIC_PAYLOAD_TYPES.get(pt)


def snap_clock_rate(rate_hz: float) -> int | None:
    """Nearest common clock rate on a log scale; None when ``rate_hz`` is not positive/finite."""
    if not math.isfinite(rate_hz) or rate_hz <= 0.0:
        return None
    return min(COMMON_CLOCK_RATES, key=lambda r: abs(math.log(rate_hz / r)))


def estimate_clock_rate(ts_advance: int, arrival_span_s: float) -> int | None:
    """Estimate a dynamic type's RTP clock from timestamp advance over arrival time.

    ``ts_advance`` is the RTP timestamp difference (units) between two media packets
    ``arrival_span_s`` seconds apart. Returns None when the span is too short (< 10 ms)
    or the timestamps did not advance: no jitter is computed without a clock.
    """
    if arrival_span_s < 0.010 or ts_advance <= 0:
        return None
    return snap_clock_rate(ts_advance / arrival_span_s)
