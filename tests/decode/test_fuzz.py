"""Bad input never raises out of `Decoder.decode` and never grows memory without bound."""

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
    ipv6_frag,
    null,
    sll,
    sll2,
    tcp,
    tzsp,
    udp,
    vxlan,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.capture.batch import Batch
from agent.decode import DecodeLimits, Decoder
from agent.decode.counters import PER_PACKET_DROPS
from agent.decode.frames import COLUMN_DTYPES

LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 7, 65535]
_V4 = ipv4(udp(b"p" * 20))
_V6 = ipv6(udp(b"p" * 20))
SEEDS: list[tuple[bytes, int]] = [
    (eth(_V4), 1),
    (eth(ipv6(tcp(b"t" * 10, options=bytes(8)), nh=6), 0x86DD), 1),
    (eth(_V4, tags=((0x88A8, 1, 1), (0x8100, 2, 2))), 1),
    (sll(_V4), 113),
    (sll2(_V6, 0x86DD), 276),
    (_V4, 101),
    (_V6, 229),
    (null(_V4, 2), 0),
    (null(_V6, 30, little=False), 108),
    (eth(ipv4(udp(b"f" * 16), ident=3, frag=0x2000)), 1),
    (eth(ipv4(b"f" * 16, ident=3, frag=2)), 1),
    (eth(ipv6(ipv6_frag(17, 0, True, 5) + udp(b"f" * 8), nh=44), 0x86DD), 1),
    (eth(ipv6(ipv6_ext(60) + ipv6_ext(17) + udp(b""), nh=0), 0x86DD), 1),
    (eth(ipv4(gre(eth(_V4), 0x6558), proto=47)), 1),
    (eth(ipv4(gre(bytes(8) + eth(_V4), 0x88BE, 0x1000, bytes(4)), proto=47)), 1),
    (eth(ipv4(gre(b"\xff\x03\x00\x21" + _V4, 0x880B, 0x2001, bytes(4)), proto=47)), 1),
    (eth(ipv4(_V4, proto=4)), 1),
    (eth(bytes([0x11, 0, 0, 1, 0, 50, 0, 0x21]) + _V4, 0x8864), 1),
    (eth(ipv4(udp(vxlan(eth(_V4)), 1, 4789))), 1),
    (eth(ipv4(udp(tzsp(eth(_V4), tags=b"\x00\x0a\x01\xc4\x12\x02\x00\x06\x01"), 1, 37008))), 1),
    (eth(ipv4(udp(tzsp(eth(ipv4(udp(vxlan(eth(_V6, 0x86DD)), 1, 4789)))), 1, 37008))), 1),
    (eth(ipv4(gre(erspan2() + eth(_V4), 0x88BE, 0x1000, bytes(4)), proto=47)), 1),
    (eth(ipv4(gre(erspan3(platform=True) + eth(_V4), 0x22EB), proto=47)), 1),
    (eth(ipv4(gre(erspan3(frame_type=2) + _V6, 0x22EB), proto=47)), 1),
    (eth(ipv4(gre(eth(_V4), 0x6558, 0x2000, bytes(4)), proto=47)), 1),
]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, int, int]:
    if draw(st.booleans()):
        raw = draw(st.binary(max_size=120))
        return raw, draw(st.sampled_from(LINKTYPES)), len(raw) + draw(st.integers(-5, 100))
    pkt, lt = draw(st.sampled_from(SEEDS))
    buf = bytearray(pkt)
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(buf) - 1))
        kind = draw(st.sampled_from(["flip", "zero16", "ff16"]))
        if kind == "flip":
            buf[pos] ^= draw(st.integers(1, 255))
        elif pos + 1 < len(buf):
            buf[pos : pos + 2] = b"\x00\x00" if kind == "zero16" else b"\xff\xff"
    wire = len(buf)
    cut = draw(st.integers(0, len(buf)))
    if draw(st.booleans()):
        buf = buf[:cut]
    if draw(st.booleans()):
        lt = draw(st.sampled_from(LINKTYPES))
    return bytes(buf), lt, wire


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=16))
def test_garbage_never_raises(cases: list[tuple[bytes, int, int]]) -> None:
    batch = Batch.from_packets(
        [p for p, _, _ in cases], np.linspace(1.0, 2.0, len(cases)),
        [lt for _, lt, _ in cases], [max(w, 0) for _, _, w in cases],
    )
    dec = Decoder()
    f = dec.decode(batch)
    twin = Decoder(force_slow_path=True)
    g = twin.decode(batch)
    for name in COLUMN_DTYPES:  # the twin paths agree on garbage too
        np.testing.assert_array_equal(getattr(f, name), getattr(g, name), err_msg=name)
    assert dec.counters == twin.counters
    c = dec.counters
    assert len(f) <= len(batch)
    drops = sum(getattr(c, r) for r in PER_PACKET_DROPS)
    assert c.packets == c.frames + c.fragments_pending + drops
    assert np.all(f.payload_len >= 0)
    assert np.all(f.payload_off >= 0)
    assert np.all(f.payload_off + f.payload_len <= f.data.size)
    assert set(f.proto.tolist()) <= {6, 17}
    assert np.all(np.diff(f.pkt) >= 0)
    # the payload of a row never reaches into another packet's captured bytes
    for i in range(len(f)):
        k = int(f.pkt[i])
        start, end = int(f.payload_off[i]), int(f.payload_off[i] + f.payload_len[i])
        if start < batch.data.size:
            assert int(batch.offset[k]) <= start and end <= batch.offset[k] + batch.caplen[k]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 64), st.integers(0, 3000))
def test_fragment_flood_stays_bounded(cap: int, n_ids: int) -> None:
    dec = Decoder(DecodeLimits(max_fragment_sets=cap))
    pkts = [eth(ipv4(bytes(8), ident=i & 0xFFFF, src=f"10.0.{i >> 16}.1", frag=0x2000))
            for i in range(n_ids)]
    if pkts:
        dec.decode(Batch.from_packets(pkts, np.full(len(pkts), 1.0)))
    assert dec.fragment_sets <= cap
