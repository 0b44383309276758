"""Per-packet reference decoder: every shape decode understands, in plain Python.

This is the readable twin of `fastpath` (DESIGN rule 5): it fills exactly the same
columns under exactly the same rules, and the vectorised path hands it every
packet it cannot prove it handles. It also owns what only makes sense per packet:
IP fragment reassembly, tunnels (IP-in-IP, GRE, ERSPAN, PPPoE), IPv6 extension
headers and BSD loopback, and the UDP tunnels (VXLAN, TZSP) on their configured
destination ports (`tunnels` says when a datagram is one).

Rules shared with the fast path (the comparison test holds both to them):
- ``wire_end`` = max(wirelen, caplen) measured from the packet start; an IP length
  that reaches past it is a lie -> ``truncated``; past the captured bytes it is a
  snaplen cut -> the payload is clipped.
- L4 headers must fit in the IP payload (else ``bad_l4_header``) and be captured
  (else ``truncated``); UDP payload = min(UDP length, IP payload, captured) - 8.
- VLAN/PCP come from the innermost Ethernet header's innermost tag.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from agent.capture.batch import Batch
from agent.capture.points import exporter_point
from agent.decode import layouts as L
from agent.decode.counters import DecodeCounters
from agent.decode.fragments import Reassembler
from agent.decode.sequence import GreSequences
from agent.decode.tunnels import Inner, TunnelPorts
from agent.decode.tunnels import gre_erspan as _gre_erspan
from agent.decode.tunnels import tzsp as _tzsp
from agent.decode.tunnels import vxlan as _vxlan

MAX_TUNNEL_DEPTH = 4  # encapsulations peeled per packet; more is an attack or a loop
V4_MAPPED = 0xFFFF << 32

# pkt, ip_version, src, dst, sport, dport, proto, dscp, ecn, vlan, pcp,
# payload_off, payload_len, tcp_seq, tcp_flags, point, payload_sent
Row = tuple[int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, int]


class _Drop(Exception):  # internal control flow, never escapes decode
    """A packet is dropped for ``reason`` (a `DecodeCounters` field name)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Ip(NamedTuple):
    version: int
    src: int
    dst: int
    dscp: int
    ecn: int


@dataclass(slots=True)
class _Ctx:
    pkt: int
    ts: float
    base: int  # absolute position in Frames.data of buf[0]
    vlan: int = -1
    pcp: int = -1
    depth: int = 0
    point: int = 0  # observation point: the batch's, or the exporter of a mirror tunnel


def _need(buf: bytes, end: int) -> None:
    if end > len(buf):
        raise _Drop("truncated")


