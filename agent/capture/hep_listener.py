"""HEP over UDP and TCP: collector sockets as `Batch` producers, beside the capture ring.

A PBX or proxy (Kamailio siptrace with ``hep_mode_on``, OpenSIPS, Asterisk
res_hep, FreeSWITCH, rtpengine, heplify) sends each packet it captured to the
probe as one HEP datagram. `HepListener` receives them on a plain UDP socket
(no CAP_NET_RAW), drops and counts datagrams from senders outside the allowed
CIDRs (an empty list allows nobody: the admin names the senders), and hands on
each HEP record as the raw IP packet it describes (`agent.decode.hep_unwrap`),
with the HEP capture time as the packet time (a v1 record has none: the receive
time, the kernel's on UDP: `agent.capture.listen`). Its ``poll``/``stats``/``close``
are those of the capture sources, so the daemon can drive it like a ring.

Bounded: one ``poll`` reads at most ``max_batch`` datagrams (or ``max_bytes``,
denied ones included), the rest wait in the socket buffer (``rcvbuf``), where the
kernel drops what does not fit.

`HepTcpListener` takes HEP3 over TCP (Kamailio ``duplicate_uri`` with
``transport=tcp``, heplify ``-nt tcp``): a stream of HEP3 packets, each framed by
its own total length. A sender outside the allowed CIDRs is closed at accept; a
stream that stops making sense (no ``HEP3`` at a frame start) is closed, since
the framing is lost. HEP v1/v2 carry no total length and cannot be framed on a
stream. Bounded: ``max_connections`` (further ones are refused), at most one
65535-byte frame buffered per connection.

Drops in ``stats``: denied senders, datagrams that are not HEP or do not decode, and
(UDP) the datagrams the socket buffer had no room for (`agent.capture.listen`), also
on their own as ``socket_drops``. What is not yet here: TLS.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.capture.afpacket import CaptureStats
from agent.capture.batch import Batch, LinkType
from agent.capture.listen import (
    MAX_DATAGRAM,
    AllowedSenders,
    bind_socket,
    enable_timestamps,
    read_datagrams,
    socket_drops,
)
from agent.decode.hep_stream import HepFramer, HepStreamError
from agent.decode.hep_unwrap import HEP_PORT, HepCounters, HepUnwrapper


@dataclass(slots=True)
class ListenerCounters:
    """Running totals of one listener (monotonic)."""

    datagrams: int = 0  # received, from any sender
    bytes: int = 0
    denied: int = 0  # from a sender outside the allowed CIDRs, dropped
    # TCP only
    connections: int = 0  # accepted
    refused: int = 0  # over max_connections
    desynced: int = 0  # closed: no HEP3 frame where one had to start


class _HepSocket:
    """What both listeners share: the socket, the allowed senders, the HEP decoder."""

    def __init__(self, address: str, port: int, allowed: Sequence[str],
                 kind: socket.SocketKind, rcvbuf: int, clock: Callable[[], float]) -> None:
        self._senders = AllowedSenders(allowed)
        self._sock = bind_socket(address, port, kind, rcvbuf)
        self.port = int(self._sock.getsockname()[1])
        self.counters = ListenerCounters()
        self._hep = HepUnwrapper(ports=())
        self._clock = clock
        self._closed = False

    @property
    def hep(self) -> HepCounters:
        """Decode counters of the records received (versions, errors, duplicates...)."""
        return self._hep.counters

    def _emit(self, frame: bytes, received: float, packets: list[bytes], times: list[float],
              points: list[int]) -> None:
        """One HEP packet -> the raw IP packet it carries, at its HEP time (v1: the
        ``received`` time), seen at its capture agent's observation point."""
        pkt, ts, point = self._hep.rebuild(frame)
        if pkt is not None:
            packets.append(pkt)
            times.append(received if ts is None else ts)
            points.append(point)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()


