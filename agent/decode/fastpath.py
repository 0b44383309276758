"""Vectorised decode of the common shapes, for a whole batch at once.

Shapes handled: Ethernet with 0..2 VLAN tags, Linux SLL/SLL2 or raw IP (LINKTYPE
101/12/14/228/229), then IPv4 (options allowed, not a fragment) or IPv6 without
extension headers, then UDP (not to a tunnel port) or TCP. A packet is
*claimed* only when every check that `slowpath` would make passes; everything
else (drops included) is left to the slow path, so the two paths agree by
construction and the comparison test holds them to it.

All bytes are gathered with ``np.take(..., mode="clip")`` at ``offset + k``: a
read past a short packet lands in the next packet (or is clipped at the end of
the buffer) and is harmless, because the claim masks require the caplen to cover
every byte that was read.

A layer's fixed fields are read from one block per packet: the header's bytes
gathered as one 16- or 4-byte item per row (`windows`), then taken apart column by
column in cache, rather than one pass over the whole batch buffer per byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.capture.batch import Batch
from agent.decode import layouts as L
from agent.decode.frames import V4_MAPPED_LO

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
Bool = npt.NDArray[np.bool_]
Columns = dict[str, npt.NDArray[np.generic]]

_PAD = 64  # widest read (IPv6 header + UDP/TCP header) done from one clipped position
_BLOCK = 64  # bytes of each packet's start read in one pass (Ethernet/VLAN/IPv4/UDP)


def windows(data: U8, at: I64, width: int) -> U8:
    """The ``width`` bytes at each offset ``at`` (each ``at + width <= data.size``), as an
    (n, width) array: one gather of ``width``-byte items from an overlapping view. numpy
    copies items of 1, 2, 4, 8, 16 or 64 bytes in a tight loop, so those widths cost
    about one single-byte gather each (some others several times more), and ten times
    less than indexing with ``at[:, None] + np.arange(width)``."""
    if at.size == 0:
        return np.zeros((0, width), np.uint8)
    buf = np.ascontiguousarray(data)
    items = np.ndarray((buf.size - width + 1,), np.dtype(f"V{width}"), buffer=buf,
                       strides=(1,))
    out: U8 = items[at].view(np.uint8).reshape(-1, width)
    return out


def field(block: U8, k: int, fmt: str) -> I64:
    """The field of numpy type ``fmt`` (``"u1"``, big-endian ``">u2"``, ``">u4"``) at byte
    ``k`` of each row of a C-contiguous ``block`` (from `windows`)."""
    dt = np.dtype({"names": ["f"], "formats": [fmt], "offsets": [k],
                   "itemsize": block.shape[1]})
    out: I64 = block.view(dt)["f"][:, 0].astype(np.int64)
    return out


def _rows(block: U8, sel: I64) -> U8:
    """Rows ``sel`` of a C-contiguous block, gathered as whole-row items."""
    width = block.shape[1]
    out: U8 = block.view(np.dtype(f"V{width}"))[:, 0][sel].view(np.uint8).reshape(-1, width)
    return out


class _Header:
    """One header's bytes per row: ``at`` bytes into each row of ``block``."""

    __slots__ = ("at", "block")

    def __init__(self, block: U8, at: int) -> None:
        self.block, self.at = block, at

    def u8(self, k: int) -> I64:
        return field(self.block, self.at + k, "u1")

    def be16(self, k: int) -> I64:
        return field(self.block, self.at + k, ">u2")

    def be32(self, k: int) -> I64:
        return field(self.block, self.at + k, ">u4")

    def be64(self, k: int) -> npt.NDArray[np.uint64]:
        hi = self.be32(k).astype(np.uint64)
        return (hi << np.uint64(32)) | self.be32(k + 4).astype(np.uint64)

    def take(self, sel: I64) -> _Header:
        return _Header(_rows(self.block, sel), self.at)


