"""Per-direction call quality from what a passive probe measured.

Theory of operation
-------------------
For one media direction the caller hands in a :class:`DirectionInput` (codec
name, network loss ratio, BurstR, the jitter-buffer emulation result, RTT if
RTCP gave one, ptime) and a :class:`QualityConfig`. :func:`compute_quality`
then

1. looks the codec's figures up (:mod:`agent.media.codecs`, the one registry),
   narrowband or wideband; a codec without figures is rated with the stated
   fallback and ``codec_figures`` says ``assumed``;
2. estimates the one-way mouth-to-ear delay (STANDARDS.md "Delay and jitter as
   a probe sees them")::

       Ta = RTT/2 (or the configured assumed network delay)
            + packetisation (ptime) + jitter-buffer delay + codec look-ahead

   and uses T = Ta (echo path) and Tr = 2 Ta (listener-echo loop);
   ``delay_source`` says whether the network part was measured or assumed
   (ITU-T P.564 asks a model to report what it assumed);
3. effective loss = network loss + packets the jitter buffer discarded:
   ``loss + (1 - loss) * late_ratio`` (discards are counted among received);
4. runs the E-model: R and MOS-CQ (conversational: all impairments) and
   MOS-LQ (listening: the same R without the delay impairment Id, as RFC 3611
   XR / VQmon practice - delay and echo are not heard in a listening test).

:func:`compute_intervals` applies the same to a call's intervals and keeps the
minimum MOS-CQ, so a bad minute is not hidden by a good hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.media.codecs import CodecImpairment, lookup_codec
from agent.quality.emodel import EModelParams, RatingBreakdown, rate_narrowband, rate_wideband
from agent.rtp.rules import JitterBufferSpec

DelaySource = Literal["measured", "assumed"]
CodecFigures = Literal["standard", "assumed"]


@dataclass(frozen=True, slots=True)
class JitterBufferResult:
    """What the stream's jitter-buffer emulation (`agent.rtp.rules`) found. Delays in ms."""

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


class CodecOverride(BaseModel):
    """A user-supplied codec row (replaces or extends the G.113 table)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    ie: float = Field(ge=0.0)
    bpl: float = Field(gt=0.0)
    lookahead_ms: float = Field(default=0.0, ge=0.0)
    default_ptime_ms: float = Field(default=20.0, gt=0.0)
    wideband: bool = False


class QualityConfig(BaseModel):
    """Quality model settings. Defaults are documented in docs/quality.md."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    # One-way network delay used in place of RTT/2 when no RTT was measured.
    # 20 ms: an office gateway to a national carrier SBC. Flagged "assumed".
    assumed_network_delay_ms: float = Field(default=20.0, ge=0.0)
    # the receiver's buffer the RTP statistics emulate (one type, `agent.rtp.rules`)
    jitter_buffer: JitterBufferSpec = JitterBufferSpec()
    g711_plc: bool = True  # G.711 Bpl 25.1 (PLC) or 4.3 (no PLC)
    emodel: EModelParams = EModelParams()
    codec_overrides: dict[str, CodecOverride] = Field(default_factory=dict)

    def codec(self, name: str | None, params: str | None = None) -> CodecImpairment:
        """The impairment row for ``name`` (and its SDP fmtp ``params``) under this config's
        overrides and PLC choice."""
        overrides = {
            key: CodecImpairment(
                name=key,
                ie=o.ie,
                bpl=o.bpl,
                lookahead_ms=o.lookahead_ms,
                default_ptime_ms=o.default_ptime_ms,
                wideband=o.wideband,
                source="config override",
            )
            for key, o in self.codec_overrides.items()
        }
        return lookup_codec(name, params=params, g711_plc=self.g711_plc, overrides=overrides)


@dataclass(frozen=True, slots=True)
class DirectionInput:
    """What was measured for one media direction (or one interval of it)."""

    codec: str | None
    loss_ratio: float  # network loss, lost / expected, 0..1
    burst_ratio: float = 1.0  # G.107 BurstR (agent.quality.loss)
    jitter_buffer: JitterBufferResult | None = None
    rtt_s: float | None = None  # round trip from RTCP, None if not measured
    ptime_ms: float | None = None  # from SDP a=ptime or packet spacing
    codec_params: str | None = None  # SDP a=fmtp of the codec (a mode with other figures)


@dataclass(frozen=True, slots=True)
class Quality:
    """E-model result for one direction. R is on the codec's scale (100 NB, 129 WB)."""

    r_factor: float
    r_factor_lq: float
    mos_cq: float
    mos_lq: float
    wideband: bool
    codec: str
    codec_figures: CodecFigures  # "assumed": a codec without figures, rated on the fallback
    delay_ms: float  # estimated one-way mouth-to-ear delay Ta
    delay_source: DelaySource
    network_delay_ms: float  # RTT/2 or the assumed value
    effective_loss_ratio: float
    burst_ratio: float
    ie_eff: float
    id: float
    jitter_buffer: str  # e.g. "adaptive 20-200 ms" or "fixed 60 ms (nominal)"
    jitter_buffer_discarded: int

    def to_json(self, mos_min: float | None = None) -> dict[str, Any]:
        """The ``quality`` object of the issue-3 JSON contract."""
        return {
            "r_factor": round(self.r_factor, 3),
            "mos_cq": round(self.mos_cq, 3),
            "mos_lq": round(self.mos_lq, 3),
            "mos_min": None if mos_min is None else round(mos_min, 3),
            "delay_ms": round(self.delay_ms, 3),
            "delay_source": self.delay_source,
            "effective_loss_ratio": round(self.effective_loss_ratio, 6),
            "jitter_buffer": self.jitter_buffer,
            "codec": self.codec,
            "codec_figures": self.codec_figures,
            "wideband": self.wideband,
        }


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


