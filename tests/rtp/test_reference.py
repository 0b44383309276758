"""STANDARDS.md RTP vectors and the semantics of agent/rtp/reference.py."""

from __future__ import annotations

import pytest
import synth

from agent.media.payloads import PayloadKind
from agent.rtp.model import StreamKey
from agent.rtp.reference import ReferenceStream, RtpPacket
from agent.rtp.rules import HOLE_WINDOW, StreamMeta

KEY = StreamKey(0, 0xFFFF0A000001, 4000, 0, 0xFFFF0A000002, 5000, 0x1234)


def run(seqs: list[int], clock: int | None = 8000, **kw: object) -> ReferenceStream:
    ref = ReferenceStream(StreamMeta(KEY, "PCMU", clock))
    for i, s in enumerate(seqs):
        ref.add(RtpPacket(arrival_s=1000.0 + 0.02 * i, seq=s, ts=160 * i, pt=0))
    ref.finish()
    return ref


def test_loss_vector() -> None:
    st = run([100, 101, 102, 104, 105, 108, 109, 110]).stats()
    assert (st.packets, st.expected, st.lost, st.duplicates, st.reordered) == (8, 11, 3, 0, 0)
    assert (st.loss_bursts, st.loss_burst_max, st.loss_burst_mean, st.max_seq_gap) == (2, 2, 1.5, 3)


def test_wrap_duplicate_reorder_vector() -> None:
    st = run([65533, 65534, 65535, 0, 2, 1, 2, 5, 6]).stats()
    assert (st.packets, st.expected, st.lost) == (9, 10, 2)
    assert (st.duplicates, st.reordered, st.seq_wraps, st.restarts) == (1, 1, 1, 0)
    assert (st.loss_bursts, st.loss_burst_max) == (1, 2)


def test_jitter_vector() -> None:
    ref = ReferenceStream(StreamMeta(KEY, "PCMU", 8000))
    expected_units = [0, 0, 0.5, 1.469, 1.877, 4.260, 6.493, 6.088]
    for i, ms in enumerate([0, 20, 41, 59, 80, 105, 120, 140]):
        ref.add(RtpPacket(arrival_s=5000.0 + ms / 1000, seq=10 + i, ts=160 * i, pt=0))
        assert ref.jitter_s * 8000 == pytest.approx(expected_units[i], abs=1e-3)
    st = ref.stats()
    assert st.jitter_ms == pytest.approx(0.761, abs=1e-3)
    assert st.jitter_max_ms == pytest.approx(6.493 / 8, abs=1e-3)
    # mean over the 7 packets that have a predecessor (Wireshark's definition)
    assert st.jitter_mean_ms == pytest.approx(sum(expected_units[1:]) / 7 / 8, abs=1e-3)
    assert st.max_delta_ms == pytest.approx(25.0, abs=1e-6)


def test_restart_is_a_new_segment() -> None:
    # RFC 3550 A.1: a large jump confirmed by the next packet (bad_seq) re-initialises.
    st = run([10, 11, 12, 14, 40000, 40001, 40002]).stats()
    assert st.restarts == 1
    assert st.expected == 5 + 3 and st.lost == 1 and st.packets == 7


def test_unconfirmed_jump_is_a_stray() -> None:
    st = run([10, 11, 12, 40000, 13, 14]).stats()
    assert st.restarts == 0 and st.packets == 6
    assert st.expected == 5 and st.lost == 0


def test_stray_at_the_end() -> None:
    st = run([10, 11, 12, 40000]).stats()
    assert st.packets == 4 and st.expected == 3 and st.restarts == 0


def test_events_and_cn_excluded_from_jitter() -> None:
    ref = ReferenceStream(StreamMeta(KEY, "PCMU", 8000))
    t = 100.0
    for i in range(10):
        ref.add(RtpPacket(t + 0.02 * i, seq=i, ts=160 * i, pt=0))
    # DTMF: 3 packets sharing the onset timestamp, end packet sent 3 times (same seq)
    for j, seq in enumerate([10, 11, 12, 12, 12]):
        ref.add(RtpPacket(t + 0.2 + 0.05 * j, seq=seq, ts=1600, pt=101,
                          kind=PayloadKind.TELEPHONE_EVENT))
    ref.add(RtpPacket(t + 0.46, seq=13, ts=160 * 23, pt=0, marker=True))
    ref.add(RtpPacket(t + 0.48, seq=14, ts=160 * 24, pt=0))
    ref.finish()
    st = ref.stats()
    assert st.telephone_event_packets == 5 and st.duplicates == 2 and st.lost == 0
    assert st.jitter_max_ms == pytest.approx(0.0, abs=1e-9)
    assert st.max_delta_ms == pytest.approx(20.0, abs=1e-6)


def test_timestamp_discontinuity_not_jitter() -> None:
    ref = ReferenceStream(StreamMeta(KEY, "PCMA", 8000))
    for i in range(5):
        ref.add(RtpPacket(10.0 + 0.02 * i, seq=i, ts=160 * i, pt=8))
    for i in range(5, 10):  # timestamps jump by 40 s while the wall clock moves 20 ms
        ref.add(RtpPacket(10.0 + 0.02 * i, seq=i, ts=160 * i + 320000, pt=8))
    st = ref.stats()
    assert st.jitter_max_ms == pytest.approx(0.0, abs=1e-9)


# -- packets reordered before the first arrival: the base is the lowest number ------------


def counts(seqs: list[int]) -> tuple[int, int, int, int, int]:
    st = run(seqs).stats()
    return st.packets, st.expected, st.lost, st.duplicates, st.reordered


