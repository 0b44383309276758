"""A direction's and a call's judgement (agent/calls/judge.py), held to plain forms."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pytest
from callsbuild import stream

from agent.calls.judge import call_verdict, judge_direction, sla_record
from agent.calls.record import (
    DirectionRecord,
    LossBetweenRecord,
    PointRecord,
    SlaRecord,
    stream_record,
)
from agent.config import Config
from agent.rtp.model import StreamStats
from agent.sla.config import SlaProfile
from agent.sla.policy import REQUIREMENTS, Measured, evaluate

CFG = Config()
PROFILES = [
    CFG.sla.profiles["default"],
    SlaProfile(name="strict", min_mos_cq=4.4, max_jitter_ms=0.1, max_loss_ratio=0.0,
               max_setup_delay_s=0.05, media_dscp=(46,), signalling_dscp=(26,),
               min_dscp_compliance_ratio=1.0, require_two_way_media=True),
    SlaProfile(name="empty"),
]
A = stream(("198.18.7.1", 16000), ("198.19.8.2", 20000), 1, lost=30, jitter_ms=12.0, dscp=0)
B = stream(("198.19.8.2", 20000), ("198.18.7.1", 16000), 2)
WHERE: dict[str, object] = {
    "point": "eth0:in",
    "points": [PointRecord(point="eth0:in", packets=10, lost=0, loss_ratio=0.0, duplicates=0,
                           jitter_ms=1.0, first_ts=1.0, last_ts=2.0)],
    "loss_between_points": [LossBetweenRecord(upstream="a", downstream="b", lost=1,
                                              loss_ratio=0.1)],
    "event_streams": [stream_record(B)],
}


def _direction(name: str, s: StreamStats, profile: SlaProfile,
               where: Mapping[str, object] | None = None) -> DirectionRecord:
    return judge_direction(name, s, profile=profile, cfg=CFG, rtt_s=0.04, remote=None,
                           setup_delay_s=0.2, signalling_dscp={0: 3, 26: 1},
                           media_directions=1, where=where)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("s", [A, B, replace(A, media="video")])
def test_where_is_the_record_copied_with_it(profile: SlaProfile, s: StreamStats) -> None:
    plain = _direction("a_to_b", s, profile)
    built = _direction("a_to_b", s, profile, where=WHERE)
    copied = plain.model_copy(update=WHERE)
    assert built == copied
    assert built.model_dump_json() == copied.model_dump_json()


def _reference_verdict(profile: SlaProfile, directions: list[DirectionRecord],
                       setup_delay_s: float | None, signalling_dscp: Mapping[int, int] | None,
                       media_directions: int | None) -> SlaRecord:
    """call_verdict as first written: the call-level measures through `evaluate`."""
    judged = [d.sla for d in directions if d.sla is not None]
    sig = evaluate(profile, Measured(
        setup_delay_s=setup_delay_s,
        signalling_dscp_packets=dict(signalling_dscp) if signalling_dscp else None,
        media_directions=media_directions))
    required = {name for name, _, _ in REQUIREMENTS}
    seen: set[tuple[str, float]] = set()
    violations = []
    for v in [*sla_record(sig).violations, *(x for j in judged for x in j.violations)]:
        if (v.threshold, v.value) not in seen:
            seen.add((v.threshold, v.value))
            violations.append(v)
    return SlaRecord(verdict="violated" if violations else "met", profile=profile.name,
                     violations=violations,
                     not_judged=sorted({n for j in judged for n in j.not_judged}
                                       | (required & set(sig.not_judged))))


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("streams", [[], [A], [A, B], [A, A], [replace(A, media="video")]])
@pytest.mark.parametrize(("setup", "sig"), [(None, None), (0.2, {0: 3, 26: 1}), (3.0, {})])
@pytest.mark.parametrize("counted", [None, 1, 2])
def test_call_verdict_is_its_plain_form(profile: SlaProfile, streams: list[StreamStats],
                                        setup: float | None, sig: dict[int, int] | None,
                                        counted: int | None) -> None:
    directions = [_direction(f"d{i}", s, profile) for i, s in enumerate(streams)]
    got = call_verdict(profile, directions, setup, sig, counted)
    want = _reference_verdict(profile, directions, setup, sig, counted)
    assert got == want
    assert got.model_dump_json() == want.model_dump_json()
