"""What the kernel filter keeps is enough: the corpus captures cut exactly as the live
ring would cut them (the built-in BPF program, run by the interpreter the kernel test
holds it to, decides each frame's captured length; media ends at its RTP header) give
the same call and stream records as the whole captures."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bpfinterp import kept
from corpus_oracle import corpus_dir
from scapy.utils import RawPcapNgReader, RawPcapReader

from agent.capture.bpf import builtin_program
from agent.config import CaptureConfig
from agent.daemon import kept_ports

ETHERNET, LINKTYPE_RAW = 1, 101
#: The agent's own program (SIP, tunnel and HEP ports kept whole), with 5090 among the
#: SIP ports: sngrep_ipip_sip_tcp.pcap's SIP runs over TCP on a carrier's port 5090,
#: which the kernel keeps only when the admin lists it (TCP has no first-byte test).
PROG = builtin_program(kept_ports(CaptureConfig(sip_ports=[5060, 5061, 5090])))


def _frames(path: Path) -> tuple[int, list[tuple[bytes, int, int]]]:
    """The link type and (frame, seconds, microseconds) of a capture (one link type)."""
    out = []
    links = set()
    with RawPcapReader(str(path)) as reader:  # a pcapng file gives a RawPcapNgReader
        for data, meta in reader:
            if isinstance(reader, RawPcapNgReader):
                links.add(meta.linktype)
                us = ((meta.tshigh << 32) | meta.tslow) * 1_000_000 // meta.tsresol
                out.append((data, us // 1_000_000, us % 1_000_000))
            else:
                links.add(reader.linktype)
                out.append((data, meta.sec, meta.usec))
    (link,) = links
    return link, out


def _write(path: Path, link: int, frames: list[tuple[bytes, int, int, int]]) -> None:
    """Classic pcap with each frame's captured length (frame, sec, usec, wire length)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, link)]
    for data, sec, usec, wire in frames:
        out.append(struct.pack("<IIII", sec, usec, len(data), wire) + data)
    path.write_bytes(b"".join(out))


def _records(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "analyze", "--json", "--streams",
                           "--no-progress", str(path)], capture_output=True, text=True,
                          timeout=300, check=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return [r for r in rows if r.get("kind") in ("call", "stream")]


#: the links the ring's filter runs on (`agent.capture.bpf`): Ethernet (and loopback,
#: which looks like it) and raw IP devices (tun, WireGuard)
HATYPES = {ETHERNET: 1, LINKTYPE_RAW: 65534}
CAPTURES = sorted(p.name for p in (corpus_dir() / "pcaps").glob("*.pcap*")
                  if (corpus_dir() / "pcaps").is_dir() and _frames(p)[0] in HATYPES)


def test_the_corpus_has_captures_of_each_link_the_ring_sees() -> None:
    links = {_frames(corpus_dir() / "pcaps" / n)[0] for n in CAPTURES}
    assert links == set(HATYPES) and len(CAPTURES) >= 20


@pytest.mark.parametrize("name", CAPTURES)
def test_the_kernel_cut_capture_gives_the_whole_captures_records(name: str,
                                                                 tmp_path: Path) -> None:
    link, frames = _frames(corpus_dir() / "pcaps" / name)
    hatype = HATYPES[link]
    cut = [(data[: kept(PROG, data, hatype)], sec, usec, len(data))
           for data, sec, usec in frames]
    whole = tmp_path / "whole.pcap"
    ring = tmp_path / "ring.pcap"
    _write(whole, link, [(d, s, u, len(d)) for d, s, u in frames])
    _write(ring, link, [c for c in cut if c[0]])  # what the filter drops never reaches it
    want = _records(whole)
    assert _records(ring) == want
    if any(r["kind"] == "stream" for r in want):  # media was cut to its headers
        assert sum(len(d) for d, *_ in cut) < sum(len(d) for d, *_ in frames)
