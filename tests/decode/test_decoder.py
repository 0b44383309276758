"""Column values of `Decoder` for each supported shape, and its drop counters."""

from __future__ import annotations

import numpy as np
import pytest
from decode_packets import (
    eth,
    gre,
    ipv4,
    ipv6,
    ipv6_ext,
    null,
    sll,
    sll2,
    tcp,
    udp,
)

from agent.capture.batch import Batch, LinkType
from agent.decode import Decoder, Frames
from agent.decode.counters import PER_PACKET_DROPS
from agent.decode.frames import addr_to_words

RTP = bytes(range(172))


def decode_one(pkt: bytes, linktype: int = LinkType.ETHERNET, **kw: bool) -> tuple[Frames, Decoder]:
    dec = Decoder(**kw)  # type: ignore[arg-type]
    return dec.decode(Batch.from_packets([pkt], [100.5], linktype)), dec


def check_row(f: Frames, i: int, **want: object) -> None:
    for name, value in want.items():
        got = getattr(f, name)[i]
        assert got == value, f"{name}: {got} != {value}"


def assert_accounting(dec: Decoder) -> None:
    c = dec.counters
    drops = sum(getattr(c, r) for r in PER_PACKET_DROPS)
    assert c.packets == c.frames + c.fragments_pending + drops


@pytest.mark.parametrize("slow", [False, True])
def test_ethernet_ipv4_udp_every_column(slow: bool) -> None:
    pkt = eth(ipv4(udp(RTP, 40000, 8000), src="192.0.2.1", dst="198.51.100.7", tos=0xB9))
    f, dec = decode_one(pkt, force_slow_path=slow)
    assert len(f) == 1
    src, dst = addr_to_words("192.0.2.1"), addr_to_words("198.51.100.7")
    check_row(
        f, 0, pkt=0, ts=100.5, ip_version=4, src_hi=src[0], src_lo=src[1], dst_hi=dst[0],
        dst_lo=dst[1], sport=40000, dport=8000, proto=17, dscp=46, ecn=1, vlan=-1, pcp=-1,
        payload_off=14 + 20 + 8, payload_len=len(RTP), wire_len=len(pkt), tcp_seq=0,
        tcp_flags=0,
    )
    assert f.payload(0) == RTP
    assert dec.counters.frames == 1 and dec.counters.packets == 1


@pytest.mark.parametrize("slow", [False, True])
def test_ipv6_tcp_with_options(slow: bool) -> None:
    opts = bytes([2, 4, 5, 0xB4, 1, 1, 1, 0])  # MSS + NOP NOP + EOL padding
    body = b"INVITE sip:x SIP/2.0\r\n"
    pkt = eth(ipv6(tcp(body, 5060, 40001, seq=0xDEADBEEF, flags=0x18, options=opts),
                   nh=6, tclass=0xB8 | 3), 0x86DD)
    f, _ = decode_one(pkt, force_slow_path=slow)
    src, dst = addr_to_words("2001:db8::1"), addr_to_words("2001:db8::2")
    check_row(
        f, 0, ip_version=6, src_hi=src[0], src_lo=src[1], dst_hi=dst[0], dst_lo=dst[1],
        sport=5060, dport=40001, proto=6, dscp=46, ecn=3, tcp_seq=0xDEADBEEF, tcp_flags=0x18,
        payload_off=14 + 40 + 28, payload_len=len(body),
    )
    assert f.payload(0) == body


@pytest.mark.parametrize("slow", [False, True])
@pytest.mark.parametrize(
    ("tags", "vlan", "pcp"),
    [
        (((0x8100, 100, 5),), 100, 5),
        (((0x88A8, 155, 1), (0x8100, 1, 6)), 1, 6),
        (((0x9100, 7, 0), (0x8100, 4094, 7)), 4094, 7),
        (((0x8100, 10, 0), (0x8100, 20, 3), (0x8100, 30, 4)), 30, 4),  # 3 tags: slow path
    ],
)
def test_vlan_and_qinq(
    slow: bool, tags: tuple[tuple[int, int, int], ...], vlan: int, pcp: int
) -> None:
    pkt = eth(ipv4(udp(RTP)), tags=tags)
    f, _ = decode_one(pkt, force_slow_path=slow)
    check_row(f, 0, vlan=vlan, pcp=pcp, payload_off=14 + 4 * len(tags) + 28)


