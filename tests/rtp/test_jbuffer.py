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
from agent.rtp.rules import JB_RESYNC_LATE, JitterBufferSpec, StreamMeta

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


def test_slow_drift_costs_a_fixed_buffer_a_resync_not_the_rest_of_the_call() -> None:
    # the sender's clock runs 0.2 % slow: 120 ms over 60 s. A buffer anchored for good on
    # the first packet would drop the second half; this one re-anchors after
    # JB_RESYNC_LATE late packets in a row, each time the drift has used up its 60 ms
    pkts = g711(3000, ptime_s=0.02 * 1.002)
    st = both(pkts, JitterBufferSpec("fixed", fixed_ms=60.0), batch=997)
    assert st.jb_packets == 3000
    # 40 us more per packet: 60 ms are used up at packet 1500, and not again before 3000
    assert st.jb_discarded == JB_RESYNC_LATE - 1
    assert 60.0 - 31.0 < st.jb_mean_delay_ms < 60.0 - 29.0  # waits spread over 60..0 ms
    adaptive = both(pkts, JitterBufferSpec("adaptive"), batch=997)
    assert adaptive.jb_discarded == 0  # it stretches its playout instead


def test_adaptive_target_clamped_and_late_packets_stretch_the_playout() -> None:
    spec = JitterBufferSpec("adaptive", adaptive_min_ms=20.0, adaptive_max_ms=30.0, adaptive_k=4)
    # J ~ 0: the target is the 20 ms floor; a packet 25 ms late in sequence order is not
    # lost, the buffer re-anchors on it (it is played with the full target wait)
    steady = both(g711(50, {30: 25.0}), spec)
    assert (steady.jb_nominal_ms, steady.jb_max_ms) == (20.0, 30.0)
    assert steady.jb_discarded == 0 and steady.jb_max_delay_ms == pytest.approx(20.0)
    # the same packet arriving after its successor: its slot has been played, discarded
    pkts = g711(50, {30: 25.0})
    swapped = sorted(pkts, key=lambda p: p.arrival_s)
    assert swapped[30].seq == pkts[31].seq  # it now arrives after number 31
    assert both(swapped, spec).jb_discarded == 1
    # every other packet 25 ms late: 4 J exceeds 30 ms quickly, the target stays at 30
    shaky = both(g711(60, {i: 25.0 for i in range(1, 60, 2)}), spec)
    assert shaky.jitter_ms * 4 > 30.0
    assert shaky.jb_max_delay_ms == pytest.approx(30.0)
    assert shaky.jb_discarded == 0


def test_fixed_buffer_resyncs_at_a_talk_spurt_start() -> None:
    # +100 ms from packet 20 on: without a marker, JB_RESYNC_LATE - 1 packets are lost;
    # with the marker bit on packet 20 (a new talk spurt) the buffer re-syncs there
    late = {i: 100.0 for i in range(20, 40)}
    plain = both(g711(40, late), FIXED20)
    assert plain.jb_discarded == JB_RESYNC_LATE - 1
    spurt = [RtpPacket(p.arrival_s, p.seq, p.ts, 0, marker=i == 20)
             for i, p in enumerate(g711(40, late))]
    assert both(spurt, FIXED20).jb_discarded == 0


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


# -- issue 8: clean streams with steps lose (almost) nothing; bursty jitter still does -----

N_STEPS = 3000  # 60 s of G.711 at 20 ms