class SlowPath:
    """Decodes packets one by one; one instance per `Decoder` (it shares the fragment table)."""

    def __init__(
        self, counters: DecodeCounters, reassembler: Reassembler,
        tunnel_ports: TunnelPorts | None = None,
    ) -> None:
        self._counters = counters
        self._reasm = reassembler
        self.sequences = GreSequences(counters)
        self.tunnel_ports = tunnel_ports if tunnel_ports is not None else TunnelPorts()
        self._appended: list[bytes] = []
        self._next_base = 0

    def run(
        self, batch: Batch, indices: npt.NDArray[np.int64]
    ) -> tuple[list[Row], list[bytes]]:
        """Rows for packets ``indices`` (ascending) and the reassembled bytes to append."""
        self._appended = []
        self._next_base = int(batch.data.shape[0])
        rows: list[Row] = []
        data = batch.data
        points = batch.point
        for i in indices.tolist():
            start, cap = int(batch.offset[i]), max(int(batch.caplen[i]), 0)
            buf = data[start : start + cap].tobytes()
            ctx = _Ctx(pkt=i, ts=float(batch.ts[i]), base=start, point=int(points[i]))
            wire_end = max(int(batch.wirelen[i]), cap)
            try:
                row = self._link(buf, int(batch.linktype[i]), ctx, wire_end)
            except _Drop as drop:
                self._counters.add(drop.reason)
                continue
            except (struct.error, IndexError):  # defence in depth: a missed length check
                self._counters.truncated += 1
                continue
            if row is not None:
                rows.append(row)
        return rows, self._appended

    # -- link layer -------------------------------------------------------------------

    def _link(self, buf: bytes, lt: int, ctx: _Ctx, wire_end: int) -> Row | None:
        if lt == L.LT_ETHERNET:
            return self._ethernet(buf, 0, ctx, wire_end)
        if lt == L.LT_LINUX_SLL:
            _need(buf, L.SLL_HDR_LEN)
            (proto,) = L.U16.unpack_from(buf, L.SLL_PROTO_OFF)
            return self._ethertype(buf, L.SLL_HDR_LEN, proto, ctx, wire_end)
        if lt == L.LT_LINUX_SLL2:
            _need(buf, L.SLL2_HDR_LEN)
            (proto,) = L.U16.unpack_from(buf, L.SLL2_PROTO_OFF)
            return self._ethertype(buf, L.SLL2_HDR_LEN, proto, ctx, wire_end)
        if lt in L.RAW_LINKTYPES:
            return self._raw_ip(buf, 0, ctx, wire_end)
        if lt == L.LT_IPV4:
            return self._ipv4(buf, 0, ctx, wire_end)
        if lt == L.LT_IPV6:
            return self._ipv6(buf, 0, ctx, wire_end)
        if lt in (L.LT_NULL, L.LT_LOOP):
            return self._loopback(buf, lt, ctx, wire_end)
        raise _Drop("unsupported_linktype")

    def _raw_ip(self, buf: bytes, pos: int, ctx: _Ctx, wire_end: int) -> Row | None:
        _need(buf, pos + 1)
        version = buf[pos] >> 4
        if version == 4:
            return self._ipv4(buf, pos, ctx, wire_end)
        if version == 6:
            return self._ipv6(buf, pos, ctx, wire_end)
        raise _Drop("bad_ip_header")

    def _loopback(self, buf: bytes, lt: int, ctx: _Ctx, wire_end: int) -> Row | None:
        _need(buf, 4)
        (family,) = L.U32.unpack_from(buf, 0)
        if lt == L.LT_NULL:
            # DLT_NULL stores the family in the capturing host's byte order, which the
            # file does not record: accept whichever order gives a known family.
            (little,) = L.U32_LE.unpack_from(buf, 0)
            if little == L.AF_INET or little in L.AF_INET6:
                family = little
        if family == L.AF_INET:
            return self._ipv4(buf, 4, ctx, wire_end)
        if family in L.AF_INET6:
            return self._ipv6(buf, 4, ctx, wire_end)
        raise _Drop("not_ip")

    def _ethernet(self, buf: bytes, pos: int, ctx: _Ctx, wire_end: int) -> Row | None:
        _need(buf, pos + L.ETH_HDR.size)
        (ethertype,) = L.U16.unpack_from(buf, pos + 12)
        pos += L.ETH_HDR.size
        ctx.vlan = ctx.pcp = -1
        # 802.1Q / 802.1ad tags may stack (QinQ); the innermost one is the customer VLAN.
        while ethertype in L.VLAN_TPIDS:
            _need(buf, pos + L.VLAN_TAG.size)
            tci, ethertype = L.VLAN_TAG.unpack_from(buf, pos)
            ctx.vlan, ctx.pcp = tci & 0x0FFF, tci >> 13
            pos += L.VLAN_TAG.size
        return self._ethertype(buf, pos, ethertype, ctx, wire_end)

    def _ethertype(
        self, buf: bytes, pos: int, ethertype: int, ctx: _Ctx, wire_end: int
    ) -> Row | None:
        if ethertype == L.ETH_IPV4:
            return self._ipv4(buf, pos, ctx, wire_end)
        if ethertype == L.ETH_IPV6:
            return self._ipv6(buf, pos, ctx, wire_end)
        if ethertype == L.ETH_PPPOE_SESSION:
            _need(buf, pos + L.PPPOE_HDR.size)
            _vt, code, _sid, _length, _ppp = L.PPPOE_HDR.unpack_from(buf, pos)
            if code != 0:  # RFC 2516 §5: session data has code 0
                raise _Drop("not_ip")
            return self._ppp(buf, pos + 6, ctx, wire_end, "not_ip")
        raise _Drop("not_ip")

    def _ppp(
        self, buf: bytes, pos: int, ctx: _Ctx, wire_end: int, other: str
    ) -> Row | None:
        """PPP frame (RFC 1661 §2) with optional address/control (RFC 1662) and PFC."""
        _need(buf, pos + 2)
        if buf[pos] == 0xFF and buf[pos + 1] == 0x03:
            pos += 2
            _need(buf, pos + 1)
        if buf[pos] & 1:  # protocol field compression: odd first octet = 1-octet field
            proto, pos = buf[pos], pos + 1
        else:
            _need(buf, pos + 2)
            (proto,) = L.U16.unpack_from(buf, pos)
            pos += 2
        if proto == L.PPP_IPV4:
            return self._ipv4(buf, pos, ctx, wire_end)
        if proto == L.PPP_IPV6:
            return self._ipv6(buf, pos, ctx, wire_end)
        raise _Drop(other)

    # -- network layer ----------------------------------------------------------------

    def _ipv4(self, buf: bytes, pos: int, ctx: _Ctx, wire_end: int) -> Row | None:
        _need(buf, pos + L.IPV4_HDR.size)
        vihl, tos, total, ident, frag, _ttl, proto, _csum, src, dst = L.IPV4_HDR.unpack_from(
            buf, pos
        )
        hlen = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or hlen < 20 or total < hlen:
            raise _Drop("bad_ip_header")
        end = pos + total
        if end > wire_end:
            raise _Drop("truncated")  # the length lies about what was on the wire
        _need(buf, pos + hlen)
        ip = _Ip(
            4, V4_MAPPED | int.from_bytes(src, "big"), V4_MAPPED | int.from_bytes(dst, "big"),
            tos >> 2, tos & 3,
        )
        more, offset = bool(frag & 0x2000), (frag & 0x1FFF) * 8
        if not more and offset == 0:
            return self._transport(buf, pos + hlen, end, proto, ip, ctx)
        _need(buf, end)  # a fragment cut by the snaplen cannot be reassembled
        if offset + total > 0xFFFF:  # "ping of death": datagram beyond the IPv4 maximum
            raise _Drop("fragments_bad")
        key = (4, ip.src, ip.dst, proto, ident)
        done = self._reasm.add(key, ctx.ts, offset, more, buf[pos + hlen : end], proto)
        if done is None:
            return None
        payload, sub = self._append(done[1], ctx)
        return self._transport(payload, 0, len(payload), done[0], ip, sub)

    def _ipv6(self, buf: bytes, pos: int, ctx: _Ctx, wire_end: int) -> Row | None:
        _need(buf, pos + L.IPV6_HDR.size)
        vtf, plen, nxt, _hops, src, dst = L.IPV6_HDR.unpack_from(buf, pos)
        if vtf >> 28 != 6 or plen == 0:  # plen 0 = RFC 2675 jumbogram: not on VoIP links
            raise _Drop("bad_ip_header")
        end = pos + L.IPV6_HDR.size + plen
        if end > wire_end:
            raise _Drop("truncated")
        tclass = (vtf >> 20) & 0xFF
        ip = _Ip(6, int.from_bytes(src, "big"), int.from_bytes(dst, "big"), tclass >> 2, tclass & 3)
        return self._ipv6_chain(buf, pos + L.IPV6_HDR.size, end, nxt, ip, ctx, True)

    def _ipv6_chain(
        self, buf: bytes, pos: int, end: int, nxt: int, ip: _Ip, ctx: _Ctx, frag_ok: bool
    ) -> Row | None:
        """Walk RFC 8200 §4 extension headers to the upper layer."""
        while True:
            if pos + 8 > end and nxt in (*L.IPV6_GENERIC_EXT, L.IPPROTO_AH, L.IPPROTO_FRAGMENT):
                raise _Drop("bad_ip_header")
            if nxt in L.IPV6_GENERIC_EXT:
                _need(buf, pos + 2)
                nxt, length = L.IPV6_EXT.unpack_from(buf, pos)
                pos += (length + 1) * 8
            elif nxt == L.IPPROTO_AH:  # RFC 4302 §2.2: length in 4-octet units, minus 2
                _need(buf, pos + 2)
                nxt, length = L.IPV6_EXT.unpack_from(buf, pos)
                pos += (length + 2) * 4
            elif nxt == L.IPPROTO_FRAGMENT:
                if not frag_ok:
                    raise _Drop("bad_ip_header")
                _need(buf, pos + L.IPV6_FRAG.size)
                inner, _res, offflags, ident = L.IPV6_FRAG.unpack_from(buf, pos)
                pos += L.IPV6_FRAG.size
                if offflags & 0xFFF9 == 0:  # RFC 6946 atomic fragment: not fragmented
                    nxt = inner
                    continue
                return self._ipv6_fragment(buf, pos, end, inner, offflags, ident, ip, ctx)
            else:
                break
            if pos > end:
                raise _Drop("bad_ip_header")
        return self._transport(buf, pos, end, nxt, ip, ctx)

    def _ipv6_fragment(
        self, buf: bytes, pos: int, end: int, inner: int, offflags: int, ident: int,
        ip: _Ip, ctx: _Ctx,
    ) -> Row | None:
        _need(buf, end)
        key = (6, ip.src, ip.dst, 0, ident)  # RFC 8200 §4.5: src, dst, identification
        done = self._reasm.add(key, ctx.ts, offflags & 0xFFF8, bool(offflags & 1),
                               buf[pos:end], inner)
        if done is None:
            return None
        payload, sub = self._append(done[1], ctx)
        # The fragmentable part may start with more extension headers (e.g. dest opts).
        return self._ipv6_chain(payload, 0, len(payload), done[0], ip, sub, False)

    def _append(self, payload: bytes, ctx: _Ctx) -> tuple[bytes, _Ctx]:
        """Place a reassembled payload after the batch buffer; ctx rebased onto it."""
        sub = replace(ctx, base=self._next_base)
        self._appended.append(payload)
        self._next_base += len(payload)
        return payload, sub

    # -- transport layer and tunnels --------------------------------------------------

    def _transport(
        self, buf: bytes, pos: int, end: int, proto: int, ip: _Ip, ctx: _Ctx
    ) -> Row | None:
        if proto == L.IPPROTO_UDP:
            return self._udp(buf, pos, end, ip, ctx)
        if proto == L.IPPROTO_TCP:
            return self._tcp(buf, pos, end, ip, ctx)
        if proto in (L.IPPROTO_IPIP, L.IPPROTO_IPV6, L.IPPROTO_GRE):
            self._enter_tunnel(ctx)
            if proto == L.IPPROTO_IPIP:  # RFC 2003; the inner packet must fit the outer
                return self._ipv4(buf, pos, ctx, end)
            if proto == L.IPPROTO_IPV6:  # RFC 4213 §3.5
                return self._ipv6(buf, pos, ctx, end)
            return self._gre(buf, pos, end, ip, ctx)
        raise _Drop("not_udp_tcp")

    def _enter_tunnel(self, ctx: _Ctx) -> None:
        ctx.depth += 1
        if ctx.depth > MAX_TUNNEL_DEPTH:
            raise _Drop("tunnel_too_deep")
        self._counters.tunnels_decapsulated += 1

    def _inner(self, buf: bytes, inner: Inner, ctx: _Ctx, end: int) -> Row | None:
        """The frame a tunnel carries, decoded like any other (its end bounds it)."""
        if inner.link == L.LT_ETHERNET:
            return self._ethernet(buf, inner.pos, ctx, end)
        if inner.link == L.LT_RAW:
            return self._raw_ip(buf, inner.pos, ctx, end)
        raise _Drop("tunnel_unsupported")

    def _udp_tunnel(self, buf: bytes, pos: int, end: int, dport: int, ip: _Ip,
                    ctx: _Ctx) -> Inner | None:
        """The frame a VXLAN or TZSP datagram carries; the packet's point becomes the
        exporter's (sender address, and VNI for VXLAN)."""
        ports = self.tunnel_ports
        found = _vxlan(buf, pos, end) if dport in ports.vxlan else None
        if found is not None:
            vni = int.from_bytes(buf[pos + 4 : pos + 7], "big")
            ctx.point = exporter_point("vxlan", ip.src, f"vni{vni}")
        elif dport in ports.tzsp:
            found = _tzsp(buf, pos, end)
            if found is not None:
                ctx.point = exporter_point("tzsp", ip.src)
        return found

    def _udp(self, buf: bytes, pos: int, end: int, ip: _Ip, ctx: _Ctx) -> Row | None:
        if pos + L.UDP_HDR.size > end:
            raise _Drop("bad_l4_header")
        _need(buf, pos + L.UDP_HDR.size)
        sport, dport, length, _csum = L.UDP_HDR.unpack_from(buf, pos)
        if length < L.UDP_HDR.size:
            raise _Drop("bad_l4_header")
        if dport in self.tunnel_ports.all:
            dgram_end = min(pos + length, end)
            inner = self._udp_tunnel(buf, pos + L.UDP_HDR.size, dgram_end, dport, ip, ctx)
            if inner is not None:
                self._enter_tunnel(ctx)
                return self._inner(buf, inner, ctx, dgram_end)
        avail = min(length, end - pos, len(buf) - pos) - L.UDP_HDR.size
        return (ctx.pkt, ip.version, ip.src, ip.dst, sport, dport, L.IPPROTO_UDP, ip.dscp,
                ip.ecn, ctx.vlan, ctx.pcp, ctx.base + pos + 8, avail, 0, 0, ctx.point,
                length - L.UDP_HDR.size)

    def _tcp(self, buf: bytes, pos: int, end: int, ip: _Ip, ctx: _Ctx) -> Row:
        if pos + L.TCP_HDR.size > end:
            raise _Drop("bad_l4_header")
        _need(buf, pos + L.TCP_HDR.size)
        sport, dport, seq, _ack, offbyte, flags = L.TCP_HDR.unpack_from(buf, pos)
        hlen = (offbyte >> 4) * 4
        if hlen < 20 or pos + hlen > end:
            raise _Drop("bad_l4_header")
        _need(buf, pos + hlen)
        avail = min(end, len(buf)) - pos - hlen
        return (ctx.pkt, ip.version, ip.src, ip.dst, sport, dport, L.IPPROTO_TCP, ip.dscp,
                ip.ecn, ctx.vlan, ctx.pcp, ctx.base + pos + hlen, avail, seq, flags, ctx.point,
                end - pos - hlen)

    def _gre(self, buf: bytes, pos: int, end: int, ip: _Ip, ctx: _Ctx) -> Row | None:
        """GRE (RFC 2784/2890, PPTP's enhanced GRE RFC 2637 §4.1) and what it carries.

        A mirror (ERSPAN, or GRETAP/NVGRE bridging frames) moves the packet's point to
        the exporter: sender address plus ERSPAN session or GRE key, and its GRE
        sequence number (when the S bit is set) counts the copies lost on the way
        (`agent.decode.sequence`). GRE carrying IP is a routed tunnel: the packet
        stays where it was seen."""
        _need(buf, pos + L.GRE_HDR.size)
        flags, ptype = L.GRE_HDR.unpack_from(buf, pos)
        version = flags & 7
        if version == 0 and not flags & 0x4000:  # routing present (RFC 1701): unsupported
            hlen = 4 + 4 * sum(1 for bit in (0x8000, 0x2000, 0x1000) if flags & bit)
        elif version == 1:  # key always present; sequence and ack optional
            hlen = 8 + 4 * sum(1 for bit in (0x1000, 0x0080) if flags & bit)
        else:
            raise _Drop("not_udp_tcp")
        pos += hlen
        if ptype == L.ETH_IPV4:
            return self._ipv4(buf, pos, ctx, end)
        if ptype == L.ETH_IPV6:
            return self._ipv6(buf, pos, ctx, end)
        if ptype == L.ETH_TEB:
            at = pos - hlen + (8 if flags & 0x8000 else 4)  # the key follows the checksum
            key = (f"k{int.from_bytes(buf[at : at + 4], 'big')}"
                   if version == 0 and flags & 0x2000 else "")
            ctx.point = exporter_point("gretap", ip.src, key)
            self._sequence(buf, pos - hlen, flags, ctx.point)
            return self._ethernet(buf, pos, ctx, end)
        if ptype in (L.ETH_ERSPAN_II, L.ETH_ERSPAN_III):  # types I and II share 0x88BE
            headed = ptype == L.ETH_ERSPAN_III or flags & 0x1000  # type I: no header
            _need(buf, pos + (L.ERSPAN_III_LEN if ptype == L.ETH_ERSPAN_III
                              else L.ERSPAN_II_LEN if headed else 0))
            session = (f"s{int.from_bytes(buf[pos + 2 : pos + 4], 'big') & 0x3FF}"
                       if headed else "")
            ctx.point = exporter_point("erspan", ip.src, session)
            self._sequence(buf, pos - hlen, flags, ctx.point)
            return self._inner(buf, _gre_erspan(buf, pos, ptype, flags), ctx, end)
        if ptype == L.ETH_PPP_GRE:
            return self._ppp(buf, pos, ctx, end, "not_udp_tcp")
        raise _Drop("not_udp_tcp")

    def _sequence(self, buf: bytes, start: int, flags: int, point: int) -> None:
        """A mirror's GRE sequence number (S bit; RFC 2890 §2.2: after the checksum and
        key words) -> the session's loss count (`GreSequences`)."""
        if flags & 0x1000 and not flags & 7:
            at = start + 4 + (4 if flags & 0x8000 else 0) + (4 if flags & 0x2000 else 0)
            _need(buf, at + 4)
            (seq,) = L.U32.unpack_from(buf, at)
            self.sequences.observe(point, seq)
