"""Quality and SLA of one media direction, from what the probe measured.

Inputs: the stream's statistics (loss, loss runs, jitter-buffer emulation,
DSCP), what the receiver reported over RTCP, the round trip (RTCP legs) and
the call's setup delay. Output: a `DirectionRecord`. Pure functions.

SLA measures, and why: jitter is the *mean* of the RFC 3550 estimate over the
call (the final value is one noisy sample; the maximum is one bad second,
which `mos_min` already exposes); loss is network loss (lost / expected);
one-way delay is judged only when it was measured (RTCP), never when assumed;
MOS only when the codec has figures of its own (`agent.media.codecs`), never on
the fallback's. Two-way media is a call measure (agent/calls/media_seen.py),
handed to every direction like the setup delay; ``None`` when the call is not
judged for it.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.calls.record import (
    DirectionRecord,
    QualityRecord,
    RtcpRecord,
    SlaRecord,
    ViolationRecord,
    stream_record,
)
from agent.config import Config
from agent.quality.loss import burst_ratio_from_counts
from agent.quality.model import DirectionInput, JitterBufferResult, Quality, compute_quality
from agent.rtcp.monitor import RemoteReport
from agent.rtp.model import StreamStats
from agent.sla.config import SlaProfile
from agent.sla.policy import (
    REQUIREMENTS,
    Measured,
    Verdict,
    dscp_compliance_ratio,
    evaluate,
    evaluate_call,
)


def jitter_buffer_of(s: StreamStats) -> JitterBufferResult | None:
    """The stream's emulated jitter buffer, or None when it was not emulated."""
    if s.jb_model == "none" or s.jb_packets == 0:
        return None
    return JitterBufferResult(
        model=s.jb_model, nominal_ms=s.jb_nominal_ms, max_ms=s.jb_max_ms,
        packets=s.jb_packets, discarded=s.jb_discarded,
        mean_buffer_delay_ms=s.jb_mean_delay_ms, max_buffer_delay_ms=s.jb_max_delay_ms,
    )


def quality_of(
    s: StreamStats, rtt_s: float | None, cfg: Config, ptime_ms: float | None = None
) -> Quality:
    inp = DirectionInput(
        codec=s.codec,
        codec_params=s.codec_params,
        loss_ratio=s.loss_ratio,
        burst_ratio=burst_ratio_from_counts(s.lost, s.expected, s.loss_bursts),
        jitter_buffer=jitter_buffer_of(s),
        rtt_s=rtt_s,
        ptime_ms=ptime_ms if ptime_ms is not None else s.ptime_ms,
    )
    return compute_quality(inp, cfg.quality)


def quality_record(q: Quality, mos_min: float | None) -> QualityRecord:
    return QualityRecord(
        r_factor=round(q.r_factor, 3), r_factor_lq=round(q.r_factor_lq, 3),
        mos_cq=round(q.mos_cq, 3), mos_lq=round(q.mos_lq, 3),
        mos_min=None if mos_min is None else round(mos_min, 3),
        delay_ms=round(q.delay_ms, 2), delay_source=q.delay_source,
        network_delay_ms=round(q.network_delay_ms, 2),
        effective_loss_ratio=round(q.effective_loss_ratio, 6),
        burst_ratio=round(q.burst_ratio, 3), jitter_buffer=q.jitter_buffer,
        jitter_buffer_discarded=q.jitter_buffer_discarded, codec_model=q.codec,
        codec_figures=q.codec_figures, wideband=q.wideband,
    )


def rtcp_record(r: RemoteReport | None, clock_rate: int | None) -> RtcpRecord | None:
    if r is None:
        return None
    xr = r.xr
    return RtcpRecord(
        reports=r.reports,
        fraction_lost=round(r.fraction_lost, 4),
        cumulative_lost=r.cumulative_lost,
        jitter_ms=round(r.jitter_ts_units / clock_rate * 1000.0, 3) if clock_rate else None,
        xr_mos_lq=xr.mos_lq if xr else None,
        xr_mos_cq=xr.mos_cq if xr else None,
        xr_r_factor=xr.r_factor if xr else None,
        xr_round_trip_ms=xr.round_trip_delay_ms if xr else None,
        xr_discard_ratio=xr.discard_ratio if xr else None,
    )


