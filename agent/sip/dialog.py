"""The call state machine: one SIP dialog and its initial INVITE transaction.

Theory of operation
-------------------
A `Dialog` is created by an initial INVITE (no To-tag, RFC 3261 §12.1) and then
fed every later message carrying the same Call-ID, as the probe saw it on the
wire. The probe is a passive observer, not a UA: it cannot ask for anything to
be repeated, it may see a message twice (retransmission, or the same request on
two hops of a proxy), and it must never stall on a message it did not expect.

Each message is first de-duplicated (RFC 3261 §17: a retransmitted request
has the same CSeq, method and top Via branch; a retransmitted response the
same status, CSeq and To-tag), then recorded (counts, DSCP, timings, SDP),
then classified into an `Event`. The pair (state, event) is looked up in
`TRANSITIONS`; a pair that is not in the table leaves the state alone and is
counted as `unexpected` (the probe reports what it saw, it does not enforce
the protocol). Entering `ENDED` fixes the end reason and end time, which
depend on the event and the state it came from (`_ending`).

States::

    CALLING --1xx--> PROCEEDING --18x+To-tag--> EARLY --2xx--> CONFIRMED --BYE--> TERMINATING
       |                 |                        |                |                  |
       +---- >=300, timeout, shutdown ------------+      shutdown, end()        BYE 2xx/481,
       |                                                                        timeout, end()
       +--401/407--> CHALLENGED --INVITE (credentials, CSeq+1)--> CALLING            |
                         +--timeout, shutdown--> ENDED (failed) <--------------------+

- A 401/407 challenge (RFC 3261 §22.2) is not the end of the call: the UA
  resends the INVITE with credentials in the same Call-ID. The call keeps its
  first INVITE time, so the setup delay includes the challenge round trip, as
  the caller experienced it.
- The session ends when the BYE is sent (RFC 3261 §15.1.1), so `end_ts` of a
  normal call is the BYE's time (RFC 6076 §4.5 session duration: answer ->
  BYE); the BYE's 2xx only adds the disconnect delay (RFC 6076 §4.6).
- Forking (RFC 3261 §13.2.2.4, §19.3): provisional responses with distinct
  To-tags are distinct early dialogs; the first 2xx fixes the confirmed
  dialog, and requests whose tags belong to another fork do not end the call.
- Time is the packet time of the messages; timeouts are decided by the
  tracker (`timeout`, `shutdown`, `end`) with a `now` it is given.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

from agent.sip.errors import SdpParseError
from agent.sip.events import CallSignalling, Endpoint, EndReason, MediaSdp, Side
from agent.sip.message import SipMessage
from agent.sip.sdp import parse_sdp

MAX_DEDUP_KEYS = 256  # per dialog; a call's distinct transactions rarely exceed a few dozen
MAX_MEDIA = 64  # SDP bodies kept per dialog (the newest); bounds a re-INVITE loop
MAX_MEDIA_BYTES = 64 * 1024  # ... and their bytes (the newest one is always kept)
# Methods counted by name; anything else is "OTHER" so counter keys stay bounded
# (DESIGN.md rule 6: the network does not choose label values or keys).
KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "PRACK", "SUBSCRIBE",
        "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
    }
)  # fmt: skip
MAX_EARLY_TAGS = 32  # distinct To-tags remembered for forking


class State(StrEnum):
    CALLING = "calling"  # initial INVITE sent, nothing back yet
    PROCEEDING = "proceeding"  # 100 Trying / 1xx without To-tag
    EARLY = "early"  # 1xx (not 100) with a To-tag: an early dialog (§12.1)
    CHALLENGED = "challenged"  # 401/407 to the INVITE: a retry with credentials may follow
    CONFIRMED = "confirmed"  # 2xx to the initial INVITE
    TERMINATING = "terminating"  # BYE seen, its final response not yet
    ENDED = "ended"


class Event(StrEnum):
    INVITE = "invite"  # the initial INVITE again (another hop, or the retry after 401/407)
    PROVISIONAL = "provisional"  # 1xx to the initial INVITE, no To-tag (or 100)
    EARLY_PROVISIONAL = "early_provisional"  # 101-199 with a To-tag
    SUCCESS = "success"  # 2xx to the initial INVITE
    CHALLENGE = "challenge"  # 401/407 to the initial INVITE
    FAILURE = "failure"  # other >= 300 to the initial INVITE
    CANCEL = "cancel"
    ACK = "ack"
    BYE = "bye"
    BYE_DONE = "bye_done"  # final response to the BYE (2xx, or 481/408: §15.1.1)
    REINVITE = "reinvite"  # INVITE with a To-tag (§14)
    UPDATE = "update"  # RFC 3311
    OTHER = "other"  # any other in-dialog message (PRACK, INFO, REFER, NOTIFY, responses)
    TIMEOUT = "timeout"  # tracker: no final response / BYE unanswered / no retry after 401
    SHUTDOWN = "shutdown"  # tracker: the probe stops
    END = "end"  # the call layer ends the dialog (media idle)


_S = State
_E = Event
_SETUP = (_S.CALLING, _S.PROCEEDING, _S.EARLY)
_LIVE = (*_SETUP, _S.CHALLENGED, _S.CONFIRMED, _S.TERMINATING)
STAY = None  # target of a self-loop: the message is expected there and changes nothing

# (from states, event, to state or STAY). Self-loops are listed so that the table
# says which messages are expected where; any other pair is counted as unexpected.
_ROWS: tuple[tuple[tuple[State, ...], Event, State | None], ...] = (
    # initial INVITE transaction (RFC 3261 §13.2.2, §17.1.1)
    (_SETUP, _E.INVITE, STAY),  # the same INVITE on another hop (new branch)
    ((_S.CALLING,), _E.PROVISIONAL, _S.PROCEEDING),
    ((_S.PROCEEDING, _S.EARLY), _E.PROVISIONAL, STAY),
    (_SETUP, _E.EARLY_PROVISIONAL, _S.EARLY),  # §12.1: 1xx with To-tag creates it
    (_SETUP, _E.SUCCESS, _S.CONFIRMED),
    (_SETUP, _E.FAILURE, _S.ENDED),
    (_SETUP, _E.CHALLENGE, _S.CHALLENGED),
    (_SETUP, _E.CANCEL, STAY),  # the 487 that follows ends the call (§9.1)
    (_SETUP, _E.UPDATE, _S.EARLY),  # UPDATE needs an early dialog (RFC 3311 §5.1)
    (_SETUP, _E.BYE, _S.TERMINATING),  # the caller may BYE an early dialog (§15)
    (_SETUP, _E.OTHER, STAY),  # PRACK (RFC 3262), CANCEL's 200, ...
    (_SETUP, _E.TIMEOUT, _S.ENDED),  # Timer C (§16.6 step 11), ~3 min
    ((_S.CHALLENGED,), _E.INVITE, _S.CALLING),  # §22.2: retry with credentials
    ((_S.CHALLENGED,), _E.ACK, STAY),  # ACK of the 401/407 (§17.1.1.3)
    ((_S.CHALLENGED,), _E.OTHER, STAY),
    ((_S.CHALLENGED,), _E.CHALLENGE, STAY),  # the same 407 relayed on another hop
    ((_S.CHALLENGED,), _E.PROVISIONAL, STAY),  # a late 100 of the challenged INVITE
    ((_S.CHALLENGED,), _E.TIMEOUT, _S.ENDED),  # no retry: the call failed with 401/407
    # confirmed dialog (§13.2.2.4, §14, §15)
    ((_S.CONFIRMED,), _E.SUCCESS, STAY),  # 2xx from another fork
    ((_S.CONFIRMED,), _E.PROVISIONAL, STAY),  # late 1xx (reordered on the way)
    ((_S.CONFIRMED,), _E.EARLY_PROVISIONAL, STAY),
    ((_S.CONFIRMED,), _E.CANCEL, STAY),  # CANCEL crossed the 2xx: no effect (§9.1)
    ((_S.CONFIRMED, _S.TERMINATING), _E.ACK, STAY),
    ((_S.CONFIRMED,), _E.REINVITE, STAY),  # new SDP is recorded, the state stays
    ((_S.CONFIRMED,), _E.UPDATE, STAY),
    ((_S.CONFIRMED, _S.TERMINATING), _E.OTHER, STAY),
    ((_S.CONFIRMED,), _E.BYE, _S.TERMINATING),
    ((_S.TERMINATING,), _E.BYE, STAY),  # both sides hung up at once
    ((_S.TERMINATING,), _E.SUCCESS, STAY),
    ((_S.TERMINATING,), _E.BYE_DONE, _S.ENDED),
    ((_S.TERMINATING,), _E.TIMEOUT, _S.ENDED),  # BYE never answered: Timer F (64*T1)
    # the probe or the call layer ends whatever is live
    (_LIVE, _E.SHUTDOWN, _S.ENDED),
    (_LIVE, _E.END, _S.ENDED),
)

TRANSITIONS: dict[tuple[State, Event], State] = {
    (state, event): state if target is STAY else target
    for states, event, target in _ROWS
    for state in states
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one message or timer did to a dialog, for the tracker to turn into events."""

    duplicate: bool = False  # a retransmission: nothing recorded but the DSCP
    new_media: bool = False  # a new SDP body was recorded
    ended: bool = False  # the dialog entered ENDED now


