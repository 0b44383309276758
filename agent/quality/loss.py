"""Loss burstiness: G.107 BurstR and RFC 3611 burst/gap metrics.

Inputs are either a per-sequence-number loss indicator (a numpy bool/uint8
array, one element per *expected* sequence number in extended-sequence order,
true/nonzero = lost or discarded) or the run-length summaries the RTP layer
already keeps (``lost``, ``expected``, ``loss_bursts``).

BurstR (G.107 §7.5 / Appendix): the loss process is a two-state Markov chain
(found/lost), ``p = P(found -> lost)``, ``q = P(lost -> found)``, and
``BurstR = 1 / (p + q)``. For random (Bernoulli) loss p + q = 1 so BurstR = 1;
longer loss runs make q small and BurstR > 1. With no loss, or nothing
received, BurstR is 1 (the term it feeds vanishes or saturates anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

RFC3611_GMIN = 16  # RFC 3611 §4.7.2 default Gmin


def _as_lost(lost: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    arr = np.asarray(lost)
    if arr.ndim != 1:
        raise ValueError(f"loss indicator must be one-dimensional, got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def burst_ratio_from_sequence(lost: npt.ArrayLike) -> float:
    """BurstR = 1/(p+q) estimated from consecutive pairs of a loss indicator.

    ``p`` = (found->lost transitions) / (found packets that have a successor),
    ``q`` = (lost->found transitions) / (lost packets that have a successor).
    """
    x = _as_lost(lost)
    if x.size < 2 or not x.any() or x.all():
        return 1.0
    prev, nxt = x[:-1], x[1:]
    found_prev = int(np.count_nonzero(~prev))
    lost_prev = int(np.count_nonzero(prev))
    p = int(np.count_nonzero(~prev & nxt)) / found_prev if found_prev else 0.0
    q = int(np.count_nonzero(prev & ~nxt)) / lost_prev if lost_prev else 0.0
    return 1.0 / (p + q) if p + q > 0.0 else 1.0


def burst_ratio_from_counts(lost: int, expected: int, loss_bursts: int) -> float:
    """BurstR from run-length summaries: ``loss_bursts`` runs holding ``lost`` packets.

    p = loss_bursts / received, q = loss_bursts / lost (each loss run is entered
    once from a found packet and left once). This is the sequence estimate up
    to edge effects at the first and last packet.
    """
    received = expected - lost
    if lost <= 0 or received <= 0 or loss_bursts <= 0:
        return 1.0
    p = loss_bursts / received
    q = loss_bursts / lost
    return 1.0 / (p + q)


def burst_ratio_from_runs(loss_runs: Sequence[int], received: int) -> float:
    """BurstR from the lengths of the loss runs and the number of packets received."""
    runs = [r for r in loss_runs if r > 0]
    return burst_ratio_from_counts(sum(runs), sum(runs) + received, len(runs))


@dataclass(frozen=True, slots=True)
class BurstGap:
    """RFC 3611 §4.7.2 burst/gap metrics. Densities are ratios (0..1), not x256."""

    burst_density: float  # lost / packets inside bursts
    gap_density: float  # lost / packets inside gaps
    burst_packets: int  # packets (lost or not) inside bursts
    gap_packets: int
    bursts: int
    gmin: int

    def burst_duration_ms(self, ptime_ms: float) -> float:
        """Mean burst duration for packets of ``ptime_ms`` each."""
        return self.burst_packets / self.bursts * ptime_ms if self.bursts else 0.0

    def gap_duration_ms(self, ptime_ms: float) -> float:
        """Mean gap duration (gaps = bursts + 1 at most; here gap packets / (bursts+1))."""
        return self.gap_packets / (self.bursts + 1) * ptime_ms


def burst_gap(lost: npt.ArrayLike, gmin: int = RFC3611_GMIN) -> BurstGap:
    """RFC 3611 burst/gap split of a loss indicator.

    A burst is a longest run that starts and ends with a loss and contains no
    ``gmin`` or more consecutive received packets, and holds at least two
    losses; an isolated loss with ``gmin`` received packets on both sides stays
    in the gap (as the RFC 3611 Appendix counting does). Everything else is gap.
    """
    x = _as_lost(lost)
    idx = np.flatnonzero(x)
    bursts = burst_packets = burst_lost = 0
    if idx.size:
        # Consecutive losses separated by fewer than gmin received packets chain.
        breaks = np.flatnonzero(np.diff(idx) - 1 >= gmin)
        starts = np.concatenate(([0], breaks + 1))
        ends = np.concatenate((breaks, [idx.size - 1]))
        multi = ends > starts
        bursts = int(np.count_nonzero(multi))
        burst_packets = int(np.sum(idx[ends[multi]] - idx[starts[multi]] + 1))
        burst_lost = int(np.sum(ends[multi] - starts[multi] + 1))
    gap_packets = int(x.size) - burst_packets
    gap_lost = int(idx.size) - burst_lost
    return BurstGap(
        burst_density=burst_lost / burst_packets if burst_packets else 0.0,
        gap_density=gap_lost / gap_packets if gap_packets else 0.0,
        burst_packets=burst_packets,
        gap_packets=gap_packets,
        bursts=bursts,
        gmin=gmin,
    )
