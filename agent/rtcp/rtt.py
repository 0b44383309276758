"""Round-trip time from RTCP (RFC 3550 §6.4.1, RFC 3611 §4.5) and NTP time formats.

Theory of operation
-------------------
An endpoint that sent an SR learns its round trip from the RR that echoes it:
`RTT = A - LSR - DLSR`, all in the 32-bit "NTP short" format (16.16 fixed
point, the middle 32 bits of the 64-bit NTP timestamp), where A is when the RR
arrived. `rtt_from_report` is that formula, modulo 2**32 so it survives the
short format's wrap every ~18.2 hours.

A probe on the path sees both the SR and the RR that answers it, and has its
own clock: (time the RR was seen - time the SR was seen) - DLSR is the round
trip between the probe and the far end, without trusting any endpoint's
clock. `ProbeRoundTrip` is that measurement as a sans-IO object: it is fed
the SRs and report blocks it sees with their packet times and returns round
trips in seconds. Its table is keyed by SSRC (chosen by the network) and so
has a cap with least-recently-used eviction and an idle timeout, both counted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from agent.rtcp.packets import ReportBlock

NTP_UNIX_OFFSET_S = 2_208_988_800  # 1900-01-01 to 1970-01-01 (RFC 5905 §6)
_SHORT_UNITS_PER_S = 65536.0


def ntp_to_unix(ntp_timestamp: int) -> float:
    """64-bit NTP timestamp (32.32 fixed point since 1900) -> Unix seconds."""
    seconds = (ntp_timestamp >> 32) & 0xFFFFFFFF
    fraction = ntp_timestamp & 0xFFFFFFFF
    return seconds - NTP_UNIX_OFFSET_S + fraction / 4294967296.0


def unix_to_ntp(unix_s: float) -> int:
    """Unix seconds -> 64-bit NTP timestamp (era 0 wraps modulo 2**64)."""
    ticks = round((unix_s + NTP_UNIX_OFFSET_S) * 4294967296.0)
    return ticks & 0xFFFFFFFFFFFFFFFF


def ntp_short(ntp_timestamp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp: the LSR/LRR format (16.16)."""
    return (ntp_timestamp >> 16) & 0xFFFFFFFF


def unix_to_ntp_short(unix_s: float) -> int:
    """Unix seconds -> NTP short format (1/65536 s units, wraps every 65536 s)."""
    return ntp_short(unix_to_ntp(unix_s))


def rtt_from_report(arrival_ntp_short: int, lsr: int, dlsr: int) -> float | None:
    """RFC 3550 §6.4.1 round trip in seconds: A - LSR - DLSR (NTP short units).

    None when there is no measurement: LSR 0 means no SR was received yet, and
    a negative result means the clocks or the report disagree.
    """
    if lsr == 0:
        return None
    elapsed = (arrival_ntp_short - lsr) & 0xFFFFFFFF
    if elapsed >= 0x80000000:  # A before LSR: modular negative
        return None
    rtt = elapsed - dlsr
    if rtt < 0:
        return None
    return rtt / _SHORT_UNITS_PER_S


@dataclass
class _SrHistory:
    last_seen_s: float
    seen_at: OrderedDict[int, float] = field(default_factory=OrderedDict)  # LSR key -> time


class ProbeRoundTrip:
    """Probe-to-far-end round trip from SRs and the report blocks that answer them.

    `sender_report(ssrc, ntp_timestamp, now)` records when an SR passed;
    `report_block(block, now)` looks up the SR the block's LSR points at and
    returns `(now - seen) - DLSR` in seconds, or None when the SR was not seen.
    Times are packet timestamps in seconds, never the wall clock.
    """

    def __init__(
        self, max_sources: int = 4096, history: int = 8, idle_timeout_s: float = 300.0
    ) -> None:
        self.max_sources = max_sources
        self.history = history  # SRs remembered per SSRC: an RR may answer an older one
        self.idle_timeout_s = idle_timeout_s
        self.evictions = 0  # sources dropped because the table was full
        self.expirations = 0  # sources dropped by the idle timeout
        self._sources: OrderedDict[int, _SrHistory] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def sender_report(self, ssrc: int, ntp_timestamp: int, now: float) -> None:
        """An SR from `ssrc` carrying `ntp_timestamp` (64-bit) was seen at `now`."""
        entry = self._sources.get(ssrc)
        if entry is None:
            entry = self._sources[ssrc] = _SrHistory(now)
            if len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
                self.evictions += 1
        else:
            self._sources.move_to_end(ssrc)
            entry.last_seen_s = now
        key = ntp_short(ntp_timestamp)
        entry.seen_at.setdefault(key, now)  # a duplicate SR keeps the first sighting
        while len(entry.seen_at) > self.history:
            entry.seen_at.popitem(last=False)

    def report_block(
        self, block: ReportBlock, now: float, reporter_ssrc: int | None = None
    ) -> float | None:
        """Round trip probe <-> reporter in seconds for a block seen at `now`.

        The reporter is whoever sent the RR/SR carrying `block`; `block.ssrc` is
        the source whose SR it answers. A block about the reporter itself (some
        stacks send one) measures nothing and gives None. A result below zero
        by less than a millisecond is rounding of DLSR (1/65536 s) and reads as 0.
        """
        if block.lsr == 0 or block.ssrc == reporter_ssrc:
            return None
        entry = self._sources.get(block.ssrc)
        seen = entry.seen_at.get(block.lsr) if entry is not None else None
        if seen is None:
            return None
        rtt = (now - seen) - block.dlsr / _SHORT_UNITS_PER_S
        if rtt < -0.001:
            return None
        return max(rtt, 0.0)

    def expire(self, now: float) -> int:
        """Drop sources with no SR for `idle_timeout_s`; returns how many."""
        dropped = 0
        while self._sources:
            ssrc, entry = next(iter(self._sources.items()))
            if now - entry.last_seen_s < self.idle_timeout_s:
                break
            del self._sources[ssrc]
            dropped += 1
        self.expirations += dropped
        return dropped
