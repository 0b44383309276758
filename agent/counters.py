"""`CounterSnapshot`: the pipeline's totals, typed, as the sinks read them.

The engine's stages each keep their own counter dataclass (`DecodeCounters`,
`HepCounters`, `SipTrackerCounters`, `CallCounters` ...). `Engine.snapshot()`
reads them by attribute into this frozen snapshot, grouped the way the sinks
show them: SIP requests by peer and method, responses by class, decode drops
by reason, table evictions by table, the HEP counters by version and reason.
The exporter yields its counter families from these fields (as client_python's
``gc_collector`` does from ``gc.get_stats()``), never by decoding names.

``totals`` is every stage counter flat, ``<stage>_<name>``: the counters part of
``analyze --json``'s summary line, whose format is a contract of its own.
Every key of every mapping comes from the code or the config, never from the
network, so each is a bounded label set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

HEP_VERSIONS = ("1", "2", "3")
DECODE_DROP_REASONS = (
    "unsupported_linktype", "not_ip", "truncated", "bad_ip_header", "bad_l4_header",
    "tunnel_too_deep", "tunnel_unsupported", "fragments_bad",
)  # fmt: skip
HEP_DROP_REASONS = ("duplicate", "json_report", "other_type", "rtcp_json_malformed")
HEP_TCP_UNFRAMED_REASONS = ("retransmitted", "gaps", "desynced", "skipped")
PARSE_ERROR_PROTOCOLS = ("sip", "sdp", "rtcp", "vq-rtcpxr")
EVIDENCE_DROP_REASONS = ("call_cap", "buffer_cap")
SHED_KINDS = ("rtp_candidate", "media")  # agent/capture/overload.py
REPORT_OUTCOMES = ("received", "malformed", "joined", "late", "unknown_call", "unmatched")


@dataclass(frozen=True, slots=True)
class HepCounts:
    """HEP datagrams sniffed on the HEP ports (`agent.decode.hep_unwrap`)."""

    packets: int = 0  # UDP datagrams to a HEP port that start like HEP
    bytes: int = 0  # their UDP payload bytes
    records_by_version: Mapping[str, int] = field(default_factory=dict)  # HEP_VERSIONS
    errors_by_version: Mapping[str, int] = field(default_factory=dict)
    dropped_by_reason: Mapping[str, int] = field(default_factory=dict)  # HEP_DROP_REASONS
    # HEP-over-TCP segments not framed, by HEP_TCP_UNFRAMED_REASONS
    tcp_unframed_by_reason: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EvidenceCounts:
    """Evidence pcaps (`agent.calls.evidence` keeps, `agent.export.evidence` writes)."""

    files_written: int = 0
    write_errors: int = 0
    packets_dropped: Mapping[str, int] = field(default_factory=dict)  # EVIDENCE_DROP_REASONS


@dataclass(frozen=True, slots=True)
class CounterSnapshot:
    """Absolute totals since the engine started (monotonic: Prometheus counters)."""

    packets: int = 0  # handed to the engine by every source
    calls_started: int = 0
    calls_ended: int = 0  # records emitted (evicted calls too)
    # (peer, method) -> requests, retransmissions included; peer: agent/calls/labels.py
    sip_requests: Mapping[tuple[str, str], int] = field(default_factory=dict)
    sip_responses: Mapping[str, int] = field(default_factory=dict)  # "1xx".."6xx" -> n
    parse_errors: Mapping[str, int] = field(default_factory=dict)  # PARSE_ERROR_PROTOCOLS
    endpoint_reports: Mapping[str, int] = field(default_factory=dict)  # REPORT_OUTCOMES
    decode_drops: Mapping[str, int] = field(default_factory=dict)  # DECODE_DROP_REASONS
    table_evictions: Mapping[str, int] = field(default_factory=dict)  # table -> entries
    hep: HepCounts = field(default_factory=HepCounts)
    evidence: EvidenceCounts = field(default_factory=EvidenceCounts)
    # rows dropped on purpose while the agent was behind, by SHED_KINDS
    shed: Mapping[str, int] = field(default_factory=dict)
    totals: Mapping[str, int] = field(default_factory=dict)  # analyze's summary counters
