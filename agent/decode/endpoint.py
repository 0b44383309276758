"""`Endpoint`: an IP address and a port, the one address type of the probe.

The address is kept as the two 64-bit words the decoder produces (IPv4 as an
IPv4-mapped IPv6 address), so an endpoint from a packet, from an SDP line
("c=IN IP6 2001:DB8::1", any valid spelling) and from a stream key compare and
hash alike. `addr` and `str()` give the text forms (``198.18.0.1:5060``,
``[2001:db8::1]:5060``); nothing parses them back.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from agent.decode.frames import addr_to_words, format_addr, format_endpoint


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """(address words, port). Build one from text with `Endpoint.of`."""

    hi: int
    lo: int
    port: int

    @classmethod
    def of(cls, addr: str, port: int) -> Endpoint:
        """From an IP literal (v4 or v6, any spelling); ValueError when it is not one."""
        hi, lo = addr_to_words(addr)
        return cls(hi, lo, int(port))

    @property
    def addr(self) -> str:
        """The address as `ipaddress` prints it (IPv4-mapped shown as a dotted quad)."""
        return format_addr(self.hi, self.lo)

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.addr)

    @property
    def is_unspecified(self) -> bool:
        """0.0.0.0 or :: (RFC 2543 hold: nothing is sent there)."""
        return self.lo in (0, 0xFFFF << 32) and self.hi == 0

    def __str__(self) -> str:
        return format_endpoint(self.hi, self.lo, self.port)


def with_rtcp_ports(eps: Iterable[Endpoint]) -> set[Endpoint]:
    """The endpoints and, beside each, its RTCP port (RTP port + 1, RFC 3550 §11): what
    media to an endpoint may bring, RTP and RTCP both."""
    out: set[Endpoint] = set()
    for e in eps:
        out.update((e, Endpoint(e.hi, e.lo, e.port + 1)))
    return out
