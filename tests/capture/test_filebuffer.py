"""Tests for agent/capture/filebuffer.py: the row gather that decodes record headers."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from agent.capture.filebuffer import gather_rows


@given(
    data=st.binary(min_size=1, max_size=200),
    width=st.integers(1, 40),
    picks=st.lists(st.integers(0, 10_000), max_size=20),
)
def test_gather_rows_matches_zero_padded_slices(data: bytes, width: int, picks: list[int]) -> None:
    offsets = np.array([p % len(data) for p in picks], dtype=np.int64)
    rows = gather_rows(np.frombuffer(data, dtype=np.uint8), offsets, width)
    padded = data + b"\0" * width
    assert rows.shape == (len(picks), width)
    assert [r.tobytes() for r in rows] == [padded[o : o + width] for o in offsets.tolist()]