class _Gather:
    """Byte reads at many positions at once.

    The first `_BLOCK` bytes of every packet are gathered once (`windows`), and a
    layer's header is read from there when it lies at one offset in every row (most
    captures: one link type, untagged or uniformly tagged, IPv4 without options);
    otherwise from its own 64-byte window at each row's position. Each pass over the
    batch buffer costs a cache miss per packet, so one pass, then reads in the compact
    block, beats a pass per byte. A window that would pass the buffer's end repeats
    the buffer's last byte: a claimed packet never reads there, since a claim requires
    the captured bytes it read. The per-byte reads remain for the rare link layers.
    """

    def __init__(self, data: U8, start: I64) -> None:
        if data.size < _PAD:
            data = np.concatenate((data, np.zeros(_PAD - data.size, np.uint8)))
        self.data = data
        self.start = start.astype(np.int64)
        self.block = self.window(self.start, _BLOCK)

    def clip(self, pos: I64, width: int) -> I64:
        return np.minimum(pos, self.data.size - width)

    def window(self, pos: I64, width: int) -> U8:
        """`windows` at ``pos``, past the buffer's end its last byte repeated."""
        size = self.data.size
        safe = pos <= size - width
        if safe.all():
            return windows(self.data, pos, width)
        out = np.empty((pos.size, width), np.uint8)
        out[safe] = windows(self.data, pos[safe], width)
        end = np.flatnonzero(~safe)
        out[end] = self.data[np.minimum(pos[end, None] + np.arange(width), size - 1)]
        return out

    def header(self, idx: I64, rel: I64, width: int) -> _Header:
        """Bytes ``rel .. rel + width`` (``width`` <= `_BLOCK`) of packets ``idx`` (ascending)."""
        if rel.size:
            r = int(rel.min())
            if r == int(rel.max()) and 0 <= r <= _BLOCK - width:
                whole = idx.size == self.block.shape[0]  # then idx is every packet
                return _Header(self.block if whole else _rows(self.block, idx), r)
        return _Header(self.window(self.start[idx] + rel, _BLOCK), 0)

    def u8(self, pos: I64, k: int) -> I64:
        return self.data[pos + k].astype(np.int64)

    def be16(self, pos: I64, k: int) -> I64:
        return (self.u8(pos, k) << 8) | self.u8(pos, k + 1)


def _is_tpid(ethertype: I64) -> Bool:
    tpid: Bool = np.isin(ethertype, (L.ETH_VLAN, L.ETH_QINQ, L.ETH_QINQ_OLD))
    return tpid


@dataclass(slots=True)
class _Link:
    """Per-packet link results over the whole batch (l3 = -1: not a fast-path candidate)."""

    l3: I64
    ethertype: I64
    vlan: npt.NDArray[np.int16]
    pcp: npt.NDArray[np.int8]


def _link(g: _Gather, batch: Batch, cap: I64) -> _Link:
    n = len(batch)
    off, lt = batch.offset, batch.linktype
    link = _Link(
        np.full(n, -1, np.int64), np.zeros(n, np.int64),
        np.full(n, -1, np.int16), np.full(n, -1, np.int8),
    )
    eth = np.flatnonzero((lt == L.LT_ETHERNET) & (cap >= 14))
    if eth.size:
        _ethernet(g.header(eth, np.zeros(eth.size, np.int64), 22), eth, link)
    for linktype, hdr, proto_off in (
        (L.LT_LINUX_SLL, L.SLL_HDR_LEN, L.SLL_PROTO_OFF),
        (L.LT_LINUX_SLL2, L.SLL2_HDR_LEN, L.SLL2_PROTO_OFF),
    ):
        idx = np.flatnonzero(lt == linktype)
        if idx.size:
            link.ethertype[idx] = g.be16(g.clip(off[idx], hdr), proto_off)
            link.l3[idx] = hdr
    raw = np.flatnonzero(np.isin(lt, (*L.RAW_LINKTYPES, L.LT_IPV4, L.LT_IPV6)))
    if raw.size:
        version = g.u8(g.clip(off[raw], 1), 0) >> 4
        # 228/229 promise the version; the IP stage still checks the nibble.
        version = np.where(lt[raw] == L.LT_IPV4, 4, np.where(lt[raw] == L.LT_IPV6, 6, version))
        v6 = np.where(version == 6, L.ETH_IPV6, 0)
        link.ethertype[raw] = np.where(version == 4, L.ETH_IPV4, v6)
        link.l3[raw] = 0
    return link


