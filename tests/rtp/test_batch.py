"""`agent.rtp.batch` helpers (the statistics themselves: tests/rtp/test_equivalence.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from agent.rtp.batch import stable_order


@given(st.lists(st.integers(0, 40000) | st.integers(-3, 3) | st.integers(0, 5), max_size=60))
def test_stable_order_is_argsort_stable(values: list[int]) -> None:
    x = np.array(values, np.int64)
    assert stable_order(x).tolist() == np.argsort(x, kind="stable").tolist()
