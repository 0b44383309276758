"""`CallTable`: dialogs + streams + RTCP -> `CallRecord`s, in packet time; calls/ owns the join.

Theory of operation. The SIP layer reports dialogs (`DialogStarted`,
`MediaChanged`, `DialogEnded`); each SDP endpoint goes into the one
`MediaIndex`, which also tells the RTP layer what a stream to it carries. The
engine feeds packets in time order, so a stream is joined to its call when it
*starts* (`stream_started`), by the SDP seen before it; an endpoint advertised
again later re-joins the running streams it explains (media that raced its
answer) or, when their call is over, closes them (a port reused by the next
call: the next packet starts the next call's stream, with that call's codec).
A stream's final statistics join its call when it ends (`stream_ended`).

The table owns three timers (`next_deadline` / `expire(now)`, packet time):

- *liveness* of an answered call: the call is alive while anything of it is
  seen, signalling (in-dialog requests and responses: re-INVITE, UPDATE, INFO,
  OPTIONS, NOTIFY, PRACK ...) or media. With media at the probe (and not on
  hold) it ends ``media_idle_timeout_s`` after its last packet of either kind;
  signalling alone keeps it for the RFC 4028 session interval when one was
  negotiated (then ``session_expired``), else ``signalling_idle_timeout_s``.
  The end time is the call's last packet (``timed_out``). A lazy heap: an entry
  that comes due for a call still busy is re-armed at its new deadline.
- *linger*: a call's record is built ``calls.report_linger_s`` (config, 5 s by
  default) after its dialog ended, so late media and late reports still join;
  then its running streams are closed first. The delay is read when the dialog
  ends (packet time), so a reload applies to calls that end after it.
- *unsignalled* streams wait ``linger_s`` (5 s) after they ended for their
  reverse (the swapped 5-tuple) and become one pseudo-call.
- *intervals*: at every multiple of ``calls.interval_s`` of packet time each
  running stream is snapshotted and rated (`CallInterval`, `mos_min`).

RFC 6035 reports (`QualityReported`: a phone's PUBLISH, its own Call-ID) join
the call their ``CallID:`` line names while that call is in the table: during
the call (interval reports) or while it lingers after its dialog ended — the
usual case, phones send their session report right after the BYE, and the
linger (``report_linger_s`` after the BYE) is what gives it time to arrive. Each
direction of the record then shows the block that describes it
(`agent.calls.endpoint_report`). A report for a call whose record was already
emitted is counted ``reports_late``, one for a call the probe never saw
``reports_unjoined``; neither is kept (a record, once emitted, is final).

Every table is bounded, at O(1) amortised per event: ``calls.max_calls`` calls (a full
table makes one call's record early, `_evict`: every call gets a record, a live one
with end reason ``evicted``), ``tables.loose_streams`` unsignalled streams waiting
for their reverse (the oldest becomes its pseudo-call early), the media index per key
(`MediaIndex`) and the interval state (`IntervalQuality`); evictions are counted.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass, field

from agent.calls.correlate import SDP_RACE_S, MediaIndex
from agent.calls.endpoint_report import (
    MAX_REPORTS_PER_CALL,
    best_block,
    describes_any,
    endpoint_record,
)
from agent.calls.events import CallEnded, CallInterval, Event, StreamEnded
from agent.calls.evidence import EvidenceKeeper
from agent.calls.intervals import IntervalQuality
from agent.calls.judge import call_verdict, judge_direction
from agent.calls.labels import StreamLabels, codec_label, direction_label, peer_label
from agent.calls.media_seen import media_seen, not_sendrecv, two_way_media
from agent.calls.paths import (
    Sighted,
    display,
    group,
    judged_where,
    losses_between,
    point_records,
)
from agent.calls.record import CallRecord, DirectionRecord, StreamRecord, stream_record
from agent.config import Config
from agent.decode.endpoint import Endpoint, with_rtcp_ports
from agent.lazyheap import LazyHeap, heap_upto
from agent.media.payloads import TELEPHONE_EVENT, MediaKind, media_kind
from agent.rtcp.monitor import RtcpMonitor
from agent.rtp.model import StreamKey, StreamStats
from agent.rtp.tracker import Started, StreamTracker
from agent.sip.events import (
    CallSignalling,
    DialogEnded,
    EndReason,
    MediaSdp,
    QualityReported,
    Side,
    SipEvent,
)
from agent.sip.tracker import SipTracker
from agent.sla.config import SlaProfile
from agent.sla.policy import dscp_compliance_ratio

TELEPHONE_EVENT_NAME = TELEPHONE_EVENT.name


@dataclass(slots=True)
class _Call:
    signalling: CallSignalling
    streams: list[tuple[Side, StreamStats]] = field(default_factory=list)  # ended
    running: dict[StreamKey, Side] = field(default_factory=dict)
    ended: bool = False
    last_media_ts: float = -math.inf  # of the ended streams
    live_serial: int = -1  # the serial of its current liveness entry (-1: none)
    reports: list[QualityReported] = field(default_factory=list)  # RFC 6035, newest last
    indexed: MediaSdp | None = None  # the newest of its SDPs in the media index
    evict_serial: int = -1  # its current entry in the eviction heap
    evict_rank: int = -1  # 0 ended (lingering), 1 not answered, 2 answered

    def unindexed(self) -> tuple[MediaSdp, ...]:
        """The call's SDPs newer than the last one indexed (an event brings at most one:
        O(1), however many SDPs the dialog keeps); marks them indexed."""
        media = self.signalling.media
        k = len(media)
        while k and media[k - 1] is not self.indexed:
            k -= 1
        if media:
            self.indexed = media[-1]
        return media[k:] if k else media


@dataclass(frozen=True, slots=True)
class _Running:
    call_id: str | None  # None: unsignalled (so far)
    first_ts: float


@dataclass(slots=True)
class CallCounters:
    calls_started: int = 0
    calls_ended: int = 0
    calls_evicted: int = 0  # table full: a record made early (end reason evicted if live)
    loose_evicted: int = 0  # unsignalled streams made pseudo-calls early (loose table full)
    calls_timed_out: int = 0  # ended by the liveness timer (no BYE)
    unsignalled_calls: int = 0
    streams_matched: int = 0
    streams_unsignalled: int = 0
    streams_rejoined: int = 0  # running streams a later SDP explained
    streams_closed_by_reuse: int = 0  # closed because a new call advertised their endpoint
    reports_joined: int = 0  # RFC 6035 reports kept with their call
    reports_late: int = 0  # ... that came after their call's record was emitted
    reports_unjoined: int = 0  # ... about a call the probe does not know
    reports_unmatched: int = 0  # joined reports that described none of the call's streams

    def as_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in CallCounters.__dataclass_fields__}


Timer = list[tuple[float, int, str]]
MAX_CLOSED_IDS = 4096  # Call-IDs of emitted records remembered to tell late reports apart


class CallTable:
    """Joins the layers' events into records. Sans-IO: time is packet time."""

    def __init__(self, config: Config, rtcp: RtcpMonitor, *,
                 streams: StreamTracker | None = None, sip: SipTracker | None = None,
                 linger_s: float = 5.0) -> None:
        self.config = config
        self.rtcp = rtcp
        self.streams = streams if streams is not None else StreamTracker()
        self.sip = sip if sip is not None else SipTracker()
        self.linger_s = linger_s
        self.index = MediaIndex(config.tables.sdp_adverts_per_endpoint,
                                config.tables.sdp_endpoints_per_call)
        self.counters = CallCounters()
        self.intervals = IntervalQuality(config)
        self._calls: dict[str, _Call] = {}
        self._running: dict[StreamKey, _Running] = {}
        self._by_endpoint: dict[Endpoint, set[StreamKey]] = {}
        # ended unsignalled streams -> when they may form a pseudo-call (in that order)
        # (key, serial): a key can end twice before its first end became a pseudo-call
        self._loose: OrderedDict[tuple[StreamKey, int], tuple[StreamStats, float]] = OrderedDict()
        self._loose_pairs: dict[tuple[Endpoint, Endpoint], list[tuple[StreamKey, int]]] = {}
        self._linger: Timer = []  # (record due, serial, call id)
        self._live: Timer = []  # (liveness deadline, serial, call id)
        self._serial = itertools.count()
        self._interval_k: int | None = None  # next interval boundary: k * interval_s
        # Call-IDs of emitted records, oldest first
        self._closed: OrderedDict[str, None] = OrderedDict()
        # the eviction order: ((rank, invite time), serial, call id), one live entry a call
        self._victims: LazyHeap[tuple[int, float], str] = LazyHeap(self._victim_entry,
                                                                   self._serial)
        self.evidence: EvidenceKeeper | None = None  # set by the engine when enabled

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._calls

    def live_call_of(self, src: Endpoint, dst: Endpoint, ts: float) -> str | None:
        """The call in the table that media from ``src`` to ``dst`` at ``ts`` joins."""
        m = self.index.match(src, dst, ts)
        return m.call_id if m is not None and m.call_id in self._calls else None

    def _ended(self, call_id: str) -> CallEnded:
        """The call's record, with its evidence when the keeper is on."""
        evidence = self.evidence.take(call_id) if self.evidence is not None else None
        return CallEnded(self.take(call_id), evidence)

    def __len__(self) -> int:
        return len(self._calls)

    # -- input ------------------------------------------------------------------------

    def on_sip(self, event: SipEvent | QualityReported) -> list[Event]:
        """A dialog event, at the packet time of the message (or timer) behind it."""
        if isinstance(event, QualityReported):
            self._report(event)
            return []
        sig = event.call
        call = self._calls.get(sig.call_id)
        out: list[Event] = []
        if call is None:
            while len(self._calls) >= self.config.calls.max_calls:
                out.extend(self._evict(sig.last_ts))
            call = self._calls[sig.call_id] = _Call(sig)
            self.counters.calls_started += 1
        call.signalling = sig
        self._rank(call, isinstance(event, DialogEnded) or call.ended)
        if isinstance(event, DialogEnded) and not call.ended:
            call.ended = True
            end = sig.end_ts if sig.end_ts is not None else sig.last_ts
            due = end + self.config.calls.report_linger_s
            heapq.heappush(self._linger, (due, next(self._serial), sig.call_id))
        elif sig.answer_ts is not None and not call.ended:
            self._arm(call)  # a message can bring the deadline nearer (a session timer)
        for ep in self.index.update(sig, call.unindexed()):
            out.extend(self._readvertised(ep, sig.call_id, sig.last_ts))
        return out

    def _report(self, event: QualityReported) -> None:
        call = self._calls.get(event.report.call_id)
        if call is None:
            if event.report.call_id in self._closed:
                self.counters.reports_late += 1
            else:
                self.counters.reports_unjoined += 1
            return
        if len(call.reports) >= MAX_REPORTS_PER_CALL:
            del call.reports[0]
        call.reports.append(event)
        self.counters.reports_joined += 1

    def stream_started(self, st: Started) -> None:
        """A stream was validated: join it to the call whose SDP explains it, if any."""
        m = self.index.match_key(st.key, st.first_ts)
        call_id = m.call_id if m is not None and m.call_id in self._calls else None
        if not self._running:  # the grid resumes after the moment this stream opened
            self._interval_k = math.floor(st.opened_ts / self.config.calls.interval_s) + 1
        self._running[st.key] = _Running(call_id, st.first_ts)
        for ep in (st.key.src_endpoint, st.key.dst_endpoint):
            self._by_endpoint.setdefault(ep, set()).add(st.key)
        if call_id is not None and m is not None:
            call = self._calls[call_id]
            call.running[st.key] = m.toward
            if call.signalling.answer_ts is not None and not call.ended:
                self._arm(call)  # media now at the probe: the media idle timeout applies

    def _arm(self, call: _Call) -> None:
        """(Re)arm a call's liveness timer; older entries of the call are void."""
        call.live_serial = next(self._serial)
        heapq.heappush(self._live, (self._liveness(call)[0], call.live_serial,
                                    call.signalling.call_id))

    def stream_ended(self, s: StreamStats, now: float) -> list[Event]:
        """A stream's final statistics (idle, closed, evicted, end of input)."""
        self.intervals.observe(s)  # the last interval: from the latest snapshot to the end
        run = self._running.pop(s.key, None)
        for ep in (s.key.src_endpoint, s.key.dst_endpoint):
            keys = self._by_endpoint.get(ep)
            if keys is not None:
                keys.discard(s.key)
                if not keys:
                    del self._by_endpoint[ep]
        call_id = None
        side = Side.CALLEE
        if run is not None:
            call_id = run.call_id
        else:  # ended without ever running here (flushed at its end): join it now
            m = self.index.match_key(s.key, s.first_ts)
            if m is not None:
                call_id, side = m.call_id, m.toward
        call = self._calls.get(call_id) if call_id is not None else None
        labels = self._labels(s, call, None if call is None else call.running.get(s.key, side))
        if call is None:
            self.counters.streams_unsignalled += 1
            entry = (s.key, next(self._serial))
            self._loose[entry] = (s, now + self.linger_s)
            self._loose_pairs.setdefault(_pair(s.key), []).append(entry)
            out: list[Event] = [StreamEnded(s, labels)]
            if len(self._loose) > self.config.tables.loose_streams:
                # full: the oldest waits no longer for its reverse (a record, never lost)
                self.counters.loose_evicted += 1
                out.extend(self._pseudo_call(next(iter(self._loose))[0]))
            return out
        else:
            self.counters.streams_matched += 1
            call.streams.append((call.running.pop(s.key, side), s))
            call.last_media_ts = max(call.last_media_ts, s.last_ts)
        return [StreamEnded(s, labels)]

    def _readvertised(self, ep: Endpoint, call_id: str, ts: float) -> list[Event]:
        """``call_id`` advertised ``ep`` at ``ts``: running streams there that belong to
        no live call are re-joined (they raced the SDP) or, older, closed (port reuse)."""
        out: list[Event] = []
        for key in sorted(self._by_endpoint.get(ep, ())):
            run = self._running[key]
            if run.call_id == call_id:
                continue
            old = self._calls.get(run.call_id) if run.call_id is not None else None
            if old is not None and not old.ended:
                continue  # a live call's media (a B2BUA leg, a fork): not ours to take
            if run.first_ts + SDP_RACE_S >= ts:
                m = self.index.match_key(key, run.first_ts)
                if m is not None and m.call_id == call_id:
                    if old is not None:
                        old.running.pop(key, None)
                    self._running[key] = _Running(call_id, run.first_ts)
                    self._calls[call_id].running[key] = m.toward
                    self.counters.streams_rejoined += 1
                continue
            if old is not None:  # the ended call's stream went on into the next call
                self.counters.streams_closed_by_reuse += 1
                for st in self.streams.close([key]):
                    out.extend(self.stream_ended(st, ts))
        return out

    # -- time -------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest packet time `expire` has something to do (None: nothing)."""
        cands: list[float] = []
        while self._linger and not self._lingering(self._linger[0]):
            heapq.heappop(self._linger)
        while self._live and not self._live_entry(self._live[0]):
            heapq.heappop(self._live)
        for heap in (self._linger, self._live):
            if heap:
                cands.append(heap[0][0])
        if self._loose:
            cands.append(next(iter(self._loose.values()))[1])
        if self._running:
            cands.append(self._next_interval())
        return min(cands) if cands else None

    def due_by(self, t: float) -> list[tuple[float, set[Endpoint]]] | None:
        """What `expire` acts on up to packet time ``t``, as (the earliest time it does,
        the media endpoints it reads or closes: the call's SDP endpoints and running
        streams, an unsignalled stream's two ends; RTCP ports included), for the engine
        to know which rows a timer depends on; None when an interval boundary is due
        (it reads every running stream)."""
        if self._running and self._next_interval() <= t:
            return None
        out: list[tuple[float, set[Endpoint]]] = []
        for entry in heap_upto(self._live, t):
            call = self._calls.get(entry[2])
            if call is not None and self._live_entry(entry):
                due = self._liveness(call)[0]
                if due <= t:
                    out.append((min(due, entry[0]), self.media_endpoints(entry[2])))
        for due, _, call_id in heap_upto(self._linger, t):
            call = self._calls.get(call_id)
            if call is not None and call.ended:
                out.append((due, self.media_endpoints(call_id)))
        for (key, _), (_, ready) in self._loose.items():
            if ready > t:
                break
            out.append((ready, with_rtcp_ports((key.src_endpoint, key.dst_endpoint))))
        return out

    def media_endpoints(self, call_id: str) -> set[Endpoint]:
        """The endpoints whose media a call's record reads: its SDP's and its running
        streams' ends, with their RTCP ports (RFC 3550 §11)."""
        call = self._calls.get(call_id)
        if call is None:
            return set()
        eps = list(self.index.endpoints(call_id))
        for key in call.running:
            eps += (key.src_endpoint, key.dst_endpoint)
        return with_rtcp_ports(eps)

    def _rank(self, call: _Call, ended: bool) -> None:
        """File the call in the eviction order when its class changed."""
        rank = 0 if ended else 1 if call.signalling.answer_ts is None else 2
        if rank != call.evict_rank:
            call.evict_rank = rank
            call.evict_serial = self._victims.push((rank, call.signalling.invite_ts),
                                                   call.signalling.call_id, len(self._calls))

    def _victim_entry(self, entry: tuple[tuple[int, float], int, str]) -> bool:
        call = self._calls.get(entry[2])
        return call is not None and call.evict_serial == entry[1]

    def _lingering(self, entry: tuple[float, int, str]) -> bool:
        call = self._calls.get(entry[2])
        return call is not None and call.ended

    def _live_entry(self, entry: tuple[float, int, str]) -> bool:
        call = self._calls.get(entry[2])
        return call is not None and not call.ended and call.live_serial == entry[1]

    def expire(self, now: float, latest: float | None = None) -> list[Event]:
        """Fire every timer due at packet time ``now``; ``latest`` is the latest packet
        time seen (later than ``now`` when a capture's clock stepped back)."""
        out: list[Event] = []
        while self._live and self._live[0][0] <= now:
            entry = heapq.heappop(self._live)
            call_id = entry[2]
            call = self._calls.get(call_id)
            if call is None or not self._live_entry(entry):
                continue
            deadline, reason, last = self._liveness(call)
            if deadline > now:  # busy since it was armed: re-arm at the new deadline
                call.live_serial = next(self._serial)
                heapq.heappush(self._live, (deadline, call.live_serial, call_id))
                continue
            self.counters.calls_timed_out += 1
            for e in self.sip.end(call_id, reason, now, end_ts=last):
                out.extend(self.on_sip(e))
        while self._linger and self._linger[0][0] <= now:
            _, _, call_id = heapq.heappop(self._linger)
            call = self._calls.get(call_id)
            if call is not None and call.ended:
                out.extend(self._close(call_id, now))
        out.extend(self._pseudo_calls(now))
        if self._running and self._next_interval() <= now:
            out.extend(self._observe_intervals(now if latest is None else max(now, latest)))
        return out

    def _liveness(self, call: _Call) -> tuple[float, EndReason, float]:
        """(deadline, end reason, last packet) of an answered call (module docstring)."""
        sig, cfg = call.signalling, self.config.calls
        last_media = call.last_media_ts
        for key in call.running:
            t = self.streams.last_packet_ts(key)
            if t is not None and t > last_media:
                last_media = t
        media = last_media > -math.inf and not _on_hold(sig)
        last_sig, session = sig.last_ts, sig.session_expires_s
        live = self.sip.liveness(sig.call_id)  # messages that emitted no event count too
        if live is not None:
            last_sig, session = max(last_sig, live[0]), live[1]
        if session is not None:
            deadline, reason = last_sig + session, EndReason.SESSION_EXPIRED
        else:
            timeout = cfg.media_idle_timeout_s if media else cfg.signalling_idle_timeout_s
            deadline, reason = last_sig + timeout, EndReason.TIMED_OUT
        if media and last_media + cfg.media_idle_timeout_s > deadline:
            deadline, reason = last_media + cfg.media_idle_timeout_s, EndReason.TIMED_OUT
        return deadline, reason, max(last_sig, last_media)

    def _next_interval(self) -> float:
        step = self.config.calls.interval_s
        if self._interval_k is None:
            first = min(r.first_ts for r in self._running.values())
            self._interval_k = math.floor(first / step) + 1
        return self._interval_k * step

    def _observe_intervals(self, now: float) -> list[Event]:
        """One interval of every running stream (for `mos_min` and the exporter), ending
        at the boundary due; the next is the first boundary after ``now`` (a capture whose
        clock jumps ahead by years yields one interval, not millions)."""
        ts = self._next_interval()
        k = self._interval_k if self._interval_k is not None else 0
        self._interval_k = max(k + 1, math.floor(now / self.config.calls.interval_s) + 1)
        out: list[Event] = []
        for key, run in self._running.items():
            snap = self.streams.snapshot(key)
            if snap is None:
                continue
            delta, q = self.intervals.observe(snap)
            call = self._calls.get(run.call_id) if run.call_id is not None else None
            toward = call.running.get(key) if call is not None else None
            out.append(CallInterval(ts, run.call_id, delta, q, self._labels(snap, call, toward)))
        return out

    def _close(self, call_id: str, now: float) -> list[Event]:
        """A call's linger is over: end its running streams, then build its record."""
        out: list[Event] = []
        for st in self.streams.close(sorted(self._calls[call_id].running)):
            out.extend(self.stream_ended(st, now))
        out.append(self._ended(call_id))
        return out

    def _pseudo_calls(self, now: float | None) -> list[Event]:
        """Unsignalled streams ready at ``now`` (all when None), with every ended stream
        of the same address pair, become pseudo-calls."""
        out: list[Event] = []
        while self._loose:
            (key, _), (_, ready) = next(iter(self._loose.items()))
            if now is not None and ready > now:
                break
            out.extend(self._pseudo_call(key))
        return out

    def _pseudo_call(self, key: StreamKey) -> list[Event]:
        """The ended unsignalled streams of ``key``'s address pair become one pseudo-call."""
        group = [self._loose.pop(k)[0] for k in self._loose_pairs.pop(_pair(key))]
        self.counters.unsignalled_calls += 1
        return [CallEnded(self._pseudo(sorted(group, key=lambda s: (s.first_ts, s.key))))]

    # -- output -----------------------------------------------------------------------

    def take(self, call_id: str) -> CallRecord:
        """Build and forget one call's record."""
        call = self._forget(call_id)
        self.counters.calls_ended += 1
        if len(self._closed) >= MAX_CLOSED_IDS:
            del self._closed[next(iter(self._closed))]
        self._closed[call_id] = None
        return self._record(call)

    def _forget(self, call_id: str) -> _Call:
        call = self._calls.pop(call_id)
        self.index.remove(call_id)
        for key in call.running:  # not closed by the caller: they go on as unsignalled
            run = self._running.get(key)
            if run is not None:
                self._running[key] = _Running(None, run.first_ts)
        return call

    def finish(self) -> list[Event]:
        """End of input (after the streams and dialogs were finished)."""
        out: list[Event] = [self._ended(cid) for cid in list(self._calls)]
        out += self._pseudo_calls(None)
        return out

    # -- records ------------------------------------------------------------------------

    def _direction_name(self, s: StreamStats, toward: Side | None) -> str:
        return direction_label(s.key.src_endpoint, s.key.dst_endpoint,
                               self.config.sla.local_networks,
                               None if toward is None else toward == Side.CALLEE)

    def _labels(self, s: StreamStats, call: _Call | None, toward: Side | None) -> StreamLabels:
        """What the sinks show a running or ended stream under: its call's peer (the
        record's rule), its direction as its record names it, its codec."""
        if call is None:  # the pseudo-call's rules: the pair's first stream is a_to_b
            peer = self._peer([s.key.dst_endpoint, s.key.src_endpoint])
            toward = Side.CALLEE if self._opens_pair(s) else Side.CALLER
        else:
            peer = self._call_peer(call, running=True)
        return StreamLabels(peer, self._direction_name(s, toward), codec_label(s.codec))

    def _opens_pair(self, s: StreamStats) -> bool:
        """No stream the other way between the same two endpoints began before ``s``."""
        back = (s.key.dst_endpoint, s.key.src_endpoint)
        firsts = [r.first_ts for k in self._by_endpoint.get(s.key.dst_endpoint, ())
                  if (k.src_endpoint, k.dst_endpoint) == back
                  and (r := self._running.get(k)) is not None]
        firsts += [st.first_ts for e in self._loose_pairs.get(_pair(s.key), ())
                   if (st := self._loose[e][0]).key.src_endpoint == back[0]]
        return all(t >= s.first_ts for t in firsts)

    def _judged(self, seen: list[Sighted]) -> list[tuple[str, Sighted]]:
        """Each direction's name (from its last point: the receiver's side, whatever NAT
        there is between the points) and the point it is judged at (`judged_where`)."""
        out = []
        for d in seen:
            name = self._direction_name(d.main, d.toward)
            out.append((name, judged_where(d, name)))
        return out

    def _peer(self, addrs: list[Endpoint]) -> str:
        return peer_label(addrs, self.config.sla.peers)

    def _call_peer(self, call: _Call, *, running: bool = False) -> str:
        """A call's peer: its callee's, caller's, then its media destinations' (ended
        streams, and with ``running`` the running ones too: a live call's labels)."""
        sig = call.signalling
        # endpoints, not their text, and lazily: with no peer configured none is looked at
        addrs = itertools.chain((sig.callee, sig.caller),
                                (s.key.dst_endpoint for _, s in call.streams),
                                (k.dst_endpoint for k in call.running) if running else ())
        return peer_label(addrs, self.config.sla.peers)

    def _rtt(self, streams: list[StreamStats]) -> tuple[float | None, str | None]:
        legs = [self.rtcp.leg_rtt_s(s.key.ssrc) for s in streams]
        known = [x for x in legs if x is not None]
        if not known:
            return None, None
        # Both legs: the probe sits between the endpoints and the sum is their round
        # trip. One leg: the other endpoint is assumed next to the probe (a gateway).
        return sum(known), ("rtcp" if len(known) >= 2 else "rtcp_one_leg")

    def _record(self, call: _Call) -> CallRecord:
        sig = call.signalling
        streams = [s for _, s in call.streams]
        peer = self._call_peer(call)
        profile = self.config.sla.profile_for_peer(peer)
        setup = sig.setup_delay_s
        end_ts = sig.end_ts if sig.end_ts is not None else max(
            [s.last_ts for s in streams] or [sig.invite_ts])
        two_way = two_way_media(call.streams, sig, end_ts, profile.two_way_media_after_s)
        counted = two_way.directions if two_way.judged else None
        # a call without media at the probe (most of an INVITE flood) has no direction
        directions, rtt_s, rtt_source = (self._directions(call, profile, counted)
                                         if streams else ([], None, None))
        sig_dscp = sig.signalling_dscp
        sig_ok = (None if profile.signalling_dscp is None
                  else dscp_compliance_ratio(sig_dscp, profile.signalling_dscp))
        return CallRecord(
            call_id=sig.call_id, from_=sig.from_uri, to=sig.to_uri, peer=peer,
            transport=sig.transport, final_status=sig.final_status,
            end_reason=str(sig.end_reason or EndReason.SHUTDOWN),
            invite_ts=sig.invite_ts, first_provisional_ts=sig.first_provisional_ts,
            answer_ts=sig.answer_ts, end_ts=end_ts,
            setup_delay_s=_r(setup), answer_delay_s=_r(sig.answer_delay_s),
            duration_s=_r(None if sig.answer_ts is None else end_ts - sig.answer_ts),
            disconnect_delay_s=_r(None if sig.disconnect_ts is None or sig.bye_ts is None
                                  else sig.disconnect_ts - sig.bye_ts),
            codec=_codec(streams) if streams else None, media_at_probe=bool(streams),
            media_seen=two_way.seen, one_way_media=two_way.one_way,
            rtt_ms=None if rtt_s is None else round(rtt_s * 1000, 3),
            rtt_source=rtt_source,
            signalling_dscp={str(k): v for k, v in sorted(sig_dscp.items())},
            signalling_dscp_compliance_ratio=_r(sig_ok),
            directions=directions,
            sla=call_verdict(profile, directions, setup, sig_dscp, counted),
        )

    def _directions(self, call: _Call, profile: SlaProfile, counted: int | None,
                    ) -> tuple[list[DirectionRecord], float | None, str | None]:
        """A call's directions (one per path), each measured, rated and judged, and the
        round trip (ms and its source) they were rated with."""
        sig = call.signalling
        media, events = _split_events(sorted(call.streams, key=lambda t: t[1].first_ts))
        named = self._judged(group(media))  # one direction per path
        seen = [d for _, d in named]
        rtt_s, rtt_source = self._rtt([d.main for d in seen])
        directions = [
            judge_direction(
                name, d.main, profile=profile,
                cfg=self.config, rtt_s=rtt_s, remote=self.rtcp.report_about(d.main.key.ssrc),
                setup_delay_s=sig.setup_delay_s, signalling_dscp=sig.signalling_dscp,
                mos_min=self._mos_min(d), media_directions=counted,
                where=self._where(d, events.get(_path(d.main))),
            )
            for name, d in named
        ]
        if call.reports:
            directions = self._endpoint_reports(call, directions, [d.main for d in seen])
        return directions, rtt_s, rtt_source

    def _endpoint_reports(self, call: _Call, directions: list[DirectionRecord],
                          streams: list[StreamStats]) -> list[DirectionRecord]:
        """Each direction with the report block that describes it (module docstring)."""
        out = []
        for d, s in zip(directions, streams, strict=True):
            found = best_block(call.reports, s.key)
            if found is None:
                out.append(d)
                continue
            probe = d.quality.mos_cq if d.quality is not None else None
            rec = endpoint_record(found[1], call.signalling, probe)
            out.append(d.model_copy(update={"endpoint_report": rec}))
        keys = [s.key for s in streams]
        self.counters.reports_unmatched += sum(not describes_any(r, keys) for r in call.reports)
        return out

    def _pseudo(self, streams: list[StreamStats]) -> CallRecord:
        peer = self._peer([s.key.dst_endpoint for s in streams]
                          + [s.key.src_endpoint for s in streams])
        profile = self.config.sla.profile_for_peer(peer)
        first = streams[0]
        sides: list[tuple[Side, StreamStats]] = [
            (Side.CALLEE if (s.key.src, s.key.dst) == (first.key.src, first.key.dst)
             else Side.CALLER, s) for s in streams]
        named = self._judged(group(sides))
        rtt_s, rtt_source = self._rtt([d.main for _, d in named])
        directions = [self._along_path(d, judge_direction(
            name, d.main, profile=profile, cfg=self.config,
            rtt_s=rtt_s, remote=self.rtcp.report_about(d.main.key.ssrc), setup_delay_s=None,
            signalling_dscp=None, mos_min=self._mos_min(d),
        )) for name, d in named]
        return CallRecord(
            call_id=None, from_=None, to=None, peer=peer, transport=None, final_status=None,
            end_reason="unsignalled", invite_ts=None, first_provisional_ts=None,
            answer_ts=None, end_ts=max(s.last_ts for s in streams), setup_delay_s=None,
            answer_delay_s=None,
            duration_s=_r(max(s.last_ts for s in streams) - min(s.first_ts for s in streams)),
            disconnect_delay_s=None, codec=_codec(streams), media_at_probe=True,
            media_seen=media_seen(sides), one_way_media=None,  # unsignalled: never judged
            rtt_ms=None if rtt_s is None else round(rtt_s * 1000, 3),
            rtt_source=rtt_source,
            signalling_dscp={}, signalling_dscp_compliance_ratio=None, directions=directions,
            sla=call_verdict(profile, directions, None, None),
        )

    def _mos_min(self, d: Sighted) -> float | None:
        """The worst interval's MOS-CQ of a direction's stream where it is judged (forgets
        the intervals of its every point)."""
        worst = self.intervals.mos_min(d.main.key)
        for s in d.path:
            self.intervals.forget(s.key)
        return worst

    def _along_path(self, d: Sighted, rec: DirectionRecord,
                    events: list[StreamRecord] | None = None) -> DirectionRecord:
        """The direction's record with where it was measured, and its path when it was
        seen at several points (agent/calls/paths.py)."""
        return rec.model_copy(update=self._where(d, events))

    def _where(self, d: Sighted, events: list[StreamRecord] | None = None) -> dict[str, object]:
        """`DirectionRecord` fields of where a direction was measured: its point, and its
        path when it was seen at several points; its event-only streams, if any."""
        names = self.config.capture.point_names
        where: dict[str, object] = {
            "point": display(d.main.key.point, names) or None,
            "points": point_records(d, names),
            "loss_between_points": losses_between(d, names),
        }
        if events:
            where["event_streams"] = events
        return where

    def _evict(self, now: float) -> list[Event]:
        """The table is full: a call's record is made now. Ended calls (lingering for late
        media and reports) go first, then the oldest call not answered, then the oldest
        answered one (a flood of INVITEs evicts its own kind); a live call ends with end
        reason ``evicted`` and its dialog with it, so its later messages open nothing."""
        top = self._victims.pop()
        assert top is not None  # every call in the table has a live entry
        call = self._calls[top[2]]
        self.counters.calls_evicted += 1
        if not call.ended:
            ended = self.sip.end(top[2], EndReason.EVICTED, now, end_ts=call.signalling.last_ts)
            call.signalling = ended[0].call if ended else dataclasses.replace(
                call.signalling, end_reason=EndReason.EVICTED, end_ts=call.signalling.last_ts)
            call.ended = True
        return self._close(top[2], now)


