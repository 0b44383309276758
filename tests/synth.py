"""Synthetic captures with known truth: an independent oracle for the RTP statistics.

Theory of operation
-------------------
This module deliberately imports nothing from ``agent``: it is the yardstick the
probe is measured against, so it must not share code (or bugs) with it.

1. ``make_stream`` lays a G.711-style stream out on a grid of send slots (one
   every ``ptime_ms``), with optional RFC 4733 DTMF events and RFC 3389
   CN + DTX silences, then applies network impairments (loss, duplicates,
   hold-back reordering, per-packet random delay = arrival jitter). Arrival
   times are quantised to the capture's timestamp resolution *before* the
   truth is computed, so the truth is exact for the file that gets written.
2. ``compute_truth`` derives the statistics from their definitions, in the
   plainest code possible, on the generator's own extended sequence numbers
   and unwrapped RTP timestamps (no wrap-around guessing):

   - ``packets``: every packet received, duplicates included;
   - ``lowest`` is the lowest sequence number received, wherever it arrives
     (a packet reordered before the first arrival belongs to the stream);
     ``expected = highest_ext_seq - lowest + 1``;
     ``lost = expected - distinct sequence numbers received``;
   - ``duplicates``: packets whose sequence number had already been received;
   - ``reordered``: non-duplicate packets that arrive after a higher sequence
     number (those below the first arrival included);
   - RFC 3550 A.8 jitter on arrival order, ``J += (|D| - J) / 16``, over the
     audio packets only (telephone-event and comfort-noise packets are left
     out; duplicates and reordered audio packets stay in, exactly as they
     arrive). ``jitter_mean``/``jitter_max`` are the mean/max of J after each
     included packet, the first packet's J = 0 included (as in the
     STANDARDS.md vector, which lists J for all 8 packets). tshark's mean
     leaves the first packet out (sum / (n - 1)): a relative difference of
     1/n, under 0.2 % for the streams the tests use.

   By default the generator sends the first slot first and keeps the first
   packets in order, so the first arrival is the lowest; with
   ``Impairments(jitter_head=True)`` the random delay applies to them too and
   the 2nd packet may arrive before the 1st. The generator's streams are
   short and reorder by well under HOLE_WINDOW (1024) packets, so the probe's
   "untracked" rule for packets that far behind the maximum never applies and
   the truth need not model it.
3. ``frame``/``write_pcap``/``write_pcapng`` wrap RTP in UDP/IPv4|IPv6 and a
   link layer (Ethernet with 0..2 VLAN tags, Linux SLL, raw IP) and write
   classic pcap (µs or ns, either byte order) or pcapng (several interfaces
   with their own link type and if_tsresol), optionally gzip-compressed.
"""

from __future__ import annotations

import gzip
import ipaddress
import random
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tshark_table import TsharkStream
from tshark_table import parse_rtp_streams as parse_tshark_rtp_streams

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # LINKTYPE_RAW (not DLT_RAW, whose number differs by platform)
LINKTYPE_LINUX_SLL = 113

PT_PCMU = 0
PT_PCMA = 8
PT_CN = 13  # RFC 3389, static
PT_TELEPHONE_EVENT = 101  # RFC 4733; dynamic, the usual choice of SIP phones

ETH_P_IPV4 = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8

NS = 1_000_000_000
BASE_EPOCH_NS = 1_700_000_000 * NS  # a plausible capture date; float64 still keeps ~0.2 µs here

# ---------------------------------------------------------------------------
# Truth
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    """One received RTP packet as the truth sees it (generator-side, unwrapped values)."""

    arrival_ns: int  # capture timestamp, already quantised to the file's resolution
    ext_seq: int  # extended sequence number: never wraps
    ext_ts: int  # unwrapped RTP timestamp
    pt: int
    marker: bool = False


@dataclass(frozen=True, slots=True)
class StreamTruth:
    """Ground truth of one stream, from the definitions in the module docstring."""

    packets: int
    expected: int
    lost: int
    duplicates: int
    reordered: int
    seq_wraps: int
    loss_bursts: int
    loss_burst_max: int
    jitter_ms: float
    jitter_mean_ms: float
    jitter_max_ms: float
    markers: int
    telephone_event_packets: int
    comfort_noise_packets: int
    first_ts: float
    last_ts: float


