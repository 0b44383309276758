"""Is every capture source seeing traffic, and when did the probe itself lose packets?

Theory of operation. About once a second the daemon reads every source's counters
(``stats()`` of the ring and the listeners: per configured name, `packets`, `drops`,
`up`, ...) and the decoder's mirror sequence gaps, and hands them to
`SourceMonitor.observe` with the time of the read. From successive reads it knows,
per configured interface or listener:

- ``up``: the source has an open socket now (an interface that does not exist or is
  down: not up, with the reason the ring gives);
- the last packet time: the read at which its packet count last grew (one read's
  resolution, about a second);
- ``silent``: up, but no packet for longer than ``silent_after_s`` (0: never silent),
  counted from the last packet, or from the start or the moment it came up when it
  has had none since.

`SourceMonitor.health` is not ok while any configured source is down or silent, and
names each one with its reason.

Loss windows. When a read finds that the probe lost packets since the previous read
(an interface's kernel ring drops, an interface that went away, a listener's socket
buffer overflows, mirrored copies an exporter numbered that never arrived:
`agent.decode.sequence`), the span between the
two reads is a loss window. `SourceMonitor.lossy` tells whether a call's lifetime
overlaps one, so its record is flagged ``capture_lossy`` and a bad MOS the probe
caused is not blamed on the provider. A listener's datagrams its socket buffer had no
room for count too (``socket_drops``); its other drops (senders denied, datagrams that
are not HEP/TZSP/VXLAN) are not loss of traffic and do not.

Clock: the wall clock (``time.time``, CLOCK_REALTIME) of each read. It is the clock
the kernel stamps captured packets with (TPACKET_V3 ``tp_sec``, SO_TIMESTAMP), and
call records carry those packet timestamps (``invite_ts``, ``end_ts``), so a window
compares directly with a call's lifetime: the packets a ring dropped arrived between
the two reads that saw the count grow. Not the core's packet time (DESIGN rule 1):
this module is the daemon's, the engine never sees it; and not the monotonic clock,
which no packet carries.

Bounded: windows of consecutive reads merge into one, and at most `MAX_WINDOWS` are
kept; when the oldest is forgotten, every call that started before its end counts as
overlapping it (flagged rather than wrongly cleared).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from agent.capture.afpacket import CaptureStats

MAX_WINDOWS = 4096
DEFAULT_SILENT_AFTER_S = 300.0

SourceState = Literal["ok", "down", "silent"]


class SourceCounts(Protocol):
    """What a source's stats give per name (`CaptureStats`, `MirrorStats`)."""

    @property
    def packets(self) -> int: ...

    @property
    def drops(self) -> int: ...

    @property
    def socket_drops(self) -> int: ...

    @property
    def up(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """One configured source at one read (times: Unix seconds)."""

    name: str
    kind: Literal["interface", "listener"]
    up: bool
    state: SourceState
    reason: str  # why it is not ok ("" when it is)
    last_packet_ts: float | None  # the read that first saw its latest packets; None: none yet
    packets: int
    drops: int  # interfaces: kernel ring drops; listeners: what their stats call drops

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "up": self.up, "state": self.state,
                "reason": self.reason or None, "last_packet_ts": self.last_packet_ts,
                "packets": self.packets, "drops": self.drops}


@dataclass(slots=True)
class _Track:
    packets: int | None = None  # at the previous read
    drops: int = 0
    socket_drops: int = 0
    downs: int = 0
    up: bool = False
    reason: str = "its counters were not read yet"
    last_packet_ts: float | None = None
    quiet_since: float = 0.0  # silence is counted from here when no packet came since


@dataclass(frozen=True, slots=True)
class LossWindow:
    start_ts: float
    end_ts: float


class LossWindows:
    """Spans of wall time in which the probe lost packets (merged, bounded)."""

    def __init__(self, max_windows: int = MAX_WINDOWS) -> None:
        self._windows: deque[LossWindow] = deque()
        self._max = max_windows
        self.horizon_ts: float | None = None  # windows up to here were forgotten

    def __len__(self) -> int:
        return len(self._windows)

    def add(self, start_ts: float, end_ts: float) -> None:
        w = self._windows
        if w and start_ts <= w[-1].end_ts:  # consecutive reads with loss: one window
            w[-1] = LossWindow(min(w[-1].start_ts, start_ts), max(w[-1].end_ts, end_ts))
            return
        w.append(LossWindow(start_ts, end_ts))
        if len(w) > self._max:
            self.horizon_ts = w.popleft().end_ts

    def overlaps(self, start_ts: float, end_ts: float) -> bool:
        """Whether [start_ts, end_ts] meets a window (or starts before the horizon)."""
        if self.horizon_ts is not None and start_ts <= self.horizon_ts:
            return True
        for win in reversed(self._windows):  # recent calls meet recent windows
            if win.end_ts < start_ts:
                return False
            if win.start_ts <= end_ts:
                return True
        return False


def _delta(now: int, before: int) -> int:
    """Growth of a running total; a smaller value is a restart (a reopened source)."""
    return now - before if now >= before else now


