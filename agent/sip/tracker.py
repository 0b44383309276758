"""The dialog table: SIP messages in, call events out (`agent.sip.events`).

Theory of operation
-------------------
`SipTracker.feed` takes one parsed message with where and when it was seen and
returns the events it completed. An initial INVITE (no To-tag, RFC 3261 §12.1)
creates a `Dialog` keyed by Call-ID and emits `DialogStarted`; every later
message with that Call-ID goes to its dialog, which emits `MediaChanged` for
each new SDP body and `DialogEnded` when it ends. Every other message (REGISTER,
OPTIONS, SUBSCRIBE/NOTIFY, MESSAGE, PUBLISH, or in-dialog requests of a call
the probe never saw start) only moves the counters: it keeps no state, so
registration storms and keep-alive OPTIONS cost nothing per Call-ID. The one
exception is an RFC 6035 voice-quality report (a PUBLISH or NOTIFY with an
``application/vq-rtcpxr`` body): it is parsed and handed on as
`QualityReported` (the call layer joins it to the call its ``CallID:`` names);
a body that does not parse is counted (``vq_report_errors``), and a
retransmission (same Call-ID, CSeq and branch, remembered for the last
``MAX_REPORT_KEYS`` reports) is dropped.

The table is keyed by a value the network chooses, so it is bounded (DESIGN.md,
rule 4): at most ``max_dialogs`` entries; when full, a new INVITE first drops
the oldest finished dialog, then ends the least recently active one that is
still being set up (a flood of INVITEs that are never answered evicts its own
kind), and only then touches confirmed calls. Evictions of live dialogs are
reported as `DialogEnded` (timed out) and counted.

Time is packet time. `expire(now)` applies the timers a UA would run: no final
response within ``setup_timeout_s`` of the last message (Timer C, RFC 3261
§16.6 step 11, > 3 min), a BYE or a 401/407 challenge with no follow-up within
``ended_linger_s`` (Timer F and the §22.2 retry window, 64*T1 = 32 s), and
ended dialogs kept for ``ended_linger_s`` to absorb retransmissions of the
final response and its ACK (Timers D and J, 32 s). A confirmed call without a
BYE is never timed out here: only the call layer knows whether media still
flows, and it calls `end`.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.sip.dialog import KNOWN_METHODS, Dialog, State
from agent.sip.events import (
    CallSignalling,
    DialogEnded,
    DialogStarted,
    Endpoint,
    EndReason,
    MediaChanged,
    QualityReported,
    SipEvent,
)
from agent.sip.message import SipMessage
from agent.sip.vqreport import VqReportError, is_vq_report, parse_report
from agent.sla.config import OTHER_PEER

# Methods that only exist inside an INVITE dialog: without one they are orphans.
_CALL_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "PRACK", "UPDATE", "INFO"})
# RFC 6035 §3: reports travel in PUBLISH (to a collector) or NOTIFY (to a subscriber)
_REPORT_METHODS = frozenset({"PUBLISH", "NOTIFY"})
MAX_REPORT_KEYS = 1024  # recent reports remembered to drop their retransmissions


@dataclass
class SipTrackerCounters:
    """Totals since start. ``requests_by_method`` and ``responses_by_class`` count
    every message (retransmissions included, as tshark's ``sip,stat`` does)."""

    messages: int = 0
    requests_by_method: dict[str, int] = field(default_factory=dict)
    responses_by_class: dict[str, int] = field(default_factory=dict)  # "1xx" .. "6xx"
    # (peer, method) -> requests: the peer is `SipTracker.peer_of`'s (configured names
    # or "other", agent/calls/labels.py), so bounded by the config and KNOWN_METHODS
    requests_by_peer: dict[tuple[str, str], int] = field(default_factory=dict)
    dialogs_started: int = 0
    dialogs_ended: int = 0
    dialogs_timed_out: int = 0  # no final response (setup timeout)
    dialogs_evicted: int = 0  # table full (count or SDP bytes): a live dialog ended early
    sdp_dropped: int = 0  # old SDPs a dialog forgot (per-dialog caps or the byte budget)
    retransmissions: int = 0  # inside dialogs (requests and responses)
    orphan_requests: int = 0  # call-only requests (BYE, ACK, re-INVITE ...) of no known dialog
    orphan_responses: int = 0  # responses to call-only methods of no known dialog
    unexpected: int = 0  # messages a dialog's state did not expect (table miss)
    sdp_errors: int = 0  # SDP bodies that did not parse (the message still counted)
    vq_reports: int = 0  # RFC 6035 reports parsed (retransmissions excluded)
    vq_report_errors: int = 0  # vq-rtcpxr bodies that did not parse (dropped)

    def as_dict(self) -> dict[str, int]:
        """Flat ``name -> value``; the dicts become ``requests_<method>`` and
        ``responses_<class>`` keys (bounded: `KNOWN_METHODS` and six classes)."""
        out = {k: v for k, v in vars(self).items() if isinstance(v, int)}  # not by peer
        out.update({f"requests_{m.lower()}": n for m, n in self.requests_by_method.items()})
        out.update({f"responses_{c}": n for c, n in self.responses_by_class.items()})
        return out


class SipTracker:
    """One `Dialog` per Call-ID of an INVITE; see the module docstring."""

    def __init__(
        self,
        max_dialogs: int = 50_000,
        setup_timeout_s: float = 180.0,
        ended_linger_s: float = 32.0,
        max_sdp_bytes: int = 32 * 1024 * 1024,
        peer_of: Callable[[Endpoint, Endpoint], str] | None = None,
    ) -> None:
        if max_dialogs < 1:
            raise ValueError("max_dialogs must be positive")
        self.max_dialogs = max_dialogs
        self.max_sdp_bytes = max_sdp_bytes
        self._sdp_bytes = 0  # SDP bytes the dialogs keep, all together
        self.setup_timeout_s = setup_timeout_s
        self.ended_linger_s = ended_linger_s
        self.counters = SipTrackerCounters()
        # the peer label of a message from src to dst (None: every message is "other")
        self.peer_of = peer_of
        self._dialogs: dict[str, Dialog] = {}
        # Ordered sets of Call-IDs per phase, least recently active first, so that
        # timers and eviction look at the front only.
        self._setup: OrderedDict[str, None] = OrderedDict()  # CALLING, PROCEEDING, EARLY
        self._closing: OrderedDict[str, None] = OrderedDict()  # CHALLENGED, TERMINATING
        self._confirmed: OrderedDict[str, None] = OrderedDict()
        self._ended: OrderedDict[str, float] = OrderedDict()  # Call-ID -> packet time it ended
        # recent report keys, oldest first
        self._reports: OrderedDict[tuple[str, int, str | None], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._dialogs)

    @property
    def sdp_bytes(self) -> int:
        """SDP bytes the dialogs keep (at most ``max_sdp_bytes`` after every feed)."""
        return self._sdp_bytes

    # -- input ---------------------------------------------------------------

    def feed(
        self,
        msg: SipMessage,
        src: Endpoint,
        dst: Endpoint,
        ts: float,
        dscp: int = 0,
        transport: str = "udp",
    ) -> list[SipEvent | QualityReported]:
        """One message seen at packet time ``ts`` (epoch s) from ``src`` to ``dst``."""
        self._count(msg, src, dst)
        if msg.is_request and msg.method in _REPORT_METHODS and is_vq_report(msg.content_type):
            return self._report(msg, src, ts)
        dialog = self._dialogs.get(msg.call_id)
        if dialog is None:
            return self._start(msg, src, dst, ts, dscp, transport)
        before = (dialog.state, dialog.unexpected, dialog.sdp_errors)
        held, dropped = dialog.media_bytes, dialog.media_dropped
        outcome = dialog.handle(msg, src, ts, dscp)
        self._sdp_bytes += dialog.media_bytes - held
        self.counters.sdp_dropped += dialog.media_dropped - dropped
        if outcome.duplicate:
            self.counters.retransmissions += 1
            return []
        self.counters.unexpected += dialog.unexpected - before[1]
        self.counters.sdp_errors += dialog.sdp_errors - before[2]
        if dialog.state is not State.ENDED:
            self._place(dialog, before[0])
        events: list[SipEvent | QualityReported] = [*self._shed_sdp(dialog)]
        if outcome.new_media or outcome.ended:
            call = dialog.snapshot()
            if outcome.new_media:
                events.append(MediaChanged(call))
            if outcome.ended:
                events.append(self._ended_event(dialog, before[0], ts, call))
        return events

    def next_deadline(self) -> float | None:
        """Packet time at which `expire` next has something to do (None: nothing pending).

        Each bucket is in order of last activity, so its front holds its earliest timer."""
        out: float | None = None
        for bucket, limit in ((self._setup, self.setup_timeout_s),
                              (self._closing, self.ended_linger_s)):
            if bucket:
                d = self._dialogs[next(iter(bucket))].last_ts + limit
                out = d if out is None else min(out, d)
        if self._ended:
            d = next(iter(self._ended.values())) + self.ended_linger_s
            out = d if out is None else min(out, d)
        return out

    def due_by(self, t: float) -> list[tuple[float, str]]:
        """(due time, Call-ID) of every setup and BYE timer due by packet time ``t`` (the
        lingering ended dialogs only forget: nothing of the media depends on that)."""
        out: list[tuple[float, str]] = []
        for bucket, limit in ((self._setup, self.setup_timeout_s),
                              (self._closing, self.ended_linger_s)):
            for call_id in bucket:
                due = self._dialogs[call_id].last_ts + limit
                if due > t:
                    break
                out.append((due, call_id))
        return out

    def expire(self, now: float) -> list[SipEvent]:
        """Apply the setup, BYE and challenge timers and forget lingering ended
        dialogs, as of packet time ``now``."""
        events: list[SipEvent] = []
        for bucket, limit in (
            (self._setup, self.setup_timeout_s),
            (self._closing, self.ended_linger_s),
        ):
            while bucket:
                dialog = self._dialogs[next(iter(bucket))]
                if dialog.last_ts + limit > now:
                    break
                state = dialog.state
                if not dialog.timeout(now):  # cannot happen: every bucket state has TIMEOUT
                    del bucket[dialog.call_id]
                    continue
                if state in _SETUP_STATES:
                    self.counters.dialogs_timed_out += 1
                events.append(self._ended_event(dialog, state, now, dialog.snapshot()))
        while self._ended:
            call_id, ended_at = next(iter(self._ended.items()))
            if ended_at + self.ended_linger_s > now:
                break
            del self._ended[call_id]
            self._remove(call_id)
        return events

    def end(
        self, call_id: str, reason: EndReason, now: float, end_ts: float | None = None
    ) -> list[SipEvent]:
        """The call layer ends a dialog at packet time ``now`` (e.g. nothing seen of it for
        its idle timeout); ``end_ts`` is when the call ended (its last packet), else now."""
        dialog = self._dialogs.get(call_id)
        if dialog is None or dialog.state is State.ENDED:
            return []
        state = dialog.state
        dialog.end(reason, now if end_ts is None else end_ts)
        return [self._ended_event(dialog, state, now, dialog.snapshot())]

    def finish(self, now: float, reason: EndReason = EndReason.SHUTDOWN) -> list[SipEvent]:
        """The input or the probe stops: every live dialog ends (``reason``: SHUTDOWN, or
        CAPTURE_END for a file; NORMAL if a BYE was seen)."""
        events: list[SipEvent] = []
        for dialog in list(self._dialogs.values()):
            if dialog.state is not State.ENDED:
                state = dialog.state
                dialog.shutdown(now, reason)
                events.append(self._ended_event(dialog, state, now, dialog.snapshot()))
        return events

    # -- output --------------------------------------------------------------

    def active(self) -> list[CallSignalling]:
        """Snapshots of the dialogs that have not ended, oldest INVITE first."""
        live = [d for d in self._dialogs.values() if d.state is not State.ENDED]
        return [d.snapshot() for d in sorted(live, key=lambda d: d.invite_ts)]

    def liveness(self, call_id: str) -> tuple[float, float | None] | None:
        """(packet time of the dialog's last message, RFC 4028 session interval granted)
        of a live dialog, without a snapshot: most in-dialog messages (ACK, INFO, OPTIONS,
        an UPDATE without SDP) emit no event, yet they are signs of life."""
        dialog = self._dialogs.get(call_id)
        if dialog is None or dialog.state is State.ENDED:
            return None
        return dialog.last_ts, dialog.session_expires_s

    def get(self, call_id: str) -> CallSignalling | None:
        dialog = self._dialogs.get(call_id)
        return None if dialog is None else dialog.snapshot()

    # -- internals -----------------------------------------------------------

    def _report(self, msg: SipMessage, src: Endpoint, ts: float
                ) -> list[SipEvent | QualityReported]:
        key = (msg.call_id, msg.cseq.number, msg.via_branch)
        if key in self._reports:
            self.counters.retransmissions += 1
            return []
        try:
            report = parse_report(msg.body)
        except VqReportError:
            self.counters.vq_report_errors += 1
            return []
        if len(self._reports) >= MAX_REPORT_KEYS:
            del self._reports[next(iter(self._reports))]
        self._reports[key] = None
        self.counters.vq_reports += 1
        return [QualityReported(ts, src, report)]

    def _start(
        self, msg: SipMessage, src: Endpoint, dst: Endpoint, ts: float, dscp: int, transport: str
    ) -> list[SipEvent | QualityReported]:
        if not (msg.is_request and msg.method == "INVITE" and msg.to_tag is None):
            # Not a call, or a call the probe saw no INVITE of (started before capture).
            if msg.method in _CALL_METHODS:
                if msg.is_request:
                    self.counters.orphan_requests += 1
                else:
                    self.counters.orphan_responses += 1
            return []
        events: list[SipEvent | QualityReported] = [*self._make_room(ts)]
        dialog = Dialog(msg, src, dst, ts, transport)
        dialog.start(msg, src, ts, dscp)
        self.counters.sdp_errors += dialog.sdp_errors
        self._dialogs[msg.call_id] = dialog
        self._setup[msg.call_id] = None
        self._sdp_bytes += dialog.media_bytes
        self.counters.dialogs_started += 1
        events.extend(self._shed_sdp(dialog))
        events.append(DialogStarted(dialog.snapshot()))
        return events

    def _shed_sdp(self, keep: Dialog) -> list[SipEvent]:
        """Keep the dialogs' SDP under ``max_sdp_bytes``: other dialogs go in eviction
        order (`_evict_one`); then ``keep`` forgets its own oldest SDPs."""
        events: list[SipEvent] = []
        while self._sdp_bytes > self.max_sdp_bytes and len(self._dialogs) > 1:
            events.extend(self._evict_one(skip=keep.call_id))
        while self._sdp_bytes > self.max_sdp_bytes and len(keep.media) > 1:
            size = keep.media_bytes
            keep.drop_oldest_media()
            self._sdp_bytes -= size - keep.media_bytes
            self.counters.sdp_dropped += 1
        return events

    def _remove(self, call_id: str) -> Dialog:
        dialog = self._dialogs.pop(call_id)
        self._sdp_bytes -= dialog.media_bytes
        return dialog

    def _make_room(self, now: float) -> list[SipEvent]:
        """Evict until a new dialog fits (`_evict_one`)."""
        events: list[SipEvent] = []
        while len(self._dialogs) >= self.max_dialogs:
            events.extend(self._evict_one())
        return events

    def _evict_one(self, skip: str | None = None) -> list[SipEvent]:
        """Forget one dialog, O(1): a finished one, else the stalest stalled set-up, then
        challenged/terminating, then (last resort) the stalest confirmed call; never
        ``skip``. A live one ends with reason ``evicted`` (`DialogEnded`, counted)."""
        ended = [c for c in itertools.islice(self._ended, 2) if c != skip]
        if ended:
            del self._ended[ended[0]]
            self._remove(ended[0])
            return []
        for bucket in (self._setup, self._closing, self._confirmed):
            call_id = next((c for c in itertools.islice(bucket, 2) if c != skip), None)
            if call_id is not None:
                break
        else:
            raise AssertionError("no dialog to evict")  # the callers check the sizes
        dialog = self._remove(call_id)
        del bucket[call_id]
        dialog.end(EndReason.EVICTED, dialog.last_ts)
        self.counters.dialogs_evicted += 1
        self.counters.dialogs_ended += 1
        return [DialogEnded(dialog.snapshot())]

    def _ended_event(
        self, dialog: Dialog, before: State, now: float, call: CallSignalling
    ) -> DialogEnded:
        """Move an ended dialog to the linger list and count it."""
        self._bucket(before).pop(dialog.call_id, None)
        self._ended[dialog.call_id] = now
        self.counters.dialogs_ended += 1
        return DialogEnded(call)

    def _place(self, dialog: Dialog, before: State) -> None:
        """Re-file a live dialog as most recently active in its phase's bucket."""
        self._bucket(before).pop(dialog.call_id, None)
        self._bucket(dialog.state)[dialog.call_id] = None

    def _bucket(self, state: State) -> OrderedDict[str, None]:
        if state in _SETUP_STATES:
            return self._setup
        if state is State.CONFIRMED:
            return self._confirmed
        if state in (State.CHALLENGED, State.TERMINATING):
            return self._closing
        return _NOWHERE

    def _count(self, msg: SipMessage, src: Endpoint, dst: Endpoint) -> None:
        self.counters.messages += 1
        if msg.is_request:
            method = msg.method if msg.method in KNOWN_METHODS else "OTHER"
            by_method = self.counters.requests_by_method
            by_method[method] = by_method.get(method, 0) + 1
            key = (OTHER_PEER if self.peer_of is None else self.peer_of(src, dst), method)
            by_peer = self.counters.requests_by_peer
            by_peer[key] = by_peer.get(key, 0) + 1
        else:
            cls = f"{(msg.status_code or 0) // 100}xx"
            by_class = self.counters.responses_by_class
            by_class[cls] = by_class.get(cls, 0) + 1


_SETUP_STATES = frozenset({State.CALLING, State.PROCEEDING, State.EARLY})
# ENDED dialogs live in `_ended`, with their end time
_NOWHERE: OrderedDict[str, None] = OrderedDict()
