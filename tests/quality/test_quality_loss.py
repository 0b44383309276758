"""BurstR and RFC 3611 burst/gap (agent/quality/loss.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.quality.loss import (
    burst_gap,
    burst_ratio_from_counts,
    burst_ratio_from_runs,
    burst_ratio_from_sequence,
)


def seq(s: str) -> np.ndarray:
    """'..x..' -> lost indicator (x = lost)."""
    return np.array([c == "x" for c in s], dtype=bool)


def test_no_loss_is_one() -> None:
    assert burst_ratio_from_sequence(np.zeros(100, dtype=np.uint8)) == 1.0
    assert burst_ratio_from_counts(0, 100, 0) == 1.0
    assert burst_ratio_from_runs([], 100) == 1.0


def test_all_lost_is_one() -> None:
    assert burst_ratio_from_sequence(np.ones(10, dtype=np.uint8)) == 1.0


def test_sequence_exact() -> None:
    # 10 packets: found found lost lost found found found lost lost found
    x = seq("..xx...xx.")
    # pairs: found->? 5 found with successor (idx 0,1,4,5,6), 2 go to lost -> p = 2/5
    # lost->? 4 lost with successor (2,3,7,8), 2 go to found -> q = 2/4
    assert burst_ratio_from_sequence(x) == pytest.approx(1.0 / (2 / 5 + 2 / 4))


def test_uint8_input() -> None:
    x = seq("..xx...xx.").astype(np.uint8)
    assert burst_ratio_from_sequence(x) == pytest.approx(1.0 / 0.9)


def test_runs_and_counts_agree() -> None:
    # 3 runs of 4 lost among 300 received: q = 3/12, p = 3/300
    expected = 1.0 / (3 / 300 + 3 / 12)
    assert burst_ratio_from_runs([4, 4, 4], 300) == pytest.approx(expected)
    assert burst_ratio_from_counts(lost=12, expected=312, loss_bursts=3) == pytest.approx(expected)


def test_random_loss_near_one() -> None:
    rng = np.random.default_rng(1)
    x = rng.random(200_000) < 0.05
    assert burst_ratio_from_sequence(x) == pytest.approx(1.0, abs=0.02)


def test_markov_loss_recovers_burst_r() -> None:
    rng = np.random.default_rng(2)
    p, q = 0.01, 0.25  # BurstR = 1 / 0.26
    n = 400_000
    u = rng.random(n)
    x = np.empty(n, dtype=bool)
    state = False
    for i in range(n):
        state = (u[i] < p) if not state else (u[i] >= q)
        x[i] = state
    assert burst_ratio_from_sequence(x) == pytest.approx(1 / 0.26, rel=0.05)


def test_bad_shape() -> None:
    with pytest.raises(ValueError):
        burst_ratio_from_sequence(np.zeros((2, 2)))


def test_burst_gap_isolated_losses_are_gap() -> None:
    x = seq("." * 20 + "x" + "." * 20 + "x" + "." * 20)
    bg = burst_gap(x)
    assert bg.bursts == 0 and bg.burst_packets == 0
    assert bg.gap_packets == 62 and bg.gap_density == pytest.approx(2 / 62)


def test_burst_gap_one_burst() -> None:
    # losses at 20, 22, 25 chain (gaps of 1 and 2 received < 16): one burst 20..25
    x = seq("." * 20 + "x.x..x" + "." * 30)
    bg = burst_gap(x, gmin=16)
    assert bg.bursts == 1 and bg.burst_packets == 6
    assert bg.burst_density == pytest.approx(3 / 6)
    assert bg.gap_packets == 50 and bg.gap_density == 0.0
    assert bg.burst_duration_ms(20.0) == pytest.approx(120.0)


def test_burst_gap_gmin_boundary() -> None:
    # exactly gmin received between two losses: not a burst
    x = seq("x" + "." * 16 + "x")
    assert burst_gap(x, gmin=16).bursts == 0
    x = seq("x" + "." * 15 + "x")
    assert burst_gap(x, gmin=16).bursts == 1


@given(st.lists(st.booleans(), max_size=300), st.integers(min_value=1, max_value=20))
def test_burst_gap_conserves_packets(bits: list[bool], gmin: int) -> None:
    x = np.array(bits, dtype=bool)
    bg = burst_gap(x, gmin=gmin)
    assert bg.burst_packets + bg.gap_packets == x.size
    lost = bg.burst_density * bg.burst_packets + bg.gap_density * bg.gap_packets
    assert lost == pytest.approx(int(x.sum()))
    assert burst_ratio_from_sequence(x) > 0
