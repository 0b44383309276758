"""What the core emits: frozen events the sinks consume (DESIGN.md data flow).

Every event carries packet time only. `StreamEnded` and `CallEnded` come once per
stream and call; `CallInterval` once per ``calls.interval_s`` boundary of packet
time (a fixed grid: multiples of ``interval_s`` since the epoch) for every stream
running across it, and once more for the stream's tail when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.calls.evidence import Evidence
from agent.calls.labels import UNLABELLED, StreamLabels
from agent.calls.record import CallRecord
from agent.quality.model import Quality
from agent.rtp.model import StreamStats


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """An RTP stream finished (idle timeout, its call ended, end of capture)."""

    stats: StreamStats
    # the peer, direction and codec its call's record shows (agent/calls/labels.py)
    labels: StreamLabels = UNLABELLED


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A call (or a pseudo-call of unsignalled media) is over and judged; ``evidence``:
    its kept packets when evidence pcaps are on (`agent.calls.evidence`), else None."""

    record: CallRecord
    evidence: Evidence | None = None


@dataclass(frozen=True, slots=True)
class CallInterval:
    """One interval (``calls.interval_s`` of packet time) of a running stream, rated.

    ``ts`` is the packet time the interval ended at (a grid boundary, or the stream's
    end); ``call_id`` is the call the stream belongs to (None: unsignalled media);
    ``delta`` holds the interval's counters (packets, expected, lost, discards) on top
    of the stream's identity; ``quality`` is None when the interval held too few
    packets to rate; ``labels`` are the stream's peer, direction and codec, the same
    as its call's record shows (agent/calls/labels.py)."""

    ts: float
    call_id: str | None
    delta: StreamStats
    quality: Quality | None
    labels: StreamLabels = UNLABELLED


Event = StreamEnded | CallEnded | CallInterval