def compute_truth(
    arrivals: Sequence[Arrival],
    clock_rate: int = 8000,
    *,
    telephone_event_pts: frozenset[int] = frozenset({PT_TELEPHONE_EVENT}),
    comfort_noise_pts: frozenset[int] = frozenset({PT_CN}),
    duplicates_in_jitter: bool = True,
) -> StreamTruth:
    """Statistics of ``arrivals`` (in arrival order) from their definitions.

    ``expected`` counts from the lowest sequence number received, not the first
    arrival's. No HOLE_WINDOW subtlety: the generator's streams are short and
    never reorder a packet anywhere near 1024 numbers behind the highest.

    ``duplicates_in_jitter``: RFC 3550 A.8 runs J over every data packet received
    and tshark does the same (checked: its mean/max match this truth to its 3
    printed decimals on heavily duplicated streams). False leaves repeated
    sequence numbers out of J, the alternative some receivers choose.
    """
    if not arrivals:
        raise ValueError("a stream needs at least one packet")
    seen: set[int] = set()
    highest = arrivals[0].ext_seq
    lowest = min(a.ext_seq for a in arrivals)
    duplicates = reordered = 0
    for a in arrivals:
        if a.ext_seq in seen:
            duplicates += 1
            continue
        seen.add(a.ext_seq)
        if a.ext_seq < highest:
            reordered += 1
        highest = max(highest, a.ext_seq)
    expected = highest - lowest + 1
    missing = [s for s in range(lowest, highest + 1) if s not in seen]
    bursts = _runs(missing)

    excluded = telephone_event_pts | comfort_noise_pts
    included, seen_j = [], set()
    for a in arrivals:
        if a.pt in excluded or (not duplicates_in_jitter and a.ext_seq in seen_j):
            continue
        seen_j.add(a.ext_seq)
        included.append(a)
    jit = _a8_jitter_ns(included, clock_rate)
    return StreamTruth(
        packets=len(arrivals),
        expected=expected,
        lost=expected - len(seen),
        duplicates=duplicates,
        reordered=reordered,
        seq_wraps=(highest >> 16) - (lowest >> 16),
        loss_bursts=len(bursts),
        loss_burst_max=max(bursts, default=0),
        jitter_ms=jit[-1] / 1e6 if jit else 0.0,
        jitter_mean_ms=sum(jit) / len(jit) / 1e6 if jit else 0.0,
        jitter_max_ms=max(jit, default=0.0) / 1e6,
        markers=sum(1 for a in arrivals if a.marker),
        telephone_event_packets=sum(1 for a in arrivals if a.pt in telephone_event_pts),
        comfort_noise_packets=sum(1 for a in arrivals if a.pt in comfort_noise_pts),
        first_ts=min(a.arrival_ns for a in arrivals) / NS,
        last_ts=max(a.arrival_ns for a in arrivals) / NS,
    )


def _runs(sorted_values: Sequence[int]) -> list[int]:
    """Lengths of the runs of consecutive integers in an ascending list."""
    runs: list[int] = []
    prev = None
    for v in sorted_values:
        if prev is not None and v == prev + 1:
            runs[-1] += 1
        else:
            runs.append(1)
        prev = v
    return runs


def _a8_jitter_ns(included: Sequence[Arrival], clock_rate: int) -> list[float]:
    """J (in ns) after each included packet, RFC 3550 A.8, first packet's J = 0.

    D is worked out in integer nanoseconds (the RTP timestamp step converts
    exactly for 8 kHz: 125 000 ns per unit) so the truth carries no float noise
    beyond the running average itself.
    """
    out: list[float] = []
    j = 0.0
    prev: Arrival | None = None
    for a in included:
        if prev is not None:
            transit_ns = (a.arrival_ns - prev.arrival_ns) - (
                a.ext_ts - prev.ext_ts
            ) * NS / clock_rate
            j += (abs(transit_ns) - j) / 16.0
        out.append(j)
        prev = a
    return out


