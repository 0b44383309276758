"""Prometheus metrics of the probe: engine events and counters -> metric families.

Theory of operation
-------------------
`ProbeMetrics` is a sink (DESIGN.md "Data flow"): the daemon hands it every
engine event (`observe`) and, every batch or so, the engine's typed counter
snapshot (`agent.counters`) and the capture statistics (`update`). Two kinds of
state feed the exposition, as client_python intends:

- things that *happen* (a call ends, an interval is rated, a stream ends) are
  counted and observed into ordinary `Counter`/`Histogram` children;
- things the pipeline already *counts* (`Engine.snapshot()`, kernel drops) are
  absolute totals: `_CountersCollector` keeps the latest snapshot and yields
  `CounterMetricFamily`s with those values at scrape time, so nothing is
  ``inc()``'d twice and a restart of the engine is a counter reset, as it
  should be.

Labels come only from bounded sets (DESIGN.md rule 6): ``site`` and
``interface``/``listener`` from the config, ``peer`` (configured names or ``other``),
``direction``, ``codec`` (the quality codec table, ``telephone-event``, else
``other``; peer, direction and codec are the core's, `agent.calls.labels`), SLA
``profile`` and ``threshold`` names, SIP ``method`` (`KNOWN_METHODS` +
``OTHER``) and ``status_class``, ``end_reason``, DSCP ``expected`` class,
RFC 6035 report ``outcome`` (a fixed set).
Every value is passed through a whitelist here, never trusted from a record:
a Call-ID, number, SSRC or IP address can never become a label.

Units are Prometheus base units: seconds, ratios 0..1, ``_total`` counters.
"""

from __future__ import annotations

import platform
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.calls.events import CallEnded, CallInterval, Event, StreamEnded
from agent.calls.labels import DIRECTIONS, StreamLabels, codec_label
from agent.calls.record import CallRecord, DirectionRecord
from agent.capture.health import SourceStatus
from agent.capture.mirror_listener import MirrorStats
from agent.config import Config
from agent.counters import (
    DECODE_DROP_REASONS,
    EVIDENCE_DROP_REASONS,
    HEP_DROP_REASONS,
    HEP_TCP_UNFRAMED_REASONS,
    HEP_VERSIONS,
    PARSE_ERROR_PROTOCOLS,
    REPORT_OUTCOMES,
    SHED_KINDS,
    CounterSnapshot,
    HepCounts,
)
from agent.decode.sequence import SequenceGaps
from agent.export.calllog import REOPEN_REASONS, CallLogStats
from agent.rtp.model import StreamKey, StreamStats
from agent.sip.dialog import KNOWN_METHODS
from agent.sip.events import EndReason
from agent.sla.config import OTHER_PEER
from agent.sla.policy import DSCP_CHECKS, REQUIREMENTS, THRESHOLDS

NAMESPACE = "voipprobe"
OTHER = "other"
UNKNOWN = "unknown"

# MOS-CQ 1..4.5: the G.107 Annex B satisfaction bands (3.1/3.6/4.03/4.34) fall
# between buckets, and 4.4/4.5 separate G.711 from wideband-only scores.
MOS_BUCKETS = (1.0, 2.0, 2.5, 3.0, 3.3, 3.6, 3.8, 4.0, 4.2, 4.4, 4.5)
JITTER_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5)
LOSS_BUCKETS = (0.0, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5)
ROUND_TRIP_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.0, 2.0)
SETUP_DELAY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
# Endpoint MOS-CQ minus the probe's: 0.1 is within both estimates' rounding, 0.5 a
# different codec impairment or jitter-buffer behaviour, 1+ a different call experience.
MOS_DIFFERENCE_BUCKETS = (-2.0, -1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0, 2.0)

END_REASONS = frozenset({*(str(r) for r in EndReason), "unsignalled"})
STATUS_CLASSES = frozenset(f"{n}xx" for n in range(1, 7))
METHODS = frozenset({*KNOWN_METHODS, "OTHER"})
THRESHOLD_NAMES = frozenset({n for n, _, _ in THRESHOLDS} | {n for n, _ in DSCP_CHECKS}
                            | {n for n, _, _ in REQUIREMENTS})
ONE_WAY_DIRECTIONS = ("a_to_b", "b_to_a")  # CallRecord.one_way_media: caller -> callee or back
VERDICTS = frozenset({"met", "violated"})
_LABEL_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_POINT_SAFE = re.compile(r"^[A-Za-z0-9_.:-]{1,24}$")  # an interface name + ":in"/":out"
UNNAMED_POINT = "unnamed"  # a source that names no point (a classic pcap of one link)

# RFC 4594 / RFC 2474 names of the DSCP code points an SLA profile may accept.
DSCP_NAMES: dict[int, str] = {
    0: "CS0", 8: "CS1", 10: "AF11", 12: "AF12", 14: "AF13", 16: "CS2", 18: "AF21",
    20: "AF22", 22: "AF23", 24: "CS3", 26: "AF31", 28: "AF32", 30: "AF33", 32: "CS4",
    34: "AF41", 36: "AF42", 38: "AF43", 40: "CS5", 44: "VOICE-ADMIT", 46: "EF",
    48: "CS6", 56: "CS7",
}  # fmt: skip

