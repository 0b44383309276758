"""`CallRecord`: one judged call, as the call log and `analyze --json` print it.

Per media direction: what the probe measured (the stream object), what the far
end reported over RTCP, the E-model quality, DSCP compliance and the SLA
verdict. Units are in the field names. Pydantic models, so the record
validates itself and serialises to the JSON contract of issue 3.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from agent.rtp.model import StreamStats


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ViolationRecord(_Frozen):
    threshold: str
    limit: float
    value: float
    accepted: list[int] | None = None  # DSCP checks: the accepted values
    # For people: "media_dscp_compliance: 0.00 (min 0.95)" (agent.sla.policy.violation_reason).
    reason: str = ""


class SlaRecord(_Frozen):
    verdict: Literal["met", "violated"]
    profile: str
    violations: list[ViolationRecord]
    not_judged: list[str]


class QualityRecord(_Frozen):
    r_factor: float
    r_factor_lq: float
    mos_cq: float
    mos_lq: float
    mos_min: float | None  # the worst interval's MOS-CQ (None when no interval was measured)
    delay_ms: float  # estimated one-way mouth-to-ear delay
    delay_source: Literal["measured", "assumed"]
    network_delay_ms: float
    effective_loss_ratio: float  # network loss + jitter-buffer discards
    burst_ratio: float
    jitter_buffer: str
    jitter_buffer_discarded: int
    codec_model: str  # the codec entry of the registry's figures used ("unknown": fallback)
    codec_figures: Literal["standard", "assumed"]  # assumed: no figures, MOS not judged
    wideband: bool


class RtcpRecord(_Frozen):
    """What the receiver of this direction reported about it (RTCP RR/SR/XR)."""

    reports: int
    fraction_lost: float  # latest interval, 0..1
    cumulative_lost: int
    jitter_ms: float | None  # None when the stream's clock is unknown
    xr_mos_lq: float | None = None
    xr_mos_cq: float | None = None
    xr_r_factor: int | None = None
    xr_round_trip_ms: int | None = None
    xr_discard_ratio: float | None = None


class EndpointReportRecord(_Frozen):
    """What an endpoint reported about this direction in an RFC 6035 vq-rtcpxr report
    (agent/calls/endpoint_report.py): its own figures, beside the probe's. None where the
    report left a metric out or marked it unavailable."""

    kind: Literal["session", "interval", "alert"]
    call_term: bool  # the reporter's last report of the session ("VQSessionReport: CallTerm")
    # receiver: the end this direction flows to measured it (its LocalMetrics); sender:
    # the end it flows from reported what the receiver told it (its RemoteMetrics)
    reporter: Literal["receiver", "sender"]
    reporter_side: Literal["caller", "callee"] | None  # the PUBLISH came from its address
    reported_ts: float  # packet time of the report's message
    codec: str | None  # the report's payload description (PD)
    mos_lq: float | None
    mos_cq: float | None
    r_lq: float | None
    r_cq: float | None
    mos_cq_difference: float | None  # endpoint's MOS-CQ minus the probe's (quality.mos_cq)
    network_loss_ratio: float | None  # NLR
    jb_discard_ratio: float | None  # JDR
    burst_density_ratio: float | None
    burst_duration_ms: int | None
    gap_density_ratio: float | None
    gap_duration_ms: int | None
    round_trip_ms: int | None  # RTD
    end_system_delay_ms: int | None  # ESD
    symm_one_way_delay_ms: int | None  # SOWD
    interarrival_jitter_ms: int | None  # IAJ
    mean_abs_jitter_ms: int | None  # MAJ
    jitter_buffer_adaptive: int | None  # JBA: 0 unknown, 2 non-adaptive, 3 adaptive
    jitter_buffer_nominal_ms: int | None
    jitter_buffer_max_ms: int | None
    jitter_buffer_abs_max_ms: int | None


class PointRecord(_Frozen):
    """One direction's figures at one observation point (agent/calls/paths.py)."""

    point: str
    packets: int
    lost: int
    loss_ratio: float
    duplicates: int
    jitter_ms: float
    first_ts: float
    last_ts: float


class LossBetweenRecord(_Frozen):
    """Distinct packets the upstream point saw that the next point downstream did not."""

    upstream: str
    downstream: str
    lost: int
    loss_ratio: float  # of what the upstream point saw


class JitterBufferRecord(_Frozen):
    """The jitter-buffer emulation over a stream's media packets (docs/rtp-metrics.md)."""

    model: str  # "fixed" | "adaptive" | "none" (not emulated)
    nominal_ms: float
    max_ms: float
    packets: int
    discarded: int
    mean_delay_ms: float
    max_delay_ms: float


