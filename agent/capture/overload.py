"""`LoadShedder`: tells the live loop when it is behind, and remembers what it shed.

Behind means the packets being processed are older, against the wall clock, than
packets have been at best: the kernel stamps each packet with the wall clock, so
``wall - packet_ts`` is the capture-to-processing delay plus a constant (the ring's
block timeout; any clock offset of a mirror or HEP sender). Its running minimum is
the floor; the lag is the delay above it. A wall-clock step moves packet stamps and
the wall alike, so it is no lag; the floor still rises slowly (`FLOOR_RELAX`) so that
a source whose clock drifts cannot hold the loop in shedding.

Past ``budget_s`` of lag the loop sheds (level 1, `agent.engine.Engine.shed`:
heuristic RTP discovery is dropped, SIP, RTCP and known media kept) until the lag is
back under half the budget. Past `MEDIA_FACTOR` times the budget it sheds all media
(level 2, `Engine.shed_media`: only SIP and RTCP are processed, so the loop gets back
to current packets and the kernel drops, which it cannot choose, stop) until the lag is
back under the budget. Shedding never decides anything from packet content, and off (the
normal case) nothing changes: the engine's output stays a function of the packets.
The packet-time spans in which something was shed are loss windows: a call whose
lifetime meets one is flagged ``capture_lossy`` like one that met a kernel drop.
"""

from __future__ import annotations

from agent.capture.health import LossWindows

SHED_LAG_S = 2.0  # default budget: lag (seconds) past which discovery is shed
MEDIA_FACTOR = 4.0  # level 2 past this many budgets of lag
FLOOR_RELAX = 0.05  # the floor rises by at most this share of the wall time elapsed


class LoadShedder:
    def __init__(self, budget_s: float | None = SHED_LAG_S) -> None:
        self.budget_s = budget_s  # None: never shed
        self.on = False
        self.level = 0  # 0: nothing shed; 1: RTP discovery; 2: all media
        self.episodes = 0  # times shedding started
        self.lag_s = 0.0  # the latest lag observed
        self.max_lag_s = 0.0
        self.windows = LossWindows()
        self._floor: float | None = None
        self._last_wall: float | None = None

    def observe(self, packet_ts: float, wall: float) -> int:
        """The newest packet about to be processed and the wall time now; returns
        the level to shed at while processing it (0: nothing)."""
        offset = wall - packet_ts
        if self._floor is None or offset < self._floor:
            self._floor = offset
        elif self._last_wall is not None and wall > self._last_wall:
            self._floor = min(offset, self._floor + FLOOR_RELAX * (wall - self._last_wall))
        self._last_wall = wall
        self.lag_s = offset - self._floor
        self.max_lag_s = max(self.max_lag_s, self.lag_s)
        if self.budget_s is None:
            return 0
        budget = self.budget_s
        if not self.on and self.lag_s > budget:
            self.on = True
            self.episodes += 1
        elif self.on and self.lag_s < budget / 2:
            self.on = False
        if self.lag_s > MEDIA_FACTOR * budget:
            self.level = 2
        elif self.level == 2 and self.lag_s < budget:
            self.level = 1
        if not self.on:
            self.level = 0
        elif self.level == 0:
            self.level = 1
        return self.level

    def shed(self, start_ts: float, end_ts: float) -> None:
        """Packets between these packet times were shed."""
        self.windows.add(start_ts, end_ts)

    def lossy(self, start_ts: float, end_ts: float) -> bool:
        return self.windows.overlaps(start_ts, end_ts)
