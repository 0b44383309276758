"""Decode limits and drop counters.

Accounting rule (tested): every packet of a batch ends in exactly one of
``frames`` (it produced a row), ``fragments_pending`` (an IP fragment stored for
reassembly) or one per-packet drop reason, so

    packets == frames + fragments_pending + sum(per-packet drop reasons)

``fragments_reassembled``, ``fragments_expired``, ``fragments_evicted``,
``tunnels_decapsulated`` and the GRE ``sequence_*`` totals count events (datagrams,
sets, or packets the exporter sent and the probe never saw), not packets of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds on the IP fragment reassembly table (DESIGN rule 4: every table is capped).

    - ``max_fragment_sets``: datagrams being reassembled at once; the oldest is evicted
    - ``fragment_timeout_s``: packet-time seconds from a set's first fragment until it
      expires (Linux ``ipfrag_time`` default, RFC 791's suggested 15 s upper bound x2)
    - ``max_fragment_bytes``: largest reassembled datagram (IPv4 max 65535 + IPv6 max)
    - ``max_fragment_total_bytes``: bytes held by all pending sets together
    """

    max_fragment_sets: int = 4096
    fragment_timeout_s: float = 30.0
    max_fragment_bytes: int = 65535 * 2
    max_fragment_total_bytes: int = 64 << 20


@dataclass(slots=True)
class DecodeCounters:
    """Running totals since the decoder was created (monotonic, for Prometheus counters)."""

    packets: int = 0
    frames: int = 0
    # per-packet drop reasons
    unsupported_linktype: int = 0
    not_ip: int = 0
    truncated: int = 0
    bad_ip_header: int = 0
    bad_l4_header: int = 0
    not_udp_tcp: int = 0
    tunnel_too_deep: int = 0
    tunnel_unsupported: int = 0  # a valid tunnel carrying a frame decode does not read
    fragments_bad: int = 0
    fragments_duplicate: int = 0
    # a fragment stored (no row yet)
    fragments_pending: int = 0
    # events
    fragments_reassembled: int = 0
    fragments_expired: int = 0
    fragments_evicted: int = 0
    tunnels_decapsulated: int = 0
    sequence_lost: int = 0  # mirrored copies missing from GRE sequence numbers (`sequence`)
    sequence_resets: int = 0  # GRE sequence numbers repeated, late or restarted

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}

    def add(self, reason: str, n: int = 1) -> None:
        setattr(self, reason, getattr(self, reason) + n)


PER_PACKET_DROPS: tuple[str, ...] = (
    "unsupported_linktype",
    "not_ip",
    "truncated",
    "bad_ip_header",
    "bad_l4_header",
    "not_udp_tcp",
    "tunnel_too_deep",
    "tunnel_unsupported",
    "fragments_bad",
    "fragments_duplicate",
)
