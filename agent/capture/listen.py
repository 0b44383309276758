"""What every collector socket shares (HEP, TZSP and VXLAN listeners): binding a plain
socket (no CAP_NET_RAW), the allowed senders, and reading datagrams in bounded polls
at their kernel receive time.

A sender outside the allowed CIDRs is dropped and counted by the listener; an empty
list allows nobody (the admin names the senders). The verdict cache is bounded, so
spoofed source addresses cannot grow it.

Receive time: the kernel's (SO_TIMESTAMP), not the time the agent read the datagram.
The daemon waits on the ring first (up to its block timeout) and reads the listeners
after it, so read times would bunch a second of packets together; the kernel's time
is the arrival at the probe. Where the kernel gives none, ``clock()`` at the read.
(Linux turns timestamping on a moment after the first socket asks, net_enable_timestamp
deferring it: the datagrams of that moment are stamped at the read.)

Socket drops: datagrams the kernel had no room for in the receive buffer (``rcvbuf``),
read with SO_MEMINFO (the socket's ``sk_drops``, Linux 4.7+) whenever the stats are:
packets of the mirror or HEP stream the probe never got (`socket_drops`).
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import sys
from collections.abc import Callable, Iterator, Sequence

from agent.decode.slowpath import V4_MAPPED

MAX_DATAGRAM = 65535
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_DENIED = -1
_MAX_VERDICTS = 4096


class AllowedSenders:
    """Allowed-sender CIDRs, with a bounded cache of verdicts per address."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.nets: list[_Network] = [ipaddress.ip_network(c, strict=False) for c in allowed]
        self._verdicts: dict[str, int] = {}

    def address(self, host: str) -> int | None:
        """``host`` (as ``recvfrom`` gives it) as a 128-bit int, IPv4 mapped into IPv6
        as the decoder holds addresses; None when it is not allowed."""
        verdict = self._verdicts.get(host)
        if verdict is None:
            verdict = self._judge(host)
            if len(self._verdicts) >= _MAX_VERDICTS:
                self._verdicts.clear()
            self._verdicts[host] = verdict
        return None if verdict == _DENIED else verdict

    def allowed(self, host: str) -> bool:
        return self.address(host) is not None

    def _judge(self, host: str) -> int:
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return _DENIED
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if not any(addr in net for net in self.nets):
            return _DENIED
        return V4_MAPPED | int(addr) if addr.version == 4 else int(addr)


def bind_socket(address: str, port: int, kind: socket.SocketKind, rcvbuf: int) -> socket.socket:
    """A non-blocking UDP (``SOCK_DGRAM``) or listening TCP socket on address:port."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # a reload opens the new listener before closing the old one (daemon.reload)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(16)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


# SO_TIMESTAMP (asm-generic/socket.h; the socket module does not export it): a
# ``struct timeval`` of native longs in the ancillary data of every datagram.
_SO_TIMESTAMP = 29
_TIMEVAL = struct.Struct("@ll")
_ANCILLARY = socket.CMSG_SPACE(_TIMEVAL.size)


def enable_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel for each datagram's receive time (Linux); False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMP, 1)
    except OSError:
        return False
    return True


# SO_MEMINFO (asm-generic/socket.h): u32 SK_MEMINFO_* values; SK_MEMINFO_DROPS is the 9th.
_SO_MEMINFO = 55
_MEMINFO_DROPS = 8
_MEMINFO = struct.Struct("@9I")


def socket_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped on ``sock`` for want of buffer room, since it was
    opened (0 where the kernel does not say, or once the socket is closed)."""
    if not sys.platform.startswith("linux") or sock.fileno() < 0:
        return 0
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, _MEMINFO.size)
    except OSError:
        return 0
    if len(raw) < _MEMINFO.size:
        return 0
    return int(_MEMINFO.unpack(raw)[_MEMINFO_DROPS])


def read_datagrams(sock: socket.socket, buf: bytearray, timeout_s: float, *, max_batch: int,
                   max_bytes: int, kernel_time: bool, clock: Callable[[], float]
                   ) -> Iterator[tuple[int, str, float]]:
    """Waits up to ``timeout_s``, then yields (length, sender host, receive time in epoch
    seconds) for each datagram ready, read into ``buf`` (valid until the next one): at
    most ``max_batch`` of them, or until ``max_bytes`` were read; the rest wait in the
    socket buffer. ``kernel_time``: the socket has `enable_timestamps`."""
    ready, _, _ = select.select([sock], [], [], max(0.0, timeout_s))
    if not ready:
        return
    size = 0
    for _ in range(max_batch):
        try:
            if kernel_time:
                n, ancillary, _flags, sender = sock.recvmsg_into([buf], _ANCILLARY)
            else:
                n, sender = sock.recvfrom_into(buf)
                ancillary = []
        except (BlockingIOError, InterruptedError):
            return
        yield n, str(sender[0]), _stamp(ancillary, clock)
        size += n
        if size >= max_bytes:
            return


def _stamp(ancillary: list[tuple[int, int, bytes]], clock: Callable[[], float]) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMP and len(data) >= _TIMEVAL.size:
            sec, usec = _TIMEVAL.unpack_from(data)
            return float(sec + usec * 1e-6)
    return clock()
