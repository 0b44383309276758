"""Live capture where AF_PACKET rings do not exist (macOS, BSD): scapy's sniffer.

`ScapySource` has the same ``poll``/``stats``/``close`` shape as
`agent.capture.afpacket.AfPacketSource`, but every packet becomes a Python object
in a sniffer thread, so it manages a few thousand packets per second: enough to
try the agent on a laptop, not for a gateway.  The filter is a libpcap
expression applied by libpcap (no built-in SIP/RTP program, no media truncation
beyond ``snaplen`` when libpcap honours it).

`open_live_source` picks the ring on Linux and this elsewhere.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from agent.capture.afpacket import CaptureStats
from agent.capture.batch import Batch, LinkType

__all__ = ["LiveSource", "ScapySource", "batch_from_scapy", "open_live_source"]

log = logging.getLogger(__name__)

MAX_QUEUED = 100_000  # packets held between polls; beyond that they count as drops


class LiveSource(Protocol):
    """What the daemon needs from a live capture source."""

    def poll(self, timeout_s: float, now: float | None = None) -> list[Batch]: ...

    def stats(self) -> dict[str, CaptureStats]: ...

    def close(self) -> None: ...


def _linktype_of(pkt: Any) -> int:
    try:
        from scapy.config import conf

        num = conf.l2types.layer2num.get(type(pkt))
    except Exception:
        num = None
    return int(num) if num is not None else int(LinkType.ETHERNET)


def batch_from_scapy(packets: Iterable[Any]) -> Batch:
    """A `Batch` of scapy packets (their bytes, ``time`` and link type)."""
    raw: list[bytes] = []
    ts: list[float] = []
    lts: list[int] = []
    wl: list[int] = []
    for p in packets:
        b = bytes(p)
        raw.append(b)
        ts.append(float(p.time))
        lts.append(_linktype_of(p))
        wl.append(max(int(getattr(p, "wirelen", None) or len(b)), len(b)))
    return Batch.from_packets(raw, ts, linktype=lts, wirelen=wl)


class ScapySource:
    """Sniff ``interfaces`` with scapy's `AsyncSniffer` (slow; a warning says so)."""

    def __init__(
        self,
        interfaces: Sequence[str] = ("any",),
        filter_expr: str | None = None,
        *,
        filter: str | None = None,
        **ring_options: object,
    ) -> None:
        """``filter`` is an alias of ``filter_expr`` (the ring's keyword); the ring's
        geometry options (block_size, promisc, ...) are accepted and ignored."""
        from scapy.sendrecv import AsyncSniffer

        filter_expr = filter_expr or filter

        log.warning(
            "AF_PACKET is not available on %s: capturing with scapy, which handles only "
            "a few thousand packets per second",
            sys.platform,
        )
        self._names = list(interfaces)
        ifaces = None if self._names == ["any"] else self._names
        self._queue: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._packets = 0
        self._drops = 0
        self._sniffer = AsyncSniffer(
            iface=ifaces, filter=filter_expr, prn=self._on_packet, store=False
        )
        self._sniffer.start()

    def _on_packet(self, pkt: Any) -> None:
        with self._lock:
            self._packets += 1
            if len(self._queue) >= MAX_QUEUED:
                self._drops += 1
                return
            self._queue.append(pkt)
        self._ready.set()

    def poll(self, timeout_s: float, now: float | None = None) -> list[Batch]:
        if not self._queue:
            self._ready.wait(timeout_s)
        with self._lock:
            pkts = list(self._queue)
            self._queue.clear()
            self._ready.clear()
        return [batch_from_scapy(pkts)] if pkts else []

    def stats(self) -> dict[str, CaptureStats]:
        key = ",".join(self._names)
        up = bool(getattr(self._sniffer, "running", True))
        return {key: CaptureStats(packets=self._packets, drops=self._drops, up=up)}

    def close(self) -> None:
        if getattr(self._sniffer, "running", False):
            self._sniffer.stop(join=True)


def open_live_source(
    interfaces: Sequence[str] = ("any",),
    *,
    bpf: str | None = None,
    sip_ports: Sequence[int] = (5060, 5061),
    snaplen: int = 65535,
    block_size: int = 1 << 20,
    block_count: int = 8,
    block_timeout_ms: int = 100,
    promisc: bool = False,
) -> LiveSource:
    """The AF_PACKET ring on Linux (built-in filter, ``bpf`` ANDed in front), else scapy."""
    if not sys.platform.startswith("linux"):
        return ScapySource(interfaces, bpf)
    from agent.capture.afpacket import AfPacketSource

    return AfPacketSource(
        interfaces,
        block_size=block_size,
        block_count=block_count,
        block_timeout_ms=block_timeout_ms,
        promisc=promisc,
        snaplen=snaplen,
        filter=bpf,
        sip_ports=sip_ports,
    )
