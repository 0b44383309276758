"""The statistics' definitions, shared by the reference and the vectorised implementation.

Theory of operation (docs/rtp-metrics.md has the long form):

Sequence space (RFC 3550 A.1, A.3). Each packet's step is the signed 16-bit
difference to the last *accepted* packet of the stream. A step of
``MAX_DROPOUT`` or more forward, or ``MAX_MISORDER`` or more backward, is a
large jump: the packet is held; if the very next packet of the stream is
``seq + 1`` the source restarted (a new *segment* begins at the held packet),
otherwise the held packet is a *stray*: counted in ``packets`` but not in the
sequence space, jitter or delta. Extended sequence numbers (``ext``) are the
running sum of steps from the segment's first packet, so they may go below it
(first 0, then 65535: ext -1).

Per segment: ``base`` is the lowest tracked number received, ``expected =
max_ext - base + 1``; every packet that advances the maximum, fills a hole or
lowers the base is a distinct sequence number; ``lost = expected - distinct``
(= the holes, never negative). Each accepted packet is classified against the
maximum and base *before* it, in this order: above the maximum it advances it
(the numbers skipped become holes; ``max_seq_gap`` counts these forward gaps
only); ``HOLE_WINDOW`` or more behind the maximum it is *untracked*: counted as
reordered, never as duplicate, fill or new base, so the hole table stays
bounded; below the base (reordered before the first arrival: it belongs to the
stream, it is not a negative loss) it lowers the base to its number, counts as
reordered, and the numbers between it and the old base become holes; otherwise
it is a duplicate when its number was already received, a reordered fill when
it was a hole. A base can only be lowered while the segment spans less than
``HOLE_WINDOW`` numbers, so its holes are never final when they open.
``seq_wraps = max_ext // 2^16 - base // 2^16`` (floor division: the base may sit
in the cycle before the first packet's). A restart closes the segment: its
expected/lost/bursts/wraps are added to the stream totals and the new segment
starts from scratch.

Jitter (RFC 3550 A.8), in seconds internally, on media packets only (not RFC
4733 events, not RFC 3389 CN, not strays; duplicates and late packets are
received packets and count, as in RFC 3550 A.8 and Wireshark), in arrival
order: ``D = (R_j - R_i) - (S_j - S_i) / clock`` against the previous jitter
packet of the segment; ``J += (|D| - J) / 16``. When ``|D| >
JITTER_DISCONTINUITY_S`` the RTP clock and the wall clock disagree by more than
any jitter buffer could absorb (timestamp jump, media switch): J is left
unchanged and the packet becomes the new reference. The mean/max of J and the
inter-arrival delta statistics count *regular* packets only, as Wireshark's
RTP analysis does: a jitter packet with a reference, no discontinuity, no
marker bit, not a duplicate, and whose previous accepted packet was media (not
after CN/events).

Jitter-buffer emulation (STANDARDS.md "Jitter becomes loss at the receiver";
docs/quality.md "Jitter-buffer emulation" says which published behaviour each
model follows), streaming, over the *buffer packets*: media packets that are
accepted and not duplicates (not events, not CN, not strays), of streams with a
known clock, in arrival order. ``transit_p = arrival_p - ext_ts_p / clock`` in
whole microseconds, where ``ext_ts`` is the RTP timestamp extended over 32-bit
wraps by signed steps from the previous buffer packet of the segment.

The buffer is *anchored*: ``base`` is the lowest transit since the last anchor,
the packet that would have waited longest (`jb_play`). A packet *resynchronises*
(it becomes the new anchor: ``base = transit_p``) when it starts a segment,
follows a jitter discontinuity (``|D| > JITTER_DISCONTINUITY_S``: a timestamp
jump), or carries the marker bit (a talk-spurt start, RFC 3551 §4.1: where
phones re-sync their playout). ``delay_p = transit_p - base`` (>= 0) against
``target_p``: ``fixed_ms`` (fixed) or ``clamp(k * J_p, min, max)`` with J_p the
RFC 3550 jitter after packet p (adaptive). A packet with ``delay_p <= target_p``
is played and waits ``target_p - delay_p``. A later one:

* fixed: is discarded (it arrived after its playout time); the
  ``JB_RESYNC_LATE``-th late packet in a row is a sustained delay step: the
  buffer re-anchors on it and plays it;
* adaptive: when it is in sequence order (no later number has arrived) the
  buffer stretches its playout instead (it re-anchors on it: a delay step or a
  sender timestamp step costs no packet, only buffer delay); when a later
  number has already arrived, its slot has been played: discarded.

Both models re-anchor, so a delay step, a sender timestamp step or clock drift
never makes every later packet look late; genuinely late packets still are.
The batch implementation computes the running minimum vectorised and replays a
stream per packet (`jb_play`) only from its first re-anchoring packet of the
batch, so both twins give the same integers.

Packetisation time: the most common RTP timestamp step between consecutive
buffer packets of a segment whose sequence numbers differ by exactly one (and
whose timestamps advance), divided by the clock. Steps are counted in a
histogram of at most ``PTIME_MAX_STEPS`` values; a value first seen when it is
full is not counted. Ties go to the smaller step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt

from agent.media.payloads import stream_media
from agent.rtp.model import StreamKey, StreamStats

MAX_DROPOUT = 3000  # RFC 3550 A.1
MAX_MISORDER = 100  # RFC 3550 A.1
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
HOLE_WINDOW = 1024  # sequence numbers behind the max still tracked for fill/duplicate
JITTER_DISCONTINUITY_S = 1.0  # |D| above this is a timestamp discontinuity, not jitter
JITTER_GAIN = 1.0 / 16.0  # RFC 3550 A.8
JB_INF = 1 << 62  # "no anchor": the next buffer packet resynchronises (integer microseconds)
JB_RESYNC_LATE = 3  # fixed buffer: this many late packets in a row are a delay step
JB_TRANSIT_CLIP = 1 << 60  # transit (us) is clipped to +-this: no int64 overflow, ever
PTIME_MAX_STEPS = 16  # distinct timestamp steps kept per stream for ptime
JB_MODELS = ("fixed", "adaptive", "none")


@dataclass(frozen=True, slots=True)
class JitterBufferSpec:
    """The receiver's jitter buffer the statistics emulate (``quality.jitter_buffer`` in
    the config; the one type for it). Sizes in milliseconds.

    ``fixed``: a packet may be up to ``fixed_ms`` later than the anchor; ``adaptive``:
    the allowance follows ``adaptive_k`` times the RFC 3550 jitter, bounded to
    ``[adaptive_min_ms, adaptive_max_ms]``; ``none``: nothing is emulated.
    """

    # a config section (`QualityConfig.jitter_buffer`): unknown keys are errors
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    model: Literal["fixed", "adaptive", "none"] = "adaptive"
    fixed_ms: float = 60.0
    adaptive_min_ms: float = 20.0
    adaptive_max_ms: float = 200.0
    adaptive_k: float = 4.0

    def __post_init__(self) -> None:
        if self.model not in JB_MODELS:
            raise ValueError(f"jitter buffer model must be one of {JB_MODELS}: {self.model!r}")
        for name in ("fixed_ms", "adaptive_min_ms", "adaptive_max_ms", "adaptive_k"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"jitter_buffer.{name} must be a number >= 0: {value!r}")
        if self.adaptive_min_ms > self.adaptive_max_ms:
            raise ValueError("jitter_buffer.adaptive_min_ms must not exceed adaptive_max_ms")

    @property
    def bounds_ms(self) -> tuple[float, float]:
        """(nominal, maximum) size for the record: fixed (N, N), adaptive (min, max)."""
        if self.model == "fixed":
            return self.fixed_ms, self.fixed_ms
        if self.model == "adaptive":
            return self.adaptive_min_ms, self.adaptive_max_ms
        return 0.0, 0.0

    def target_ms(self, jitter_s: float) -> float:
        """Allowed delay over the anchor (ms) given the jitter J (s) after the packet."""
        if self.model == "fixed":
            return self.fixed_ms
        return min(max(self.adaptive_k * jitter_s * 1000.0, self.adaptive_min_ms),
                   self.adaptive_max_ms)

    def describe(self) -> str:
        """Short label for records: ``fixed 60 ms``, ``adaptive 20-200 ms``, ``none``."""
        if self.model == "fixed":
            return f"fixed {self.fixed_ms:g} ms"
        if self.model == "adaptive":
            return f"adaptive {self.adaptive_min_ms:g}-{self.adaptive_max_ms:g} ms"
        return "none"


Gap = tuple[int, int, int]  # (first, last number, the anchor when the max passed them)


@dataclass(slots=True)
class JbState:
    """One stream's buffer between packets (the reference's; the batch keeps it in arrays
    and a per-stream gap list)."""

    base: int = JB_INF  # the anchor's transit (us); JB_INF: resync at the next packet
    run: int = 0  # late packets in a row (fixed model)
    top: int = 0  # the highest number when the previous buffer packet arrived
    gaps: list[Gap] = field(default_factory=list)  # numbers the max skipped, oldest first


def jb_packet(st: JbState, adaptive: bool, transit: int, ext: int, top: int, sync: bool,
              target_ms: float) -> tuple[bool, float]:
    """One buffer packet (extended number ``ext``; ``top`` the highest number after it)
    through the buffer; returns (discarded, wait ms). A packet that arrives after a higher
    number is judged against the anchor in force when the max passed its number (the
    buffer scheduled its slot then), so packets still in flight when the delay steps
    down are not made late by the faster ones that overtook them."""
    ref = JB_INF
    if sync or st.base == JB_INF:
        st.gaps.clear()
    elif ext < top:  # reordered: its slot was scheduled when the max went past it
        if ext > top - HOLE_WINDOW:
            ref = next((b for lo, hi, b in reversed(st.gaps) if lo <= ext <= hi), JB_INF)
    elif ext - st.top > 1:
        st.gaps.append((st.top + 1, ext - 1, st.base))
    st.top = top
    while st.gaps and st.gaps[0][1] <= top - HOLE_WINDOW:
        del st.gaps[0]  # no tracked number can fall in them any more
    st.base, st.run, late, wait = jb_play(adaptive, st.base, st.run, transit, sync, ext == top,
                                          target_ms, ref)
    return late, wait


def jb_play(adaptive: bool, base: int, run: int, transit: int, resync: bool, in_order: bool,
            target_ms: float, ref: int = JB_INF) -> tuple[int, int, bool, float]:
    """The anchor rule of one buffer packet (theory of operation above; ``ref``: the anchor
    a reordered packet is judged against, JB_INF for the current one): returns the new
    (anchor, late packets in a row), whether it was discarded, and its wait in ms."""
    base = transit if resync or base == JB_INF else min(base, transit)
    delay_us = transit - (base if ref == JB_INF else min(ref, transit))
    if delay_us > target_ms * 1000.0:  # arrived after its playout time
        if not (in_order if adaptive else run + 1 >= JB_RESYNC_LATE):
            return base, 0 if adaptive else run + 1, True, 0.0
        base, delay_us = transit, 0  # re-anchor on it: the playout moves, it is played
    return base, 0, False, target_ms - delay_us / 1000.0


def transit_us(arrival_s: float, ext_ts: int, clock: float) -> int:
    """Transit ``arrival - ext_ts / clock`` in whole microseconds (round half even), clipped."""
    us = round((arrival_s - ext_ts / clock) * 1e6)
    return min(max(us, -JB_TRANSIT_CLIP), JB_TRANSIT_CLIP)


def add_ptime_step(hist: dict[int, int], step: int, count: int = 1) -> None:
    """Count a timestamp step in a bounded histogram (a new value is dropped when full)."""
    if step in hist:
        hist[step] += count
    elif len(hist) < PTIME_MAX_STEPS:
        hist[step] = count


def ptime_ms(hist: dict[int, int], clock: int | None) -> float | None:
    """Most common step (ties: the smaller) / clock, in ms; None without clock or steps."""
    if not clock or not hist:
        return None
    step = min(hist, key=lambda k: (-hist[k], k))
    return step / clock * 1000.0


def seq_step(seq: int, prev_seq: int) -> int:
    """Signed 16-bit difference ``seq - prev_seq`` (RFC 3550 A.1 ``udelta``, centred)."""
    return ((seq - prev_seq + SEQ_MOD // 2) % SEQ_MOD) - SEQ_MOD // 2


def ts_step(ts: int, prev_ts: int) -> int:
    """Signed 32-bit RTP timestamp difference."""
    return ((ts - prev_ts + TS_MOD // 2) % TS_MOD) - TS_MOD // 2


def is_large_jump(step: int) -> bool:
    """RFC 3550 A.1: not within MAX_DROPOUT ahead nor MAX_MISORDER behind."""
    return step >= MAX_DROPOUT or step <= -MAX_MISORDER


def run_lengths(sorted_values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Lengths of the runs of consecutive integers in a sorted, distinct array."""
    if sorted_values.size == 0:
        return np.zeros(0, dtype=np.int64)
    breaks = np.flatnonzero(np.diff(sorted_values) != 1) + 1
    edges = np.concatenate(([0], breaks, [sorted_values.size]))
    return np.diff(edges).astype(np.int64)