# ---------------------------------------------------------------------------
# Stream generator
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Impairments:
    """Network impairments. Probabilities are per sent packet; delays in ms."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # chance a packet is held back by ``reorder_delay_ms``
    reorder_delay_ms: tuple[float, float] = (25.0, 70.0)
    jitter_ms: float = 0.0  # each packet gets uniform(0, jitter_ms) one-way delay
    drop_slots: frozenset[int] = frozenset()  # send-order indices dropped on top of ``loss``
    # The first packets travel unharmed and in order, so that a probe's
    # RTP detection (which may want a couple of in-sequence packets) sees the
    # stream start where the truth says it starts.
    clean_head: int = 4
    # True: the clean head gets the full uniform(0, jitter_ms) delay as well, so
    # with jitter_ms > ptime the 2nd packet may arrive before the 1st (the head is
    # still never lost, duplicated or held back). False: its delay is capped at
    # ptime / 2, which keeps it in order.
    jitter_head: bool = False
    # send-order indices duplicated on top of ``duplicate`` (never in the clean head)
    duplicate_slots: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """An RFC 4733 event occupying ``slots`` send slots from slot ``at``."""

    at: int
    slots: int = 5
    event: int = 5
    volume: int = 10


@dataclass(frozen=True, slots=True)
class Silence:
    """RFC 3389 CN packet at slot ``at``, then ``gap`` slots with nothing sent (DTX)."""

    at: int
    gap: int = 50


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """A packet of a generated stream, in arrival order."""

    arrival_ns: int
    data: bytes  # the RTP packet (UDP payload)
    ext_seq: int
    ext_ts: int
    pt: int
    marker: bool


@dataclass(frozen=True, slots=True)
class SynthStream:
    ssrc: int
    clock_rate: int
    packets: list[RtpPacket]
    truth: StreamTruth


@dataclass(slots=True)
class _Sent:
    send_ns: int
    ext_seq: int
    ext_ts: int
    pt: int
    marker: bool
    payload: bytes
    order: int = 0


def rtp_packet(seq: int, ts: int, ssrc: int, pt: int, marker: bool, payload: bytes) -> bytes:
    """RFC 3550 fixed header (V=2, no padding/extension/CSRC) + payload."""
    return (
        struct.pack(
            "!BBHII",
            0x80,
            (0x80 if marker else 0) | pt,
            seq & 0xFFFF,
            ts & 0xFFFFFFFF,
            ssrc,
        )
        + payload
    )


def _schedule(
    n_slots: int,
    *,
    pt: int,
    ts_step: int,
    ptime_ns: int,
    start_seq: int,
    start_ts: int,
    start_ns: int,
    dtmf: Sequence[DtmfEvent],
    silences: Sequence[Silence],
    payload_len: int,
    rng: random.Random,
) -> list[_Sent]:
    """What the sender emits, in send order."""
    dtmf_at = {d.at: d for d in dtmf}
    cn_at = {s.at: s for s in silences}
    sent: list[_Sent] = []
    seq = start_seq
    slot = 0
    marker_next = True  # first packet of the stream starts a talkspurt
    while slot < n_slots:
        t_ns = start_ns + slot * ptime_ns
        ts = start_ts + slot * ts_step
        if slot in dtmf_at:
            ev = dtmf_at[slot]
            for i in range(ev.slots):
                end = i == ev.slots - 1
                body = struct.pack(
                    "!BBH", ev.event, (0x80 if end else 0) | ev.volume, ts_step * (i + 1)
                )
                # RFC 4733 2.5.1.4: the end packet is sent three times, same seq and ts.
                for rep in range(3 if end else 1):
                    sent.append(
                        _Sent(
                            t_ns + i * ptime_ns + rep * 5_000_000,
                            seq,
                            ts,
                            PT_TELEPHONE_EVENT,
                            i == 0 and rep == 0,
                            body,
                        )
                    )
                seq += 1
            slot += ev.slots
            continue
        if slot in cn_at:
            sil = cn_at[slot]
            # RFC 3389 payload: noise level in -dBov, no spectral coefficients.
            sent.append(_Sent(t_ns, seq, ts, PT_CN, False, bytes([64])))
            seq += 1
            slot += 1 + sil.gap
            marker_next = True  # RFC 3551 4.1: first packet after silence has M set
            continue
        sent.append(_Sent(t_ns, seq, ts, pt, marker_next, rng.randbytes(payload_len)))
        marker_next = False
        seq += 1
        slot += 1
    for i, s in enumerate(sent):
        s.order = i
    return sent


def make_stream(
    n_slots: int,
    *,
    ssrc: int,
    seed: int = 1,
    pt: int = PT_PCMU,
    clock_rate: int = 8000,
    ptime_ms: int = 20,
    start_seq: int | None = None,
    start_ts: int | None = None,
    start_ns: int = BASE_EPOCH_NS,
    impair: Impairments = Impairments(),
    dtmf: Sequence[DtmfEvent] = (),
    silences: Sequence[Silence] = (),
    resolution_ns: int = 1000,
    payload_len: int = 160,
) -> SynthStream:
    """A stream of ``n_slots`` send slots with impairments, and its exact truth.

    ``resolution_ns`` must match the capture file the stream goes into
    (1000 for µs pcap / if_tsresol 6, 1 for ns).
    """
    rng = random.Random(seed)
    if start_seq is None:
        start_seq = rng.randrange(0, 1 << 16)
    if start_ts is None:
        start_ts = rng.randrange(0, 1 << 32)
    ptime_ns = ptime_ms * 1_000_000
    sent = _schedule(
        n_slots,
        pt=pt,
        ts_step=clock_rate * ptime_ms // 1000,
        ptime_ns=ptime_ns,
        start_seq=start_seq,
        start_ts=start_ts,
        start_ns=start_ns,
        dtmf=dtmf,
        silences=silences,
        payload_len=payload_len,
        rng=rng,
    )
    head_cap_ms = impair.jitter_ms if impair.jitter_head else min(impair.jitter_ms, ptime_ms / 2)
    received: list[tuple[int, int, _Sent]] = []  # (arrival_ns, tie-break, packet)
    for s in sent:
        head = s.order < impair.clean_head
        if not head and (s.order in impair.drop_slots or rng.random() < impair.loss):
            continue
        delay_ms = rng.uniform(0, head_cap_ms if head else impair.jitter_ms)
        if not head and rng.random() < impair.reorder:
            delay_ms += rng.uniform(*impair.reorder_delay_ms)
        arrival = s.send_ns + round(delay_ms * 1e6)
        received.append((arrival, 2 * s.order, s))
        if not head and (rng.random() < impair.duplicate or s.order in impair.duplicate_slots):
            received.append((arrival + round(rng.uniform(0.1, 30.0) * 1e6), 2 * s.order + 1, s))
    # Quantise first, then sort: the truth must describe the file exactly, and
    # equal timestamps keep their generation order (the order they are written).
    quantised = [((a // resolution_ns) * resolution_ns, k, s) for a, k, s in received]
    quantised.sort(key=lambda r: (r[0], r[1]))
    packets = [
        RtpPacket(
            a,
            rtp_packet(s.ext_seq, s.ext_ts, ssrc, s.pt, s.marker, s.payload),
            s.ext_seq,
            s.ext_ts,
            s.pt,
            s.marker,
        )
        for a, _, s in quantised
    ]
    truth = compute_truth(
        [Arrival(p.arrival_ns, p.ext_seq, p.ext_ts, p.pt, p.marker) for p in packets], clock_rate
    )
    return SynthStream(ssrc=ssrc, clock_rate=clock_rate, packets=packets, truth=truth)


# ---------------------------------------------------------------------------
# Framing: UDP / IP / link layer
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VlanTag:
    vid: int
    pcp: int = 0


@dataclass(frozen=True, slots=True)
class Flow:
    """Where a stream travels. IPv4 or IPv6 is chosen by the address text."""

    src: str
    dst: str
    sport: int
    dport: int
    dscp: int = 46
    vlans: tuple[VlanTag, ...] = ()  # outermost first; two tags = QinQ (outer 0x88A8)

    @property
    def src_endpoint(self) -> str:
        return _endpoint(self.src, self.sport)

    @property
    def dst_endpoint(self) -> str:
        return _endpoint(self.dst, self.dport)


def _endpoint(addr: str, port: int) -> str:
    """The JSON contract's text form: ``a.b.c.d:port`` or ``[v6]:port``."""
    ip = ipaddress.ip_address(addr)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(data: bytes) -> int:
    """RFC 1071."""
    return ~_ones_complement_sum(data) & 0xFFFF


