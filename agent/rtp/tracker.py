"""`StreamTracker`: finds RTP streams in UDP traffic and keeps their statistics.

Theory of operation. Each UDP row is header-parsed (`agent.rtp.header`) and
keyed by 5-tuple + SSRC. Rows of a known stream go straight to the vectorised
statistics (`BatchStats`). A row of an unknown key starts a stream in one of
two ways:

- *Announced*: the signalling above (`MediaHints`, the call layer's SDP index)
  says an SDP sent media to this destination (or from this source: symmetric
  RTP). No probation: the stream counts from its first packet.
- *Heuristic*: a candidate is held until ``probation_packets`` packets of one
  SSRC, taken in sequence-number order, show numbers advancing in small steps
  (at most ``max_probation_step``; equal numbers are duplicates and must repeat
  the timestamp) and RTP timestamps that never go back and do advance (event-only
  streams may repeat the onset timestamp, RFC 4733 §2.5.1.2). Sorting first
  makes probation tolerate reordering (RFC 3550 A.1 MAX_MISORDER) and duplicates
  at a stream's start. While the steps are plausible but no timestamp advanced
  yet (a video frame or an event spans packets) up to ``max_probation_hold``
  packets are held. A failing candidate drops its first packet and tries again.

A dynamic payload type's clock comes from SDP or, without it, from how fast the
timestamps advance against arrival time; either way it is judged on a fixed
prefix of the stream (the first packets spanning ``CLOCK_SPAN_S``, at most
``CLOCK_MAX_HOLD``), held until that prefix is complete, so the estimate never
depends on how packets were batched. An SDP clock off by more than
``CLOCK_GUARD`` from the timestamps' rate loses to the estimate
(``clock_rate_estimated``: L16/11025 whose timestamps run at 8 kHz,
docs/tshark-comparison.md). Either way the held packets are replayed in
arrival order when the stream opens, so a stream counts every packet it was
sent, from its very first (as Wireshark does). The SDP is looked up again when
a stream opens: an answer seen while a candidate was held still names its codec.

Packet kinds: an SDP payload map wins; then the static table (CN 13/19); a
dynamic PT whose payload has an event's length and differs from the stream's
main PT (its first packet that is neither event-like nor CN) is a
telephone-event; so is every packet of an event-only stream. An event is 4
bytes (RFC 4733 §2.3; in plain RTP its R bit must be clear); SRTP appends MKI +
auth tag (RFC 3711 §3.1), so a stream whose SDP has ``a=crypto`` takes 4 + the
suite's trailer (`agent.media.srtp`), one whose SDP says plain RTP only 4, and a
stream without SDP 4 or 4 + a plausible trailer (4 or 10 bytes of tag, with or
without a 4-byte MKI). An SRTP payload is never read: only its length counts.

Time is packet time, and the tracker owns its timers: `next_deadline` is the
earliest packet time a stream goes idle (``idle_timeout_s`` after its last
packet; a lazy heap, re-armed when a stream turned out to be busy), `expire`
ends what is due. A candidate idle longer than the timeout is forgotten when
its next packet arrives (and swept by `expire`), so what a packet does never
depends on when a sweep ran. Tables keyed by the network (candidates, streams)
are capped; the least recently seen entry is evicted and counted, found in O(log n)
(the candidates' insertion order, the streams' idle heap); idle candidates are found
by a heap of their last packet times (`agent.lazyheap`): nothing scans a table. `close` ends
streams on demand (their call ended), `snapshot` reads one without ending it.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.capture.points import point_id, point_name
from agent.decode.endpoint import Endpoint
from agent.decode.frames import IPPROTO_UDP, Frames
from agent.lazyheap import LazyHeap, heap_upto
from agent.media.description import MAX_EVENT_PAYLOAD_BYTES, UNSIGNALLED_EVENT_PAYLOAD_BYTES
from agent.media.payloads import (
    DYNAMIC_PT_MIN,
    TELEPHONE_EVENT,
    PayloadInfo,
    PayloadKind,
    estimate_clock_rate,
    lookup,
)
from agent.rtp.batch import BatchStats
from agent.rtp.columns import Row, RtpColumns
from agent.rtp.header import RtpHeaders, merge, parse_headers, parse_udptl
from agent.rtp.hints import EndpointMedia, MediaHints, PayloadMap
from agent.rtp.model import StreamKey, StreamStats
from agent.rtp.rules import JitterBufferSpec, StreamMeta

I64 = npt.NDArray[np.int64]
Key = tuple[int, int, int, int, int, int, int, int]  # 5-tuple, SSRC, point id
KeyColumns = tuple[npt.NDArray[Any], ...]  # the `Key` fields of many rows, one array each
_VALID = 0  # probation verdicts: a stream
_UNDECIDED = 1  # hold on, wait for more packets
_BAD = 2  # cannot be one stream: drop the first held packet
_M64 = np.uint64(0x9E3779B97F4A7C15)
CLOCK_GUARD = 0.25  # relative disagreement between SDP clock and timestamps that SDP loses
CLOCK_SPAN_S = 0.2  # a dynamic type's clock is judged on the first packets spanning this
CLOCK_MAX_HOLD = 50  # ... or on this many packets when they arrive faster


@functools.lru_cache(maxsize=256)  # a few SRTP trailer sizes in practice; bounded
def _length_row(lengths: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """True at each payload length an event of a stream can have (read-only, shared)."""
    row = np.zeros(MAX_EVENT_PAYLOAD_BYTES + 1, np.bool_)
    row[[n for n in lengths if 0 < n <= MAX_EVENT_PAYLOAD_BYTES]] = True
    row.flags.writeable = False
    return row


_UNSIGNALLED_ROW = _length_row(UNSIGNALLED_EVENT_PAYLOAD_BYTES)


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
    udptl_rows: int = 0  # T.38 UDPTL packets to an endpoint SDP announced them for
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
    # rows of unknown flows dropped while the driver sheds load (`StreamTracker.shed`):
    # neither a stream nor a candidate SDP announced
    shed_rows: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass(slots=True)
class _Candidate:
    # sid column holds -1; kind column: event-candidate payload length (0: no). A
    # candidate of one packet (the common case under a flood of RTP-looking flows) holds
    # it as a `Row` of scalars: columns are built only when a second one comes.
    cols: RtpColumns | Row
    last_seen: float
    announced: EndpointMedia | None  # what the SDP said: no probation
    valid: bool = False  # a stream: held only until its clock can be judged
    serial: int = -1  # its live entry in the candidates' idle heap


@dataclass(frozen=True, slots=True)
class _Media:
    """A stream's description when it opened, and `StreamTracker._media_rows` under it."""

    described: EndpointMedia | None
    rows: I64
    main_pt: int


