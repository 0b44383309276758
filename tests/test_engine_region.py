"""`engine._first_naming`: where a region's RTP rows that depend on its SDP take effect.

The reference is the rule itself, row by row: a row goes just before the first message
after it whose SDP names the row's source or destination endpoint, else at the end."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.engine import _endpoint_key, _first_naming
from agent.sip.events import Endpoint

ENDPOINTS = [Endpoint(0, 0xC6120000 + h, 4000 + 2 * p) for h in range(3) for p in range(3)]


def reference(rows: list[int], src: list[Endpoint], dst: list[Endpoint],
              named: dict[int, set[Endpoint]], end: int) -> list[int]:
    out = []
    for r, s, d in zip(rows, src, dst, strict=True):
        later = [i for i in sorted(named) if i > r and (s in named[i] or d in named[i])]
        out.append(later[0] if later else end)
    return out


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_each_row_goes_before_the_first_later_message_naming_it(data: st.DataObject) -> None:
    end = data.draw(st.integers(1, 60))
    cells = st.integers(0, end - 1)
    messages = data.draw(st.sets(cells, max_size=8))
    named = {i: data.draw(st.sets(st.sampled_from(ENDPOINTS), max_size=3)) for i in messages}
    rows = sorted(data.draw(st.sets(cells.filter(lambda r: r not in messages), max_size=30)))
    src = [data.draw(st.sampled_from(ENDPOINTS)) for _ in rows]
    dst = [data.draw(st.sampled_from(ENDPOINTS)) for _ in rows]
    keys = [np.array([_endpoint_key(e) for e in side], np.uint64) for side in (src, dst)]
    got = _first_naming(np.array(rows, np.int64), keys[0], keys[1], named, end)
    assert got.tolist() == reference(rows, src, dst, named, end)


def test_a_row_after_every_naming_message_goes_at_the_end() -> None:
    a, b = ENDPOINTS[0], ENDPOINTS[4]
    named = {3: {a}, 7: {b}, 9: {a}}
    rows = np.array([1, 4, 8, 10], np.int64)
    src = np.array([_endpoint_key(a)] * 4, np.uint64)
    dst = np.array([_endpoint_key(b)] * 4, np.uint64)
    assert _first_naming(rows, src, dst, named, 12).tolist() == [3, 7, 9, 12]
