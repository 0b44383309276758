"""RTCP compound packet parsing: SR, RR, SDES, BYE (RFC 3550 §6.4-6.6) and XR
(RFC 3611) with Receiver Reference Time, DLRR and VoIP Metrics blocks.

Theory of operation
-------------------
A datagram is a compound packet: individual RTCP packets back to back, each
with a 4-byte header whose length field counts 32-bit words minus one
(§6.4.1). `parse_compound` walks them with a bounds check before every read,
so a lying length or count raises `RtcpParseError` (the one error type) and
never reads or allocates past the datagram. Padding (P bit) is honoured on
any packet, not only the last: its last octet counts the padding, itself
included. Packet types this probe has no use for (APP 204, RTPFB 205, PSFB 206
and anything else in the RTCP range 192..223 of RFC 5761 §4) are returned as
`UnknownPacket` so a compound still parses; a type outside that range means
the datagram is not RTCP and raises.

Values keep their wire units, named in the field (`jitter_ts_units`,
`dlsr` in 1/65536 s); ratios from 8-bit fixed-point fields are converted to
floats, and the XR "127 = unavailable" convention becomes None.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_APP = 204
PT_XR = 207

XR_RRT = 4  # RFC 3611 §4.4 Receiver Reference Time
XR_DLRR = 5  # RFC 3611 §4.5
XR_VOIP_METRICS = 7  # RFC 3611 §4.7

SDES_CNAME = 1
SDES_END = 0

_HEADER = struct.Struct("!BBH")  # V P RC/SC | PT | length (words - 1)
_SSRC = struct.Struct("!I")
_SENDER_INFO = struct.Struct("!IIIIII")  # ssrc, NTP msw, NTP lsw, RTP ts, packets, octets
_REPORT_BLOCK = struct.Struct("!IIIIII")  # ssrc, fraction|cum lost, ext seq, jitter, LSR, DLSR
_XR_BLOCK_HEADER = struct.Struct("!BBH")  # BT | type-specific | block length (words - 1)
_RRT = struct.Struct("!II")
_DLRR_ITEM = struct.Struct("!III")
# RFC 3611 §4.7 figure: ssrc; loss, discard, burst density, gap density; burst and
# gap duration; round trip and end system delay; signal, noise (signed), RERL,
# Gmin; R, ext R, MOS-LQ, MOS-CQ; RX config, reserved, JB nominal; JB max, abs max.
_VOIP_METRICS = struct.Struct("!IBBBBHHHHbbBBBBBBBxHHH")

_UNAVAILABLE = 127  # RFC 3611 §4.7.5-4.7.6 "127 indicates this parameter is unavailable"


class RtcpParseError(ValueError):
    """An RTCP packet is malformed: bad version, length, count or block layout."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """Reception report block (RFC 3550 §6.4.1)."""

    ssrc: int  # the source this block reports on
    fraction_lost_raw: int  # 8-bit fixed point, /256
    cumulative_lost: int  # 24-bit signed: duplicates can make it negative
    extended_highest_seq: int
    jitter_ts_units: int  # interarrival jitter in RTP timestamp units
    lsr: int  # middle 32 bits of the last SR's NTP timestamp, 0 = no SR yet
    dlsr: int  # delay since last SR, 1/65536 s

    @property
    def fraction_lost(self) -> float:
        return self.fraction_lost_raw / 256.0

    @property
    def dlsr_s(self) -> float:
        return self.dlsr / 65536.0


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR, PT 200 (RFC 3550 §6.4.1)."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP, seconds since 1900 in 32.32 fixed point
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...]

    @property
    def ntp_short(self) -> int:
        """The middle 32 bits, which a receiver echoes as LSR."""
        return (self.ntp_timestamp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR, PT 201 (RFC 3550 §6.4.2)."""

    ssrc: int
    reports: tuple[ReportBlock, ...]


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, str], ...]  # (item type, text) in wire order

    @property
    def cname(self) -> str | None:
        for kind, text in self.items:
            if kind == SDES_CNAME:
                return text
        return None


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES, PT 202 (RFC 3550 §6.5)."""

    chunks: tuple[SdesChunk, ...]


@dataclass(frozen=True, slots=True)
class Goodbye:
    """BYE, PT 203 (RFC 3550 §6.6)."""

    ssrcs: tuple[int, ...]
    reason: str | None


@dataclass(frozen=True, slots=True)
class UnknownPacket:
    """An RTCP packet type this probe skips (APP, feedback, ...)."""

    packet_type: int
    count: int
    length_bytes: int


@dataclass(frozen=True, slots=True)
class ReceiverReferenceTime:
    """XR block 4 (RFC 3611 §4.4): the receiver's NTP time, echoed back as LRR."""

    ntp_timestamp: int

    @property
    def ntp_short(self) -> int:
        return (self.ntp_timestamp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class DlrrItem:
    ssrc: int  # the receiver whose RRT block is answered
    lrr: int  # middle 32 bits of that RRT's NTP timestamp
    dlrr: int  # delay since that RRT, 1/65536 s


@dataclass(frozen=True, slots=True)
class Dlrr:
    """XR block 5 (RFC 3611 §4.5)."""

    items: tuple[DlrrItem, ...]


@dataclass(frozen=True, slots=True)
class VoipMetrics:
    """XR block 7 (RFC 3611 §4.7), the far end's own view of the call."""

    ssrc: int
    loss_ratio: float  # §4.7.1, 8-bit fixed point /256
    discard_ratio: float
    burst_density: float  # §4.7.2, /256
    gap_density: float
    burst_duration_ms: int
    gap_duration_ms: int
    round_trip_delay_ms: int  # §4.7.3
    end_system_delay_ms: int
    signal_level_db: int | None  # §4.7.4, signed, None = 127 unavailable
    noise_level_db: int | None
    rerl_db: int | None
    gmin: int  # §4.7.2, default 16
    r_factor: int | None  # §4.7.5, None = 127 unavailable
    ext_r_factor: int | None
    mos_lq: float | None  # §4.7.5, MOS x10 on the wire, None = 127 unavailable
    mos_cq: float | None
    rx_config: int  # §4.7.6: PLC (2 bits) | JBA (2 bits) | JB rate (4 bits)
    jb_nominal_ms: int  # §4.7.7
    jb_max_ms: int
    jb_abs_max_ms: int

    @property
    def plc(self) -> int:
        """0 unspecified, 1 disabled, 2 enhanced, 3 standard."""
        return self.rx_config >> 6

    @property
    def jb_adaptive(self) -> bool | None:
        """JBA: 3 adaptive, 2 non-adaptive, else unknown."""
        jba = (self.rx_config >> 4) & 0x3
        return {3: True, 2: False}.get(jba)

    @property
    def jb_rate(self) -> int:
        return self.rx_config & 0x0F


@dataclass(frozen=True, slots=True)
class UnknownXrBlock:
    block_type: int
    length_bytes: int


XrBlock = ReceiverReferenceTime | Dlrr | VoipMetrics | UnknownXrBlock


@dataclass(frozen=True, slots=True)
class ExtendedReport:
    """XR, PT 207 (RFC 3611 §2)."""

    ssrc: int
    blocks: tuple[XrBlock, ...]


RtcpPacket = (
    SenderReport | ReceiverReport | SourceDescription | Goodbye | ExtendedReport | UnknownPacket
)


def looks_like_rtcp(payload: bytes) -> bool:
    """Cheap sniff for rtcp-mux demultiplexing (RFC 5761 §4).

    True for version 2, first packet type SR..XR (200..207) and a first length
    that fits the datagram. RTP with payload types 64..95 would collide with
    RTCP 192..223 in the second byte, which is why RFC 5761 forbids those.
    """
    if len(payload) < 8 or payload[0] >> 6 != 2 or not PT_SR <= payload[1] <= PT_XR:
        return False
    length_words = (payload[2] << 8) | payload[3]
    return (length_words + 1) * 4 <= len(payload)


def parse_compound(data: bytes) -> tuple[RtcpPacket, ...]:
    """Parse every packet of a compound RTCP datagram (RFC 3550 §6.1).

    Raises `RtcpParseError` for anything malformed, including trailing bytes
    that do not form a packet (so SRTCP's encrypted tail is refused), except
    up to 3 zero octets after the last packet.
    """
    size = len(data)
    if size < _HEADER.size:
        raise RtcpParseError("shorter than an RTCP header")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < size:
        if size - pos < _HEADER.size:
            # Some stacks mis-pad a final SDES by a few zero octets (seen in the
            # Wireshark SIP_CALL_RTP_G711 sample); tolerate those, nothing else.
            if packets and not any(data[pos:]):
                break
            raise RtcpParseError(f"{size - pos} trailing bytes after packet {len(packets)}")
        first, packet_type, length_words = _HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise RtcpParseError(f"version {first >> 6}, expected 2")
        end = pos + (length_words + 1) * 4
        if end > size:
            raise RtcpParseError(f"length {length_words} runs past the datagram")
        body_end = end
        if first & 0x20:  # §6.4.1: last octet counts the padding, itself included
            padding = data[end - 1]
            if padding == 0 or padding > end - pos - _HEADER.size:
                raise RtcpParseError(f"bad padding count {padding}")
            body_end = end - padding
        packets.append(_parse_packet(packet_type, first & 0x1F, data, pos + _HEADER.size, body_end))
        pos = end
    return tuple(packets)


def _parse_packet(packet_type: int, count: int, data: bytes, start: int, end: int) -> RtcpPacket:
    parser = _PARSERS.get(packet_type)
    if parser is not None:
        return parser(count, data, start, end)
    if not 192 <= packet_type <= 223:
        raise RtcpParseError(f"packet type {packet_type} is not RTCP")
    return UnknownPacket(packet_type=packet_type, count=count, length_bytes=end - start + 4)


def _need(start: int, length: int, end: int, what: str) -> None:
    if start + length > end:
        raise RtcpParseError(f"{what} truncated")


def _report_blocks(count: int, data: bytes, start: int, end: int) -> tuple[ReportBlock, ...]:
    _need(start, count * _REPORT_BLOCK.size, end, f"{count} report blocks")
    blocks = []
    for i in range(count):
        ssrc, lost, ext_seq, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(
            data, start + i * _REPORT_BLOCK.size
        )
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:  # 24-bit two's complement (§6.4.1)
            cumulative -= 0x1000000
        blocks.append(ReportBlock(ssrc, lost >> 24, cumulative, ext_seq, jitter, lsr, dlsr))
    return tuple(blocks)


def _parse_sr(count: int, data: bytes, start: int, end: int) -> SenderReport:
    _need(start, _SENDER_INFO.size, end, "sender info")
    ssrc, msw, lsw, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(data, start)
    # Octets after the report blocks are a profile-specific extension (§6.4.1).
    reports = _report_blocks(count, data, start + _SENDER_INFO.size, end)
    return SenderReport(ssrc, (msw << 32) | lsw, rtp_ts, packets, octets, reports)


def _parse_rr(count: int, data: bytes, start: int, end: int) -> ReceiverReport:
    _need(start, _SSRC.size, end, "RR ssrc")
    (ssrc,) = _SSRC.unpack_from(data, start)
    return ReceiverReport(ssrc, _report_blocks(count, data, start + _SSRC.size, end))


def _parse_sdes(count: int, data: bytes, start: int, end: int) -> SourceDescription:
    chunks = []
    pos = start
    for _ in range(count):
        _need(pos, _SSRC.size, end, "SDES chunk")
        (ssrc,) = _SSRC.unpack_from(data, pos)
        pos += _SSRC.size
        items: list[tuple[int, str]] = []
        while True:
            _need(pos, 1, end, "SDES item list")
            kind = data[pos]
            if kind == SDES_END:  # §6.5: null item, then pad to a 32-bit boundary
                pos = (pos + 4) & ~3
                break
            _need(pos, 2, end, "SDES item")
            length = data[pos + 1]
            _need(pos + 2, length, end, "SDES item text")
            items.append((kind, data[pos + 2 : pos + 2 + length].decode("utf-8", "replace")))
            pos += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(count: int, data: bytes, start: int, end: int) -> Goodbye:
    _need(start, count * _SSRC.size, end, f"BYE with {count} sources")
    ssrcs = tuple(_SSRC.unpack_from(data, start + 4 * i)[0] for i in range(count))
    pos = start + count * _SSRC.size
    reason = None
    if pos < end:  # §6.6: optional length-prefixed reason
        length = data[pos]
        _need(pos + 1, length, end, "BYE reason")
        reason = data[pos + 1 : pos + 1 + length].decode("utf-8", "replace")
    return Goodbye(ssrcs, reason)


def _parse_xr(_count: int, data: bytes, start: int, end: int) -> ExtendedReport:
    _need(start, _SSRC.size, end, "XR ssrc")
    (ssrc,) = _SSRC.unpack_from(data, start)
    blocks: list[XrBlock] = []
    pos = start + _SSRC.size
    while pos < end:
        _need(pos, _XR_BLOCK_HEADER.size, end, "XR block header")
        block_type, _, length_words = _XR_BLOCK_HEADER.unpack_from(data, pos)
        body = pos + _XR_BLOCK_HEADER.size
        block_end = body + length_words * 4  # RFC 3611 §3: words minus one incl. header
        _need(body, length_words * 4, end, f"XR block {block_type}")
        blocks.append(_parse_xr_block(block_type, data, body, block_end))
        pos = block_end
    return ExtendedReport(ssrc, tuple(blocks))


def _parse_xr_block(block_type: int, data: bytes, start: int, end: int) -> XrBlock:
    length = end - start
    if block_type == XR_RRT:
        _need(start, _RRT.size, end, "RRT block")
        msw, lsw = _RRT.unpack_from(data, start)
        return ReceiverReferenceTime((msw << 32) | lsw)
    if block_type == XR_DLRR:
        if length % _DLRR_ITEM.size:
            raise RtcpParseError(f"DLRR block of {length} bytes")
        items = (DlrrItem(*_DLRR_ITEM.unpack_from(data, at)) for at in range(start, end, 12))
        return Dlrr(tuple(items))
    if block_type == XR_VOIP_METRICS:
        _need(start, _VOIP_METRICS.size, end, "VoIP Metrics block")
        return _voip_metrics(_VOIP_METRICS.unpack_from(data, start))
    return UnknownXrBlock(block_type, length + _XR_BLOCK_HEADER.size)


def _or_none(value: int) -> int | None:
    return None if value == _UNAVAILABLE else value


def _mos(value: int) -> float | None:
    return None if value == _UNAVAILABLE else value / 10.0


def _voip_metrics(f: tuple[int, ...]) -> VoipMetrics:
    return VoipMetrics(
        ssrc=f[0],
        loss_ratio=f[1] / 256.0,
        discard_ratio=f[2] / 256.0,
        burst_density=f[3] / 256.0,
        gap_density=f[4] / 256.0,
        burst_duration_ms=f[5],
        gap_duration_ms=f[6],
        round_trip_delay_ms=f[7],
        end_system_delay_ms=f[8],
        signal_level_db=_or_none(f[9]),
        noise_level_db=_or_none(f[10]),
        rerl_db=_or_none(f[11]),
        gmin=f[12],
        r_factor=_or_none(f[13]),
        ext_r_factor=_or_none(f[14]),
        mos_lq=_mos(f[15]),
        mos_cq=_mos(f[16]),
        rx_config=f[17],
        jb_nominal_ms=f[18],
        jb_max_ms=f[19],
        jb_abs_max_ms=f[20],
    )


_PARSERS: dict[int, Callable[[int, bytes, int, int], RtcpPacket]] = {
    PT_SR: _parse_sr,
    PT_RR: _parse_rr,
    PT_SDES: _parse_sdes,
    PT_BYE: _parse_bye,
    PT_XR: _parse_xr,
}


MAX_REPORT_BLOCKS = 31  # the 5-bit report count (RC) of an SR/RR header (§6.4.1)


def encode_report(report: SenderReport | ReceiverReport) -> bytes:
    """One SR or RR as it is on the wire (§6.4.1, §6.4.2): what `parse_compound` reads
    back as ``(report,)``. For reports that arrive in another form (HEP's RTCP-as-JSON,
    `agent.decode.hep_rtcp_json`). Raises ValueError for more than `MAX_REPORT_BLOCKS`
    blocks or a field wider than its slot."""
    if len(report.reports) > MAX_REPORT_BLOCKS:
        raise ValueError(f"{len(report.reports)} report blocks, at most {MAX_REPORT_BLOCKS}")
    try:
        blocks = b"".join(_REPORT_BLOCK.pack(
            b.ssrc, (b.fraction_lost_raw << 24) | (b.cumulative_lost & 0xFFFFFF),
            b.extended_highest_seq, b.jitter_ts_units, b.lsr, b.dlsr) for b in report.reports)
        if isinstance(report, SenderReport):
            head = _SENDER_INFO.pack(report.ssrc, report.ntp_timestamp >> 32,
                                     report.ntp_timestamp & 0xFFFFFFFF, report.rtp_timestamp,
                                     report.packet_count, report.octet_count)
        else:
            head = _SSRC.pack(report.ssrc)
    except struct.error as err:
        raise ValueError(str(err)) from None
    packet_type = PT_SR if isinstance(report, SenderReport) else PT_RR
    body = head + blocks
    return _HEADER.pack(0x80 | len(report.reports), packet_type, len(body) // 4) + body