def split_final_holes(
    holes: npt.NDArray[np.int64], max_ext: int | None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Split sorted holes into (lengths of runs that can never be filled, holes kept).

    A hole ``e`` can never be filled once ``e <= max_ext - HOLE_WINDOW`` (arrivals
    there are untracked). A run is final when its last hole is; ``max_ext=None``
    finalises everything (segment closed). Finalising whole runs keeps burst
    statistics independent of when this is called.
    """
    if holes.size == 0:
        return np.zeros(0, dtype=np.int64), holes
    if max_ext is None:
        return run_lengths(holes), holes[:0]
    breaks = np.flatnonzero(np.diff(holes) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [holes.size]))
    final = holes[ends - 1] <= max_ext - HOLE_WINDOW
    if not final.any():
        return np.zeros(0, dtype=np.int64), holes
    cut = int(ends[final][-1])
    return (ends - starts)[final].astype(np.int64), holes[cut:]


@dataclass(slots=True)
class BurstTotals:
    """Loss bursts finalised so far (RFC 3611 §4.7.2 style runs of lost numbers)."""

    count: int = 0
    longest: int = 0
    total: int = 0

    def add(self, lengths: npt.NDArray[np.int64]) -> None:
        if lengths.size:
            self.count += int(lengths.size)
            self.longest = max(self.longest, int(lengths.max()))
            self.total += int(lengths.sum())


@dataclass(frozen=True, slots=True)
class StreamMeta:
    """What the tracker knows about a stream before its statistics."""

    key: StreamKey
    codec: str | None
    clock_rate: int | None
    clock_rate_estimated: bool = False
    previous_ssrc: int | None = None
    profile: str | None = None  # SDP m= transport (RTP/AVP, RTP/SAVP ...); None: no SDP
    srtp_trailer_bytes: int | None = None  # SRTP MKI + auth tag bytes when SDP fixes them
    sdp_media: str | None = None  # the m= media type of its SDP (video, image ...); None: no SDP
    codec_params: str | None = None  # the SDP a=fmtp of the codec's payload type


@dataclass(slots=True)
class Totals:
    """Scalar results both implementations reduce to; `to_stats` is the one conversion."""

    payload_types: tuple[int, ...]
    packets: int
    expected: int
    lost: int
    duplicates: int
    reordered: int
    seq_wraps: int
    restarts: int
    bursts: BurstTotals
    max_seq_gap: int
    jitter_s: float
    jitter_sum_s: float
    jitter_max_s: float
    regular: int
    delta_sum_s: float
    delta_max_s: float
    markers: int
    events: int
    comfort_noise: int
    dscp: dict[int, int]
    vlan: int | None
    pcp: int | None
    first_ts: float
    last_ts: float
    jb_packets: int = 0
    jb_discarded: int = 0
    jb_wait_sum_ms: float = 0.0
    jb_wait_max_ms: float = 0.0
    ptime_steps: dict[int, int] = field(default_factory=dict)

    def to_stats(self, meta: StreamMeta, spec: JitterBufferSpec) -> StreamStats:
        n = self.regular
        b = self.bursts
        model = spec.model if meta.clock_rate else "none"
        nominal, top = spec.bounds_ms if model != "none" else (0.0, 0.0)
        played = self.jb_packets - self.jb_discarded
        return StreamStats(
            key=meta.key,
            payload_types=self.payload_types,
            codec=meta.codec,
            clock_rate=meta.clock_rate,
            clock_rate_estimated=meta.clock_rate_estimated,
            packets=self.packets,
            expected=self.expected,
            lost=self.lost,
            duplicates=self.duplicates,
            reordered=self.reordered,
            seq_wraps=self.seq_wraps,
            restarts=self.restarts,
            loss_bursts=b.count,
            loss_burst_max=b.longest,
            loss_burst_mean=b.total / b.count if b.count else 0.0,
            max_seq_gap=self.max_seq_gap,
            jitter_ms=self.jitter_s * 1000.0,
            jitter_mean_ms=self.jitter_sum_s / n * 1000.0 if n else 0.0,
            jitter_max_ms=self.jitter_max_s * 1000.0,
            max_delta_ms=self.delta_max_s * 1000.0,
            mean_delta_ms=self.delta_sum_s / n * 1000.0 if n else 0.0,
            markers=self.markers,
            telephone_event_packets=self.events,
            comfort_noise_packets=self.comfort_noise,
            dscp=dict(sorted(self.dscp.items())),
            vlan=self.vlan,
            pcp=self.pcp,
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            previous_ssrc=meta.previous_ssrc,
            profile=meta.profile,
            srtp_trailer_bytes=meta.srtp_trailer_bytes,
            media=stream_media(meta.sdp_media, meta.codec),
            codec_params=meta.codec_params,
            jb_model=model,
            jb_nominal_ms=nominal,
            jb_max_ms=top,
            jb_packets=self.jb_packets if model != "none" else 0,
            jb_discarded=self.jb_discarded,
            jb_mean_delay_ms=self.jb_wait_sum_ms / played if played > 0 else 0.0,
            jb_max_delay_ms=self.jb_wait_max_ms,
            ptime_ms=ptime_ms(self.ptime_steps, meta.clock_rate),
        )
