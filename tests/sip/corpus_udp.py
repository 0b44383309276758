"""UDP payloads of plain Ethernet/IP captures in the shared corpus, for parser tests.

Reading is done with dpkt (a declared dependency) so these tests do not depend
on the probe's own capture and decode layers, which are tested elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def corpus_dir() -> Path:
    """The corpus, or skip (fail under CI, where it must be present)."""
    if not (CORPUS / "pcaps").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"corpus missing at {CORPUS}")
        pytest.skip(f"corpus not found at {CORPUS}")
    return CORPUS


def udp_payloads(capture: Path) -> Iterator[tuple[int, int, bytes]]:
    """(source port, destination port, payload) of every Ethernet/IPv4|IPv6/UDP packet."""
    dpkt = pytest.importorskip("dpkt")
    with capture.open("rb") as handle:
        reader = dpkt.pcap.Reader(handle)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        for _ts, frame in reader:
            ip = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
                continue
            udp = ip.data
            if isinstance(udp, dpkt.udp.UDP):
                yield udp.sport, udp.dport, bytes(udp.data)
