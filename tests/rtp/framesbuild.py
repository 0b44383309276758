"""Build `Frames` directly from (ts, src, sport, dst, dport, udp payload) tuples for tests."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from agent.decode.frames import COLUMN_DTYPES, Frames, addr_to_words

Row = tuple[float, str, int, str, int, bytes]


def rtp(seq: int, ts: int, ssrc: int, pt: int = 0, marker: bool = False,
        payload: bytes = b"\xff" * 160) -> bytes:
    """An RTP packet (RFC 3550 §5.1 fixed header, no CSRC/extension/padding)."""
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload


def build_frames(rows: Sequence[Row], dscp: int = 46, vlan: int = -1) -> Frames:
    """UDP/IPv4 (or IPv6) frames; payload bytes laid out back to back in ``data``."""
    n = len(rows)
    cols = {name: np.zeros(n, dtype=dt) for name, dt in COLUMN_DTYPES.items()}
    data = bytearray()
    for i, (ts, src, sport, dst, dport, payload) in enumerate(rows):
        sh, sl = addr_to_words(src)
        dh, dl = addr_to_words(dst)
        cols["pkt"][i], cols["ts"][i] = i, ts
        cols["ip_version"][i] = 6 if ":" in src else 4
        cols["src_hi"][i], cols["src_lo"][i], cols["dst_hi"][i], cols["dst_lo"][i] = sh, sl, dh, dl
        cols["sport"][i], cols["dport"][i], cols["proto"][i] = sport, dport, 17
        cols["dscp"][i], cols["vlan"][i], cols["pcp"][i] = dscp, vlan, 5 if vlan >= 0 else -1
        cols["payload_off"][i], cols["payload_len"][i] = len(data), len(payload)
        cols["wire_len"][i] = len(payload) + 42
        data += payload
    return Frames(data=np.frombuffer(bytes(data), dtype=np.uint8), **cols)  # type: ignore[arg-type]


def g711_stream(t0: float, src: str, sport: int, dst: str, dport: int, ssrc: int, n: int,
                seq0: int = 1000, ts0: int = 5000, pt: int = 8) -> list[Row]:
    return [(t0 + 0.02 * i, src, sport, dst, dport, rtp(seq0 + i, ts0 + 160 * i, ssrc, pt))
            for i in range(n)]
