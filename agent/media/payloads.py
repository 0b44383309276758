"""RTP payload types and encoding names: the RFC 3551 static table, SDP names, kinds.

One name per codec everywhere. The spelling is the media subtype as IANA
registers it and SDP writes it (RFC 4855 §3: names are case-insensitive):
"PCMU", "PCMA", "G729", "G722", "G726-32", "AMR-WB", "opus", "telephone-event",
"CN". `canonical_name` maps any spelling (``pcma``, ``Opus``, ``g729``) to it,
plus a few names seen in configs and older tools (``G711A``, ``G729A``); a
name the registry does not know is kept as written (stripped of ``/clock``).

Static types (RFC 3551 §6, Tables 4 and 5) carry a fixed RTP clock. G.722
(PT 9) uses an 8000 Hz RTP clock although it samples at 16 kHz (RFC 3551
§4.5.2, a historical error kept for compatibility). Dynamic types (96-127)
are bound by SDP ``a=rtpmap``; without SDP the tracker estimates the clock
from how fast RTP timestamps advance (`estimate_clock_rate`).

Two kinds of "kind": `MediaKind` says what an encoding is (audio, video,
image/T.38, telephone-event, comfort noise, text, application) and is what a
call groups its streams by; `PayloadKind` is what a packet is to the RTP
statistics (media, comfort noise, telephone event), a small integer column.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum


class MediaKind(StrEnum):
    """What an encoding carries (the SDP ``m=`` media type, refined for audio)."""

    AUDIO = "audio"
    VIDEO = "video"
    IMAGE = "image"  # T.38 fax (RFC 3362 image/t38)
    TELEPHONE_EVENT = "telephone-event"  # RFC 4733
    COMFORT_NOISE = "comfort-noise"  # RFC 3389
    TEXT = "text"  # RFC 4103 T.140
    APPLICATION = "application"
    UNKNOWN = "unknown"


class PayloadKind(IntEnum):
    """What a packet is, as far as the RTP statistics are concerned."""

    MEDIA = 0  # audio or video: counted in sequence space and in jitter
    COMFORT_NOISE = 1  # RFC 3389: counted as received, excluded from jitter
    TELEPHONE_EVENT = 2  # RFC 4733: counted in sequence space, excluded from jitter


@dataclass(frozen=True, slots=True)
class Encoding:
    """A registered encoding: its canonical name, kind and usual RTP clock (Hz)."""

    name: str
    kind: MediaKind
    clock_rate: int | None  # None: the rtpmap must say (no single usual rate)


_A, _V = MediaKind.AUDIO, MediaKind.VIDEO

#: Every encoding the probe knows by name. Clock rates: RFC 3551 §4.5 / §5, and the
#: payload format RFCs named per row.
ENCODINGS: tuple[Encoding, ...] = (
    Encoding("PCMU", _A, 8000), Encoding("PCMA", _A, 8000),  # RFC 3551 §4.5.14
    Encoding("G722", _A, 8000),  # RFC 3551 §4.5.2: 8000 Hz RTP clock
    Encoding("G723", _A, 8000), Encoding("G728", _A, 8000), Encoding("G729", _A, 8000),
    Encoding("G729D", _A, 8000), Encoding("G729E", _A, 8000),
    *(Encoding(f"{p}G726-{k}", _A, 8000) for p in ("", "AAL2-") for k in (16, 24, 32, 40)),
    Encoding("G7221", _A, 16000),  # RFC 5577
    Encoding("G719", _A, 48000),  # RFC 5404
    Encoding("GSM", _A, 8000), Encoding("GSM-EFR", _A, 8000),  # RFC 3551 §4.5.8-9
    Encoding("GSM-HR-08", _A, 8000),  # RFC 5993
    Encoding("AMR", _A, 8000), Encoding("AMR-WB", _A, 16000),  # RFC 4867
    Encoding("EVS", _A, 16000),  # 3GPP TS 26.445 Annex A
    Encoding("iLBC", _A, 8000),  # RFC 3952
    Encoding("opus", _A, 48000),  # RFC 7587: always 48000
    Encoding("speex", _A, None),  # RFC 5574: 8000, 16000 or 32000
    Encoding("SILK", _A, None),
    Encoding("DVI4", _A, None), Encoding("VDVI", _A, None), Encoding("LPC", _A, 8000),
    Encoding("QCELP", _A, 8000), Encoding("EVRC", _A, 8000),
    Encoding("L8", _A, None), Encoding("L16", _A, None), Encoding("L24", _A, None),
    Encoding("MPA", _A, 90000), Encoding("MP4A-LATM", _A, None),
    Encoding("telephone-event", MediaKind.TELEPHONE_EVENT, 8000),  # RFC 4733
    Encoding("CN", MediaKind.COMFORT_NOISE, 8000),  # RFC 3389
    Encoding("red", _A, None), Encoding("ulpfec", _V, 90000),  # RFC 2198, RFC 5109
    Encoding("H261", _V, 90000), Encoding("H263", _V, 90000),
    Encoding("H263-1998", _V, 90000), Encoding("H263-2000", _V, 90000),  # RFC 4629
    Encoding("H264", _V, 90000), Encoding("H265", _V, 90000),  # RFC 6184, RFC 7798
    Encoding("VP8", _V, 90000), Encoding("VP9", _V, 90000), Encoding("AV1", _V, 90000),
    Encoding("MP4V-ES", _V, 90000), Encoding("JPEG", _V, 90000), Encoding("CelB", _V, 90000),
    Encoding("nv", _V, 90000), Encoding("MPV", _V, 90000), Encoding("MP2T", _V, 90000),
    Encoding("rtx", _V, 90000),  # RFC 4588 (rides along its media's kind; video is usual)
    Encoding("t38", MediaKind.IMAGE, 8000),  # RFC 4612 audio/t38, ITU-T T.38 Annex D
    Encoding("t140", MediaKind.TEXT, 1000),  # RFC 4103
)  # fmt: skip

# Other spellings seen in configs, tools and older SDP (tshark's names among them).
_ALIASES: Mapping[str, str] = {
    "G711U": "PCMU", "G711MU": "PCMU", "ULAW": "PCMU", "G711A": "PCMA", "ALAW": "PCMA",
    "G729A": "G729", "G729B": "G729", "G729AB": "G729", "G7231": "G723",
    "G726": "G726-32", "G72616": "G726-16", "G72624": "G726-24", "G72632": "G726-32",
    "G72640": "G726-40", "AMRWB": "AMR-WB", "AMRNB": "AMR", "GSMEFR": "GSM-EFR",
    "GSMFR": "GSM", "GSM-HR": "GSM-HR-08", "GSMHR": "GSM-HR-08", "G7221C": "G7221",
    "TELEPHONEEVENT": "telephone-event", "T38": "t38",
}  # fmt: skip

def _compact(name: str) -> str:
    """'G.729a' -> 'G729A', 'amr_wb' -> 'AMRWB', 'PCMA/8000' -> 'PCMA'."""
    base = name.split("/", 1)[0].upper()
    return "".join(ch for ch in base if ch.isalnum())


_BY_NAME: Mapping[str, Encoding] = {
    **{alias: next(e for e in ENCODINGS if e.name == target)
       for alias, target in _ALIASES.items()},
    **{_compact(e.name): e for e in ENCODINGS},
}


@functools.lru_cache(maxsize=512)  # names repeat in every SDP: normalise each once
def encoding(name: str | None) -> Encoding | None:
    """The registered encoding for any spelling of ``name``; None when unknown."""
    return _BY_NAME.get(_compact(name)) if name else None


def canonical_name(name: str) -> str:
    """The registry's spelling of ``name`` ("pcma" -> "PCMA"); unknown names as written."""
    found = encoding(name)
    return found.name if found is not None else name.split("/", 1)[0].strip()


