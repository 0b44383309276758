"""Crafted hostile captures (issue 12) as raw IPv4 packets (LinkType.RAW), built from
`packetbuild`: RTP-looking flows, never-completing INVITEs, one call re-INVITEd with a
huge SDP, TCP streams of endless headers, and many calls or unsignalled streams still
running when the capture ends. Synthetic bytes only: nothing is sent anywhere.

Each builder returns ``(packets, times)`` for `Batch.from_packets(..., LinkType.RAW)`;
the tests drive them with small counts, ``bench/flood_tables.py`` with the issue's.
"""

from __future__ import annotations

import struct

from packetbuild import rtp, sdp, sip, udp

T0 = 1_700_000_000.0
Packets = tuple[list[bytes], list[float]]


def _addr(i: int, net: int = 18) -> str:
    """Distinct addresses in 198.18.0.0/15 (RFC 2544 benchmarking space)."""
    return f"198.{net}.{(i >> 8) & 0xFF}.{i & 0xFF}"


def rtp_flows(n: int, packets_per_flow: int = 1, rate_pps: float = 50_000.0) -> Packets:
    """``n`` distinct flows of RTP-looking packets (valid v2 headers, random-looking
    SSRCs and sequence numbers that never pass probation: each step jumps by 1000),
    ``packets_per_flow`` each, interleaved, at ``rate_pps`` packets per second."""
    out, ts = [], []
    for k in range(packets_per_flow):
        for i in range(n):
            ssrc = (i * 2654435761) & 0xFFFFFFFF
            out.append(udp(_addr(i >> 6), 10000 + (i & 63) * 2, _addr(i, 19), 20000,
                           rtp((i * 7 + 1000 * k) & 0xFFFF, 160 * k, ssrc)))
            ts.append(T0 + (k * n + i) / rate_pps)
    return out, ts


def invite(call_id: str, src: str, dst: str, body: bytes = b"", cseq: str = "1 INVITE",
           to_tag: str = "") -> bytes:
    first = "INVITE sip:bob@example.org SIP/2.0"
    return udp(src, 5060, dst, 5060, sip(first, cseq, to_tag, body, call_id=call_id))


def invite_flood(n: int, rate_pps: float = 2000.0, with_sdp: bool = True) -> Packets:
    """A scanner: ``n`` INVITEs with distinct Call-IDs that nothing ever answers, each
    offering media at one and the same endpoint (the worst case for the SDP index)."""
    body = sdp("198.18.250.1", 40000) if with_sdp else b""
    out = [invite(f"scan-{i}@flood", _addr(i), "198.19.0.1", body) for i in range(n)]
    return out, [T0 + i / rate_pps for i in range(n)]


def big_sdp(m_lines: int, addr: str = "198.18.7.10", port: int = 30000) -> bytes:
    """An SDP with ``m_lines`` audio sections, each at its own port."""
    head = f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
    media = "".join(f"m=audio {port + 2 * i} RTP/AVP 8\r\n" for i in range(m_lines))
    return (head + media).encode()