class StreamRecord(_Frozen):
    """One RTP stream as measured: the stream object of `analyze --json --streams`
    (`StreamStats.to_json`, field for field and in that order, so the JSON is the same)."""

    kind: Literal["stream"] = "stream"
    src: str  # "ip:port"
    dst: str
    ssrc: int
    point: str  # where it was seen (agent/capture/points.py); "" for none
    payload_types: list[int]
    codec: str | None
    clock_rate: int | None
    clock_rate_estimated: bool
    packets: int
    expected: int
    lost: int
    duplicates: int
    reordered: int
    loss_ratio: float
    seq_wraps: int
    restarts: int
    loss_bursts: int
    loss_burst_max: int
    loss_burst_mean: float
    max_seq_gap: int
    jitter_ms: float
    jitter_mean_ms: float
    jitter_max_ms: float
    max_delta_ms: float
    mean_delta_ms: float
    markers: int
    telephone_event_packets: int
    comfort_noise_packets: int
    dscp: dict[str, int]  # DSCP value (as a JSON key) -> packets
    vlan: int | None
    pcp: int | None
    first_ts: float
    last_ts: float
    duration_s: float
    previous_ssrc: int | None
    jitter_buffer: JitterBufferRecord
    ptime_ms: float | None
    profile: str | None
    srtp_trailer_bytes: int | None
    media: str
    codec_params: str | None

    def dscp_packets(self) -> dict[int, int]:
        """``dscp`` keyed by the DSCP value."""
        return {int(k): n for k, n in self.dscp.items()}


def stream_record(s: StreamStats) -> StreamRecord:
    """The record of a stream's statistics."""
    return StreamRecord.model_validate(s.to_json())


class DirectionRecord(_Frozen):
    direction: str  # inbound/outbound, or a_to_b (caller -> callee) / b_to_a
    # what the stream carries: audio, video, image (T.38), text, application, or
    # telephone-event / comfort-noise alone; "unknown" for unsignalled unnamed RTP
    media: str = "audio"
    stream: StreamRecord  # the stream object of `analyze --json --streams`
    rtcp: RtcpRecord | None
    # E-model rating and SLA verdict: audio only (None for video, T.38, events or CN
    # alone: measured, shown, never given a MOS nor judged against a voice SLA)
    quality: QualityRecord | None
    dscp_compliance_ratio: float | None
    sla: SlaRecord | None
    # RFC 4733 event-only streams (own SSRC) on this direction's 5-tuple: telephone
    # events, not media; reported, not rated.
    event_streams: list[StreamRecord] = []
    # the endpoint's own RFC 6035 report about this direction, when one joined the call
    endpoint_report: EndpointReportRecord | None = None
    # Observation points (agent/calls/paths.py): where the figures above were measured
    # (the last point of the path; None for a source that names none), and, when the
    # direction was seen at several points, each one's figures (upstream first) and the
    # packets lost between consecutive ones.
    point: str | None = None
    points: list[PointRecord] = []
    loss_between_points: list[LossBetweenRecord] = []


class CallRecord(_Frozen):
    kind: Literal["call"] = "call"
    call_id: str | None  # None for unsignalled media (a pseudo-call)
    from_: str | None
    to: str | None
    peer: str
    transport: str | None
    final_status: int | None
    end_reason: str
    invite_ts: float | None
    first_provisional_ts: float | None
    answer_ts: float | None
    end_ts: float
    setup_delay_s: float | None
    answer_delay_s: float | None
    duration_s: float | None
    disconnect_delay_s: float | None
    codec: str | None
    media_at_probe: bool  # False: no RTP of the call passed the probe (its media went elsewhere)
    # Directions media (audio or CN, not events alone) passed the probe in, from the
    # answer on: both, a_to_b (caller -> callee), b_to_a, none (agent/calls/media_seen.py)
    media_seen: Literal["both", "a_to_b", "b_to_a", "none"]
    # The one direction of a judged one-way call (answered, long enough, sendrecv): the
    # fault `require_two_way_media` judges and the one-way metric counts; else None
    one_way_media: Literal["a_to_b", "b_to_a"] | None
    rtt_ms: float | None  # caller <-> callee round trip from RTCP (sum of the probe's legs)
    rtt_source: Literal["rtcp", "rtcp_one_leg"] | None
    signalling_dscp: dict[str, int]
    signalling_dscp_compliance_ratio: float | None
    directions: list[DirectionRecord]
    sla: SlaRecord  # the call: violated when any direction is, or the setup delay is
    # The live agent lost packets while the call was alive (kernel ring drops, a capture
    # interface gone, mirrored copies missing): its loss and MOS may be the probe's own
    # doing, not the network's. Set by the daemon (agent/capture/health.py), never by
    # the engine; always false in ``analyze``.
    capture_lossy: bool = False
    # The evidence pcap written for this call (a file name in the evidence directory,
    # agent/export/evidence.py); None when none was written
    evidence: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        out["from"] = out.pop("from_")
        return out
