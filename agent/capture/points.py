"""Observation points: where a packet was seen.

A probe on a gateway sees a forwarded packet twice (on the way in, on the way out);
a mirror or HEP exporter shows it from somewhere else again. Each packet carries the
point it was seen at (`Batch.point`, `Frames.point`), a small integer interned here
from the point's name, so the RTP layer measures each stream once per point and the
call layer can compare the points of one path (loss between them) instead of
counting a second sighting as a duplicate.

Names (what records print; metrics use `point_label`):

- a capture interface: its name, with ``:in`` / ``:out`` when the source tells the
  direction (the AF_PACKET ring's ``sll_pkttype``, a cooked capture's packet type):
  ``eth0:in``, ``eth1:out``. A cooked capture of ``any`` without interface indexes
  (LINUX_SLL) gives ``in`` / ``out``; one with indexes (LINUX_SLL2) ``if3:in``...
- a pcapng interface: its ``if_name`` option, else ``if<N>``;
- a remote exporter: ``<kind>/<sender address>[/<session>]``: ``vxlan/198.18.9.1/vni42``,
  ``erspan/198.18.9.1/s7``, ``tzsp/198.18.9.1``, ``gretap/...``, ``hep/<capture id>``;
- ``""`` (id 0): the one point of a source that tells nothing (a classic pcap of one
  interface).

Ids are process-wide (an interning table, like ``sys.intern``): the same name is the
same id in every engine, and no output depends on an id, only on names. The table
is bounded (`PointTable`): names the network chooses (spoofed exporters) have a quota
of their own, and beyond it become ``other``.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import socket
import threading
from collections import OrderedDict

import numpy as np
import numpy.typing as npt

UNNAMED = 0
OTHER_POINT = "other"
MAX_REMOTE_POINTS = 1024  # names the network chooses (exporters, HEP agents)
MAX_POINTS = 16384  # every name (interfaces, file interfaces, and the remote ones)

# Linux packet types (linux/if_packet.h): what the ring and cooked captures say.
PACKET_OUTGOING = 4
_SLL_PKTTYPE_OFF = 0  # LINUX_SLL: u16 packet type at byte 0
_SLL2_IFINDEX_OFF = 4  # LINUX_SLL2: u32 interface index at byte 4, packet type at 10
_SLL2_PKTTYPE_OFF = 10


class PointTable:
    """Point names <-> ids. Remote names (chosen by whoever sends a mirror or HEP) are
    bounded apart (`MAX_REMOTE_POINTS`), so a flood of spoofed exporters cannot take
    the ids local interfaces need; past a bound a name is ``other``."""

    def __init__(self, max_points: int = MAX_POINTS,
                 max_remote: int = MAX_REMOTE_POINTS) -> None:
        self.max_points = max_points
        self.max_remote = max_remote
        self._lock = threading.Lock()
        self._names: list[str] = ["", OTHER_POINT]
        self._ids: dict[str, int] = {"": UNNAMED, OTHER_POINT: 1}
        self._remote = 0

    def id(self, name: str, *, remote: bool = False) -> int:
        found = self._ids.get(name)
        if found is not None:
            return found
        with self._lock:
            found = self._ids.get(name)
            if found is not None:
                return found
            if len(self._names) >= self.max_points or (remote
                                                       and self._remote >= self.max_remote):
                return self._ids[OTHER_POINT]
            self._remote += remote
            self._names.append(name)
            self._ids[name] = len(self._names) - 1
            return self._ids[name]

    def name(self, pid: int) -> str:
        return self._names[pid] if 0 <= pid < len(self._names) else ""


POINTS = PointTable()  # the process's table (ids are the same in every engine)


def point_id(name: str, *, remote: bool = False) -> int:
    """The id of point ``name`` (interned on first use; ``other`` past the bounds)."""
    return POINTS.id(name, remote=remote)


def point_name(pid: int) -> str:
    """The name of point id ``pid`` (``""`` for an unknown id)."""
    return POINTS.name(pid)


@functools.lru_cache(maxsize=4096)
def exporter_point(kind: str, addr: int, session: str = "") -> int:
    """The point of a remote exporter: ``kind/address[/session]`` (``addr`` as the
    decoder holds it, 128-bit IPv4-mapped)."""
    ip = ipaddress.IPv6Address(addr)
    text = str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)
    return point_id(f"{kind}/{text}/{session}" if session else f"{kind}/{text}", remote=True)


def with_direction(base: str, outgoing: bool) -> str:
    """``eth0`` -> ``eth0:out`` / ``eth0:in``; ``""`` -> ``out`` / ``in``."""
    way = "out" if outgoing else "in"
    return f"{base}:{way}" if base else way


def interface_name(ifindex: int, names: dict[int, str]) -> str:
    """Interface index -> name on this host (cached in ``names``, bounded)."""
    name = names.get(ifindex)
    if name is None:
        try:
            name = socket.if_indextoname(ifindex)
        except OSError:
            name = f"if{ifindex}"
        if len(names) < MAX_POINTS:
            names[ifindex] = name
    return name


def directed_ids(base: npt.NDArray[np.int64], outgoing: npt.NDArray[np.bool_],
                 names: list[str] | None = None) -> npt.NDArray[np.uint16]:
    """Point ids for rows seen at interface ``names[base]`` (or point ``base`` itself
    when ``names`` is None) in the direction ``outgoing`` says: one lookup per
    distinct (interface, direction) of the batch."""
    code = base.astype(np.int64) * 2 + outgoing.astype(np.int64)
    uniq, inverse = np.unique(code, return_inverse=True)
    ids = np.empty(uniq.size, np.uint16)
    for j, c in enumerate(uniq.tolist()):
        b = names[c // 2] if names is not None else point_name(c // 2)
        ids[j] = point_id(with_direction(b, bool(c & 1)))
    return ids[inverse]


def cooked_points(data: npt.NDArray[np.uint8], offset: npt.NDArray[np.int64],
                  caplen: npt.NDArray[np.int32], linktype: npt.NDArray[np.uint16],
                  point: npt.NDArray[np.uint16], sll: int, sll2: int
                  ) -> npt.NDArray[np.uint16]:
    """``point`` refined for cooked-capture rows (``sll``/``sll2`` are their link types):
    the packet type gives the direction, LINUX_SLL2's interface index the interface."""
    out = point
    for lt, need in ((sll, 2), (sll2, 11)):
        rows = np.flatnonzero((linktype == lt) & (caplen >= need))
        if not rows.size:
            continue
        start = offset[rows]
        if lt == sll:
            ptype = data[start + _SLL_PKTTYPE_OFF + 1].astype(np.int64)  # low byte, BE u16
            uniq, inv = np.unique(point[rows], return_inverse=True)
            ids = directed_ids(inv, ptype == PACKET_OUTGOING,
                               [point_name(int(p)) for p in uniq.tolist()])
        else:
            at = start[:, None] + _SLL2_IFINDEX_OFF + np.arange(4)
            ifindex = data[at].astype(np.int64) @ np.array([1 << 24, 1 << 16, 1 << 8, 1])
            ptype = data[start + _SLL2_PKTTYPE_OFF].astype(np.int64)
            uniq, inv = np.unique(ifindex, return_inverse=True)
            ids = directed_ids(inv, ptype == PACKET_OUTGOING,
                               [f"if{int(i)}" for i in uniq.tolist()])
        if out is point:
            out = point.copy()
        out[rows] = ids
    return out


