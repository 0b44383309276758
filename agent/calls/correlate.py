"""The one media index: which call a stream belongs to, and what its SDP says it carries.

Theory of operation. Every media section (audio, video, image/T.38, application)
of every SDP a dialog carries says
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
newer SDP for the same call and side replaces the description. Entries leave with
their call, and the index is bounded per key as well (`MediaIndex`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from agent.decode.endpoint import Endpoint
from agent.media.description import UDPTL_PT, EndpointMedia, srtp_trailers
from agent.media.payloads import STATIC_PAYLOAD_TYPES, PayloadInfo, payload_info
from agent.rtp.model import StreamKey
from agent.sip.events import CallSignalling, MediaSdp, Side
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


MAX_ADVERTS_PER_ENDPOINT = 16  # calls advertising one endpoint at once (port reuse, forks)
MAX_ENDPOINTS_PER_CALL = 64  # endpoints one call advertises over all its SDPs


@dataclass(slots=True)
class IndexCounters:
    adverts_evicted: int = 0  # an endpoint's oldest advert, dropped for a newer call's
    endpoints_evicted: int = 0  # a call's oldest endpoint, dropped for a newer one

    def as_dict(self) -> dict[str, int]:
        return {"adverts_evicted": self.adverts_evicted,
                "endpoints_evicted": self.endpoints_evicted}


class MediaIndex:
    """Endpoint -> the calls whose SDP advertised it (implements `MediaHints`).

    Bounded per key so every operation costs O(1) whatever the network sends: an
    endpoint keeps its newest ``max_adverts_per_endpoint`` adverts (a scanner's
    INVITEs that all offer one address cannot make a list to walk), a call its newest
    ``max_endpoints_per_call`` endpoints; what is dropped is counted."""

    def __init__(self, max_adverts_per_endpoint: int = MAX_ADVERTS_PER_ENDPOINT,
                 max_endpoints_per_call: int = MAX_ENDPOINTS_PER_CALL) -> None:
        self.max_adverts_per_endpoint = max_adverts_per_endpoint
        self.max_endpoints_per_call = max_endpoints_per_call
        self.counters = IndexCounters()
        self._adverts: dict[Endpoint, list[Advert]] = {}  # each list in time order
        self._by_call: dict[str, dict[Endpoint, None]] = {}  # oldest endpoint first
        self._udptl: dict[Endpoint, int] = {}  # endpoint -> its adverts of T.38 over UDPTL

    def udptl_endpoints(self) -> set[Endpoint]:
        """Endpoints an SDP announced T.38 over UDPTL for (``m=image ... udptl t38``):
        packets sent to them carry a UDPTL header (RFC 3362, T.38 §9.1), not RTP."""
        return set(self._udptl)

    def _count_udptl(self, ep: Endpoint, media: EndpointMedia, step: int) -> None:
        if not media.udptl:
            return
        n = self._udptl.get(ep, 0) + step
        if n > 0:
            self._udptl[ep] = n
        else:
            self._udptl.pop(ep, None)

    def __len__(self) -> int:
        return len(self._adverts)

    def adverts(self) -> int:
        """Adverts held over all endpoints (for the table bounds)."""
        return sum(len(a) for a in self._adverts.values())

    def update(self, call: CallSignalling, sdps: Sequence[MediaSdp] | None = None
               ) -> list[Endpoint]:
        """Index every endpoint of ``sdps`` (default: all the call's SDPs; the call
        layer passes only the ones it has not indexed yet), every m-line; returns the
        newly advertised."""
        new: list[Endpoint] = []
        for sdp in call.media if sdps is None else sdps:
            for m in sdp.media:
                ep = m.rtp_endpoint
                if ep is None:
                    continue  # rejected stream, hold, or a name the probe cannot match
                if self._advertise(ep, Advert(call.call_id, sdp.side, sdp.ts, describe(m))):
                    new.append(ep)
        return new

    def _advertise(self, ep: Endpoint, ad: Advert) -> bool:
        """Add or refresh one advert (O(max_adverts_per_endpoint)); True when new."""
        ads = self._adverts.setdefault(ep, [])
        for i, old in enumerate(ads):
            if old.call_id == ad.call_id and old.side == ad.side:
                if old.media != ad.media and ad.ts >= old.ts:
                    ads[i] = Advert(old.call_id, old.side, old.ts, ad.media)
                    self._count_udptl(ep, old.media, -1)
                    self._count_udptl(ep, ad.media, +1)
                return False
        at = len(ads)
        while at and ads[at - 1].ts > ad.ts:  # in time order (a stable insertion)
            at -= 1
        ads.insert(at, ad)
        self._count_udptl(ep, ad.media, +1)
        mine = self._by_call.setdefault(ad.call_id, {})
        mine[ep] = None
        if len(ads) > self.max_adverts_per_endpoint:
            self.counters.adverts_evicted += 1
            self._drop(ep, ads[0].call_id)
        if len(mine) > self.max_endpoints_per_call:
            self.counters.endpoints_evicted += 1
            self._drop(next(iter(mine)), ad.call_id)
        return ep in self._adverts and any(a is ad for a in self._adverts[ep])

    def _drop(self, ep: Endpoint, call_id: str) -> None:
        """Forget ``call_id``'s adverts of ``ep``."""
        ads = self._adverts.get(ep, [])
        for a in ads:
            if a.call_id == call_id:
                self._count_udptl(ep, a.media, -1)
        kept = [a for a in ads if a.call_id != call_id]
        if kept:
            self._adverts[ep] = kept
        else:
            self._adverts.pop(ep, None)
        mine = self._by_call.get(call_id)
        if mine is not None:
            mine.pop(ep, None)
            if not mine:
                del self._by_call[call_id]

    def remove(self, call_id: str) -> None:
        for ep in list(self._by_call.get(call_id, ())):
            self._drop(ep, call_id)
        self._by_call.pop(call_id, None)

    def endpoints(self, call_id: str) -> set[Endpoint]:
        return set(self._by_call.get(call_id, ()))

    def match(self, src: Endpoint, dst: Endpoint, first_ts: float) -> Match | None:
        """The call a stream from ``src`` to ``dst`` starting at ``first_ts`` belongs to."""
        from_src = self._adverts.get(src)
        to_dst = self._adverts.get(dst, [])
        if from_src is None and not to_dst:  # neither end announced (a flood's flows)
            return None
        senders = {(a.call_id, a.side) for a in from_src or ()}
        both = [a for a in to_dst if (a.call_id, _other(a.side)) in senders]
        a = _latest_before(both, first_ts)
        if a is not None:
            return Match(a.call_id, a.side, "both", a.media)
        a = _latest_before(to_dst, first_ts)
        if a is not None:
            return Match(a.call_id, a.side, "destination", a.media)
        a = _latest_before(from_src or [], first_ts)
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
    if m.proto.lower() == "udptl":  # T.38 over UDPTL: no payload types, one placeholder
        payloads[UDPTL_PT] = payload_info("t38", None)
    for p in m.payloads:
        static = STATIC_PAYLOAD_TYPES.get(p.pt)
        if static is not None and (p.static or static.clock_rate == p.clock_rate_hz):
            payloads[p.pt] = dataclasses.replace(static, fmtp=p.fmtp) if p.fmtp else static
        else:
            payloads[p.pt] = payload_info(p.encoding, p.clock_rate_hz or None, p.channels,
                                          p.fmtp)
    return EndpointMedia(payloads, m.proto, srtp_trailers(m.proto, m.crypto_trailers),
                         m.media.lower())


def _latest_before(ads: list[Advert], first_ts: float) -> Advert | None:
    """The newest advertisement made before the stream started (adverts are in time
    order), else the oldest one after it."""
    if not ads:
        return None
    before = [a for a in ads if a.ts <= first_ts + SDP_RACE_S]
    return before[-1] if before else ads[0]


def _other(side: Side) -> Side:
    return Side.CALLEE if side == Side.CALLER else Side.CALLER
