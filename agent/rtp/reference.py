"""Plain per-packet RTP statistics: the readable twin of `agent.rtp.batch`.

One `ReferenceStream` per stream; ``add`` one packet at a time in arrival order.
It follows RFC 3550 Appendix A.1 (sequence validation, restarts via
``bad_seq``), A.3 (expected/lost) and A.8 (interarrival jitter) with the
probe's extensions; the definitions live in `agent.rtp.rules`. The vectorised
implementation must give identical integers and floats within 1e-9: a property
test holds them to that. Speed is not a goal here; clarity is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.media.payloads import PayloadKind
from agent.rtp.model import StreamStats
from agent.rtp.rules import (
    HOLE_WINDOW,
    JB_INF,
    JITTER_DISCONTINUITY_S,
    SEQ_MOD,
    TS_MOD,
    BurstTotals,
    JbState,
    JitterBufferSpec,
    StreamMeta,
    Totals,
    add_ptime_step,
    is_large_jump,
    jb_packet,
    seq_step,
    split_final_holes,
    transit_us,
    ts_step,
)


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """The fields of one RTP packet the statistics use. ``arrival_s`` is epoch seconds."""

    arrival_s: float
    seq: int
    ts: int
    pt: int
    marker: bool = False
    kind: PayloadKind = PayloadKind.MEDIA
    dscp: int = 0
    vlan: int = -1
    pcp: int = -1


class ReferenceStream:
    """RFC 3550 A.1/A.3/A.8 statistics of one stream, one packet at a time."""

    def __init__(self, meta: StreamMeta, jb: JitterBufferSpec | None = None) -> None:
        self.meta = meta
        self.jb = jb or JitterBufferSpec()
        self._clock = float(meta.clock_rate) if meta.clock_rate else 0.0
        # packet counters (strays included)
        self.packets = self.markers = self.events = self.comfort_noise = 0
        self.pts: set[int] = set()
        self.dscp: dict[int, int] = {}
        self.vlan: int | None = None
        self.pcp: int | None = None
        self.first_ts = float("inf")
        self.last_ts = float("-inf")
        # sequence space (A.1/A.3)
        self._held: RtpPacket | None = None  # large jump awaiting bad_seq confirmation
        self._last_seq: int | None = None
        self._last_ext = 0
        self.base = self.max = self.distinct = 0
        self.holes: set[int] = set()
        self.duplicates = self.reordered = self.restarts = self.max_gap = 0
        self.done_expected = self.done_lost = self.done_wraps = 0
        self.bursts = BurstTotals()
        # jitter (A.8) and delta
        self._jref: tuple[float, int] | None = None
        self._prev_kind: PayloadKind | None = None
        self.jitter_s = self.jitter_sum_s = self.jitter_max_s = 0.0
        self.delta_sum_s = self.delta_max_s = 0.0
        self.regular = 0
        # jitter-buffer emulation and ptime, over buffer packets (media, not duplicates)
        self._jb_ext: int | None = None  # extended RTP timestamp of the previous one
        self._jb_seq = 0  # its extended sequence number
        self._jb = JbState()  # the buffer's anchor, late run and skipped numbers
        self.jb_packets = self.jb_discarded = 0
        self.jb_wait_sum_ns = 0
        self.jb_wait_max_ms = 0.0
        self.ptime_steps: dict[int, int] = {}

    def add(self, p: RtpPacket) -> None:
        """Account one packet (arrival order)."""
        if self._held is not None:
            held, self._held = self._held, None
            if (p.seq - held.seq) % SEQ_MOD == 1:  # RFC 3550 A.1: seq == bad_seq, restart
                self._count(held)
                self._close_segment()
                self.restarts += 1
                self._start_segment(held)
            else:
                self._count(held)  # a stray: counted, outside the sequence space
        if self._last_seq is None:
            self._count(p)
            self._start_segment(p)
            return
        step = seq_step(p.seq, self._last_seq)
        if is_large_jump(step):
            self._held = p
            return
        self._count(p)
        self._accept(p, self._last_ext + step)

    # -- counting -------------------------------------------------------------------

    def _count(self, p: RtpPacket) -> None:
        self.packets += 1
        self.markers += int(p.marker)
        self.events += int(p.kind == PayloadKind.TELEPHONE_EVENT)
        self.comfort_noise += int(p.kind == PayloadKind.COMFORT_NOISE)
        self.pts.add(p.pt)
        self.dscp[p.dscp] = self.dscp.get(p.dscp, 0) + 1
        if self.packets == 1:
            self.vlan = p.vlan if p.vlan >= 0 else None
            self.pcp = p.pcp if p.pcp >= 0 else None
        self.first_ts = min(self.first_ts, p.arrival_s)
        self.last_ts = max(self.last_ts, p.arrival_s)

    # -- sequence space -------------------------------------------------------------

    def _start_segment(self, p: RtpPacket) -> None:
        self.base = self.max = self._last_ext = p.seq
        self._last_seq = p.seq
        self.distinct = 1
        self._jref = None  # jitter needs a reference inside the segment
        self._jb_ext, self._jb.base = None, JB_INF  # the buffer starts over too
        self._after_accept(p, duplicate=False)

    def _accept(self, p: RtpPacket, ext: int) -> None:
        top = self.max
        duplicate = False
        if ext > top:  # in order, maybe after a gap
            self.max_gap = max(self.max_gap, ext - top)
            self.holes.update(range(top + 1, ext))
            self.max = ext
            self.distinct += 1
            if len(self.holes) > 4 * HOLE_WINDOW:
                self._prune_holes()
        elif ext <= top - HOLE_WINDOW:
            self.reordered += 1  # untracked: too old to tell fill from duplicate
        elif ext < self.base:  # reordered before the first arrival: the stream starts here
            self.holes.update(range(ext + 1, self.base))
            self.base = ext
            self.distinct += 1
            self.reordered += 1
        elif ext in self.holes:
            self.holes.discard(ext)
            self.distinct += 1
            self.reordered += 1
        else:
            self.duplicates += 1
            duplicate = True
        self._last_seq = p.seq
        self._last_ext = ext
        self._after_accept(p, duplicate)

    def _prune_holes(self) -> None:
        ordered = np.array(sorted(self.holes), dtype=np.int64)
        final, kept = split_final_holes(ordered, self.max)
        self.bursts.add(final)
        self.holes = set(kept.tolist())

    def _wraps(self) -> int:
        # 16-bit cycles crossed between base and max; base may sit in the cycle
        # before the first packet's (first 0, then 65535 = ext -1): floor division.
        return self.max // SEQ_MOD - self.base // SEQ_MOD

    def _close_segment(self) -> None:
        self.done_expected += self.max - self.base + 1
        self.done_lost += self.max - self.base + 1 - self.distinct
        self.done_wraps += self._wraps()
        ordered = np.array(sorted(self.holes), dtype=np.int64)
        self.bursts.add(split_final_holes(ordered, None)[0])
        self.holes = set()

    # -- jitter and delta (A.8) -----------------------------------------------------

    def _after_accept(self, p: RtpPacket, duplicate: bool) -> None:
        # Every received media packet moves J (RFC 3550 A.8), duplicates and late ones
        # included, as in Wireshark; a duplicate is not a regular packet for mean/max.
        if p.kind == PayloadKind.MEDIA:
            self._jitter(p, duplicate)
            if not duplicate and self._clock > 0.0:
                self._buffer(p)
        self._prev_kind = p.kind

    def _jitter(self, p: RtpPacket, duplicate: bool) -> None:
        ref, self._jref = self._jref, (p.arrival_s, p.ts)
        if ref is None:
            return
        delta = p.arrival_s - ref[0]
        if self._clock > 0.0:
            d = delta - ts_step(p.ts, ref[1]) / self._clock
            if abs(d) > JITTER_DISCONTINUITY_S:
                self._jb.base = JB_INF  # the jitter buffer resynchronises too
                return  # timestamp discontinuity: not jitter, new reference
            self.jitter_s += (abs(d) - self.jitter_s) / 16.0
        if p.marker or duplicate or self._prev_kind != PayloadKind.MEDIA:
            return  # like Wireshark: talkspurt starts, duplicates, packets after CN/events
        self.regular += 1
        self.jitter_sum_s += self.jitter_s
        self.jitter_max_s = max(self.jitter_max_s, self.jitter_s)
        self.delta_sum_s += delta
        self.delta_max_s = max(self.delta_max_s, delta)

    # -- jitter buffer and ptime --------------------------------------------------------

    def _buffer(self, p: RtpPacket) -> None:
        """Play one buffer packet (media, accepted, not a duplicate) through the buffer."""
        prev_ext = self._jb_ext
        ext_ts = p.ts if prev_ext is None else prev_ext + ts_step(p.ts, prev_ext % TS_MOD)
        if prev_ext is not None and self._last_ext - self._jb_seq == 1 and ext_ts > prev_ext:
            add_ptime_step(self.ptime_steps, ext_ts - prev_ext)
        self._jb_ext, self._jb_seq = ext_ts, self._last_ext
        if self.jb.model == "none":
            return
        transit = transit_us(p.arrival_s, ext_ts, self._clock)
        target_ms = self.jb.target_ms(self.jitter_s)
        late, wait_ms = jb_packet(self._jb, self.jb.model == "adaptive", transit,
                                  self._last_ext, self.max, p.marker, target_ms)
        self.jb_packets += 1
        if late:
            self.jb_discarded += 1  # arrived after its playout time
            return
        self.jb_wait_sum_ns += round(wait_ms * 1e6)  # whole ns: an exact, order-free sum
        self.jb_wait_max_ms = max(self.jb_wait_max_ms, wait_ms)

    # -- results --------------------------------------------------------------------

    def finish(self) -> None:
        """End of input: a held large jump was never confirmed, so it is a stray."""
        if self._held is not None:
            self._count(self._held)
            self._held = None

    def totals(self) -> Totals:
        cur_expected = self.max - self.base + 1 if self._last_seq is not None else 0
        bursts = BurstTotals(self.bursts.count, self.bursts.longest, self.bursts.total)
        bursts.add(split_final_holes(np.array(sorted(self.holes), dtype=np.int64), None)[0])
        return Totals(
            payload_types=tuple(sorted(self.pts)),
            packets=self.packets,
            expected=self.done_expected + cur_expected,
            lost=self.done_lost + max(cur_expected - self.distinct, 0),
            duplicates=self.duplicates,
            reordered=self.reordered,
            seq_wraps=self.done_wraps + (self._wraps() if self._last_seq is not None else 0),
            restarts=self.restarts,
            bursts=bursts,
            max_seq_gap=self.max_gap,
            jitter_s=self.jitter_s,
            jitter_sum_s=self.jitter_sum_s,
            jitter_max_s=self.jitter_max_s,
            regular=self.regular,
            delta_sum_s=self.delta_sum_s,
            delta_max_s=self.delta_max_s,
            markers=self.markers,
            events=self.events,
            comfort_noise=self.comfort_noise,
            dscp=dict(self.dscp),
            vlan=self.vlan,
            pcp=self.pcp,
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            jb_packets=self.jb_packets,
            jb_discarded=self.jb_discarded,
            jb_wait_sum_ms=self.jb_wait_sum_ns / 1e6,
            jb_wait_max_ms=self.jb_wait_max_ms,
            ptime_steps=dict(self.ptime_steps),
        )

    def stats(self) -> StreamStats:
        """Final statistics (call `finish` first at end of input)."""
        return self.totals().to_stats(self.meta, self.jb)