def _ethernet(h: _Header, eth: I64, link: _Link) -> None:
    """Ethernet II with up to two 802.1Q/802.1ad tags (``h``: 22 bytes at the frame)."""
    ethertype = h.be16(12)
    l3 = np.full(eth.size, 14, np.int64)
    tagged = np.flatnonzero(_is_tpid(ethertype))
    if tagged.size:
        th = h.take(tagged)
        tci = th.be16(14)
        inner = th.be16(16)
        l3[tagged] = 18
        double = np.flatnonzero(_is_tpid(inner))
        if double.size:  # QinQ: the second (inner, customer) tag wins
            dh = th.take(double)
            tci[double] = dh.be16(18)
            inner[double] = dh.be16(20)
            l3[tagged[double]] = 22
        # a third tag is left to the slow path (ethertype stays a TPID -> unclaimed)
        ethertype[tagged] = inner
        link.vlan[eth[tagged]] = (tci & 0x0FFF).astype(np.int16)
        link.pcp[eth[tagged]] = (tci >> 13).astype(np.int8)
    link.ethertype[eth] = ethertype
    link.l3[eth] = l3


@dataclass(slots=True)
class _Net:
    """Network-layer results for the claimed-so-far packets ``idx``."""

    idx: I64
    version: I64
    l4: I64  # L4 header position relative to the packet start
    end: I64  # end of the IP datagram relative to the packet start
    proto: I64
    tclass: I64
    src_hi: npt.NDArray[np.uint64]
    src_lo: npt.NDArray[np.uint64]
    dst_hi: npt.NDArray[np.uint64]
    dst_lo: npt.NDArray[np.uint64]


def _ipv4(g: _Gather, cap: I64, wire: I64, idx: I64, l3: I64) -> _Net:
    """RFC 791 header, options allowed, fragments and non-UDP/TCP left to the slow path."""
    h = g.header(idx, l3, 20)
    b0 = h.u8(0)
    hlen = (b0 & 0x0F) * 4
    total = h.be16(2)
    proto = h.u8(9)
    capi = cap[idx]
    ok = (
        (capi >= l3 + 20) & (b0 >> 4 == 4) & (hlen >= 20) & (total >= hlen)
        & (l3 + total <= wire[idx]) & (capi >= l3 + hlen)
        & (h.be16(6) & 0x3FFF == 0)  # MF and fragment offset (DF is fine)
        & ((proto == L.IPPROTO_UDP) | (proto == L.IPPROTO_TCP))
    )
    sel = np.flatnonzero(ok)
    if sel.size != idx.size:
        idx, h, l3, hlen = idx[sel], h.take(sel), l3[sel], hlen[sel]
        total, proto = total[sel], proto[sel]
    src = h.be32(12).astype(np.uint64) | V4_MAPPED_LO
    dst = h.be32(16).astype(np.uint64) | V4_MAPPED_LO
    zeros = np.zeros(idx.size, np.uint64)
    return _Net(
        idx, np.full(idx.size, 4, np.int64), l3 + hlen, l3 + total, proto, h.u8(1),
        zeros, src, zeros, dst,
    )


def _ipv6(g: _Gather, cap: I64, wire: I64, idx: I64, l3: I64) -> _Net:
    """RFC 8200 fixed header directly followed by UDP or TCP (no extension headers)."""
    h = g.header(idx, l3, 40)
    plen = h.be16(4)
    proto = h.u8(6)
    ok = (
        (cap[idx] >= l3 + 40) & (h.u8(0) >> 4 == 6) & (plen > 0)
        & (l3 + 40 + plen <= wire[idx])
        & ((proto == L.IPPROTO_UDP) | (proto == L.IPPROTO_TCP))
    )
    sel = np.flatnonzero(ok)
    idx, h, l3, plen, proto = idx[sel], h.take(sel), l3[sel], plen[sel], proto[sel]
    tclass = ((h.u8(0) & 0x0F) << 4) | (h.u8(1) >> 4)
    return _Net(
        idx, np.full(idx.size, 6, np.int64), l3 + 40, l3 + 40 + plen, proto, tclass,
        h.be64(8), h.be64(16), h.be64(24), h.be64(32),
    )


def _concat(a: _Net, b: _Net) -> _Net:
    if not b.idx.size:
        return a
    if not a.idx.size:
        return b
    return _Net(
        np.concatenate((a.idx, b.idx)), np.concatenate((a.version, b.version)),
        np.concatenate((a.l4, b.l4)), np.concatenate((a.end, b.end)),
        np.concatenate((a.proto, b.proto)), np.concatenate((a.tclass, b.tclass)),
        np.concatenate((a.src_hi, b.src_hi)), np.concatenate((a.src_lo, b.src_lo)),
        np.concatenate((a.dst_hi, b.dst_hi)), np.concatenate((a.dst_lo, b.dst_lo)),
    )


