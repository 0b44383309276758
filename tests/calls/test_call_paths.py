"""A direction seen at several observation points (agent/calls/paths.py)."""

from __future__ import annotations

from dataclasses import replace

from callsbuild import stream

from agent.calls.paths import group, losses_between, point_records
from agent.rtp.model import StreamStats
from agent.sip.events import Side

A, B = ("198.18.7.1", 16000), ("198.18.8.2", 20000)


def at(s: StreamStats, point: str, *, dt: float = 0.0, packets: int | None = None,
       lost: int | None = None) -> StreamStats:
    p = s.packets if packets is None else packets
    lo = s.lost if lost is None else lost
    return replace(s, key=replace(s.key, point=point), packets=p, lost=lo, expected=p + lo,
                   first_ts=s.first_ts + dt, last_ts=s.last_ts + dt)


def test_one_point_streams_stay_one_direction_each() -> None:
    ab, ba = stream(A, B, 1), stream(B, A, 2)
    out = group([(Side.CALLEE, ab), (Side.CALLER, ba)])
    assert [(d.toward, d.path) for d in out] == [(Side.CALLEE, (ab,)), (Side.CALLER, (ba,))]
    assert point_records(out[0], {}) == [] and losses_between(out[0], {}) == []


def test_the_point_with_more_packets_is_upstream_and_the_last_is_judged() -> None:
    base = stream(A, B, 7, packets=1000)
    wan = at(base, "eth0:in")
    lan = at(base, "eth1:out", dt=0.0001, packets=900, lost=95)  # 5 of 100 at the end
    (d,) = group([(Side.CALLEE, lan), (Side.CALLEE, wan)])  # order of the input: any
    assert [s.key.point for s in d.path] == ["eth0:in", "eth1:out"]
    assert d.main is lan
    (hop,) = losses_between(d, {"eth0:in": "wan", "eth1:out": "lan"})
    assert (hop.upstream, hop.downstream, hop.lost, hop.loss_ratio) == ("wan", "lan", 100, 0.1)
    recs = point_records(d, {})
    assert [(r.point, r.packets, r.lost) for r in recs] == [("eth0:in", 1000, 0),
                                                            ("eth1:out", 900, 95)]


def test_equal_counts_go_by_first_packet_time() -> None:
    base = stream(A, B, 7)
    late, early = at(base, "b", dt=0.002), at(base, "a2", dt=0.0)
    (d,) = group([(Side.CALLEE, late), (Side.CALLEE, early)])
    assert [s.key.point for s in d.path] == ["a2", "b"]
    assert [h.lost for h in losses_between(d, {})] == [0]


def test_same_point_or_other_ssrc_or_far_apart_are_separate_directions() -> None:
    base = stream(A, B, 7)
    again = at(base, "eth0:in", dt=600.0)  # the same SSRC ten minutes later
    other = replace(base, key=replace(base.key, ssrc=8, point="eth1:out"))
    far = at(base, "eth1:out", dt=600.001)
    out = group([(Side.CALLEE, at(base, "eth0:in")), (Side.CALLEE, again),
                 (Side.CALLEE, other), (Side.CALLEE, far)])
    assert [len(d.path) for d in out] == [1, 2, 1]  # again + far overlap: one path
    assert {s.key.point for s in out[1].path} == {"eth0:in", "eth1:out"}


def test_a_nat_between_the_points_keeps_one_direction() -> None:
    inside = at(stream(A, B, 9), "eth1:in")
    outside = at(stream(("203.0.113.9", 40000), B, 9), "eth0:out", dt=0.0003)
    (d,) = group([(Side.CALLEE, inside), (Side.CALLEE, outside)])
    assert [s.key.point for s in d.path] == ["eth1:in", "eth0:out"]
    assert d.main is outside
