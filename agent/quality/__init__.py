"""Call quality: G.107 E-model, codec impairments, loss burstiness, jitter-buffer emulation.

Pure library code (no I/O). Entry point: :func:`compute_quality`; see docs/quality.md.
"""

from agent.media.codecs import CodecImpairment, lookup_codec
from agent.quality.emodel import EModelParams, mos_from_r
from agent.quality.jitterbuffer import (
    JITTER_BUFFERS,
    AdaptiveJitterBuffer,
    FixedJitterBuffer,
    JitterBufferResult,
    create_jitter_buffer,
)
from agent.quality.loss import (
    burst_gap,
    burst_ratio_from_counts,
    burst_ratio_from_runs,
    burst_ratio_from_sequence,
)
from agent.quality.model import (
    DirectionInput,
    IntervalQuality,
    Quality,
    QualityConfig,
    compute_intervals,
    compute_quality,
)

__all__ = [
    "JITTER_BUFFERS",
    "AdaptiveJitterBuffer",
    "CodecImpairment",
    "DirectionInput",
    "EModelParams",
    "FixedJitterBuffer",
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
    "create_jitter_buffer",
    "lookup_codec",
    "mos_from_r",
]