class Dialog:
    """State of one call (Call-ID). Not thread-safe; fed in packet order."""

    __slots__ = (
        "_cancelled",
        "_confirmed_tag",
        "_dedup",
        "_early_tags",
        "_invite_cseq",
        "_media_sizes",
        "answer_ts",
        "bye_side",
        "bye_ts",
        "call_id",
        "callee",
        "caller",
        "caller_tag",
        "disconnect_ts",
        "dscp",
        "end_reason",
        "end_ts",
        "final_status",
        "first_provisional_ts",
        "first_response_ts",
        "from_display",
        "from_uri",
        "invite_ts",
        "last_ts",
        "media",
        "media_bytes",
        "media_dropped",
        "requests",
        "responses",
        "retransmissions",
        "sdp_errors",
        "session_expires_s",
        "state",
        "to_uri",
        "transport",
        "unexpected",
        "user_agent",
    )

    def __init__(
        self, invite: SipMessage, src: Endpoint, dst: Endpoint, ts: float, transport: str
    ) -> None:
        self.call_id = invite.call_id
        self.state = State.CALLING
        self.from_uri, self.to_uri = invite.from_uri, invite.to_uri
        self.from_display = invite.from_display
        self.caller_tag = invite.from_tag
        self.caller, self.callee = src, dst
        self.transport = transport
        self.invite_ts = self.last_ts = ts
        self._invite_cseq = invite.cseq.number
        self.first_provisional_ts: float | None = None
        self.first_response_ts: float | None = None
        self.answer_ts: float | None = None
        self.final_status: int | None = None
        self.bye_ts: float | None = None
        self.bye_side: Side | None = None
        self.disconnect_ts: float | None = None
        self.end_ts: float | None = None
        self.end_reason: EndReason | None = None
        self.media: list[MediaSdp] = []
        self.media_dropped = 0
        self.media_bytes = 0  # SDP bytes of `media`
        self._media_sizes: list[int] = []  # per entry of `media`
        self.dscp: dict[int, int] = {}
        self.requests: dict[str, int] = {}
        self.responses: dict[int, int] = {}
        self.retransmissions = self.unexpected = self.sdp_errors = 0
        self.user_agent: str | None = None
        self.session_expires_s: float | None = None
        self._cancelled = False
        self._confirmed_tag: str | None = None
        self._early_tags: dict[str, None] = {}
        self._dedup: OrderedDict[tuple[object, ...], None] = OrderedDict()

    # -- feeding -------------------------------------------------------------

    def handle(self, msg: SipMessage, src: Endpoint, ts: float, dscp: int) -> Outcome:
        """Record one message of this Call-ID (``ts`` in epoch seconds) and advance."""
        self.dscp[dscp] = self.dscp.get(dscp, 0) + 1
        if self._is_duplicate(msg):
            self.retransmissions += 1
            return Outcome(duplicate=True)
        self.last_ts = max(self.last_ts, ts)
        self._count(msg)
        if self.state is State.ENDED:
            return Outcome()  # late ACK / BYE of a finished call: counted, nothing else
        event = self._classify(msg)
        if event is Event.BYE and not self._same_dialog(msg):
            event = Event.OTHER  # BYE of a losing fork (§13.2.2.4) leaves the call alone
        new_media = self._record(msg, event, src, ts)
        return Outcome(new_media=new_media, ended=self._apply(event, ts, msg.status_code))

    def start(self, invite: SipMessage, src: Endpoint, ts: float, dscp: int) -> bool:
        """Record the initial INVITE itself; True when it carried an SDP offer."""
        self.dscp[dscp] = self.dscp.get(dscp, 0) + 1
        self._is_duplicate(invite)
        self._count(invite)
        self.user_agent = invite.header("User-Agent")
        return self._add_sdp(invite, src, ts)

    def timeout(self, now: float) -> bool:
        """The tracker's timer fired (setup, BYE or challenge). True if the dialog ended."""
        return self._apply(Event.TIMEOUT, now, None)

    def shutdown(self, now: float, reason: EndReason = EndReason.SHUTDOWN) -> bool:
        return self._apply(Event.SHUTDOWN, now, None, reason)

    def end(self, reason: EndReason, now: float) -> bool:
        """The call layer ends the dialog (e.g. media idle). True if it was live."""
        return self._apply(Event.END, now, None, reason)

    # -- the machine ---------------------------------------------------------

    def _apply(
        self, event: Event, ts: float, status: int | None, reason: EndReason | None = None
    ) -> bool:
        target = TRANSITIONS.get((self.state, event))
        if target is None:
            if self.state is not State.ENDED:
                self.unexpected += 1
            return False
        if target is State.ENDED:
            self.end_reason, self.end_ts = self._ending(event, ts, status, reason)
        self.state = target
        return target is State.ENDED

    def _ending(
        self, event: Event, ts: float, status: int | None, reason: EndReason | None
    ) -> tuple[EndReason, float]:
        """End reason and end time when ``event`` takes the current state to ENDED."""
        if self.state is State.TERMINATING and self.bye_ts is not None:
            # BYE seen: the session is over at the BYE whatever follows (§15.1.1).
            return EndReason.NORMAL, self.bye_ts
        if self.state is State.CHALLENGED:
            return EndReason.FAILED, self.end_ts if self.end_ts is not None else ts
        if event is Event.FAILURE:
            cancelled = status == 487 or self._cancelled  # RFC 3261 §9.1
            return (EndReason.CANCELLED if cancelled else EndReason.FAILED), ts
        if event is Event.TIMEOUT:
            # Deterministic in packet time: the last message seen, not when the timer ran.
            return (EndReason.CANCELLED if self._cancelled else EndReason.TIMED_OUT), self.last_ts
        if event in (Event.END, Event.SHUTDOWN) and reason is not None:
            return reason, ts
        return EndReason.SHUTDOWN, ts

    def _classify(self, msg: SipMessage) -> Event:
        if msg.is_request:
            return _classify_request(msg)
        code = msg.status_code or 0
        if msg.method == "INVITE" and msg.cseq.number == self._invite_cseq:
            if code < 200:
                early = code != 100 and msg.to_tag is not None
                return Event.EARLY_PROVISIONAL if early else Event.PROVISIONAL
            if code < 300:
                return Event.SUCCESS
            return Event.CHALLENGE if code in (401, 407) else Event.FAILURE
        if msg.method == "BYE" and (200 <= code < 300 or code in (408, 481)):
            return Event.BYE_DONE
        return Event.OTHER

    # -- recording -----------------------------------------------------------

    def _record(self, msg: SipMessage, event: Event, src: Endpoint, ts: float) -> bool:
        """Timings and per-dialog facts of one (non-duplicate) message."""
        code = msg.status_code
        if event in _INITIAL_RESPONSES and code is not None:
            self._record_response(msg, code, ts)
        elif event is Event.INVITE and self.state is State.CHALLENGED:
            self._invite_cseq = msg.cseq.number  # the retry is the INVITE transaction now
            self.final_status = self.end_ts = None
        elif event is Event.CANCEL:
            self._cancelled = True
        elif event is Event.BYE and self.bye_ts is None:
            self.bye_ts, self.bye_side = ts, self._side(msg)
        elif event is Event.BYE_DONE and code is not None and code < 300:
            self.disconnect_ts = ts if self.disconnect_ts is None else self.disconnect_ts
        if self.user_agent is None and msg.is_request:
            self.user_agent = msg.header("User-Agent")
        if code is not None and 200 <= code < 300 and msg.method in ("INVITE", "UPDATE"):
            # RFC 4028 §9: the 2xx states the session interval both sides use; one without
            # Session-Expires turns the timer off.
            self.session_expires_s = _session_interval(msg.header("Session-Expires"))
        return self._add_sdp(msg, src, ts)

    def _record_response(self, msg: SipMessage, code: int, ts: float) -> None:
        if self.first_response_ts is None:
            self.first_response_ts = ts
        if 180 <= code < 190 and self.first_provisional_ts is None:
            self.first_provisional_ts = ts  # RFC 6076 §4.1: SRD ends at the first 18x
        if code > 100 and code < 200 and msg.to_tag and len(self._early_tags) < MAX_EARLY_TAGS:
            self._early_tags[msg.to_tag] = None
        if code >= 200 and self.final_status is None and self.state in _SETUP:
            self.final_status = code
            if code < 300:
                self.answer_ts = ts
                self._confirmed_tag = msg.to_tag
            elif code in (401, 407):
                self.end_ts = ts  # remembered for a challenge that is never retried

    def _add_sdp(self, msg: SipMessage, src: Endpoint, ts: float) -> bool:
        if msg.sdp is None:
            return False
        try:
            desc = parse_sdp(msg.sdp)
        except SdpParseError:
            self.sdp_errors += 1
            return False
        self.media.append(MediaSdp(ts, self._side(msg), desc.media, src, msg.status_code))
        self._media_sizes.append(len(msg.sdp))
        self.media_bytes += len(msg.sdp)
        while len(self.media) > MAX_MEDIA or (self.media_bytes > MAX_MEDIA_BYTES
                                              and len(self.media) > 1):
            self.drop_oldest_media()
        return True

    def drop_oldest_media(self) -> None:
        """Forget the oldest SDP kept (the tracker's byte budget, or the caps above)."""
        del self.media[0]
        self.media_bytes -= self._media_sizes.pop(0)
        self.media_dropped += 1

    def _count(self, msg: SipMessage) -> None:
        if msg.is_request:
            method = msg.method if msg.method in KNOWN_METHODS else "OTHER"
            self.requests[method] = self.requests.get(method, 0) + 1
        elif msg.status_code is not None:
            self.responses[msg.status_code] = self.responses.get(msg.status_code, 0) + 1

    def _is_duplicate(self, msg: SipMessage) -> bool:
        """RFC 3261 §17.1.3/§17.2.3 matching, as a passive observer can apply it."""
        if msg.is_request:
            key: tuple[object, ...] = (msg.method, msg.cseq.number, msg.via_branch, msg.from_tag)
        else:
            key = (msg.status_code, msg.cseq.number, msg.method, msg.to_tag, msg.via_branch)
        if key in self._dedup:
            return True
        self._dedup[key] = None
        if len(self._dedup) > MAX_DEDUP_KEYS:
            del self._dedup[next(iter(self._dedup))]
        return False

    def _side(self, msg: SipMessage) -> Side:
        """Who sent ``msg``: by the caller's From-tag (§12: tags identify the dialog
        ends; addresses change across proxies and NAT). A response is sent by the
        side that did not send the request it answers."""
        sent_by_caller_tag = msg.from_tag == self.caller_tag
        if msg.is_request:
            return Side.CALLER if sent_by_caller_tag else Side.CALLEE
        return Side.CALLEE if sent_by_caller_tag else Side.CALLER

    def _same_dialog(self, msg: SipMessage) -> bool:
        if self._confirmed_tag is None:
            return True
        return self._confirmed_tag in (msg.from_tag, msg.to_tag)

    # -- output --------------------------------------------------------------

    @property
    def early_dialogs(self) -> int:
        return len(self._early_tags)

    @property
    def is_setup(self) -> bool:
        return self.state in _SETUP

    def snapshot(self) -> CallSignalling:
        """A frozen copy for the call layer (`agent.sip.events`)."""
        return CallSignalling(
            call_id=self.call_id,
            from_uri=self.from_uri,
            to_uri=self.to_uri,
            from_display=self.from_display,
            caller=self.caller,
            callee=self.callee,
            transport=self.transport,
            invite_ts=self.invite_ts,
            first_provisional_ts=self.first_provisional_ts,
            first_response_ts=self.first_response_ts,
            answer_ts=self.answer_ts,
            final_status=self.final_status,
            bye_ts=self.bye_ts,
            bye_side=self.bye_side,
            disconnect_ts=self.disconnect_ts,
            end_ts=self.end_ts if self.state is State.ENDED else None,
            end_reason=self.end_reason,
            media=tuple(self.media),
            signalling_dscp=dict(self.dscp),
            requests=dict(self.requests),
            responses=dict(self.responses),
            retransmissions=self.retransmissions,
            early_dialogs=self.early_dialogs,
            user_agent=self.user_agent,
            last_ts=self.last_ts,
            session_expires_s=self.session_expires_s,
        )