def ip_udp(flow: Flow, payload: bytes, *, dscp: int | None = None, ident: int = 0) -> bytes:
    """An IPv4 or IPv6 packet carrying one UDP datagram, checksums filled in."""
    src = ipaddress.ip_address(flow.src)
    dst = ipaddress.ip_address(flow.dst)
    if src.version != dst.version:
        raise ValueError("src and dst must be the same IP version")
    tclass = (flow.dscp if dscp is None else dscp) << 2  # ECN 0
    udp_len = 8 + len(payload)
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, udp_len)
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", udp_len, 17)
    udp_nock = struct.pack("!HHHH", flow.sport, flow.dport, udp_len, 0) + payload
    csum = internet_checksum(pseudo + udp_nock) or 0xFFFF  # 0 means "none" on the wire
    udp = udp_nock[:6] + struct.pack("!H", csum) + udp_nock[8:]
    if src.version == 4:
        hdr = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            tclass,
            20 + udp_len,
            ident & 0xFFFF,
            0x4000,
            64,
            17,
            0,
            src.packed,
            dst.packed,
        )
        hdr = hdr[:10] + struct.pack("!H", internet_checksum(hdr)) + hdr[12:]
        return hdr + udp
    first_word = (6 << 28) | (tclass << 20) | 0x12345  # arbitrary flow label
    return struct.pack("!IHBB", first_word, udp_len, 17, 64) + src.packed + dst.packed + udp


