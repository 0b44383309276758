"""Quality per interval of packet time, so a bad minute is not hidden by a good hour.

Every ``interval_s`` the engine snapshots each running stream; the difference
to the previous snapshot (packets expected and lost, loss runs, jitter-buffer
discards) is one interval, rated with the same E-model as the whole call. The
lowest interval MOS-CQ of a stream is its ``mos_min``. An interval with fewer
than ``min_expected`` packets (a stream's tail) is not rated: a handful of
packets says nothing about a minute. State is per running stream and leaves
with its record; the table is capped (``tables.interval_streams``, least recently
observed evicted and counted), so a stream whose record is never built (its
call evicted, its state lost) cannot pin it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

from agent.calls.judge import quality_of
from agent.config import Config
from agent.quality.model import Quality
from agent.rtp.model import StreamKey, StreamStats

MIN_EXPECTED = 100  # ~2 s of 20 ms packets


@dataclass(slots=True)
class IntervalCounters:
    evicted: int = 0  # streams whose interval state was dropped (table full)

    def as_dict(self) -> dict[str, int]:
        return {"streams_evicted": self.evicted}


class IntervalQuality:
    def __init__(self, config: Config, min_expected: int = MIN_EXPECTED) -> None:
        self.config = config
        self.min_expected = min_expected
        self.counters = IntervalCounters()
        self._last: OrderedDict[StreamKey, StreamStats] = OrderedDict()  # LRU first
        self._min: dict[StreamKey, float] = {}

    def __len__(self) -> int:
        return len(self._last)

    def observe(
        self, s: StreamStats, rtt_s: float | None = None
    ) -> tuple[StreamStats, Quality | None]:
        """A snapshot (or the final statistics) of a stream: rate the interval since
        the previous one. Returns the interval's counters and its quality (None when
        the interval is too short to rate, or the stream is not audio)."""
        prev = self._last.get(s.key)
        self._last[s.key] = s
        self._last.move_to_end(s.key)
        if len(self._last) > self.config.tables.interval_streams:
            gone, _ = self._last.popitem(last=False)
            self._min.pop(gone, None)
            self.counters.evicted += 1
        delta = _difference(s, prev)
        if delta.expected < self.min_expected or not s.rated:
            return delta, None  # too short to rate, or not audio (video, T.38, events)
        q = quality_of(delta, rtt_s, self.config)
        old = self._min.get(s.key)
        self._min[s.key] = q.mos_cq if old is None else min(old, q.mos_cq)
        return delta, q

    def mos_min(self, key: StreamKey) -> float | None:
        return self._min.get(key)

    def forget(self, key: StreamKey) -> None:
        self._last.pop(key, None)
        self._min.pop(key, None)


def _difference(now: StreamStats, prev: StreamStats | None) -> StreamStats:
    """The counters of ``now`` minus those of ``prev`` (the interval between them)."""
    if prev is None:
        return now
    return replace(
        now,
        packets=now.packets - prev.packets,
        expected=now.expected - prev.expected,
        lost=max(0, now.lost - prev.lost),
        loss_bursts=max(0, now.loss_bursts - prev.loss_bursts),
        jb_packets=now.jb_packets - prev.jb_packets,
        jb_discarded=max(0, now.jb_discarded - prev.jb_discarded),
    )
