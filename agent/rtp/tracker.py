"""`StreamTracker`: finds RTP streams in UDP traffic and keeps their statistics.

Theory of operation. Each UDP row is header-parsed (`agent.rtp.header`) and
keyed by 5-tuple + SSRC. Rows of a known stream go straight to the vectorised
statistics (`BatchStats`). A row of an unknown key starts a stream in one of
two ways:

- *Announced*: the signalling above (`MediaHints`, the call layer's SDP index)
  says an SDP sent media to this destination (or from this source: symmetric
  RTP). No probation: the stream counts from its first packet. When the SDP
  binds the payload type dynamically (a=rtpmap), the first ``probation_packets``
  packets are held only to check the SDP clock against the rate the timestamps
  run at (an SDP clock off by more than ``CLOCK_GUARD`` loses to the estimate,
  ``clock_rate_estimated``: L16/11025 whose timestamps run at 8 kHz,
  docs/tshark-comparison.md); they always become the stream.
- *Heuristic*: a candidate is held until ``probation_packets`` packets of one
  SSRC, taken in sequence-number order, show numbers advancing in small steps
  (at most ``max_probation_step``; equal numbers are duplicates and must repeat
  the timestamp) and RTP timestamps that never go back and do advance (event-only
  streams may repeat the onset timestamp, RFC 4733 §2.5.1.2). Sorting first
  makes probation tolerate reordering (RFC 3550 A.1 MAX_MISORDER) and duplicates
  at a stream's start. While the steps are plausible but no timestamp advanced
  yet (a video frame or an event spans packets) up to ``max_probation_hold``
  packets are held. A failing candidate drops its first packet and tries again.

Either way the held packets are replayed in arrival order when the stream is
validated, so a stream counts every packet it was sent, from its very first
(as Wireshark does). The SDP is looked up again at validation: an answer seen
while a candidate was held still names its codec.

Packet kinds: an SDP payload map wins; then the static table (CN 13/19); a
dynamic PT with a 4-byte payload, R bit clear (RFC 4733 §2.3) and different
from the stream's main PT (first non-event PT) is a telephone-event; so is
every packet of an event-only stream.

Time is packet time, and the tracker owns its timers: `next_deadline` is the
earliest packet time a stream goes idle (``idle_timeout_s`` after its last
packet; a lazy heap, re-armed when a stream turned out to be busy), `expire`
ends what is due. A candidate idle longer than the timeout is forgotten when
its next packet arrives (and swept by `expire`), so what a packet does never
depends on when a sweep ran. Tables keyed by the network (candidates, streams)
are capped; the least recently seen entry is evicted and counted. `close` ends
streams on demand (their call ended), `snapshot` reads one without ending it.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.decode.endpoint import Endpoint
from agent.decode.frames import IPPROTO_UDP, Frames
from agent.rtp.batch import BatchStats
from agent.rtp.columns import RtpColumns
from agent.rtp.header import RtpHeaders, parse_headers
from agent.rtp.hints import MediaHints, PayloadMap
from agent.rtp.model import StreamKey, StreamStats
from agent.rtp.payload_types import (
    DYNAMIC_PT_MIN,
    TELEPHONE_EVENT,
    PayloadInfo,
    PayloadKind,
    estimate_clock_rate,
    lookup,
)
from agent.rtp.rules import JitterBufferSpec, StreamMeta

I64 = npt.NDArray[np.int64]
Key = tuple[int, int, int, int, int, int, int]
_VALID = 0  # probation verdicts: a stream
_UNDECIDED = 1  # hold on, wait for more packets
_BAD = 2  # cannot be one stream: drop the first held packet
_M64 = np.uint64(0x9E3779B97F4A7C15)
CLOCK_GUARD = 0.25  # relative disagreement between SDP clock and timestamps that SDP loses


@dataclass(frozen=True)
class TrackerConfig:
    """Table caps, timeouts (packet time, seconds) and heuristic strictness."""

    max_streams: int = 20000
    max_candidates: int = 50000
    idle_timeout_s: float = 60.0
    probation_packets: int = 4
    max_probation_step: int = 100  # RFC 3550 A.1 MAX_MISORDER as the forward bound too
    max_probation_ts_step: int = 1 << 20  # ~11 s at 90 kHz
    # Packets held while every step is plausible but no timestamp has advanced yet.
    max_probation_hold: int = 16
    jitter_buffer: JitterBufferSpec = field(default_factory=JitterBufferSpec)


@dataclass
class TrackerCounters:
    """Per-reason counts (exported as ``rtp_<name>``)."""

    udp_rows: int = 0  # UDP rows offered
    not_rtp: int = 0  # failed the RTP header checks
    candidates_rejected: int = 0  # packets dropped by failed probation (not RTP after all)
    candidates_evicted: int = 0  # candidate table full: least recently seen dropped
    candidates_expired: int = 0  # idle candidates dropped
    candidates_unvalidated: int = 0  # candidates left at finish
    streams_validated: int = 0
    streams_announced: int = 0  # of which SDP announced (no probation)
    streams_evicted: int = 0  # stream table full: least recently seen ended early
    streams_expired: int = 0  # idle streams ended
    streams_closed: int = 0  # ended by `close` (their call ended)
    sdp_clock_overridden: int = 0  # SDP clock lost to the timestamps' own rate

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class _Candidate:
    cols: RtpColumns  # sid column holds -1; kind column holds the event-candidate flag
    last_seen: float
    announced: PayloadMap | None  # the SDP's payload map: no probation


@dataclass(frozen=True, slots=True)
class Started:
    """A stream was validated: its key and the packet time of its first packet."""

    key: StreamKey
    first_ts: float


@dataclass(slots=True)
class FeedResult:
    """What one `StreamTracker.feed` did that the call layer must know, in order."""

    started: list[Started] = field(default_factory=list)
    ended: list[StreamStats] = field(default_factory=list)  # evicted: the table was full


@dataclass
class _Rows:
    """One batch's parsed RTP rows, with the key hash and event-candidate flag."""

    cols: RtpColumns
    keys: npt.NDArray[np.uint64]
    h: RtpHeaders
    frames: Frames = field(repr=False)


