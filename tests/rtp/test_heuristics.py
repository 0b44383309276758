"""Heuristic RTP detection: only real RTP streams come out of mixed UDP traffic."""

from __future__ import annotations

import random
import struct

import numpy as np
from framesbuild import Row, build_frames, g711_stream, rtp
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.media.payloads import PayloadInfo, PayloadKind
from agent.rtp.tracker import _BAD, _UNDECIDED, _VALID, StreamTracker, TrackerConfig

T0 = 1_700_000_000.0


def dns(rng: random.Random, t: float, i: int) -> list[Row]:
    qid = rng.randrange(65536)
    name = b"\x03www\x07example\x03com\x00"
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1) + name + b"\x00\x01\x00\x01"
    a = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + name + b"\x00\x01\x00\x01" + \
        b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\x5d\xb8\xd8\x22"
    port = 30000 + i % 7
    return [(t, "10.0.0.5", port, "10.0.0.53", 53, q),
            (t + 0.01, "10.0.0.53", 53, "10.0.0.5", port, a)]


def quic(rng: random.Random, t: float, i: int) -> list[Row]:
    long_hdr = bytes([0xC3]) + b"\x00\x00\x00\x01" + bytes([8]) + rng.randbytes(8) + \
        bytes([0]) + rng.randbytes(1200 - 15)
    short = bytes([0x40 | rng.randrange(64)]) + rng.randbytes(rng.randint(38, 1300))
    return [(t, "10.0.0.6", 51000, "142.250.1.1", 443, long_hdr if i < 3 else short),
            (t + 0.005, "142.250.1.1", 443, "10.0.0.6", 51000, short)]


def ntp(rng: random.Random, t: float, i: int) -> list[Row]:
    req = bytes([0x23, 0, 6, 0xEC]) + bytes(36) + struct.pack("!II", int(t) + 2208988800, i)
    resp = bytes([0x24, 2, 6, 0xE9]) + rng.randbytes(44)
    return [(t, "10.0.0.7", 123, "10.0.0.123", 123, req),
            (t + 0.02, "10.0.0.123", 123, "10.0.0.7", 123, resp)]


def syslog(rng: random.Random, t: float, i: int) -> list[Row]:
    msg = f"<34>Oct 11 22:14:{i % 60:02d} host su: 'su root' failed for user{i} on /dev/pts/8"
    return [(t, "10.0.0.8", 40514, "10.0.0.9", 514, msg.encode())]


def noise(rng: random.Random, t: float, i: int) -> list[Row]:
    return [(t, "10.0.1.1", rng.randrange(1024, 65536), "10.0.1.2", rng.randrange(1024, 65536),
             rng.randbytes(rng.randint(1, 400)))]


def fixed_noise(rng: random.Random, t: float, i: int) -> list[Row]:
    # random payloads on one fixed 5-tuple (a VPN/game flow): SSRC differs every packet
    return [(t, "10.0.2.1", 40000, "10.0.2.2", 40002, bytes([0x80]) + rng.randbytes(171))]


def test_only_rtp_streams_come_out() -> None:
    rng = random.Random(1)
    rows: list[Row] = []
    for i in range(300):
        t = T0 + 0.02 * i
        for gen in (dns, quic, ntp, syslog, noise, noise, fixed_noise):
            rows += gen(rng, t, i)
    rows += g711_stream(T0 + 0.003, "10.0.0.10", 16000, "10.0.0.20", 20000, 0xAAAA, 300)
    rows += g711_stream(T0 + 0.007, "10.0.0.20", 20000, "10.0.0.10", 16000, 0xBBBB, 300, pt=0)
    rows.sort(key=lambda r: r[0])
    tracker = StreamTracker(TrackerConfig(max_candidates=200))
    for lo in range(0, len(rows), 1000):
        tracker.feed(build_frames(rows[lo : lo + 1000]))
    out = tracker.finish()
    assert [(s.key.ssrc, s.packets, s.lost, s.codec) for s in out] == [
        (0xAAAA, 300, 0, "PCMA"), (0xBBBB, 300, 0, "PCMU")]
    assert out[0].key.src == "10.0.0.10:16000" and out[0].dscp == {46: 300}
    assert tracker.counters.not_rtp > 1000
    assert tracker.counters.candidates_evicted > 0