def _select(net: _Net, sel: I64) -> _Net:
    return _Net(
        net.idx[sel], net.version[sel], net.l4[sel], net.end[sel], net.proto[sel],
        net.tclass[sel], net.src_hi[sel], net.src_lo[sel], net.dst_hi[sel], net.dst_lo[sel],
    )


def decode_fast(
    batch: Batch, tunnel_ports: frozenset[int] = frozenset()
) -> tuple[I64, Columns]:
    """Claimed packet indices (ascending) and their Frames columns (without ts/wire_len).

    UDP to a destination port in ``tunnel_ports`` (VXLAN, TZSP) is never claimed: the
    slow path decides whether it is a tunnel or plain UDP.
    """
    n = len(batch)
    if n == 0:
        return np.zeros(0, np.int64), {}
    off = batch.offset
    g = _Gather(batch.data, off)
    cap = batch.caplen.astype(np.int64)
    wire = np.maximum(batch.wirelen.astype(np.int64), cap)
    link = _link(g, batch, cap)
    idx4 = np.flatnonzero((link.ethertype == L.ETH_IPV4) & (link.l3 >= 0))
    idx6 = np.flatnonzero((link.ethertype == L.ETH_IPV6) & (link.l3 >= 0))
    net = _concat(
        _ipv4(g, cap, wire, idx4, link.l3[idx4]),
        _ipv6(g, cap, wire, idx6, link.l3[idx6]),
    )
    if idx6.size and idx4.size:  # restore packet order for the merge
        net = _select(net, np.argsort(net.idx, kind="stable"))
    return _transport(g, off, cap, net, link, tunnel_ports)


def _transport(
    g: _Gather, off: I64, cap: I64, net: _Net, link: _Link, tunnel_ports: frozenset[int]
) -> tuple[I64, Columns]:
    """UDP (RFC 768) and TCP (RFC 9293) headers; same length rules as the slow path."""
    l4, end = net.l4, net.end
    capi = cap[net.idx]
    # a claimed TCP row has 20 header bytes, a UDP row 8 (the TCP-only fields read
    # beyond them are never used for UDP: the columns below are 0 there)
    h = g.header(net.idx, l4, 20)
    udp = net.proto == L.IPPROTO_UDP
    ulen = h.be16(4)
    thlen = (h.u8(12) >> 4) * 4
    dport = h.be16(2)
    not_tunnel = ~np.isin(dport, list(tunnel_ports)) if tunnel_ports else True
    ok = np.where(
        udp,
        (l4 + 8 <= end) & (l4 + 8 <= capi) & (ulen >= 8) & not_tunnel,
        (l4 + 20 <= end) & (thlen >= 20) & (l4 + thlen <= end) & (l4 + thlen <= capi),
    )
    sel = np.flatnonzero(ok)
    if sel.size != ok.size:
        net, capi, h, udp, ulen, thlen, dport = (
            _select(net, sel), capi[sel], h.take(sel), udp[sel], ulen[sel], thlen[sel],
            dport[sel],
        )
        l4, end = net.l4, net.end
    cap_end = np.minimum(capi, end)
    hlen = np.where(udp, 8, thlen)
    pkt = net.idx
    tcp = ~udp
    cols: Columns = {
        "pkt": pkt,
        "ip_version": net.version.astype(np.uint8),
        "src_hi": net.src_hi, "src_lo": net.src_lo, "dst_hi": net.dst_hi, "dst_lo": net.dst_lo,
        "sport": h.be16(0).astype(np.uint16),
        "dport": dport.astype(np.uint16),
        "proto": net.proto.astype(np.uint8),
        "dscp": (net.tclass >> 2).astype(np.uint8),
        "ecn": (net.tclass & 3).astype(np.uint8),
        "vlan": link.vlan[pkt], "pcp": link.pcp[pkt],
        "payload_off": off[pkt] + l4 + hlen,
        "payload_len": np.where(udp, np.minimum(ulen, cap_end - l4) - 8, cap_end - l4 - thlen)
        .astype(np.int32),
        "tcp_seq": np.where(tcp, h.be32(4), 0).astype(np.uint32),
        "tcp_flags": np.where(tcp, h.u8(13), 0).astype(np.uint8),
        "payload_sent": np.where(udp, ulen - 8, end - l4 - thlen).astype(np.int32),
    }
    return pkt, cols