def effective_loss_ratio(loss_ratio: float, jb: JitterBufferResult | None) -> float:
    """Network loss plus jitter-buffer discards, as a ratio of expected packets."""
    loss = _clamp(loss_ratio, 0.0, 1.0)
    late = jb.late_ratio if jb is not None else 0.0
    return loss + (1.0 - loss) * late


def one_way_delay_ms(
    inp: DirectionInput, codec: CodecImpairment, cfg: QualityConfig
) -> tuple[float, float, DelaySource]:
    """(Ta ms, network part ms, source) = RTT/2 + ptime + buffer + look-ahead."""
    source: DelaySource
    if inp.rtt_s is not None and inp.rtt_s >= 0.0:
        network, source = inp.rtt_s * 1000.0 / 2.0, "measured"
    else:
        network, source = cfg.assumed_network_delay_ms, "assumed"
    ptime = inp.ptime_ms if inp.ptime_ms is not None and inp.ptime_ms > 0 else None
    packetisation = ptime if ptime is not None else codec.default_ptime_ms
    jb = inp.jitter_buffer
    buffer = jb.mean_buffer_delay_ms if jb is not None else cfg.jitter_buffer.bounds_ms[0]
    return network + packetisation + buffer + codec.lookahead_ms, network, source


def _rate(
    codec: CodecImpairment, ta_ms: float, loss: float, burst_r: float, p: EModelParams
) -> RatingBreakdown:
    """E-model with T = Ta and Tr = 2 Ta, on the codec's scale."""
    ppl = 100.0 * loss
    if codec.wideband:
        return rate_wideband(
            t_ms=ta_ms,
            tr_ms=2.0 * ta_ms,
            ta_ms=ta_ms,
            ie_wb=codec.ie,
            bpl=codec.bpl,
            ppl_percent=ppl,
            burst_r=burst_r,
            p=p,
        )
    return rate_narrowband(
        t_ms=ta_ms,
        tr_ms=2.0 * ta_ms,
        ta_ms=ta_ms,
        ie=codec.ie,
        bpl=codec.bpl,
        ppl_percent=ppl,
        burst_r=burst_r,
        p=p,
    )


def compute_quality(inp: DirectionInput, cfg: QualityConfig | None = None) -> Quality:
    """E-model quality of one direction from measured inputs (see module docstring)."""
    cfg = cfg or QualityConfig()
    codec = cfg.codec(inp.codec, inp.codec_params)
    ta, network, source = one_way_delay_ms(inp, codec, cfg)
    loss = effective_loss_ratio(inp.loss_ratio, inp.jitter_buffer)
    burst_r = inp.burst_ratio if inp.burst_ratio > 0.0 else 1.0
    b = _rate(codec, ta, loss, burst_r, cfg.emodel)
    r = _clamp(b.r, 0.0, b.r_max)
    r_lq = _clamp(b.r_listening, 0.0, b.r_max)
    jb = inp.jitter_buffer
    return Quality(
        r_factor=r,
        r_factor_lq=r_lq,
        mos_cq=b.mos(r),
        mos_lq=b.mos(r_lq),
        wideband=codec.wideband,
        codec=codec.name,
        codec_figures="standard" if codec.known else "assumed",
        delay_ms=ta,
        delay_source=source,
        network_delay_ms=network,
        effective_loss_ratio=loss,
        burst_ratio=burst_r,
        ie_eff=b.ie_eff,
        id=b.id_total,
        jitter_buffer=jb.describe() if jb is not None else _nominal_label(cfg),
        jitter_buffer_discarded=jb.discarded if jb is not None else 0,
    )


def _nominal_label(cfg: QualityConfig) -> str:
    return f"{cfg.jitter_buffer.describe()} (nominal, not emulated)"


@dataclass(frozen=True, slots=True)
class IntervalQuality:
    """Quality of each interval of a call and the worst one."""

    intervals: tuple[Quality, ...]
    mos_min: float | None  # minimum MOS-CQ over the intervals, None if there were none
    worst_index: int | None

    @property
    def r_min(self) -> float | None:
        return None if self.worst_index is None else self.intervals[self.worst_index].r_factor


def compute_intervals(
    inputs: Sequence[DirectionInput], cfg: QualityConfig | None = None
) -> IntervalQuality:
    """:func:`compute_quality` per interval, plus the minimum MOS-CQ and where it was."""
    qs = tuple(compute_quality(i, cfg) for i in inputs)
    if not qs:
        return IntervalQuality((), None, None)
    worst = min(range(len(qs)), key=lambda k: qs[k].mos_cq)
    return IntervalQuality(qs, qs[worst].mos_cq, worst)
