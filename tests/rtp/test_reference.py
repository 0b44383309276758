"""STANDARDS.md RTP vectors and the semantics of agent/rtp/reference.py."""

from __future__ import annotations

import pytest

from agent.rtp.model import StreamKey
from agent.rtp.payload_types import PayloadKind
from agent.rtp.reference import ReferenceStream, RtpPacket
from agent.rtp.rules import StreamMeta

KEY = StreamKey(0, 0xFFFF0A000001, 4000, 0, 0xFFFF0A000002, 5000, 0x1234)


def run(seqs: list[int], clock: int | None = 8000, **kw: object) -> ReferenceStream:
    ref = ReferenceStream(StreamMeta(KEY, "g711U", clock))
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
    ref = ReferenceStream(StreamMeta(KEY, "g711U", 8000))
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
    ref = ReferenceStream(StreamMeta(KEY, "g711U", 8000))
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
    ref = ReferenceStream(StreamMeta(KEY, "g711A", 8000))
    for i in range(5):
        ref.add(RtpPacket(10.0 + 0.02 * i, seq=i, ts=160 * i, pt=8))
    for i in range(5, 10):  # timestamps jump by 40 s while the wall clock moves 20 ms
        ref.add(RtpPacket(10.0 + 0.02 * i, seq=i, ts=160 * i + 320000, pt=8))
    st = ref.stats()
    assert st.jitter_max_ms == pytest.approx(0.0, abs=1e-9)
