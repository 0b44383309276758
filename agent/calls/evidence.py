"""Evidence buffers: per call, the packets an engineer needs to see why it went bad.

When ``evidence.enabled`` is set, the engine hands every SIP message of a call in the
call table, and every RTP/RTCP packet the SDP index joins to such a call, to the
`EvidenceKeeper`. It keeps, per call, a bounded list of synthetic packets: an IPv4 or
IPv6 header and a UDP (or, for SIP over TCP, a TCP) header rebuilt from the decoded
columns (addresses, ports, DSCP/ECN, and the lengths as sent), then

- SIP: the whole message;
- RTP: the RTP header only, cut where `agent.capture.bpf` cuts in the kernel
  (12 + 4 x CC bytes, plus the header extension when X is set): never a byte of audio;
- RTCP: the whole compound packet (reports, no media).

The IP and UDP length fields keep the lengths as sent, and the pcap record's
``orig_len`` says so too: Wireshark decodes the RTP header and marks the packet
"limited during capture" instead of inventing a zero-length payload (a cut RTP packet
with the P bit set would otherwise read its last header byte as a padding count).
Headers are rebuilt rather than copied because the packet may have come out of a
tunnel (VXLAN, TZSP, ERSPAN, HEP), out of fragment reassembly, or out of a TCP
stream: one raw-IP link type (LINKTYPE_RAW) then holds every call.

When the call ends the call table takes its buffer (`take`) into the `CallEnded`
event; a sink (`agent.export.evidence`) decides whether to write it. The keeper is
sans-IO like the rest of the core. Memory is bounded: ``max_bytes_per_call`` per call
(data bytes; a quarter for its SIP messages, the rest for its media: two budgets, so a
media flood cannot push out the BYE, and what is kept does not depend on how SIP and
RTP interleave in the engine's regions) and ``max_buffer_bytes``
over all calls; what does not fit is counted and dropped. Buffers exist only for calls
in the call table, which is bounded itself, and leave with the call's record.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.config import EvidenceConfig
from agent.decode.endpoint import Endpoint
from agent.decode.frames import IPPROTO_TCP, IPPROTO_UDP, Frames

LINKTYPE_RAW = 101  # raw IPv4/IPv6 (tcpdump.org link-layer header types)
RTP_FIXED = 12
# what a kept packet costs in memory beyond its bytes (the packet object, its bytes
# object's header, its float; measured with tracemalloc: ~123 B on CPython 3.11): the
# buffer cap counts it, so ``max_buffer_bytes`` bounds memory, not just data
PACKET_OVERHEAD = 128
SIP_SHARE = 1 / 4  # of a call's cap, for its SIP messages; the rest for its media

_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")
_TTL = 64
_TCP_PSH_ACK = 0x18

# the call a packet from src to dst at a packet time belongs to (None: no live call)
CallLookup = Callable[[Endpoint, Endpoint, float], "str | None"]


@dataclass(frozen=True, slots=True)
class EvidencePacket:
    """One record of an evidence pcap: packet time (s), the bytes kept (raw IP), and
    the packet's length as sent (at least ``len(data)``)."""

    ts: float
    data: bytes
    orig_len: int


@dataclass(frozen=True, slots=True)
class Evidence:
    """A call's kept packets in packet-time order, and how many did not fit."""

    packets: tuple[EvidencePacket, ...]
    dropped: int = 0

    @property
    def size(self) -> int:
        return sum(len(p.data) for p in self.packets)


@dataclass(slots=True)
class EvidenceCounters:
    packets_kept: int = 0
    packets_over_call_cap: int = 0  # a call's buffer was full
    packets_over_buffer_cap: int = 0  # all calls' buffers together were full
    calls_taken: int = 0  # buffers handed out with a call's record
    buffered_bytes: int = 0  # memory held now, PACKET_OVERHEAD included (a gauge)

    def as_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in EvidenceCounters.__dataclass_fields__}


@dataclass(slots=True)
class _Buffer:
    packets: list[EvidencePacket] = field(default_factory=list)
    size: int = 0
    sip_size: int = 0  # of size
    dropped: int = 0
    tcp_seq: dict[tuple[int, int, int, int, int, int], int] = field(default_factory=dict)