@dataclass(frozen=True, slots=True)
class _Opening:
    """A candidate found to be a stream: what `StreamTracker._validate` needs."""

    key: Key
    cols: RtpColumns
    announced: EndpointMedia | None
    window: int  # packets the clock is judged on
    decided: int  # packets it took to decide
    at: int  # index, in this feed's rows of the key, of the packet that decided it
    opened: _Media  # what the SDP said when it was decided, and its media rows


@dataclass(frozen=True, slots=True)
class Started:
    """A stream was validated: its key, the packet time of its first packet and of the
    packet that decided it (when it opened, in packet time)."""

    key: StreamKey
    first_ts: float
    opened_ts: float


@dataclass(slots=True)
class FeedResult:
    """What one `StreamTracker.feed` did that the call layer must know, in order."""

    started: list[Started] = field(default_factory=list)
    ended: list[StreamStats] = field(default_factory=list)  # evicted: the table was full


@dataclass
class _Rows:
    """One batch's parsed RTP rows, with the key hash and event-candidate length."""

    cols: RtpColumns
    keys: npt.NDArray[np.uint64]
    key_cols: KeyColumns  # each row's full key, column by column (`Key` order)
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
        # streams that opened on CN or events alone: their payload map, to name the codec
        # when the first media packet comes
        self._unnamed: dict[int, PayloadMap] = {}
        # 5-tuple -> last validated SSRC (for previous_ssrc); LRU, capped like the streams
        self._by_tuple: OrderedDict[tuple[int, ...], int] = OrderedDict()  # + point
        self._cands: OrderedDict[Key, _Candidate] = OrderedDict()  # least recently fed first
        self._pending: list[RtpColumns] = []  # a batch's stream rows not yet accounted
        # (last seen, serial, key): finds idle candidates without a scan
        self._cand_idle: LazyHeap[float, Key] = LazyHeap(self._cand_entry)
        # Lazy idle timers: (deadline, serial, key); re-armed when the stream was busy.
        self._idle: list[tuple[float, int, Key]] = []
        self._serial = itertools.count()
        self.counters = TrackerCounters()
        # Set by the driver (never by packet content) while it is behind: rows of a key
        # with no stream and no SDP announcing it are dropped and counted (`shed_rows`),
        # so heuristic discovery costs nothing; open streams and announced media go on.
        self.shed = False
        hint_kind = np.full(128, -1, np.int64)
        for pt in range(128):
            info = lookup(pt, self.pt_hints)
            if info is not None and (pt in self.pt_hints or info.kind != PayloadKind.MEDIA):
                hint_kind[pt] = int(info.kind)
        self._hint_kind = hint_kind
        self._sid_kind = np.full((64, 128), -1, np.int64)  # per stream slot: PT -> kind
        # per stream slot and payload length: can an RFC 4733 event be that long
        self._sid_evlen = np.tile(_UNSIGNALLED_ROW, (64, 1))

    # -- feeding ------------------------------------------------------------------------

    def feed(self, frames: Frames, rows: I64 | None = None, udptl: I64 | None = None
             ) -> FeedResult:
        """Account the UDP rows of ``frames`` (default: every row with proto 17), all at
        one point of the signalling (the caller cuts batches where SDP can change).
        ``udptl``: rows sent to an endpoint SDP announced T.38 over UDPTL for: a row that
        continues an open RTP stream stays RTP (gateways go on sending G.711 after a
        T.38 re-INVITE), the others are UDPTL (`parse_udptl`: accounted like RTP of a
        placeholder type, by their sequence numbers)."""
        out = FeedResult()
        if rows is None:
            rows = np.flatnonzero(frames.proto == IPPROTO_UDP).astype(np.int64)
        n_udptl = 0 if udptl is None else int(udptl.size)
        if rows.size + n_udptl == 0:
            return out
        self.counters.udp_rows += int(rows.size) + n_udptl
        if n_udptl:
            rows, udptl = self._still_rtp(frames, rows, udptl)  # type: ignore[arg-type]
        h = parse_headers(frames, rows)
        if udptl is not None and udptl.size:
            uh = parse_udptl(frames, udptl)
            self.counters.udptl_rows += int(uh.rows.size)
            h = merge(h, uh)
        self.counters.not_rtp += int(rows.size) + n_udptl - int(h.rows.size)
        if h.rows.size == 0:
            return out
        batch = self._columns(frames, h)
        first, inverse = _groups(batch.key_cols, batch.keys)
        keys = _key_list(batch.key_cols, first)
        sid_get = self._sid.get
        sid_of = np.fromiter((sid_get(k, -1) for k in keys), np.int64, len(keys))
        row_sid = sid_of[inverse]
        known = np.flatnonzero(row_sid >= 0)
        # the batch's rows of streams, accounted at the end (or before a stream is evicted)
        self._pending = [_with_sid(batch.cols, row_sid) if known.size == row_sid.size
                         else _with_sid(batch.cols.take(known), row_sid[known])]
        if known.size < row_sid.size:
            self._unknown(batch.cols, keys, first, inverse, sid_of, out)
        parts, self._pending = self._pending, []
        self._update(parts)
        return out

    def _unknown(self, cols: RtpColumns, keys: list[Key], first: I64, inverse: I64,
                 sid_of: I64, out: FeedResult) -> None:
        """Rows of keys with no stream: held as candidates, or the rows of the streams they
        open (in the order they opened), as if fed packet by packet. The candidate table
        is an LRU of the keys by their latest packet: when this batch's new keys fit in
        it, no candidate can be evicted and every key's rows are judged at once;
        otherwise the rows go in pieces, each with only as many new keys as evict
        nothing, or the first row of a new key alone when the table is full, so each
        eviction falls where it would packet by packet. The rows of the streams they
        open go to the batch's pending rows."""
        rows = np.flatnonzero(sid_of[inverse] < 0)  # arrival order
        cap, cands = self.config.max_candidates, self._cands
        new = sum(1 for u in np.flatnonzero(sid_of < 0).tolist() if keys[u] not in cands)
        if new <= cap - len(cands):
            self._unknown_rows(cols, keys, inverse, rows, out)
            return
        at = inverse[rows].tolist()
        as_row = cols.rows(rows)  # a flood's pieces are single rows: their scalars at once
        i = 0
        while i < rows.size:
            j = self._piece_end(keys, at, i)
            if j == i + 1:
                one = self._unknown_key(keys[at[i]], cols, rows[i:j], out, row=as_row[i])
                if one is not None:
                    self._pending.append(one)
            else:
                self._unknown_rows(cols, keys, inverse, rows[i:j], out)
            i = j

    def _piece_end(self, keys: list[Key], at: list[int], i: int) -> int:
        """End of the piece of unknown rows (keys ``keys[at[r]]``) that starts at row
        ``i`` (see `_unknown`); a key that opened a stream meanwhile is no candidate."""
        cands, sids, n = self._cands, self._sid, len(at)
        free = self.config.max_candidates - len(cands)
        new = keys[at[i]]
        j = i + 1
        if free <= 0 and new not in cands and new not in sids:
            # a new key with the table full: its first row alone, as packet by packet it
            # is held (evicting the least recently fed) before any later row is looked at
            return j
        fresh: set[Key] = set() if new in cands or new in sids else {new}
        while j < n:
            k = keys[at[j]]
            if k not in cands and k not in sids and k not in fresh:
                if len(fresh) >= free:
                    break
                fresh.add(k)
            j += 1
        return j

    def _unknown_rows(self, cols: RtpColumns, keys: list[Key], inverse: I64, rows: I64,
                      out: FeedResult) -> None:
        """`_unknown` for ``rows`` (arrival order; a piece that evicts no candidate): key
        by key in the order of their first rows, the table left in the order of their
        latest rows."""
        grouped = rows[np.argsort(inverse[rows], kind="stable")]  # by key, each in arrival order
        unk, starts = np.unique(inverse[grouped], return_index=True)
        ends = np.append(starts[1:], grouped.size)
        order = np.argsort(grouped[starts], kind="stable")  # keys by their first row
        unk, starts, ends = unk[order], starts[order], ends[order]
        opening: list[tuple[int, _Opening]] = []
        firsts = cols.rows(grouped[starts])
        for u, a, b, first in zip(unk.tolist(), starts.tolist(), ends.tolist(), firsts,
                                  strict=True):
            idx = grouped[a:b]
            got = self._unknown_key(keys[u], cols, idx, out, opening,
                                    row=first if b - a == 1 else None)
            if got is not None:
                self._pending.append(got)
        if unk.size > 1:  # packet by packet, the key fed last is the most recent
            for u in unk[np.argsort(grouped[ends - 1], kind="stable")].tolist():
                if keys[u] in self._cands:
                    self._cands.move_to_end(keys[u])
        for _, o in sorted(opening, key=lambda t: t[0]):  # in the order they opened
            # (_validate may account and replace the pending list: append after it)
            part = self._validate(o.key, o.cols, o.announced, out, o.window, o.decided,
                                  o.opened)
            self._pending.append(part)

    def _unknown_key(self, key: Key, cols: RtpColumns, idx: I64, out: FeedResult,
                     opening: list[tuple[int, _Opening]] | None = None,
                     row: Row | None = None) -> RtpColumns | None:
        """Rows ``idx`` of one key with no stream when the batch began: the rows of its
        stream if an earlier piece of the batch opened one; else held, shed, or found to
        open a stream (added to ``opening``, or opened now without it). ``row``: the one
        row's scalars, when ``idx`` is one row and the caller has them."""
        sid = self._sid.get(key)
        if sid is not None:  # opened by an earlier piece of this batch
            return _with_sid(cols.take(idx), np.full(idx.size, sid, np.int64))
        last = row[1] if row is not None else float(cols.arrival_s[idx[-1]])
        if self.shed and self._shed(key, last):
            self.counters.shed_rows += int(idx.size)
            return None
        if (idx.size == 1 and self.config.probation_packets > 1 and key not in self._cands
                and self._announced(key, last) is None):
            # what `_candidate` does with it: one packet is never bad, nor enough
            self._hold(key, row if row is not None else cols.rows(idx)[0], last, None, False)
            return None
        o = self._candidate(key, cols.take(idx))
        if o is None:
            return None
        if opening is not None:  # opens at the row that decided it
            opening.append((int(idx[o.at]), o))
            return None
        return self._validate(o.key, o.cols, o.announced, out, o.window, o.decided, o.opened)

    def _still_rtp(self, frames: Frames, rows: I64, udptl: I64) -> tuple[I64, I64]:
        """Split rows to T.38 endpoints into (RTP rows with them, UDPTL rows): RTP where
        the row's 5-tuple and SSRC are a stream already open."""
        h = parse_headers(frames, udptl)
        if h.rows.size == 0 or not self._sid:
            return rows, udptl
        keys = _key_list(_key_columns(frames, h))
        open_ = np.array([k in self._sid for k in keys], bool)
        if not open_.any():
            return rows, udptl
        rtp = h.rows[open_]
        return np.union1d(rows, rtp).astype(np.int64), np.setdiff1d(udptl, rtp)

    def _columns(self, frames: Frames, h: RtpHeaders) -> _Rows:
        r = h.rows
        # an event's length, for some stream: 4 bytes, or 4 + an SRTP MKI and tag
        evcand = ((h.pt >= DYNAMIC_PT_MIN) & (h.payload_len >= 4)
                  & (h.payload_len <= MAX_EVENT_PAYLOAD_BYTES))
        # plain RTP whose event the capture holds (live, the kernel keeps no payload)
        plain = evcand & (h.payload_len == 4) & (h.payload_captured >= 2)
        if plain.any():
            at = h.payload_at[plain] + 1
            evcand[plain] = (frames.data[at] & 0x40) == 0  # RFC 4733 §2.3: R bit is zero
        cols = RtpColumns(
            sid=np.full(r.size, -1, np.int64), arrival_s=frames.ts[r], seq=h.seq, ts=h.ts,
            pt=h.pt, marker=h.marker, kind=np.where(evcand, h.payload_len, 0).astype(np.int64),
            dscp=frames.dscp[r].astype(np.int64), vlan=frames.vlan[r].astype(np.int64),
            pcp=frames.pcp[r].astype(np.int64))
        kc = _key_columns(frames, h)
        src_hi, src_lo, sport, dst_hi, dst_lo, dport, ssrc, point = kc
        k = (src_hi * _M64) ^ src_lo
        for col in (dst_hi, dst_lo, (sport.astype(np.uint64) << np.uint64(16)) | dport,
                    ssrc.astype(np.uint64) | (point.astype(np.uint64) << np.uint64(32))):
            k = (k * _M64) ^ col  # 64-bit mix; `_groups` checks the full keys
        return _Rows(cols, k, kc, h, frames)

    def _update(self, parts: list[RtpColumns]) -> None:
        if not parts:
            return
        cols = RtpColumns.concat(parts) if len(parts) > 1 else parts[0]
        if len(cols):
            self.stats.update(self._kinds(cols))

    def _kinds(self, c: RtpColumns) -> RtpColumns:
        """Replace the event-candidate length with the packet kind (module docstring)."""
        evcand = self._sid_evlen[c.sid, c.kind]  # length 0 (not a candidate) is never one
        hinted = self._sid_kind[c.sid, c.pt]
        present = np.zeros(int(c.sid.max()) + 1, bool)
        present[c.sid] = True
        u = np.flatnonzero(present)
        main = np.full(present.size, -1, np.int64)  # per stream slot: its main PT, -1 not yet
        main[u] = [self._main_pt.get(s, -1) for s in u.tolist()]
        fresh = ~evcand & (hinted <= PayloadKind.MEDIA)  # not CN, not a signalled event
        fresh &= main[c.sid] < 0
        if fresh.any():  # the stream's main PT: its first packet that is not event-like
            fs, fi = np.unique(c.sid[fresh], return_index=True)
            pts = c.pt[np.flatnonzero(fresh)[fi]]
            for s, pt in zip(fs.tolist(), pts.tolist(), strict=True):
                self._main_pt[s] = main[s] = pt
                if s in self._unnamed:
                    self._name(s, pt)
        main_row = main[c.sid]
        kind = np.where(evcand & (c.pt != main_row), PayloadKind.TELEPHONE_EVENT,
                        PayloadKind.MEDIA).astype(np.int64)
        kind = np.where(hinted >= 0, hinted, kind)
        return RtpColumns(c.sid, c.arrival_s, c.seq, c.ts, c.pt, c.marker, kind, c.dscp,
                          c.vlan, c.pcp)

    def _name(self, sid: int, pt: int) -> None:
        """A stream that opened on CN or events alone (named after them) gets its first
        media packet: that payload names its codec (the RTP clock stays as opened)."""
        info = lookup(pt, self._unnamed.pop(sid))
        meta = self.stats.meta[sid]
        self.stats.meta[sid] = dataclasses.replace(meta, codec=info.name if info else None,
                                                   codec_params=info.fmtp if info else None)

    # -- candidates -----------------------------------------------------------------------

    def _announced(self, key: Key, now: float) -> EndpointMedia | None:
        if self.hints is None:
            return None
        return self.hints.media_for(Endpoint(key[0], key[1], key[2]),
                                       Endpoint(key[3], key[4], key[5]), now)

    def _shed(self, key: Key, now: float) -> bool:
        """While shedding: whether rows of ``key`` (no stream yet) are dropped; a
        candidate SDP announced, or a key SDP announces now, is kept."""
        cand = self._cands.get(key)
        if cand is not None and cand.announced is not None:
            return False
        return self._announced(key, now) is None

    def _candidate(self, key: Key, rows: RtpColumns) -> _Opening | None:
        """Rows of a key with no stream: held, found to open a stream (returned: the
        caller opens streams in the order of the rows that decided them), or dropped
        packet by packet when probation fails."""
        cand = self._cands.pop(key, None)
        first_ts = float(rows.arrival_s[0])
        if cand is not None and first_ts - cand.last_seen > self.config.idle_timeout_s:
            self.counters.candidates_expired += 1  # idle too long: forgotten, start afresh
            cand = None
        cols = rows if cand is None else RtpColumns.concat([_held(cand.cols), rows])
        announced = self._announced(key, float(rows.arrival_s[-1]))
        if announced is None and cand is not None:
            announced = cand.announced
        valid = announced is not None or (cand is not None and cand.valid)
        decided = 1  # how many held packets it took to decide
        held = len(cols) - len(rows)  # of them, held from earlier rows
        if not valid:
            kept, judged = self._probation(cols)
            held -= len(cols) - len(kept)
            cols = kept
            decided = self._valid_window(cols, judged) or 0
            valid = decided > 0
        if valid:
            described = announced or self._announced(key, float(cols.arrival_s[-1]))
            hints = {**self.pt_hints, **(described.payloads if described else {})}
            media, main_pt = self._media_rows(cols, hints)
            window = self._clock_window(cols, media, main_pt)
            if window is not None:
                decided = max(decided, window)
                return _Opening(key, cols, announced, window, decided,
                                min(max(decided - 1 - held, 0), len(rows) - 1),
                                _Media(described, media, main_pt))
        self._hold(key, cols, float(cols.arrival_s[-1]), announced, valid)
        return None

    def _hold(self, key: Key, held: RtpColumns | Row, last: float,
              announced: EndpointMedia | None, valid: bool) -> None:
        """Keep ``key``'s packets as the most recently fed candidate (``last``: its latest
        packet time); the least recently fed goes when the table is full."""
        self._cands[key] = cand = _Candidate(held, last, announced, valid)
        cand.serial = self._cand_idle.push(last, key, len(self._cands))
        if len(self._cands) > self.config.max_candidates:
            del self._cands[next(iter(self._cands))]  # least recently fed
            self.counters.candidates_evicted += 1

    def _probation(self, cols: RtpColumns) -> tuple[RtpColumns, tuple[int, int] | None]:
        """Drop leading packets while the held ones cannot be a stream: (what is kept,
        its `_probation_window` verdict when one was taken)."""
        seq, ts = cols.seq.tolist(), cols.ts.tolist()
        like = _plausible_event(cols).tolist()
        drop, judged = 0, None
        while len(seq) - drop > 1:  # one packet is never bad: the common case under a flood
            judged = self._probation_window(seq[drop:], ts[drop:], like[drop:])
            if judged[0] != _BAD:
                break
            self.counters.candidates_rejected += 1
            drop, judged = drop + 1, None
        return (cols.take(np.arange(drop, len(seq))) if drop else cols), judged

    def _valid_window(self, cols: RtpColumns, judged: tuple[int, int] | None) -> int | None:
        """How many of the held packets showed a stream (None: not yet); ``judged``: their
        verdict if `_probation` took it."""
        if len(cols) < self.config.probation_packets:
            return None
        if judged is None:
            judged = self._probation_window(cols.seq.tolist(), cols.ts.tolist(),
                                            _plausible_event(cols).tolist())
        verdict, window = judged
        return window if verdict == _VALID else None

    def _probation_window(self, seq: list[int], ts: list[int], like: list[bool]
                          ) -> tuple[int, int]:
        """Judge the first ``probation_packets`` held packets (their sequence numbers,
        timestamps and whether each has an event's length), widening the window one
        packet at a time while undecided (a frame or event spanning packets), so the
        verdict rests on the fewest packets that show a stream: (verdict, window)."""
        window = min(self.config.probation_packets, len(seq))
        while True:
            verdict = self._probation_verdict(seq[:window], ts[:window], like[:window])
            if verdict != _UNDECIDED or window >= len(seq):
                return verdict, window
            window += 1

    def _probation_verdict(self, seq: list[int], ts: list[int], like: list[bool]) -> int:
        """`_VALID` when the packets, in sequence order, look like one RTP stream; `_BAD`
        when they cannot be; `_UNDECIDED` while too few, or while every step is
        plausible but no timestamp advanced yet and fewer than ``max_probation_hold``
        are held. A handful of packets: plain Python (numpy costs more per call)."""
        cfg = self.config
        rel = [((q - seq[0] + 32768) % 65536) - 32768 for q in seq]  # signed, from the first
        tsr = [((t - ts[0] + (1 << 31)) % (1 << 32)) - (1 << 31) for t in ts]
        order = sorted(range(len(seq)), key=rel.__getitem__)  # stable, as arrived
        advanced = stamped = False
        for a, b in itertools.pairwise(order):
            dseq, dts = rel[b] - rel[a], tsr[b] - tsr[a]
            if (dseq > cfg.max_probation_step or dts < 0 or dts > cfg.max_probation_ts_step
                    or (dseq == 0 and dts != 0)):
                return _BAD
            advanced |= dseq > 0
            stamped |= dts > 0
        if len(seq) < cfg.probation_packets:
            return _UNDECIDED
        if not advanced or (not all(like) and not stamped):  # all(like): event-only
            return _UNDECIDED if len(seq) < cfg.max_probation_hold else _BAD
        return _VALID

    def _media_rows(self, cols: RtpColumns, hints: PayloadMap) -> tuple[I64, int]:
        """(rows that are media, the stream's main PT). CN and events, by the SDP or the
        static table, are not media; the main PT is the first other packet's that is not
        event-like, and an event-like packet of the main PT is media (as `_kinds` says)."""
        kinds = self._hint_kind.copy()
        for pt, info in hints.items():
            if 0 <= pt < 128:
                kinds[pt] = int(info.kind)
        media_kind = kinds[cols.pt] <= PayloadKind.MEDIA
        like = _plausible_event(cols)  # the stream's own event lengths are not known yet
        plain = np.flatnonzero(~like & media_kind)
        if plain.size == 0:
            return plain, int(cols.pt[0])
        main_pt = int(cols.pt[plain[0]])
        return np.flatnonzero(media_kind & (~like | (cols.pt == main_pt))), main_pt

    def _clock_window(self, cols: RtpColumns, media: I64, main_pt: int) -> int | None:
        """How many of the held packets the clock is judged on, None to hold more.

        A static type's clock is the table's: the first packet decides. A dynamic one's
        is estimated (or the SDP's checked) from the first media packets that span
        ``CLOCK_SPAN_S`` (at least ``probation_packets`` of them), or the first
        ``CLOCK_MAX_HOLD`` packets: always the same packets, whatever the batching.
        ``media``, ``main_pt``: `_media_rows` of the held packets under their SDP."""
        if main_pt < DYNAMIC_PT_MIN or media.size == 0:
            return 1
        arr = cols.arrival_s[media]
        n = self.config.probation_packets
        ok = np.flatnonzero(arr - arr[0] >= CLOCK_SPAN_S)
        ok = ok[ok >= n - 1]
        if ok.size:
            return min(int(media[ok[0]]) + 1, CLOCK_MAX_HOLD)
        return CLOCK_MAX_HOLD if len(cols) >= CLOCK_MAX_HOLD else None

    def _validate(self, key: Key, cols: RtpColumns, announced: EndpointMedia | None,
                  out: FeedResult, window: int | None = None, decided: int | None = None,
                  opened: _Media | None = None) -> RtpColumns:
        if len(self._sid) >= self.config.max_streams:
            # Before a slot is freed and taken, the batch's rows so far are accounted: the
            # evicted stream's are among them (its later rows in the batch too: the
            # choice sees the whole batch of open streams, not packet by packet).
            parts, self._pending = self._pending, []
            self._update(parts)
            # the least recently seen: the idle heap's front, once refreshed (O(log n))
            self.next_deadline()
            out.ended.append(self._close(self._sid[self._idle[0][2]]))
            self.counters.streams_evicted += 1
        if opened is not None:  # as `_candidate` found it, a moment ago
            described = opened.described
        elif (described := announced) is None:  # an answer may have come while it was held
            described = self._announced(key, float(cols.arrival_s[-1]))
        ep_hints = described.payloads if described is not None else None
        hints = {**self.pt_hints, **ep_hints} if ep_hints else self.pt_hints
        kinds = self._hint_kind.copy()
        for pt, hinted in (ep_hints or {}).items():
            if 0 <= pt < 128:
                kinds[pt] = int(hinted.kind)
        media, main_pt = ((opened.rows, opened.main_pt) if opened is not None
                          else self._media_rows(cols, hints))
        info = lookup(main_pt, hints)
        if info is None and media.size == 0:  # an event-only stream (RFC 4733 §2.5.1)
            info = TELEPHONE_EVENT
        judged = len(cols) if window is None else window
        clock, estimated = self._clock(cols, media[media < judged], info, main_pt in hints)
        tup = (*key[:6], key[7])  # 5-tuple at a point
        prev = self._by_tuple.get(tup)
        meta = StreamMeta(_stream_key(key), info.name if info else None, clock, estimated,
                          prev if prev is not None and prev != key[6] else None,
                          profile=described.profile if described else None,
                          srtp_trailer_bytes=described.srtp_trailer_bytes if described else None,
                          sdp_media=described.media if described else None,
                          codec_params=info.fmtp if info else None)
        sid = self.stats.open(meta)
        if sid >= self._sid_kind.shape[0]:
            grown = np.full((max(2 * sid, 64), 128), -1, np.int64)
            grown[: self._sid_kind.shape[0]] = self._sid_kind
            self._sid_kind = grown
            lengths = np.tile(_UNSIGNALLED_ROW, (grown.shape[0], 1))
            lengths[: self._sid_evlen.shape[0]] = self._sid_evlen
            self._sid_evlen = lengths
        self._sid_kind[sid] = kinds
        self._sid_evlen[sid] = (_length_row(described.event_payload_bytes)
                                if described is not None else _UNSIGNALLED_ROW)
        self._sid[key], self._key_of[sid] = sid, key
        self._by_tuple[tup] = key[6]
        self._by_tuple.move_to_end(tup)
        while len(self._by_tuple) > self.config.max_streams:
            self._by_tuple.popitem(last=False)
        if media.size:
            self._main_pt[sid] = main_pt
        else:
            self._unnamed[sid] = hints
        self.counters.streams_validated += 1
        self.counters.streams_announced += announced is not None
        last = float(cols.arrival_s.max())
        heapq.heappush(self._idle, (last + self.config.idle_timeout_s, next(self._serial), key))
        at = len(cols) if decided is None else min(decided, len(cols))
        out.started.append(Started(meta.key, float(cols.arrival_s.min()),
                                   float(cols.arrival_s[at - 1])))
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

    def due_by(self, t: float) -> list[tuple[float, tuple[Endpoint, Endpoint]]]:
        """What `expire` acts on up to packet time ``t``: per stream going idle and per
        candidate to be forgotten, (the earliest time it happens, its two endpoints). The
        engine lets a timer fire inside a run of rows fed at once only when no row of
        these endpoints comes at or after that time (`Engine._route`)."""
        idle = self.config.idle_timeout_s
        out: list[tuple[float, tuple[Endpoint, Endpoint]]] = []
        for _, _, key in heap_upto(self._idle, t):
            sid = self._sid.get(key)
            if sid is not None and (due := float(self.stats.s["last_ts"][sid]) + idle) <= t:
                out.append((due, _endpoints(key)))
        out += [(last + idle, _endpoints(key)) for last, _, key in self._cand_idle.upto(t - idle)]
        return out

    def expire(self, now: float) -> list[StreamStats]:
        """Streams idle for ``idle_timeout_s`` at packet time ``now``, in the order they
        went idle; candidates idle as long are forgotten."""
        out: list[StreamStats] = []
        while (due := self.next_deadline()) is not None and due <= now:
            _, _, key = heapq.heappop(self._idle)
            out.append(self._close(self._sid[key]))
            self.counters.streams_expired += 1
        limit = now - self.config.idle_timeout_s
        idle: list[Key] = []
        while (top := self._cand_idle.peek()) is not None and top[0] < limit:
            self._cand_idle.pop()
            idle.append(top[2])
        for key in sorted(idle, key=self._held_since):  # not the table's order: batching
            if self._cands[key].valid:  # a stream (SDP said so, or probation): never dropped
                out.extend(self._flush(key))
            else:
                del self._cands[key]
                self.counters.candidates_expired += 1
        return out

    def _cand_entry(self, entry: tuple[float, int, Key]) -> bool:
        cand = self._cands.get(entry[2])
        return cand is not None and cand.serial == entry[1]

    def _held_since(self, key: Key) -> tuple[float, Key]:
        held = self._cands[key].cols
        return (held[1] if isinstance(held, tuple) else float(held.arrival_s[0])), key

    def _flush(self, key: Key) -> list[StreamStats]:
        """A stream still held for its clock check opens on what it has and ends at once
        (it stopped before its clock window was complete)."""
        cand = self._cands.pop(key)
        rows = self._validate(key, _held(cand.cols), cand.announced, FeedResult())
        self._update([rows])
        self.counters.streams_expired += 1
        return [self._close(self._sid[key])]

    def _close(self, sid: int) -> StreamStats:
        key = self._key_of.pop(sid)
        del self._sid[key]
        self._main_pt.pop(sid, None)
        self._unnamed.pop(sid, None)
        return self.stats.close(sid)

    def close(self, keys: Iterable[StreamKey]) -> list[StreamStats]:
        """End these streams now (their call ended); unknown keys are ignored."""
        out: list[StreamStats] = []
        for k in keys:
            key = _tuple(k)
            self._cands.pop(key, None)
            sid = self._sid.get(key)
            if sid is not None:
                out.append(self._close(sid))
                self.counters.streams_closed += 1
        return out

    def streams(self) -> list[StreamKey]:
        """Keys of the validated streams being tracked now, in the order they started."""
        return [_stream_key(key) for key in self._sid]

    def snapshot(self, key: StreamKey) -> StreamStats | None:
        """Statistics of a validated stream so far, without ending it; None if unknown."""
        sid = self._sid.get(_tuple(key))
        return None if sid is None else self.stats.snapshot(sid)

    def last_packet_ts(self, key: StreamKey) -> float | None:
        """Packet time of a running stream's latest packet; None if it is not running."""
        sid = self._sid.get(_tuple(key))
        return None if sid is None else float(self.stats.s["last_ts"][sid])

    def finish(self) -> list[StreamStats]:
        """Every remaining validated stream (announced candidates too), by first packet."""
        out: list[StreamStats] = []
        for key in sorted([k for k, c in self._cands.items() if c.valid], key=self._held_since):
            out.extend(self._flush(key))
        out.extend(self._close(sid) for sid in list(self._sid.values()))
        self.counters.candidates_unvalidated += len(self._cands)
        self._cands.clear()
        self._cand_idle.clear()
        self._idle.clear()
        return sorted(out, key=lambda s: (s.first_ts, s.key))


