"""The one media index: which call a stream belongs to, and what its SDP says it carries.

Theory of operation. Every audio section of every SDP a dialog carries says
"send my media to this endpoint, with these payload types". A stream whose
*destination* is such an endpoint belongs to that call and flows toward the
side that advertised it, whatever its source address, so media from behind a
NAT (arriving from an address the SDP never named) is latched by where it goes.
A stream whose *source* is an advertised endpoint (symmetric RTP: phones send
from the port they receive on) is the fallback when the destination was
rewritten. Both ends advertised by the two sides of one call is the strongest
evidence, and what tells calls apart when one side reuses its port every call.

Ports are reused: a later call may advertise an endpoint an earlier one used.
Each endpoint keeps the calls that advertised it, in time order; a stream goes
to the newest advertisement made before it started (with ``SDP_RACE_S`` of
slack for an answer that races its first packets), else the oldest later one.
The engine feeds packets in time order, so when a stream starts the index holds
exactly the SDP seen before it: the codec and clock an RTP stream is decoded
with (`media_for`, the `agent.rtp.hints.MediaHints` interface: payload map,
transport profile, SRTP trailer bytes) are the ones of the call it joins. A
newer SDP for the same call and side replaces the description. The index is
bounded by the call table: entries leave with their call.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from agent.decode.endpoint import Endpoint
from agent.media.description import EndpointMedia, srtp_trailers
from agent.media.payloads import STATIC_PAYLOAD_TYPES, PayloadInfo, payload_info
from agent.rtp.model import StreamKey
from agent.sip.events import CallSignalling, Side
from agent.sip.sdp import MediaDescription

SDP_RACE_S = 2.0  # media may start this long before the SDP that announces it is seen


@dataclass(frozen=True, slots=True)
class Advert:
    call_id: str
    side: Side  # who advertised the endpoint: media sent to it flows toward this side
    ts: float
    media: EndpointMedia


@dataclass(frozen=True, slots=True)
class Match:
    call_id: str
    toward: Side  # the side the stream flows to
    by: str  # "both" ends advertised, "destination", or "source" (symmetric RTP fallback)
    media: EndpointMedia  # what the SDP of the endpoint it matched by announced


class MediaIndex:
    """Endpoint -> the calls whose SDP advertised it (implements `MediaHints`)."""

    def __init__(self) -> None:
        self._adverts: dict[Endpoint, list[Advert]] = defaultdict(list)
        self._by_call: dict[str, set[Endpoint]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._adverts)

    def update(self, call: CallSignalling) -> list[Endpoint]:
        """Index every audio endpoint of the call's SDPs; returns the newly advertised."""
        new: list[Endpoint] = []
        for sdp in call.media:
            for m in sdp.media:
                ep = m.rtp_endpoint
                if ep is None:
                    continue  # rejected stream, hold, or a name the probe cannot match
                ads = self._adverts[ep]
                mine = [i for i, a in enumerate(ads)
                        if a.call_id == call.call_id and a.side == sdp.side]
                media = describe(m)
                if mine:
                    old = ads[mine[0]]
                    if old.media != media and sdp.ts >= old.ts:
                        ads[mine[0]] = Advert(old.call_id, old.side, old.ts, media)
                    continue
                ads.append(Advert(call.call_id, sdp.side, sdp.ts, media))
                ads.sort(key=lambda a: a.ts)
                self._by_call[call.call_id].add(ep)
                new.append(ep)
        return new

    def remove(self, call_id: str) -> None:
        for ep in self._by_call.pop(call_id, set()):
            ads = [a for a in self._adverts.get(ep, []) if a.call_id != call_id]
            if ads:
                self._adverts[ep] = ads
            else:
                self._adverts.pop(ep, None)

    def endpoints(self, call_id: str) -> set[Endpoint]:
        return set(self._by_call.get(call_id, set()))

    def match(self, src: Endpoint, dst: Endpoint, first_ts: float) -> Match | None:
        """The call a stream from ``src`` to ``dst`` starting at ``first_ts`` belongs to."""
        senders = {(a.call_id, a.side) for a in self._adverts.get(src, [])}
        both = [a for a in self._adverts.get(dst, [])
                if (a.call_id, _other(a.side)) in senders]
        a = _latest_before(both, first_ts)
        if a is not None:
            return Match(a.call_id, a.side, "both", a.media)
        a = _latest_before(self._adverts.get(dst, []), first_ts)
        if a is not None:
            return Match(a.call_id, a.side, "destination", a.media)
        a = _latest_before(self._adverts.get(src, []), first_ts)
        if a is not None:  # it comes *from* the advertiser: it flows to the other side
            return Match(a.call_id, _other(a.side), "source", a.media)
        return None

    def match_key(self, key: StreamKey, first_ts: float) -> Match | None:
        return self.match(key.src_endpoint, key.dst_endpoint, first_ts)

    def media_for(self, src: Endpoint, dst: Endpoint, now: float) -> EndpointMedia | None:
        m = self.match(src, dst, now)
        return None if m is None else m.media


def describe(m: MediaDescription) -> EndpointMedia:
    """What one SDP media section says about media sent to its endpoint. Static types
    keep the registry's entry whether listed bare or restated by an rtpmap (PCMA/8000
    for 8), so one codec has one name whether or not SDP was seen."""
    payloads: dict[int, PayloadInfo] = {}
    for p in m.payloads:
        static = STATIC_PAYLOAD_TYPES.get(p.pt)
        if static is not None and (p.static or static.clock_rate == p.clock_rate_hz):
            payloads[p.pt] = static
        else:
            payloads[p.pt] = payload_info(p.encoding, p.clock_rate_hz or None, p.channels)
    return EndpointMedia(payloads, m.proto, srtp_trailers(m.proto, m.crypto_trailers))


def _latest_before(ads: list[Advert], first_ts: float) -> Advert | None:
    """The newest advertisement made before the stream started (adverts are in time
    order), else the oldest one after it."""
    if not ads:
        return None
    before = [a for a in ads if a.ts <= first_ts + SDP_RACE_S]
    return before[-1] if before else ads[0]


def _other(side: Side) -> Side:
    return Side.CALLEE if side == Side.CALLER else Side.CALLER
