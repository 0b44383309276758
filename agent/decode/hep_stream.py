"""HEP3 over TCP: a byte stream cut back into the HEP packets it carries.

A sender that streams HEP (Kamailio ``duplicate_uri`` with ``transport=tcp``,
heplify ``-nt tcp``) writes HEP3 packets back to back; each starts with ``HEP3``
and its 16-bit total length, which is the only framing there is. HEP v1/v2 have
no total length and cannot be framed on a stream.

`HepFramer` frames one direction of one connection (the TCP listener keeps one
per accepted socket). `HepTcpFlows` does the same for TCP segments *seen in a
capture* (``voipprobe analyze`` of the traffic to a collector, or the ring of a
probe beside one): per direction it follows the TCP sequence numbers, so a
retransmitted segment is not framed twice, and a gap (a segment the capture
missed) loses the framing until a segment starts with ``HEP3`` again: the
packets in the gap are absent, never misread. A flow first seen mid-stream
starts at its first segment that begins with ``HEP3``; what comes before is
counted (``skipped``). TCP to or from a HEP port is HEP transport: its
handshake, acknowledgements and unframable bytes are consumed, never measured
(a collector's ACK at the capture time would otherwise move the engine's packet
clock past the HEP times it is measuring).

Bounded: a framer holds at most one unfinished frame (< 64 KiB) plus one
segment; `HepTcpFlows` follows at most ``max_flows`` directions, the least
recently active dropped first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields

from agent.decode.hep import MAGIC

_HEADER = 6  # "HEP3" + total length
_SYN, _FIN, _RST = 0x02, 0x01, 0x04
MAX_FLOWS = 4096


class HepStreamError(ValueError):
    """No HEP3 frame where one had to start: the stream's framing is lost."""


class HepFramer:
    """Complete HEP3 packets out of one direction's bytes, in order."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The frames ``data`` completes. Raises `HepStreamError` (and forgets what
        it held) when the bytes at a frame start are not a HEP3 header."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        start = 0
        while len(buf) - start >= _HEADER:
            total = int.from_bytes(buf[start + 4 : start + 6], "big")
            if buf[start : start + 4] != MAGIC or total < _HEADER:
                buf.clear()
                raise HepStreamError("no HEP3 header at a frame start")
            if len(buf) - start < total:
                break
            out.append(bytes(buf[start : start + total]))
            start += total
        del buf[:start]
        return out


@dataclass(slots=True)
class HepTcpCounters:
    segments: int = 0  # TCP segments with payload framed (or buffered) as HEP
    retransmitted: int = 0  # segments already framed, skipped
    gaps: int = 0  # sequence gaps: framing lost until the next HEP3 start
    desynced: int = 0  # no HEP3 header where a frame had to start
    skipped: int = 0  # segments with payload while there was no framing (mid-stream start)
    evicted: int = 0  # flows forgotten for room

    def as_dict(self) -> dict[str, int]:
        return {f"tcp_{f.name}": int(getattr(self, f.name)) for f in fields(self)}


@dataclass(slots=True)
class _Flow:
    next_seq: int | None  # None: no framing, waiting for a segment starting "HEP3"
    framer: HepFramer


FlowKey = tuple[int, int, int, int, int, int]  # src hi/lo, dst hi/lo, sport, dport


class HepTcpFlows:
    """Per TCP direction: sequence-ordered bytes framed into HEP3 packets."""

    def __init__(self, max_flows: int = MAX_FLOWS) -> None:
        self.max_flows = max_flows
        self.counters = HepTcpCounters()
        self._flows: OrderedDict[FlowKey, _Flow] = OrderedDict()

    def feed(self, key: FlowKey, seq: int, flags: int, payload: bytes) -> list[bytes]:
        """The HEP packets this segment (toward the collector) completes."""
        flow = self._flows.get(key)
        if flags & _SYN:
            flow = self._open(key, (seq + 1) & 0xFFFFFFFF)
        elif flow is not None:
            self._flows.move_to_end(key)
        try:
            if not payload:
                return []
            if flow is None or flow.next_seq is None:
                if not payload.startswith(MAGIC):
                    self.counters.skipped += 1
                    return []
                flow = flow or self._open(key, seq)
                flow.next_seq = seq
            return self._take(flow, seq, payload)
        finally:
            if flags & (_FIN | _RST):
                self._flows.pop(key, None)

    def _open(self, key: FlowKey, next_seq: int | None) -> _Flow:
        flow = self._flows[key] = _Flow(next_seq, HepFramer())
        self._flows.move_to_end(key)
        if len(self._flows) > self.max_flows:
            self._flows.popitem(last=False)
            self.counters.evicted += 1
        return flow

    def _take(self, flow: _Flow, seq: int, payload: bytes) -> list[bytes]:
        self.counters.segments += 1
        assert flow.next_seq is not None
        ahead = (seq - flow.next_seq) & 0xFFFFFFFF
        if ahead >= 1 << 31:  # behind: a retransmission, maybe partly new
            old = (flow.next_seq - seq) & 0xFFFFFFFF
            if old >= len(payload):
                self.counters.retransmitted += 1
                return []
            payload, seq = payload[old:], flow.next_seq
        elif ahead:  # bytes missing: resynchronise on a frame start
            self.counters.gaps += 1
            flow.framer = HepFramer()
            if not payload.startswith(MAGIC):
                flow.next_seq = None
                return []
        flow.next_seq = (seq + len(payload)) & 0xFFFFFFFF
        try:
            return flow.framer.feed(payload)
        except HepStreamError:
            self.counters.desynced += 1
            flow.next_seq = None
            return []
