"""Call quality: G.107 E-model, codec impairments, loss burstiness.

The jitter-buffer emulation runs inside the RTP statistics (`agent.rtp.rules`);
this package rates its result.

Pure library code (no I/O). Entry point: :func:`compute_quality`; see docs/quality.md.
"""

from agent.media.codecs import CodecImpairment, lookup_codec
from agent.quality.emodel import EModelParams, mos_from_r
from agent.quality.loss import (
    burst_gap,
    burst_ratio_from_counts,
    burst_ratio_from_runs,
    burst_ratio_from_sequence,
)
from agent.quality.model import (
    DirectionInput,
    IntervalQuality,
    JitterBufferResult,
    Quality,
    QualityConfig,
    compute_intervals,
    compute_quality,
)

__all__ = [
    "CodecImpairment",
    "DirectionInput",
    "EModelParams",
    "IntervalQuality",
    "JitterBufferResult",
    "Quality",
    "QualityConfig",
    "burst_gap",
    "burst_ratio_from_counts",
    "burst_ratio_from_runs",
    "burst_ratio_from_sequence",
    "compute_intervals",
    "compute_quality",
    "lookup_codec",
    "mos_from_r",
]