# Streams seen by interval but not yet ended: what was already counted for them.
# Bounded like every table keyed by the network (DESIGN.md rule 4); the engine's
# own stream cap is far below this.
_MAX_TRACKED_STREAMS = 200_000

def _hep_families(fam: Callable[..., CounterMetricFamily], hep: HepCounts,
                  site: str) -> Iterator[Metric]:
    """HEP datagrams sniffed on the HEP ports (`agent.decode.hep_unwrap`)."""
    packets = fam("hep_packets", "UDP datagrams to a HEP port that start like HEP.")
    packets.add_metric([site], hep.packets)
    yield packets
    size = fam("hep_bytes", "UDP payload bytes of those HEP datagrams.")
    size.add_metric([site], hep.bytes)
    yield size
    records = fam("hep_records", "HEP packets decoded, by HEP version.", ("version",))
    errors = fam("hep_decode_errors", "HEP packets that did not decode, by HEP version.",
                 ("version",))
    for ver in HEP_VERSIONS:
        records.add_metric([site, ver], hep.records_by_version.get(ver, 0))
        errors.add_metric([site, ver], hep.errors_by_version.get(ver, 0))
    yield records
    yield errors
    dropped = fam("hep_dropped", "Decoded HEP packets not measured, by reason.", ("reason",))
    for reason in HEP_DROP_REASONS:
        dropped.add_metric([site, reason], hep.dropped_by_reason.get(reason, 0))
    yield dropped
    framing = fam("hep_tcp_unframed_segments", "Sniffed segments of HEP-over-TCP streams "
                  "not framed into HEP packets, by reason (a gap loses the framing until "
                  "the next HEP3 start; skipped: bytes before a first HEP3 start).",
                  ("reason",))
    for reason in HEP_TCP_UNFRAMED_REASONS:
        framing.add_metric([site, reason], hep.tcp_unframed_by_reason.get(reason, 0))
    yield framing


_MIRROR_ERRORS = (("invalid_header", "invalid"), ("not_ethernet", "not_ethernet"))


def _mirror_families(fam: Callable[..., CounterMetricFamily],
                     mirrors: Mapping[tuple[str, str], MirrorStats],
                     sequences: Mapping[str, SequenceGaps], site: str) -> Iterator[Metric]:
    """The TZSP/VXLAN listeners (`agent.capture.mirror_listener`) by listener name, and
    the GRE sequence gaps of numbered mirror sessions (`agent.decode.sequence`)."""
    per = ("listener", "protocol")
    datagrams = fam("mirror_datagrams", "UDP datagrams a TZSP/VXLAN listener received.", per)
    size = fam("mirror_bytes", "UDP payload bytes of those datagrams.", per)
    denied = fam("mirror_denied", "Datagrams from senders outside the listener's "
                 "allowed_senders (dropped).", per)
    errors = fam("mirror_decode_errors", "Datagrams dropped by a listener: no valid "
                 "TZSP/VXLAN header (invalid_header), or a valid one carrying no Ethernet "
                 "frame (not_ethernet).", (*per, "reason"))
    for (listener, protocol), st in sorted(mirrors.items()):
        datagrams.add_metric([site, listener, protocol], st.datagrams)
        size.add_metric([site, listener, protocol], st.bytes)
        denied.add_metric([site, listener, protocol], st.denied)
        for reason, field in _MIRROR_ERRORS:
            errors.add_metric([site, listener, protocol, reason], getattr(st, field))
    yield from (datagrams, size, denied, errors)
    lost = fam("mirror_sequence_lost_packets", "Mirrored copies an exporter numbered "
               "(GRE sequence numbers: ERSPAN II/III, GRETAP) that never reached the probe.",
               ("point",))
    resets = fam("mirror_sequence_resets", "GRE sequence numbers of a mirror session seen "
                 "again, late, or restarted (not counted as lost).", ("point",))
    for point, gaps in sorted(sequences.items()):
        lost.add_metric([site, point], gaps.lost)
        resets.add_metric([site, point], gaps.resets)
    yield from (lost, resets)


def _source_families(sources: Mapping[str, SourceStatus], site: str) -> Iterator[Metric]:
    """Per configured interface or listener (`agent.capture.health`): is it capturing,
    and when did it last receive a packet."""
    up = GaugeMetricFamily(f"{NAMESPACE}_capture_up", "1 while the interface or listener "
                           "is capturing; 0 while it is missing, down or closed.",
                           labels=("site", "interface"))
    last = GaugeMetricFamily(f"{NAMESPACE}_capture_last_packet_timestamp_seconds",
                             "Unix time the interface or listener last received a packet "
                             "(to the second; absent before its first).",
                             labels=("site", "interface"))
    for name, st in sorted(sources.items()):
        up.add_metric([site, name], 1 if st.up else 0)
        if st.last_packet_ts is not None:
            last.add_metric([site, name], st.last_packet_ts)
    yield up
    yield last