_MAC_A = bytes.fromhex("020000000001")
_MAC_B = bytes.fromhex("020000000002")


def link_frame(linktype: int, ip_packet: bytes, vlans: Sequence[VlanTag] = ()) -> bytes:
    """Wrap an IP packet in the given link layer."""
    ethertype = ETH_P_IPV6 if ip_packet[0] >> 4 == 6 else ETH_P_IPV4
    if linktype == LINKTYPE_RAW:
        if vlans:
            raise ValueError("raw IP has no VLAN tags")
        return ip_packet
    if linktype == LINKTYPE_LINUX_SLL:
        if vlans:
            raise ValueError("VLAN tags not supported on SLL here")
        # packet type 0 (to us), ARPHRD_ETHER, 6-byte address padded to 8.
        return struct.pack("!HHH8sH", 0, 1, 6, _MAC_A, ethertype) + ip_packet
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"unsupported link type {linktype}")
    out = _MAC_B + _MAC_A
    for i, tag in enumerate(vlans):
        tpid = ETH_P_8021AD if (len(vlans) > 1 and i == 0) else ETH_P_8021Q
        out += struct.pack("!HH", tpid, (tag.pcp << 13) | (tag.vid & 0xFFF))
    return out + struct.pack("!H", ethertype) + ip_packet


@dataclass(frozen=True, slots=True)
class CapturedPacket:
    ts_ns: int
    frame: bytes
    iface: int = 0  # pcapng interface index (ignored by classic pcap)


def stream_frames(
    stream: SynthStream,
    flow: Flow,
    linktype: int = LINKTYPE_ETHERNET,
    *,
    iface: int = 0,
    dscp_per_packet: Sequence[int] | None = None,
) -> list[CapturedPacket]:
    """Frames of a stream, in arrival order. ``dscp_per_packet`` overrides flow.dscp."""
    out = []
    for i, p in enumerate(stream.packets):
        dscp = dscp_per_packet[i] if dscp_per_packet is not None else None
        out.append(
            CapturedPacket(
                p.arrival_ns,
                link_frame(linktype, ip_udp(flow, p.data, dscp=dscp, ident=i), flow.vlans),
                iface,
            )
        )
    return out


