"""TZSP and VXLAN over UDP: mirror sockets as `Batch` producers, beside the capture ring.

A router sends its mirror to the probe's own address: MikroTik's packet sniffer
streams TZSP to UDP 37008 (``/tool sniffer set streaming-enabled=yes
streaming-server=PROBE``); a switch or hypervisor sends VXLAN to UDP 4789 (Open
vSwitch, a Linux ``tc mirred`` into a ``vxlan`` device, a switch's VXLAN remote
span). `MirrorListener` receives them on a plain UDP socket (no CAP_NET_RAW),
drops and counts datagrams from senders outside the allowed CIDRs
(`agent.capture.listen`), checks each datagram's header with the decoder's own
parsers (`agent.decode.tunnels`) and hands on the Ethernet frame it carries. Its
``poll``/``stats``/``close`` are those of the capture sources, so the daemon drives
it like a ring (`agent.capture.multisource`).

Observation point: ``tzsp/<sender>`` and ``vxlan/<sender>/vni<N>``
(`agent.capture.points.exporter_point`), exactly what the decoder names the same
datagrams when it sniffs them (`agent.decode.slowpath`), so a live listener and
``voipprobe analyze`` of a capture of the mirror stream give the same records.

Packet time: the receive time (`agent.capture.listen`: the kernel's, not the read's).
Neither protocol carries a capture time: VXLAN has no field for one, and TZSP's tag
0x0D is a 32-bit MAC receive timestamp of a wireless radio (the tag Wireshark's and
scapy's dissectors name TIMESTAMP), not a wall-clock time; MikroTik's stream sends
the END tag alone.

Drops, counted per listener: a denied sender; an invalid header (TZSP version,
type or tag list wrong or cut; VXLAN's I flag clear or the header cut: what
`agent.decode.tunnels` refuses); a valid TZSP header carrying something other than
Ethernet (802.11, ...); a datagram the socket buffer had no room for
(``socket_drops``: `agent.capture.listen`).

Bounded: one ``poll`` reads at most ``max_batch`` datagrams (or ``max_bytes``, denied
ones included); the rest wait in the socket buffer (``rcvbuf``), where the kernel
drops what does not fit. Nothing is held between polls but the receive buffer.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from agent.capture.batch import Batch, LinkType
from agent.capture.listen import (
    MAX_DATAGRAM,
    AllowedSenders,
    bind_socket,
    enable_timestamps,
    read_datagrams,
    socket_drops,
)
from agent.capture.points import exporter_point
from agent.decode import tunnels
from agent.decode.tunnels import UNSUPPORTED

MirrorProtocol = Literal["tzsp", "vxlan"]
DEFAULT_PORTS: dict[MirrorProtocol, int] = {"tzsp": 37008, "vxlan": 4789}


@dataclass(slots=True)
class MirrorCounters:
    """Running totals of one listener (monotonic)."""

    datagrams: int = 0  # received, from any sender
    bytes: int = 0
    denied: int = 0  # from a sender outside the allowed CIDRs
    invalid: int = 0  # no valid TZSP/VXLAN header
    not_ethernet: int = 0  # a valid header carrying another encapsulation


@dataclass(frozen=True, slots=True)
class MirrorStats:
    """One listener's counters as ``stats()`` reports them (a capture source's
    ``packets``/``drops``, and the mirror's own figures for its metrics)."""

    protocol: MirrorProtocol
    datagrams: int
    bytes: int
    denied: int
    invalid: int
    not_ethernet: int
    up: bool
    socket_drops: int = 0  # no room in the socket buffer: never received

    @property
    def packets(self) -> int:
        return self.datagrams

    @property
    def drops(self) -> int:
        return self.denied + self.invalid + self.not_ethernet + self.socket_drops


def listener_label(protocol: MirrorProtocol, port: int, name: str | None = None) -> str:
    """The listener's name in stats and metrics: the configured one, else ``tzsp:37008``."""
    return name or f"{protocol}:{port}"


class MirrorListener:
    """Receives ``protocol`` (TZSP or VXLAN) on ``address``:``port`` (UDP) from the
    ``allowed`` CIDRs; ``name`` labels its stats (default ``<protocol>:<port>``)."""

    def __init__(
        self,
        protocol: MirrorProtocol,
        address: str = "0.0.0.0",
        port: int | None = None,
        allowed: Sequence[str] = (),
        *,
        name: str | None = None,
        max_batch: int = 1024,
        max_bytes: int = 8 << 20,
        rcvbuf: int = 4 << 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if protocol not in DEFAULT_PORTS:
            raise ValueError(f"not a mirror protocol: {protocol!r}")
        self.protocol: MirrorProtocol = protocol
        self._senders = AllowedSenders(allowed)
        self._sock = bind_socket(address, DEFAULT_PORTS[protocol] if port is None else port,
                                 socket.SOCK_DGRAM, rcvbuf)
        self.port = int(self._sock.getsockname()[1])
        self.label = listener_label(protocol, self.port, name)
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self.counters = MirrorCounters()
        self._clock = clock
        self._kernel_time = enable_timestamps(self._sock)
        self._buf = bytearray(MAX_DATAGRAM)
        self._closed = False

    def poll(self, timeout_s: float) -> list[Batch]:
        """Waits up to ``timeout_s`` for datagrams; returns at most one batch."""
        if self._closed:
            return []
        frames: list[bytes] = []
        times: list[float] = []
        points: list[int] = []
        for n, host, ts in read_datagrams(self._sock, self._buf, timeout_s,
                                          max_batch=self.max_batch, max_bytes=self.max_bytes,
                                          kernel_time=self._kernel_time, clock=self._clock):
            self.counters.datagrams += 1
            self.counters.bytes += n
            addr = self._senders.address(host)
            if addr is None:
                self.counters.denied += 1
            else:
                self._unwrap(n, addr, ts, frames, times, points)
        if not frames:
            return []
        return [Batch.from_packets(frames, times, LinkType.ETHERNET, point=points)]

    def _unwrap(self, n: int, addr: int, ts: float, frames: list[bytes], times: list[float],
                points: list[int]) -> None:
        """The Ethernet frame of a datagram of ``n`` bytes from ``addr``, or a counted drop."""
        buf = self._buf
        tzsp = self.protocol == "tzsp"
        inner = tunnels.tzsp(buf, 0, n) if tzsp else tunnels.vxlan(buf, 0, n)
        if inner is None:
            self.counters.invalid += 1
            return
        if inner.link == UNSUPPORTED:
            self.counters.not_ethernet += 1
            return
        frames.append(bytes(buf[inner.pos : n]))
        times.append(ts)
        session = "" if tzsp else f"vni{int.from_bytes(buf[4:7], 'big')}"  # RFC 7348 §5
        points.append(exporter_point(self.protocol, addr, session))

    def stats(self) -> dict[str, MirrorStats]:
        """Per listener: datagrams and bytes received, and the drops by reason."""
        c = self.counters
        lost = 0 if self._closed else socket_drops(self._sock)
        return {self.label: MirrorStats(self.protocol, c.datagrams, c.bytes, c.denied,
                                        c.invalid, c.not_ethernet, up=not self._closed,
                                        socket_drops=lost)}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()

