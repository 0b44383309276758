"""Address text forms of the decoded columns (agent/decode/frames.py)."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.decode.frames import addr_to_words, format_addr, format_endpoint


@settings(max_examples=500, deadline=None)
@given(v4=st.integers(0, 2**32 - 1))
def test_ipv4_text_is_what_ipaddress_prints(v4: int) -> None:
    """IPv4 is formatted from the integer (no `IPv4Address` built): the same text."""
    hi, lo = 0, (0xFFFF << 32) | v4
    assert format_addr(hi, lo) == str(ipaddress.IPv4Address(v4))
    assert addr_to_words(format_addr(hi, lo)) == (hi, lo)


@settings(max_examples=300, deadline=None)
@given(value=st.integers(0, 2**128 - 1))
def test_ipv6_text_is_what_ipaddress_prints(value: int) -> None:
    hi, lo = value >> 64, value & 0xFFFFFFFFFFFFFFFF
    want = ipaddress.IPv6Address(value)
    text = str(want.ipv4_mapped) if want.ipv4_mapped is not None else str(want)
    assert format_addr(hi, lo) == text


def test_edges_and_endpoints() -> None:
    mapped = 0xFFFF << 32
    assert format_addr(0, mapped) == "0.0.0.0"
    assert format_addr(0, mapped | 0xFFFFFFFF) == "255.255.255.255"
    assert format_addr(0, mapped | 0x0A000001) == "10.0.0.1"
    assert format_addr(0, 0) == "::"
    assert format_addr(0, 0xFFFFFFFF) == str(ipaddress.IPv6Address(0xFFFFFFFF))  # not mapped
    assert format_endpoint(0, mapped | 0xC6120001, 5060) == "198.18.0.1:5060"
    assert format_endpoint(0x20010DB800000000, 1, 5060) == "[2001:db8::1]:5060"