def stepped(seed: int, *, delay_step_ms: float = 0.0, ts_steps: tuple[int, ...] = (),
            dtmf_every: int = 0, drift_ppm: float = 0.0, jitter_ms: float = 2.0,
            n: int = N_STEPS) -> list[RtpPacket]:
    """A lossless G.711 stream: 0..``jitter_ms`` random network delay, a permanent
    ``delay_step_ms`` at packet n/3, sender timestamp offsets changing by ``ts_steps``
    (RTP units) at packets n/4, 2n/4, ... , RFC 4733 events (10 packets of the same SSRC,
    in sequence, instead of audio) every ``dtmf_every`` packets with the audio's timestamp
    one frame further ahead after each, and the sender's clock off by ``drift_ppm``."""
    rng = np.random.default_rng(seed)
    out: list[RtpPacket] = []
    ts_off = 0
    steps = {n * (i + 1) // (len(ts_steps) + 1): s for i, s in enumerate(ts_steps)}
    k = 0
    while k < n:
        ts_off += steps.get(k, 0)
        send = T0 + k * 0.02 * (1 + drift_ppm * 1e-6)
        delay = rng.uniform(0.0, jitter_ms) + (delay_step_ms if k >= n // 3 else 0.0)
        if dtmf_every and k and k % dtmf_every == 0:  # an event of 200 ms: 10 packets
            for e in range(10):
                out.append(RtpPacket(send + e * 0.02 + delay / 1000, (k + e) % 65536,
                                     (160 * k + ts_off) % (1 << 32), 101,
                                     kind=PayloadKind.TELEPHONE_EVENT))
            k += 10
            ts_off += 160  # the sender's audio clock resumes one frame ahead
            continue
        out.append(RtpPacket(send + delay / 1000, k % 65536, (160 * k + ts_off) % (1 << 32),
                             0, marker=k == 0))
        k += 1
    return sorted(out, key=lambda p: p.arrival_s)


CLEAN_CASES = {
    "delay_step_up_150": {"delay_step_ms": 150.0},
    "delay_step_down_150": {"delay_step_ms": -150.0},
    "ts_steps_20ms": {"ts_steps": (160, -160, 160)},
    "ts_steps_minus_20ms": {"ts_steps": (-160, 160, -160)},
    "dtmf_frame_steps": {"dtmf_every": 250},
    "drift_plus_100ppm": {"drift_ppm": 100.0},
    "drift_minus_100ppm": {"drift_ppm": -100.0},
}


@pytest.mark.parametrize("model", ["fixed", "adaptive"])
@pytest.mark.parametrize("case", sorted(CLEAN_CASES))
def test_clean_stream_with_steps_keeps_its_packets_and_its_mos(case: str, model: str) -> None:
    from agent.calls.judge import quality_of
    from agent.config import Config

    spec = JitterBufferSpec(model)  # fixed 60 ms, adaptive 20-200 ms, k = 4
    st = both(stepped(5, **CLEAN_CASES[case]), spec, batch=97)
    assert st.lost == 0 and st.jb_packets >= N_STEPS * 0.95
    assert st.jb_discarded <= 0.01 * st.jb_packets, st.jb_discarded
    if model == "adaptive":
        assert st.jb_discarded == 0  # it stretches its playout, it never drops in-order audio
    cfg = Config.model_validate({"quality": {"jitter_buffer": {"model": model}}})
    q = quality_of(st, None, cfg)
    assert q.mos_cq >= 4.0, (case, model, q.mos_cq)


def test_bursty_jitter_still_costs_a_fixed_buffer_packets() -> None:
    # +-80 ms around the mean: the fixed 60 ms buffer must drop a good share; the emulation
    # is not switched off by its re-anchoring
    st = both(stepped(9, jitter_ms=160.0), JitterBufferSpec("fixed"), batch=97)
    assert st.lost == 0
    assert st.jb_discarded > 0.10 * st.jb_packets, st.jb_discarded
    big = both(stepped(9, jitter_ms=160.0), JitterBufferSpec("fixed", fixed_ms=200.0), batch=97)
    assert big.jb_discarded == 0  # a buffer deeper than the spread loses nothing


@pytest.mark.parametrize("seed", range(8))
def test_replayed_streams_equal_the_reference_at_any_cut(seed: int) -> None:
    """Reordering, loss (gaps), steps and marker bits send streams through the per-packet
    replay of the batch path from varying rows; every cut gives the reference's figures."""
    from test_equivalence import assert_same, run_both

    rng = np.random.default_rng(100 + seed)
    kw = [{"jitter_ms": 160.0}, {"delay_step_ms": -150.0}, {"delay_step_ms": 150.0},
          {"ts_steps": (-160, 480)}][seed % 4]
    streams = []
    for k in range(3):
        pkts = [p for p in stepped(seed * 3 + k, n=400, dtmf_every=97 if k else 0, **kw)
                if rng.random() > 0.03]  # 3 % loss: gaps the max skips
        streams.append([RtpPacket(p.arrival_s, p.seq, p.ts, p.pt, marker=rng.random() < 0.02,
                                  kind=p.kind) for p in pkts])
    cuts = sorted(rng.integers(0, 1200, 25).tolist())
    for spec in (JitterBufferSpec("fixed", fixed_ms=40.0), JitterBufferSpec("adaptive")):
        refs, got = run_both(streams, cuts, [8000] * 3, spec)
        if seed % 4 == 0 and spec.model == "fixed":
            assert all(r.jb_discarded > 20 for r in refs)  # the emulation really ran
        for a, b in zip(refs, got, strict=True):
            assert_same(a, b)
