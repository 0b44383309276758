"""The allowed senders every collector socket shares: verdicts and addresses as the
decoder holds them, a bounded cache."""

from __future__ import annotations

import ipaddress

from agent.capture.listen import AllowedSenders


def test_allowed_senders_give_the_decoders_address() -> None:
    s = AllowedSenders(["198.18.7.0/24", "2001:db8::/32"])
    v4 = int(ipaddress.IPv6Address("::ffff:198.18.7.10"))
    assert s.address("198.18.7.10") == v4
    assert s.address("::ffff:198.18.7.10") == v4  # a dual-stack socket's view of it
    assert s.address("2001:db8::5%eth0") == int(ipaddress.IPv6Address("2001:db8::5"))
    assert s.address("198.18.8.1") is None and not s.allowed("198.18.8.1")
    assert s.address("not an address") is None
    assert AllowedSenders([]).address("198.18.7.10") is None  # nobody unless named


def test_the_verdict_cache_is_bounded() -> None:
    s = AllowedSenders(["10.0.0.0/8"])
    for i in range(10_000):
        assert s.allowed(f"10.{i >> 8 & 255}.{i & 255}.1")
    assert len(s._verdicts) <= 4096