_INITIAL_RESPONSES = frozenset(
    {Event.PROVISIONAL, Event.EARLY_PROVISIONAL, Event.SUCCESS, Event.CHALLENGE, Event.FAILURE}
)


MIN_SESSION_INTERVAL_S = 90.0  # RFC 4028 §4: Min-SE is at least 90 s


def _session_interval(value: str | None) -> float | None:
    """Seconds of an RFC 4028 ``Session-Expires: delta[;refresher=...]`` value; None when
    absent or not a number (a garbled header disables the timer, never ends a call)."""
    if value is None:
        return None
    head = value.split(";", 1)[0].strip()
    if not head.isdigit():
        return None
    return max(float(int(head[:10])), MIN_SESSION_INTERVAL_S)


def _classify_request(msg: SipMessage) -> Event:
    method = msg.method
    if method == "INVITE":
        # §12.2: a request inside a dialog carries the To-tag; without one it is
        # the initial INVITE again (another hop) or the retry after a challenge.
        return Event.REINVITE if msg.to_tag else Event.INVITE
    return _REQUEST_EVENTS.get(method, Event.OTHER)


_REQUEST_EVENTS = {
    "ACK": Event.ACK,
    "CANCEL": Event.CANCEL,
    "BYE": Event.BYE,
    "UPDATE": Event.UPDATE,
}