class HepListener(_HepSocket):
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
        super().__init__(address, port, allowed, socket.SOCK_DGRAM, rcvbuf, clock)
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self._buf = bytearray(MAX_DATAGRAM)
        self._kernel_time = enable_timestamps(self._sock)

    def poll(self, timeout_s: float) -> list[Batch]:
        """Waits up to ``timeout_s`` for datagrams; returns at most one batch."""
        if self._closed:
            return []
        packets: list[bytes] = []
        times: list[float] = []
        points: list[int] = []
        view = memoryview(self._buf)
        for n, host, received in read_datagrams(
                self._sock, self._buf, timeout_s, max_batch=self.max_batch,
                max_bytes=self.max_bytes, kernel_time=self._kernel_time, clock=self._clock):
            self.counters.datagrams += 1
            self.counters.bytes += n
            if not self._senders.allowed(host):
                self.counters.denied += 1
                continue
            self._emit(bytes(view[:n]), received, packets, times, points)
        if not packets:
            return []
        return [Batch.from_packets(packets, times, LinkType.RAW, point=points)]

    def stats(self) -> dict[str, CaptureStats]:
        """Per listener: datagrams received, and those dropped (denied, not HEP, errors,
        no room in the socket buffer)."""
        c = self._hep.counters
        lost = 0 if self._closed else socket_drops(self._sock)
        drops = (self.counters.denied + c.not_hep + c.errors_v1 + c.errors_v2 + c.errors_v3
                 + lost)
        return {f"hep:{self.port}": CaptureStats(packets=self.counters.datagrams, drops=drops,
                                                 up=not self._closed, socket_drops=lost)}


class HepTcpListener(_HepSocket):
    """Receives HEP3 streams on ``address``:``port`` (TCP) from the ``allowed`` CIDRs."""

    def __init__(
        self,
        address: str = "0.0.0.0",
        port: int = HEP_PORT,
        allowed: Sequence[str] = (),
        *,
        max_connections: int = 64,
        rcvbuf: int = 1 << 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(address, port, allowed, socket.SOCK_STREAM, rcvbuf, clock)
        self.max_connections = max_connections
        self._conns: dict[socket.socket, HepFramer] = {}

    def poll(self, timeout_s: float) -> list[Batch]:
        """Waits up to ``timeout_s``; accepts, reads what is ready, returns at most one
        batch of the complete frames."""
        if self._closed:
            return []
        ready, _, _ = select.select([self._sock, *self._conns], [], [], max(0.0, timeout_s))
        packets: list[bytes] = []
        times: list[float] = []
        points: list[int] = []
        for sock in ready:
            if sock is self._sock:
                self._accept()
            elif sock in self._conns:
                self._read(sock, packets, times, points)
        if not packets:
            return []
        return [Batch.from_packets(packets, times, LinkType.RAW, point=points)]

    def _accept(self) -> None:
        try:
            conn, peer = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        if not self._senders.allowed(str(peer[0])):
            self.counters.denied += 1
            conn.close()
        elif len(self._conns) >= self.max_connections:
            self.counters.refused += 1
            conn.close()
        else:
            conn.setblocking(False)
            self.counters.connections += 1
            self._conns[conn] = HepFramer()

    def _read(self, conn: socket.socket, packets: list[bytes], times: list[float],
              points: list[int]) -> None:
        framer = self._conns[conn]
        try:
            data = conn.recv(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        self.counters.bytes += len(data)
        # one recv is at most 64 KiB, so the frames it completes (and the partial one
        # left) are bounded per connection and poll
        try:
            frames = framer.feed(data)
        except HepStreamError:
            self.counters.desynced += 1
            self._drop(conn)
            return
        for frame in frames:
            self.counters.datagrams += 1
            self._emit(frame, self._clock(), packets, times, points)

    def _drop(self, conn: socket.socket) -> None:
        self._conns.pop(conn, None)
        conn.close()

    def stats(self) -> dict[str, CaptureStats]:
        c = self._hep.counters
        drops = self.counters.denied + self.counters.refused + c.errors_v3
        return {f"hep-tcp:{self.port}": CaptureStats(packets=self.counters.datagrams,
                                                     drops=drops, up=not self._closed)}

    def close(self) -> None:
        for conn in list(self._conns):
            self._drop(conn)
        super().close()
