"""Jitter-buffer emulation and ptime: exact small cases, in both implementations."""

from __future__ import annotations

import numpy as np
import pytest

from agent.media.payloads import PayloadKind
from agent.rtp.batch import BatchStats
from agent.rtp.columns import RtpColumns
from agent.rtp.jbuffer import segmented_min
from agent.rtp.model import StreamKey, StreamStats
from agent.rtp.reference import ReferenceStream, RtpPacket
from agent.rtp.rules import JitterBufferSpec, StreamMeta

KEY = StreamKey(0, 1, 4000, 0, 2, 5000, 0x1234)
T0 = 1_700_000_000.0
FIXED20 = JitterBufferSpec("fixed", fixed_ms=20.0)


def both(pkts: list[RtpPacket], spec: JitterBufferSpec, clock: int | None = 8000,
         batch: int = 7) -> StreamStats:
    """Statistics from the reference; the batch twin (batches of ``batch`` rows) must agree."""
    meta = StreamMeta(KEY, "PCMU", clock)
    ref = ReferenceStream(meta, spec)
    for p in pkts:
        ref.add(p)
    ref.finish()
    bs = BatchStats(jb=spec)
    sid = bs.open(meta)
    for lo in range(0, len(pkts), batch):
        chunk = pkts[lo : lo + batch]
        bs.update(RtpColumns.build(
            [sid] * len(chunk), [p.arrival_s for p in chunk], [p.seq for p in chunk],
            [p.ts for p in chunk], [p.pt for p in chunk], [p.marker for p in chunk],
            [int(p.kind) for p in chunk]))
    a, b = ref.stats(), bs.close(sid)
    for name in ("jb_model", "jb_packets", "jb_discarded", "ptime_ms", "packets"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("jb_mean_delay_ms", "jb_max_delay_ms", "jitter_ms"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-9, abs=1e-9), name
    return a


def g711(n: int, late_ms: dict[int, float] | None = None, step: int = 160, seq0: int = 100,
         ts0: int = 5000, ptime_s: float = 0.02) -> list[RtpPacket]:
    late = late_ms or {}
    return [RtpPacket(T0 + ptime_s * i + late.get(i, 0.0) / 1000, (seq0 + i) % 65536,
                      (ts0 + step * i) % (1 << 32), 0) for i in range(n)]


def test_fixed_buffer_discards_a_packet_later_than_its_size() -> None:
    st = both(g711(10, {3: 10.0, 6: 30.0}), FIXED20)
    assert (st.jb_model, st.jb_nominal_ms, st.jb_max_ms) == ("fixed", 20.0, 20.0)
    assert (st.jb_packets, st.jb_discarded) == (10, 1)
    # eight packets wait the full 20 ms, the one 10 ms late waits 10 ms
    assert st.jb_mean_delay_ms == pytest.approx((8 * 20 + 10) / 9, abs=1e-3)
    assert st.jb_max_delay_ms == pytest.approx(20.0, abs=1e-3)


def test_early_packet_lowers_the_base() -> None:
    # every packet 5 ms late except the first: the base is the first, all wait 15 ms
    st = both(g711(6, {i: 5.0 for i in range(1, 6)}), FIXED20)
    assert st.jb_discarded == 0
    assert st.jb_mean_delay_ms == pytest.approx((20 + 5 * 15) / 6, abs=1e-3)


def test_slow_drift_over_a_minute_discards_nothing() -> None:
    # the sender's clock runs 0.2 % slow: 120 ms over 60 s; a buffer anchored on the first
    # packet would drop the second half, the two-block window (~20 s) never falls behind
    pkts = g711(3000, ptime_s=0.02 * 1.002)
    st = both(pkts, JitterBufferSpec("fixed", fixed_ms=60.0), batch=997)
    assert (st.jb_packets, st.jb_discarded) == (3000, 0)
    # the base is at most two blocks (1024 packets x 40 us = 41 ms of drift) old
    assert 60.0 - 41.0 < st.jb_mean_delay_ms < 60.0 - 20.0


def test_adaptive_target_clamped_to_min_and_max() -> None:
    spec = JitterBufferSpec("adaptive", adaptive_min_ms=20.0, adaptive_max_ms=30.0, adaptive_k=4)
    steady = both(g711(50, {30: 25.0}), spec)  # J ~ 0: target is the 20 ms floor
    assert (steady.jb_nominal_ms, steady.jb_max_ms) == (20.0, 30.0)
    assert steady.jb_discarded == 1 and steady.jb_max_delay_ms == pytest.approx(20.0)
    # every other packet 25 ms late: 4 J exceeds 30 ms quickly, the target stays at 30
    shaky = both(g711(60, {i: 25.0 for i in range(1, 60, 2)}), spec)
    assert shaky.jitter_ms * 4 > 30.0
    assert shaky.jb_max_delay_ms == pytest.approx(30.0)
    assert 0 < shaky.jb_discarded < 10  # only while J was still small


def test_duplicates_events_and_cn_are_not_offered() -> None:
    pkts = g711(10)
    pkts.insert(4, pkts[3])  # duplicate
    pkts.append(RtpPacket(T0 + 0.2, 110, 5000 + 1600, 101, kind=PayloadKind.TELEPHONE_EVENT))
    pkts.append(RtpPacket(T0 + 0.22, 111, 5000 + 1760, 13, kind=PayloadKind.COMFORT_NOISE))
    st = both(pkts, FIXED20)
    assert (st.packets, st.jb_packets, st.jb_discarded) == (13, 10, 0)


def test_no_clock_no_emulation_no_ptime() -> None:
    st = both(g711(10), FIXED20, clock=None)
    assert (st.jb_model, st.jb_packets, st.jb_nominal_ms, st.ptime_ms) == ("none", 0, 0.0, None)
    none = both(g711(10), JitterBufferSpec("none"))
    assert (none.jb_model, none.jb_packets, none.ptime_ms) == ("none", 0, 20.0)


def test_ptime_is_the_most_common_step_of_consecutive_numbers() -> None:
    pkts = g711(30, step=240, ptime_s=0.03)  # 30 ms at 8 kHz
    del pkts[10:12]  # a loss: the 720-unit step over it does not count
    st = both(pkts, FIXED20)
    assert st.ptime_ms == 30.0
    assert both(g711(20, step=960), FIXED20, clock=48000).ptime_ms == 20.0


def test_restart_and_timestamp_jump_resynchronise() -> None:
    # a restart (new seq and ts base) and a sender that froze its clock for 5 s of silence:
    # transit jumps, the buffer resynchronises instead of dropping everything after
    pkts = g711(20)
    pkts += g711(20, seq0=40000, ts0=123456789)
    pkts = [RtpPacket(p.arrival_s + (0.4 if i >= 20 else 0.0), p.seq, p.ts, 0)
            for i, p in enumerate(pkts)]
    frozen = g711(40, seq0=1000)
    frozen = [RtpPacket(p.arrival_s + (5.0 if i >= 20 else 0.0), p.seq, p.ts, 0)
              for i, p in enumerate(frozen)]
    for case in (pkts, frozen):
        st = both(case, FIXED20, batch=3)
        assert (st.jb_packets, st.jb_discarded) == (40, 0)


def test_segmented_min_both_paths() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-(1 << 20), 1 << 20, 500)
    gid = np.sort(rng.integers(0, 40, 500))
    gid = np.unique(gid, return_inverse=True)[1]
    expect = x.copy()
    for i in range(1, x.size):
        if gid[i] == gid[i - 1]:
            expect[i] = min(expect[i - 1], x[i])
    assert (segmented_min(x, gid) == expect).all()
    huge = x.copy()
    huge[::7] = 1 << 60  # spread too wide for offsets: the rank path
    huge[1] = -(1 << 60)
    expect_huge = huge.copy()
    for i in range(1, x.size):
        if gid[i] == gid[i - 1]:
            expect_huge[i] = min(expect_huge[i - 1], huge[i])
    assert (segmented_min(huge, gid) == expect_huge).all()
