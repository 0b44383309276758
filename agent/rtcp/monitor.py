"""`RtcpMonitor`: what the endpoints report about each other, per media SSRC.

Theory of operation. Every RTCP compound the probe sees is parsed; each report
block (in an SR or RR) describes one media source (`block.ssrc`) as its
receiver (the reporter) experienced it: fraction and cumulative loss, jitter.
XR VoIP Metrics blocks (RFC 3611 §4.7) add the receiver's own MOS/R estimate.
The call layer looks these up by the SSRC of the stream the probe measured, so
a record shows side by side what the probe measured and what the far end said.

Round trip (RFC 3550 §6.4.1) seen from the middle: when the probe sees an SR
from X at t1 and later the report block from Y that answers it (LSR) at t2,
``t2 - t1 - DLSR`` is the round trip between the probe and Y
(`ProbeRoundTrip`). The caller↔callee round trip is the sum of the two legs
(probe↔caller + probe↔callee); the call layer adds them. Times are packet
times. Tables are bounded (LRU; evictions counted).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, fields

from agent.rtcp.packets import (
    ExtendedReport,
    ReceiverReport,
    ReportBlock,
    RtcpParseError,
    SenderReport,
    VoipMetrics,
    parse_compound,
)
from agent.rtcp.rtt import ProbeRoundTrip


@dataclass(frozen=True, slots=True)
class RemoteReport:
    """The latest that receivers reported about one media SSRC."""

    ssrc: int  # the media source reported on
    reporter_ssrc: int
    ts: float  # when the probe saw the latest report (packet time)
    reports: int  # report blocks seen about this source
    fraction_lost: float  # 0..1, of the latest interval
    cumulative_lost: int  # since the start (signed: duplicates can make it negative)
    jitter_ts_units: int  # the receiver's RFC 3550 jitter in timestamp units
    xr: VoipMetrics | None = None  # the latest RFC 3611 VoIP Metrics block about it


@dataclass(slots=True)
class RtcpCounters:
    packets: int = 0  # compounds seen
    parse_errors: int = 0
    sender_reports: int = 0
    receiver_reports: int = 0
    xr_reports: int = 0
    sources_evicted: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


@dataclass(slots=True)
class _Leg:
    rtt_s: float
    ts: float


@dataclass(slots=True)
class RtcpMonitor:
    """Fed RTCP payloads with their packet time; answers per-SSRC questions."""

    max_sources: int = 20000
    counters: RtcpCounters = field(default_factory=RtcpCounters)
    _reports: OrderedDict[int, RemoteReport] = field(default_factory=OrderedDict)
    _legs: OrderedDict[int, _Leg] = field(default_factory=OrderedDict)  # reporter -> leg
    _rtt: ProbeRoundTrip = field(default_factory=ProbeRoundTrip)

    def feed(self, payload: bytes, ts: float) -> bool:
        """One UDP payload that looked like RTCP; False (and counted) if it is not.

        The tables age by the reports' own packet time (`expire` runs here first), so the
        monitor needs no timer of the engine's and its state depends on RTCP alone."""
        self.expire(ts)
        self.counters.packets += 1
        try:
            packets = parse_compound(payload)
        except RtcpParseError:
            self.counters.parse_errors += 1
            return False
        for p in packets:
            if isinstance(p, SenderReport):
                self.counters.sender_reports += 1
                self._rtt.sender_report(p.ssrc, p.ntp_timestamp, ts)
                self._blocks(p.ssrc, p.reports, ts)
            elif isinstance(p, ReceiverReport):
                self.counters.receiver_reports += 1
                self._blocks(p.ssrc, p.reports, ts)
            elif isinstance(p, ExtendedReport):
                self.counters.xr_reports += 1
                for b in p.blocks:
                    if isinstance(b, VoipMetrics):
                        self._xr(p.ssrc, b, ts)
        return True

    def report_about(self, ssrc: int) -> RemoteReport | None:
        """The latest report on media source ``ssrc``."""
        return self._reports.get(ssrc)

    def leg_rtt_s(self, reporter_ssrc: int) -> float | None:
        """Round trip probe <-> the endpoint that sends as ``reporter_ssrc``."""
        leg = self._legs.get(reporter_ssrc)
        return None if leg is None else leg.rtt_s

    def expire(self, now: float, idle_s: float = 300.0) -> None:
        """Forget sources with no report for ``idle_s`` (tables are in LRU order)."""
        while self._reports and now - next(iter(self._reports.values())).ts >= idle_s:
            self._reports.popitem(last=False)
        while self._legs and now - next(iter(self._legs.values())).ts >= idle_s:
            self._legs.popitem(last=False)
        self._rtt.expire(now)

    def _blocks(self, reporter: int, blocks: tuple[ReportBlock, ...], ts: float) -> None:
        for b in blocks:
            if b.ssrc == reporter:
                continue  # some stacks report on themselves: meaningless
            old = self._reports.get(b.ssrc)
            self._put(self._reports, b.ssrc, RemoteReport(
                ssrc=b.ssrc, reporter_ssrc=reporter, ts=ts,
                reports=(old.reports if old else 0) + 1,
                fraction_lost=b.fraction_lost, cumulative_lost=b.cumulative_lost,
                jitter_ts_units=b.jitter_ts_units, xr=old.xr if old else None,
            ))
            rtt = self._rtt.report_block(b, ts, reporter_ssrc=reporter)
            if rtt is not None:
                self._put(self._legs, reporter, _Leg(rtt, ts))

    def _xr(self, reporter: int, m: VoipMetrics, ts: float) -> None:
        old = self._reports.get(m.ssrc)
        if old is None:
            old = RemoteReport(m.ssrc, reporter, ts, 0, m.loss_ratio, 0, 0)
        self._put(self._reports, m.ssrc, RemoteReport(
            old.ssrc, reporter, ts, old.reports, old.fraction_lost, old.cumulative_lost,
            old.jitter_ts_units, xr=m,
        ))

    def _put(self, table: OrderedDict[int, RemoteReport] | OrderedDict[int, _Leg],
             key: int, value: RemoteReport | _Leg) -> None:
        table[key] = value  # type: ignore[assignment]
        table.move_to_end(key)
        if len(table) > self.max_sources:
            table.popitem(last=False)
            self.counters.sources_evicted += 1