@pytest.mark.parametrize("slow", [False, True])
@pytest.mark.parametrize(
    ("pkt", "linktype", "l3"),
    [
        (sll(ipv4(udp(RTP))), LinkType.LINUX_SLL, 16),
        (sll2(ipv6(udp(RTP)), 0x86DD), LinkType.LINUX_SLL2, 20),
        (ipv4(udp(RTP)), LinkType.RAW, 0),
        (ipv6(udp(RTP)), LinkType.RAW, 0),
        (ipv4(udp(RTP)), 12, 0),
        (ipv6(udp(RTP)), 14, 0),
        (ipv4(udp(RTP)), LinkType.IPV4, 0),
        (ipv6(udp(RTP)), LinkType.IPV6, 0),
        (null(ipv4(udp(RTP)), 2), LinkType.NULL, 4),
        (null(ipv4(udp(RTP)), 2, little=False), LinkType.NULL, 4),
        (null(ipv6(udp(RTP)), 30), LinkType.NULL, 4),
        (null(ipv6(udp(RTP)), 24, little=False), LinkType.LOOP, 4),
    ],
)
def test_link_types(slow: bool, pkt: bytes, linktype: int, l3: int) -> None:
    f, _ = decode_one(pkt, linktype, force_slow_path=slow)
    ip_len = 20 if pkt[l3] >> 4 == 4 else 40
    check_row(f, 0, sport=5060, dport=5060, proto=17, payload_off=l3 + ip_len + 8,
              payload_len=len(RTP))


@pytest.mark.parametrize("slow", [False, True])
def test_ipv4_options_and_snaplen_and_udp_length(slow: bool) -> None:
    opts = bytes([0x94, 4, 0, 0])  # router alert (RFC 2113)
    pkts = [
        eth(ipv4(udp(RTP), options=opts)),
        eth(ipv4(udp(RTP)))[:14 + 28 + 50],  # snaplen cut: payload clipped to capture
        eth(ipv4(udp(RTP, length=8 + 100))),  # UDP length shorter than IP payload
        eth(ipv4(udp(RTP, length=8 + 500))),  # UDP length longer: clipped to IP payload
        eth(ipv4(udp(b"\x01\x02"))) + bytes(16),  # Ethernet padding beyond IP total length
    ]
    wire = [len(pkts[0]), 14 + 28 + len(RTP), len(pkts[2]), len(pkts[3]), len(pkts[4])]
    dec = Decoder(force_slow_path=slow)
    f = dec.decode(Batch.from_packets(pkts, [1.0] * 5, wirelen=wire))
    assert list(f.payload_len) == [len(RTP), 50, 100, len(RTP), 2]
    assert f.payload_off[0] == 14 + 24 + 8
    assert list(f.wire_len) == wire


@pytest.mark.parametrize("slow", [False, True])
@pytest.mark.parametrize(("tos", "dscp", "ecn"), [(0, 0, 0), (0xB8, 46, 0), (0x8A, 34, 2),
                                                  (0xFF, 63, 3), (0x03, 0, 3)])
def test_dscp_ecn_v4_v6(slow: bool, tos: int, dscp: int, ecn: int) -> None:
    pkts = [eth(ipv4(udp(RTP), tos=tos)), eth(ipv6(udp(RTP), tclass=tos), 0x86DD)]
    f = Decoder(force_slow_path=slow).decode(Batch.from_packets(pkts, [1.0, 2.0]))
    assert list(f.dscp) == [dscp, dscp] and list(f.ecn) == [ecn, ecn]


def test_ipv6_extension_headers() -> None:
    # hop-by-hop -> dest opts (16 bytes) -> routing -> UDP
    chain = ipv6_ext(60) + ipv6_ext(43, 1) + ipv6_ext(17)
    f, _ = decode_one(eth(ipv6(chain + udp(RTP), nh=0), 0x86DD))
    check_row(f, 0, payload_off=14 + 40 + 8 + 16 + 8 + 8, payload_len=len(RTP), proto=17)
    ah = bytes([17, 4]) + bytes(22)  # AH: (4 + 2) * 4 = 24 bytes (RFC 4302)
    f, _ = decode_one(eth(ipv6(ah + udp(RTP), nh=51), 0x86DD))
    check_row(f, 0, payload_off=14 + 40 + 24 + 8)
    f, dec = decode_one(eth(ipv6(ipv6_ext(59) + udp(RTP), nh=0), 0x86DD))
    assert len(f) == 0 and dec.counters.not_udp_tcp == 1


