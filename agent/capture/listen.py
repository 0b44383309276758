"""What every collector socket shares (HEP, TZSP and VXLAN listeners): binding a plain
socket (no CAP_NET_RAW) and the allowed senders.

A sender outside the allowed CIDRs is dropped and counted by the listener; an empty
list allows nobody (the admin names the senders). The verdict cache is bounded, so
spoofed source addresses cannot grow it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

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
