"""Jitter-buffer emulation: which packets a receiver would have played too late.

Theory of operation
-------------------
A passive probe sees when packets pass, not when the phone plays them. To turn
jitter into the loss the listener hears, we replay one stream's arrival times
(seconds, in arrival order) against its RTP timestamps through a model of the
receiver's buffer. For every packet the *transit* ``arrival - media_time`` is
the network delay up to a constant clock offset; a buffer plays packet i at
transit ``playout_i``, and a packet whose transit exceeds it arrived after its
playout time and is discarded (STANDARDS.md: effective loss = network loss +
discards).

Models are small classes behind one interface, chosen by name
(:data:`JITTER_BUFFERS`, :func:`create_jitter_buffer`), like aioquic's
congestion controllers:

* ``fixed`` — playout anchored on the first packet: ``playout = transit_0 + N``.
  A first packet that was itself delayed shifts the anchor (as in a real fixed
  buffer); clock skew over a long call is not compensated.
* ``adaptive`` — G.1020/Ramjee et al. "algorithm 1": exponentially weighted
  mean ``d`` and variation ``v`` of the transit, ``playout = d + k v`` bounded
  to ``[min_transit + min_ms, min_transit + max_ms]``; the estimate is updated
  after every packet (late ones included), the way time-scaling buffers adapt.

Duplicates (same extended sequence number) are ignored after the first copy:
they are neither played twice nor counted as late.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

_TS_MOD = 1 << 32


@dataclass(frozen=True, slots=True)
class JitterBufferResult:
    """Outcome of one emulation. Delays are milliseconds."""

    model: str  # "fixed" or "adaptive"
    nominal_ms: float  # fixed: N; adaptive: min_ms
    max_ms: float  # fixed: N; adaptive: max_ms
    packets: int  # distinct packets offered to the buffer
    discarded: int  # arrived after their playout time
    mean_buffer_delay_ms: float  # mean wait of played packets
    max_buffer_delay_ms: float

    @property
    def late_ratio(self) -> float:
        """discarded / packets (0 when there were no packets)."""
        return self.discarded / self.packets if self.packets else 0.0

    def describe(self) -> str:
        """Short label for records, e.g. ``fixed 60 ms`` or ``adaptive 20-200 ms``."""
        if self.model == "fixed":
            return f"fixed {self.nominal_ms:g} ms"
        return f"{self.model} {self.nominal_ms:g}-{self.max_ms:g} ms"


def media_transit_s(
    arrival_s: npt.ArrayLike,
    rtp_ts: npt.ArrayLike,
    clock_rate: int,
    seq_ext: npt.ArrayLike,
) -> npt.NDArray[np.float64]:
    """Transit ``arrival - media_time`` (s) of each distinct packet, in arrival order.

    RTP timestamps are unwrapped modulo 2^32 by signed differences, so reordered
    packets keep their place in media time. Later copies of a sequence number
    are dropped.
    """
    arrival = np.asarray(arrival_s, dtype=np.float64)
    ts = np.asarray(rtp_ts, dtype=np.int64) % _TS_MOD
    seq = np.asarray(seq_ext, dtype=np.int64)
    if not (arrival.shape == ts.shape == seq.shape) or arrival.ndim != 1:
        raise ValueError("arrival_s, rtp_ts and seq_ext must be 1-D arrays of one length")
    if clock_rate <= 0:
        raise ValueError(f"clock_rate must be positive, got {clock_rate}")
    if arrival.size == 0:
        return np.empty(0, dtype=np.float64)
    _, first = np.unique(seq, return_index=True)
    keep = np.sort(first)
    arrival, ts = arrival[keep], ts[keep]
    step = (np.diff(ts) + (1 << 31)) % _TS_MOD - (1 << 31)
    media = np.concatenate(([0], np.cumsum(step))) / float(clock_rate)
    # Relative to the first arrival: keeps microsecond precision for epoch times.
    transit: npt.NDArray[np.float64] = (arrival - arrival[0]) - media
    return transit


class JitterBufferModel(ABC):
    """One receiver model. Subclasses set ``name`` and implement ``playout``."""

    name: ClassVar[str]

    @abstractmethod
    def playout(self, transit_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Playout deadline (on the transit scale, s) of each packet, in arrival order."""

    @abstractmethod
    def bounds_ms(self) -> tuple[float, float]:
        """(nominal, maximum) buffer size in ms, for the record."""

    def emulate(
        self,
        arrival_s: npt.ArrayLike,
        rtp_ts: npt.ArrayLike,
        clock_rate: int,
        seq_ext: npt.ArrayLike,
    ) -> JitterBufferResult:
        """Replay one stream (arrival order) and count packets played too late."""
        transit = media_transit_s(arrival_s, rtp_ts, clock_rate, seq_ext)
        deadline = self.playout(transit)
        # Compare in integer microseconds: float seconds since the epoch would
        # otherwise turn "exactly on time" into late by one ulp.
        late = np.round(transit * 1e6) > np.round(deadline * 1e6)
        wait_ms = (deadline - transit)[~late] * 1000.0
        nominal, maximum = self.bounds_ms()
        return JitterBufferResult(
            model=self.name,
            nominal_ms=nominal,
            max_ms=maximum,
            packets=int(transit.size),
            discarded=int(np.count_nonzero(late)),
            mean_buffer_delay_ms=float(wait_ms.mean()) if wait_ms.size else 0.0,
            max_buffer_delay_ms=float(wait_ms.max()) if wait_ms.size else 0.0,
        )


