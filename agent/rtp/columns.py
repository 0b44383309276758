"""`RtpColumns`: per-packet RTP fields of validated streams, as numpy columns.

The tracker builds these from `Frames` (vectorised header parse) and hands them
to `agent.rtp.batch.BatchStats`; tests build them directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
# One packet's values in field order: a compact form for a packet held alone
Row = tuple[int, float, int, int, int, bool, int, int, int, int]


def group_starts(key: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
    """True at each row whose ``key`` differs from the previous row's (and at row 0):
    where each group of a column sorted by group begins."""
    start = np.ones(key.size, bool)
    np.not_equal(key[1:], key[:-1], out=start[1:])
    return start


@dataclass(frozen=True, slots=True)
class RtpColumns:
    """Equal-length columns, one row per RTP packet, in arrival order within a stream.

    ``sid`` is the stream slot of `BatchStats`; ``arrival_s`` epoch seconds; ``seq``
    0..65535; ``ts`` 0..2^32-1; ``kind`` a `PayloadKind`; ``vlan``/``pcp`` -1 if untagged.
    """

    sid: I64
    arrival_s: npt.NDArray[np.float64]
    seq: I64
    ts: I64
    pt: I64
    marker: npt.NDArray[np.bool_]
    kind: I64
    dscp: I64
    vlan: I64
    pcp: I64

    def __len__(self) -> int:
        return int(self.sid.shape[0])

    def take(self, idx: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> RtpColumns:
        return RtpColumns(*[getattr(self, n)[idx] for n in _NAMES])

    def rows(self, idx: npt.NDArray[np.intp]) -> list[Row]:
        """Rows ``idx`` as tuples of Python scalars, in field order (`of_row` undoes it)."""
        return list(zip(*(getattr(self, n)[idx].tolist() for n in _NAMES), strict=True))

    @staticmethod
    def of_row(row: Row) -> RtpColumns:
        """One row's columns, of the dtypes the tracker builds (int64, float64 arrival,
        bool marker)."""
        sid, arrival_s, seq, ts, pt, marker, kind, dscp, vlan, pcp = row
        return RtpColumns(
            np.array([sid], np.int64), np.array([arrival_s], np.float64),
            np.array([seq], np.int64), np.array([ts], np.int64), np.array([pt], np.int64),
            np.array([marker], np.bool_), np.array([kind], np.int64),
            np.array([dscp], np.int64), np.array([vlan], np.int64), np.array([pcp], np.int64))

    @staticmethod
    def concat(parts: Sequence[RtpColumns]) -> RtpColumns:
        return RtpColumns(*[np.concatenate([getattr(p, n) for p in parts]) for n in _NAMES])

    @staticmethod
    def build(
        sid: Sequence[int] | I64,
        arrival_s: Sequence[float] | npt.NDArray[np.float64],
        seq: Sequence[int] | I64,
        ts: Sequence[int] | I64,
        pt: Sequence[int] | I64,
        marker: Sequence[bool] | npt.NDArray[np.bool_] | None = None,
        kind: Sequence[int] | I64 | None = None,
        dscp: Sequence[int] | I64 | None = None,
        vlan: Sequence[int] | I64 | None = None,
        pcp: Sequence[int] | I64 | None = None,
    ) -> RtpColumns:
        """Columns from sequences; omitted ones default to 0 / False / -1 (untagged)."""
        n = len(sid)

        def col(v: object, fill: int) -> I64:
            return np.full(n, fill, np.int64) if v is None else np.asarray(v, dtype=np.int64)

        return RtpColumns(
            sid=np.asarray(sid, dtype=np.int64),
            arrival_s=np.asarray(arrival_s, dtype=np.float64),
            seq=np.asarray(seq, dtype=np.int64),
            ts=np.asarray(ts, dtype=np.int64),
            pt=np.asarray(pt, dtype=np.int64),
            marker=np.zeros(n, bool) if marker is None else np.asarray(marker, dtype=bool),
            kind=col(kind, 0),
            dscp=col(dscp, 0),
            vlan=col(vlan, -1),
            pcp=col(pcp, -1),
        )


_NAMES = tuple(f.name for f in fields(RtpColumns))  # in declaration order
