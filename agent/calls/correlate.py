"""Which call a stream belongs to: SDP endpoints indexed by address and port.

Theory of operation. Every audio section of every SDP a dialog carries says
"send my media to this address and port". A stream whose *destination* is such
an endpoint belongs to that call and flows toward the side that advertised it
— whatever its source address, so media from behind a NAT (arriving from an
address the SDP never named) is latched by where it goes. A stream whose
*source* is an advertised endpoint (symmetric RTP: phones send from the port
they receive on) is the fallback when the destination was rewritten.

Ports are reused: a later call may advertise an endpoint an earlier one used.
Each endpoint keeps the calls that advertised it, in time order; a stream goes
to the newest advertisement made before the stream started (with a little
slack for an answer that races its first packets), else the oldest later one.
The index is bounded by the call table: entries leave when their call does.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import defaultdict
from dataclasses import dataclass

from agent.rtp.model import StreamKey
from agent.sip.events import CallSignalling, Side

SDP_RACE_S = 2.0  # media may start this long before the SDP that announces it is seen


@dataclass(frozen=True, slots=True)
class Advert:
    call_id: str
    side: Side  # who advertised the endpoint: media sent to it flows toward this side
    ts: float


@dataclass(frozen=True, slots=True)
class Match:
    call_id: str
    toward: Side  # the side the stream flows to
    by: str  # "both" ends advertised, "destination", or "source" (symmetric RTP fallback)


Key = tuple[str, int]


class MediaIndex:
    """(address, port) -> the calls whose SDP advertised it."""

    def __init__(self) -> None:
        self._adverts: dict[Key, list[Advert]] = defaultdict(list)
        self._by_call: dict[str, set[Key]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._adverts)

    def update(self, call: CallSignalling) -> list[Key]:
        """Index every audio endpoint of the call's SDPs; returns the new ones."""
        new: list[Key] = []
        for sdp in call.media:
            for m in sdp.media:
                addr = m.address
                if addr is None or m.rtp_port == 0 or addr in ("0.0.0.0", "::"):
                    continue  # rejected stream, or RFC 2543 hold: nothing is sent there
                key = (_norm(addr), m.rtp_port)
                ads = self._adverts[key]
                if any(a.call_id == call.call_id and a.side == sdp.side for a in ads):
                    continue
                ads.append(Advert(call.call_id, sdp.side, sdp.ts))
                ads.sort(key=lambda a: a.ts)
                self._by_call[call.call_id].add(key)
                new.append(key)
        return new

    def remove(self, call_id: str) -> None:
        for key in self._by_call.pop(call_id, set()):
            ads = [a for a in self._adverts.get(key, []) if a.call_id != call_id]
            if ads:
                self._adverts[key] = ads
            else:
                self._adverts.pop(key, None)

    def endpoints(self, call_id: str) -> set[Key]:
        return set(self._by_call.get(call_id, set()))

    def match(self, src: Key, dst: Key, first_ts: float) -> Match | None:
        """The call a stream from ``src`` to ``dst`` starting at ``first_ts`` belongs to."""
        # Both ends advertised by the two sides of one call: the strongest evidence,
        # and what tells calls apart when one side reuses its port for every call.
        senders = {(a.call_id, a.side) for a in self._adverts.get(src, [])}
        both = [a for a in self._adverts.get(dst, [])
                if (a.call_id, _other(a.side)) in senders]
        a = _latest_before(both, first_ts)
        if a is not None:
            return Match(a.call_id, a.side, "both")
        a = self._pick(dst, first_ts)
        if a is not None:
            return Match(a.call_id, a.side, "destination")
        a = self._pick(src, first_ts)
        if a is not None:  # it comes *from* the advertiser: it flows to the other side
            return Match(a.call_id, _other(a.side), "source")
        return None

    def match_key(self, key: StreamKey, first_ts: float) -> Match | None:
        src = (_norm(key.src.rsplit(":", 1)[0].strip("[]")), key.sport)
        dst = (_norm(key.dst.rsplit(":", 1)[0].strip("[]")), key.dport)
        return self.match(src, dst, first_ts)

    def _pick(self, key: Key, first_ts: float) -> Advert | None:
        return _latest_before(self._adverts.get(key, []), first_ts)


def _latest_before(ads: list[Advert], first_ts: float) -> Advert | None:
    """The newest advertisement made before the stream started (adverts are in time
    order), else the oldest one after it."""
    if not ads:
        return None
    before = [a for a in ads if a.ts <= first_ts + SDP_RACE_S]
    return before[-1] if before else ads[0]


def _other(side: Side) -> Side:
    return Side.CALLEE if side == Side.CALLER else Side.CALLER


@functools.lru_cache(maxsize=8192)  # addresses recur in every SDP and stream of a call
def _norm(addr: str) -> str:
    """One spelling per address (SDP may write IPv6 in any valid form)."""
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        return addr.lower()
