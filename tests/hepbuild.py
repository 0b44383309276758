"""HEP built from real captures, as a sender would describe their packets, and records
compared across HEP and the wire (shared by the HEP tests and the mirroring lab)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from records import unplaced
from synth import LINKTYPE_RAW, CapturedPacket, write_pcap

from agent.capture.pcapfile import open_capture
from agent.decode import Decoder
from agent.decode.frames import IPPROTO_TCP, IPPROTO_UDP
from agent.decode.hep import PROTO_SIP, HepRecord, encode_hep2, encode_hep3
from agent.decode.hep_unwrap import build_packet

EXPORTER = HepRecord(version=3, ip_version=4, ip_proto=IPPROTO_UDP,
                     src=bytes([198, 18, 0, 1]), dst=bytes([198, 18, 0, 2]), sport=40000,
                     dport=9060, ts_sec=0, ts_usec=0, proto_type=0, capture_id=0,
                     payload=b"")


def records_of(path: Path) -> list[HepRecord]:
    """Every UDP/TCP packet with a payload of ``path``, as a HEP sender would describe it."""
    out: list[HepRecord] = []
    dec = Decoder()
    with open_capture(path) as reader:
        for batch in reader:
            f = dec.decode(batch)
            for i in range(len(f)):
                payload = f.payload(i)
                if not payload or int(f.proto[i]) not in (IPPROTO_UDP, IPPROTO_TCP):
                    continue
                v4 = int(f.ip_version[i]) == 4
                n = 4 if v4 else 16
                src = ((int(f.src_hi[i]) << 64) | int(f.src_lo[i])) & ((1 << (8 * n)) - 1)
                dst = ((int(f.dst_hi[i]) << 64) | int(f.dst_lo[i])) & ((1 << (8 * n)) - 1)
                us = round(float(f.ts[i]) * 1e6)
                out.append(HepRecord(
                    version=3, ip_version=4 if v4 else 6, ip_proto=int(f.proto[i]),
                    src=src.to_bytes(n, "big"), dst=dst.to_bytes(n, "big"),
                    sport=int(f.sport[i]), dport=int(f.dport[i]), ts_sec=us // 1_000_000,
                    ts_usec=us % 1_000_000, proto_type=PROTO_SIP if payload[:1].isalpha()
                    else 4, capture_id=7, payload=payload,
                    tos=int(f.dscp[i]) << 2 | int(f.ecn[i])))
    return out


def hep_capture(src: Path, dst: Path, mode: str, delay_s: float = 0.002) -> Path:
    """``src`` re-encoded: each packet one HEP datagram to 198.18.0.2:9060, captured
    ``delay_s`` after the original capture time (so capture and HEP time differ); modes
    ``tcp``/``tcp_zlib``: one HEP3 stream over TCP instead (`hep_tcp_capture`)."""
    if mode.startswith("tcp"):
        return hep_tcp_capture(src, dst, mode == "tcp_zlib", delay_s)
    packets = []
    for rec in records_of(src):
        hep = encode_hep2(rec) if mode == "v2" else encode_hep3(rec, compress=mode == "zlib")
        outer = build_packet(HepRecord(**{**fields(EXPORTER), "payload": hep}))
        ts_ns = (rec.ts_sec * 1_000_000 + rec.ts_usec) * 1000 + round(delay_s * 1e9)
        packets.append(CapturedPacket(ts_ns, outer))
    return write_pcap(dst, packets, LINKTYPE_RAW)


TCP_SYN, TCP_FLAGS_AT = 0x02, 20 + 13  # flags byte of build_packet's IPv4/TCP packet


def hep_tcp_capture(src: Path, dst: Path, compress: bool, delay_s: float,
                     mss: int = 1448, retransmit: int = 5) -> Path:
    """``src`` re-encoded as one HEP3-over-TCP connection to 198.18.0.2:9060, as a
    capture beside the collector sees it: a SYN, then the byte stream cut every ``mss``
    bytes whatever the HEP packet boundaries (packets split across segments and packed
    into one), each segment captured ``delay_s`` after the HEP time of the packet that
    completes it; segment number ``retransmit`` is captured twice (a retransmission)."""
    stream = bytearray()
    ends: list[tuple[int, int]] = []  # (stream offset a packet ends at, its HEP time ns)
    for rec in records_of(src):
        stream += encode_hep3(rec, compress=compress)
        ends.append((len(stream), (rec.ts_sec * 1_000_000 + rec.ts_usec) * 1000))
    tcp = {**fields(EXPORTER), "ip_proto": IPPROTO_TCP, "sport": 40001}
    isn, delay_ns = 7_000, round(delay_s * 1e9)
    syn = bytearray(build_packet(HepRecord(**{**tcp, "payload": b""}), tcp_seq=isn))
    syn[TCP_FLAGS_AT] = TCP_SYN
    packets = [CapturedPacket(ends[0][1], bytes(syn))]
    k = 0
    for n, start in enumerate(range(0, len(stream), mss)):
        end = min(start + mss, len(stream))
        while ends[k][0] < end:
            k += 1
        seg = build_packet(HepRecord(**{**tcp, "payload": bytes(stream[start:end])}),
                           tcp_seq=isn + 1 + start)
        packets += [CapturedPacket(ends[k][1] + delay_ns, seg)] * (2 if n == retransmit else 1)
    return write_pcap(dst, packets, LINKTYPE_RAW)


def fields(rec: HepRecord) -> dict[str, Any]:
    return {k: getattr(rec, k) for k in HepRecord.__dataclass_fields__}


def comparable(call: dict[str, Any], dscp: bool) -> dict[str, Any]:
    """A record without where it was seen (the HEP agent, not the capture) and without
    DSCP when the HEP did not carry it (v2: rebuilt packets are CS0; v3 carries it here in
    the IP TOS chunk)."""
    call = unplaced(call)
    if dscp:
        return call
    call.pop("signalling_dscp", None)
    call.pop("signalling_dscp_compliance_ratio", None)
    for part in [call, *call.get("directions", [])]:
        part.get("stream", {}).pop("dscp", None)
        part.pop("dscp_compliance_ratio", None)
        sla = part.get("sla") or {}
        sla.pop("verdict", None)  # the verdict without its DSCP violations is compared
        sla["violations"] = [v for v in sla.get("violations", [])
                             if "dscp" not in v["threshold"]]
    return call


def close(a: Any, b: Any, path: str = "") -> list[str]:
    """Differences between two JSON values; jitter fields within 0.05 ms."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}: keys {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else []
        for k in set(a) & set(b):
            out += close(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for x, y in zip(a, b, strict=True) for d in close(x, y, path)]
    if "jitter" in path and isinstance(a, float) and isinstance(b, float):
        return [] if abs(a - b) <= 0.05 else [f"{path}: {a} vs {b}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]
