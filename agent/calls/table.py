"""`CallTable`: dialogs + streams + RTCP -> `CallRecord`s, in packet time.

Theory of operation. The SIP layer reports dialogs (`DialogStarted`,
`MediaChanged`, `DialogEnded`); each SDP endpoint goes into the `MediaIndex`.
The RTP layer reports streams when they end (idle, closed, end of input); each
is matched to the call whose SDP it was sent to, or kept as unsignalled media.
A call's record is built once its dialog has ended *and* its streams had time
to end (``linger_s`` of packet time after the dialog's end, or `finish`):
streams still running then are closed by the engine (it is handed the call's
endpoints through `due_endpoints`). Unsignalled streams become pseudo-calls,
a stream and its reverse (swapped 5-tuple) forming one call with two
directions. Every table is bounded (``max_calls``; evictions counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.calls.correlate import MediaIndex
from agent.calls.intervals import IntervalQuality
from agent.calls.judge import call_verdict, judge_direction
from agent.calls.record import CallRecord, DirectionRecord
from agent.config import Config
from agent.rtcp.monitor import RtcpMonitor
from agent.rtp.model import StreamStats
from agent.rtp.payload_types import TELEPHONE_EVENT
from agent.sip.events import CallSignalling, DialogEnded, EndReason, Side, SipEvent
from agent.sla.policy import direction_of, dscp_compliance_ratio, peer_of

TELEPHONE_EVENT_NAME = TELEPHONE_EVENT.name


@dataclass(slots=True)
class _Call:
    signalling: CallSignalling
    streams: list[tuple[Side, StreamStats]] = field(default_factory=list)
    ended: bool = False


@dataclass(slots=True)
class CallCounters:
    calls_started: int = 0
    calls_ended: int = 0
    calls_evicted: int = 0
    unsignalled_calls: int = 0
    streams_matched: int = 0
    streams_unsignalled: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in CallCounters.__dataclass_fields__}


class CallTable:
    """Joins the layers' events into records. Sans-IO: time is packet time."""

    def __init__(self, config: Config, rtcp: RtcpMonitor, linger_s: float = 5.0) -> None:
        self.config = config
        self.rtcp = rtcp
        self.linger_s = linger_s
        self.index = MediaIndex()
        self.counters = CallCounters()
        self._calls: dict[str, _Call] = {}
        self._loose: list[StreamStats] = []  # unsignalled streams waiting for their reverse
        self.intervals = IntervalQuality(config)

    def __len__(self) -> int:
        return len(self._calls)

    # -- input ------------------------------------------------------------------------

    def on_sip(self, event: SipEvent) -> None:
        sig = event.call
        call = self._calls.get(sig.call_id)
        if call is None:
            if len(self._calls) >= self.config.calls.max_calls:
                self._evict()
            call = self._calls[sig.call_id] = _Call(sig)
            self.counters.calls_started += 1
        call.signalling = sig
        call.ended = isinstance(event, DialogEnded)
        self.index.update(sig)

    def on_stream(self, s: StreamStats) -> None:
        self.intervals.observe(s)  # the last interval: from the latest snapshot to the end
        m = self.index.match_key(s.key, s.first_ts)
        call = self._calls.get(m.call_id) if m is not None else None
        if call is None or m is None:
            self.counters.streams_unsignalled += 1
            self._loose.append(s)
            return
        self.counters.streams_matched += 1
        call.streams.append((m.toward, s))

    # -- output -----------------------------------------------------------------------

    def due(self, now: float) -> list[str]:
        """Ended calls whose linger has passed at ``now``: the engine closes their
        streams (`endpoints`) and then calls `take`."""
        return [cid for cid, c in self._calls.items()
                if c.ended and (c.signalling.end_ts or 0.0) + self.linger_s <= now]

    def media_idle(
        self, now: float, timeout_s: float, running: set[str]
    ) -> list[tuple[str, float]]:
        """Answered calls, not ended, not on hold, with no stream in ``running`` (call ids
        with a live stream) and no media for ``timeout_s``: (call id, last media time).
        Such a call lost its BYE; the SIP layer ends it as timed out at that time."""
        out = []
        for cid, c in self._calls.items():
            sig = c.signalling
            if c.ended or sig.answer_ts is None or cid in running or _on_hold(sig):
                continue
            last = max([s.last_ts for _, s in c.streams] or [sig.answer_ts])
            if last + timeout_s <= now:
                out.append((cid, last))
        return out

    def endpoints(self, call_id: str) -> set[tuple[str, int]]:
        return self.index.endpoints(call_id)

    def take(self, call_id: str) -> CallRecord:
        """Build and forget one call's record."""
        call = self._calls.pop(call_id)
        self.index.remove(call_id)
        self.counters.calls_ended += 1
        return self._record(call)

    def finish(self) -> list[CallRecord]:
        """End of input (after the streams and dialogs were finished)."""
        out = [self.take(cid) for cid in list(self._calls)]
        out += self.take_unsignalled(None)
        return out

    def take_unsignalled(self, now: float | None) -> list[CallRecord]:
        """Pseudo-calls of unsignalled streams idle for ``linger_s`` (all when ``now`` is None)."""
        ready = [s for s in self._loose if now is None or s.last_ts + self.linger_s <= now]
        if not ready:
            return []
        keep = [s for s in self._loose if s not in ready]
        self._loose = keep
        out: list[CallRecord] = []
        by_pair: dict[tuple[object, ...], list[StreamStats]] = {}
        for s in ready:
            k = s.key
            a = (k.src_hi, k.src_lo, k.sport)
            b = (k.dst_hi, k.dst_lo, k.dport)
            by_pair.setdefault((min(a, b), max(a, b)), []).append(s)
        for streams in by_pair.values():
            self.counters.unsignalled_calls += 1
            out.append(self._pseudo(sorted(streams, key=lambda s: s.first_ts)))
        return out

    # -- records ------------------------------------------------------------------------

    def _direction_name(self, s: StreamStats, toward: Side) -> str:
        src = s.key.src.rsplit(":", 1)[0].strip("[]")
        dst = s.key.dst.rsplit(":", 1)[0].strip("[]")
        d = direction_of(src, dst, self.config.sla.local_networks)
        if d is not None:
            return d
        return "a_to_b" if toward == Side.CALLEE else "b_to_a"

    def _peer(self, addrs: list[str]) -> str:
        for a in addrs:
            p = peer_of(a, self.config.sla.peers)
            if p != "other":
                return p
        return "other"

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
        peer = self._peer([sig.callee.addr, sig.caller.addr]
                          + [s.key.dst.rsplit(":", 1)[0].strip("[]") for s in streams])
        profile = self.config.sla.profile_for_peer(peer)
        rtt_s, rtt_source = self._rtt(streams)
        setup = sig.setup_delay_s
        media, events = _split_events(sorted(call.streams, key=lambda t: t[1].first_ts))
        directions = [
            judge_direction(
                self._direction_name(s, toward), s, profile=profile, cfg=self.config,
                rtt_s=rtt_s, remote=self.rtcp.report_about(s.key.ssrc), setup_delay_s=setup,
                signalling_dscp=sig.signalling_dscp, mos_min=self._mos_min(s),
            ).model_copy(update={"event_streams": events.get(_path(s), [])})
            for toward, s in media
        ]
        end_ts = sig.end_ts if sig.end_ts is not None else max(
            [s.last_ts for s in streams] or [sig.invite_ts])
        sig_ok = (None if profile.signalling_dscp is None
                  else dscp_compliance_ratio(sig.signalling_dscp, profile.signalling_dscp))
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
            codec=_codec(streams), rtt_ms=None if rtt_s is None else round(rtt_s * 1000, 3),
            rtt_source=rtt_source,
            signalling_dscp={str(k): v for k, v in sorted(sig.signalling_dscp.items())},
            signalling_dscp_compliance_ratio=_r(sig_ok),
            directions=directions,
            sla=call_verdict(profile, directions, setup, sig.signalling_dscp),
        )

    def _pseudo(self, streams: list[StreamStats]) -> CallRecord:
        peer = self._peer([s.key.dst.rsplit(":", 1)[0].strip("[]") for s in streams]
                          + [s.key.src.rsplit(":", 1)[0].strip("[]") for s in streams])
        profile = self.config.sla.profile_for_peer(peer)
        rtt_s, rtt_source = self._rtt(streams)
        first = streams[0]
        directions: list[DirectionRecord] = []
        for s in streams:
            toward = Side.CALLEE if (s.key.src, s.key.dst) == (first.key.src, first.key.dst) \
                else Side.CALLER
            directions.append(judge_direction(
                self._direction_name(s, toward), s, profile=profile, cfg=self.config,
                rtt_s=rtt_s, remote=self.rtcp.report_about(s.key.ssrc), setup_delay_s=None,
                signalling_dscp=None, mos_min=self._mos_min(s),
            ))
        return CallRecord(
            call_id=None, from_=None, to=None, peer=peer, transport=None, final_status=None,
            end_reason="unsignalled", invite_ts=None, first_provisional_ts=None,
            answer_ts=None, end_ts=max(s.last_ts for s in streams), setup_delay_s=None,
            answer_delay_s=None,
            duration_s=_r(max(s.last_ts for s in streams) - min(s.first_ts for s in streams)),
            disconnect_delay_s=None, codec=_codec(streams),
            rtt_ms=None if rtt_s is None else round(rtt_s * 1000, 3),
            rtt_source=rtt_source,
            signalling_dscp={}, signalling_dscp_compliance_ratio=None, directions=directions,
            sla=call_verdict(profile, directions, None, None),
        )

    def _mos_min(self, s: StreamStats) -> float | None:
        """The worst interval's MOS-CQ of a finished stream (forgets its intervals)."""
        worst = self.intervals.mos_min(s.key)
        self.intervals.forget(s.key)
        return worst

    def _evict(self) -> None:
        """The table is full: the oldest call that has not been answered goes first."""
        victim = min(self._calls.values(),
                     key=lambda c: (c.signalling.answer_ts is not None, c.signalling.invite_ts))
        self._calls.pop(victim.signalling.call_id)
        self.index.remove(victim.signalling.call_id)
        self.counters.calls_evicted += 1