def test_ssrc_change_on_same_five_tuple() -> None:
    rows = g711_stream(T0, "10.0.0.1", 4000, "10.0.0.2", 5000, 0x1111, 50)
    rows += g711_stream(T0 + 1.0, "10.0.0.1", 4000, "10.0.0.2", 5000, 0x2222, 50, seq0=9)
    tracker = StreamTracker()
    tracker.feed(build_frames(rows))
    a, b = tracker.finish()
    assert (a.key.ssrc, a.packets, a.previous_ssrc) == (0x1111, 50, None)
    assert (b.key.ssrc, b.packets, b.previous_ssrc, b.expected) == (0x2222, 50, 0x1111, 50)


def test_counts_from_first_packet_across_batches() -> None:
    rows = g711_stream(T0, "10.0.0.1", 4000, "10.0.0.2", 5000, 0x1111, 20)
    tracker = StreamTracker()
    for r in rows:  # one packet per batch: probation spans batches
        tracker.feed(build_frames([r]))
    (s,) = tracker.finish()
    assert (s.packets, s.expected, s.lost, s.first_ts) == (20, 20, 0, T0)


def test_dtmf_detected_without_sdp_and_with_hint() -> None:
    rows = g711_stream(T0, "10.0.0.1", 4000, "10.0.0.2", 5000, 0x1111, 20)
    seq, ts = 1020, 5000 + 160 * 20
    for k, end in enumerate([False, False, True, True, True]):
        ev = bytes([5, (0x80 if end else 0) | 10]) + struct.pack("!H", 160 * (k + 1))
        rows.append((T0 + 0.4 + 0.02 * k, "10.0.0.1", 4000, "10.0.0.2", 5000,
                     rtp(seq + min(k, 2), ts, 0x1111, pt=101, marker=k == 0, payload=ev)))
    rows += [(T0 + 0.5 + 0.02 * i, "10.0.0.1", 4000, "10.0.0.2", 5000,
              rtp(1023 + i, ts + 800 + 160 * i, 0x1111, pt=8)) for i in range(10)]
    for hints in (None, {101: PayloadInfo("telephone-event", 8000, PayloadKind.TELEPHONE_EVENT)}):
        tracker = StreamTracker(pt_hints=hints)
        tracker.feed(build_frames(rows))
        (s,) = tracker.finish()
        assert (s.packets, s.telephone_event_packets, s.duplicates, s.lost) == (35, 5, 2, 0)
        assert s.payload_types == (8, 101) and s.jitter_max_ms < 0.01


def test_dynamic_pt_clock_estimated() -> None:
    rows = [(T0 + 0.02 * i, "10.0.0.1", 4000, "10.0.0.2", 5000,
             rtp(i, 960 * i, 0x3333, pt=111, payload=b"\x01" * 60)) for i in range(50)]
    tracker = StreamTracker()
    tracker.feed(build_frames(rows))
    (s,) = tracker.finish()
    assert (s.clock_rate, s.clock_rate_estimated, s.codec) == (48000, True, None)


def test_stream_opening_with_a_multi_packet_frame_counts_from_its_first_packet() -> None:
    # Video: a frame spans several packets sharing one timestamp (marker on the last),
    # so probation must wait for the timestamp to advance instead of dropping them.
    rows: list[Row] = []
    for frame in range(6):
        for k in range(5):
            seq = 100 + frame * 5 + k
            pkt = rtp(seq, 90000 + 3000 * frame, 0x2222, pt=96, marker=k == 4,
                      payload=b"\x00" * 900)
            rows.append((T0 + frame * 0.033 + k * 0.0005, "10.0.0.1", 4000, "10.0.0.2", 5000, pkt))
    tracker = StreamTracker()
    tracker.feed(build_frames(rows))
    (s,) = tracker.finish()
    assert (s.packets, s.expected, s.lost, s.first_ts) == (30, 30, 0, T0)
    assert s.clock_rate == 90000 and s.clock_rate_estimated


def test_a_counter_that_never_advances_a_timestamp_is_not_rtp() -> None:
    # version-2 looking bytes, fixed "SSRC", a +1 counter, constant "timestamp": held up to
    # max_probation_hold, then rejected; nothing comes out.
    rows = [(T0 + i * 0.01, "10.0.0.1", 4000, "10.0.0.2", 5000,
             rtp(7 + i, 1234, 0x3333, pt=0, payload=b"\x01" * 40)) for i in range(60)]
    tracker = StreamTracker()
    tracker.feed(build_frames(rows))
    assert tracker.finish() == []
    assert tracker.counters.candidates_rejected > 0