class StreamTracker:
    """Heuristic RTP stream detection plus per-stream RFC 3550 statistics."""

    def __init__(
        self,
        config: TrackerConfig = TrackerConfig(),
        pt_hints: Mapping[int, PayloadInfo] | None = None,
        hints: MediaHints | None = None,
    ) -> None:
        self.config = config
        self.pt_hints = dict(pt_hints or {})
        self.hints = hints
        self.stats = BatchStats(jb=config.jitter_buffer)
        self._sid: dict[Key, int] = {}
        self._key_of: dict[int, Key] = {}
        self._main_pt: dict[int, int] = {}
        # 5-tuple -> last validated SSRC (for previous_ssrc); LRU, capped like the streams
        self._by_tuple: OrderedDict[tuple[int, ...], int] = OrderedDict()
        self._cands: dict[Key, _Candidate] = {}  # least recently fed first
        # Lazy idle timers: (deadline, serial, key); re-armed when the stream was busy.
        self._idle: list[tuple[float, int, Key]] = []
        self._serial = itertools.count()
        self.counters = TrackerCounters()
        hint_kind = np.full(128, -1, np.int64)
        for pt in range(128):
            info = lookup(pt, self.pt_hints)
            if info is not None and (pt in self.pt_hints or info.kind != PayloadKind.MEDIA):
                hint_kind[pt] = int(info.kind)
        self._hint_kind = hint_kind
        self._sid_kind = np.full((64, 128), -1, np.int64)  # per stream slot: PT -> kind

    # -- feeding ------------------------------------------------------------------------

    def feed(self, frames: Frames, rows: I64 | None = None) -> FeedResult:
        """Account the UDP rows of ``frames`` (default: every row with proto 17), all at
        one point of the signalling (the caller cuts batches where SDP can change)."""
        out = FeedResult()
        if rows is None:
            rows = np.flatnonzero(frames.proto == IPPROTO_UDP).astype(np.int64)
        if rows.size == 0:
            return out
        self.counters.udp_rows += int(rows.size)
        h = parse_headers(frames, rows)
        self.counters.not_rtp += int(rows.size - h.rows.size)
        if h.rows.size == 0:
            return out
        batch = self._columns(frames, h)
        uniq, first, inverse = np.unique(batch.keys, return_index=True, return_inverse=True)
        sid_of = np.full(uniq.size, -1, np.int64)
        unknown: list[int] = []
        for u, r in enumerate(first.tolist()):
            sid = self._sid.get(self._key(frames, h, r), -1)
            sid_of[u] = sid
            if sid < 0:
                unknown.append(u)
        row_sid = sid_of[inverse]
        known = np.flatnonzero(row_sid >= 0)
        parts = [_with_sid(batch.cols.take(known), row_sid[known])]
        if unknown:
            order = np.argsort(inverse, kind="stable")
            bounds = np.searchsorted(inverse[order], np.arange(uniq.size + 1))
            for u in sorted(unknown, key=lambda x: int(first[x])):  # arrival order
                rows_u = batch.cols.take(order[bounds[u] : bounds[u + 1]])
                parts.extend(self._candidate(self._key(frames, h, int(first[u])), rows_u, out))
        self._update(parts)
        return out

    def _columns(self, frames: Frames, h: RtpHeaders) -> _Rows:
        r = h.rows
        evcand = (h.pt >= DYNAMIC_PT_MIN) & (h.payload_len == 4)
        if evcand.any():
            at = h.payload_at[evcand] + 1
            evcand[evcand] = (frames.data[at] & 0x40) == 0  # RFC 4733 §2.3: R bit is zero
        cols = RtpColumns(
            sid=np.full(r.size, -1, np.int64), arrival_s=frames.ts[r], seq=h.seq, ts=h.ts,
            pt=h.pt, marker=h.marker, kind=evcand.astype(np.int64),
            dscp=frames.dscp[r].astype(np.int64), vlan=frames.vlan[r].astype(np.int64),
            pcp=frames.pcp[r].astype(np.int64))
        k = (frames.src_hi[r] * _M64) ^ frames.src_lo[r]
        for col in (frames.dst_hi[r], frames.dst_lo[r],
                    (frames.sport[r].astype(np.uint64) << np.uint64(16)) | frames.dport[r],
                    h.ssrc.astype(np.uint64)):
            k = (k * _M64) ^ col  # 64-bit mix; a full-key check happens per unique hash
        return _Rows(cols, k, h, frames)

    @staticmethod
    def _key(frames: Frames, h: RtpHeaders, i: int) -> Key:
        r = int(h.rows[i])
        return (int(frames.src_hi[r]), int(frames.src_lo[r]), int(frames.sport[r]),
                int(frames.dst_hi[r]), int(frames.dst_lo[r]), int(frames.dport[r]),
                int(h.ssrc[i]))

    def _update(self, parts: list[RtpColumns]) -> None:
        cols = RtpColumns.concat(parts) if len(parts) > 1 else parts[0]
        if len(cols):
            self.stats.update(self._kinds(cols))

    def _kinds(self, c: RtpColumns) -> RtpColumns:
        """Replace the event-candidate flag with the packet kind (see module docstring)."""
        evcand = c.kind.astype(bool)
        u, inv = np.unique(c.sid, return_inverse=True)
        fresh = ~evcand & np.isin(c.sid, [s for s in u.tolist() if s not in self._main_pt])
        if fresh.any():  # the stream's main PT: its first packet that is not event-like
            fs, fi = np.unique(c.sid[fresh], return_index=True)
            pts = c.pt[np.flatnonzero(fresh)[fi]]
            for s, pt in zip(fs.tolist(), pts.tolist(), strict=True):
                self._main_pt[s] = pt
        main_row = np.array([self._main_pt.get(s, -1) for s in u.tolist()])[inv]
        kind = np.where(evcand & (c.pt != main_row), PayloadKind.TELEPHONE_EVENT,
                        PayloadKind.MEDIA).astype(np.int64)
        hinted = self._sid_kind[c.sid, c.pt]
        kind = np.where(hinted >= 0, hinted, kind)
        return RtpColumns(c.sid, c.arrival_s, c.seq, c.ts, c.pt, c.marker, kind, c.dscp,
                          c.vlan, c.pcp)

    # -- candidates -----------------------------------------------------------------------

    def _announced(self, key: Key, now: float) -> PayloadMap | None:
        if self.hints is None:
            return None
        return self.hints.payloads_for(Endpoint(key[0], key[1], key[2]),
                                       Endpoint(key[3], key[4], key[5]), now)

    def _candidate(self, key: Key, rows: RtpColumns, out: FeedResult) -> list[RtpColumns]:
        """Rows of a key with no stream: held, validated (all held rows returned with
        their new stream slot), or dropped packet by packet when probation fails."""
        cand = self._cands.pop(key, None)
        first_ts = float(rows.arrival_s[0])
        if cand is not None and first_ts - cand.last_seen > self.config.idle_timeout_s:
            self.counters.candidates_expired += 1  # idle too long: forgotten, start afresh
            cand = None
        cols = rows if cand is None else RtpColumns.concat([cand.cols, rows])
        announced = self._announced(key, float(rows.arrival_s[-1]))
        if announced is None and cand is not None:
            announced = cand.announced
        if announced is not None:
            if len(cols) >= self.config.probation_packets or not _sdp_clocked(cols, announced):
                return [self._validate(key, cols, announced, out)]
        else:
            kept = self._probation(cols)
            if kept is None:
                return []
            cols = kept
            if self._is_valid(cols):
                return [self._validate(key, cols, None, out)]
        self._cands[key] = _Candidate(cols, float(cols.arrival_s[-1]), announced)
        if len(self._cands) > self.config.max_candidates:
            del self._cands[next(iter(self._cands))]  # least recently fed
            self.counters.candidates_evicted += 1
        return []

    def _probation(self, cols: RtpColumns) -> RtpColumns | None:
        """Drop leading packets while the held ones cannot be a stream; None when nothing
        is left."""
        while len(cols):
            verdict = self._probation_window(cols)
            if verdict != _BAD:
                return cols
            self.counters.candidates_rejected += 1
            cols = cols.take(np.arange(1, len(cols)))
        return None

    def _is_valid(self, cols: RtpColumns) -> bool:
        return len(cols) >= self.config.probation_packets and \
            self._probation_window(cols) == _VALID

    def _probation_window(self, cols: RtpColumns) -> int:
        """Judge the first ``probation_packets`` held packets, widening the window one
        packet at a time while undecided (a frame or event spanning packets), so the
        verdict rests on the fewest packets that show a stream."""
        window = min(self.config.probation_packets, len(cols))
        while True:
            verdict = self._probation_verdict(cols.take(np.arange(window)))
            if verdict != _UNDECIDED or window >= len(cols):
                return verdict
            window += 1

    def _probation_verdict(self, c: RtpColumns) -> int:
        """`_VALID` when the packets, in sequence order, look like one RTP stream; `_BAD`
        when they cannot be; `_UNDECIDED` while too few, or while every step is
        plausible but no timestamp advanced yet and fewer than ``max_probation_hold``
        are held."""
        rel = ((c.seq - c.seq[0] + 32768) % 65536) - 32768  # signed, from the first arrival
        order = np.argsort(rel, kind="stable")
        dseq = np.diff(rel[order])
        tsr = ((c.ts - c.ts[0] + (1 << 31)) % (1 << 32)) - (1 << 31)
        dts = np.diff(tsr[order])
        event_only = bool(c.kind.all())
        bad = (dseq > self.config.max_probation_step) | (dts < 0)
        bad |= (dts > self.config.max_probation_ts_step) | ((dseq == 0) & (dts != 0))
        if bad.any():
            return _BAD
        if len(c) < self.config.probation_packets:
            return _UNDECIDED
        if not (dseq > 0).any() or (not event_only and not (dts > 0).any()):
            return _UNDECIDED if len(c) < self.config.max_probation_hold else _BAD
        return _VALID

    def _validate(self, key: Key, cols: RtpColumns, announced: PayloadMap | None,
                  out: FeedResult) -> RtpColumns:
        if len(self._sid) >= self.config.max_streams:
            victim = min(self._sid.values(), key=lambda s: float(self.stats.s["last_ts"][s]))
            out.ended.append(self._close(victim))
            self.counters.streams_evicted += 1
        ep_hints = announced
        if ep_hints is None:  # an answer may have come while the candidate was held
            ep_hints = self._announced(key, float(cols.arrival_s[-1]))
        hints = {**self.pt_hints, **ep_hints} if ep_hints else self.pt_hints
        kinds = self._hint_kind.copy()
        for pt, hinted in (ep_hints or {}).items():
            if 0 <= pt < 128:
                kinds[pt] = int(hinted.kind)
        signalled = np.array([h.kind != PayloadKind.MEDIA for h in hints.values()], bool)
        not_media = np.isin(cols.pt, np.array(list(hints), np.int64)[signalled])
        media = np.flatnonzero((cols.kind == 0) & ~not_media)
        main_pt = int(cols.pt[media[0]]) if media.size else int(cols.pt[0])
        info = lookup(main_pt, hints)
        if info is None and media.size == 0:  # an event-only stream (RFC 4733 §2.5.1)
            info = TELEPHONE_EVENT
        clock, estimated = self._clock(cols, media, info, main_pt in hints)
        tup = key[:6]
        prev = self._by_tuple.get(tup)
        meta = StreamMeta(StreamKey(*key), info.name if info else None, clock, estimated,
                          prev if prev is not None and prev != key[6] else None)
        sid = self.stats.open(meta)
        if sid >= self._sid_kind.shape[0]:
            grown = np.full((max(2 * sid, 64), 128), -1, np.int64)
            grown[: self._sid_kind.shape[0]] = self._sid_kind
            self._sid_kind = grown
        self._sid_kind[sid] = kinds
        self._sid[key], self._key_of[sid] = sid, key
        self._by_tuple[tup] = key[6]
        self._by_tuple.move_to_end(tup)
        while len(self._by_tuple) > self.config.max_streams:
            self._by_tuple.popitem(last=False)
        if media.size:
            self._main_pt[sid] = main_pt
        self.counters.streams_validated += 1
        self.counters.streams_announced += announced is not None
        last = float(cols.arrival_s.max())
        heapq.heappush(self._idle, (last + self.config.idle_timeout_s, next(self._serial), key))
        out.started.append(Started(meta.key, float(cols.arrival_s.min())))
        return _with_sid(cols, np.full(len(cols), sid, np.int64))

    def _clock(self, cols: RtpColumns, media: I64, info: PayloadInfo | None, from_sdp: bool
               ) -> tuple[int | None, bool]:
        """(clock, estimated): the table/hint clock, else the rate the held media packets'
        timestamps run at; an SDP clock off by more than CLOCK_GUARD loses to it."""
        clock = info.clock_rate if info else None
        if media.size < 2 or (clock is not None and not from_sdp):
            return clock, False
        a, b = media[0], media[-1]
        adv = (int(cols.ts[b]) - int(cols.ts[a])) % (1 << 32)
        span = float(cols.arrival_s[b] - cols.arrival_s[a])
        estimate = estimate_clock_rate(adv, span)
        if clock is None:
            return estimate, estimate is not None
        rate = adv / span if span > 0 else 0.0
        if estimate is None or estimate == clock or abs(clock - rate) <= CLOCK_GUARD * rate:
            return clock, False
        self.counters.sdp_clock_overridden += 1
        return estimate, True

    # -- time and ending --------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest packet time a stream goes idle (None: no stream)."""
        heap = self._idle
        while heap:
            due, _, key = heap[0]
            sid = self._sid.get(key)
            if sid is None:
                heapq.heappop(heap)  # closed or evicted since
                continue
            actual = float(self.stats.s["last_ts"][sid]) + self.config.idle_timeout_s
            if actual <= due:
                return due
            heapq.heapreplace(heap, (actual, next(self._serial), key))
        return None

    def expire(self, now: float) -> list[StreamStats]:
        """Streams idle for ``idle_timeout_s`` at packet time ``now``, in the order they
        went idle; candidates idle as long are forgotten."""
        out: list[StreamStats] = []
        while (due := self.next_deadline()) is not None and due <= now:
            _, _, key = heapq.heappop(self._idle)
            out.append(self._close(self._sid[key]))
            self.counters.streams_expired += 1
        limit = now - self.config.idle_timeout_s
        for key in [k for k, c in self._cands.items() if c.last_seen < limit]:
            if self._cands[key].announced is not None:  # SDP said so: never dropped
                out.extend(self._flush(key))
            else:
                del self._cands[key]
                self.counters.candidates_expired += 1
        return out

    def _flush(self, key: Key) -> list[StreamStats]:
        """An announced candidate still held for its clock check becomes a stream and
        ends at once (it stopped before ``probation_packets`` packets)."""
        cand = self._cands.pop(key)
        assert cand.announced is not None
        rows = self._validate(key, cand.cols, cand.announced, FeedResult())
        self._update([rows])
        self.counters.streams_expired += 1
        return [self._close(self._sid[key])]

    def _close(self, sid: int) -> StreamStats:
        key = self._key_of.pop(sid)
        del self._sid[key]
        self._main_pt.pop(sid, None)
        return self.stats.close(sid)

    def close(self, keys: Iterable[StreamKey]) -> list[StreamStats]:
        """End these streams now (their call ended); unknown keys are ignored."""
        out: list[StreamStats] = []
        for k in keys:
            key = (k.src_hi, k.src_lo, k.sport, k.dst_hi, k.dst_lo, k.dport, k.ssrc)
            self._cands.pop(key, None)
            sid = self._sid.get(key)
            if sid is not None:
                out.append(self._close(sid))
                self.counters.streams_closed += 1
        return out

    def streams(self) -> list[StreamKey]:
        """Keys of the validated streams being tracked now, in the order they started."""
        return [StreamKey(*key) for key in self._sid]

    def snapshot(self, key: StreamKey) -> StreamStats | None:
        """Statistics of a validated stream so far, without ending it; None if unknown."""
        sid = self._sid.get((key.src_hi, key.src_lo, key.sport, key.dst_hi, key.dst_lo,
                             key.dport, key.ssrc))
        return None if sid is None else self.stats.snapshot(sid)

    def last_packet_ts(self, key: StreamKey) -> float | None:
        """Packet time of a running stream's latest packet; None if it is not running."""
        sid = self._sid.get((key.src_hi, key.src_lo, key.sport, key.dst_hi, key.dst_lo,
                             key.dport, key.ssrc))
        return None if sid is None else float(self.stats.s["last_ts"][sid])

    def finish(self) -> list[StreamStats]:
        """Every remaining validated stream (announced candidates too), by first packet."""
        out: list[StreamStats] = []
        for key in [k for k, c in self._cands.items() if c.announced is not None]:
            out.extend(self._flush(key))
        out.extend(self._close(sid) for sid in list(self._sid.values()))
        self.counters.candidates_unvalidated += len(self._cands)
        self._cands.clear()
        self._idle.clear()
        return sorted(out, key=lambda s: (s.first_ts, s.key))


def _sdp_clocked(cols: RtpColumns, announced: PayloadMap) -> bool:
    """Whether the stream's main PT takes its clock from the SDP (a dynamic rtpmap): then
    the first packets are held for the clock check; a static type's clock is fixed."""
    media = cols.pt[cols.kind == 0]
    pt = int(media[0]) if media.size else int(cols.pt[0])
    return pt >= DYNAMIC_PT_MIN and pt in announced


def _with_sid(c: RtpColumns, sid: I64) -> RtpColumns:
    return RtpColumns(sid, c.arrival_s, c.seq, c.ts, c.pt, c.marker, c.kind, c.dscp, c.vlan,
                      c.pcp)
