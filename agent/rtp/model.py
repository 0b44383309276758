"""Frozen result types of the RTP layer: stream identity and final statistics.

`StreamStats.to_json()` is the `analyze --json` stream object (issue 2's JSON
contract). Later issues add keys; these are never renamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.decode.endpoint import Endpoint
from agent.decode.frames import format_endpoint
from agent.media.payloads import RATED_MEDIA


@dataclass(frozen=True, slots=True, order=True)
class StreamKey:
    """5-tuple (UDP implied) plus SSRC, at an observation point. Addresses as 128-bit
    (hi, lo) words, IPv4-mapped. ``point``: where the stream was seen (its name in
    `agent.capture.points`; "" for a source that tells nothing): the same stream seen
    on both sides of a gateway is two keys, measured each on its own."""

    src_hi: int
    src_lo: int
    sport: int
    dst_hi: int
    dst_lo: int
    dport: int
    ssrc: int
    point: str = ""

    @property
    def src(self) -> str:
        return format_endpoint(self.src_hi, self.src_lo, self.sport)

    @property
    def src_endpoint(self) -> Endpoint:
        return Endpoint(self.src_hi, self.src_lo, self.sport)

    @property
    def dst_endpoint(self) -> Endpoint:
        return Endpoint(self.dst_hi, self.dst_lo, self.dport)

    @property
    def dst(self) -> str:
        return format_endpoint(self.dst_hi, self.dst_lo, self.dport)


@dataclass(frozen=True, slots=True)
class StreamStats:
    """Final (or snapshot) statistics of one RTP stream. Units are in the names."""

    key: StreamKey
    payload_types: tuple[int, ...]
    codec: str | None
    clock_rate: int | None
    clock_rate_estimated: bool
    packets: int  # every packet received, duplicates included
    expected: int  # extended highest seq - first seq + 1 (per RFC 3550 A.3, from the first packet)
    lost: int  # expected - distinct sequence numbers received; never negative
    duplicates: int
    reordered: int
    seq_wraps: int
    restarts: int  # large sequence jumps confirmed as a source restart (RFC 3550 A.1 bad_seq)
    loss_bursts: int  # runs of consecutive lost sequence numbers
    loss_burst_max: int
    loss_burst_mean: float
    max_seq_gap: int  # largest jump forward in sequence number (1 = no loss)
    jitter_ms: float  # final RFC 3550 A.8 estimate
    jitter_mean_ms: float
    jitter_max_ms: float
    max_delta_ms: float  # largest inter-arrival time between consecutive packets
    mean_delta_ms: float
    markers: int
    telephone_event_packets: int  # RFC 4733, excluded from jitter
    comfort_noise_packets: int  # RFC 3389, excluded from jitter
    dscp: dict[int, int] = field(hash=False)  # DSCP value -> packets
    vlan: int | None
    pcp: int | None
    first_ts: float
    last_ts: float
    previous_ssrc: int | None = None  # set when this stream replaced another SSRC on its 5-tuple
    # Jitter-buffer emulation over the stream's media packets (agent/rtp, docs/rtp-metrics.md)
    jb_model: str = "none"  # "fixed" | "adaptive" | "none" (not emulated)
    jb_nominal_ms: float = 0.0  # fixed: N; adaptive: the minimum target
    jb_max_ms: float = 0.0  # fixed: N; adaptive: the maximum target
    jb_packets: int = 0  # media packets offered to the buffer (duplicates excluded)
    jb_discarded: int = 0  # arrived after their playout time
    jb_mean_delay_ms: float = 0.0  # mean wait in the buffer of the packets played
    jb_max_delay_ms: float = 0.0
    ptime_ms: float | None = None  # most common RTP timestamp step of media packets / clock
    profile: str | None = None  # SDP m= transport (RTP/AVP, RTP/SAVP, RTP/SAVPF ...)
    srtp_trailer_bytes: int | None = None  # SRTP MKI + auth tag bytes, when SDP fixed them
    codec_params: str | None = None  # the SDP a=fmtp of the codec's payload type
    # what it carries (`agent.media.payloads.stream_media`): audio, video, image, text,
    # application, telephone-event or comfort-noise alone, unknown (unsignalled, unnamed)
    media: str = "audio"

    @property
    def rated(self) -> bool:
        """Whether the E-model applies: audio, or media the probe cannot name."""
        return self.media in RATED_MEDIA

    @property
    def loss_ratio(self) -> float:
        return self.lost / self.expected if self.expected > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The `analyze --json` stream object."""
        return {
            "kind": "stream",
            "src": self.key.src,
            "dst": self.key.dst,
            "ssrc": self.key.ssrc,
            "point": self.key.point,  # where it was seen (agent/capture/points.py)
            "payload_types": list(self.payload_types),
            "codec": self.codec,
            "clock_rate": self.clock_rate,
            "clock_rate_estimated": self.clock_rate_estimated,
            "packets": self.packets,
            "expected": self.expected,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "loss_ratio": round(self.loss_ratio, 6),
            "seq_wraps": self.seq_wraps,
            "restarts": self.restarts,
            "loss_bursts": self.loss_bursts,
            "loss_burst_max": self.loss_burst_max,
            "loss_burst_mean": round(self.loss_burst_mean, 3),
            "max_seq_gap": self.max_seq_gap,
            "jitter_ms": round(self.jitter_ms, 4),
            "jitter_mean_ms": round(self.jitter_mean_ms, 4),
            "jitter_max_ms": round(self.jitter_max_ms, 4),
            "max_delta_ms": round(self.max_delta_ms, 3),
            "mean_delta_ms": round(self.mean_delta_ms, 3),
            "markers": self.markers,
            "telephone_event_packets": self.telephone_event_packets,
            "comfort_noise_packets": self.comfort_noise_packets,
            "dscp": {str(k): v for k, v in sorted(self.dscp.items())},
            "vlan": self.vlan,
            "pcp": self.pcp,
            "first_ts": round(self.first_ts, 6),
            "last_ts": round(self.last_ts, 6),
            "duration_s": round(self.last_ts - self.first_ts, 6),
            "previous_ssrc": self.previous_ssrc,
            "jitter_buffer": {
                "model": self.jb_model,
                "nominal_ms": self.jb_nominal_ms,
                "max_ms": self.jb_max_ms,
                "packets": self.jb_packets,
                "discarded": self.jb_discarded,
                "mean_delay_ms": round(self.jb_mean_delay_ms, 3),
                "max_delay_ms": round(self.jb_max_delay_ms, 3),
            },
            "ptime_ms": self.ptime_ms,
            "profile": self.profile,
            "srtp_trailer_bytes": self.srtp_trailer_bytes,
            "media": self.media,
            "codec_params": self.codec_params,
        }