class SourceMonitor:
    """Health and loss windows of the configured sources, from their counters."""

    def __init__(self, interfaces: Iterable[str], listeners: Iterable[str], *,
                 silent_after_s: float = DEFAULT_SILENT_AFTER_S, now_ts: float) -> None:
        self.silent_after_s = silent_after_s
        self.windows = LossWindows()
        self.last_read_ts = now_ts
        self._sequence_lost = 0
        self._kinds: dict[str, Literal["interface", "listener"]] = {}
        self._tracks: dict[str, _Track] = {}
        self._statuses: tuple[SourceStatus, ...] = ()
        self.reconfigure(interfaces, listeners, silent_after_s=silent_after_s)

    def reconfigure(self, interfaces: Iterable[str], listeners: Iterable[str], *,
                    silent_after_s: float) -> None:
        """A reloaded configuration's sources; the ones kept keep their history."""
        kinds: dict[str, Literal["interface", "listener"]] = dict.fromkeys(
            interfaces, "interface")
        kinds.update(dict.fromkeys(listeners, "listener"))
        self._kinds = kinds
        self._tracks = {n: self._tracks.get(n) or _Track(quiet_since=self.last_read_ts)
                        for n in kinds}
        self.silent_after_s = silent_after_s
        self._statuses = self._snapshot(self.last_read_ts)

    def observe(self, stats: Mapping[str, Any] | None, sequence_lost: int,
                now_ts: float) -> None:
        """One read of the sources' counters (``stats``: name -> `SourceCounts`) and of
        the total mirror sequence loss, at wall time ``now_ts``."""
        stats = stats or {}
        lost = _delta(sequence_lost, self._sequence_lost)
        self._sequence_lost = sequence_lost
        for name, track in self._tracks.items():
            st = stats.get(name)
            lost += self._observe_one(name, track, st, now_ts)
        if lost > 0:
            self.windows.add(self.last_read_ts, now_ts)
        self.last_read_ts = now_ts
        self._statuses = self._snapshot(now_ts)

    def _observe_one(self, name: str, track: _Track, st: SourceCounts | None,
                     now_ts: float) -> int:
        """Update one source's track; returns the packets it lost since the last read."""
        if st is None:
            track.up, track.reason = False, "the capture reports nothing for it"
            return 0
        first = track.packets is None  # the first read of it: no growth to measure yet
        up = bool(st.up)
        if up and not track.up and not first:
            track.quiet_since = now_ts  # silence counts from when it came up
        track.up = up
        ring = st if isinstance(st, CaptureStats) else None
        track.reason = "" if up else (ring.down_reason if ring else "") or "not capturing"
        packets = int(st.packets)
        if not first and _delta(packets, track.packets or 0) > 0:
            track.last_packet_ts = now_ts
        track.packets = packets
        if self._kinds[name] != "interface" or ring is None:  # a listener
            lost = _delta(int(st.socket_drops), track.socket_drops)
            track.drops, track.socket_drops = int(st.drops), int(st.socket_drops)
            return lost
        drops, downs = ring.drops, ring.downs
        # an interface that went away mid-call lost what it would have captured
        lost = _delta(drops, track.drops) + (0 if first else _delta(downs, track.downs))
        track.drops, track.downs = drops, downs
        return lost

    def _snapshot(self, now_ts: float) -> tuple[SourceStatus, ...]:
        return tuple(self._status(n, t, now_ts) for n, t in self._tracks.items())

    def _status(self, name: str, t: _Track, now_ts: float) -> SourceStatus:
        state: SourceState = "ok"
        reason = ""
        if not t.up:
            state, reason = "down", t.reason
        elif self.silent_after_s > 0:
            since = max(t.quiet_since, t.last_packet_ts or t.quiet_since)
            quiet = now_ts - since
            if quiet > self.silent_after_s:
                state = "silent"
                reason = (f"no packet for {quiet:.0f} s (capture.silent_after_s: "
                          f"{self.silent_after_s:g})")
        return SourceStatus(name, self._kinds[name], t.up, state, reason, t.last_packet_ts,
                            t.packets or 0, t.drops)

    def statuses(self) -> tuple[SourceStatus, ...]:
        """Every configured source as the latest read saw it."""
        return self._statuses

    def health(self, now_ts: float) -> tuple[bool, dict[str, Any]]:
        """(ok, details for ``/health``): not ok while a source is down or silent (as of
        ``now_ts``: a loop that stopped reading does not freeze the silence clock)."""
        tracks = self._tracks  # replaced whole by reconfigure, never changed in place
        current = [self._status(n, t, max(now_ts, self.last_read_ts))
                   for n, t in tracks.items()]
        bad = [s for s in current if s.state != "ok"]
        details: dict[str, Any] = {"sources": {s.name: s.as_json() for s in current}}
        if bad:
            details["problems"] = [f"{s.name}: {s.state}: {s.reason}" for s in bad]
        return not bad, details

    def lossy(self, start_ts: float, end_ts: float) -> bool:
        """Whether a call alive from ``start_ts`` to ``end_ts`` (packet timestamps, Unix
        seconds) overlapped a loss window."""
        return self.windows.overlaps(start_ts, end_ts)