def sla_record(v: Verdict) -> SlaRecord:
    return SlaRecord(verdict=v.verdict, profile=v.profile, not_judged=list(v.not_judged),
                     violations=_violation_records(v))


def _violation_records(v: Verdict) -> list[ViolationRecord]:
    return [
        ViolationRecord(threshold=x.threshold, limit=x.limit, value=round(x.value, 6),
                        accepted=list(x.accepted) or None, reason=x.reason)
        for x in v.violations
    ]


def judge_direction(
    direction: str,
    s: StreamStats,
    *,
    profile: SlaProfile,
    cfg: Config,
    rtt_s: float | None,
    remote: RemoteReport | None,
    setup_delay_s: float | None,
    signalling_dscp: Mapping[int, int] | None,
    mos_min: float | None = None,
    ptime_ms: float | None = None,
    media_directions: int | None = None,
    where: Mapping[str, object] | None = None,
) -> DirectionRecord:
    """Measure, rate and judge one direction of a call (rate and judge only audio).
    ``where``: more `DirectionRecord` fields (where it was measured, its path), set in
    the record as it is built rather than copied into it after."""
    more = where or {}
    if not s.rated:
        return DirectionRecord(direction=direction, media=s.media, stream=stream_record(s),
                               rtcp=rtcp_record(remote, s.clock_rate), quality=None,
                               dscp_compliance_ratio=None, sla=None, **more)
    q = quality_of(s, rtt_s, cfg, ptime_ms)
    measured = Measured(
        # a MOS on assumed codec figures is not judged (like an assumed delay)
        mos_cq=q.mos_cq if q.codec_figures == "standard" else None,
        jitter_ms=s.jitter_mean_ms if s.clock_rate else None,
        loss_ratio=s.loss_ratio,
        rtt_ms=None if rtt_s is None else rtt_s * 1000.0,
        one_way_delay_ms=q.delay_ms if q.delay_source == "measured" else None,
        setup_delay_s=setup_delay_s,
        media_dscp_packets=dict(s.dscp),
        signalling_dscp_packets=dict(signalling_dscp) if signalling_dscp else None,
        media_directions=media_directions,
    )
    accepted = profile.media_dscp
    return DirectionRecord(
        direction=direction,
        media=s.media,
        stream=stream_record(s),
        rtcp=rtcp_record(remote, s.clock_rate),
        quality=quality_record(q, mos_min),
        dscp_compliance_ratio=(
            None if accepted is None else _round(dscp_compliance_ratio(s.dscp, accepted))
        ),
        sla=sla_record(evaluate(profile, measured)),
        **more,
    )


def call_verdict(profile: SlaProfile, directions: list[DirectionRecord],
                 setup_delay_s: float | None,
                 signalling_dscp: Mapping[int, int] | None,
                 media_directions: int | None = None) -> SlaRecord:
    """The call's verdict: every judged (audio) direction's violations plus the
    signalling checks and the requirements (two-way media), which also hold for a call
    with no direction."""
    judged = [d.sla for d in directions if d.sla is not None]
    sig = evaluate_call(profile, setup_delay_s=setup_delay_s,
                        signalling_dscp_packets=signalling_dscp,
                        media_directions=media_directions)
    violations = _violation_records(sig)  # the call's own: one per threshold
    not_judged = set(sig.not_judged) & _REQUIRED
    if judged:  # and each direction's, the first of those alike (threshold and value)
        seen = {(v.threshold, v.value) for v in violations}
        for j in judged:
            for v in j.violations:
                if (v.threshold, v.value) not in seen:
                    seen.add((v.threshold, v.value))
                    violations.append(v)
            not_judged.update(j.not_judged)
    return SlaRecord(verdict="violated" if violations else "met", profile=profile.name,
                     violations=violations, not_judged=sorted(not_judged))


_REQUIRED = frozenset(name for name, _, _ in REQUIREMENTS)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)
