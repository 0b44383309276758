"""Observation points: names, cooked captures, copies at a second point."""

from __future__ import annotations

import struct

from agent.capture.batch import Batch, LinkType
from agent.capture.points import (
    PointTable,
    Sightings,
    cooked_points,
    exporter_point,
    point_id,
    point_name,
)


def test_names_are_interned_once() -> None:
    a = point_id("eth7:in")
    assert point_id("eth7:in") == a and point_name(a) == "eth7:in"
    assert point_id("") == 0 and point_name(0) == "" and point_name(10 ** 6) == ""
    assert point_name(exporter_point("vxlan", 0xFFFF << 32 | 0xC6120901, "vni42")) == \
        "vxlan/198.18.9.1/vni42"
    assert point_name(exporter_point("hep", 0x20010DB8 << 96 | 1)) == "hep/2001:db8::1"


def test_the_table_is_bounded_and_floods_cannot_take_local_names() -> None:
    t = PointTable(max_points=40, max_remote=10)
    remote = [t.id(f"vxlan/198.18.0.{i}", remote=True) for i in range(30)]
    assert len(set(remote[:10])) == 10 and {t.name(i) for i in remote[10:]} == {"other"}
    local = [t.id(f"eth{i}:in") for i in range(30)]
    assert [t.name(i) for i in local[:28]] == [f"eth{i}:in" for i in range(28)]
    assert {t.name(i) for i in local[28:]} == {"other"}  # 40 in all: "", other, 10, 28


def _sll(pkttype: int) -> bytes:
    return struct.pack("!HHH8sH", pkttype, 1, 6, b"\0" * 8, 0x0800) + b"\x45" + b"\0" * 19


def _sll2(ifindex: int, pkttype: int) -> bytes:
    return struct.pack("!HHIHBB8s", 0x0800, 0, ifindex, 1, pkttype, 6, b"\0" * 8) + b"\x45"


def test_cooked_captures_say_direction_and_interface() -> None:
    pkts = [_sll(0), _sll(4), _sll2(3, 0), _sll2(3, 4), _sll2(5, 0), b"\0" * 20]
    lts = [LinkType.LINUX_SLL] * 2 + [LinkType.LINUX_SLL2] * 3 + [LinkType.ETHERNET]
    b = Batch.from_packets(pkts, [0.0] * 6, linktype=[int(x) for x in lts])
    pts = cooked_points(b.data, b.offset, b.caplen, b.linktype, b.point,
                        LinkType.LINUX_SLL, LinkType.LINUX_SLL2)
    assert [point_name(int(p)) for p in pts] == ["in", "out", "if3:in", "if3:out", "if5:in", ""]
    assert not b.point.any()  # the batch's own column is not changed


def test_a_copy_at_another_point_is_not_a_retransmission() -> None:
    s = Sightings(window_s=2.0)
    msg = b"INVITE sip:b@x SIP/2.0\r\n\r\n"
    assert not s.is_copy(msg, 1, 10.0)
    assert s.is_copy(msg, 2, 10.0001)  # the gateway forwarded it
    assert not s.is_copy(msg, 1, 10.5)  # a retransmission: point 1 already saw it
    assert s.is_copy(msg, 2, 10.5001)
    assert not s.is_copy(msg, 2, 11.0)  # retransmitted again, point 1 missed it
    assert s.is_copy(msg, 1, 11.0002)
    assert not s.is_copy(msg, 3, 20.0)  # outside the window: a new transmission
    assert not s.is_copy(b"other", 2, 20.0)


def test_sightings_are_bounded() -> None:
    s = Sightings(limit=100)
    for i in range(1000):
        s.is_copy(i.to_bytes(4, "big"), 1, float(i))
    assert len(s._seen) == 100
    assert s.is_copy((999).to_bytes(4, "big"), 2, 999.5)  # the newest: still known
    assert not s.is_copy((0).to_bytes(4, "big"), 2, 0.5)  # the oldest: forgotten
