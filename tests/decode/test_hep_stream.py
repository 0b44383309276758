"""HEP3 over TCP cut back into packets: the framer and the sniffed-stream follower."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decode.hep_stream import HepFramer, HepStreamError, HepTcpFlows

KEY = (0, 0xC6120001, 0, 0xC6120002, 40001, 9060)
SYN, PSH_ACK, FIN = 0x02, 0x18, 0x11


def _frame(n: int, size: int = 100) -> bytes:
    """A HEP3-framed packet of ``size`` bytes whose body says which one it is."""
    body = n.to_bytes(4, "big") * ((size - 6) // 4 + 1)
    return b"HEP3" + size.to_bytes(2, "big") + body[: size - 6]


FRAMES = [_frame(n, 60 + 7 * n) for n in range(40)]
STREAM = b"".join(FRAMES)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, len(STREAM) - 1), max_size=30))
def test_any_cutting_of_the_stream_gives_every_frame_once(cuts: list[int]) -> None:
    framer = HepFramer()
    edges = [0, *sorted(set(cuts)), len(STREAM)]
    got = [f for a, b in pairwise(edges) for f in framer.feed(STREAM[a:b])]
    assert got == FRAMES


def test_a_frame_start_that_is_not_hep3_loses_the_framing() -> None:
    framer = HepFramer()
    assert framer.feed(FRAMES[0] + FRAMES[1][:3]) == [FRAMES[0]]
    with pytest.raises(HepStreamError):
        framer.feed(b"XYZ" + FRAMES[2])  # "HEXYZ..." where a header had to be
    assert framer.feed(FRAMES[3]) == [FRAMES[3]]  # and it forgot what it held
    with pytest.raises(HepStreamError):
        framer.feed(b"HEP3\x00\x05")  # a total length shorter than the header


def _segments(mss: int) -> list[tuple[int, bytes]]:
    """The stream as (sequence number, bytes) segments after a SYN with ISN 1000."""
    return [(1001 + a, STREAM[a : a + mss]) for a in range(0, len(STREAM), mss)]


def test_followed_stream_with_retransmissions_frames_each_packet_once() -> None:
    flows = HepTcpFlows()
    assert flows.feed(KEY, 1000, SYN, b"") == []
    got = []
    segs = _segments(333)
    for n, (seq, data) in enumerate(segs):
        got += flows.feed(KEY, seq, PSH_ACK, data) or []
        if n == 2:
            got += flows.feed(KEY, seq, PSH_ACK, data) or []  # the same segment again
        if n == 4:  # a retransmission that also carries new bytes
            nxt = segs[n + 1][1]
            got += flows.feed(KEY, seq + 100, PSH_ACK, data[100:] + nxt[:50]) or []
    assert got == FRAMES
    assert (flows.counters.retransmitted, flows.counters.gaps, flows.counters.desynced) == \
        (1, 0, 0)
    assert flows.feed(KEY, segs[-1][0] + len(segs[-1][1]), FIN, b"") == []
    assert flows.feed(KEY, 5, PSH_ACK, b"not hep") == []  # closed: forgotten, no framing
    assert flows.counters.skipped == 1


def test_a_missing_segment_loses_only_the_packets_it_touched() -> None:
    """Segments aligned on frames 0..39 (2 per segment): one missing loses its two; the
    next segment starts with HEP3 and the framing is back."""
    flows = HepTcpFlows()
    flows.feed(KEY, 1000, SYN, b"")
    offsets = [0]
    for f in FRAMES:
        offsets.append(offsets[-1] + len(f))
    got = []
    for k in range(0, len(FRAMES), 2):
        if k == 10:
            continue
        a, b = offsets[k], offsets[k + 2]
        got += flows.feed(KEY, 1001 + a, PSH_ACK, STREAM[a:b]) or []
    assert got == FRAMES[:10] + FRAMES[12:]
    assert flows.counters.gaps == 1


def test_after_a_gap_mid_frame_it_waits_for_a_segment_starting_a_frame() -> None:
    flows = HepTcpFlows()
    flows.feed(KEY, 1000, SYN, b"")
    segs = _segments(250)
    got = []
    for n, (seq, data) in enumerate(segs):
        if n != 3:
            got += flows.feed(KEY, seq, PSH_ACK, data) or []
    # every frame it gave is a real one, in order; the ones it skipped lie around the gap
    assert got == [f for f in FRAMES if f in got] and len(got) < len(FRAMES)
    lost = [n for n, f in enumerate(FRAMES) if f not in got]
    assert lost == list(range(lost[0], lost[-1] + 1))  # one run of lost frames
    assert flows.counters.gaps == 1


def test_a_flow_first_seen_mid_stream_starts_at_a_frame_start() -> None:
    flows = HepTcpFlows()
    tail = FRAMES[0][10:]
    assert flows.feed(KEY, 50, PSH_ACK, tail) == []  # no frame start yet: skipped
    seq = 50 + len(tail)
    assert flows.feed(KEY, seq, PSH_ACK, FRAMES[1] + FRAMES[2][:20]) == [FRAMES[1]]
    assert flows.feed(KEY, seq + len(FRAMES[1]) + 20, PSH_ACK, FRAMES[2][20:]) == [FRAMES[2]]
    assert flows.counters.skipped == 1


def test_other_bytes_on_the_port_are_consumed_and_counted() -> None:
    flows = HepTcpFlows()
    flows.feed(KEY, 1000, SYN, b"")
    assert flows.feed(KEY, 1001, PSH_ACK, b"GET / HTTP/1.1\r\n\r\n") == []
    assert flows.counters.desynced == 1  # the SYN said where the first frame starts
    assert flows.feed(KEY, 1019, PSH_ACK, b"more") == []
    assert flows.counters.skipped == 1


def test_a_desynced_stream_resumes_at_the_next_frame_start() -> None:
    flows = HepTcpFlows()
    assert flows.feed(KEY, 1, PSH_ACK, FRAMES[0]) == [FRAMES[0]]
    n = 1 + len(FRAMES[0])
    assert flows.feed(KEY, n, PSH_ACK, b"garbage!") == []
    assert flows.counters.desynced == 1
    assert flows.feed(KEY, n + 8, PSH_ACK, b"more garbage") == []
    assert flows.feed(KEY, n + 20, PSH_ACK, FRAMES[1]) == [FRAMES[1]]


def test_flows_are_bounded() -> None:
    flows = HepTcpFlows(max_flows=4)
    for port in range(10):
        key = (*KEY[:4], 40000 + port, 9060)
        assert flows.feed(key, 1, PSH_ACK, FRAMES[0][:50]) == []
    assert len(flows._flows) == 4 and flows.counters.evicted == 6
    # the newest four are the ones kept
    assert flows.feed((*KEY[:4], 40009, 9060), 51, PSH_ACK, FRAMES[0][50:]) == [FRAMES[0]]
