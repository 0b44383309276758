"""Vectorised RTP fixed-header parse (RFC 3550 §5.1) from `Frames` payload bytes.

Every field is gathered for all rows at once (``data[payload_off + k]``). The
checks are the cheap ones a heuristic dissector uses: version 2, not an RTCP
packet type (RFC 5761 §4: SR..APP 200-204 appear as PT 72-76 with the marker
bit set), and a UDP payload long enough for the CSRC list, the header
extension (RFC 3550 §5.3.1) and the padding count (§5.1 P bit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.decode.frames import Frames

I64 = npt.NDArray[np.int64]
RTCP_PT_MIN, RTCP_PT_MAX = 72, 76


@dataclass(frozen=True, slots=True)
class RtpHeaders:
    """Header columns for the rows that passed (``rows`` index the `Frames`)."""

    rows: I64
    marker: npt.NDArray[np.bool_]
    pt: I64
    seq: I64
    ts: I64
    ssrc: I64
    payload_len: I64  # RTP payload bytes after header, extension and padding
    payload_at: I64  # offset in ``frames.data`` of the RTP payload


def _u(data: npt.NDArray[np.uint8], at: I64) -> I64:
    return data[at].astype(np.int64)


def parse_headers(frames: Frames, rows: I64) -> RtpHeaders:
    """Parse the rows that look like RTP; the rest are dropped (caller counts them)."""
    data = frames.data
    plen = frames.payload_len[rows].astype(np.int64)
    rows = rows[plen >= 12]
    off, plen = frames.payload_off[rows], frames.payload_len[rows].astype(np.int64)
    b0, b1 = _u(data, off), _u(data, off + 1)
    cc = b0 & 0x0F
    hlen = 12 + 4 * cc
    ok = ((b0 >> 6) == 2) & ~(((b1 & 0x7F) >= RTCP_PT_MIN) & ((b1 & 0x7F) <= RTCP_PT_MAX))
    ok &= plen >= hlen
    ext = ok & ((b0 & 0x10) != 0) & (plen >= hlen + 4)
    ok &= ((b0 & 0x10) == 0) | ext
    words = np.zeros(rows.shape[0], np.int64)
    ei = np.flatnonzero(ext)
    at = off[ei] + hlen[ei] + 2
    words[ei] = (_u(data, at) << 8) | _u(data, at + 1)
    hlen = hlen + np.where(ext, 4 + 4 * words, 0)
    pad = np.zeros(rows.shape[0], np.int64)
    pi = np.flatnonzero(ok & ((b0 & 0x20) != 0) & (plen > hlen))
    pad[pi] = _u(data, off[pi] + plen[pi] - 1)
    body = plen - hlen - pad
    ok &= body >= 0
    k = np.flatnonzero(ok)
    o = off[k]

    def be(n: int, start: int) -> I64:
        v = np.zeros(k.shape[0], np.int64)
        for i in range(n):
            v = (v << 8) | _u(data, o + start + i)
        return v

    return RtpHeaders(
        rows=rows[k],
        marker=(b1[k] & 0x80) != 0,
        pt=b1[k] & 0x7F,
        seq=be(2, 2),
        ts=be(4, 4),
        ssrc=be(4, 8),
        payload_len=body[k],
        payload_at=o + hlen[k],
    )
