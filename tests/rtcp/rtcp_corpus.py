"""UDP payloads of plain Ethernet captures in the shared corpus (via dpkt, so
these tests stay independent of the probe's own capture/decode layers)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def capture_path(name: str) -> Path:
    """A corpus capture, or skip (fail under CI, where the corpus must be present)."""
    path = CORPUS / "pcaps" / name
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"corpus capture missing: {path}")
        pytest.skip(f"corpus capture not found: {path}")
    return path


def udp_payloads(capture: Path) -> Iterator[tuple[float, int, int, bytes]]:
    """(timestamp s, source port, destination port, payload) of Ethernet/IP/UDP packets."""
    dpkt = pytest.importorskip("dpkt")
    with capture.open("rb") as handle:
        reader = dpkt.pcap.Reader(handle)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        for ts, frame in reader:
            ip = dpkt.ethernet.Ethernet(frame).data
            if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.udp.UDP):
                yield float(ts), ip.data.sport, ip.data.dport, bytes(ip.data.data)