SIGHTING_WINDOW_S = 2.0  # a copy at another point this close in packet time is the same
SIGHTINGS_MAX = 65536  # messages remembered (least recent dropped first)


class Sightings:
    """Tells a second sighting of one message (the same bytes at another point: both
    sides of a gateway, a mirror and the wire) from a new transmission of it (a SIP
    retransmission: the same bytes again at a point that already saw them).

    A message seen at point P is a second sighting when identical bytes were seen at
    other points, not at P, within `SIGHTING_WINDOW_S` of packet time (either way:
    points' clocks may differ); otherwise it is a new transmission and the points that
    saw it start again from P. So a retransmission is never taken for a copy, even when
    one point missed the original. Bounded: `SIGHTINGS_MAX` digests, oldest dropped.
    """

    def __init__(self, window_s: float = SIGHTING_WINDOW_S, limit: int = SIGHTINGS_MAX) -> None:
        self.window_s = window_s
        self.limit = limit
        # digest -> (first seen, the points that saw it: a tuple, mostly of one, ~150
        # bytes less per entry than a set)
        self._seen: OrderedDict[bytes, tuple[float, tuple[int, ...]]] = OrderedDict()

    def is_copy(self, payload: bytes, point: int, ts: float) -> bool:
        digest = hashlib.blake2b(payload, digest_size=12).digest()
        entry = self._seen.get(digest)
        if entry is not None and point not in entry[1] and abs(ts - entry[0]) <= self.window_s:
            self._seen[digest] = (entry[0], (*entry[1], point))
            return True
        self._seen[digest] = (ts, (point,))
        self._seen.move_to_end(digest)
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return False