class CaptureCounts(Protocol):
    """What a capture source reports per interface (totals since it opened)."""

    @property
    def packets(self) -> int: ...

    @property
    def drops(self) -> int: ...


def _sum_mirror(a: MirrorStats, b: MirrorStats) -> MirrorStats:
    """Two listeners that share a label (``other``: not named by the config)."""
    return replace(a, datagrams=a.datagrams + b.datagrams, bytes=a.bytes + b.bytes,
                   denied=a.denied + b.denied, invalid=a.invalid + b.invalid,
                   not_ethernet=a.not_ethernet + b.not_ethernet,
                   socket_drops=a.socket_drops + b.socket_drops)


def dscp_class(accepted: Iterable[int]) -> str:
    """'EF' for (46,), 'CS3+AF31+CS5' for (24, 26, 40): a bounded label from config."""
    return "+".join(DSCP_NAMES.get(v, f"DSCP{v}") for v in sorted(set(accepted))) or "none"


def status_class(status: int | None) -> str:
    if status is None or not 100 <= status <= 699:
        return "none"
    return f"{status // 100}xx"


def _pick(value: str | None, allowed: frozenset[str], fallback: str = OTHER) -> str:
    return value if value is not None and value in allowed else fallback


class _CountersCollector(Collector):
    """Yields the absolute totals of the latest `update()` as counter families."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.counters = CounterSnapshot()
        # the bounded peer label of a name (ProbeMetrics._peer: configured, else other)
        self.peer: Callable[[str], str] = lambda name: OTHER_PEER
        self.capture: Mapping[str, tuple[int, int]] = {}
        self.mirrors: Mapping[tuple[str, str], MirrorStats] = {}
        self.sequences: Mapping[str, SequenceGaps] = {}
        self.sources: Mapping[str, SourceStatus] = {}
        self.active: int | None = None

    def describe(self) -> list[Metric]:
        return []  # families depend on the snapshot; described at collect time

    def collect(self) -> Iterator[Metric]:
        c, site = self.counters, self.site  # one snapshot per scrape (replaced, not mutated)

        def fam(name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(f"{NAMESPACE}_{name}", doc, labels=("site", *labels))

        packets = fam("packets", "Packets handed to the engine by every capture source.")
        packets.add_metric([site], c.packets)
        yield packets

        started = fam("calls_started", "Calls whose first INVITE was seen.")
        started.add_metric([site], c.calls_started)
        yield started

        active = GaugeMetricFamily(f"{NAMESPACE}_calls_active",
                                   "Calls in progress (started, not yet ended).", labels=["site"])
        n = self.active
        if n is None:
            n = c.calls_started - c.calls_ended  # an evicted call gets its record too
        active.add_metric([site], max(0, n))
        yield active

        requests = fam("sip_requests", "SIP requests seen (retransmissions included), by "
                       "peer (the destination's, else the source's) and method.",
                       ("peer", "method"))
        by_peer: dict[tuple[str, str], int] = {}
        for (peer, method), value in c.sip_requests.items():
            key = (self.peer(peer), _pick(method, METHODS, "OTHER"))
            by_peer[key] = by_peer.get(key, 0) + value
        for (peer, method), value in sorted(by_peer.items()):
            requests.add_metric([site, peer, method], value)
        yield requests
        responses = fam("sip_responses", "SIP responses seen, by status class.",
                        ("status_class",))
        for cls, value in sorted(c.sip_responses.items()):
            if cls in STATUS_CLASSES:
                responses.add_metric([site, cls], value)
        yield responses

        parse = fam("parse_errors", "Messages dropped as malformed, by protocol.", ("protocol",))
        for proto in PARSE_ERROR_PROTOCOLS:
            parse.add_metric([site, proto], c.parse_errors.get(proto, 0))
        yield parse

        reports = fam("endpoint_reports", "RFC 6035 vq-rtcpxr reports from endpoints, by "
                      "outcome: received (parsed), malformed, joined to their call, late "
                      "(after the call's record), unknown_call, unmatched (joined, but "
                      "describing none of the call's streams).", ("outcome",))
        for outcome in REPORT_OUTCOMES:
            reports.add_metric([site, outcome], c.endpoint_reports.get(outcome, 0))
        yield reports

        decode = fam("decode_errors", "Frames the decoder dropped, by reason.", ("reason",))
        for reason in DECODE_DROP_REASONS:
            decode.add_metric([site, reason], c.decode_drops.get(reason, 0))
        yield decode

        # evidence pcaps (agent/calls/evidence.py, agent/export/evidence.py)
        ev = c.evidence
        written = fam("evidence_files_written", "Evidence pcaps written (bad calls' SIP and "
                      "RTP/RTCP headers).")
        written.add_metric([site], ev.files_written)
        yield written
        errors = fam("evidence_write_errors", "Evidence pcaps not written or not rotated "
                     "out (file system errors): the record names no file.")
        errors.add_metric([site], ev.write_errors)
        yield errors
        capped = fam("evidence_packets_dropped", "Packets left out of a call's evidence, "
                     "by reason: call_cap (max_bytes_per_call), buffer_cap (max_buffer_bytes).",
                     ("reason",))
        for reason in EVIDENCE_DROP_REASONS:
            capped.add_metric([site, reason], ev.packets_dropped.get(reason, 0))
        yield capped

        yield from _hep_families(fam, c.hep, site)
        yield from _mirror_families(fam, self.mirrors, self.sequences, site)

        evictions = fam("table_evictions", "Entries evicted from a full table (size cap).",
                        ("table",))
        for table, value in sorted(c.table_evictions.items()):
            evictions.add_metric([site, table], value)
        yield evictions

        shed = fam("overload_shed_packets", "Packets dropped on purpose while the agent "
                   "was behind (signalling and known media kept), by kind.", ("kind",))
        for kind in SHED_KINDS:
            shed.add_metric([site, kind], c.shed.get(kind, 0))
        yield shed

        cap_packets = fam("capture_packets", "Packets the kernel delivered, by interface.",
                          ("interface",))
        cap_drops = fam("capture_kernel_drops",
                        "Packets the kernel dropped (ring full), by interface.", ("interface",))
        for iface, (pk, dr) in sorted(self.capture.items()):
            cap_packets.add_metric([site, iface], pk)
            cap_drops.add_metric([site, iface], dr)
        yield cap_packets
        yield cap_drops
        yield from _source_families(self.sources, site)


# errno names of call-log write failures that get their own series (a bounded set: the
# faults a log file meets); any other errno is counted as ``other``.
CALLLOG_ERRNOS = ("ENOSPC", "EDQUOT", "EFBIG", "EIO", "EROFS", "EACCES", "EPERM", "ENOENT",
                  "ENOTDIR", "EPIPE")
_CALLLOG_ERRNO_SET = frozenset(CALLLOG_ERRNOS)


class _CallLogCollector(Collector):
    """The call log's totals (`CallLogStats`, replaced as a whole by each update)."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.stats = CallLogStats()

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        st, site = self.stats, self.site

        def counter(name: str, doc: str, value: int) -> CounterMetricFamily:
            fam = CounterMetricFamily(f"{NAMESPACE}_calllog_{name}", doc, labels=("site",))
            fam.add_metric([site], value)
            return fam

        yield counter("records_written", "Call records written to the call log.",
                      st.records_written)
        yield counter("records_dropped", "Call records never written: the queue of records "
                      "waiting out a write fault overflowed (the oldest go), or records were "
                      "still waiting when the agent stopped.", st.records_dropped)
        pending = GaugeMetricFamily(f"{NAMESPACE}_calllog_records_pending", "Call records "
                                    "waiting in memory for the call log to take them.",
                                    labels=("site",))
        pending.add_metric([site], st.records_pending)
        yield pending
        errors = CounterMetricFamily(
            f"{NAMESPACE}_calllog_write_errors", "Failed attempts to write the call log "
            "(about one a second while a fault lasts), by errno.", labels=("site", "errno"))
        by_errno = dict.fromkeys((*CALLLOG_ERRNOS, OTHER), 0)
        for name, n in st.write_errors.items():
            label = _pick(name, _CALLLOG_ERRNO_SET)
            by_errno[label] += n
        for name, n in by_errno.items():
            errors.add_metric([site, name], n)
        yield errors
        reopens = CounterMetricFamily(
            f"{NAMESPACE}_calllog_reopens", "Call log file reopened: on SIGHUP (signal), or "
            "before a write, found removed or renamed (missing) or another file at its path "
            "(replaced).", labels=("site", "reason"))
        for reason in REOPEN_REASONS:
            reopens.add_metric([site, reason], st.reopens.get(reason, 0))
        yield reopens


