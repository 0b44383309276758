"""Readers for the corpus and its tshark oracle (shared/corpus, beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tshark_table import TsharkStream, parse_rtp_streams

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def corpus_dir() -> Path:
    """The corpus folder; skip outside CI when it is absent, fail in CI."""
    if not (CORPUS / "pcaps").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"corpus missing at {CORPUS} (CI must have shared/ beside the clone)")
        pytest.skip(f"corpus not found at {CORPUS}")
    return CORPUS


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
