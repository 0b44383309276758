"""Peer and direction labels from endpoints or from address text (agent/calls/labels.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.calls.labels import direction_label, message_peer, peer_label
from agent.decode.endpoint import Endpoint
from agent.sla.config import Peer

NETS = [ipaddress.ip_network(n) for n in ("198.18.0.0/16", "10.1.0.0/16", "2001:db8::/32")]
PEERS = (
    Peer(name="carrier", networks=(ipaddress.ip_network("198.19.0.0/24"),)),
    Peer(name="v6", networks=(ipaddress.ip_network("2001:db8:ff::/48"),
                              ipaddress.ip_network("198.18.7.0/24"))),
)
_EP = st.one_of(
    st.builds(lambda a, p: Endpoint(0, (0xFFFF << 32) | a, p),
              st.sampled_from([0xC6120001, 0xC6120701, 0xC6130005, 0x0A010203, 0x08080808]),
              st.integers(1, 65535)),
    st.builds(lambda lo, p: Endpoint(0x20010DB800FF0000, lo, p),
              st.integers(0, 2**64 - 1), st.integers(1, 65535)),
    st.builds(lambda hi, lo: Endpoint(hi, lo, 5060),
              st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
)


@settings(max_examples=300, deadline=None)
@given(eps=st.lists(_EP, max_size=4), src=_EP, dst=_EP, toward=st.sampled_from([None, True, False]))
def test_endpoints_label_as_their_text_does(eps: list[Endpoint], src: Endpoint, dst: Endpoint,
                                            toward: bool | None) -> None:
    for peers in ((), PEERS):
        assert peer_label(eps, peers) == peer_label([e.addr for e in eps], peers)
    assert (direction_label(src, dst, NETS, toward)
            == direction_label(src.addr, dst.addr, NETS, toward))
    of = message_peer(PEERS)
    assert of(src, dst) == peer_label([dst.addr, src.addr], PEERS)


def test_addresses_are_not_looked_at_without_peers() -> None:
    def never() -> Iterator[str]:
        raise AssertionError("iterated")
        yield ""

    assert peer_label(never(), ()) == "other"
    assert peer_label([Endpoint(0, (0xFFFF << 32) | 0xC6130001, 5060)], PEERS) == "carrier"
