"""Live capture on Linux: AF_PACKET sockets with a TPACKET_V3 memory-mapped ring.

One ``SOCK_RAW`` socket per interface (``"any"`` = every interface, ifindex 0),
each with the built-in classic BPF program of `agent.capture.bpf` (or a user
program) attached in the kernel, and an RX ring of ``block_count`` blocks of
``block_size`` bytes.  The kernel fills a block and hands it to user space when
it is full or ``block_timeout_ms`` after its first packet; `AfPacketSource.poll`
waits for that, copies every ready block's used part into one buffer per
interface with a single memcpy each, reads the ``tpacket3_hdr`` of each packet
for the columns of a `Batch`, and gives the block back to the kernel.

Link types, per packet (from the ``sockaddr_ll`` the kernel writes after each
header): Ethernet and loopback devices -> `LinkType.ETHERNET` (loopback's header
is a zeroed Ethernet header); devices without a link header (tun, wireguard,
ipip, sit: ``tp_mac == tp_net``) -> `LinkType.RAW`; any other device's link header
is skipped and the packet is handed on as `LinkType.RAW` starting at the network
header.  On receive Linux moves an 802.1Q tag into metadata; when the kernel
reports one (``TP_STATUS_VLAN_VALID``) the tag is put back into the frame (caplen
and wirelen grow by 4), so decode sees VLAN id and PCP.

An interface that goes down or disappears (``POLLERR`` with ENETDOWN, ENODEV,
ENXIO...) is drained, closed and counted, and so is one missing or down at the
start; while it is missing or down it is looked for every second (an ioctl and a
sysfs read), so capture resumes within about a second of it appearing (plugged in,
created, set up); an open that fails although it exists and is up is retried with
exponential backoff (1 s doubling to 60 s). Time from the ``now`` argument or
`time.monotonic`; the other interfaces keep capturing meanwhile.  Kernel
counters (``PACKET_STATISTICS``, reset by every read) are accumulated per
interface, across reopenings, in `stats`.

Needs CAP_NET_RAW (sockets, filters, ring); promiscuous mode through
``PACKET_ADD_MEMBERSHIP`` needs nothing more.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import mmap
import os
import select
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.capture.batch import Batch, LinkType
from agent.capture.bpf import (
    DEFAULT_SIP_PORTS,
    BpfProgram,
    builtin_program,
    compile_expression,
)
from agent.capture.points import PACKET_OUTGOING, directed_ids, interface_name

__all__ = ["AfPacketSource", "CaptureStats", "interface_linktype"]

log = logging.getLogger(__name__)

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
PACKET_MR_PROMISC = 1
ETH_P_ALL = 0x0003

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40

ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 65534

# tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1: block_status,
# num_pkts, offset_to_first_pkt, blk_len, ...
_BLOCK = struct.Struct("=IIIIII")
_BLOCK_STATUS_OFF = 8
# Per packet: tpacket3_hdr (48 bytes), then sockaddr_ll (at TPACKET_ALIGN(48) = 48).
# tp_next_offset (`frame_offsets`); the rest is gathered with numpy: u32 [1] sec
# [2] nsec [3] snaplen [4] len [5] status [8] vlan_tci, u16 [12] mac [13] net [18]
# vlan_tpid, then sockaddr_ll at byte 48: u16 [28] sll_hatype.
_IFINDEX_WORD = 13  # sockaddr_ll.sll_ifindex (byte 52)
_PKTTYPE_BYTE = 58  # sockaddr_ll.sll_pkttype
_HDR_BYTES = 60
_STATS = struct.Struct("=III")  # tpacket_stats_v3
_REQ3 = struct.Struct("=IIIIIII")  # tpacket_req3
_MREQ = struct.Struct("=iHH8s")  # packet_mreq
_ERRS_DOWN = {errno.ENETDOWN, errno.ENODEV, errno.ENXIO, errno.EIO}

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0


class _SockaddrLL(ctypes.Structure):
    _fields_ = (
        ("sll_family", ctypes.c_ushort),
        ("sll_protocol", ctypes.c_ushort),
        ("sll_ifindex", ctypes.c_int),
        ("sll_hatype", ctypes.c_ushort),
        ("sll_pkttype", ctypes.c_ubyte),
        ("sll_halen", ctypes.c_ubyte),
        ("sll_addr", ctypes.c_ubyte * 8),
    )


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """Kernel counters of one interface, summed since the source was opened.

    ``packets`` counts packets that passed the filter (the kernel includes the
    dropped ones), ``drops`` those lost because the ring was full, ``freeze_q``
    times the ring was frozen.  ``up`` is whether a socket is open now, ``downs``
    how often the interface went away, ``reopens`` how often it was reopened,
    ``socket_drops`` (a listener's, in ``drops`` too) the datagrams its socket buffer
    had no room for (0 for an interface: its ring's are ``drops``),
    ``down_reason`` why it is not up (``"no such interface"``, ``"interface is down"``,
    the error that stopped the capture).
    """

    packets: int = 0
    drops: int = 0
    freeze_q: int = 0
    up: bool = True
    downs: int = 0
    reopens: int = 0
    down_reason: str = ""
    socket_drops: int = 0


def interface_linktype(name: str) -> LinkType:
    """The link type frames of interface ``name`` have on an AF_PACKET SOCK_RAW socket."""
    if name == "any":
        return LinkType.ETHERNET
    try:
        with open(f"/sys/class/net/{name}/type") as f:
            hatype = int(f.read().strip())
    except (OSError, ValueError):
        return LinkType.ETHERNET
    return LinkType.ETHERNET if hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK) else LinkType.RAW


def _is_up(name: str) -> bool:
    try:
        with open(f"/sys/class/net/{name}/flags") as f:
            return bool(int(f.read().strip(), 16) & 0x1)  # IFF_UP
    except (OSError, ValueError):
        return False


class _Ring:
    """One open socket with its mapped ring."""

    def __init__(
        self,
        name: str,
        ifindex: int,
        *,
        block_size: int,
        block_count: int,
        block_timeout_ms: int,
        promisc: bool,
        program: BpfProgram,
    ) -> None:
        self.name = name
        self.ifindex = ifindex
        self._ifnames: dict[int, str] = {}  # sll_ifindex -> name, for "any"
        self.block_size = block_size
        self.block_count = block_count
        self.next_block = 0
        # protocol 0: receive nothing until bound, after the filter and ring are set
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            program.attach(sock)
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame_size = 2048
            req = _REQ3.pack(
                block_size,
                block_count,
                frame_size,
                block_size // frame_size * block_count,
                block_timeout_ms,
                0,
                0,
            )
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.mm = mmap.mmap(
                sock.fileno(),
                block_size * block_count,
                mmap.MAP_SHARED,
                mmap.PROT_READ | mmap.PROT_WRITE,
            )
            addr = _SockaddrLL()
            addr.sll_family = socket.AF_PACKET
            addr.sll_protocol = socket.htons(ETH_P_ALL)
            addr.sll_ifindex = ifindex
            if _libc.bind(sock.fileno(), ctypes.byref(addr), ctypes.sizeof(addr)) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"bind to {name}: {os.strerror(err)}")
            if promisc and ifindex:
                mreq = _MREQ.pack(ifindex, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        except BaseException:
            if hasattr(self, "mm"):
                self.mm.close()
            sock.close()
            raise
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_stats(self) -> tuple[int, int, int]:
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
        p, d, f = _STATS.unpack(raw)
        return int(p), int(d), int(f)

    def drain(self, max_blocks: int | None = None) -> Batch | None:
        """Copy every block the kernel has handed over into one `Batch`; give them back."""
        mm = self.mm
        bs = self.block_size
        chunks: list[tuple[int, int]] = []  # (block base, used length)
        hdrs: list[npt.NDArray[np.int64]] = []  # where each tpacket3_hdr lands in the output
        pos = 0  # where the next block lands in the output buffer
        limit = self.block_count if max_blocks is None else max_blocks
        while len(chunks) < limit:
            base = self.next_block * bs
            _, _, status, num, first, blk_len = _BLOCK.unpack_from(mm, base)
            if not status & TP_STATUS_USER:
                break
            hdrs.append(pos + frame_offsets(mm, base, first, num, min(blk_len, bs)))
            chunks.append((base, min(blk_len, bs)))
            pos += min(blk_len, bs)
            self.next_block = (self.next_block + 1) % self.block_count
        if not chunks:
            return None
        data = np.empty(pos, dtype=np.uint8)
        at = 0
        for base, used in chunks:
            data[at : at + used] = np.frombuffer(mm, dtype=np.uint8, count=used, offset=base)
            at += used
        for base, _ in chunks:  # hand the blocks back only after copying them
            struct.pack_into("=I", mm, base + _BLOCK_STATUS_OFF, TP_STATUS_KERNEL)
        return _build_batch(data, np.concatenate(hdrs),
                            None if self.name == "any" else self.name, self._ifnames)

    def close(self) -> None:
        try:
            self.mm.close()
        finally:
            self.sock.close()


def frame_offsets(mm: mmap.mmap | bytes, base: int, first: int, num: int, used: int
                  ) -> npt.NDArray[np.int64]:
    """Offsets in the block at ``base`` of its first ``num`` frames (fewer if a frame's
    ``tp_next_offset`` is 0 or points past the ``used`` bytes), walking the chain.

    The chain is a linked list, but frames of one length follow each other at one
    stride (a snap length shorter than the packets makes them all alike): a run of
    them is found with one vectorised read of the offsets at that stride, and only where
    the stride changes is a frame read on its own."""
    words = np.frombuffer(mm, dtype=np.dtype("=u4"), count=used // 4, offset=base)
    out: list[npt.NDArray[np.int64]] = []
    off, left, stride = first, num, -1
    while left > 0 and 0 <= off <= used - 4 and off % 4 == 0:
        nxt = int(words[off // 4])
        if nxt == stride and nxt % 4 == 0:  # a second frame of one length: try a run
            k = min(left, (used - 4 - off) // nxt + 1)
            at = off + nxt * np.arange(k, dtype=np.int64)
            differ = np.flatnonzero(words[at // 4] != nxt)
            run = k if differ.size == 0 else int(differ[0]) + 1
            out.append(at[:run])
            left -= run
            off = int(at[run - 1])
            nxt = int(words[off // 4])
            if differ.size == 0:  # the whole run had this stride: go on past it
                off += nxt
                continue
        else:
            out.append(np.array([off], np.int64))
            left -= 1
        if not nxt:
            break
        off, stride = off + nxt, nxt
    return np.concatenate(out) if out else np.empty(0, np.int64)


def _build_batch(data: npt.NDArray[np.uint8], hdr: npt.NDArray[np.int64],
                 iface: str | None = None, ifnames: dict[int, str] | None = None) -> Batch:
    """Columns from the copied ``tpacket3_hdr`` + ``sockaddr_ll`` at positions ``hdr``.

    The observation point is the interface (``iface``; for "any", ``sll_ifindex``
    named on this host) and the direction ``sll_pkttype`` tells."""
    n = int(hdr.shape[0])
    if not n:
        return Batch.empty()
    # one gather of the first 60 bytes of every header, then typed views of it
    raw = data[hdr[:, None] + np.arange(_HDR_BYTES)]
    u32 = raw.view(np.dtype("=u4")).astype(np.int64)
    u16 = raw.view(np.dtype("=u2")).astype(np.int64)
    sec, nsec, caplen, wirelen, status = u32[:, 1], u32[:, 2], u32[:, 3], u32[:, 4], u32[:, 5]
    mac, net, vlan_tci, tpid, hatype = u16[:, 12], u16[:, 13], u32[:, 8], u16[:, 18], u16[:, 28]
    ts = sec.astype(np.float64) + nsec.astype(np.float64) * 1e-9
    offset = hdr + mac
    eth = (hatype == ARPHRD_ETHER) | (hatype == ARPHRD_LOOPBACK)
    linktype = np.where(eth, LinkType.ETHERNET, LinkType.RAW).astype(np.uint16)
    # Devices with some other link header: hand on the packet from its IP header.
    skip = np.where(eth, 0, net - mac)
    offset += skip
    caplen = np.maximum(caplen - skip, 0)
    wirelen = np.maximum(wirelen - skip, 0)
    vlan = np.flatnonzero(eth & ((status & TP_STATUS_VLAN_VALID) != 0) & (caplen >= 12))
    if vlan.size:
        tpids = np.where(status & TP_STATUS_VLAN_TPID_VALID, tpid, 0)
        data, offset = _reinsert_vlan_tags(data, offset, caplen, vlan_tci, tpids, vlan)
        caplen[vlan] += 4
        wirelen[vlan] += 4
    outgoing = raw[:, _PKTTYPE_BYTE] == PACKET_OUTGOING
    if iface is not None:
        point = directed_ids(np.zeros(n, np.int64), outgoing, [iface])
    else:
        uniq, inv = np.unique(u32[:, _IFINDEX_WORD], return_inverse=True)
        names = ifnames if ifnames is not None else {}
        point = directed_ids(inv, outgoing,
                             [interface_name(int(i), names) for i in uniq.tolist()])
    return Batch(
        data=data,
        offset=offset,
        caplen=caplen.astype(np.int32),
        wirelen=wirelen.astype(np.int32),
        ts=ts,
        linktype=linktype,
        point=point,
    )


def _reinsert_vlan_tags(
    data: npt.NDArray[np.uint8],
    offset: npt.NDArray[np.int64],
    caplen: npt.NDArray[np.int64],
    tci: npt.NDArray[np.int64],
    tpids: npt.NDArray[np.int64],
    idx: npt.NDArray[np.intp],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Rebuild tagged frames at the end of the buffer (rare: only VLAN traffic)."""
    extra = bytearray()
    base = len(data)
    offset = offset.copy()
    for i in idx.tolist():
        start, n = int(offset[i]), int(caplen[i])
        tpid = int(tpids[i]) or 0x8100
        frame = data[start : start + n].tobytes()
        offset[i] = base + len(extra)
        extra += frame[:12] + struct.pack("!HH", tpid, int(tci[i]) & 0xFFFF)
        extra += frame[12:]
    return np.concatenate([data, np.frombuffer(bytes(extra), dtype=np.uint8)]), offset


@dataclass
class _Iface:
    name: str
    ring: _Ring | None = None
    packets: int = 0
    drops: int = 0
    freeze_q: int = 0
    downs: int = 0
    reopens: int = 0
    backoff: float = BACKOFF_MIN_S
    retry_at: float = 0.0
    reason: str = ""  # why it is not open
    absent: bool = False  # not open because missing or down (cheap to check again)


class AfPacketSource:
    """Capture on one or more interfaces (or ``"any"``) through TPACKET_V3 rings.

    ``filter``: ``None`` -> the built-in SIP/RTP/RTCP program of `agent.capture.bpf`
    (SIP on ``sip_ports``, media cut to 128 bytes, the rest dropped in the kernel);
    a libpcap expression (``str``, the config's ``capture.bpf``) -> compiled for each
    interface's link type ("any": Ethernet) and ANDed in front of the built-in
    program, which still decides truncation; a `BpfProgram` -> used as is, alone,
    on every interface (truncation is then whatever it returns).  A bad expression
    raises `agent.capture.bpf.BpfError` here.  ``skip_udp_ports``: UDP destination
    ports the built-in program drops (the agent's own listeners take those datagrams;
    the ring would measure each packet in them a second time).

    Raises ``PermissionError`` without CAP_NET_RAW.  An interface that does not
    exist (or is down) when the source opens is retried like one that went away.
    """

    def __init__(
        self,
        interfaces: Sequence[str] = ("any",),
        *,
        block_size: int = 1 << 20,
        block_count: int = 8,
        block_timeout_ms: int = 100,
        promisc: bool = False,
        snaplen: int = 65535,
        filter: BpfProgram | str | None = None,
        sip_ports: Sequence[int | tuple[int, int]] = DEFAULT_SIP_PORTS,
        skip_udp_ports: Sequence[int] = (),
        now: float | None = None,
    ) -> None:
        if not interfaces:
            raise ValueError("no interfaces")
        if block_size % mmap.PAGESIZE or block_size < 4096:
            raise ValueError("block_size must be a multiple of the page size")
        if block_count < 1:
            raise ValueError("block_count must be >= 1")
        self._opts = {
            "block_size": block_size,
            "block_count": block_count,
            "block_timeout_ms": block_timeout_ms,
            "promisc": promisc,
        }
        builtin = builtin_program(sip_ports, snaplen=snaplen, skip_udp_ports=skip_udp_ports)
        self._programs: dict[str, BpfProgram] = {}
        for name in interfaces:
            if isinstance(filter, BpfProgram):
                self._programs[name] = filter
            elif filter:
                lt = interface_linktype(name)
                self._programs[name] = compile_expression(filter, int(lt), snaplen).and_then(
                    builtin
                )
            else:
                self._programs[name] = builtin
        self._ifaces = [_Iface(name) for name in dict.fromkeys(interfaces)]
        self._poller = select.poll()
        self._by_fd: dict[int, _Iface] = {}
        t = time.monotonic() if now is None else now
        for iface in self._ifaces:
            if not self._open(iface):
                iface.downs += 1
                iface.retry_at = t + iface.backoff
        self._closed = False

    # --- opening / closing -------------------------------------------------------
    def _open(self, iface: _Iface) -> bool:
        name = iface.name
        if name == "any":
            ifindex = 0
        else:
            try:
                ifindex = socket.if_nametoindex(name)
            except OSError:
                return self._absent(iface, "no such interface")
            if not _is_up(name):
                return self._absent(iface, "interface is down")
        try:
            ring = _Ring(name, ifindex, program=self._programs[name], **self._opts)  # type: ignore[arg-type]
        except PermissionError:
            raise
        except OSError as e:
            if e.errno not in _ERRS_DOWN:
                raise
            log.warning("cannot open %s: %s; retrying", name, e)
            iface.reason, iface.absent = f"cannot open: {e}", False
            return False
        iface.reason, iface.absent = "", False
        iface.ring = ring
        self._by_fd[ring.fileno()] = iface
        self._poller.register(ring.fileno(), select.POLLIN | select.POLLERR)
        return True

    def _absent(self, iface: _Iface, why: str) -> bool:
        """Not open: the interface is missing or down. Said once per change, not at
        every retry."""
        if iface.reason != why:
            log.warning("capture on %s waits: %s", iface.name, why)
        iface.reason, iface.absent = why, True
        return False

    def _take_down(self, iface: _Iface, t: float, why: str) -> Batch | None:
        ring = iface.ring
        assert ring is not None
        batch = None
        try:
            batch = ring.drain()
        except (OSError, ValueError):
            batch = None
        self._account(iface)
        self._poller.unregister(ring.fileno())
        del self._by_fd[ring.fileno()]
        ring.close()
        iface.ring = None
        iface.downs += 1
        iface.backoff = BACKOFF_MIN_S
        iface.retry_at = t + iface.backoff
        iface.reason = f"capture stopped: {why}"
        log.warning("capture on %s stopped (%s); reopening with backoff", iface.name, why)
        return batch

    def _account(self, iface: _Iface) -> None:
        if iface.ring is None:
            return
        try:
            p, d, f = iface.ring.read_stats()
        except OSError:
            return
        iface.packets += p
        iface.drops += d
        iface.freeze_q += f

    def _retry(self, t: float) -> None:
        for iface in self._ifaces:
            if iface.ring is None and t >= iface.retry_at:
                if self._open(iface):
                    iface.reopens += 1
                    iface.backoff = BACKOFF_MIN_S
                    log.warning("capture on %s reopened", iface.name)
                elif iface.absent:  # checking for it again costs an ioctl: every second
                    iface.backoff = BACKOFF_MIN_S
                    iface.retry_at = t + BACKOFF_MIN_S
                else:  # it exists and is up, yet opening failed: back off
                    iface.backoff = min(iface.backoff * 2, BACKOFF_MAX_S)
                    iface.retry_at = t + iface.backoff

    # --- the API -----------------------------------------------------------------
    @property
    def interfaces(self) -> list[str]:
        return [i.name for i in self._ifaces]

    def filenos(self) -> list[int]:
        """File descriptors of the open sockets (readable when a block is ready)."""
        return [i.ring.fileno() for i in self._ifaces if i.ring is not None]

    def fileno(self) -> int:
        """The first open socket's descriptor (single-interface callers), -1 if none."""
        fds = self.filenos()
        return fds[0] if fds else -1

    def poll_named(self, timeout_s: float, now: float | None = None) -> list[tuple[str, Batch]]:
        """Wait up to ``timeout_s`` for ready blocks; one batch per interface with data."""
        if self._closed:
            raise ValueError("source is closed")
        t = time.monotonic() if now is None else now
        self._retry(t)
        out: list[tuple[str, Batch]] = []
        ready = self._drain_all(out)
        if not ready:
            try:
                events = self._poller.poll(max(0, int(timeout_s * 1000)))
            except InterruptedError:
                events = []
            for fd, ev in events:
                iface = self._by_fd.get(fd)
                if iface is None or iface.ring is None:
                    continue
                if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    err = iface.ring.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err == 0 and ev & select.POLLERR == 0:
                        continue
                    batch = self._take_down(iface, t, os.strerror(err) if err else "POLLERR")
                    if batch is not None and len(batch):
                        out.append((iface.name, batch))
            self._drain_all(out)
        return out

    def _drain_all(self, out: list[tuple[str, Batch]]) -> bool:
        got = False
        for iface in self._ifaces:
            if iface.ring is None:
                continue
            batch = iface.ring.drain()
            if batch is not None:
                got = True
                if len(batch):
                    out.append((iface.name, batch))
        return got

    def poll(self, timeout_s: float, now: float | None = None) -> list[Batch]:
        """Wait up to ``timeout_s`` seconds; every ready block, one `Batch` per interface."""
        return [b for _, b in self.poll_named(timeout_s, now)]

    def stats(self) -> dict[str, CaptureStats]:
        """Kernel counters per interface, accumulated (each kernel read resets them)."""
        out: dict[str, CaptureStats] = {}
        for iface in self._ifaces:
            if not self._closed:
                self._account(iface)
            out[iface.name] = CaptureStats(
                packets=iface.packets,
                drops=iface.drops,
                freeze_q=iface.freeze_q,
                up=iface.ring is not None,
                downs=iface.downs,
                reopens=iface.reopens,
                down_reason="" if iface.ring is not None else iface.reason,
            )
        return out

    def close(self) -> None:
        if self._closed:
            return
        for iface in self._ifaces:
            if iface.ring is not None:
                self._account(iface)
                self._poller.unregister(iface.ring.fileno())
                iface.ring.close()
                iface.ring = None
        self._by_fd.clear()
        self._closed = True

    def __enter__(self) -> AfPacketSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
