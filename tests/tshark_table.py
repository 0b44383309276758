"""The one parser of tshark's ``-q -z rtp,streams`` table, for every test that compares."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TsharkStream:
    """One row. ``src``/``dst`` are addresses; ``src_endpoint``/``dst_endpoint`` are in
    the form `analyze --json` prints (``ip:port``, ``[ip6]:port``)."""

    src: str
    sport: int
    dst: str
    dport: int
    ssrc: int
    payload: str
    packets: int
    lost: int  # tshark's: expected - received, negative with duplicates
    min_delta_ms: float
    mean_delta_ms: float
    max_delta_ms: float
    min_jitter_ms: float  # -1.000 when tshark had no clock for the payload type
    mean_jitter_ms: float
    max_jitter_ms: float
    problems: bool

    @property
    def src_endpoint(self) -> str:
        return endpoint(self.src, self.sport)

    @property
    def dst_endpoint(self) -> str:
        return endpoint(self.dst, self.dport)


def endpoint(addr: str, port: int | str) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


# Payload names may contain spaces and commas ("g711A, telephone-event"), so the row
# is anchored on the SSRC on the left and on the numbers on the right.
_ROW = re.compile(
    r"^\s*\S+\s+\S+\s+(?P<src>\S+)\s+(?P<sport>\d+)\s+(?P<dst>\S+)\s+(?P<dport>\d+)\s+"
    r"0x(?P<ssrc>[0-9A-Fa-f]+)\s+(?P<payload>.*?)\s+(?P<pkts>\d+)\s+(?P<lost>-?\d+)\s+"
    r"\(\s*-?[\d.]+%\)\s+"
    r"(?P<d0>-?[\d.]+)\s+(?P<d1>-?[\d.]+)\s+(?P<d2>-?[\d.]+)\s+"
    r"(?P<j0>-?[\d.]+)\s+(?P<j1>-?[\d.]+)\s+(?P<j2>-?[\d.]+)\s*(?P<prob>X?)\s*$"
)


def parse_rtp_streams(text: str) -> list[TsharkStream]:
    """Rows of ``tshark -q -z rtp,streams`` output (tshark 3.x/4.x layout)."""
    out = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            out.append(TsharkStream(
                src=m["src"], sport=int(m["sport"]), dst=m["dst"], dport=int(m["dport"]),
                ssrc=int(m["ssrc"], 16), payload=m["payload"].strip(), packets=int(m["pkts"]),
                lost=int(m["lost"]), min_delta_ms=float(m["d0"]), mean_delta_ms=float(m["d1"]),
                max_delta_ms=float(m["d2"]), min_jitter_ms=float(m["j0"]),
                mean_jitter_ms=float(m["j1"]), max_jitter_ms=float(m["j2"]),
                problems=m["prob"] == "X",
            ))
    return out
