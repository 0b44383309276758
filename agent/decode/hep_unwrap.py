"""HEP on the wire -> the packets it carries: a `Batch` -> `Batch` stage before decode.

Theory of operation
-------------------
A HEP sender (Kamailio's siptrace, Asterisk, rtpengine, heplify...) copies each
packet it captured into a UDP datagram to its collector (port 9060). The probe
may sniff those datagrams (``voipprobe analyze`` of a capture, or the live ring),
and then measures the calls inside them as if it had seen the original packets:

- the stage decodes the batch with its own `Decoder` (its own fragment table, so
  the engine's decoder and its counters see every packet once) and picks the UDP
  rows to a HEP port whose payload starts like HEP (``HEP3``, or version 1/2);
- each such packet is *replaced in place* by a rebuilt raw IPv4/IPv6 + UDP/TCP
  packet (`LinkType.RAW`) from the HEP addresses, ports and payload, with the
  HEP capture time as its packet time (v1 has none: the outer capture time stays);
- TCP segments to a HEP port are a HEP3 stream: each is replaced by the HEP
  packets it completes (`agent.decode.hep_stream`: followed by sequence number,
  each packet once); the rest of that TCP (handshake, the collector's ACKs) is
  dropped;
- packets that are not HEP pass through untouched.

Order. The rebuilt packets keep the capture order of their HEP datagrams; only
their timestamps change. A sender emits each packet as it captures it, so that
order is the sender's capture order unless the network between sender and probe
reorders UDP. Where a HEP time is earlier than the packet before it, the engine
measures the packet at its own time (jitter uses the HEP time) while its timers
run on the running maximum of packet time (see `agent.engine`), so nothing
stalls or fires twice. No reorder buffer: it would delay every packet of every
capture by its window, and the output would still equal the whole-file run for
any batch cuts, which is what the batching-invariance test holds.

Duplicates. One HEP packet received several times (a collector address that is a
broadcast, or copies on several interfaces: ``hep3_compressed.pcapng`` has each
three times) is one captured packet: a v2/v3 packet byte-identical to one of the
last `DEDUP_WINDOW` is dropped and counted (``duplicates``). v1 carries no
timestamp, so two identical v1 packets may be a genuine SIP retransmission: they
are kept (the SIP layer treats them as retransmissions).

What is rebuilt: SIP (type 1), RTP (4), RTCP (5), and v1/v2 records (no type:
content decides downstream) over UDP or TCP. TCP records get a per-direction
running sequence number (`TCP_FLOWS` directions, least recently used evicted) so
the SIP TCP reassembler frames them like a stream. RTCP comes as bytes, or as
the JSON object media relays (rtpengine, FreeSWITCH via hepipe.js, heplify) send
instead: that is turned back into the SR/RR it describes
(`agent.decode.hep_rtcp_json`) and rebuilt as a UDP datagram like binary RTCP
(``rtcp_json``); one that does not read as a report is counted
(``rtcp_json_errors``) and dropped. QoS/MOS and other JSON reports (types
32..35, 50, 53, 54), logs (100) and every other type are counted
(``skipped_json``, ``skipped_other``) and dropped.
HEP carries DSCP only in the rare IP TOS chunk (24): without it rebuilt packets have
DSCP 0 (CS0).

Loss between a sender and the probe is not counted: no generic HEP v3 chunk type is
a sequence number (the sipcapture/HEP specification; heplify-server decodes types
1..19: family, protocol, addresses, ports, seconds/microseconds, protocol type,
capture id, keep-alive (13), auth key, payload, compressed payload, correlation id,
VLAN, node name; later types carry metadata such as TOS), and the v1/v2 headers
have no room for one. HEP lost on its way is simply absent, unlike an ERSPAN
session's numbered copies (`agent.decode.sequence`).
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

import numpy as np

from agent.capture.batch import Batch, LinkType
from agent.capture.points import UNNAMED, point_id
from agent.decode.decoder import Decoder
from agent.decode.frames import IPPROTO_TCP, IPPROTO_UDP
from agent.decode.hep import (
    PROTO_RTCP,
    PROTO_RTP,
    PROTO_SIP,
    PROTO_UNKNOWN,
    HepError,
    HepRecord,
    hep_version,
    parse_hep,
)
from agent.decode.hep_rtcp_json import RtcpJsonError, report_from_json
from agent.decode.hep_stream import HepTcpFlows
from agent.decode.tunnels import TunnelPorts
from agent.rtcp.packets import encode_report

HEP_PORT = 9060  # the HOMER collector's registered default
DEDUP_WINDOW = 4096  # HEP packets remembered for duplicate detection
TCP_FLOWS = 4096  # TCP directions with a running sequence number
_REBUILT_TYPES = frozenset({PROTO_UNKNOWN, PROTO_SIP, PROTO_RTP, PROTO_RTCP})
_JSON_TYPES = frozenset({32, 33, 34, 35, 50, 53, 54})  # QoS/MOS and other JSON reports
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")
_TCP_PSH_ACK = 0x18


@dataclass(slots=True)
class HepCounters:
    """Running totals (monotonic, for Prometheus counters)."""

    packets: int = 0  # UDP datagrams to a HEP port that start like HEP
    not_hep: int = 0  # datagrams to a HEP listener that do not start like HEP
    bytes: int = 0  # their UDP payload bytes
    records_v1: int = 0  # decoded, by version
    records_v2: int = 0
    records_v3: int = 0
    errors_v1: int = 0  # started like HEP but did not decode (`HepError`), by version
    errors_v2: int = 0
    errors_v3: int = 0
    duplicates: int = 0  # a v2/v3 packet identical to a recent one, dropped
    rtcp_json: int = 0  # RTCP-as-JSON reports rebuilt as the binary SR/RR they describe
    rtcp_json_errors: int = 0  # type 5 payloads neither binary RTCP nor a JSON report
    skipped_json: int = 0  # QoS/MOS JSON reports (not measured)
    skipped_other: int = 0  # logs, other protocol types, transports other than UDP/TCP
    packets_rebuilt: int = 0  # raw IP packets handed on to decode

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}

    def add(self, name: str, n: int = 1) -> None:
        setattr(self, name, getattr(self, name) + n)


def _checksum(header: bytes) -> int:
    """RFC 1071 ones' complement sum of an even-length header."""
    s: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def build_packet(rec: HepRecord, tcp_seq: int = 0) -> bytes:
    """A raw IPv4/IPv6 packet (no link layer) with a UDP or TCP header around
    ``rec.payload``: the packet the HEP sender captured, as far as HEP tells it."""
    if rec.ip_proto == IPPROTO_TCP:
        l4 = _TCP.pack(rec.sport, rec.dport, tcp_seq & 0xFFFFFFFF, 0, 5 << 4, _TCP_PSH_ACK,
                       0xFFFF, 0, 0) + rec.payload
    else:
        l4 = _UDP.pack(rec.sport, rec.dport, _UDP.size + len(rec.payload), 0) + rec.payload
    tos = rec.tos or 0
    if rec.ip_version == 4:
        head = _IPV4.pack(0x45, tos, _IPV4.size + len(l4), 0, 0x4000, 64, rec.ip_proto, 0,
                          rec.src, rec.dst)
        return head[:10] + struct.pack("!H", _checksum(head)) + head[12:] + l4
    return _IPV6.pack(6 << 28 | tos << 20, len(l4), rec.ip_proto, 64, rec.src, rec.dst) + l4


