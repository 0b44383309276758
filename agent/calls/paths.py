"""One media direction seen at several observation points: its path and the loss on it.

The RTP layer measures a stream once per observation point (`StreamKey.point`): a
probe on both sides of a gateway, or a mirror beside the wire, sees each packet at
each point, and each point's figures are true for that point. Here a call's streams
are grouped back into directions: streams of one direction (toward the same side)
with the same SSRC, seen at different points over overlapping times, are *one*
direction seen along its path. (Only the SSRC and the side are compared, not the
addresses, so a NAT between the points does not split it.)

Path order. A packet can only be lost downstream of a point that saw it, so the
point that received more distinct packets is upstream; equal counts are ordered by
the first packet's time (the upstream point sees it first), then by name. The
direction's figures (`CallRecord` stream, quality, SLA) are those at the *last*
point (what the receiver gets, as far as the probe can see, which is what a probe
on that link alone would report), except for inbound media, judged at its *first*
point, the one nearest the provider (`judged_where`): a provider's SLA verdict
never counts what the gateway or the LAN lost. The record also lists every point's figures and,
for each pair of consecutive points, the packets lost between them (distinct
packets the upstream point saw that the downstream one did not): the WAN side
clean and the LAN side 10 % lost says the gateway dropped them, not the provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from agent.calls.record import LossBetweenRecord, PointRecord
from agent.rtp.model import StreamStats
from agent.sip.events import Side

OVERLAP_SLACK_S = 2.0  # streams at two points this far apart in time are still one


@dataclass(frozen=True, slots=True)
class Sighted:
    """A direction: its stream at each point, upstream first; ``main`` is the one the
    direction is judged on (``path[at]``: the last point unless `judged_where` says)."""

    toward: Side
    path: tuple[StreamStats, ...]
    at: int = -1

    @property
    def main(self) -> StreamStats:
        return self.path[self.at]


def judged_where(d: Sighted, direction: str) -> Sighted:
    """Where a direction is judged against its provider's SLA. Inbound media (from the
    provider toward the local networks, `agent.sla.policy.direction_of`) at its *first*
    point, the one nearest the provider: what was lost after it was lost on this side
    (the gateway, the LAN), and a verdict against the provider must not count it; the
    record still shows every point and the loss between them. Every other direction at
    its last point: what is handed on toward the receiver, as far as the probe sees."""
    return replace(d, at=0) if direction == "inbound" else d


def distinct(s: StreamStats) -> int:
    return s.packets - s.duplicates


def _order(s: StreamStats) -> tuple[int, float, str]:
    return (-distinct(s), s.first_ts, s.key.point)


def group(streams: list[tuple[Side, StreamStats]]) -> list[Sighted]:
    """The directions of ``streams`` (each a stream at one point), in the order of
    their first stream. Streams all at one point come back one direction each."""
    groups: list[tuple[Side, list[StreamStats]]] = []
    open_: dict[tuple[Side, int], list[int]] = {}
    for toward, s in streams:
        bucket = open_.setdefault((toward, s.key.ssrc), [])
        for g in bucket:
            members = groups[g][1]
            if s.key.point not in {m.key.point for m in members} and _overlaps(members, s):
                members.append(s)
                break
        else:
            bucket.append(len(groups))
            groups.append((toward, [s]))
    return [Sighted(toward, tuple(sorted(ms, key=_order))) for toward, ms in groups]


def _overlaps(members: list[StreamStats], s: StreamStats) -> bool:
    first = min(m.first_ts for m in members)
    last = max(m.last_ts for m in members)
    return s.first_ts <= last + OVERLAP_SLACK_S and s.last_ts >= first - OVERLAP_SLACK_S


def point_records(d: Sighted, names: Mapping[str, str]) -> list[PointRecord]:
    """Every point's figures, upstream first (empty when the direction has one point)."""
    if len(d.path) < 2:
        return []
    return [PointRecord(
        point=display(s.key.point, names), packets=s.packets, lost=s.lost,
        loss_ratio=round(s.loss_ratio, 6), duplicates=s.duplicates,
        jitter_ms=round(s.jitter_ms, 4), first_ts=s.first_ts, last_ts=s.last_ts,
    ) for s in d.path]


def losses_between(d: Sighted, names: Mapping[str, str]) -> list[LossBetweenRecord]:
    """Packets lost between each pair of consecutive points of the path."""
    out = []
    for up, down in zip(d.path, d.path[1:], strict=False):
        seen = distinct(up)
        lost = max(0, seen - distinct(down))
        out.append(LossBetweenRecord(
            upstream=display(up.key.point, names), downstream=display(down.key.point, names),
            lost=lost, loss_ratio=round(lost / seen, 6) if seen else 0.0))
    return out


def display(point: str, names: Mapping[str, str]) -> str:
    """A point's name as the admin configured it (``capture.point_names``), else its own."""
    return names.get(point, point)
