"""The labels every sink shows a call, a stream or a message by: worked out once, here.

A call record, an interval of a running stream, a stream's end and a SIP request
are shown by the exporter (and the call log, and ``analyze``) under three labels,
all from bounded sets (DESIGN.md rule 6):

- ``peer``: the first configured SLA peer whose networks hold one of the
  addresses, tried in a fixed order (a call: its callee, its caller, then its
  media destinations; a request: its destination, then its source), else
  ``other``;
- ``direction``: ``inbound``/``outbound`` when exactly one end is in
  ``sla.local_networks``, else ``a_to_b`` (toward the callee) / ``b_to_a``;
  ``unknown`` only for a stream whose side nobody knows yet;
- ``codec``: the registry's name of a codec with figures (``PCMA``), RFC 4733
  ``telephone-event`` apart (DTMF is not voice and must not dilute a codec's
  series), ``other`` for any other named codec, ``unknown`` for none.

The call table uses these for its records and its events; the exporter reads the
labels the events carry and never recomputes them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.decode.endpoint import Endpoint
from agent.media.codecs import lookup_codec
from agent.media.payloads import MediaKind, media_kind
from agent.sla.config import OTHER_PEER, Peer
from agent.sla.policy import (
    AddressKey,
    IpNetwork,
    address_key,
    direction_of_keys,
    peer_of_key,
    words_key,
)

OTHER = "other"
UNKNOWN = "unknown"
TELEPHONE_EVENT = "telephone-event"
A_TO_B, B_TO_A = "a_to_b", "b_to_a"
MESSAGE_PEER_CACHE = 4096  # addresses whose peer `message_peer` remembers
DIRECTIONS = frozenset({"inbound", "outbound", A_TO_B, B_TO_A, UNKNOWN})


@dataclass(frozen=True, slots=True)
class StreamLabels:
    """What a stream is shown under: the peer and direction of the call it belongs to
    (the same values as its record's), and its codec label."""

    peer: str = OTHER_PEER
    direction: str = UNKNOWN
    codec: str = UNKNOWN


UNLABELLED = StreamLabels()  # an event built without the table (tests, tools)


def codec_label(name: str | None) -> str:
    """The registry's name for a codec with figures ('pcma' -> 'PCMA'),
    ``telephone-event`` for RFC 4733 events, ``other`` for any other, ``unknown``
    for none."""
    if not name:
        return UNKNOWN
    if media_kind(name) is MediaKind.TELEPHONE_EVENT:
        return TELEPHONE_EVENT
    row = lookup_codec(name)
    return row.name if row.known else OTHER


def peer_label(addrs: Iterable[str | Endpoint], peers: Iterable[Peer]) -> str:
    """The first configured peer holding one of ``addrs`` (addresses as text, or the
    endpoints themselves: no text is made then), tried in order, else ``other``.
    ``addrs`` is not iterated when no peer is configured."""
    peers = tuple(peers)
    if not peers:
        return OTHER_PEER
    for a in addrs:
        p = peer_of_key(_key(a), peers)
        if p != OTHER_PEER:
            return p
    return OTHER_PEER


def _key(a: str | Endpoint) -> AddressKey:
    return address_key(a) if isinstance(a, str) else words_key(a.hi, a.lo)


def direction_label(src: str | Endpoint, dst: str | Endpoint,
                    local_networks: Iterable[IpNetwork], toward_callee: bool | None) -> str:
    """``inbound``/``outbound`` by the local networks, else ``a_to_b`` when the media
    flows toward the callee, ``b_to_a`` toward the caller, ``unknown`` when neither
    is known (``toward_callee`` None). Addresses as text or as the endpoints."""
    d = direction_of_keys(_key(src), _key(dst), local_networks)
    if d is not None:
        return d
    if toward_callee is None:
        return UNKNOWN
    return A_TO_B if toward_callee else B_TO_A


def message_peer(peers: Iterable[Peer]) -> Callable[[Endpoint, Endpoint], str]:
    """The ``peer`` of a SIP message from ``src`` to ``dst``: its destination's
    configured peer, else its source's, else ``other``."""
    bound = tuple(peers)

    # An address's peer, remembered for the few thousand most recent addresses (a SIP
    # flood from random sources evicts, it cannot grow the cache): a lookup walks every
    # peer's networks, once per address rather than once per message.
    @functools.lru_cache(maxsize=MESSAGE_PEER_CACHE)
    def of(hi: int, lo: int) -> str:
        return peer_of_key(words_key(hi, lo), bound)

    def peer(src: Endpoint, dst: Endpoint) -> str:
        if not bound:
            return OTHER_PEER
        p = of(dst.hi, dst.lo)
        return p if p != OTHER_PEER else of(src.hi, src.lo)

    return peer
