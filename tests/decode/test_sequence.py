"""GRE sequence numbers of mirror sessions (ERSPAN II/III, GRETAP): copies lost between
exporter and probe, and resets, per observation point."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from scapy.contrib.erspan import ERSPAN_I, ERSPAN_II, ERSPAN_III
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import GRE, Ether
from scapy.packet import Packet, Raw

from agent.capture.batch import Batch
from agent.capture.points import OTHER_POINT, point_id
from agent.decode import DecodeCounters, Decoder
from agent.decode.sequence import REORDER_WINDOW, GreSequences, SequenceGaps

INNER = bytes(Ether() / IP(src="172.16.0.1", dst="172.16.0.2") / UDP(sport=4000, dport=5000)
              / Raw(bytes([0x80, 0]) + bytes(170)))
OUTER = {"src": "198.18.0.1", "dst": "198.18.0.2"}


def _erspan2(seq: int, session: int = 7) -> bytes:
    return bytes(Ether() / IP(**OUTER) / GRE(proto=0x88BE, seqnum_present=1, sequence_number=seq)
                 / ERSPAN_II(session_id=session) / Raw(INNER))


def _decode(packets: list[Packet | bytes], decoder: Decoder | None = None) -> Decoder:
    d = decoder or Decoder()
    raw = [bytes(p) for p in packets]
    frames = d.decode(Batch.from_packets(raw, [float(i) for i in range(len(raw))]))
    assert len(frames) == len(raw)  # every copy is measured, whatever its number
    return d


def test_erspan_ii_gaps_and_a_restart_per_session() -> None:
    s7 = [100, 101, 102, 105, 106, 110,  # 2 + 3 lost
          109,  # late: a reset, not loss (and not un-lost)
          111,
          5, 6, 8]  # a restart (106 back), then 1 lost
    s9 = [2**32 - 2, 2**32 - 1, 0, 2,  # the wrap is a step forward; 1 lost
          2]  # the same number again
    d = _decode([_erspan2(n) for n in s7] + [_erspan2(n, session=9) for n in s9])
    assert d.sequence_gaps() == {"erspan/198.18.0.1/s7": SequenceGaps(lost=6, resets=2),
                                 "erspan/198.18.0.1/s9": SequenceGaps(lost=1, resets=1)}
    assert (d.counters.sequence_lost, d.counters.sequence_resets) == (7, 3)


def test_packets_without_a_sequence_number_are_not_followed() -> None:
    gre_s = {"seqnum_present": 1, "sequence_number": 1}
    d = _decode([
        Ether() / IP(**OUTER) / GRE(proto=0x88BE) / ERSPAN_I() / Raw(INNER),  # type I
        Ether() / IP(**OUTER) / GRE(proto=0x6558) / Raw(INNER),  # GRETAP without S
        # routed GRE with S: the packet stays at its capture point, no mirror session
        Ether() / IP(**OUTER) / GRE(proto=0x0800, **gre_s) / IP(src="172.16.0.1")
        / UDP() / Raw(b"x" * 20),
    ])
    assert d.sequence_gaps() == {}


def test_erspan_iii_and_gretap_with_key_and_checksum() -> None:
    """The sequence number follows whichever of checksum and key are present."""
    iii = [Ether() / IP(**OUTER) / GRE(proto=0x22EB, seqnum_present=1, sequence_number=n)
           / ERSPAN_III(session_id=3) / Raw(INNER) for n in (1, 2, 4, 8)]
    tap = [Ether() / IP(**OUTER) / GRE(proto=0x6558, chksum_present=1, key_present=1, key=77,
                                       seqnum_present=1, sequence_number=n) / Raw(INNER)
           for n in (40, 41, 43)]
    d = _decode(iii + tap)
    assert d.sequence_gaps() == {"erspan/198.18.0.1/s3": SequenceGaps(lost=4, resets=0),
                                 "gretap/198.18.0.1/k77": SequenceGaps(lost=1, resets=0)}


def test_counting_does_not_depend_on_the_batching() -> None:
    numbers = [1, 2, 3, 7, 8, 6, 9, 20, 3, 4, 10, 200, 201]  # 6, 3, 4, 10: late; 200 ahead
    whole = _decode([_erspan2(n) for n in numbers])
    one_by_one = Decoder()
    for n in numbers:
        _decode([_erspan2(n)], one_by_one)
    assert one_by_one.sequence_gaps() == whole.sequence_gaps() == {
        "erspan/198.18.0.1/s7": SequenceGaps(lost=3 + 10 + 179, resets=4)}


@given(st.integers(0, 2**32 - 1), st.lists(st.booleans(), min_size=1, max_size=300))
def test_loss_is_what_the_exporter_numbered_and_the_probe_missed(
        start: int, kept: list[bool]) -> None:
    """In order, with wrap: lost = the numbers between the first and the last copy seen
    that never arrived; no resets."""
    seen = [(start + k) % 2**32 for k, keep in enumerate(kept) if keep]
    tracker = GreSequences(DecodeCounters())
    pid = point_id("erspan/198.18.0.9/s1", remote=True)
    for n in seen:
        tracker.observe(pid, n)
    if not seen:
        assert tracker.gaps() == {}
        return
    first = kept.index(True)
    last = len(kept) - 1 - kept[::-1].index(True)
    assert tracker.gaps() == {"erspan/198.18.0.9/s1": SequenceGaps(
        lost=(last - first + 1) - len(seen), resets=0)}


def test_late_copies_and_restarts() -> None:
    tracker = GreSequences(DecodeCounters())
    pid = point_id("erspan/198.18.0.9/s2", remote=True)
    for n in (1000, 1001, 1001 - REORDER_WINDOW, 1002,  # late: goes on from 1001
              1002 - REORDER_WINDOW - 1, 939):  # a restart at 937, then 1 lost
        tracker.observe(pid, n)
    assert tracker.gaps()["erspan/198.18.0.9/s2"] == SequenceGaps(lost=1, resets=2)


def test_sessions_are_bounded_and_other_is_not_followed() -> None:
    counters = DecodeCounters()
    tracker = GreSequences(counters, limit=3)
    for k in range(10):
        pid = point_id(f"erspan/198.18.1.{k}", remote=True)
        for n in (1, 3):
            tracker.observe(pid, n)
    other = point_id(OTHER_POINT)
    for n in (1, 50, 2):
        tracker.observe(other, n)
    assert len(tracker) == 3 and counters.sequence_lost == 3
    assert set(tracker.gaps()) == {f"erspan/198.18.1.{k}" for k in range(3)}