class FixedJitterBuffer(JitterBufferModel):
    """Fixed buffer of ``nominal_ms``, anchored on the first packet's transit."""

    name: ClassVar[str] = "fixed"

    def __init__(self, nominal_ms: float = 60.0) -> None:
        if nominal_ms < 0:
            raise ValueError(f"nominal_ms must be >= 0, got {nominal_ms}")
        self.nominal_ms = float(nominal_ms)

    def bounds_ms(self) -> tuple[float, float]:
        return (self.nominal_ms, self.nominal_ms)

    def playout(self, transit_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if transit_s.size == 0:
            return transit_s.copy()
        return np.full_like(transit_s, transit_s[0] + self.nominal_ms / 1000.0)


class AdaptiveJitterBuffer(JitterBufferModel):
    """Ramjee "algorithm 1": playout = d + k v, bounded to [min_ms, max_ms] above the floor."""

    name: ClassVar[str] = "adaptive"

    def __init__(
        self,
        min_ms: float = 20.0,
        max_ms: float = 200.0,
        alpha: float = 0.998002,  # Ramjee et al. 1994
        k: float = 4.0,
    ) -> None:
        if not 0 <= min_ms <= max_ms:
            raise ValueError(f"need 0 <= min_ms <= max_ms, got {min_ms}, {max_ms}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.min_ms, self.max_ms = float(min_ms), float(max_ms)
        self.alpha, self.k = alpha, k

    def bounds_ms(self) -> tuple[float, float]:
        return (self.min_ms, self.max_ms)

    def playout(self, transit_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out = np.empty_like(transit_s)
        if transit_s.size == 0:
            return out
        a, lo, hi = self.alpha, self.min_ms / 1000.0, self.max_ms / 1000.0
        d = floor = float(transit_s[0])
        v = 0.0
        for i, n in enumerate(transit_s.tolist()):
            # The deadline is decided before this packet is seen (causal).
            out[i] = min(max(d + self.k * v, floor + lo), floor + hi)
            floor = min(floor, n)
            d = a * d + (1.0 - a) * n
            v = a * v + (1.0 - a) * abs(n - d)
        return out


JITTER_BUFFERS: dict[str, type[JitterBufferModel]] = {
    FixedJitterBuffer.name: FixedJitterBuffer,
    AdaptiveJitterBuffer.name: AdaptiveJitterBuffer,
}


def create_jitter_buffer(name: str, nominal_ms: float, max_ms: float) -> JitterBufferModel:
    """Build the model ``name`` ("fixed": N = nominal_ms; "adaptive": nominal_ms..max_ms)."""
    if name == FixedJitterBuffer.name:
        return FixedJitterBuffer(nominal_ms)
    if name == AdaptiveJitterBuffer.name:
        return AdaptiveJitterBuffer(min_ms=nominal_ms, max_ms=max_ms)
    raise ValueError(f"unknown jitter buffer model {name!r}; known: {sorted(JITTER_BUFFERS)}")
