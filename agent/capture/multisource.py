"""Several packet sources driven as one: the capture ring and the remote listeners.

`MultiSource.poll` waits on the first source (the ring, whose own timeout bounds the
loop) and then takes what the others have without waiting, so a listener's packets
reach the engine within one poll timeout. Batches keep their packets' own times; the
engine measures each packet at its time and runs its timers on the running maximum
of packet time, so interleaving sources cannot stall or rewind a timer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from agent.capture.batch import Batch


class _Source(Protocol):
    def poll(self, timeout_s: float) -> list[Batch]: ...

    def stats(self) -> Any: ...

    def close(self) -> None: ...


class MultiSource:
    """``sources[0]`` is waited on; the rest are polled without waiting."""

    def __init__(self, sources: Sequence[_Source]) -> None:
        if not sources:
            raise ValueError("no sources")
        self.sources = list(sources)

    def poll(self, timeout_s: float) -> list[Batch]:
        out = self.sources[0].poll(timeout_s)
        for source in self.sources[1:]:
            out.extend(source.poll(0.0))
        return out

    def stats(self) -> dict[str, Any]:
        """Every source's per-interface (or per-listener) counters in one mapping."""
        merged: dict[str, Any] = {}
        for source in self.sources:
            merged.update(source.stats())
        return merged

    def close(self) -> None:
        for source in self.sources:
            source.close()