def test_tunnels() -> None:
    inner = ipv4(udp(RTP, 4000, 5000), src="172.16.0.1", dst="172.16.0.2", tos=0xB8)
    teb = eth(inner, tags=((0x8100, 42, 3),))
    erspan_hdr = bytes(8)
    pkts = [
        eth(ipv4(inner, proto=4)),  # IP-in-IP (RFC 2003)
        eth(ipv6(inner, nh=4), 0x86DD),
        eth(ipv4(gre(inner, 0x0800), proto=47)),
        eth(ipv4(gre(teb, 0x6558, flags=0x2000, extra=bytes(4)), proto=47), tags=((0x8100, 9, 1),)),
        eth(ipv4(gre(erspan_hdr + teb, 0x88BE, flags=0x1000, extra=bytes(4)), proto=47)),
        eth(bytes([0x11, 0, 0, 1]) + (len(inner) + 2).to_bytes(2, "big") + b"\x00\x21" + inner,
            0x8864),  # PPPoE session
    ]
    dec = Decoder()
    f = dec.decode(Batch.from_packets(pkts, [1.0] * len(pkts)))
    assert len(f) == len(pkts)
    assert set(f.sport) == {4000} and set(f.dscp) == {46}
    assert list(f.vlan) == [-1, -1, -1, 42, 42, -1]
    for i in range(len(f)):
        assert f.payload(i) == RTP
    assert dec.counters.tunnels_decapsulated == 5


def test_drops_are_counted_and_never_rows() -> None:
    good = eth(ipv4(udp(RTP)))
    pkts: list[tuple[bytes, int, str]] = [
        (good, 999, "unsupported_linktype"),
        (eth(bytes(28), 0x0806), 1, "not_ip"),
        (good[:20], 1, "truncated"),
        (eth(ipv4(udp(RTP), total=10)), 1, "bad_ip_header"),
        (eth(ipv4(udp(RTP), total=4000)), 1, "truncated"),
        (eth(ipv4(udp(RTP), version_ihl=0x44)), 1, "bad_ip_header"),
        (eth(ipv4(udp(RTP), version_ihl=0x65)), 1, "bad_ip_header"),
        (eth(ipv4(udp(RTP, length=4))), 1, "bad_l4_header"),
        (eth(ipv4(b"\x08\x00" + bytes(30), proto=1)), 1, "not_udp_tcp"),
        (eth(ipv4(bytes(40), proto=132)), 1, "not_udp_tcp"),
        (eth(ipv6(udp(RTP), plen=0), 0x86DD), 1, "bad_ip_header"),
        (eth(ipv6(bytes(40), nh=50), 0x86DD), 1, "not_udp_tcp"),
        (eth(ipv4(udp(b"")[:6])), 1, "bad_l4_header"),
    ]
    for slow in (False, True):
        for pkt, lt, reason in pkts:
            f, dec = decode_one(pkt, lt, force_slow_path=slow)
            assert len(f) == 0, reason
            assert getattr(dec.counters, reason) == 1, (reason, dec.counters)
            assert_accounting(dec)


def test_no_copy_without_reassembly_and_packet_order() -> None:
    pkts = [eth(ipv6(udp(RTP), tclass=4), 0x86DD), eth(bytes(30), 0x0806),
            sll(ipv4(udp(RTP, 1, 2))), eth(ipv4(udp(RTP, 3, 4)))]
    batch = Batch.from_packets(pkts, [1.0, 2.0, 3.0, 4.0], [1, 1, 113, 1])
    f = Decoder().decode(batch)
    assert f.data is batch.data
    assert list(f.pkt) == [0, 2, 3] and list(f.ts) == [1.0, 3.0, 4.0]
    assert np.all(np.diff(f.pkt) > 0)


def test_empty_batch() -> None:
    f = Decoder().decode(Batch.empty())
    assert len(f) == 0
