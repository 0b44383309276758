"""`agent.decode.fastpath` block reads: `windows`, `field`."""

from __future__ import annotations

import numpy as np

from agent.decode.fastpath import field, windows


def test_windows_are_the_bytes_at_each_offset() -> None:
    data = np.arange(100, dtype=np.uint8)
    at = np.array([0, 27, 5, 5, 36], np.int64)
    for width in (12, 16, 20, 64):
        got = windows(data, at, width)
        assert got.tolist() == [list(range(a, a + width)) for a in at.tolist()], width
    assert windows(data, at[:0], 16).shape == (0, 16)


def test_fields_are_big_endian_at_their_offset() -> None:
    block = windows(np.arange(80, dtype=np.uint8), np.array([0, 10], np.int64), 16)
    assert field(block, 3, "u1").tolist() == [3, 13]
    assert field(block, 2, ">u2").tolist() == [0x0203, 0x0C0D]
    assert field(block, 12, ">u4").tolist() == [0x0C0D0E0F, 0x16171819]
