"""`parse_headers` against a per-packet `struct` reading of RFC 3550 §5.1/§5.3.1."""

from __future__ import annotations

import struct

import numpy as np
from framesbuild import build_frames
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.rtp.header import parse_headers


def reference(payload: bytes) -> tuple[bool, int, int, int, int, int] | None:
    """(marker, pt, seq, ts, ssrc, payload bytes) of one UDP payload, None if not RTP."""
    if len(payload) < 12:
        return None
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", payload)
    hlen = 12 + 4 * (b0 & 0x0F)
    if b0 >> 6 != 2 or 72 <= b1 & 0x7F <= 76 or len(payload) < hlen:
        return None
    if b0 & 0x10:
        if len(payload) < hlen + 4:
            return None
        hlen += 4 + 4 * struct.unpack_from("!H", payload, hlen + 2)[0]
    pad = payload[-1] if b0 & 0x20 and len(payload) > hlen else 0
    body = len(payload) - hlen - pad
    return None if body < 0 else (bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, body)


def _rtp(cc: int, ext: int | None, pad: int, pt: int, fixed: bytes, body: bytes) -> bytes:
    """A v2 header with ``cc`` CSRCs, an extension of ``ext`` words (None: none) and a
    padding count ``pad`` in the last byte (0: no P bit); lengths may be inconsistent."""
    b0 = 0x80 | cc | (0x10 if ext is not None else 0) | (0x20 if pad else 0)
    out = bytes([b0, pt]) + fixed + bytes(4 * cc)
    if ext is not None:
        out += struct.pack("!HH", 0xBEDE, ext) + bytes(4 * ext)
    return out + body + (bytes([pad]) if pad else b"")


packet = st.builds(
    _rtp, st.integers(0, 3), st.none() | st.integers(0, 3), st.integers(0, 12),
    st.integers(0, 255), st.binary(min_size=10, max_size=10), st.binary(max_size=12),
) | st.builds(lambda flags, rest: bytes([flags]) + rest, st.integers(0, 255),
              st.binary(max_size=30))


@settings(max_examples=300, deadline=None)
@given(st.lists(packet, min_size=1, max_size=30))
def test_parse_headers_matches_a_struct_reading(payloads: list[bytes]) -> None:
    frames = build_frames([(1.0 + i, "10.0.0.1", 4000, "10.0.0.2", 5000, p)
                           for i, p in enumerate(payloads)])
    h = parse_headers(frames, np.arange(len(payloads), dtype=np.int64))
    want = {i: r for i, p in enumerate(payloads) if (r := reference(p)) is not None}
    assert h.rows.tolist() == sorted(want)
    got = zip(h.marker.tolist(), h.pt.tolist(), h.seq.tolist(), h.ts.tolist(),
              h.ssrc.tolist(), h.payload_len.tolist(), strict=True)
    assert list(got) == [want[i] for i in sorted(want)]
