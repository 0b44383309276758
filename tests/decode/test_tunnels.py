"""Mirrored traffic: VXLAN, TZSP, ERSPAN I/II/III, GRETAP and NVGRE decode to the inner packet."""

from __future__ import annotations

import numpy as np
import pytest
from decode_packets import erspan2, erspan3, eth, gre, ipv4, ipv6, tzsp, udp, vxlan

from agent.capture.batch import Batch
from agent.decode import Decoder, Frames, TunnelPorts
from agent.decode.counters import PER_PACKET_DROPS
from agent.decode.frames import COLUMN_DTYPES, format_addr
from agent.decode.slowpath import MAX_TUNNEL_DEPTH

RTP = bytes([0x80, 0]) + bytes(range(170))
INNER = eth(ipv4(udp(RTP, 4000, 5000), src="172.16.0.1", dst="172.16.0.2", tos=0xB8),
            tags=((0x8100, 42, 5),))


def outer_udp(payload: bytes, dport: int, sport: int = 55000) -> bytes:
    return eth(ipv4(udp(payload, sport, dport), src="198.18.0.1", dst="198.18.0.2"))


def outer_gre(payload: bytes, ptype: int, flags: int = 0, extra: bytes = b"") -> bytes:
    return eth(ipv4(gre(payload, ptype, flags, extra), proto=47, src="198.18.0.1",
                    dst="198.18.0.2"))


def decode(pkts: list[bytes], ports: TunnelPorts | None = None) -> tuple[Frames, Decoder]:
    """Decode with both paths; they must agree; the accounting must add up."""
    batch = Batch.from_packets(pkts, [float(i) for i in range(len(pkts))])
    fast = Decoder(tunnel_ports=ports)
    slow = Decoder(tunnel_ports=ports, force_slow_path=True)
    f, g = fast.decode(batch), slow.decode(batch)
    for name in COLUMN_DTYPES:
        np.testing.assert_array_equal(getattr(f, name), getattr(g, name), err_msg=name)
    assert fast.counters == slow.counters
    c = fast.counters
    drops = sum(getattr(c, r) for r in PER_PACKET_DROPS)
    assert c.packets == c.frames + c.fragments_pending + drops
    return f, fast


def assert_inner(f: Frames, i: int, pkt: bytes, batch_off: int = 0) -> None:
    """Row ``i`` is INNER's UDP packet; its payload points at RTP inside ``pkt``."""
    assert format_addr(f.src_hi[i], f.src_lo[i]) == "172.16.0.1"
    assert format_addr(f.dst_hi[i], f.dst_lo[i]) == "172.16.0.2"
    assert (int(f.sport[i]), int(f.dport[i]), int(f.proto[i])) == (4000, 5000, 17)
    assert (int(f.dscp[i]), int(f.vlan[i]), int(f.pcp[i])) == (46, 42, 5)
    assert int(f.payload_off[i]) == batch_off + pkt.rindex(RTP)
    assert f.payload(i) == RTP


CARRIERS = {
    "vxlan": outer_udp(vxlan(INNER), 4789),
    "tzsp": outer_udp(tzsp(INNER), 37008),
    "tzsp_tags": outer_udp(tzsp(INNER, kind=1, tags=b"\x00\x0a\x01\xc4\x00\x00\x12\x02\x00\x06"
                                b"\x01"), 37008),
    "erspan_i": outer_gre(INNER, 0x88BE),
    "erspan_ii": outer_gre(erspan2() + INNER, 0x88BE, 0x1000, bytes(4)),
    "erspan_iii": outer_gre(erspan3() + INNER, 0x22EB),
    "erspan_iii_platform": outer_gre(erspan3(platform=True) + INNER, 0x22EB, 0x1000, bytes(4)),
    "gretap": outer_gre(INNER, 0x6558),
    "nvgre": outer_gre(INNER, 0x6558, 0x2000, bytes.fromhex("00abcd01")),
    "vxlan_over_ipv6": eth(ipv6(udp(vxlan(INNER), 49152, 4789)), 0x86DD),
    "vxlan_in_gretap": outer_gre(eth(ipv4(udp(vxlan(INNER), 1234, 4789))), 0x6558),
}


@pytest.mark.parametrize("name", sorted(CARRIERS))
def test_carried_packet_is_the_inner_packet(name: str) -> None:
    pkt = CARRIERS[name]
    f, dec = decode([pkt])
    assert len(f) == 1
    assert_inner(f, 0, pkt)
    assert dec.counters.tunnels_decapsulated == (2 if name == "vxlan_in_gretap" else 1)


def test_offsets_are_into_the_batch_buffer() -> None:
    pkts = [CARRIERS[n] for n in sorted(CARRIERS)]
    f, _ = decode(pkts)
    assert len(f) == len(pkts)
    base = 0
    for i, pkt in enumerate(pkts):
        assert_inner(f, i, pkt, base)
        base += len(pkt)


def test_erspan_iii_ip_frame_and_unsupported_frame_types() -> None:
    raw = ipv6(udp(RTP, 4000, 5000), src="2001:db8::7", dst="2001:db8::8")
    f, _ = decode([outer_gre(erspan3(frame_type=2) + raw, 0x22EB)])
    assert len(f) == 1 and format_addr(f.src_hi[0], f.src_lo[0]) == "2001:db8::7"
    assert f.payload(0) == RTP and int(f.vlan[0]) == -1
    f, dec = decode([outer_gre(erspan3(frame_type=5) + INNER, 0x22EB)])
    assert len(f) == 0 and dec.counters.tunnel_unsupported == 1


def test_tzsp_other_encapsulation_is_a_counted_drop() -> None:
    f, dec = decode([outer_udp(tzsp(bytes(40), encap=18), 37008)])  # IEEE 802.11
    assert len(f) == 0 and dec.counters.tunnel_unsupported == 1