def media_kind(name: str | None) -> MediaKind:
    """What an encoding carries; UNKNOWN for a name the registry does not know."""
    found = encoding(name)
    return found.kind if found is not None else MediaKind.UNKNOWN


RATED_MEDIA = frozenset({MediaKind.AUDIO.value, MediaKind.UNKNOWN.value})
"""What a stream must carry to get an E-model rating: audio, or RTP the probe cannot
name (rated on stated fallback figures, its MOS never judged)."""


def stream_media(sdp_media: str | None, codec: str | None) -> str:
    """What a stream carries: the ``m=`` media type its SDP gave (audio, video, image,
    application, text ...), refined by its codec: a stream of RFC 4733 events or comfort
    noise alone (its codec is one of those only when no media packet came) is that, not
    audio. Without SDP, the registry's kind of its codec ("unknown" when unnamed)."""
    kind = media_kind(codec)
    if kind in (MediaKind.TELEPHONE_EVENT, MediaKind.COMFORT_NOISE):
        return kind.value
    if sdp_media:
        return sdp_media.lower()
    return kind.value


_PACKET_KIND = {MediaKind.TELEPHONE_EVENT: PayloadKind.TELEPHONE_EVENT,
                MediaKind.COMFORT_NOISE: PayloadKind.COMFORT_NOISE}


@dataclass(frozen=True, slots=True)
class PayloadInfo:
    """What a payload type number means: canonical codec name, RTP clock (Hz), kind, and
    the SDP ``a=fmtp`` parameters (some pick a codec mode with other figures)."""

    name: str
    clock_rate: int | None
    kind: PayloadKind = PayloadKind.MEDIA
    channels: int = 1
    fmtp: str | None = None

    @property
    def media_kind(self) -> MediaKind:
        return media_kind(self.name)


def payload_info(encoding_name: str, clock_rate: int | None, channels: int = 1,
                 fmtp: str | None = None) -> PayloadInfo:
    """A payload type as an ``a=rtpmap`` (and ``a=fmtp``) binds it: the name normalised,
    the kind derived."""
    name = canonical_name(encoding_name)
    kind = _PACKET_KIND.get(media_kind(name), PayloadKind.MEDIA)
    return PayloadInfo(name, clock_rate, kind, channels, fmtp or None)


def _static(name: str, clock: int, channels: int = 1) -> PayloadInfo:
    return payload_info(name, clock, channels)


# RFC 3551 §6 Table 4 (audio) and Table 5 (video).
STATIC_PAYLOAD_TYPES: Mapping[int, PayloadInfo] = {
    0: _static("PCMU", 8000), 3: _static("GSM", 8000), 4: _static("G723", 8000),
    5: _static("DVI4", 8000), 6: _static("DVI4", 16000), 7: _static("LPC", 8000),
    8: _static("PCMA", 8000), 9: _static("G722", 8000),  # §4.5.2: 8000 Hz RTP clock
    10: _static("L16", 44100, 2), 11: _static("L16", 44100), 12: _static("QCELP", 8000),
    13: _static("CN", 8000),  # RFC 3389
    14: _static("MPA", 90000), 15: _static("G728", 8000), 16: _static("DVI4", 11025),
    17: _static("DVI4", 22050), 18: _static("G729", 8000),
    19: _static("CN", 8000),  # reserved; comfort noise before RFC 3389 took PT 13
    25: _static("CelB", 90000), 26: _static("JPEG", 90000), 28: _static("nv", 90000),
    31: _static("H261", 90000), 32: _static("MPV", 90000), 33: _static("MP2T", 90000),
    34: _static("H263", 90000),
}  # fmt: skip

TELEPHONE_EVENT = payload_info("telephone-event", 8000)

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
