"""The sans-IO pipeline: `Batch` in, events out.

`Engine.feed(batch)` decodes the batch, routes UDP frames to the RTP stream
tracker and returns the events that the batch completed; `Engine.tick(now)`
expires idle state by packet time; `Engine.finish()` ends everything (end of a
capture file, or shutdown). The engine never reads a clock, opens a socket or
logs: `voipprobe analyze` and the live agent drive the very same object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agent.capture.batch import Batch
from agent.decode import Decoder
from agent.decode.frames import IPPROTO_UDP
from agent.rtp.model import StreamStats
from agent.rtp.tracker import StreamTracker, TrackerConfig


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """An RTP stream finished (idle timeout, end of capture, shutdown)."""

    stats: StreamStats


Event = StreamEnded


@dataclass(frozen=True, slots=True)
class EngineConfig:
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    # How often (packet time) idle state is swept while feeding; sweeping scans tables.
    sweep_interval_s: float = 5.0


class Engine:
    """Feed batches in packet-time order; collect events."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.decoder = Decoder()
        self.streams = StreamTracker(self.config.tracker)
        self.packets = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self._next_sweep: float | None = None

    def feed(self, batch: Batch) -> list[Event]:
        """Process one batch; returns the events it completed."""
        n = len(batch)
        if n == 0:
            return []
        self.packets += n
        if self.first_ts is None:
            self.first_ts = float(batch.ts[0])
        self.last_ts = float(batch.ts[-1])
        frames = self.decoder.decode(batch)
        if len(frames):
            udp_rows = np.flatnonzero(frames.proto == IPPROTO_UDP).astype(np.int64)
            if udp_rows.size:
                self.streams.feed(frames, udp_rows)
        now = float(batch.ts.max())
        if self._next_sweep is None:
            self._next_sweep = now + self.config.sweep_interval_s
        if now >= self._next_sweep:
            self._next_sweep = now + self.config.sweep_interval_s
            return self.tick(now)
        return []

    def tick(self, now: float) -> list[Event]:
        """Expire state idle at packet time ``now`` (epoch seconds)."""
        return [StreamEnded(s) for s in self.streams.expire(now)]

    def finish(self) -> list[Event]:
        """End of input: every remaining stream ends."""
        return [StreamEnded(s) for s in self.streams.finish()]

    def counters(self) -> dict[str, int]:
        """Every drop and table counter of the pipeline, prefixed by its stage."""
        out: dict[str, int] = {"packets": self.packets}
        for prefix, counts in (
            ("decode", self.decoder.counters.as_dict()),
            ("rtp", self.streams.counters.as_dict()),
        ):
            out.update({f"{prefix}_{k}": v for k, v in counts.items()})
        return out
