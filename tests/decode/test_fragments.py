"""IP fragment reassembly through `Decoder` (RFC 791 §3.2, RFC 8200 §4.5, RFC 5722)."""

from __future__ import annotations

import numpy as np
import pytest
from decode_packets import eth, ipv4, ipv6, ipv6_ext, ipv6_frag, udp

from agent.capture.batch import Batch
from agent.decode import DecodeLimits, Decoder

SIP = (b"INVITE sip:bob@example.com SIP/2.0\r\n" + b"X-Pad: " + b"a" * 3000 + b"\r\n\r\n")
DGRAM = udp(SIP, 5060, 5080)  # the fragmentable part: UDP header + payload


def v4_fragments(dgram: bytes, size: int = 1480, ident: int = 77, tos: int = 0xB8) -> list[bytes]:
    out = []
    for start in range(0, len(dgram), size):
        more = start + size < len(dgram)
        frag = (0x2000 if more else 0) | (start // 8)
        out.append(eth(ipv4(dgram[start : start + size], ident=ident, frag=frag, tos=tos)))
    return out


def v6_fragments(dgram: bytes, size: int = 1232, ident: int = 0xCAFEBABE) -> list[bytes]:
    out = []
    for start in range(0, len(dgram), size):
        more = start + size < len(dgram)
        hdr = ipv6_frag(17, start, more, ident)
        out.append(eth(ipv6(hdr + dgram[start : start + size], nh=44, tclass=0x68), 0x86DD))
    return out


def decode(pkts: list[bytes], ts: list[float] | None = None, dec: Decoder | None = None,
           slow: bool = False) -> tuple[Decoder, object]:
    dec = dec or Decoder(force_slow_path=slow)
    times = ts if ts is not None else [float(i) for i in range(len(pkts))]
    return dec, dec.decode(Batch.from_packets(pkts, times))


@pytest.mark.parametrize("slow", [False, True])
@pytest.mark.parametrize("order", [[0, 1, 2], [2, 0, 1], [1, 2, 0]])
def test_ipv4_in_and_out_of_order(order: list[int], slow: bool) -> None:
    frags = v4_fragments(DGRAM)
    assert len(frags) == 3
    plain = eth(ipv4(udp(b"rtp", 1, 2)))
    pkts = [frags[i] for i in order] + [plain]
    batch = Batch.from_packets(pkts, [10.0, 10.1, 10.2, 10.3])
    dec = Decoder(force_slow_path=slow)
    f = dec.decode(batch)
    assert len(f) == 2
    assert list(f.pkt) == [2, 3] and f.ts[0] == pytest.approx(10.2)
    assert f.payload(0) == SIP and f.payload(1) == b"rtp"
    assert (f.sport[0], f.dport[0], f.dscp[0], f.proto[0]) == (5060, 5080, 46, 17)
    assert f.data.size == batch.data.size + len(DGRAM)
    assert f.payload_off[0] == batch.data.size + 8
    c = dec.counters
    assert (c.fragments_reassembled, c.fragments_pending, c.frames) == (1, 2, 2)
    assert dec.fragment_sets == 0 and dec.fragment_bytes == 0


def test_fragments_across_batches_and_duplicate() -> None:
    frags = v4_fragments(DGRAM)
    dec = Decoder()
    f1 = dec.decode(Batch.from_packets([frags[0], frags[0]], [1.0, 1.1]))
    assert len(f1) == 0 and dec.counters.fragments_duplicate == 1
    f2 = dec.decode(Batch.from_packets(frags[1:], [1.2, 1.3]))
    assert len(f2) == 1 and f2.payload(0) == SIP and f2.pkt[0] == 1


def test_missing_fragment_expires_by_packet_time() -> None:
    frags = v4_fragments(DGRAM)
    dec, f = decode(frags[:2], [100.0, 100.5])
    assert dec.fragment_sets == 1
    dec.decode(Batch.from_packets([eth(ipv4(udp(b"x")))], [129.0]))
    assert dec.fragment_sets == 1  # 29 s of packet time: still waiting
    dec.decode(Batch.from_packets([eth(ipv4(udp(b"x")))], [131.0]))
    assert dec.fragment_sets == 0 and dec.counters.fragments_expired == 1
    f = dec.decode(Batch.from_packets(frags[2:], [131.5]))  # the late last fragment alone
    assert len(f) == 0 and dec.fragment_sets == 1


def test_overlap_drops_the_set() -> None:
    frags = v4_fragments(DGRAM)
    overlap = eth(ipv4(DGRAM[8:1488], ident=77, frag=0x2000 | 1))
    dec, f = decode([frags[0], overlap, frags[1], frags[2]])
    assert len(f) == 0 and dec.counters.fragments_bad == 1
    assert dec.counters.fragments_reassembled == 0


def test_distinct_ids_do_not_mix() -> None:
    a, b = v4_fragments(DGRAM, ident=1), v4_fragments(udp(b"y" * 3000), ident=2)
    _, f = decode([a[0], b[0], a[1], b[1], b[2], a[2]])
    assert list(f.pkt) == [4, 5]  # type: ignore[attr-defined]


@pytest.mark.parametrize("slow", [False, True])
def test_ipv6_fragments(slow: bool) -> None:
    frags = v6_fragments(DGRAM)
    assert len(frags) == 3
    _, f = decode([frags[1], frags[0], frags[2]], slow=slow)
    assert len(f) == 1  # type: ignore[arg-type]
    assert f.payload(0) == SIP  # type: ignore[attr-defined]
    assert (f.ip_version[0], f.dscp[0], f.sport[0]) == (6, 26, 5060)  # type: ignore[attr-defined]


def test_ipv6_fragment_with_dest_options_in_fragmentable_part() -> None:
    dgram = ipv6_ext(17) + DGRAM
    half = 1600
    f0 = eth(ipv6(ipv6_frag(60, 0, True, 9) + dgram[:half], nh=44), 0x86DD)
    f1 = eth(ipv6(ipv6_frag(60, half, False, 9) + dgram[half:], nh=44), 0x86DD)
    _, f = decode([f0, f1])
    assert f.payload(0) == SIP  # type: ignore[attr-defined]


def test_fragment_flood_is_bounded() -> None:
    limits = DecodeLimits(max_fragment_sets=64)
    pkts = [eth(ipv4(bytes(64), ident=i, frag=0x2000)) for i in range(1000)]
    dec = Decoder(limits)
    dec.decode(Batch.from_packets(pkts, np.full(1000, 5.0)))
    assert dec.fragment_sets == 64
    assert dec.counters.fragments_evicted == 1000 - 64
    assert dec.counters.fragments_pending == 1000


def test_fragment_byte_budget() -> None:
    limits = DecodeLimits(max_fragment_total_bytes=10_000)
    pkts = [eth(ipv4(bytes(1480), ident=i, frag=0x2000)) for i in range(20)]
    dec = Decoder(limits)
    dec.decode(Batch.from_packets(pkts, np.full(20, 5.0)))
    assert dec.fragment_bytes <= 10_000 and dec.counters.fragments_evicted > 0


def test_bad_fragments() -> None:
    pkts = [
        eth(ipv4(bytes(13), ident=5, frag=0x2000)),  # non-final piece not a multiple of 8
        eth(ipv4(bytes(16), ident=6, frag=0x2000 | 8191)),  # beyond max datagram
    ]
    dec, _ = decode(pkts)
    assert dec.counters.fragments_bad == 2 and dec.fragment_sets == 0