def _on_hold(sig: CallSignalling) -> bool:
    """The latest SDP put the media on hold (sendonly/recvonly/inactive, or 0.0.0.0):
    silence is expected then, not a lost BYE."""
    if not sig.media or not sig.media[-1].media:
        return False
    return all(m.on_hold or m.direction != "sendrecv" for m in sig.media[-1].media)


def _path(s: StreamStats) -> tuple[str, str]:
    return s.key.src, s.key.dst


def _split_events(
    streams: list[tuple[Side, StreamStats]],
) -> tuple[list[tuple[Side, StreamStats]], dict[tuple[str, str], list[dict[str, object]]]]:
    """Event-only streams ride along with the media stream of their 5-tuple; one that
    has no media companion stays a direction of its own."""
    paths = {_path(s) for _, s in streams if s.codec != TELEPHONE_EVENT_NAME}
    media: list[tuple[Side, StreamStats]] = []
    events: dict[tuple[str, str], list[dict[str, object]]] = {}
    for toward, s in streams:
        if s.codec == TELEPHONE_EVENT_NAME and _path(s) in paths:
            events.setdefault(_path(s), []).append(s.to_json())
        else:
            media.append((toward, s))
    return media, events


def _codec(streams: list[StreamStats]) -> str | None:
    names = [s.codec for s in streams if s.codec and s.codec != TELEPHONE_EVENT_NAME]
    return max(set(names), key=names.count) if names else None


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)