def _pair(key: StreamKey) -> tuple[Endpoint, Endpoint]:
    """The unordered address pair of a stream: a stream and its reverse share it."""
    a, b = key.src_endpoint, key.dst_endpoint
    return (a, b) if a <= b else (b, a)


def _on_hold(sig: CallSignalling) -> bool:
    """The latest SDP put the media on hold (sendonly/recvonly/inactive, or 0.0.0.0):
    silence is expected then, not a lost BYE."""
    return bool(sig.media) and not_sendrecv(sig.media[-1].media)


def _path(s: StreamStats) -> tuple[str, str, str]:
    return s.key.src, s.key.dst, s.key.point


def _split_events(
    streams: list[tuple[Side, StreamStats]],
) -> tuple[list[tuple[Side, StreamStats]], dict[tuple[str, str, str], list[StreamRecord]]]:
    """Event-only streams ride along with the media stream of their 5-tuple; one that
    has no media companion stays a direction of its own."""
    paths = {_path(s) for _, s in streams if s.codec != TELEPHONE_EVENT_NAME}
    media: list[tuple[Side, StreamStats]] = []
    events: dict[tuple[str, str, str], list[StreamRecord]] = {}
    for toward, s in streams:
        if s.codec == TELEPHONE_EVENT_NAME and _path(s) in paths:
            events.setdefault(_path(s), []).append(stream_record(s))
        else:
            media.append((toward, s))
    return media, events


def _codec(streams: list[StreamStats]) -> str | None:
    """The call's codec: the most common among its audio streams (ties: the earliest
    stream's, never hash order), else among its other media; never CN or events."""
    ordered = sorted(streams, key=lambda s: (s.first_ts, s.key))
    for audio in (True, False):
        names = [s.codec for s in ordered if s.codec and (s.media == "audio") == audio
                 and media_kind(s.codec) not in _NOT_CODECS]
        if names:
            return max(dict.fromkeys(names), key=names.count)  # the first most common
    return None


_NOT_CODECS = frozenset({MediaKind.TELEPHONE_EVENT, MediaKind.COMFORT_NOISE})


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)
