"""HEP over UDP: a collector socket as a `Batch` producer, beside the capture ring.

A PBX or proxy (Kamailio siptrace with ``hep_mode_on``, OpenSIPS, Asterisk
res_hep, FreeSWITCH, rtpengine, heplify) sends each packet it captured to the
probe as one HEP datagram. `HepListener` receives them on a plain UDP socket
(no CAP_NET_RAW), drops and counts datagrams from senders outside the allowed
CIDRs (an empty list allows nobody: the admin names the senders), and hands on
each HEP record as the raw IP packet it describes (`agent.decode.hep_unwrap`),
with the HEP capture time as the packet time (a v1 record has none: the receive
time). Its ``poll``/``stats``/``close`` are those of the capture sources, so the
daemon can drive it like a ring.

Bounded: one ``poll`` reads at most ``max_batch`` datagrams (or ``max_bytes``),
the rest wait in the socket buffer (``rcvbuf``), where the kernel drops what
does not fit. What is not yet here: HEP over TCP (framing by the HEP3 length),
the kernel's own drop count (SO_RXQ_OVFL), and the daemon merging this source
with the ring in time order.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.capture.afpacket import CaptureStats
from agent.capture.batch import Batch, LinkType
from agent.decode.hep_unwrap import HEP_PORT, HepCounters, HepUnwrapper

_MAX_DATAGRAM = 65535
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class ListenerCounters:
    """Running totals of one listener (monotonic)."""

    datagrams: int = 0  # received, from any sender
    bytes: int = 0
    denied: int = 0  # from a sender outside the allowed CIDRs, dropped


class HepListener:
    """Receives HEP on ``address``:``port`` (UDP) from the ``allowed`` CIDRs."""

    def __init__(
        self,
        address: str = "0.0.0.0",
        port: int = HEP_PORT,
        allowed: Sequence[str] = (),
        *,
        max_batch: int = 1024,
        max_bytes: int = 8 << 20,
        rcvbuf: int = 4 << 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.allowed: list[_Network] = [ipaddress.ip_network(c, strict=False) for c in allowed]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self._sock.bind((address, port))
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self.port = int(self._sock.getsockname()[1])
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self.counters = ListenerCounters()
        self._hep = HepUnwrapper(ports=())
        self._clock = clock
        self._buf = bytearray(_MAX_DATAGRAM)
        self._verdicts: dict[str, bool] = {}  # sender address -> allowed (bounded below)
        self._closed = False

    @property
    def hep(self) -> HepCounters:
        """Decode counters of the records received (versions, errors, duplicates...)."""
        return self._hep.counters

    def _allowed(self, host: str) -> bool:
        verdict = self._verdicts.get(host)
        if verdict is None:
            try:
                addr = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                return False
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            verdict = any(addr in net for net in self.allowed)
            if len(self._verdicts) >= 4096:  # spoofed senders cannot grow it
                self._verdicts.clear()
            self._verdicts[host] = verdict
        return verdict

    def poll(self, timeout_s: float) -> list[Batch]:
        """Waits up to ``timeout_s`` for datagrams; returns at most one batch."""
        if self._closed:
            return []
        ready, _, _ = select.select([self._sock], [], [], max(0.0, timeout_s))
        if not ready:
            return []
        packets: list[bytes] = []
        times: list[float] = []
        size = 0
        view = memoryview(self._buf)
        for _ in range(self.max_batch):
            try:
                n, sender = self._sock.recvfrom_into(self._buf)
            except (BlockingIOError, InterruptedError):
                break
            self.counters.datagrams += 1
            self.counters.bytes += n
            if not self._allowed(str(sender[0])):
                self.counters.denied += 1
                continue
            pkt, ts = self._hep.rebuild(bytes(view[:n]))
            if pkt is None:
                continue
            packets.append(pkt)
            times.append(self._clock() if ts is None else ts)
            size += len(pkt)
            if size >= self.max_bytes:
                break
        if not packets:
            return []
        return [Batch.from_packets(packets, times, LinkType.RAW)]

    def stats(self) -> dict[str, CaptureStats]:
        """Per listener: datagrams received, and those dropped (denied, not HEP, errors)."""
        c = self._hep.counters
        drops = (self.counters.denied + c.not_hep + c.errors_v1 + c.errors_v2 + c.errors_v3)
        return {f"hep:{self.port}": CaptureStats(packets=self.counters.datagrams, drops=drops,
                                                 up=not self._closed)}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()
