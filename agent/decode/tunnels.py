"""Headers of the tunnels that carry mirrored frames: VXLAN, TZSP (over UDP), ERSPAN.

Pure parsers over the packet bytes, used by `slowpath` (the fast path leaves every
datagram to a tunnel port and every GRE packet to the slow path) and by the mirror
listeners (`agent.capture.mirror_listener`, on their receive buffer). Each returns
where the carried frame starts and what it is (`Inner`), so the slow path decodes
it with its ordinary link and IP code and every column (addresses, ports, payload
offsets) is the inner packet's, in the original frame bytes.

Recognition rule for the UDP tunnels: a datagram to one of the configured
destination ports (`TunnelPorts`) is a tunnel only when its whole header is valid
and captured; anything else is the plain UDP it is. RTP may well use port 37008 or
4789, so nothing is dropped for its port alone. Only the destination port counts:
a VXLAN sender picks its source port from a hash of the inner flow (RFC 7348 §5),
a TZSP sender an ephemeral one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from agent.decode import layouts as L

UNSUPPORTED = -1  # `Inner.link` of a valid tunnel carrying what decode does not read


@dataclass(frozen=True, slots=True)
class TunnelPorts:
    """UDP destination ports tried as VXLAN (IANA 4789; Linux's old default is 8472)
    and as TZSP (37008, MikroTik's sniffer stream; some setups pick another)."""

    vxlan: frozenset[int] = frozenset({4789})
    tzsp: frozenset[int] = frozenset({37008})
    all: frozenset[int] = field(init=False)  # either kind: looked up per UDP packet

    def __post_init__(self) -> None:
        object.__setattr__(self, "all", self.vxlan | self.tzsp)

    @classmethod
    def of(cls, vxlan: Iterable[int], tzsp: Iterable[int]) -> TunnelPorts:
        return cls(frozenset(int(p) for p in vxlan), frozenset(int(p) for p in tzsp))


class Inner(NamedTuple):
    """A carried frame at ``pos``: ``link`` is a link type (LT_ETHERNET, LT_RAW) or
    `UNSUPPORTED`."""

    pos: int
    link: int


def vxlan(buf: bytes | bytearray, pos: int, end: int) -> Inner | None:
    """RFC 7348 §5 header at ``pos`` (UDP payload) in a datagram ending at ``end``.

    Reserved bits are ignored on receipt, as §5 says; the I flag must be set.
    """
    inner = pos + L.VXLAN_HDR_LEN
    if inner > min(end, len(buf)) or not buf[pos] & L.VXLAN_FLAG_I:
        return None
    return Inner(inner, L.LT_ETHERNET)


def tzsp(buf: bytes | bytearray, pos: int, end: int) -> Inner | None:
    """TZSP header and tag list at ``pos``; None unless both are valid and captured."""
    stop = min(end, len(buf))
    if pos + L.TZSP_HDR.size > stop:
        return None
    version, kind, encap = L.TZSP_HDR.unpack_from(buf, pos)
    if version != L.TZSP_VERSION or kind not in L.TZSP_FRAME_TYPES:
        return None
    pos += L.TZSP_HDR.size
    for _ in range(L.TZSP_MAX_TAGS):
        if pos >= stop:
            return None
        tag = buf[pos]
        if tag == L.TZSP_TAG_END:
            link = L.LT_ETHERNET if encap == L.TZSP_ENCAP_ETHERNET else UNSUPPORTED
            return Inner(pos + 1, link)
        if tag == L.TZSP_TAG_PADDING:
            pos += 1
        elif pos + 2 > stop:
            return None
        else:
            pos += 2 + buf[pos + 1]
    return None


def gre_erspan(buf: bytes, pos: int, ptype: int, gre_flags: int) -> Inner:
    """The mirrored frame after GRE protocol ``ptype`` (0x88BE or 0x22EB) at ``pos``.

    Type I has no ERSPAN header and no GRE sequence number; type II sets GRE's S
    bit and has an 8-byte header; type III (0x22EB) has 12 bytes, 8 more when its
    O bit says a platform-specific sub-header follows. Raises struct.error when
    the type III header is not captured (the slow path checks first).
    """
    if ptype == L.ETH_ERSPAN_II:
        return Inner(pos + (L.ERSPAN_II_LEN if gre_flags & 0x1000 else 0), L.LT_ETHERNET)
    # last 16 bits: P(1) FT(5) HW ID(6) D(1) Gra(2) O(1)
    (word,) = L.U16.unpack_from(buf, pos + L.ERSPAN_III_LEN - 2)
    start = pos + L.ERSPAN_III_LEN + (L.ERSPAN_III_PLATFORM_LEN if word & 1 else 0)
    frame_type = (word >> 10) & 0x1F
    if frame_type == L.ERSPAN_FT_ETHERNET:
        return Inner(start, L.LT_ETHERNET)
    if frame_type == L.ERSPAN_FT_IP:
        return Inner(start, L.LT_RAW)
    return Inner(start, UNSUPPORTED)
