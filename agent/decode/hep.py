"""HEP (Homer Encapsulation Protocol) v1, v2 and v3: one captured packet per HEP packet.

What Kamailio/OpenSIPS (siptrace, sipcapture), Asterisk (res_hep), FreeSWITCH,
rtpengine and heplify send to a HOMER collector. Each HEP packet carries the
payload of one packet the sender captured (a SIP message, an RTP/RTCP packet, a
log line, a JSON report) and where and when it was captured: IP family and
protocol, addresses, ports, the capture time and the capture agent's id.

Wire layouts (facts from the HEP specification, sipcapture/HEP):

- v3: ``"HEP3"``, total length (u16, whole packet), then chunks: vendor id (u16,
  0 = generic), type id (u16), length (u16, including these 6 bytes), value. All
  numbers network order. Generic types: 1 IP family, 2 IP protocol, 3/4 IPv4
  src/dst, 5/6 IPv6 src/dst, 7/8 ports, 9/10 timestamp s/µs, 11 protocol type
  (`PROTO_*`), 12 capture agent id (u32), 13 keep-alive, 14 auth key, 15 payload,
  16 zlib/gzip compressed payload, 17 correlation id, 19 node name, 24 IP TOS (u8; rare: the
  DSCP/ECN byte when the sender knows it). Vendor chunks are skipped.
- v1/v2: version (u8), header length (u8: this 8-byte header plus the address
  block; not checked, as senders disagree: sngrep 1.6 writes 2), family (u8: 2
  AF_INET, 10 AF_INET6: this decides the layout), protocol (u8), src/dst port (u16,
  network order), src/dst address (4+4 or 16+16 bytes); v2 then adds the C struct
  ``{u32 sec; u32 usec; u16 capture id}`` (12 bytes with its padding) in the
  sender's host byte order, which the senders do not convert: read little-endian
  (x86, ARM). v1 has no timestamp (the record's time is 0: the caller keeps the
  capture time) and neither carries a protocol type (senders only traced SIP).

`parse_hep` raises `HepError` and nothing else for any input (a fuzz test holds
it). A compressed payload is inflated to at most `MAX_PAYLOAD` bytes (a
decompression bomb is an error, not a memory spike). `encode_hep3` and
`encode_hep2` write the same layouts (tests, and HEP out later).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"HEP3"
AF_INET = 2
AF_INET6 = 10
# HEP "capture protocol types" (chunk 11)
PROTO_UNKNOWN = 0  # v1/v2: not carried
PROTO_SIP = 1
PROTO_RTP = 4
PROTO_RTCP = 5  # RTCP; senders (rtpengine, FreeSWITCH, heplify) send it as JSON
PROTO_LOG = 100
# The largest payload an IPv4 packet rebuilt around it can hold (65535 - 20 - 20).
MAX_PAYLOAD = 65495

_CHUNK = struct.Struct("!HHH")  # vendor id, type id, length
_V3_HDR = struct.Struct("!4sH")
_V1_HDR = struct.Struct("!BBBBHH")  # version, header length, family, proto, sport, dport
_V2_TIME = struct.Struct("<IIH2x")  # sec, usec, capture id, padding (sender byte order)
_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class HepError(ValueError):
    """A HEP packet that cannot be decoded (the one error type of this parser)."""


@dataclass(frozen=True, slots=True)
class HepRecord:
    """One captured packet as a HEP sender described it.

    ``src``/``dst`` are packed addresses (4 bytes for ``ip_version`` 4, 16 for 6);
    ``ts_sec``/``ts_usec`` the capture time (epoch; 0/0 in v1); ``proto_type`` the
    HEP capture protocol type (`PROTO_*`, `PROTO_UNKNOWN` in v1/v2); ``payload``
    the captured bytes, inflated when the sender compressed them (``compressed``);
    ``tos`` the IP TOS/traffic-class byte when the sender gave it (chunk 24), else None.
    """

    version: int
    ip_version: int
    ip_proto: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    ts_sec: int
    ts_usec: int
    proto_type: int
    capture_id: int
    payload: bytes
    correlation_id: bytes = b""
    compressed: bool = False
    tos: int | None = None
    node_name: bytes = b""  # chunk 19 (heplify-server's node name), b"" when absent

    @property
    def ts(self) -> float:
        """Capture time in epoch seconds (float)."""
        return self.ts_sec + self.ts_usec * 1e-6


def parse_hep(data: bytes) -> HepRecord:
    """Decode one HEP v1/v2/v3 packet (a UDP datagram's payload). Raises `HepError`."""
    if data[:4] == MAGIC:
        return _parse_v3(data)
    if data[:1] in (b"\x01", b"\x02"):
        return _parse_v12(data)
    raise HepError("not HEP")


def hep_version(data: bytes) -> int:
    """3, 2 or 1 by the first bytes (a cheap guess for counting errors), else 0."""
    if data[:4] == MAGIC:
        return 3
    return data[0] if data[:1] in (b"\x01", b"\x02") else 0


def _parse_v3(data: bytes) -> HepRecord:
    if len(data) < _V3_HDR.size:
        raise HepError("truncated header")
    _, total = _V3_HDR.unpack_from(data, 0)
    if total < _V3_HDR.size or total > len(data):
        raise HepError(f"total length {total} with {len(data)} bytes")
    chunks: dict[int, bytes] = {}
    pos = _V3_HDR.size
    while pos < total:
        if pos + _CHUNK.size > total:
            raise HepError("truncated chunk header")
        vendor, ctype, length = _CHUNK.unpack_from(data, pos)
        if length < _CHUNK.size or pos + length > total:
            raise HepError(f"chunk {ctype} length {length}")
        if vendor == 0:
            chunks.setdefault(ctype, bytes(data[pos + _CHUNK.size : pos + length]))
        pos += length
    family = _int(chunks, 1, 1)
    if family == AF_INET:
        ip_version, src, dst = 4, _exact(chunks, 3, 4), _exact(chunks, 4, 4)
    elif family == AF_INET6:
        ip_version, src, dst = 6, _exact(chunks, 5, 16), _exact(chunks, 6, 16)
    else:
        raise HepError(f"IP family {family}")
    usec = _int(chunks, 10, 4)
    if usec >= 1_000_000:
        raise HepError(f"microseconds {usec}")
    cid = chunks.get(12, b"\0\0\0\0")
    if len(cid) not in (2, 4):  # some older senders write a 16-bit capture id
        raise HepError("capture id length")
    if 16 in chunks:
        payload, compressed = _inflate(chunks[16]), True
    elif 15 in chunks:
        payload, compressed = chunks[15], False
    else:
        raise HepError("no payload chunk")
    return HepRecord(
        version=3, ip_version=ip_version, ip_proto=_int(chunks, 2, 1), src=src, dst=dst,
        sport=_int(chunks, 7, 2), dport=_int(chunks, 8, 2), ts_sec=_int(chunks, 9, 4),
        ts_usec=usec, proto_type=_int(chunks, 11, 1) if 11 in chunks else PROTO_UNKNOWN,
        capture_id=int.from_bytes(cid, "big"), payload=payload,
        correlation_id=chunks.get(17, b""), compressed=compressed,
        tos=_int(chunks, 24, 1) if 24 in chunks else None, node_name=chunks.get(19, b""),
    )


def _exact(chunks: dict[int, bytes], ctype: int, size: int) -> bytes:
    value = chunks.get(ctype)
    if value is None:
        raise HepError(f"missing chunk {ctype}")
    if len(value) != size:
        raise HepError(f"chunk {ctype} is {len(value)} bytes, not {size}")
    return value


def _int(chunks: dict[int, bytes], ctype: int, size: int) -> int:
    return int.from_bytes(_exact(chunks, ctype, size), "big")


def _inflate(blob: bytes) -> bytes:
    """zlib or gzip (wbits 32+: either header) with the output capped at MAX_PAYLOAD."""
    d = zlib.decompressobj(zlib.MAX_WBITS | 32)
    try:
        out = d.decompress(blob, MAX_PAYLOAD + 1)
    except zlib.error as exc:
        raise HepError(f"compressed payload: {exc}") from None
    if len(out) > MAX_PAYLOAD or d.unconsumed_tail:
        raise HepError("compressed payload inflates past the cap")
    if not d.eof:
        raise HepError("compressed payload is truncated")
    return out


def _parse_v12(data: bytes) -> HepRecord:
    if len(data) < _V1_HDR.size:
        raise HepError("truncated header")
    version, _hlen, family, proto, sport, dport = _V1_HDR.unpack_from(data, 0)
    if family == AF_INET:
        ip_version, alen = 4, 4
    elif family == AF_INET6:
        ip_version, alen = 6, 16
    else:
        raise HepError(f"IP family {family}")
    pos = _V1_HDR.size + 2 * alen
    if len(data) < pos:
        raise HepError("truncated addresses")
    mid = _V1_HDR.size + alen
    src, dst = bytes(data[_V1_HDR.size : mid]), bytes(data[mid:pos])
    sec = usec = cid = 0
    if version == 2:
        if len(data) < pos + _V2_TIME.size:
            raise HepError("truncated time header")
        sec, usec, cid = _V2_TIME.unpack_from(data, pos)
        if usec >= 1_000_000:
            raise HepError(f"microseconds {usec}")
        pos += _V2_TIME.size
    if len(data) - pos > MAX_PAYLOAD:
        raise HepError("payload too long")
    return HepRecord(
        version=version, ip_version=ip_version, ip_proto=proto, src=src, dst=dst,
        sport=sport, dport=dport, ts_sec=sec, ts_usec=usec, proto_type=PROTO_UNKNOWN,
        capture_id=cid, payload=bytes(data[pos:]),
    )


# -- encoding ---------------------------------------------------------------------------


def _chunk(ctype: int, value: bytes) -> bytes:
    return _CHUNK.pack(0, ctype, _CHUNK.size + len(value)) + value


def encode_hep3(rec: HepRecord, *, compress: bool = False) -> bytes:
    """``rec`` as a HEP v3 packet (``compress``: the payload as chunk 16, zlib).
    Raises `HepError` when it does not fit the 16-bit total length."""
    v4 = rec.ip_version == 4
    body = b"".join((
        _chunk(1, _U8.pack(AF_INET if v4 else AF_INET6)),
        _chunk(2, _U8.pack(rec.ip_proto)),
        _chunk(3 if v4 else 5, rec.src),
        _chunk(4 if v4 else 6, rec.dst),
        _chunk(7, _U16.pack(rec.sport)),
        _chunk(8, _U16.pack(rec.dport)),
        _chunk(9, _U32.pack(rec.ts_sec)),
        _chunk(10, _U32.pack(rec.ts_usec)),
        _chunk(11, _U8.pack(rec.proto_type)),
        _chunk(12, _U32.pack(rec.capture_id)),
        _chunk(17, rec.correlation_id) if rec.correlation_id else b"",
        _chunk(19, rec.node_name) if rec.node_name else b"",
        _chunk(24, _U8.pack(rec.tos)) if rec.tos is not None else b"",
        _chunk(16, zlib.compress(rec.payload)) if compress else _chunk(15, rec.payload),
    ))
    total = _V3_HDR.size + len(body)
    if total > 0xFFFF:
        raise HepError(f"HEP3 packet of {total} bytes")
    return _V3_HDR.pack(MAGIC, total) + body


def encode_hep2(rec: HepRecord, *, version: int = 2) -> bytes:
    """``rec`` as a HEP v2 (or v1: no time header) packet."""
    v4 = rec.ip_version == 4
    hlen = _V1_HDR.size + 2 * (4 if v4 else 16)
    head = _V1_HDR.pack(version, hlen, AF_INET if v4 else AF_INET6, rec.ip_proto,
                        rec.sport, rec.dport) + rec.src + rec.dst
    if version == 2:
        head += _V2_TIME.pack(rec.ts_sec, rec.ts_usec, rec.capture_id & 0xFFFF)
    return head + rec.payload