def merge(*streams: Iterable[CapturedPacket]) -> list[CapturedPacket]:
    """All packets by capture time; the sort is stable so ties keep argument order."""
    allp = [p for s in streams for p in s]
    allp.sort(key=lambda p: p.ts_ns)
    return allp


# ---------------------------------------------------------------------------
# Capture files
# ---------------------------------------------------------------------------


def _open(path: Path, compress: bool) -> BinaryIO:
    return gzip.open(path, "wb") if compress else open(path, "wb")  # type: ignore[return-value]


def write_pcap(
    path: Path | str,
    packets: Iterable[CapturedPacket],
    linktype: int = LINKTYPE_ETHERNET,
    *,
    nanosecond: bool = False,
    big_endian: bool = False,
    compress: bool = False,
    snaplen: int = 262144,
) -> Path:
    """Classic libpcap file (magic a1b2c3d4 µs / a1b23c4d ns)."""
    path = Path(path)
    bo = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    div = 1 if nanosecond else 1000
    with _open(path, compress) as f:
        f.write(struct.pack(bo + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        rec = struct.Struct(bo + "IIII")
        for p in packets:
            units = p.ts_ns // div
            sec, frac = divmod(units, NS // div)
            f.write(rec.pack(sec, frac, len(p.frame), len(p.frame)))
            f.write(p.frame)
    return path


@dataclass(frozen=True, slots=True)
class Interface:
    linktype: int = LINKTYPE_ETHERNET
    tsresol: int = 6  # 10^-tsresol seconds per unit (pcapng if_tsresol, power of ten form)


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def write_pcapng(
    path: Path | str,
    packets: Iterable[CapturedPacket],
    interfaces: Sequence[Interface] = (Interface(),),
    *,
    big_endian: bool = False,
    compress: bool = False,
) -> Path:
    """pcapng: one SHB, one IDB per interface (with if_tsresol), an EPB per packet."""
    path = Path(path)
    bo = ">" if big_endian else "<"

    def block(btype: int, body: bytes) -> bytes:
        body = _pad4(body)
        total = 12 + len(body)
        return struct.pack(bo + "II", btype, total) + body + struct.pack(bo + "I", total)

    with _open(path, compress) as f:
        f.write(block(0x0A0D0D0A, struct.pack(bo + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
        for itf in interfaces:
            opts = struct.pack(bo + "HH", 9, 1) + _pad4(bytes([itf.tsresol]))
            opts += struct.pack(bo + "HH", 0, 0)  # opt_endofopt
            f.write(block(1, struct.pack(bo + "HHI", itf.linktype, 0, 262144) + opts))
        for p in packets:
            unit_ns = 10 ** (9 - interfaces[p.iface].tsresol)
            units = p.ts_ns // unit_ns
            hdr = struct.pack(
                bo + "IIIII", p.iface, units >> 32, units & 0xFFFFFFFF, len(p.frame), len(p.frame)
            )
            f.write(block(6, hdr + p.frame))
    return path


# ---------------------------------------------------------------------------
# tshark's `-z rtp,streams` table
# ---------------------------------------------------------------------------


# tshark's table parser is shared by every comparing test: tests/tshark_table.py


__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_RAW",
    "Arrival",
    "CapturedPacket",
    "DtmfEvent",
    "Flow",
    "Impairments",
    "Interface",
    "RtpPacket",
    "Silence",
    "StreamTruth",
    "SynthStream",
    "TsharkStream",
    "VlanTag",
    "compute_truth",
    "ip_udp",
    "link_frame",
    "make_stream",
    "merge",
    "parse_tshark_rtp_streams",
    "rtp_packet",
    "stream_frames",
    "write_pcap",
    "write_pcapng",
]
