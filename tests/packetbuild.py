"""Raw IPv4/UDP packets of a SIP call with RTP, for tests that drive the engine directly
(LinkType.RAW batches). Synthetic bytes only: nothing is sent anywhere."""

from __future__ import annotations

import struct


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes, dscp: int = 0) -> bytes:
    total = 28 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, dscp << 2, total, 0, 0, 64, 17, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return ip + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def sdp(addr: str, port: int) -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n").encode()


def sip(first: str, cseq: str, to_tag: str = "", body: bytes = b"", *,
        via: str = "198.18.7.10", from_uri: str = "sip:alice@example.org",
        to_uri: str = "sip:bob@example.org", call_id: str = "idle@test",
        from_display: str = "", extra: tuple[str, ...] = ()) -> bytes:
    shown = f'"{from_display}" ' if from_display else ""
    head = [first, f"Via: SIP/2.0/UDP {via}:5060;branch=z9hG4bK" + cseq.replace(" ", ""),
            f"From: {shown}<{from_uri}>;tag=a1", f"To: <{to_uri}>{to_tag}",
            f"Call-ID: {call_id}", f"CSeq: {cseq}", *extra]
    if body:
        head.append("Content-Type: application/sdp")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def rtp(seq: int, ts: int, ssrc: int) -> bytes:
    """A PCMA (PT 8) packet: 20 ms of A-law silence."""
    return struct.pack("!BBHII", 0x80, 8, seq, ts, ssrc) + b"\xd5" * 160
