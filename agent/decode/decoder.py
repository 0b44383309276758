"""`Decoder`: Batch -> Frames, the per-packet hot path of the probe.

Theory of operation: `fastpath.decode_fast` decodes the common shapes for the
whole batch with numpy and claims the packets it fully handled; every other
packet goes through `slowpath.SlowPath` (plain Python, one packet at a time),
which also owns fragment reassembly and tunnels (a UDP datagram to a tunnel port
is always left to it). The two sets of rows are merged
back into packet order. The decoder is stateful only through the fragment
table, whose clock is the packets' own timestamps, and the GRE sequence numbers of
mirror sessions (`agent.decode.sequence`, in arrival order).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.capture.batch import Batch
from agent.decode.counters import DecodeCounters, DecodeLimits
from agent.decode.fastpath import Columns, decode_fast
from agent.decode.fragments import Reassembler
from agent.decode.frames import COLUMN_DTYPES, Frames, empty_frames
from agent.decode.sequence import SequenceGaps
from agent.decode.slowpath import Row, SlowPath
from agent.decode.tunnels import TunnelPorts

_LOW64 = (1 << 64) - 1
# Row tuple positions (see slowpath.Row) of the columns that are copied as they are.
_ROW_COLUMNS: tuple[tuple[str, int], ...] = (
    ("pkt", 0), ("ip_version", 1), ("sport", 4), ("dport", 5), ("proto", 6), ("dscp", 7),
    ("ecn", 8), ("vlan", 9), ("pcp", 10), ("payload_off", 11), ("payload_len", 12),
    ("tcp_seq", 13), ("tcp_flags", 14), ("point", 15), ("payload_sent", 16),
)


class Decoder:
    """Decodes batches into `Frames`; counts every packet it drops in `counters`.

    ``tunnel_ports``: UDP destination ports tried as VXLAN and TZSP (`TunnelPorts`).
    ``force_slow_path`` sends every packet through the per-packet reference path
    (for the test that holds both paths to identical columns).
    """

    def __init__(
        self, limits: DecodeLimits | None = None, *,
        tunnel_ports: TunnelPorts | None = None, force_slow_path: bool = False,
    ) -> None:
        self.limits = limits if limits is not None else DecodeLimits()
        self.counters = DecodeCounters()
        self.force_slow_path = force_slow_path
        self._reassembler = Reassembler(self.limits, self.counters)
        self._slow = SlowPath(self.counters, self._reassembler, tunnel_ports)

    @property
    def tunnel_ports(self) -> TunnelPorts:
        return self._slow.tunnel_ports

    @tunnel_ports.setter
    def tunnel_ports(self, ports: TunnelPorts) -> None:
        self._slow.tunnel_ports = ports

    def sequence_gaps(self) -> dict[str, SequenceGaps]:
        """Per mirror session that numbers its packets (ERSPAN II/III, GRETAP with GRE
        sequence numbers), by point name: copies lost on the way, and resets."""
        return self._slow.sequences.gaps()

    @property
    def fragment_sets(self) -> int:
        """Datagrams currently being reassembled."""
        return len(self._reassembler)

    @property
    def fragment_bytes(self) -> int:
        """Bytes held by the fragment table."""
        return self._reassembler.bytes_held

    def decode(self, batch: Batch) -> Frames:
        """Rows for the UDP/TCP packets of ``batch``, in packet order. Never raises on
        bad packet bytes: those are counted drops."""
        n = len(batch)
        self.counters.packets += n
        if n == 0:
            return empty_frames(batch.data)
        fast_cols: Columns = {}
        if self.force_slow_path:
            fast_idx = np.zeros(0, np.int64)
        else:
            fast_idx, fast_cols = decode_fast(batch, self.tunnel_ports.all)
            if fast_cols:
                fast_cols["point"] = batch.point[fast_cols["pkt"].astype(np.int64)]
        rows: list[Row] = []
        appended: list[bytes] = []
        if fast_idx.size < n:
            slow = np.ones(n, dtype=np.bool_)
            slow[fast_idx] = False
            rows, appended = self._slow.run(batch, np.flatnonzero(slow))
        self._reassembler.expire(float(batch.ts.max()))
        data = batch.data
        if appended:
            extra = np.frombuffer(b"".join(appended), dtype=np.uint8)
            data = np.concatenate((batch.data, extra))
        frames = _merge(batch, data, fast_cols, _rows_to_columns(rows))
        self.counters.frames += len(frames)
        return frames


def _rows_to_columns(rows: list[Row]) -> Columns:
    if not rows:
        return {}
    cols = list(zip(*rows, strict=True))
    out: Columns = {
        name: np.array(cols[pos], dtype=COLUMN_DTYPES[name]) for name, pos in _ROW_COLUMNS
    }
    for name, pos in (("src", 2), ("dst", 3)):
        out[f"{name}_hi"] = np.array([a >> 64 for a in cols[pos]], dtype=np.uint64)
        out[f"{name}_lo"] = np.array([a & _LOW64 for a in cols[pos]], dtype=np.uint64)
    return out


def _merge(batch: Batch, data: npt.NDArray[np.uint8], fast: Columns, slow: Columns) -> Frames:
    """Fast and slow rows in packet order, plus ts and wire_len looked up by packet."""
    if not fast and not slow:
        return empty_frames(data)
    if fast and slow:
        pkt = np.concatenate((fast["pkt"], slow["pkt"]))
        order = np.argsort(pkt, kind="stable")
        cols = {name: np.concatenate((fast[name], slow[name]))[order] for name in fast}
    else:
        cols = dict(fast or slow)
    pkt = cols["pkt"].astype(np.int64)
    cols["ts"] = batch.ts[pkt]
    cols["wire_len"] = batch.wirelen[pkt]
    typed = {name: np.asarray(cols[name], dtype=dt) for name, dt in COLUMN_DTYPES.items()}
    return Frames(data=data, **typed)  # type: ignore[arg-type,unused-ignore]