def rtp_header_len(payload: bytes | npt.NDArray[np.uint8]) -> int:
    """Bytes of the RTP header at the start of ``payload`` (RFC 3550 §5.1, §5.3.1):
    12 + 4 x CC, plus 4 + 4 x length when X is set; at most ``len(payload)``."""
    n = len(payload)
    if n < RTP_FIXED:
        return n
    first = int(payload[0])
    size = RTP_FIXED + 4 * (first & 0x0F)
    if first & 0x10 and size + 4 <= n:
        size += 4 + 4 * ((int(payload[size + 2]) << 8) | int(payload[size + 3]))
    return min(size, n)


class EvidenceKeeper:
    """Per-call evidence buffers (module docstring); fed by the engine, taken by the
    call table when a call's record is made."""

    def __init__(self, config: EvidenceConfig) -> None:
        self.config = config
        self.counters = EvidenceCounters()
        self._calls: dict[str, _Buffer] = {}

    def __len__(self) -> int:
        return len(self._calls)

    # -- input ------------------------------------------------------------------------

    def sip(self, call_id: str, f: Frames, i: int, message: bytes, transport: str) -> None:
        """A SIP message of live call ``call_id``, decoded at row ``i`` of ``f``."""
        buf = self._calls.get(call_id)
        if buf is None:
            buf = self._calls[call_id] = _Buffer()
        if transport == "tcp":
            key = _row_key(f, i)
            seq = buf.tcp_seq.get(key, 1)
            buf.tcp_seq[key] = (seq + len(message)) & 0xFFFFFFFF
            l4 = _TCP.pack(int(f.sport[i]), int(f.dport[i]), seq, 0, 5 << 4, _TCP_PSH_ACK,
                           0xFFFF, 0, 0)
            data = _ip(f, i, IPPROTO_TCP, len(l4) + len(message)) + l4 + message
            pkt = EvidencePacket(float(f.ts[i]), data, len(data))
        else:
            pkt = self._udp(f, i, message, len(message))
        sip_cap = int(self.config.max_bytes_per_call * SIP_SHARE)
        if self._add(buf, pkt, buf.sip_size, sip_cap):
            buf.sip_size += len(pkt.data)

    def media(self, f: Frames, rows: npt.NDArray[np.int64], rtcp: npt.NDArray[np.bool_],
              lookup: CallLookup) -> None:
        """RTP and RTCP rows (``rtcp`` marks the latter), in packet order: each one the
        SDP index joins to a live call is kept (RTP cut after its header)."""
        if rows.size == 0 or not self._calls:
            return
        calls = self._assign(f, rows, rtcp, lookup)
        cap = self.config.max_bytes_per_call - int(self.config.max_bytes_per_call * SIP_SHARE)
        for i, is_rtcp, cid in zip(rows.tolist(), rtcp.tolist(), calls, strict=True):
            if cid is None:
                continue
            buf = self._calls.get(cid)
            if buf is None:
                continue  # no SIP message of it kept yet (keeper enabled mid-call)
            if buf.size - buf.sip_size >= cap:
                buf.dropped += 1
                self.counters.packets_over_call_cap += 1
                continue
            off, n = int(f.payload_off[i]), int(f.payload_len[i])
            payload = f.data[off:off + n]
            if not is_rtcp:
                if n < 1 or int(payload[0]) >> 6 != 2:
                    continue  # not RTP (version 2): nothing of it is evidence
                n = rtp_header_len(payload)
            self._add(buf, self._udp(f, i, payload[:n].tobytes(), int(f.payload_sent[i])),
                      buf.size - buf.sip_size, cap)

    def _assign(self, f: Frames, rows: npt.NDArray[np.int64], rtcp: npt.NDArray[np.bool_],
                lookup: CallLookup) -> list[str | None]:
        """The live call of each row. One lookup per address pair, at its first and
        last row's time: the index's answer moves only forward in time (its newest
        advert before the packet), so when both agree every row between agrees."""
        cols = np.stack([f.src_hi[rows], f.src_lo[rows], f.sport[rows].astype(np.uint64),
                         f.dst_hi[rows], f.dst_lo[rows], f.dport[rows].astype(np.uint64),
                         rtcp.astype(np.uint64)], axis=1)
        pairs, inverse = np.unique(cols, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        ts = f.ts[rows]
        out: list[str | None] = [None] * rows.size
        for p, pair in enumerate(pairs.tolist()):
            at = np.flatnonzero(inverse == p)
            src = Endpoint(pair[0], pair[1], pair[2])
            dst = Endpoint(pair[3], pair[4], pair[5])

            def find(t: float, src: Endpoint = src, dst: Endpoint = dst,
                     is_rtcp: bool = bool(pair[6])) -> str | None:
                cid = lookup(src, dst, t)
                if cid is None and is_rtcp and src.port and dst.port:  # RTCP on port + 1
                    cid = lookup(Endpoint(src.hi, src.lo, src.port - 1),
                                 Endpoint(dst.hi, dst.lo, dst.port - 1), t)
                return cid

            first, last = find(float(ts[at[0]])), find(float(ts[at[-1]]))
            for j in at.tolist():
                out[j] = first if first == last else find(float(ts[j]))
        return out

    def _udp(self, f: Frames, i: int, payload: bytes, sent: int) -> EvidencePacket:
        """A raw-IP packet: the rebuilt IP and UDP headers with the lengths as sent
        (``sent`` payload bytes), and the ``payload`` bytes kept."""
        sent = max(sent, len(payload))
        l4 = _UDP.pack(int(f.sport[i]), int(f.dport[i]), min(8 + sent, 0xFFFF), 0)
        head = _ip(f, i, IPPROTO_UDP, 8 + sent) + l4
        return EvidencePacket(float(f.ts[i]), head + payload, len(head) + sent)

    def _add(self, buf: _Buffer, pkt: EvidencePacket, used: int, cap: int) -> bool:
        """Keep ``pkt`` if its budget (``used`` of ``cap``) and the buffer cap allow."""
        n = len(pkt.data)
        if used + n > cap:
            buf.dropped += 1
            self.counters.packets_over_call_cap += 1
            return False
        if self.counters.buffered_bytes + n + PACKET_OVERHEAD > self.config.max_buffer_bytes:
            buf.dropped += 1
            self.counters.packets_over_buffer_cap += 1
            return False
        buf.packets.append(pkt)
        buf.size += n
        self.counters.buffered_bytes += n + PACKET_OVERHEAD
        self.counters.packets_kept += 1
        return True

    # -- output -----------------------------------------------------------------------

    def take(self, call_id: str) -> Evidence | None:
        """The call's evidence, forgotten here (None: nothing was kept)."""
        buf = self._calls.pop(call_id, None)
        if buf is None:
            return None
        self.counters.buffered_bytes -= buf.size + PACKET_OVERHEAD * len(buf.packets)
        self.counters.calls_taken += 1
        packets = sorted(buf.packets, key=lambda p: p.ts)  # stable: arrival order on ties
        return Evidence(tuple(packets), buf.dropped)

    def discard(self, call_id: str) -> None:
        """Forget a call's buffer (its record goes without evidence)."""
        buf = self._calls.pop(call_id, None)
        if buf is not None:
            self.counters.buffered_bytes -= buf.size + PACKET_OVERHEAD * len(buf.packets)


def _row_key(f: Frames, i: int) -> tuple[int, int, int, int, int, int]:
    return (int(f.src_hi[i]), int(f.src_lo[i]), int(f.sport[i]),
            int(f.dst_hi[i]), int(f.dst_lo[i]), int(f.dport[i]))


def _ip(f: Frames, i: int, proto: int, l4_len: int) -> bytes:
    """An IPv4 (checksummed) or IPv6 header for row ``i`` carrying ``l4_len`` bytes."""
    tos = (int(f.dscp[i]) << 2) | (int(f.ecn[i]) & 3)
    if int(f.ip_version[i]) == 4:
        src = (int(f.src_lo[i]) & 0xFFFFFFFF).to_bytes(4, "big")
        dst = (int(f.dst_lo[i]) & 0xFFFFFFFF).to_bytes(4, "big")
        total = min(20 + l4_len, 0xFFFF)
        head = _IP4.pack(0x45, tos, total, 0, 0, _TTL, proto, 0, src, dst)
        return head[:10] + _checksum(head).to_bytes(2, "big") + head[12:]
    src = ((int(f.src_hi[i]) << 64) | int(f.src_lo[i])).to_bytes(16, "big")
    dst = ((int(f.dst_hi[i]) << 64) | int(f.dst_lo[i])).to_bytes(16, "big")
    return _IP6.pack((6 << 28) | (tos << 20), min(l4_len, 0xFFFF), proto, _TTL, src, dst)


def _checksum(header: bytes) -> int:
    """The Internet checksum (RFC 1071) of an even-length header."""
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)
