"""Hand-built packets (struct, no scapy) for the decode tests."""

from __future__ import annotations

import ipaddress
import struct

ETH_SRC = bytes.fromhex("020000000001")
ETH_DST = bytes.fromhex("020000000002")


def v4(addr: str) -> bytes:
    return ipaddress.IPv4Address(addr).packed


def v6(addr: str) -> bytes:
    return ipaddress.IPv6Address(addr).packed


def udp(payload: bytes, sport: int = 5060, dport: int = 5060, length: int | None = None) -> bytes:
    ulen = 8 + len(payload) if length is None else length
    return struct.pack("!HHHH", sport, dport, ulen, 0) + payload


def tcp(
    payload: bytes, sport: int = 5060, dport: int = 40000, seq: int = 1000,
    flags: int = 0x18, options: bytes = b"",
) -> bytes:
    assert len(options) % 4 == 0
    offset = (5 + len(options) // 4) << 4
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, offset, flags, 65535, 0, 0)
    return hdr + options + payload


def ipv4(
    payload: bytes, proto: int = 17, src: str = "10.0.0.1", dst: str = "10.0.0.2",
    tos: int = 0, ident: int = 1, frag: int = 0, options: bytes = b"",
    total: int | None = None, version_ihl: int | None = None,
) -> bytes:
    """``frag`` is the 16-bit flags/offset word (0x2000 = MF, offset in 8-octet units)."""
    assert len(options) % 4 == 0
    hlen = 20 + len(options)
    vihl = 0x40 | (hlen // 4) if version_ihl is None else version_ihl
    tot = hlen + len(payload) if total is None else total
    hdr = struct.pack("!BBHHHBBH4s4s", vihl, tos, tot, ident, frag, 64, proto, 0, v4(src), v4(dst))
    return hdr + options + payload


def ipv6(
    payload: bytes, nh: int = 17, src: str = "2001:db8::1", dst: str = "2001:db8::2",
    tclass: int = 0, plen: int | None = None,
) -> bytes:
    length = len(payload) if plen is None else plen
    first = (6 << 28) | (tclass << 20) | 0x12345
    return struct.pack("!IHBB16s16s", first, length, nh, 64, v6(src), v6(dst)) + payload


def ipv6_ext(nh: int, body_len8: int = 0) -> bytes:
    """Generic extension header (hop-by-hop, routing, dest opts) of 8*(body_len8+1) bytes."""
    return struct.pack("!BB", nh, body_len8) + bytes(6 + 8 * body_len8)


def ipv6_frag(nh: int, offset: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BBHI", nh, 0, offset | int(more), ident)


Tag = tuple[int, int, int]


def eth(payload: bytes, ethertype: int = 0x0800, tags: tuple[Tag, ...] = ()) -> bytes:
    """``tags``: (tpid, vlan, pcp), outermost first."""
    out = ETH_DST + ETH_SRC
    for tpid, vlan, pcp in tags:
        out += struct.pack("!HH", tpid, (pcp << 13) | vlan)
    return out + struct.pack("!H", ethertype) + payload


def sll(payload: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, ETH_SRC + b"\0\0", proto) + payload


def sll2(payload: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 2, 1, 0, 6, ETH_SRC + b"\0\0") + payload


def null(payload: bytes, family: int, little: bool = True) -> bytes:
    return struct.pack("<I" if little else ">I", family) + payload


def gre(payload: bytes, ptype: int, flags: int = 0, extra: bytes = b"") -> bytes:
    return struct.pack("!HH", flags, ptype) + extra + payload


def vxlan(frame: bytes, vni: int = 42, flags: int = 0x08) -> bytes:
    """RFC 7348 header (I flag by default) + inner Ethernet frame."""
    return struct.pack("!B3sI", flags, bytes(3), vni << 8) + frame


def tzsp(frame: bytes, kind: int = 0, encap: int = 1, tags: bytes = b"\x01") -> bytes:
    """TZSP version 1 header, ``tags`` (ending with the END tag 1), encapsulated frame."""
    return struct.pack("!BBH", 1, kind, encap) + tags + frame


def erspan2(session: int = 7, vlan: int = 0) -> bytes:
    """ERSPAN type II header (version 1)."""
    return struct.pack("!HHI", (1 << 12) | vlan, session & 0x3FF, 0)


def erspan3(frame_type: int = 0, platform: bool = False, session: int = 7) -> bytes:
    """ERSPAN type III header (version 2), with the 8-byte platform sub-header when asked."""
    last = (frame_type << 10) | int(platform)
    hdr = struct.pack("!HHIHH", 2 << 12, session & 0x3FF, 0x12345678, 0, last)
    return hdr + (bytes(8) if platform else b"")
