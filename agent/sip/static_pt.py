"""RFC 3551 §6 static RTP payload types (Tables 4 and 5).

Kept here because agent/rtp has no payload-type table yet; if one appears,
this module should become an import of it rather than a second copy.
G.722 is listed at 8000 Hz although it samples at 16 kHz (RFC 3551 §4.5.2).
"""

from __future__ import annotations

from typing import NamedTuple


class StaticPayload(NamedTuple):
    encoding: str
    clock_rate_hz: int
    channels: int
    media: str  # "audio" or "video"


STATIC_PAYLOAD_TYPES: dict[int, StaticPayload] = {
    0: StaticPayload("PCMU", 8000, 1, "audio"),
    3: StaticPayload("GSM", 8000, 1, "audio"),
    4: StaticPayload("G723", 8000, 1, "audio"),
    5: StaticPayload("DVI4", 8000, 1, "audio"),
    6: StaticPayload("DVI4", 16000, 1, "audio"),
    7: StaticPayload("LPC", 8000, 1, "audio"),
    8: StaticPayload("PCMA", 8000, 1, "audio"),
    9: StaticPayload("G722", 8000, 1, "audio"),
    10: StaticPayload("L16", 44100, 2, "audio"),
    11: StaticPayload("L16", 44100, 1, "audio"),
    12: StaticPayload("QCELP", 8000, 1, "audio"),
    13: StaticPayload("CN", 8000, 1, "audio"),
    14: StaticPayload("MPA", 90000, 1, "audio"),
    15: StaticPayload("G728", 8000, 1, "audio"),
    16: StaticPayload("DVI4", 11025, 1, "audio"),
    17: StaticPayload("DVI4", 22050, 1, "audio"),
    18: StaticPayload("G729", 8000, 1, "audio"),
    25: StaticPayload("CelB", 90000, 1, "video"),
    26: StaticPayload("JPEG", 90000, 1, "video"),
    28: StaticPayload("nv", 90000, 1, "video"),
    31: StaticPayload("H261", 90000, 1, "video"),
    32: StaticPayload("MPV", 90000, 1, "video"),
    33: StaticPayload("MP2T", 90000, 1, "video"),
    34: StaticPayload("H263", 90000, 1, "video"),
}