@pytest.mark.parametrize(("payload", "dport"), [
    (RTP, 37008),  # RTP on a tunnel port: version 2 is neither TZSP nor (here) VXLAN
    (RTP, 4789),
    (bytes([2, 0, 0, 1, 1]) + INNER, 37008),  # TZSP version 2
    (bytes([1, 3, 0, 1, 1]) + INNER, 37008),  # type 3 (configuration) carries no frame
    (bytes([1, 0, 0, 1, 0x0A, 0xF0]) + INNER[:20], 37008),  # a tag runs past the datagram
    (bytes([1, 0, 0, 1]) + bytes(80), 37008),  # padding only, no END within the cap
    (bytes([1, 0, 0]), 37008),  # shorter than the fixed header
    (vxlan(INNER, flags=0x00), 4789),  # I flag clear
    (bytes(7), 4789),  # shorter than a VXLAN header
    (b"OPTIONS sip:a@b SIP/2.0\r\n\r\n", 37008),
])
def test_not_a_valid_tunnel_header_is_plain_udp(payload: bytes, dport: int) -> None:
    f, dec = decode([outer_udp(payload, dport)])
    assert len(f) == 1
    assert format_addr(f.dst_hi[0], f.dst_lo[0]) == "198.18.0.2"
    assert int(f.dport[0]) == dport and f.payload(0) == payload
    assert dec.counters.tunnels_decapsulated == 0


def test_only_the_destination_port_makes_a_tunnel() -> None:
    f, _ = decode([outer_udp(vxlan(INNER), 5000, sport=4789),
                   outer_udp(tzsp(INNER), 5000, sport=37008)])
    assert len(f) == 2 and set(f.dport.tolist()) == {5000}


def test_ports_are_configurable() -> None:
    pkts = [outer_udp(tzsp(INNER), 31337), outer_udp(vxlan(INNER), 8472),
            outer_udp(tzsp(INNER), 37008)]
    f, _ = decode(pkts)
    assert f.dport.tolist() == [31337, 8472, 5000]
    f, _ = decode(pkts, TunnelPorts.of(vxlan=[8472], tzsp=[31337]))
    assert f.dport.tolist() == [5000, 5000, 37008]
    f, _ = decode(pkts, TunnelPorts.of(vxlan=[], tzsp=[]))
    assert f.dport.tolist() == [31337, 8472, 37008]


def test_errors_inside_a_tunnel_are_counted_drops() -> None:
    cases = [
        (outer_udp(vxlan(eth(bytes(28), 0x0806)), 4789), "not_ip"),  # ARP mirrored
        (outer_udp(vxlan(eth(ipv4(udp(RTP), total=4000))), 4789), "truncated"),
        (outer_udp(tzsp(eth(ipv4(udp(RTP), version_ihl=0x44))), 37008), "bad_ip_header"),
        (outer_udp(tzsp(INNER[:16]), 37008), "truncated"),  # inner Ethernet cut short
        (outer_gre(erspan3()[:8], 0x22EB), "truncated"),
        (outer_gre(erspan2() + eth(ipv4(b"x" * 30, proto=1)), 0x88BE, 0x1000, bytes(4)),
         "not_udp_tcp"),
    ]
    for pkt, reason in cases:
        f, dec = decode([pkt])
        assert len(f) == 0, reason
        assert getattr(dec.counters, reason) == 1, (reason, dec.counters)


def test_inner_frame_ends_with_the_outer_datagram() -> None:
    # The inner IP length may not reach past the outer UDP datagram, even when bytes
    # follow it in the frame (Ethernet padding, a lying outer length).
    inner = eth(ipv4(udp(RTP, 4000, 5000)))
    dgram = udp(vxlan(inner), 55000, 4789)
    short = dgram[:4] + (len(dgram) - 10).to_bytes(2, "big") + dgram[6:]
    f, dec = decode([eth(ipv4(short))])
    assert len(f) == 0 and dec.counters.truncated == 1


def test_nesting_is_bounded() -> None:
    frame = INNER
    for _ in range(MAX_TUNNEL_DEPTH):
        frame = eth(ipv4(udp(vxlan(frame), 55000, 4789)))
    f, _ = decode([frame])
    assert len(f) == 1 and f.payload(0) == RTP
    f, dec = decode([eth(ipv4(udp(vxlan(frame), 55000, 4789)))])
    assert len(f) == 0 and dec.counters.tunnel_too_deep == 1


def test_vxlan_in_fragmented_datagram_points_into_the_reassembled_bytes() -> None:
    dgram = udp(vxlan(INNER), 55000, 4789)
    first, second = dgram[:48], dgram[48:]
    pkts = [eth(ipv4(first, ident=9, frag=0x2000)), eth(ipv4(second, ident=9, frag=48 // 8))]
    f, _ = decode(pkts)
    assert len(f) == 1 and f.payload(0) == RTP
    assert int(f.payload_off[0]) >= sum(len(p) for p in pkts)  # in the appended bytes


def test_rows_do_not_depend_on_batching() -> None:
    pkts = [CARRIERS[n] for n in sorted(CARRIERS)] + [outer_udp(RTP, 37008)]
    whole, dec = decode(pkts)
    single = Decoder()
    parts = [single.decode(Batch.from_packets([p], [float(i)])) for i, p in enumerate(pkts)]
    assert single.counters == dec.counters
    assert [f.payload(0) for f in parts] == [whole.payload(i) for i in range(len(whole))]
    for name in COLUMN_DTYPES:
        if name not in ("pkt", "payload_off"):
            got = np.concatenate([getattr(f, name) for f in parts])
            np.testing.assert_array_equal(got, getattr(whole, name), err_msg=name)