def fragments(packet: bytes, ident: int, mtu: int = 1500) -> list[bytes]:
    """An IPv4 datagram (header without options) cut into RFC 791 fragments."""
    header, payload = packet[:20], packet[20:]
    step = (mtu - 20) // 8 * 8
    out = []
    for off in range(0, len(payload), step):
        piece = payload[off:off + step]
        more = off + step < len(payload)
        flags = (0x2000 if more else 0) | (off // 8)
        h = bytearray(header)
        struct.pack_into("!HHH", h, 2, 20 + len(piece), ident & 0xFFFF, flags)
        out.append(bytes(h) + piece)
    return out


def udp_datagram(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """A UDP datagram of any size (the IPv4 total length field wraps above 64 KB, so
    the caller fragments it: only the first 64 KB - 28 bytes are a valid datagram)."""
    total = 28 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total & 0xFFFF, 0, 0, 64, 17, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return ip + struct.pack("!HHHH", sport, dport, (8 + len(payload)) & 0xFFFF, 0) + payload


def big_sdp_reinvites(m_lines: int, reinvites: int, call_id: str = "big@flood",
                      transport: str = "udp") -> Packets:
    """One answered call whose INVITE and every one of ``reinvites`` re-INVITEs carry an
    SDP of ``m_lines`` media sections, sent as IP fragments (``udp``) or, for an SDP
    too large for one datagram (5,000 m= lines are ~125 KB), as the segments of one
    TCP connection each way (``tcp``)."""
    a, b = "198.18.7.10", "198.19.8.20"
    body = big_sdp(m_lines, a)
    first = "INVITE sip:bob@example.org SIP/2.0"
    msgs = [(a, b, sip(first, "1 INVITE", "", body, call_id=call_id)),
            (b, a, sip("SIP/2.0 200 OK", "1 INVITE", ";tag=b1", sdp(b, 50000),
                       call_id=call_id)),
            (a, b, sip("ACK sip:bob@example.org SIP/2.0", "1 ACK", ";tag=b1",
                       call_id=call_id))]
    msgs += [(a, b, sip(first, f"{k + 2} INVITE", ";tag=b1", body, call_id=call_id))
             for k in range(reinvites)]
    out: list[bytes] = []
    ts: list[float] = []
    seqs: dict[str, int] = {}
    for i, (src, dst, m) in enumerate(msgs):
        if transport == "tcp":
            if src not in seqs:
                out.append(tcp(src, 5060, dst, 5060, 999, TCP_SYN))
                ts.append(T0 + 0.5 * i + 1e-5 * len(out))
                seqs[src] = 1000
            pieces = [tcp(src, 5060, dst, 5060, seqs[src] + k, TCP_ACK, m[k:k + 1400])
                      for k in range(0, len(m), 1400)]
            seqs[src] += len(m)
        else:
            pieces = fragments(udp(src, 5060, dst, 5060, m), ident=i + 1)
        for piece in pieces:
            out.append(piece)
            ts.append(T0 + 0.5 * i + 1e-5 * len(out))
    return out, ts


def tcp(src: str, sport: int, dst: str, dport: int, seq: int, flags: int,
        payload: bytes = b"") -> bytes:
    total = 40 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 6, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return ip + struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 0, 0x50, flags,
                            65535, 0, 0) + payload


TCP_SYN, TCP_ACK = 0x02, 0x10


def endless_headers(streams: int, segments: int, segment_bytes: int = 1000) -> Packets:
    """``streams`` TCP connections to 5060, each a request line followed by header lines
    that never end (``segments`` data segments of ``segment_bytes``), interleaved."""
    line = b"X-Filler: " + b"a" * 60 + b"\r\n"
    filler = (line * (segment_bytes // len(line) + 1))[:segment_bytes]
    first = b"INVITE sip:bob@example.org SIP/2.0\r\n"
    out, ts = [], []
    seqs = [1000] * streams
    for i in range(streams):
        out.append(tcp(_addr(i), 40000 + (i & 0x3FF), "198.19.0.1", 5060, 999, TCP_SYN))
        ts.append(T0 + 1e-4 * len(out))
    for k in range(segments):
        for i in range(streams):
            data = (first + filler)[:segment_bytes] if k == 0 else filler
            out.append(tcp(_addr(i), 40000 + (i & 0x3FF), "198.19.0.1", 5060, seqs[i],
                           TCP_ACK, data))
            seqs[i] += len(data)
            ts.append(T0 + 1e-4 * len(out))
    return out, ts


def active_calls(n: int, media_packets: int = 0) -> Packets:
    """``n`` answered calls (INVITE, 200, ACK) still up when the capture ends, each with
    ``media_packets`` RTP packets per direction."""
    out, ts = [], []
    t = T0
    for i in range(n):
        a, b = _addr(i), _addr(i, 19)
        cid = f"active-{i}@flood"
        out.append(invite(cid, a, b, sdp(a, 40000)))
        out.append(udp(b, 5060, a, 5060, sip("SIP/2.0 200 OK", "1 INVITE", ";tag=b1",
                                             sdp(b, 50000), call_id=cid)))
        out.append(udp(a, 5060, b, 5060, sip("ACK sip:bob@example.org SIP/2.0", "1 ACK",
                                             ";tag=b1", call_id=cid)))
        ts += [t, t + 1e-4, t + 2e-4]
        t += 1e-3
    for k in range(media_packets):
        for i in range(n):
            a, b = _addr(i), _addr(i, 19)
            out.append(udp(a, 40000, b, 50000, rtp(k, 160 * k, 0x1000 + i)))
            out.append(udp(b, 50000, a, 40000, rtp(k, 160 * k, 0x2000000 + i)))
            ts += [t, t + 1e-6]
            t += 2e-6
    return out, ts


def loose_streams(n: int, packets: int = 5) -> Packets:
    """``n`` unsignalled RTP streams (valid sequences, one SSRC each), running when the
    capture ends."""
    out, ts = [], []
    t = T0
    for k in range(packets):
        for i in range(n):
            out.append(udp(_addr(i), 30000, _addr(i, 19), 32000, rtp(k, 160 * k, 0x5000 + i)))
            ts.append(t)
            t += 1e-5
    return out, ts
