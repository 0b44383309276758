"""`LazyHeap`: a priority queue whose entries go stale instead of being removed.

Theory of operation. The tables keyed by the network (streams, candidates, calls)
need "the entry with the smallest X" (the least recently seen, the oldest
unanswered call, the earliest deadline) at O(log n), while X changes on every
packet. Re-keying a heap entry is O(n); instead the owner pushes a new entry
whenever it wants and says, through ``live``, whether an entry still stands for
its key (typically: the key's current serial is the entry's). Stale entries are
skipped when they reach the top, and the heap is rebuilt from its live entries
when stale ones outnumber them (``len(heap) > 2 * live + slack``), so its size
stays O(live) and every operation O(log n) amortised, whatever the traffic.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

P = TypeVar("P")  # a priority: a float, or a tuple of them (compared in order)
K = TypeVar("K")
_SLACK = 64


class LazyHeap(Generic[P, K]):
    """Min-heap of (priority, serial, key), the serial breaking ties in push order; see
    the module docstring."""

    def __init__(self, live: Callable[[tuple[P, int, K]], bool],
                 serial: itertools.count[int] | None = None) -> None:
        self._live = live
        self._serial = serial if serial is not None else itertools.count()
        self._heap: list[tuple[P, int, K]] = []
        self.rebuilds = 0  # times the stale entries were swept out

    def __len__(self) -> int:
        """Entries held, stale ones included (O(live) by construction)."""
        return len(self._heap)

    def push(self, priority: P, key: K, live_count: int) -> int:
        """Add an entry for ``key``; returns its serial. ``live_count`` is how many keys
        the owner holds now (the bound on live entries), for the rebuild rule."""
        serial = next(self._serial)
        heapq.heappush(self._heap, (priority, serial, key))
        if len(self._heap) > 2 * live_count + _SLACK:
            self._heap = [e for e in self._heap if self._live(e)]
            heapq.heapify(self._heap)
            self.rebuilds += 1
        return serial

    def peek(self) -> tuple[P, int, K] | None:
        """The smallest live entry (stale ones above it are dropped), None if empty."""
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0] if heap else None

    def pop(self) -> tuple[P, int, K] | None:
        """Remove and return the smallest live entry, None if empty."""
        top = self.peek()
        if top is not None:
            heapq.heappop(self._heap)
        return top

    def upto(self, bound: P) -> list[tuple[P, int, K]]:
        """The live entries whose priority is at most ``bound`` (no order; see
        `heap_upto`)."""
        return [e for e in heap_upto(self._heap, bound) if self._live(e)]

    def clear(self) -> None:
        self._heap.clear()


def heap_upto(heap: list[tuple[P, int, K]], bound: P) -> list[tuple[P, int, K]]:
    """The entries of a heapq list whose priority is at most ``bound`` (in no particular
    order): a walk down from the root that stops where the heap property says nothing
    below can qualify, so it costs the entries found, not the heap's size."""
    out: list[tuple[P, int, K]] = []
    todo, n = [0], len(heap)
    while todo:
        i = todo.pop()
        if i < n and not bound < heap[i][0]:  # type: ignore[operator]
            out.append(heap[i])
            todo += (2 * i + 1, 2 * i + 2)
    return out
