"""`Batch`: the one shape in which every packet source hands packets to the core.

A batch is a single contiguous byte buffer plus per-packet columns (numpy arrays
of equal length). Sources (pcap/pcapng files, the AF_PACKET ring, HEP/TZSP/ERSPAN
listeners) all produce it, so nothing downstream knows where packets came from.
Timestamps are the packets' own (float epoch seconds), never the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt


class LinkType(IntEnum):
    """LINKTYPE_* values (tcpdump.org link-layer header types) that decode understands."""

    NULL = 0  # BSD loopback: 4-byte address family in host byte order
    ETHERNET = 1
    RAW = 101  # raw IPv4 or IPv6, version from the first nibble
    LOOP = 108  # OpenBSD loopback: 4-byte address family in network byte order
    LINUX_SLL = 113
    IPV4 = 228
    IPV6 = 229
    LINUX_SLL2 = 276


@dataclass(frozen=True, slots=True)
class Batch:
    """Packets as columns over one buffer.

    Packet ``i`` is ``data[offset[i] : offset[i] + caplen[i]]``; its original
    length on the wire was ``wirelen[i]`` (>= caplen when the capture truncated
    it), its link-layer type is ``linktype[i]`` and its timestamp ``ts[i]``
    (epoch seconds, float64; ~0.5 µs resolution in this century). ``point[i]`` is
    the observation point it was seen at (`agent.capture.points`; 0: unnamed).
    """

    data: npt.NDArray[np.uint8]
    offset: npt.NDArray[np.int64]
    caplen: npt.NDArray[np.int32]
    wirelen: npt.NDArray[np.int32]
    ts: npt.NDArray[np.float64]
    linktype: npt.NDArray[np.uint16]
    point: npt.NDArray[np.uint16] = None  # type: ignore[assignment]  # default: all 0

    def __post_init__(self) -> None:
        if self.point is None:
            object.__setattr__(self, "point", np.zeros(len(self.offset), np.uint16))

    def __len__(self) -> int:
        return int(self.offset.shape[0])

    def pieces(self, rows: int) -> list[Batch]:
        """The batch cut into consecutive batches of at most ``rows`` packets, sharing
        the buffer (the engine's output does not depend on where batches are cut)."""
        if len(self) <= rows:
            return [self]
        return [self.rows(a, a + rows) for a in range(0, len(self), rows)]

    def rows(self, lo: int, hi: int) -> Batch:
        """Packets [lo, hi) as a batch sharing the buffer."""
        if lo <= 0 and hi >= len(self):
            return self
        return Batch(self.data, self.offset[lo:hi], self.caplen[lo:hi], self.wirelen[lo:hi],
                     self.ts[lo:hi], self.linktype[lo:hi], self.point[lo:hi])

    def packet(self, i: int) -> bytes:
        """Captured bytes of packet ``i`` (a copy; for slow paths and tests)."""
        start = int(self.offset[i])
        return self.data[start : start + int(self.caplen[i])].tobytes()

    @classmethod
    def from_packets(
        cls,
        packets: list[bytes],
        ts: list[float] | npt.NDArray[np.float64],
        linktype: int | list[int] = LinkType.ETHERNET,
        wirelen: list[int] | None = None,
        point: int | list[int] = 0,
    ) -> Batch:
        """Build a batch from separate packet byte strings (tests, slow sources)."""
        n = len(packets)
        lengths = np.fromiter((len(p) for p in packets), dtype=np.int32, count=n)
        offset = np.zeros(n, dtype=np.int64)
        if n > 1:
            np.cumsum(lengths[:-1], out=offset[1:])
        data = np.frombuffer(b"".join(packets), dtype=np.uint8).copy()
        if isinstance(linktype, int):
            lt = np.full(n, linktype, dtype=np.uint16)
        else:
            lt = np.asarray(linktype, dtype=np.uint16)
        wl = lengths.copy() if wirelen is None else np.asarray(wirelen, dtype=np.int32)
        return cls(
            data=data,
            offset=offset,
            caplen=lengths,
            wirelen=wl,
            ts=np.asarray(ts, dtype=np.float64),
            linktype=lt,
            point=(np.full(n, point, dtype=np.uint16) if isinstance(point, int)
                   else np.asarray(point, dtype=np.uint16)),
        )

    @classmethod
    def empty(cls) -> Batch:
        return cls.from_packets([], [])
