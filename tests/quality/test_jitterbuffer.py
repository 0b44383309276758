"""Jitter-buffer emulation with synthetic arrivals whose discards are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.quality.jitterbuffer import (
    JITTER_BUFFERS,
    AdaptiveJitterBuffer,
    FixedJitterBuffer,
    create_jitter_buffer,
    media_transit_s,
)

CLOCK = 8000
STEP = 160  # 20 ms at 8 kHz


def stream(extra_delay_ms: list[float], t0: float = 1_700_000_000.0, ts0: int = 1234):
    """Packets every 20 ms; packet i arrives extra_delay_ms[i] late. Returns (arr, ts, seq)."""
    n = len(extra_delay_ms)
    i = np.arange(n)
    arrival = t0 + i * 0.020 + np.asarray(extra_delay_ms) / 1000.0
    ts = (ts0 + i * STEP) % (1 << 32)
    return arrival, ts, i + 1000


def test_fixed_counts_exact_discards() -> None:
    delays = [0, 10, 50, 30, 45, 41, 40, 0, 39.9]
    arr, ts, sq = stream(delays)
    r = FixedJitterBuffer(40.0).emulate(arr, ts, CLOCK, sq)
    assert r.model == "fixed" and r.packets == 9
    assert r.discarded == 3  # 50, 45, 41; exactly 40 is on time
    assert r.late_ratio == pytest.approx(3 / 9)
    played = [40 - d for d in delays if d <= 40]
    assert r.mean_buffer_delay_ms == pytest.approx(np.mean(played), abs=1e-3)
    assert r.max_buffer_delay_ms == pytest.approx(40.0, abs=1e-3)
    assert r.describe() == "fixed 40 ms"


def test_fixed_anchor_on_delayed_first_packet() -> None:
    # First packet 30 ms late: the anchor moves, later on-time packets wait 30 ms more.
    arr, ts, sq = stream([30, 0, 0, 75, 65])
    r = FixedJitterBuffer(40.0).emulate(arr, ts, CLOCK, sq)
    assert r.discarded == 1  # only 75 > 30 + 40
    assert r.max_buffer_delay_ms == pytest.approx(70.0, abs=1e-3)


def test_timestamp_wrap_and_reorder() -> None:
    arr, ts, sq = stream([0, 0, 0, 0, 0, 0], ts0=(1 << 32) - 2 * STEP)
    # swap arrival order of packets 2 and 3 (reordered, both in time)
    order = [0, 1, 3, 2, 4, 5]
    arr2 = np.sort(arr)  # arrival order is time order
    ts2, sq2 = ts[order], sq[order]
    r = FixedJitterBuffer(40.0).emulate(arr2, ts2, CLOCK, sq2)
    assert r.discarded == 0
    transit = media_transit_s(arr, ts, CLOCK, sq)
    assert np.allclose(transit, 0.0, atol=1e-6)


def test_duplicates_ignored() -> None:
    arr, ts, sq = stream([0, 0, 0])
    arr = np.append(arr, arr[-1] + 0.5)  # a duplicate of the last packet, very late
    ts = np.append(ts, ts[-1])
    sq = np.append(sq, sq[-1])
    r = FixedJitterBuffer(40.0).emulate(arr, ts, CLOCK, sq)
    assert (r.packets, r.discarded) == (3, 0)


def test_empty_stream() -> None:
    for model in (FixedJitterBuffer(), AdaptiveJitterBuffer()):
        r = model.emulate(np.array([]), np.array([]), CLOCK, np.array([]))
        assert (r.packets, r.discarded, r.late_ratio, r.mean_buffer_delay_ms) == (0, 0, 0.0, 0.0)


def test_adaptive_constant_transit_waits_min() -> None:
    arr, ts, sq = stream([0.0] * 200)
    r = AdaptiveJitterBuffer(min_ms=20, max_ms=200).emulate(arr, ts, CLOCK, sq)
    assert r.discarded == 0
    assert r.mean_buffer_delay_ms == pytest.approx(20.0, abs=1e-3)
    assert r.describe() == "adaptive 20-200 ms"


def test_adaptive_spike_beyond_max_is_discarded() -> None:
    delays = [0.0] * 100
    delays[50] = 300.0  # beyond max_ms: late whatever the estimate
    arr, ts, sq = stream(delays)
    r = AdaptiveJitterBuffer(min_ms=20, max_ms=200).emulate(arr, ts, CLOCK, sq)
    assert r.discarded == 1


def test_adaptive_grows_with_jitter() -> None:
    # Alternating 0/60 ms: a fast-adapting buffer (alpha 0.9) ends up absorbing
    # it, so only the early 60 ms packets (before the estimate grew) are late.
    delays = [0.0, 60.0] * 200
    arr, ts, sq = stream(delays)
    fast = AdaptiveJitterBuffer(min_ms=20, max_ms=200, alpha=0.9).emulate(arr, ts, CLOCK, sq)
    fixed = FixedJitterBuffer(20).emulate(arr, ts, CLOCK, sq)
    assert fixed.discarded == 200
    assert 0 < fast.discarded < 20
    assert fast.mean_buffer_delay_ms > 20.0


def test_registry_by_name() -> None:
    assert set(JITTER_BUFFERS) == {"fixed", "adaptive"}
    assert isinstance(create_jitter_buffer("fixed", 60, 60), FixedJitterBuffer)
    a = create_jitter_buffer("adaptive", 30, 150)
    assert isinstance(a, AdaptiveJitterBuffer) and a.bounds_ms() == (30, 150)
    with pytest.raises(ValueError, match="unknown jitter buffer"):
        create_jitter_buffer("magic", 1, 2)


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        FixedJitterBuffer().emulate(np.zeros(3), np.zeros(2), CLOCK, np.arange(3))
    with pytest.raises(ValueError):
        FixedJitterBuffer().emulate(np.zeros(3), np.zeros(3), 0, np.arange(3))
    with pytest.raises(ValueError):
        AdaptiveJitterBuffer(min_ms=50, max_ms=10)


@given(
    st.lists(st.integers(min_value=0, max_value=200_000), min_size=1, max_size=200),
    st.integers(min_value=0, max_value=150),
)
def test_fixed_matches_reference(delays_us: list[int], n_ms: int) -> None:
    """Fixed buffer: late exactly when extra delay - first extra delay > N."""
    arr, ts, sq = stream([d / 1000.0 for d in delays_us])
    r = FixedJitterBuffer(float(n_ms)).emulate(arr, ts, CLOCK, sq)
    expected = sum(1 for d in delays_us if d - delays_us[0] > n_ms * 1000)
    assert r.discarded == expected
    assert r.packets == len(delays_us)


@given(st.lists(st.integers(min_value=0, max_value=500_000), min_size=1, max_size=200))
def test_adaptive_bounds(delays_us: list[int]) -> None:
    """Adaptive: never late within min_ms of the floor, always late beyond max_ms."""
    arr, ts, sq = stream([d / 1000.0 for d in delays_us])
    r = AdaptiveJitterBuffer(min_ms=20, max_ms=200).emulate(arr, ts, CLOCK, sq)
    floor = delays_us[0]
    must_late = must_play = 0
    for d in delays_us:
        if d - floor > 200_000:
            must_late += 1
        elif d - floor <= 20_000:
            must_play += 1
        floor = min(floor, d)
    assert must_late <= r.discarded <= len(delays_us) - must_play
    assert r.max_buffer_delay_ms <= 200.0 + 1e-6 + (max(delays_us) - min(delays_us)) / 1000