class _HepOutCollector(Collector):
    """HEP out's per-collector totals (`agent.export.hepout.CollectorStats`)."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.stats: list[Any] = []

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        lab = ("site", "collector")
        sent = CounterMetricFamily(f"{NAMESPACE}_hep_out_sent", "HEP packets sent to a "
                                   "collector.", labels=lab)
        dropped = CounterMetricFamily(
            f"{NAMESPACE}_hep_out_dropped", "HEP packets not sent: the queue was full "
            "(queue_full), the collector was unreachable (not_connected), a send failed "
            "(send_error), or the packet exceeded HEP's 64 KiB (too_large).",
            labels=(*lab, "reason"))
        depth = GaugeMetricFamily(f"{NAMESPACE}_hep_out_queue_depth", "HEP packets waiting "
                                  "in a collector's send queue.", labels=lab)
        up = GaugeMetricFamily(f"{NAMESPACE}_hep_out_up", "1 while the collector's "
                               "connection is up (UDP: its socket is open).", labels=lab)
        for st in self.stats:
            sent.add_metric([self.site, st.name], st.sent)
            for reason, n in st.dropped.items():
                dropped.add_metric([self.site, st.name, reason], n)
            depth.add_metric([self.site, st.name], st.queued)
            up.add_metric([self.site, st.name], 1 if st.up else 0)
        yield from (sent, dropped, depth, up)


#: OpenMetrics limits an exemplar's label set to 128 UTF-8 characters, names included.
EXEMPLAR_MAX_CHARS = 128


def exemplar(reference: str | None) -> dict[str, str] | None:
    """The exemplar labels naming a call (``call_id``: its reference as the call log
    shows it), or None without one. A clear Call-ID longer than the limit is cut: its
    start still finds the call in the log (``grep -F``)."""
    if not reference:
        return None
    return {"call_id": reference[:EXEMPLAR_MAX_CHARS - len("call_id")]}


# SLA profile limits as gauges (DESIGN.md rule 6: peer and profile names from the config),
# so that alerts compare with the profile a peer is bound to instead of a number written
# into the rules. One family per quantity, in base units: (profile field, metric name
# after ``voipprobe_sla_``, factor to the base unit, help).
SLA_LIMITS: tuple[tuple[str, str, float, str], ...] = (
    ("min_mos_cq", "min_mos_cq", 1.0, "lowest MOS-CQ a call direction may score"),
    ("max_jitter_ms", "max_jitter_seconds", 0.001, "highest interarrival jitter"),
    ("max_loss_ratio", "max_loss_ratio", 1.0, "highest network loss ratio"),
    ("max_rtt_ms", "max_round_trip_seconds", 0.001, "highest round trip (RTCP)"),
    ("max_one_way_delay_ms", "max_one_way_delay_seconds", 0.001, "highest one-way delay"),
    ("max_setup_delay_s", "max_setup_delay_seconds", 1.0, "highest setup delay"),
    ("min_dscp_compliance_ratio", "min_dscp_compliance_ratio", 1.0,
     "lowest share of packets carrying an accepted DSCP"),
)


class _SlaLimitsCollector(Collector):
    """The current configuration's limits, per peer (configured peers and ``other``) and
    the profile it is bound to; a limit the profile leaves out has no series."""

    def __init__(self, site: str, config: Callable[[], Config]) -> None:
        self.site = site
        self.config = config

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        sla = self.config().sla
        bound = [(p.name, sla.profile_for_peer(p.name)) for p in sla.peers]
        bound.append((OTHER_PEER, sla.profile_for_peer(OTHER_PEER)))
        for field, name, factor, doc in SLA_LIMITS:
            fam = GaugeMetricFamily(
                f"{NAMESPACE}_sla_{name}", f"SLA profile limit ({field}): the {doc}, for "
                "the calls with each peer (the profile that peer is bound to).",
                labels=("site", "peer", "profile"))
            for peer, profile in bound:
                limit = getattr(profile, field)
                if limit is not None:
                    fam.add_metric([self.site, peer, profile.name], float(limit) * factor)
            yield fam


class ProbeMetrics:
    """Every metric family of the probe, registered in ``registry``.

    ``config`` gives the bounded label sets (peer and profile names, accepted
    DSCP classes); `set_config` replaces it after a reload. Thread-safe: the
    capture loop calls `observe`/`update`, the HTTP server scrapes.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, site: str = "default",
                 config: Config | None = None, version: str = __version__) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.site = site if _LABEL_SAFE.match(site) else OTHER
        self._lock = threading.Lock()
        self._config = config or Config()
        # packets, lost, DSCP-bad per stream, oldest first
        self._streams: OrderedDict[StreamKey, tuple[int, int, int]] = OrderedDict()
        self._interfaces: frozenset[str] | None = None
        self._counters = _CountersCollector(self.site)
        self._counters.peer = self._peer
        self._call_log = _CallLogCollector(self.site)
        r = self.registry
        r.register(self._counters)
        r.register(self._call_log)
        self._hep_out = _HepOutCollector(self.site)
        r.register(self._hep_out)
        r.register(_SlaLimitsCollector(self.site, lambda: self._config))
        q = ("site", "peer", "direction", "codec")
        qp = (*q, "point")  # what a stream at one observation point measured

        self.calls_ended = Counter("calls_ended", "Calls ended, by end reason and final status.",
                                   ["site", "peer", "end_reason", "status_class"],
                                   namespace=NAMESPACE, registry=r)
        self.sla_verdicts = Counter("sla_verdicts", "SLA verdicts of ended calls.",
                                    ["site", "peer", "profile", "verdict"],
                                    namespace=NAMESPACE, registry=r)
        self.sla_violations = Counter(
            "sla_violations", "Ended calls that crossed an SLA threshold (once per call).",
            ["site", "peer", "profile", "threshold"], namespace=NAMESPACE, registry=r)
        self.calls_lossy = Counter(
            "calls_capture_lossy", "Ended calls during which the probe itself lost "
            "packets (kernel ring drops, a capture interface gone, mirrored copies "
            "missing): their record says capture_lossy, their figures may be the probe's "
            "fault.", ["site", "peer"], namespace=NAMESPACE, registry=r)
        self.calls_one_way = Counter(
            "calls_one_way_media", "Answered calls whose media passed the probe in one "
            "direction only (a_to_b: caller to callee), once they lasted the profile's "
            "two_way_media_after_s.", ["site", "peer", "direction"],
            namespace=NAMESPACE, registry=r)
        self.call_mos = Histogram("call_mos", "MOS-CQ (E-model) of each call direction.", q,
                                  namespace=NAMESPACE, buckets=MOS_BUCKETS, registry=r)
        self.call_jitter = Histogram(
            "call_jitter_seconds", "RFC 3550 interarrival jitter at the end of each direction.",
            q, namespace=NAMESPACE, buckets=JITTER_BUCKETS_S, registry=r)
        self.call_loss = Histogram("call_loss_ratio", "Network loss ratio of each direction.", q,
                                   namespace=NAMESPACE, buckets=LOSS_BUCKETS, registry=r)
        self.call_rtt = Histogram("call_round_trip_seconds", "Caller-callee round trip (RTCP).",
                                  ["site", "peer"], namespace=NAMESPACE,
                                  buckets=ROUND_TRIP_BUCKETS_S, registry=r)
        self.call_setup = Histogram(
            "call_setup_delay_seconds", "INVITE to first ringing/final response (RFC 6076 SRD).",
            ["site", "peer"], namespace=NAMESPACE, buckets=SETUP_DELAY_BUCKETS_S, registry=r)
        self.endpoint_mos_difference = Histogram(
            "endpoint_mos_difference", "Endpoint-reported (RFC 6035) MOS-CQ minus the "
            "probe's MOS-CQ, per call direction with both.", ["site", "peer", "direction"],
            namespace=NAMESPACE, buckets=MOS_DIFFERENCE_BUCKETS, registry=r)
        self.interval_mos = Histogram(
            "interval_mos", "MOS-CQ of each rated interval of a running stream.", qp,
            namespace=NAMESPACE, buckets=MOS_BUCKETS, registry=r)
        self.interval_jitter = Histogram(
            "interval_jitter_seconds", "Interarrival jitter at the end of each interval.", qp,
            namespace=NAMESPACE, buckets=JITTER_BUCKETS_S, registry=r)
        self.interval_loss = Histogram("interval_loss_ratio", "Network loss ratio per interval.",
                                       qp, namespace=NAMESPACE, buckets=LOSS_BUCKETS, registry=r)
        self.interval_rtt = Histogram(
            "interval_round_trip_seconds", "Round trip per interval (when RTCP measured it).",
            ["site", "peer"], namespace=NAMESPACE, buckets=ROUND_TRIP_BUCKETS_S, registry=r)
        self.rtp_packets = Counter("rtp_packets", "RTP packets received.", qp,
                                   namespace=NAMESPACE, registry=r)
        self.rtp_lost = Counter("rtp_lost_packets", "RTP packets lost (sequence gaps).", qp,
                                namespace=NAMESPACE, registry=r)
        self.lost_between_points = Counter(
            "lost_between_points_packets", "RTP packets of ended call directions seen at "
            "an upstream observation point and not at the next one downstream (dropped "
            "between them: e.g. in the gateway).",
            ["site", "peer", "direction", "upstream", "downstream"],
            namespace=NAMESPACE, registry=r)
        self.dscp_mismatched = Counter(
            "dscp_mismatched_packets", "Packets whose DSCP the peer's profile does not "
            "accept, by the expected class: media (audio RTP, counted live like "
            "voipprobe_rtp_packets_total, so their ratio is the mismatched fraction) and "
            "signalling (SIP of ended calls).", ["site", "peer", "traffic", "expected"],
            namespace=NAMESPACE, registry=r)
        self.build_info = Gauge("build_info", "Always 1; the probe's version in labels.",
                                ["site", "version", "python_version"], namespace=NAMESPACE,
                                registry=r)
        self.build_info.labels(self.site, version, platform.python_version()).set(1)
        reload_ok = Gauge("config_last_reload_successful",
                          "1 when the last configuration (re)load succeeded.", ["site"],
                          namespace=NAMESPACE, registry=r)
        reload_ts = Gauge("config_last_reload_success_timestamp_seconds",
                          "Unix time of the last successful configuration load.", ["site"],
                          namespace=NAMESPACE, registry=r)
        self.reload_ok, self.reload_ts = reload_ok.labels(self.site), reload_ts.labels(self.site)
        self.reload_ok.set(1)

    # -- configuration ----------------------------------------------------------------

    def set_config(self, config: Config) -> None:
        """Use a reloaded configuration's peer and profile names from now on."""
        with self._lock:
            self._config = config

    def set_interfaces(self, names: Iterable[str]) -> None:
        """The configured interface names: capture stats of any other become ``other``."""
        self._interfaces = frozenset(names)

    def config_reloaded(self, ok: bool, ts: float | None = None) -> None:
        """Record a (re)load: ``ok`` and, when it succeeded, its Unix time ``ts``."""
        self.reload_ok.set(1 if ok else 0)
        if ok and ts is not None:
            self.reload_ts.set(ts)

    def set_active(self, n: int) -> None:
        """Override the active-calls gauge (default: started - ended)."""
        self._counters.active = n

    # -- input ------------------------------------------------------------------------

    def update(self, counters: CounterSnapshot,
               capture: Mapping[str, CaptureCounts] | None = None,
               sequences: Mapping[str, SequenceGaps] | None = None) -> None:
        """Latest absolute totals: ``Engine.snapshot()``, per-interface (and listener)
        capture stats, and the GRE sequence gaps by point (``Decoder.sequence_gaps()``)."""
        self._counters.counters = counters
        if capture is not None:
            merged: dict[str, tuple[int, int]] = {}
            mirrors: dict[tuple[str, str], MirrorStats] = {}
            for name, st in capture.items():
                label = self._interface(name)
                pk, dr = merged.get(label, (0, 0))
                merged[label] = (pk + int(st.packets), dr + int(st.drops))
                if isinstance(st, MirrorStats):
                    key = (label, st.protocol)
                    mirrors[key] = _sum_mirror(mirrors[key], st) if key in mirrors else st
            self._counters.capture = merged
            self._counters.mirrors = mirrors
        if sequences is not None:
            by_label: dict[str, SequenceGaps] = {}
            for name, gaps in sequences.items():
                label = self._point(name)  # the configured name, else the kind: "erspan"
                had = by_label.get(label, SequenceGaps())
                by_label[label] = SequenceGaps(had.lost + gaps.lost, had.resets + gaps.resets)
            self._counters.sequences = by_label

    def update_sources(self, statuses: Iterable[SourceStatus]) -> None:
        """The configured sources' latest state (`SourceMonitor.statuses`)."""
        by_label: dict[str, SourceStatus] = {}
        for st in statuses:
            label = self._interface(st.name)
            if label not in by_label or not st.up:  # two under ``other``: any down is down
                by_label[label] = st
        self._counters.sources = by_label

    def update_hep_out(self, stats: Sequence[Any]) -> None:
        """HEP out's collectors (`HepOut.stats()`); the collector label is bounded by
        the config's list."""
        self._hep_out.stats = list(stats)

    def update_call_log(self, stats: CallLogStats) -> None:
        """The call log's latest totals (`CallLog.stats()`)."""
        self._call_log.stats = stats

    def observe(self, event: Event, reference: str | None = None) -> None:
        """Account one engine event. ``reference``: how the call log names an ended
        call (its pseudonymised Call-ID), put on the call histograms as an OpenMetrics
        exemplar (`exemplar`)."""
        with self._lock:
            if isinstance(event, CallEnded):
                self._call_ended(event.record, exemplar(reference))
            elif isinstance(event, CallInterval):
                self._interval(event)
            elif isinstance(event, StreamEnded):
                self._stream_ended(event.stats, event.labels)

    def observe_all(self, events: Iterable[Event]) -> None:
        for e in events:
            self.observe(e)

    # -- labels -----------------------------------------------------------------------

    def _interface(self, name: str) -> str:
        if self._interfaces is not None:
            return name if name in self._interfaces else OTHER
        return name if _LABEL_SAFE.match(name) else OTHER

    def _peer(self, name: str | None) -> str:
        peers = {p.name for p in self._config.sla.peers}
        return name if name is not None and name in peers else OTHER_PEER

    def _profile(self, name: str) -> str:
        return name if name in self._config.sla.profiles else OTHER

    def _stream_labels(self, s: StreamStats, core: StreamLabels) -> tuple[str, str, str, str, str]:
        """The labels the core gave the stream (agent/calls/labels.py), bounded here."""
        return (self.site, self._peer(core.peer), _pick(core.direction, DIRECTIONS, UNKNOWN),
                core.codec, self._point(s.key.point))

    def _point_shown(self, shown: str) -> str:
        """The label of a point as a record shows it (its configured name, or its own)."""
        if shown in self._config.capture.point_names.values():
            return shown
        return self._point(shown)

    def _point(self, name: str) -> str:
        """A bounded ``point`` label: the configured name, an interface's own name (the
        host has few), a remote exporter's kind (``vxlan``: never its address)."""
        named = self._config.capture.point_names.get(name)
        if named is not None:
            return named
        if not name:
            return UNNAMED_POINT
        if "/" in name:
            return name.split("/", 1)[0]
        return name if _POINT_SAFE.match(name) else OTHER

    # -- events -----------------------------------------------------------------------

    def _call_ended(self, rec: CallRecord, ex: dict[str, str] | None = None) -> None:
        site, peer = self.site, self._peer(rec.peer)
        reason = _pick(rec.end_reason, END_REASONS)
        self.calls_ended.labels(site, peer, reason, status_class(rec.final_status)).inc()
        profile = self._profile(rec.sla.profile)
        self.sla_verdicts.labels(site, peer, profile, _pick(rec.sla.verdict, VERDICTS)).inc()
        crossed = {v.threshold for v in rec.sla.violations}
        for d in rec.directions:
            if d.sla is not None:
                crossed.update(v.threshold for v in d.sla.violations)
        for threshold in sorted(crossed):
            self.sla_violations.labels(site, peer, profile,
                                       _pick(threshold, THRESHOLD_NAMES)).inc()
        lossy = self.calls_lossy.labels(site, peer)  # the zero series exists too
        if rec.capture_lossy:
            lossy.inc()
        for direction in ONE_WAY_DIRECTIONS:  # both series exist, so rate() works at once
            child = self.calls_one_way.labels(site, peer, direction)
            if rec.one_way_media == direction:
                child.inc()
        if rec.rtt_ms is not None:
            self.call_rtt.labels(site, peer).observe(rec.rtt_ms / 1000.0, ex)
        if rec.setup_delay_s is not None:
            self.call_setup.labels(site, peer).observe(rec.setup_delay_s, ex)
        for d in rec.directions:
            self._direction(rec, d, peer, ex)
            for hop in d.loss_between_points:
                self.lost_between_points.labels(
                    site, peer, _pick(d.direction, DIRECTIONS, UNKNOWN),
                    self._point_shown(hop.upstream),
                    self._point_shown(hop.downstream)).inc(hop.lost)
        self._dscp(rec, peer, profile)

    def _direction(self, rec: CallRecord, d: DirectionRecord, peer: str,
                   ex: dict[str, str] | None = None) -> None:
        codec = codec_label(d.stream.codec or rec.codec)
        labels = (self.site, peer, _pick(d.direction, DIRECTIONS, UNKNOWN), codec)
        if d.quality is not None:  # audio only: video, T.38, events alone get no MOS
            self.call_mos.labels(*labels).observe(d.quality.mos_cq, ex)
        rep = d.endpoint_report
        if rep is not None and rep.mos_cq_difference is not None:
            self.endpoint_mos_difference.labels(*labels[:3]).observe(rep.mos_cq_difference)
        self.call_jitter.labels(*labels).observe(d.stream.jitter_ms / 1000.0, ex)
        self.call_loss.labels(*labels).observe(d.stream.loss_ratio, ex)

    def _dscp(self, rec: CallRecord, peer: str, profile_name: str) -> None:
        profile = self._config.sla.profiles.get(profile_name)
        if profile is None:
            return
        # Media packets are counted as they are seen, with voipprobe_rtp_packets
        # (`_count_rtp`); signalling when its call ends, with its record.
        accepted = profile.signalling_dscp
        if accepted is not None:
            bad = sum(n for v, n in rec.signalling_dscp.items() if int(v) not in accepted)
            child = self.dscp_mismatched.labels(self.site, peer, "signalling",
                                                dscp_class(accepted))
            child.inc(bad)  # also creates the zero series, so rate() works from the start

    def _interval(self, e: CallInterval) -> None:
        s = e.delta
        labels = self._stream_labels(s, e.labels)
        if e.quality is not None:
            self.interval_mos.labels(*labels).observe(e.quality.mos_cq)
            if e.quality.delay_source == "measured":
                rtt_s = 2.0 * e.quality.network_delay_ms / 1000.0
                self.interval_rtt.labels(labels[0], labels[1]).observe(rtt_s)
        if s.packets > 0:
            self.interval_jitter.labels(*labels).observe(s.jitter_ms / 1000.0)
            if s.expected > 0:
                self.interval_loss.labels(*labels).observe(s.loss_ratio)
        self._count_rtp(s, labels, s.packets, s.lost, final=False)

    def _stream_ended(self, s: StreamStats, core: StreamLabels) -> None:
        done_packets, done_lost, _ = self._streams.get(s.key, (0, 0, 0))
        self._count_rtp(s, self._stream_labels(s, core), s.packets - done_packets,
                        s.lost - done_lost, final=True)

    def _count_rtp(self, s: StreamStats, labels: tuple[str, ...], packets: int,
                   lost: int, *, final: bool) -> None:
        """Count RTP live from interval deltas; the stream's end adds the remainder. The
        DSCP-mismatched packets of an audio stream are counted on the same clock (``s``
        carries the stream's DSCP counts so far), so the two counters' ratio is the
        fraction of mismatched packets."""
        packets, lost = max(0, packets), max(0, lost)
        self.rtp_packets.labels(*labels).inc(packets)
        self.rtp_lost.labels(*labels).inc(lost)
        key = s.key
        pk, ls, bad = self._streams.pop(key, (0, 0, 0)) if final else \
            self._streams.get(key, (0, 0, 0))
        accepted = self._config.sla.profile_for_peer(labels[1]).media_dscp
        if accepted is not None and s.rated:  # the voice marking: audio, as the SLA judges
            now_bad = sum(n for v, n in s.dscp.items() if v not in accepted)
            child = self.dscp_mismatched.labels(self.site, labels[1], "media",
                                                dscp_class(accepted))
            child.inc(max(0, now_bad - bad))  # the zero series too, for rate()
            bad = max(bad, now_bad)
        if final:
            return
        if key not in self._streams and len(self._streams) >= _MAX_TRACKED_STREAMS:
            self._streams.pop(next(iter(self._streams)))  # oldest first (insertion order)
        self._streams[key] = (pk + packets, ls + lost, bad)
