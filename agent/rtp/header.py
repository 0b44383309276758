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

from agent.decode.fastpath import windows
from agent.decode.frames import Frames
from agent.media.description import UDPTL_PT

I64 = npt.NDArray[np.int64]
RTCP_PT_MIN, RTCP_PT_MAX = 72, 76
# RFC 3550 §5.1 fixed header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC
_FIXED = np.dtype([("b0", "u1"), ("b1", "u1"), ("seq", ">u2"), ("ts", ">u4"), ("ssrc", ">u4")])


@dataclass(frozen=True, slots=True)
class RtpHeaders:
    """Header columns for the rows that passed (``rows`` index the `Frames`)."""

    rows: I64
    marker: npt.NDArray[np.bool_]
    pt: I64
    seq: I64
    ts: I64
    ssrc: I64
    payload_len: I64  # RTP payload bytes after header, extension and padding, as sent
    payload_at: I64  # offset in ``frames.data`` of the RTP payload
    # of those, how many the capture holds: the kernel filter keeps media only up to
    # the end of its RTP header (`agent.capture.bpf`), so live this is 0
    payload_captured: I64


def _u(data: npt.NDArray[np.uint8], at: I64) -> I64:
    return data[at].astype(np.int64)


def parse_headers(frames: Frames, rows: I64) -> RtpHeaders:
    """Parse the rows that look like RTP; the rest are dropped (caller counts them)."""
    data = frames.data
    rows = rows[frames.payload_len[rows] >= 12]
    off, plen = frames.payload_off[rows], frames.payload_len[rows].astype(np.int64)
    hdr = windows(data, off, 12).view(_FIXED).reshape(-1)  # one gather of fixed headers
    b0, b1 = hdr["b0"].astype(np.int64), hdr["b1"].astype(np.int64)
    hlen = 12 + 4 * (b0 & 0x0F)
    ok = ((b0 >> 6) == 2) & ~(((b1 & 0x7F) >= RTCP_PT_MIN) & ((b1 & 0x7F) <= RTCP_PT_MAX))
    ok &= plen >= hlen
    ext = ok & ((b0 & 0x10) != 0) & (plen >= hlen + 4)
    ok &= ((b0 & 0x10) == 0) | ext
    ei = np.flatnonzero(ext)
    if ei.size:  # RFC 3550 5.3.1: 16-bit profile field, 16-bit length in 32-bit words
        at = off[ei] + hlen[ei] + 2
        hlen[ei] += 4 + 4 * ((_u(data, at) << 8) | _u(data, at + 1))
    # the payload as sent (the capture may end at the RTP header)
    sent = np.maximum(frames.payload_sent[rows].astype(np.int64), plen)
    pad = np.zeros(rows.shape[0], np.int64)  # padding is known only when captured
    pi = np.flatnonzero(ok & ((b0 & 0x20) != 0) & (plen > hlen) & (sent == plen))
    pad[pi] = _u(data, off[pi] + plen[pi] - 1)
    body = sent - hlen - pad
    ok &= body >= 0
    k = np.flatnonzero(ok)
    if k.size != rows.size:  # (mostly every row passes: no gathers then)
        rows, hdr, b1, body, off, hlen, plen = (rows[k], hdr[k], b1[k], body[k], off[k],
                                                hlen[k], plen[k])
    return RtpHeaders(
        rows=rows,
        marker=(b1 & 0x80) != 0,
        pt=b1 & 0x7F,
        seq=hdr["seq"].astype(np.int64),
        ts=hdr["ts"].astype(np.int64),
        ssrc=hdr["ssrc"].astype(np.int64),
        payload_len=body,
        payload_at=off + hlen,
        payload_captured=np.minimum(plen - hlen, body),
    )


def parse_udptl(frames: Frames, rows: I64) -> RtpHeaders:
    """UDPTL packets (T.38 fax, ITU-T T.38 §9.1: a 16-bit sequence number, then the
    primary IFP packet) as header columns of a stream of placeholder type ``pt``: the
    sequence number measures loss, duplicates and reordering; no timestamp (no jitter),
    no SSRC (0). Rows shorter than a sequence number and one byte are dropped."""
    data = frames.data
    rows = rows[frames.payload_len[rows] >= 3]
    off = frames.payload_off[rows].astype(np.int64)
    n = rows.shape[0]
    return RtpHeaders(
        rows=rows, marker=np.zeros(n, bool), pt=np.full(n, UDPTL_PT, np.int64),
        seq=(_u(data, off) << 8) | _u(data, off + 1), ts=np.zeros(n, np.int64),
        ssrc=np.zeros(n, np.int64), payload_len=frames.payload_len[rows].astype(np.int64) - 2,
        payload_at=off + 2, payload_captured=frames.payload_len[rows].astype(np.int64) - 2,
    )


def merge(a: RtpHeaders, b: RtpHeaders) -> RtpHeaders:
    """Both sets of header columns, in row (arrival) order."""
    if b.rows.size == 0:
        return a
    order = np.argsort(np.concatenate((a.rows, b.rows)), kind="stable")
    return RtpHeaders(*(np.concatenate((getattr(a, f), getattr(b, f)))[order]
                        for f in RtpHeaders.__dataclass_fields__))
