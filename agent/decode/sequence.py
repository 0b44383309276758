"""Mirror sessions that number their packets: the copies lost between exporter and probe.

ERSPAN type II and III set GRE's S bit, and so may GRETAP: each mirrored packet
carries the session's 32-bit GRE sequence number (RFC 2890 §2.2), one more per
packet the exporter sent. A gap is copies lost between the exporter and the probe
(the exporter numbers what it sends), so a probe fed by a mirror can tell its own
blind spots from loss on the measured path.

Rule per session (observation point), in arrival order, modulo 2^32:

- the first number seen starts the session;
- a step forward of k (1 <= k < 2^31) counts k - 1 lost;
- the same number again or a step backward (k >= 2^31 modulo 2^32) is a
  ``reset``, never loss: within `REORDER_WINDOW` of the highest number it is a late
  (reordered) or repeated copy, and the session goes on from its highest number; a
  longer step back is the exporter restarting, and the session goes on from there.

Trade-offs: a copy that arrives after a later one was counted lost when the gap
was seen, and it stays counted (a Prometheus counter does not go back); an exporter
that restarts at most `REORDER_WINDOW` numbers below its highest (a session only
that many packets old) looks late until it passes its old highest number (resets,
no loss). Mirror paths seldom reorder by more than a few packets, and sessions
restart long after they begin.

Sessions are bounded (`MAX_POINTS`, the bound of point ids): past it new sessions
are not followed. The ``other`` point (what names beyond the point table's quota
become) mixes sessions and is not followed either.

HEP (`agent.decode.hep_unwrap`) has no counterpart: HEP v3 defines no sequence
number chunk, so HEP lost on its way to the probe cannot be counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.capture.points import MAX_POINTS, OTHER_POINT, point_id, point_name
from agent.decode.counters import DecodeCounters

REORDER_WINDOW = 64  # a step back this short is a late copy, not a restart
_HALF = 1 << 31
_MOD = 1 << 32


@dataclass(frozen=True, slots=True)
class SequenceGaps:
    """Totals of one mirror session: copies ``lost`` (sequence gaps) and ``resets``
    (repeated, late or restarted numbers)."""

    lost: int = 0
    resets: int = 0


@dataclass(slots=True)
class _Session:
    highest: int
    lost: int = 0
    resets: int = 0


class GreSequences:
    """Sequence numbers per observation point; totals also in ``counters``
    (``sequence_lost``, ``sequence_resets``)."""

    def __init__(self, counters: DecodeCounters, limit: int = MAX_POINTS) -> None:
        self._counters = counters
        self.limit = limit
        self._sessions: dict[int, _Session] = {}
        self._other = point_id(OTHER_POINT)

    def __len__(self) -> int:
        return len(self._sessions)

    def observe(self, point: int, seq: int) -> None:
        """Sequence number ``seq`` of a packet of the session at point id ``point``."""
        s = self._sessions.get(point)
        if s is None:
            if point != self._other and len(self._sessions) < self.limit:
                self._sessions[point] = _Session(seq)
            return
        step = (seq - s.highest) % _MOD
        if 0 < step < _HALF:
            s.highest = seq
            if step > 1:
                s.lost += step - 1
                self._counters.sequence_lost += step - 1
            return
        s.resets += 1
        self._counters.sequence_resets += 1
        if _MOD - step > REORDER_WINDOW:  # a restart: go on from the new number
            s.highest = seq

    def gaps(self) -> dict[str, SequenceGaps]:
        """Totals by point name."""
        return {point_name(p): SequenceGaps(s.lost, s.resets) for p, s in self._sessions.items()}