def _key_columns(frames: Frames, h: RtpHeaders) -> KeyColumns:
    """The full key of each header row, one column per `Key` field."""
    r = h.rows
    return (frames.src_hi[r], frames.src_lo[r], frames.sport[r], frames.dst_hi[r],
            frames.dst_lo[r], frames.dport[r], h.ssrc, frames.point[r])


def _key_list(kc: KeyColumns, at: I64 | None = None) -> list[Key]:
    """The keys of rows ``at`` (default: all), as Python ints (one conversion per column)."""
    return list(zip(*((c if at is None else c[at]).tolist() for c in kc), strict=True))


def _groups(kc: KeyColumns, hashed: npt.NDArray[np.uint64]) -> tuple[I64, I64]:
    """(first row of each key, each row's key) for the full keys (5-tuple, SSRC, point) of
    header rows: grouped by the rows' 64-bit key hash, checked column by column against
    each group's first row, and grouped by the full key only when two keys share a hash
    (a flood can craft one: the mix is invertible), so no flow is ever merged into
    another's stream."""
    _, first, inverse = np.unique(hashed, return_index=True, return_inverse=True)
    lead = first[inverse]
    if all(np.array_equal(c, c[lead]) for c in kc):
        return first, inverse
    full = np.stack([c.astype(np.uint64) for c in kc], axis=1)
    _, first, inverse = np.unique(full, axis=0, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def _tuple(k: StreamKey) -> Key:
    return (k.src_hi, k.src_lo, k.sport, k.dst_hi, k.dst_lo, k.dport, k.ssrc, point_id(k.point))


def _stream_key(key: Key) -> StreamKey:
    return StreamKey(*key[:7], point_name(key[7]))


def _plausible_event(c: RtpColumns) -> npt.NDArray[np.bool_]:
    """Rows whose payload has an event's length on a stream without SDP (the kind column
    holds a candidate's payload length)."""
    return _UNSIGNALLED_ROW[c.kind]  # the kind column is 0..MAX_EVENT_PAYLOAD_BYTES


def _held(held: RtpColumns | Row) -> RtpColumns:
    """A candidate's packets as columns (of the dtypes `StreamTracker._columns` makes)."""
    return RtpColumns.of_row(held) if isinstance(held, tuple) else held


def _with_sid(c: RtpColumns, sid: I64) -> RtpColumns:
    return RtpColumns(sid, c.arrival_s, c.seq, c.ts, c.pt, c.marker, c.kind, c.dscp, c.vlan,
                      c.pcp)


def _endpoints(key: Key) -> tuple[Endpoint, Endpoint]:
    return Endpoint(key[0], key[1], key[2]), Endpoint(key[3], key[4], key[5])
