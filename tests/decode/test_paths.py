"""The vectorised fast path and the per-packet slow path give identical columns."""

from __future__ import annotations

import numpy as np
from decode_packets import (
    erspan2,
    erspan3,
    eth,
    gre,
    ipv4,
    ipv6,
    ipv6_ext,
    null,
    sll,
    sll2,
    tcp,
    tzsp,
    udp,
    vxlan,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture.batch import Batch
from agent.decode import Decoder
from agent.decode.frames import COLUMN_DTYPES

RTP = bytes(range(160))


def assert_same(batch: Batch) -> None:
    fast, slow = Decoder(), Decoder(force_slow_path=True)
    a, b = fast.decode(batch), slow.decode(batch)
    for name in COLUMN_DTYPES:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert np.array_equal(a.data, b.data)
    assert fast.counters == slow.counters


def varied_batch() -> Batch:
    opts = bytes([0x94, 4, 0, 0, 1, 1, 1, 0])
    tcp_opts = bytes([2, 4, 5, 0xB4, 4, 2, 1, 0])
    cases: list[tuple[bytes, int]] = [
        (eth(ipv4(udp(RTP, 4000, 5000), tos=0xB8)), 1),
        (eth(ipv4(udp(RTP), tos=0x8A), tags=((0x8100, 100, 5),)), 1),
        (eth(ipv4(udp(RTP)), tags=((0x88A8, 155, 1), (0x8100, 7, 6))), 1),
        (eth(ipv4(udp(RTP)), tags=((0x9100, 1, 1), (0x8100, 2, 2), (0x8100, 3, 3))), 1),
        (sll(ipv4(udp(RTP))), 113),
        (sll2(ipv6(udp(RTP), tclass=0xB9), 0x86DD), 276),
        (ipv4(udp(RTP), options=opts), 101),
        (ipv6(tcp(b"SIP/2.0 200 OK\r\n", options=tcp_opts), nh=6), 101),
        (ipv4(tcp(b"x", seq=2**32 - 1, flags=0x12)), 228),
        (ipv6(udp(RTP)), 229),
        (null(ipv4(udp(RTP)), 2), 0),
        (null(ipv6(udp(RTP)), 24, little=False), 108),
        (eth(ipv4(udp(RTP, length=60))), 1),
        (eth(ipv4(udp(RTP, length=4000))), 1),
        (eth(ipv4(udp(RTP)))[:70], 1),
        (eth(ipv6(ipv6_ext(17) + udp(RTP), nh=0), 0x86DD), 1),
        (eth(ipv4(udp(b"")), tags=((0x8100, 1, 0),)), 1),
        (eth(bytes(40), 0x0806), 1),
        (eth(ipv4(bytes(30), proto=1)), 1),
        (ipv4(udp(b"")), 101),  # ends exactly at the end of the buffer
        (eth(ipv4(udp(vxlan(eth(ipv4(udp(RTP)))), 1, 4789))), 1),
        (eth(ipv4(udp(tzsp(eth(ipv4(udp(RTP)))), 1, 37008))), 1),
        (eth(ipv4(udp(RTP, 1, 37008))), 1),  # plain UDP on a tunnel port
        (eth(ipv4(gre(erspan3() + eth(ipv6(udp(RTP)), 0x86DD), 0x22EB), proto=47)), 1),
        (eth(ipv4(gre(erspan2() + eth(ipv4(udp(RTP))), 0x88BE, 0x1000, bytes(4)), proto=47)), 1),
        (eth(ipv4(udp(tzsp(bytes(20), encap=18), 1, 37008))), 1),  # 802.11: dropped
    ]
    pkts = [p for p, _ in cases]
    return Batch.from_packets(pkts, [float(i) for i in range(len(pkts))], [lt for _, lt in cases])


def test_fast_and_slow_agree_on_varied_batch() -> None:
    batch = varied_batch()
    f = Decoder().decode(batch)
    assert len(f) == 22
    assert_same(batch)


LINKS = st.sampled_from(["eth", "vlan", "qinq", "sll", "sll2", "raw", "v4", "v6", "null"])


@st.composite
def packets(draw: st.DrawFn) -> tuple[bytes, int, int]:
    payload = draw(st.binary(max_size=64))
    use_tcp = draw(st.booleans())
    sport, dport = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    if use_tcp:
        opts = bytes(4 * draw(st.integers(0, 10)))
        l4 = tcp(payload, sport, dport, draw(st.integers(0, 2**32 - 1)),
                 draw(st.integers(0, 255)), opts)
    else:
        length = draw(st.one_of(st.none(), st.integers(0, 0xFFFF)))
        l4 = udp(payload, sport, dport, length)
    proto = 6 if use_tcp else 17
    tos = draw(st.integers(0, 255))
    version = draw(st.sampled_from([4, 6]))
    if version == 4:
        opts = bytes(4 * draw(st.integers(0, 10)))
        ip = ipv4(l4, proto, tos=tos, options=opts, src="203.0.113.9", dst="10.1.2.3")
    else:
        ip = ipv6(l4, proto, tclass=tos, src="fe80::1", dst="2001:db8::77")
    et = 0x0800 if version == 4 else 0x86DD
    ip, et = _wrap(draw(TUNNELS), ip, et)
    link = draw(LINKS)
    vid, pcp = draw(st.integers(0, 4095)), draw(st.integers(0, 7))
    pkt, lt = {
        "eth": (eth(ip, et), 1),
        "vlan": (eth(ip, et, ((0x8100, vid, pcp),)), 1),
        "qinq": (eth(ip, et, ((0x88A8, 5, 0), (0x8100, vid, pcp))), 1),
        "sll": (sll(ip, et), 113),
        "sll2": (sll2(ip, et), 276),
        "raw": (ip, 101),
        "v4": (ip, 228),
        "v6": (ip, 229),
        "null": (null(ip, 2 if version == 4 else 28), 0),
    }[link]
    wire = len(pkt)  # a snaplen cut keeps the original wire length
    cut = draw(st.one_of(st.none(), st.integers(0, len(pkt))))
    if cut is not None:
        pkt = pkt[:cut]
    return pkt, lt, wire


TUNNELS = st.sampled_from(["none", "none", "vxlan", "tzsp", "erspan1", "erspan2", "erspan3",
                           "gretap"])


def _wrap(kind: str, ip: bytes, et: int) -> tuple[bytes, int]:
    """``ip`` mirrored inside an Ethernet frame by tunnel ``kind`` (outer IPv4)."""
    frame = eth(ip, et)
    body = {
        "none": b"",
        "vxlan": udp(vxlan(frame), 49152, 4789),
        "tzsp": udp(tzsp(frame), 49152, 37008),
        "erspan1": gre(frame, 0x88BE),
        "erspan2": gre(erspan2() + frame, 0x88BE, 0x1000, bytes(4)),
        "erspan3": gre(erspan3(platform=True) + frame, 0x22EB),
        "gretap": gre(frame, 0x6558, 0x2000, bytes(4)),
    }[kind]
    if not body:
        return ip, et
    return ipv4(body, 17 if kind in ("vxlan", "tzsp") else 47, src="198.18.0.1"), 0x0800


@settings(max_examples=200, deadline=None)
@given(st.lists(packets(), min_size=1, max_size=12))
def test_fast_and_slow_agree_on_generated_packets(cases: list[tuple[bytes, int, int]]) -> None:
    batch = Batch.from_packets(
        [p for p, _, _ in cases], [float(i) for i in range(len(cases))],
        [lt for _, lt, _ in cases], [w for _, _, w in cases],
    )
    assert_same(batch)
