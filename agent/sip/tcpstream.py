"""TCP reassembly for SIP over TCP (RFC 3261 §18.3): segments in, messages out.

Theory of operation
-------------------
The probe sees TCP segments, not a byte stream: a SIP message may span several
segments, one segment may carry several messages, and segments are
retransmitted, reordered and lost. `SipTcpReassembler.feed` takes one segment
of one direction (a 6-tuple key, the 32-bit sequence number, the flags and the
payload) and returns the SIP messages it completed, each as the exact bytes
`agent.sip.message.parse_message` expects. Message boundaries come from
Content-Length, mandatory on stream transports (§18.3), via `split_stream`.

Per direction the reassembler keeps the next expected sequence number, the
bytes not yet framed into a message, and a few out-of-order segments:

- data at the expected number is appended, then any buffered segment that now
  fits is drained;
- data wholly before it is a retransmission and is ignored; data that overlaps
  it is trimmed to the new part (the first copy wins, as most stacks do);
- data after it waits (at most ``max_pending_segments``); if the gap never
  fills, the hole was lost before the probe saw it, and the stream is
  *resynchronised*: what was buffered is dropped, and reassembly restarts at
  the next segment that starts like a SIP message (`looks_like_sip`).

A stream whose SYN was seen is sniffed once, when its first line is complete:
if it does not start like SIP (after CRLF keep-alives, RFC 5626 §3.5.1), it is
given up and only a small tombstone is kept, so HTTPS or any other TCP costs no
buffer. A stream joined mid-connection (a long-lived trunk connection when the
probe starts) may begin inside a message: its segments are skipped until one
starts like SIP, and after ``max_sync_segments`` that do not, it is given up.
SIP over TLS (5061) is not decrypted here: the engine counts it as encrypted
signalling.

Memory is bounded (DESIGN.md rule 4): ``max_streams`` directions (least
recently active evicted), ``max_buffer_bytes`` per direction (a peer that
never completes a message is dropped and resynchronised), ``max_total_bytes``
over all streams, and ``expire(now)`` forgets directions idle for
``idle_timeout_s`` of packet time. FIN and RST end a direction.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from agent.sip.errors import SipParseError
from agent.sip.limits import DEFAULT_LIMITS, MessageLimits
from agent.sip.message import looks_like_sip, split_stream_from

StreamKey = tuple[int, ...]  # src_hi, src_lo, sport, dst_hi, dst_lo, dport[, observation point]

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
_SEQ_MOD = 1 << 32
_SNIFF_BYTES = 1100  # a request line is at most ~1 KB in what `looks_like_sip` accepts


@dataclass
class TcpReassemblyCounters:
    streams: int = 0  # directions ever tracked
    messages: int = 0  # SIP messages returned
    retransmitted_segments: int = 0  # wholly or partly already seen
    out_of_order: int = 0  # segments that arrived ahead of a gap
    resyncs: int = 0  # gaps that never filled, or framing errors: buffer dropped
    evicted: int = 0  # stream table or byte cap full: least recently active dropped
    expired: int = 0  # idle for idle_timeout_s
    closed: int = 0  # FIN or RST
    not_sip: int = 0  # streams given up because they did not start like SIP
    oversize: int = 0  # a direction buffered more than max_buffer_bytes

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class _Stream:
    """One direction of one TCP connection."""

    __slots__ = (
        "buf",
        "last_ts",
        "need_sync",
        "next_seq",
        "not_sip",
        "pending",
        "scanned",
        "skipped",
        "sniffed",
    )

    def __init__(self, next_seq: int, ts: float, need_sync: bool) -> None:
        self.next_seq = next_seq
        self.buf = bytearray()  # bytes after the last complete message, in sequence order
        self.scanned = 0  # of them, searched for the pending header's end already
        self.pending: dict[int, bytes] = {}  # out-of-order segments by sequence number
        self.last_ts = ts
        self.sniffed = False  # the first bytes were checked to look like SIP
        self.need_sync = need_sync  # wait for a segment that starts a message
        self.skipped = 0  # segments dropped while waiting for one
        self.not_sip = False  # given up: a tombstone without buffers

    @property
    def held(self) -> int:
        return len(self.buf) + sum(len(p) for p in self.pending.values())


def _rel(seq: int, base: int) -> int:
    """Signed distance from ``base`` to ``seq`` in 32-bit sequence space (RFC 9293 §3.4)."""
    diff = (seq - base) % _SEQ_MOD
    return diff - _SEQ_MOD if diff >= 1 << 31 else diff


class SipTcpReassembler:
    """Per-direction TCP reassembly cut into SIP messages; see the module docstring."""

    def __init__(
        self,
        max_streams: int = 4096,
        max_buffer_bytes: int = 256 * 1024,
        max_total_bytes: int = 64 * 1024 * 1024,
        idle_timeout_s: float = 300.0,
        max_pending_segments: int = 32,
        max_sync_segments: int = 64,
        limits: MessageLimits = DEFAULT_LIMITS,
    ) -> None:
        self.limits = limits
        self.max_streams = max_streams
        self.max_buffer_bytes = max_buffer_bytes
        self.max_total_bytes = max_total_bytes
        self.idle_timeout_s = idle_timeout_s
        self.max_pending_segments = max_pending_segments
        self.max_sync_segments = max_sync_segments
        self.counters = TcpReassemblyCounters()
        # least recently active first
        self._streams: OrderedDict[StreamKey, _Stream] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def feed(
        self, key: StreamKey, seq: int, flags: int, payload: bytes, ts: float
    ) -> list[bytes]:
        """One TCP segment of direction ``key`` at packet time ``ts`` (epoch s);
        returns the complete SIP messages it finished, in stream order. Idle directions
        are forgotten here first (`expire` by the segment's time): the reassembler keeps
        its own time, so its output depends on the segments alone."""
        self.expire(ts)
        if flags & TCP_RST:
            self.counters.closed += self._close(key)
            return []
        stream = self._streams.pop(key, None)
        if stream is None:
            if not payload and not flags & TCP_SYN:
                return []
            stream = self._open(seq, flags, ts)
        elif flags & TCP_SYN and _rel(seq + 1, stream.next_seq) != 0:
            self._drop_data(stream)  # a new connection on the same 4-tuple
            stream.next_seq, stream.sniffed, stream.need_sync = (seq + 1) % _SEQ_MOD, False, False
        self._streams[key] = stream  # most recently active last
        stream.last_ts = max(stream.last_ts, ts)
        if flags & TCP_SYN:
            seq = (seq + 1) % _SEQ_MOD  # the SYN occupies one sequence number
        out = self._data(stream, seq, payload) if payload and not stream.not_sip else []
        if flags & TCP_FIN:
            self.counters.closed += self._close(key)
        elif self._bytes > self.max_total_bytes:
            self._evict_bytes()
        return out

    def expire(self, now: float) -> int:
        """Forget directions idle for ``idle_timeout_s`` as of packet time ``now``."""
        gone = 0
        while self._streams:
            key, stream = next(iter(self._streams.items()))
            if stream.last_ts + self.idle_timeout_s > now:
                break
            gone += self._close(key)
        self.counters.expired += gone
        return gone

    # -- internals -----------------------------------------------------------

    def _open(self, seq: int, flags: int, ts: float) -> _Stream:
        while len(self._streams) >= self.max_streams:
            self.counters.evicted += self._close(next(iter(self._streams)))
        self.counters.streams += 1
        if flags & TCP_SYN:
            return _Stream((seq + 1) % _SEQ_MOD, ts, need_sync=False)
        # Joined mid-connection (the probe started after the SYN, or the table
        # evicted it): the first bytes may be the middle of a message.
        return _Stream(seq % _SEQ_MOD, ts, need_sync=True)

    def _data(self, stream: _Stream, seq: int, payload: bytes) -> list[bytes]:
        rel = _rel(seq, stream.next_seq)
        if rel < 0:
            self.counters.retransmitted_segments += 1
            if rel + len(payload) <= 0:
                return []
            payload, rel = payload[-rel:], 0  # keep only the new tail of an overlap
        if rel > 0:
            return self._ahead(stream, seq, payload)
        self._append(stream, payload)
        self._drain(stream)
        if stream.held > self.max_buffer_bytes:
            self.counters.oversize += 1
            self._resync(stream)
            return []
        return self._frame(stream)

    def _ahead(self, stream: _Stream, seq: int, payload: bytes) -> list[bytes]:
        """A segment beyond a gap: hold it, or give up on the gap (resync)."""
        self.counters.out_of_order += 1
        if seq in stream.pending:
            self.counters.retransmitted_segments += 1
            return []
        if len(stream.pending) >= self.max_pending_segments:
            # The hole was lost upstream of the probe; TCP would have filled it by now.
            self._resync(stream)
            stream.next_seq = seq
            return self._data(stream, seq, payload)
        stream.pending[seq] = payload
        self._bytes += len(payload)
        if stream.held > self.max_buffer_bytes:
            self.counters.oversize += 1
            self._resync(stream)
        return []

    def _append(self, stream: _Stream, payload: bytes) -> None:
        stream.next_seq = (stream.next_seq + len(payload)) % _SEQ_MOD
        if stream.need_sync and not self._starts_message(stream, payload):
            return  # still inside a message whose start the probe did not see
        stream.buf += payload
        self._bytes += len(payload)

    def _drain(self, stream: _Stream) -> None:
        """Move held segments that the stream has now reached into the buffer."""
        progress = True
        while progress and stream.pending:
            progress = False
            for seq in list(stream.pending):
                rel = _rel(seq, stream.next_seq)
                if rel > 0:
                    continue
                data = stream.pending.pop(seq)
                self._bytes -= len(data)
                if rel + len(data) > 0:
                    self._append(stream, data[-rel:] if rel else data)
                    progress = True
                else:
                    self.counters.retransmitted_segments += 1

    def _frame(self, stream: _Stream) -> list[bytes]:
        """Cut complete messages off the buffer (Content-Length framing, §18.3)."""
        if not stream.sniffed and not self._sniff(stream):
            return []
        try:
            ranges, consumed, stream.scanned = split_stream_from(
                stream.buf, stream.scanned, self.limits.max_header_bytes,
                min(self.max_buffer_bytes, self.limits.max_content_length))
        except SipParseError:
            self.counters.oversize += 1  # header or Content-Length beyond the caps
            self._resync(stream)
            return []
        out = [bytes(stream.buf[start:end]) for start, end in ranges]
        if consumed:
            del stream.buf[:consumed]
            self._bytes -= consumed
        self.counters.messages += len(out)
        return out

    def _starts_message(self, stream: _Stream, payload: bytes) -> bool:
        """While out of sync: does this segment start a SIP message? After
        ``max_sync_segments`` segments that do not, the stream is not SIP."""
        head = payload.lstrip(b"\r\n")
        if looks_like_sip(head):
            stream.need_sync, stream.sniffed, stream.skipped = False, True, 0
            return True
        if head:  # CRLF keep-alives prove nothing either way
            stream.skipped += 1
            if stream.skipped > self.max_sync_segments:
                self.counters.not_sip += 1
                stream.not_sip = True
        return False

    def _sniff(self, stream: _Stream) -> bool:
        """Decide once whether the stream carries SIP; False while undecided or not SIP."""
        head = stream.buf.lstrip(b"\r\n")
        if len(head) < len(stream.buf):  # keep-alives before the first message: drop them
            self._bytes -= len(stream.buf) - len(head)
            stream.buf = bytearray(head)
        if not head or (b"\n" not in head[:_SNIFF_BYTES] and len(head) < _SNIFF_BYTES):
            return False  # keep-alives only, or the first line is not complete yet
        if looks_like_sip(head):
            stream.sniffed = True
            return True
        self.counters.not_sip += 1
        self._drop_data(stream)
        stream.not_sip = True
        return False

    def _resync(self, stream: _Stream) -> None:
        self.counters.resyncs += 1
        self._drop_data(stream)
        stream.need_sync = True

    def _drop_data(self, stream: _Stream) -> None:
        self._bytes -= stream.held
        stream.buf = bytearray()
        stream.scanned = 0
        stream.pending.clear()

    def _close(self, key: StreamKey) -> int:
        """Forget one direction; 1 if it existed (for the caller's counter), else 0."""
        stream = self._streams.pop(key, None)
        if stream is None:
            return 0
        self._drop_data(stream)
        return 1

    def _evict_bytes(self) -> None:
        while self._bytes > self.max_total_bytes and self._streams:
            self.counters.evicted += self._close(next(iter(self._streams)))