def test_five_tuple_memory_is_capped() -> None:
    tracker = StreamTracker(TrackerConfig(max_streams=5))
    for i in range(40):
        rows = g711_stream(T0 + i, "10.0.0.1", 4000 + i, "10.0.0.2", 5000, 0x100 + i, 6)
        tracker.feed(build_frames(rows))
    assert len(tracker._by_tuple) <= 5 and len(tracker.streams()) <= 5
    assert tracker.counters.streams_evicted == 35


def test_lone_packets_held_across_batches_open_the_same_streams() -> None:
    # every key has one packet per batch (a flood's shape), held as a lone-packet
    # candidate until the next batch continues it: same streams as fed at once
    rows = sorted(g711_stream(T0, "10.0.0.1", 4000, "10.0.0.2", 5000, 0x1111, 12)
                  + g711_stream(T0 + 0.005, "10.0.0.3", 4002, "10.0.0.2", 5002, 0x2222, 12,
                                pt=0))
    whole = StreamTracker()
    whole.feed(build_frames(rows))
    lone = StreamTracker()
    for a in range(0, len(rows), 2):
        lone.feed(build_frames(rows[a:a + 2]))
    got, want = lone.finish(), whole.finish()
    assert [s.to_json() for s in got] == [s.to_json() for s in want]
    assert [(s.key.ssrc, s.packets, s.first_ts) for s in got] == [(0x1111, 12, T0),
                                                                   (0x2222, 12, T0 + 0.005)]


def test_idle_lone_candidates_are_expired_and_counted() -> None:
    tracker = StreamTracker(TrackerConfig(idle_timeout_s=5.0, max_candidates=3))
    for i in range(5):  # five lone packets, the table holds three
        tracker.feed(build_frames([(T0 + i, "10.0.0.1", 4000 + i, "10.0.0.2", 5000,
                                    rtp(7 * i, 0, 0x100 + i))]))
    assert tracker.counters.candidates_evicted == 2
    assert min(t for t, _ in tracker.due_by(T0 + 9.0)) == T0 + 2 + 5.0  # the oldest kept
    assert tracker.expire(T0 + 8.5) == []
    assert tracker.counters.candidates_expired == 2
    tracker.finish()
    assert tracker.counters.candidates_unvalidated == 1


def _numpy_verdict(cfg: TrackerConfig, seq: np.ndarray, ts: np.ndarray, like: np.ndarray
                   ) -> int:
    """The probation verdict as first written, on numpy columns (the twin of
    `StreamTracker._probation_verdict`, which takes lists)."""
    rel = ((seq - seq[0] + 32768) % 65536) - 32768
    order = np.argsort(rel, kind="stable")
    dseq = np.diff(rel[order])
    tsr = ((ts - ts[0] + (1 << 31)) % (1 << 32)) - (1 << 31)
    dts = np.diff(tsr[order])
    bad = (dseq > cfg.max_probation_step) | (dts < 0)
    bad |= (dts > cfg.max_probation_ts_step) | ((dseq == 0) & (dts != 0))
    if bad.any():
        return _BAD
    if len(seq) < cfg.probation_packets:
        return _UNDECIDED
    if not (dseq > 0).any() or (not like.all() and not (dts > 0).any()):
        return _UNDECIDED if len(seq) < cfg.max_probation_hold else _BAD
    return _VALID


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 65535), st.integers(0, (1 << 32) - 1), st.booleans()),
                min_size=1, max_size=20),
       st.integers(-3, 3), st.integers(0, 65535), st.integers(0, (1 << 32) - 1))
def test_probation_verdict_matches_its_numpy_twin(
        raw: list[tuple[int, int, bool]], step: int, seq0: int, ts0: int) -> None:
    # mostly near-stream windows (small steps from a start, wrapping), some random ones
    rows = raw if step == 0 else [((seq0 + step * i + (q & 3)) % 65536,
                                   (ts0 + 160 * i * (q & 1)) % (1 << 32), e)
                                  for i, (q, _, e) in enumerate(raw)]
    seq, ts, like = (list(c) for c in zip(*rows, strict=True))
    tracker = StreamTracker()
    want = _numpy_verdict(tracker.config, np.array(seq, np.int64), np.array(ts, np.int64),
                          np.array(like, bool))
    assert tracker._probation_verdict(seq, ts, like) == want