@pytest.mark.parametrize(("seqs", "want"), [
    ([101, 100, 102, 103], (4, 4, 0, 0, 1)),
    ([102, 100, 101, 103], (4, 4, 0, 0, 2)),  # 100 lowers the base, 101 fills its hole
    ([105, 100, 106], (3, 7, 4, 0, 1)),  # 101..104 lost
    ([101, 100, 100, 102], (4, 3, 0, 1, 1)),  # a repeat of the new base is a duplicate
    ([5, 3, 3, 4, 1, 2, 2, 6], (8, 6, 0, 2, 4)),  # lowered twice, both holes filled
    ([200, 101, 150, 102], (4, 100, 96, 0, 3)),  # steps -99, +49, -48: all accepted
])
def test_below_first_lowers_the_base(seqs: list[int], want: tuple[int, ...]) -> None:
    assert counts(seqs) == want


def test_below_first_holes_are_bursts() -> None:
    st = run([105, 100, 106, 102]).stats()
    assert (st.expected, st.lost, st.reordered) == (7, 3, 2)
    assert (st.loss_bursts, st.loss_burst_max, st.max_seq_gap) == (2, 2, 1)  # 101, 103..104


@pytest.mark.parametrize(("seqs", "expected", "lost", "wraps"), [
    ([0, 65535, 1, 2], 4, 0, 1),  # ext -1: the base sits in the cycle before the first
    ([65535, 65534, 0, 1], 4, 0, 1),
    ([1, 65534, 2], 5, 2, 1),  # 65535 and 0 lost, across the wrap
    ([0, 65535, 65534, 65533], 4, 0, 1),  # max never wraps, the base goes back over it
])
def test_below_first_across_the_wrap(seqs: list[int], expected: int, lost: int,
                                     wraps: int) -> None:
    st = run(seqs).stats()
    assert (st.expected, st.lost, st.seq_wraps, st.duplicates, st.restarts) == (
        expected, lost, wraps, 0, 0)
    assert st.reordered == len(seqs) - len(set(seqs)) + sum(
        1 for i in range(1, len(seqs)) if (seqs[i] - seqs[0]) % 65536 > 32768
    )


def walk(top: int, stop: int) -> list[int]:
    """From ``top`` back to ``stop`` or just below, in steps of 49 (under MAX_MISORDER)."""
    return list(range(top, stop - 1, -49))


def test_below_first_within_the_window_lowers() -> None:
    # max 1000; 951 .. 20 are all within HOLE_WINDOW of it, so 69 and 20 lower the base
    seqs = [100, *walk(1000, 20), 1001]
    assert (len(seqs), min(seqs)) == (23, 20)
    st = run(seqs).stats()
    assert (st.expected, st.lost, st.reordered, st.max_seq_gap) == (982, 982 - 23, 20, 900)


def test_below_first_outside_the_window_is_untracked() -> None:
    # max 2100: numbers <= 2100 - HOLE_WINDOW (1076) are untracked, 90 < base included
    seqs = [100, *walk(2100, 90), 2101]
    untracked = sum(1 for q in seqs if q <= 2100 - HOLE_WINDOW and q != 100)
    st = run(seqs).stats()
    assert (untracked, st.expected, st.reordered, st.duplicates) == (21, 2002, 41, 0)
    assert st.lost == 2002 - (len(seqs) - untracked)


def test_below_first_is_a_buffer_packet() -> None:
    ref = ReferenceStream(StreamMeta(KEY, "PCMU", 8000))
    for i, q in enumerate([101, 100, 102, 103, 104]):  # ts follows seq; every 20 ms
        ref.add(RtpPacket(arrival_s=1000.0 + 0.02 * i, seq=q, ts=160 * q, pt=0))
    st = ref.stats()
    assert st.jb_packets == 5 and st.ptime_ms == 20.0  # pairs 102-103, 103-104
    # D: 101->100 is +40 ms, 100->102 is -20 ms, then 0: J = 40/16, then (20 - 2.5)/16 ...
    j = 0.0
    for d in (0.040, 0.020, 0.0, 0.0):
        j += (d - j) / 16
    assert st.jitter_ms == pytest.approx(j * 1000, abs=1e-9)


@pytest.mark.parametrize("jitter_ms", [30.0, 45.0, 60.0])
@pytest.mark.parametrize("start_seq", [1000, 65535, 65534])
def test_synth_start_reordered_by_jitter(jitter_ms: float, start_seq: int) -> None:
    """500 distinct + 30 duplicates, the first packets reordered by 0..jitter_ms delay."""
    dups = frozenset(range(40, 490, 15))
    imp = synth.Impairments(jitter_ms=jitter_ms, jitter_head=True, duplicate_slots=dups)
    reordered_starts = 0
    for seed in range(300):
        s = synth.make_stream(500, ssrc=7, seed=seed, start_seq=start_seq, impair=imp)
        if s.packets[0].ext_seq == start_seq:
            continue  # the first slot arrived first: nothing new to test
        ref = ReferenceStream(StreamMeta(KEY, "PCMU", 8000))
        for p in s.packets:
            ref.add(RtpPacket(p.arrival_ns / 1e9, p.ext_seq % 65536, p.ext_ts % (1 << 32), p.pt,
                              p.marker))
        ref.finish()
        st, t = ref.stats(), s.truth
        assert (st.packets, st.expected, st.lost, st.duplicates) == (530, 500, 0, 30)
        assert (st.reordered, st.seq_wraps) == (t.reordered, t.seq_wraps)
        assert st.reordered >= 1 and st.seq_wraps == (start_seq + 499) // 65536
        assert st.jitter_ms == pytest.approx(t.jitter_ms, abs=1e-3)  # float epoch seconds
        reordered_starts += 1
        if reordered_starts == 3:
            break
    assert reordered_starts == 3
