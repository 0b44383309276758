"""Which RFC 6035 report block describes which media direction of a call.

A report's ``LocalMetrics`` are what the reporter *received*: the stream from
``RemoteAddr`` (its source, RFC 6035 §4.4: "the source of the stream being
measured") to ``LocalAddr``. Its ``RemoteMetrics`` are what the far end told
the reporter (RTCP XR) about the stream the reporter sent: ``LocalAddr`` to
``RemoteAddr``. A block describes a direction of the probe's when the
stream's SSRC is one of the block's source SSRC readings, or the stream's
destination is the block's receiver endpoint, or its source the block's
source endpoint (any one is enough, so an address behind NAT that the probe
sees rewritten still joins by SSRC).

Among the blocks that describe a direction, the receiver's own measurement
beats what the sender was told; a session report beats an interval report,
which beats an alert; the latest report beats an earlier one; then the block
that agrees on more (SSRC, destination, source).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.calls.record import EndpointReportRecord
from agent.decode.endpoint import Endpoint
from agent.rtp.model import StreamKey
from agent.sip.events import CallSignalling, QualityReported
from agent.sip.vqreport import Metrics, ReportAddr, ReportKind

MAX_REPORTS_PER_CALL = 16  # a phone sends one per stream per interval; the newest are kept

_KIND_RANK = {ReportKind.SESSION: 2, ReportKind.INTERVAL: 1, ReportKind.ALERT: 0}


@dataclass(frozen=True, slots=True)
class _Block:
    seen: QualityReported
    metrics: Metrics
    receiver: ReportAddr
    source: ReportAddr
    by_receiver: bool  # LocalMetrics: the reporter measured this direction itself


def _blocks(seen: QualityReported) -> list[_Block]:
    r = seen.report
    out = []
    if r.local is not None:
        out.append(_Block(seen, r.local, r.local_addr, r.remote_addr, True))
    if r.remote is not None:
        out.append(_Block(seen, r.remote, r.remote_addr, r.local_addr, False))
    return out


def _score(block: _Block, key: StreamKey) -> int:
    """4: SSRC, 2: destination, 1: source endpoint agree (0: not this direction)."""
    score = 4 if key.ssrc in block.source.ssrcs else 0
    if block.receiver.endpoint is not None and block.receiver.endpoint == key.dst_endpoint:
        score += 2
    if block.source.endpoint is not None and block.source.endpoint == key.src_endpoint:
        score += 1
    return score


def best_block(reports: list[QualityReported], key: StreamKey) -> tuple[int, _Block] | None:
    """(index of its report, the block) that describes the stream ``key``, if any."""
    best: tuple[tuple[bool, int, bool, float, int, int], int, _Block] | None = None
    for i, seen in enumerate(reports):
        for block in _blocks(seen):
            score = _score(block, key)
            if score == 0:
                continue
            rank = (block.by_receiver, _KIND_RANK[seen.report.kind], seen.report.call_term,
                    seen.ts, score, i)
            if best is None or rank > best[0]:
                best = (rank, i, block)
    return None if best is None else (best[1], best[2])


def describes_any(seen: QualityReported, keys: list[StreamKey]) -> bool:
    """Does some block of the report describe one of the streams?"""
    return any(_score(b, k) > 0 for b in _blocks(seen) for k in keys)


def _side(reporter: Endpoint, sig: CallSignalling | None) -> str | None:
    if sig is None:
        return None
    if reporter.addr == sig.caller.addr and reporter.addr != sig.callee.addr:
        return "caller"
    if reporter.addr == sig.callee.addr and reporter.addr != sig.caller.addr:
        return "callee"
    return None


def endpoint_record(block: _Block, sig: CallSignalling | None,
                    probe_mos_cq: float | None) -> EndpointReportRecord:
    """The record's view of one block, beside the probe's MOS-CQ of the direction."""
    m, r = block.metrics, block.seen.report
    diff = (None if m.mos_cq is None or probe_mos_cq is None
            else round(m.mos_cq - probe_mos_cq, 3))
    return EndpointReportRecord(
        kind=str(r.kind), call_term=r.call_term,
        reporter="receiver" if block.by_receiver else "sender",
        reporter_side=_side(block.seen.reporter, sig), reported_ts=block.seen.ts,
        codec=m.payload_desc, mos_lq=m.mos_lq, mos_cq=m.mos_cq, r_lq=m.r_lq, r_cq=m.r_cq,
        mos_cq_difference=diff,
        network_loss_ratio=m.network_loss_ratio, jb_discard_ratio=m.jb_discard_ratio,
        burst_density_ratio=m.burst_density_ratio, burst_duration_ms=m.burst_duration_ms,
        gap_density_ratio=m.gap_density_ratio, gap_duration_ms=m.gap_duration_ms,
        round_trip_ms=m.round_trip_ms, end_system_delay_ms=m.end_system_delay_ms,
        symm_one_way_delay_ms=m.symm_one_way_delay_ms,
        interarrival_jitter_ms=m.interarrival_jitter_ms,
        mean_abs_jitter_ms=m.mean_abs_jitter_ms,
        jitter_buffer_adaptive=m.jb_adaptive, jitter_buffer_nominal_ms=m.jb_nominal_ms,
        jitter_buffer_max_ms=m.jb_max_ms, jitter_buffer_abs_max_ms=m.jb_abs_max_ms,
    )
