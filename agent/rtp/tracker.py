"""`StreamTracker`: finds RTP streams in UDP traffic and keeps their statistics.

Theory of operation. Each UDP row is header-parsed (`agent.rtp.header`) and
keyed by 5-tuple + SSRC. Rows of a validated stream go straight to the
vectorised statistics (`BatchStats`). Rows of an unknown key become a
*candidate*: held until ``probation_packets`` packets show one SSRC with
sequence numbers advancing in small steps (0..``max_probation_step``, at
least one forward) and RTP timestamps that never go back and do advance
(event-only streams may repeat the onset timestamp, RFC 4733 §2.5.1.2). That
is RFC 3550 A.1's probation, stricter, because nothing was signalled. A
validated candidate releases its held packets first, so a stream counts from
its very first packet, as Wireshark does. While the steps are plausible but
the timestamp has not advanced yet (a video frame or an event spans several
packets), up to ``max_probation_hold`` packets are held. A failing candidate
drops the packets before the failure and tries again from there.

Packet kinds: an SDP-style hint (`PayloadInfo`) wins; then the static table
(CN 13/19); a dynamic PT with a 4-byte payload, R bit clear (RFC 4733 §2.3)
and different from the stream's main PT (first non-event PT) is a
telephone-event; so is every packet of an event-only stream.

SDP hints per media endpoint (`hint_endpoint`, from the call layer): when a
stream is validated, the hints of its destination (addr, port) apply, else
those of its source (symmetric RTP: a phone sends from the port it receives
on). They name the codec and clock of its main PT and the kinds of its PTs,
ahead of the global ``pt_hints`` and the static table. An SDP clock that
disagrees by more than ``CLOCK_GUARD`` with the rate the stream's own
timestamps run at loses to the estimate (``clock_rate_estimated``): SDP can be
wrong (L16/11025 whose timestamps run at 8 kHz, docs/tshark-comparison.md).

Tables keyed by the network (candidates, streams, endpoint hints) are capped;
the least recently seen entry is evicted and counted. Time is packet time.
`close` ends streams on demand (their call ended), `snapshot` reads one
without ending it (the live agent's intervals).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.decode.frames import IPPROTO_UDP, Frames, addr_to_words
from agent.rtp.batch import BatchStats
from agent.rtp.columns import RtpColumns
from agent.rtp.header import RtpHeaders, parse_headers
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
_VALID = -1  # probation outcome: a stream
_UNDECIDED = -2  # probation outcome: hold on, wait for more packets
_M64 = np.uint64(0x9E3779B97F4A7C15)
CLOCK_GUARD = 0.25  # relative disagreement between SDP clock and timestamps that SDP loses
Endpoint = tuple[int, int, int]  # (addr hi, addr lo, port)


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
    max_endpoint_hints: int = 100_000  # SDP media endpoints remembered (LRU)
    jitter_buffer: JitterBufferSpec = field(default_factory=JitterBufferSpec)


@dataclass
class TrackerCounters:
    """Per-reason counts (exported as ``rtp_<name>``)."""

    udp_rows: int = 0  # UDP rows offered
    not_rtp: int = 0  # failed the RTP header checks
    candidates_rejected: int = 0  # probation failures (packets before the failure dropped)
    candidates_evicted: int = 0  # candidate table full: least recently seen dropped
    candidates_expired: int = 0  # idle candidates dropped
    candidates_unvalidated: int = 0  # candidates left at finish
    streams_validated: int = 0
    streams_evicted: int = 0  # stream table full: least recently seen ended early
    streams_expired: int = 0  # idle streams ended
    streams_closed: int = 0  # ended by `close` (their call ended)
    endpoint_hints_evicted: int = 0  # endpoint hint table full: least recently used dropped
    endpoint_hints_invalid: int = 0  # hint_endpoint with an address that does not parse
    sdp_clock_overridden: int = 0  # SDP clock lost to the timestamps' own rate

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class _Candidate:
    cols: RtpColumns  # sid column holds -1; kind column holds the event-candidate flag
    last_seen: float


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
    ) -> None:
        self.config = config
        self.pt_hints = dict(pt_hints or {})
        self.stats = BatchStats(jb=config.jitter_buffer)
        self._endpoints: OrderedDict[Endpoint, dict[int, PayloadInfo]] = OrderedDict()
        self._sid: dict[Key, int] = {}
        self._key_of: dict[int, Key] = {}
        self._main_pt: dict[int, int] = {}
        # 5-tuple -> last validated SSRC (for previous_ssrc); LRU, capped like the streams
        self._by_tuple: OrderedDict[tuple[int, ...], int] = OrderedDict()
        self._cands: dict[Key, _Candidate] = {}
        self._ended: list[StreamStats] = []
        self.counters = TrackerCounters()
        hint_kind = np.full(128, -1, np.int64)
        for pt in range(128):
            info = lookup(pt, self.pt_hints)
            if info is not None and (pt in self.pt_hints or info.kind != PayloadKind.MEDIA):
                hint_kind[pt] = int(info.kind)
        self._hint_kind = hint_kind
        self._sid_kind = np.full((64, 128), -1, np.int64)  # per stream slot: PT -> kind

    # -- signalling ---------------------------------------------------------------------

    def hint_endpoint(self, addr: str, port: int, hints: Mapping[int, PayloadInfo]) -> None:
        """Payload types an SDP offered for the media endpoint ``addr``:``port``.

        Applies to streams validated later whose destination is this endpoint (else
        whose source is). The table is capped (``max_endpoint_hints``, LRU); an address
        that does not parse is counted and ignored.
        """
        try:
            hi, lo = addr_to_words(addr)
        except ValueError:
            self.counters.endpoint_hints_invalid += 1
            return
        ep = (hi, lo, int(port))
        self._endpoints[ep] = dict(hints)
        self._endpoints.move_to_end(ep)
        while len(self._endpoints) > self.config.max_endpoint_hints:
            self._endpoints.popitem(last=False)
            self.counters.endpoint_hints_evicted += 1

    def _hints_for(self, key: Key) -> dict[int, PayloadInfo] | None:
        for ep in ((key[3], key[4], key[5]), (key[0], key[1], key[2])):
            hints = self._endpoints.get(ep)
            if hints is not None:
                self._endpoints.move_to_end(ep)
                return hints
        return None

    # -- feeding ------------------------------------------------------------------------

    def feed(self, frames: Frames, rows: I64 | None = None) -> None:
        """Account the UDP rows of ``frames`` (default: every row with proto 17)."""
        if rows is None:
            rows = np.flatnonzero(frames.proto == IPPROTO_UDP).astype(np.int64)
        if rows.size == 0:
            return
        self.counters.udp_rows += int(rows.size)
        h = parse_headers(frames, rows)
        self.counters.not_rtp += int(rows.size - h.rows.size)
        if h.rows.size == 0:
            return
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
                parts.extend(self._candidate(frames, h, rows_u, int(first[u])))
        self._update(parts)

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

    def _candidate(self, frames: Frames, h: RtpHeaders, rows: RtpColumns, i: int
                   ) -> list[RtpColumns]:
        key = self._key(frames, h, i)
        cand = self._cands.pop(key, None)
        cols = rows if cand is None else RtpColumns.concat([cand.cols, rows])
        n = self.config.probation_packets
        while len(cols) >= n:
            bad = self._probation_window(cols)
            if bad == _VALID:
                return [self._validate(key, cols)]
            if bad == _UNDECIDED:
                break
            self.counters.candidates_rejected += 1
            cols = cols.take(np.arange(bad + 1, len(cols)))
        if len(cols):
            self._cands[key] = _Candidate(cols, float(cols.arrival_s[-1]))
            if len(self._cands) > self.config.max_candidates:
                self._evict_candidate()
        return []

    def _probation_window(self, cols: RtpColumns) -> int:
        """Judge the first ``probation_packets`` held packets, widening the window one
        packet at a time while undecided (a frame or event spanning packets), so the
        verdict rests on the fewest packets that show a stream."""
        window = self.config.probation_packets
        while True:
            bad = self._probation_failure(cols.take(np.arange(window)))
            if bad != _UNDECIDED or window >= len(cols):
                return bad
            window += 1

    def _probation_failure(self, c: RtpColumns) -> int:
        """`_VALID` when the held packets look like one RTP stream; `_UNDECIDED` while the
        steps are all plausible but no timestamp advanced yet (video frames and event
        packets share a timestamp) and fewer than ``max_probation_hold`` are held;
        else the index of the last bad packet."""
        dseq = (np.diff(c.seq) % 65536)
        dts = ((np.diff(c.ts) + (1 << 31)) % (1 << 32)) - (1 << 31)
        event_only = bool(c.kind.all())
        bad = (dseq > self.config.max_probation_step) | (dts < 0)
        bad |= dts > self.config.max_probation_ts_step
        if bad.any():
            return int(np.flatnonzero(bad)[0])
        if not (dseq > 0).any() or (not event_only and not (dts > 0).any()):
            return _UNDECIDED if len(c) < self.config.max_probation_hold else len(c) - 2
        return _VALID

    def _evict_candidate(self) -> None:
        oldest = min(self._cands, key=lambda k: self._cands[k].last_seen)
        del self._cands[oldest]
        self.counters.candidates_evicted += 1

    def _validate(self, key: Key, cols: RtpColumns) -> RtpColumns:
        if len(self._sid) >= self.config.max_streams:
            victim = min(self._sid.values(), key=lambda s: float(self.stats.s["last_ts"][s]))
            self._ended.append(self._close(victim))
            self.counters.streams_evicted += 1
        ep_hints = self._hints_for(key)
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
        rate = adv / span
        if estimate is None or estimate == clock or abs(clock - rate) <= CLOCK_GUARD * rate:
            return clock, False
        self.counters.sdp_clock_overridden += 1
        return estimate, True

    # -- ending ---------------------------------------------------------------------------

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
        """Keys of the validated streams being tracked now."""
        return [StreamKey(*key) for key in self._sid]

    def snapshot(self, key: StreamKey) -> StreamStats | None:
        """Statistics of a validated stream so far, without ending it; None if unknown."""
        sid = self._sid.get((key.src_hi, key.src_lo, key.sport, key.dst_hi, key.dst_lo,
                             key.dport, key.ssrc))
        return None if sid is None else self.stats.snapshot(sid)

    def expire(self, now: float) -> list[StreamStats]:
        """Streams idle for more than ``idle_timeout_s`` at packet time ``now`` (epoch s)."""
        limit = now - self.config.idle_timeout_s
        out, self._ended = self._ended, []
        for sid in [s for s in self._sid.values() if self.stats.s["last_ts"][s] < limit]:
            out.append(self._close(sid))
            self.counters.streams_expired += 1
        for key in [k for k, c in self._cands.items() if c.last_seen < limit]:
            del self._cands[key]
            self.counters.candidates_expired += 1
        return out

    def finish(self) -> list[StreamStats]:
        """Every remaining validated stream, sorted by first packet time."""
        out, self._ended = self._ended, []
        out.extend(self._close(sid) for sid in list(self._sid.values()))
        self.counters.candidates_unvalidated += len(self._cands)
        self._cands.clear()
        return sorted(out, key=lambda s: (s.first_ts, s.key))


def _with_sid(c: RtpColumns, sid: I64) -> RtpColumns:
    return RtpColumns(sid, c.arrival_s, c.seq, c.ts, c.pt, c.marker, c.kind, c.dscp, c.vlan,
                      c.pcp)
