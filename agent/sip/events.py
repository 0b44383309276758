"""What the SIP layer tells the call layer: frozen snapshots of a dialog.

The dialog tracker (`agent.sip.tracker.SipTracker`) is fed parsed messages with
their packet time and emits these events. The call layer never looks inside the
dialog state machine: it correlates media with `CallSignalling.media` and builds
records from the timings. Times are packet timestamps (epoch seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from agent.decode.endpoint import Endpoint
from agent.sip.sdp import MediaDescription
from agent.sip.vqreport import QualityReport

__all__ = ["Endpoint"]  # re-exported: the SIP layer speaks in endpoints


class EndReason(StrEnum):
    NORMAL = "normal"  # BYE (either side) after an answer
    FAILED = "failed"  # final response >= 300 to the initial INVITE (not 487 after CANCEL)
    CANCELLED = "cancelled"  # CANCEL, or 487 to the INVITE
    TIMED_OUT = "timed_out"  # no final response / nothing seen of the call for its idle time
    SESSION_EXPIRED = "session_expired"  # RFC 4028 session timer ran out with no refresh
    SHUTDOWN = "shutdown"  # the probe stopped (SIGTERM) mid-call
    CAPTURE_END = "capture_end"  # `analyze`: the capture ended mid-call (truncated, not ended)
    EVICTED = "evicted"  # a full table (dialogs or calls) ended it early: its record is made


class Side(StrEnum):
    CALLER = "caller"  # sender of the initial INVITE
    CALLEE = "callee"


@dataclass(frozen=True, slots=True)
class MediaSdp:
    """One SDP body seen in the dialog (offer or answer), in packet order.

    ``media`` holds every section, audio, video, image (T.38) and application
    alike (`MediaDescription` resolves connection
    address, RTCP port, rtcp-mux, direction, payload map). ``source`` is the IP
    endpoint the carrying SIP message came from (for NAT: media may arrive from
    elsewhere but is sent *to* the advertised address and port).
    """

    ts: float
    side: Side
    media: tuple[MediaDescription, ...]
    source: Endpoint
    in_response: int | None  # status code when carried by a response (183, 200 ...)


@dataclass(frozen=True, slots=True)
class CallSignalling:
    """A dialog (one Call-ID, the first INVITE transaction and its later requests)."""

    call_id: str
    from_uri: str
    to_uri: str
    from_display: str | None
    caller: Endpoint  # where the initial INVITE came from
    callee: Endpoint  # where it went
    transport: str  # "udp" or "tcp"
    invite_ts: float
    first_provisional_ts: float | None  # first 18x (RFC 6076 SRD end when present)
    first_response_ts: float | None  # first response of any kind (100 Trying included)
    answer_ts: float | None  # first 2xx to the initial INVITE
    final_status: int | None  # final status of the initial INVITE
    bye_ts: float | None
    bye_side: Side | None
    disconnect_ts: float | None  # 2xx to the BYE (RFC 6076 session disconnect delay end)
    end_ts: float | None  # None while the call is active
    end_reason: EndReason | None  # None while active
    media: tuple[MediaSdp, ...]
    signalling_dscp: dict[int, int] = field(hash=False)  # DSCP of every SIP packet -> count
    requests: dict[str, int] = field(hash=False)  # method -> count (retransmissions excluded)
    responses: dict[int, int] = field(hash=False)  # status -> count (retransmissions excluded)
    retransmissions: int = 0
    early_dialogs: int = 0  # distinct To-tags in provisional responses (forking, RFC 3261 §12.1)
    user_agent: str | None = None
    last_ts: float = 0.0  # the dialog's last message (retransmissions excluded): liveness
    # RFC 4028 session interval the last 2xx to an INVITE/UPDATE granted (None: no timer)
    session_expires_s: float | None = None

    @property
    def setup_delay_s(self) -> float | None:
        """RFC 6076 session request delay: INVITE -> first 18x, or the final response."""
        end = self.first_provisional_ts
        if end is None and self.final_status is not None:
            end = self.answer_ts if self.answer_ts is not None else self.end_ts
        return None if end is None else end - self.invite_ts

    @property
    def answer_delay_s(self) -> float | None:
        return None if self.answer_ts is None else self.answer_ts - self.invite_ts


@dataclass(frozen=True, slots=True)
class DialogStarted:
    """An initial INVITE was seen."""

    call: CallSignalling


@dataclass(frozen=True, slots=True)
class MediaChanged:
    """A new SDP (offer or answer: 18x, 2xx, re-INVITE, UPDATE, ACK) was seen."""

    call: CallSignalling


@dataclass(frozen=True, slots=True)
class DialogEnded:
    """The dialog ended (BYE answered or seen, failure, cancel, timeout, shutdown)."""

    call: CallSignalling


SipEvent = DialogStarted | MediaChanged | DialogEnded


@dataclass(frozen=True, slots=True)
class QualityReported:
    """An endpoint's RFC 6035 voice-quality report (a PUBLISH, or a NOTIFY of the
    ``vq-rtcpxr`` package) was seen at packet time ``ts``, sent from ``reporter``.

    The message is its own transaction with its own Call-ID; the call it is about is
    ``report.call_id``, which only the call layer can resolve."""

    ts: float
    reporter: Endpoint
    report: QualityReport
