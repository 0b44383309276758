"""Quality entry point (agent/quality/model.py): delay estimate, effective loss, CQ vs LQ."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.media.codecs import lookup_codec
from agent.quality.emodel import mos_from_r, rate_narrowband
from agent.quality.model import JitterBufferResult
from agent.quality.model import (
    DirectionInput,
    QualityConfig,
    compute_intervals,
    compute_quality,
    effective_loss_ratio,
    one_way_delay_ms,
)


def jb(discarded: int = 0, packets: int = 1000, wait_ms: float = 40.0) -> JitterBufferResult:
    return JitterBufferResult("fixed", 60.0, 60.0, packets, discarded, wait_ms, wait_ms)


def test_clean_g711_assumed_delay() -> None:
    q = compute_quality(DirectionInput(codec="PCMA", loss_ratio=0.0))
    # 20 ms assumed network + 20 ms ptime + 20 ms adaptive minimum + 0 look-ahead
    assert q.delay_ms == pytest.approx(60.0)
    assert q.delay_source == "assumed"
    ref = rate_narrowband(t_ms=60, tr_ms=120, ta_ms=60, ie=0, bpl=25.1, ppl_percent=0)
    assert q.r_factor == pytest.approx(ref.r)
    assert q.mos_cq == pytest.approx(mos_from_r(ref.r))
    assert q.mos_cq == pytest.approx(4.4094, abs=0.05)  # within the acceptance
    assert q.jitter_buffer == "adaptive 20-200 ms (nominal, not emulated)"


def test_measured_rtt_delay() -> None:
    inp = DirectionInput(
        codec="G729", loss_ratio=0.0, rtt_s=0.100, ptime_ms=30.0, jitter_buffer=jb(wait_ms=25.0)
    )
    q = compute_quality(inp)
    # 50 (RTT/2) + 30 (ptime) + 25 (buffer) + 5 (G.729 look-ahead)
    assert q.delay_ms == pytest.approx(110.0)
    assert q.delay_source == "measured"
    assert q.network_delay_ms == pytest.approx(50.0)
    assert q.jitter_buffer == "fixed 60 ms"


def test_delay_uses_codec_default_ptime() -> None:
    cfg = QualityConfig()
    ta, net, src = one_way_delay_ms(DirectionInput("G723", 0.0), lookup_codec("G723"), cfg)
    assert (ta, net, src) == (20.0 + 30.0 + 20.0 + 7.5, 20.0, "assumed")


def test_effective_loss_adds_discards() -> None:
    assert effective_loss_ratio(0.02, jb(discarded=10, packets=980)) == pytest.approx(0.03)
    assert effective_loss_ratio(0.02, None) == 0.02
    q = compute_quality(DirectionInput("PCMU", 0.02, jitter_buffer=jb(10, 980)))
    assert q.effective_loss_ratio == pytest.approx(0.03)
    assert q.jitter_buffer_discarded == 10


def test_loss_vector_through_entry_point() -> None:
    # STANDARDS loss table Ta 150, 2 %, Ie 0, Bpl 4.3 -> R 59.380: G.711 without PLC,
    # RTT 260 ms (130 one way) + 20 ptime + 0 buffer + 0 look-ahead = 150 ms.
    cfg = QualityConfig(g711_plc=False)
    inp = DirectionInput("PCMA", 0.02, rtt_s=0.260, ptime_ms=20.0, jitter_buffer=jb(0, 100, 0.0))
    q = compute_quality(inp, cfg)
    assert q.delay_ms == pytest.approx(150.0)
    assert q.r_factor == pytest.approx(59.380, abs=0.01)
    assert q.mos_cq == pytest.approx(3.068, abs=0.002)


def test_lq_excludes_delay() -> None:
    near = compute_quality(DirectionInput("PCMA", 0.01, rtt_s=0.0))
    far = compute_quality(DirectionInput("PCMA", 0.01, rtt_s=0.8))
    assert far.mos_cq < near.mos_cq
    assert far.mos_lq == pytest.approx(near.mos_lq)
    assert near.mos_lq >= near.mos_cq
    assert far.r_factor_lq - far.r_factor == pytest.approx(far.id)


def test_wideband_codec_uses_wb_scale() -> None:
    q = compute_quality(DirectionInput("AMR-WB", 0.0, rtt_s=0.0, ptime_ms=20.0))
    assert q.wideband and q.r_factor > 100.0
    assert q.mos_cq <= 4.5


def test_unknown_codec_flagged() -> None:
    q = compute_quality(DirectionInput("speex", 0.0))
    assert (q.codec, q.codec_figures) == ("unknown", "assumed")


def test_codec_override_from_config() -> None:
    cfg = QualityConfig.model_validate({"codec_overrides": {"speex": {"ie": 30, "bpl": 10}}})
    q = compute_quality(DirectionInput("SPEEX", 0.0, rtt_s=0.0), cfg)
    assert q.codec_figures == "standard" and q.ie_eff == 30.0


def test_emodel_params_from_config() -> None:
    cfg = QualityConfig.model_validate({"emodel": {"a": 5.0}})
    base = compute_quality(DirectionInput("PCMA", 0.0, rtt_s=0.1))
    adv = compute_quality(DirectionInput("PCMA", 0.0, rtt_s=0.1), cfg)
    assert adv.r_factor == pytest.approx(base.r_factor + 5.0)


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError, match=r"jitter_buffer\.model"):
        QualityConfig.model_validate({"jitter_buffer": {"model": "magic"}})
    with pytest.raises(ValidationError, match="bogus"):
        QualityConfig.model_validate({"bogus": 1})
    with pytest.raises(ValidationError, match=r"emodel\.zz"):
        QualityConfig.model_validate({"emodel": {"zz": 1}})


def test_fixed_buffer_nominal() -> None:
    cfg = QualityConfig.model_validate({"jitter_buffer": {"model": "fixed", "fixed_ms": 80}})
    q = compute_quality(DirectionInput("PCMA", 0.0), cfg)
    assert q.delay_ms == pytest.approx(20 + 20 + 80)
    assert q.jitter_buffer == "fixed 80 ms (nominal, not emulated)"


def test_intervals_min() -> None:
    good = DirectionInput("PCMA", 0.0)
    bad = dataclasses.replace(good, loss_ratio=0.08)
    res = compute_intervals([good, good, bad, good])
    assert res.worst_index == 2
    assert res.mos_min == res.intervals[2].mos_cq < res.intervals[0].mos_cq
    assert res.r_min == res.intervals[2].r_factor
    assert compute_intervals([]).mos_min is None


def test_to_json_contract_keys() -> None:
    q = compute_quality(DirectionInput("PCMA", 0.0))
    j = q.to_json(mos_min=4.1)
    for key in (
        "r_factor",
        "mos_cq",
        "mos_lq",
        "mos_min",
        "delay_ms",
        "delay_source",
        "effective_loss_ratio",
        "jitter_buffer",
    ):
        assert key in j
    assert j["mos_min"] == 4.1


CODEC_NAMES = st.sampled_from(
    [
        "PCMA",
        "PCMU",
        "G729",
        "G723",
        "GSM",
        "iLBC",
        "opus",
        "AMR",
        "AMR-WB",
        "G722",
        "nonsense",
        None,
    ]
)
LOSS = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
RTT = st.one_of(st.none(), st.floats(min_value=0.0, max_value=3.0, allow_nan=False))
BURST = st.floats(min_value=0.5, max_value=20.0, allow_nan=False)
# Monotonicity holds up to floating-point noise in the last digits.
EPS = 1e-9


@settings(max_examples=300, deadline=None)
@given(CODEC_NAMES, LOSS, LOSS, RTT, BURST, st.booleans())
def test_mos_bounded_and_monotone_in_loss(
    codec: str | None, a: float, b: float, rtt: float | None, burst: float, plc: bool
) -> None:
    cfg = QualityConfig(g711_plc=plc)
    lo, hi = sorted((a, b))
    q_lo = compute_quality(DirectionInput(codec, lo, burst, rtt_s=rtt), cfg)
    q_hi = compute_quality(DirectionInput(codec, hi, burst, rtt_s=rtt), cfg)
    for q in (q_lo, q_hi):
        assert 1.0 <= q.mos_cq <= 4.5 and 1.0 <= q.mos_lq <= 4.5
        assert q.mos_cq <= q.mos_lq + EPS
    assert q_hi.mos_cq <= q_lo.mos_cq + EPS
    assert q_hi.mos_lq <= q_lo.mos_lq + EPS


@settings(max_examples=300, deadline=None)
@given(
    CODEC_NAMES,
    LOSS,
    st.floats(min_value=0.0, max_value=3.0, allow_nan=False),
    st.floats(min_value=0.0, max_value=3.0, allow_nan=False),
    BURST,
)
def test_mos_monotone_in_delay(
    codec: str | None, loss: float, a: float, b: float, burst: float
) -> None:
    lo, hi = sorted((a, b))
    q_lo = compute_quality(DirectionInput(codec, loss, burst, rtt_s=lo))
    q_hi = compute_quality(DirectionInput(codec, loss, burst, rtt_s=hi))
    assert q_hi.mos_cq <= q_lo.mos_cq + EPS
    assert q_hi.r_factor <= q_lo.r_factor + EPS
