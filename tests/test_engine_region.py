"""`engine._feeds`: where a region's RTP rows go to the tracker among its events.

Events are SIP messages (their SDP's endpoints) and timers (the endpoints they read or
close). The rule, checked row by row against a brute-force reference: a row is fed
after the last earlier event naming its source or destination and no later than the
first later one; a stream's rows stay in order; and no placement meeting the rule uses
fewer feeds (the reference minimum is the textbook interval-stabbing greedy, written
here independently, over the same windows)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.engine import _endpoint_key, _feeds
from agent.sip.events import Endpoint

ENDPOINTS = [Endpoint(0, 0xC6120000 + h, 4000 + 2 * p) for h in range(3) for p in range(3)]


def windows(rows: list[int], src: list[Endpoint], dst: list[Endpoint],
            named: dict[int, set[Endpoint]], end: int) -> list[tuple[int, int]]:
    """(last earlier event naming the row or -1, first later one or ``end``)."""
    out = []
    for r, s, d in zip(rows, src, dst, strict=True):
        hits = [i for i in sorted(named) if s in named[i] or d in named[i]]
        out.append((max([i for i in hits if i < r], default=-1),
                    min([i for i in hits if i > r], default=end)))
    return out


def fewest_feeds(wins: list[tuple[int, int]], end: int) -> int:
    """Stabbing points (before an event) needed for the windows that close before
    ``end``: sort by closing event, stab at it when the window is not stabbed yet."""
    points: list[int] = []
    for a, b in sorted((w for w in wins if w[1] < end), key=lambda w: w[1]):
        if not any(a < p <= b for p in points):
            points.append(b)
    return len(points)


def placed(rows: list[int], src: list[Endpoint], dst: list[Endpoint],
           named: dict[int, set[Endpoint]], end: int) -> list[int]:
    keys = [np.array([_endpoint_key(e) for e in side], np.uint64) for side in (src, dst)]
    events = {i: {_endpoint_key(e) for e in eps} for i, eps in named.items()}
    feeds = _feeds(np.array(rows, np.int64), keys[0], keys[1], events, end)
    slot = [-1] * len(rows)
    for at, idx in feeds.items():
        assert idx.tolist() == sorted(idx.tolist())  # each feed in row order
        for k in idx.tolist():
            assert slot[k] == -1  # every row fed once
            slot[k] = at
    assert -1 not in slot
    return slot


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_rows_fed_inside_their_windows_in_the_fewest_feeds(data: st.DataObject) -> None:
    end = data.draw(st.integers(1, 60))
    cells = st.integers(0, end - 1)
    events = data.draw(st.sets(cells, max_size=8))
    named = {i: data.draw(st.sets(st.sampled_from(ENDPOINTS), max_size=3)) for i in events}
    rows = sorted(data.draw(st.sets(cells.filter(lambda r: r not in events), max_size=30)))
    src = [data.draw(st.sampled_from(ENDPOINTS)) for _ in rows]
    dst = [data.draw(st.sampled_from(ENDPOINTS)) for _ in rows]
    slot = placed(rows, src, dst, named, end)
    wins = windows(rows, src, dst, named, end)
    for (a, b), p in zip(wins, slot, strict=True):
        assert a < p <= b  # fed before event p: after a, no later than b
        assert p == end or p in named
    streams: dict[tuple[Endpoint, Endpoint], list[int]] = {}
    for s, d, p in zip(src, dst, slot, strict=True):
        streams.setdefault((s, d), []).append(p)
    assert all(v == sorted(v) for v in streams.values())  # a stream's rows in order
    assert len({p for p in slot if p != end}) == fewest_feeds(wins, end)


def test_a_call_ending_after_its_media_is_fed_with_the_others_at_once() -> None:
    """Two calls' media, each named by its answer (event 1, 3) and by its linger timer
    (events 20, 22): one feed before the first timer takes both calls' rows."""
    a, b = ENDPOINTS[0], ENDPOINTS[4]
    named = {1: {a}, 3: {b}, 20: {a}, 22: {b}}
    rows = [5, 6, 7, 8, 9]
    src = [a, b, a, b, ENDPOINTS[8]]
    assert placed(rows, src, src, named, 30) == [20, 20, 20, 20, 20]


def test_a_row_after_every_naming_event_goes_at_the_end() -> None:
    a, b = ENDPOINTS[0], ENDPOINTS[4]
    named = {3: {a}, 7: {b}, 9: {a}}
    assert placed([1, 4, 8, 10], [a] * 4, [b] * 4, named, 12) == [3, 7, 9, 12]