class HepUnwrapper:
    """Replaces HEP datagrams in batches by the packets they carry (see the module doc).

    ``ports``: UDP destination ports that carry HEP (empty: the stage is off);
    ``tunnel_ports``: as the engine's decoder has them, so HEP mirrored inside VXLAN or
    TZSP is found too."""

    def __init__(self, ports: Iterable[int] = (HEP_PORT,), *,
                 tunnel_ports: TunnelPorts | None = None) -> None:
        self.ports = np.array(sorted(set(ports)), dtype=np.uint16)
        self.counters = HepCounters()
        self._decoder = Decoder(tunnel_ports=tunnel_ports)
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._tcp_seq: OrderedDict[tuple[bytes, bytes, int, int], int] = OrderedDict()
        self.tcp = HepTcpFlows()  # HEP3 streams over TCP seen in the capture

    def unwrap(self, batch: Batch) -> Batch:
        """``batch`` with each HEP packet replaced by its inner packet (or dropped); a
        TCP segment of a HEP stream by the packets it completes (`agent.decode.hep_stream`)."""
        if self.ports.size == 0 or len(batch) == 0:
            return batch
        f = self._decoder.decode(batch)
        to_hep = np.isin(f.dport, self.ports)
        tcp = f.proto == IPPROTO_TCP
        rows = np.flatnonzero(((f.proto == IPPROTO_UDP) & to_hep & (f.payload_len >= 8))
                              | (tcp & (to_hep | np.isin(f.sport, self.ports))))
        inner: dict[int, list[tuple[bytes, float, int]]] = {}
        for i in rows.tolist():
            payload = f.payload(i)
            pkt = int(f.pkt[i])
            if int(f.proto[i]) == IPPROTO_TCP:  # HEP transport: never passed on
                frames = self.tcp.feed(
                    (int(f.src_hi[i]), int(f.src_lo[i]), int(f.dst_hi[i]), int(f.dst_lo[i]),
                     int(f.sport[i]), int(f.dport[i])),
                    int(f.tcp_seq[i]), int(f.tcp_flags[i]), payload) if to_hep[i] else []
            elif hep_version(payload) == 0:
                continue  # not HEP: some other UDP on the port, passed on as it is
            else:
                frames = [payload]
            out = inner.setdefault(pkt, [])
            for frame in frames:
                rebuilt, rec_ts, point = self.rebuild(frame)
                if rebuilt is not None:
                    out.append((rebuilt, float(batch.ts[pkt]) if rec_ts is None else rec_ts,
                                point))
        if not inner:
            return batch
        return _rebuild(batch, inner)

    def rebuild(self, payload: bytes) -> tuple[bytes | None, float | None, int]:
        """One HEP datagram's payload -> the raw IP packet it carries, or None (counted)
        when there is none, its HEP capture time (None: v1, no time in it) and its
        observation point (``hep/<capture agent id>``; v1 has no id: ``hep``)."""
        version = hep_version(payload)
        if version == 0:
            self.counters.not_hep += 1
            return None, None, UNNAMED
        self.counters.packets += 1
        self.counters.bytes += len(payload)
        try:
            rec = parse_hep(payload)
        except HepError:
            self.counters.add(f"errors_v{version}")
            return None, None, UNNAMED
        self.counters.add(f"records_v{rec.version}")
        point = point_id(f"hep/{rec.capture_id}" if rec.version >= 2 else "hep", remote=True)
        if rec.version >= 2:
            digest = hashlib.blake2b(payload, digest_size=16).digest()
            if digest in self._seen:
                self._seen.move_to_end(digest)
                self.counters.duplicates += 1
                return None, None, point
            self._seen[digest] = None
            if len(self._seen) > DEDUP_WINDOW:
                self._seen.popitem(last=False)
        rec_ts = rec.ts if rec.version >= 2 else None
        if rec.proto_type not in _REBUILT_TYPES:
            self.counters.add("skipped_json" if rec.proto_type in _JSON_TYPES
                              else "skipped_other")
            return None, rec_ts, point
        if rec.proto_type == PROTO_RTCP and not _binary_rtcp(rec.payload):
            try:
                rtcp = encode_report(report_from_json(rec.payload))
            except RtcpJsonError:
                self.counters.rtcp_json_errors += 1
                return None, rec_ts, point
            self.counters.rtcp_json += 1
            # the JSON describes the report, not how it travelled: RTCP is UDP
            rec = replace(rec, payload=rtcp, ip_proto=IPPROTO_UDP)
        if rec.ip_proto not in (IPPROTO_UDP, IPPROTO_TCP):
            self.counters.skipped_other += 1
            return None, rec_ts, point
        seq = self._next_seq(rec) if rec.ip_proto == IPPROTO_TCP else 0
        self.counters.packets_rebuilt += 1
        return build_packet(rec, seq), rec_ts, point

    def _next_seq(self, rec: HepRecord) -> int:
        key = (rec.src, rec.dst, rec.sport, rec.dport)
        seq = self._tcp_seq.pop(key, 1)
        self._tcp_seq[key] = (seq + len(rec.payload)) & 0xFFFFFFFF
        if len(self._tcp_seq) > TCP_FLOWS:
            self._tcp_seq.popitem(last=False)
        return seq


def _binary_rtcp(payload: bytes) -> bool:
    """RFC 3550 RTCP (version 2, packet type 200..207) rather than a JSON report."""
    return len(payload) >= 8 and payload[0] >> 6 == 2 and 200 <= payload[1] <= 207


def _rebuild(batch: Batch, inner: dict[int, list[tuple[bytes, float, int]]]) -> Batch:
    packets: list[bytes] = []
    times: list[float] = []
    links: list[int] = []
    wire: list[int] = []
    where: list[int] = []
    for i in range(len(batch)):
        if i in inner:
            for p, ts, point in inner[i]:
                packets.append(p)
                times.append(ts)
                links.append(LinkType.RAW)
                wire.append(len(p))
                where.append(point)
        else:
            packets.append(batch.packet(i))
            times.append(float(batch.ts[i]))
            links.append(int(batch.linktype[i]))
            wire.append(int(batch.wirelen[i]))
            where.append(int(batch.point[i]))
    return Batch.from_packets(packets, times, links, wire, where)
