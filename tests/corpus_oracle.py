"""Readers for the corpus and its tshark oracle (shared/corpus, beside the repo)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def corpus_dir() -> Path:
    """The corpus folder; skip outside CI when it is absent, fail in CI."""
    if not (CORPUS / "pcaps").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"corpus missing at {CORPUS} (CI must have shared/ beside the clone)")
        pytest.skip(f"corpus not found at {CORPUS}")
    return CORPUS


@dataclass(frozen=True)
class TsharkStream:
    src: str  # "ip:port" or "[ip6]:port", as analyze --json prints it
    dst: str
    ssrc: int
    payload: str
    packets: int
    lost: int
    min_delta_ms: float
    mean_delta_ms: float
    max_delta_ms: float
    min_jitter_ms: float
    mean_jitter_ms: float
    max_jitter_ms: float


_ROW = re.compile(
    r"^\s*\S+\s+\S+\s+(?P<src>\S+)\s+(?P<sport>\d+)\s+(?P<dst>\S+)\s+(?P<dport>\d+)\s+"
    r"(?P<ssrc>0x[0-9A-Fa-f]+)\s+(?P<payload>.*?)\s+(?P<pkts>\d+)\s+(?P<lost>-?\d+) \(\S+%\)\s+"
    r"(?P<d0>-?[\d.]+)\s+(?P<d1>-?[\d.]+)\s+(?P<d2>-?[\d.]+)\s+"
    r"(?P<j0>-?[\d.]+)\s+(?P<j1>-?[\d.]+)\s+(?P<j2>-?[\d.]+)\s*X?\s*$"
)


def endpoint(addr: str, port: str) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def parse_rtp_streams(text: str) -> list[TsharkStream]:
    """Rows of ``tshark -q -z rtp,streams`` output."""
    out = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if not m:
            continue
        out.append(
            TsharkStream(
                src=endpoint(m["src"], m["sport"]),
                dst=endpoint(m["dst"], m["dport"]),
                ssrc=int(m["ssrc"], 16),
                payload=m["payload"],
                packets=int(m["pkts"]),
                lost=int(m["lost"]),
                min_delta_ms=float(m["d0"]),
                mean_delta_ms=float(m["d1"]),
                max_delta_ms=float(m["d2"]),
                min_jitter_ms=float(m["j0"]),
                mean_jitter_ms=float(m["j1"]),
                max_jitter_ms=float(m["j2"]),
            )
        )
    return out


def oracle_streams(capture: str) -> tuple[str, list[TsharkStream]]:
    """tshark's streams for a corpus capture: the default decode if it found any, else the
    heuristic one, else decode-as. Returns (which variant, streams)."""
    base = corpus_dir() / "oracle" / capture
    for variant in ("rtp_streams.txt", "rtp_streams.heur.txt", "rtp_streams.decode_as_rtp.txt"):
        f = Path(f"{base}.{variant}")
        if f.exists():
            rows = parse_rtp_streams(f.read_text())
            if rows:
                return variant, rows
    return "none", []
