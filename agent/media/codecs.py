"""E-model figures per audio codec: Ie, Bpl, frame, look-ahead, with their sources.

One table, :data:`CODECS`, keyed by the registry's canonical encoding name
(`agent.media.payloads.canonical_name`), so SDP, RTP and quality name a codec
the same way. Sources:

- Ie (narrowband): ITU-T G.113 (11/2007) Appendix I, Table I.1.
- Bpl: ITU-T G.113 Appendix I, Table I.3 (given only for G.711 with and
  without PLC, G.723.1+VAD, G.729A+VAD and GSM-EFR). For the other codecs the
  G.711-without-PLC value 4.3 is used (a codec without concealment) and
  flagged unverified.
- Ie,WB on the G.107.1 wideband scale (R max 129): G.113 Appendix IV as
  collected in reference/STANDARDS.md (AMR-WB 12.65 kbit/s, monotic).
- Frame and look-ahead: the codec's own specification, cited per row.

iLBC and Opus have no ITU-T G.113 value; their rows carry figures from the
literature, flagged unverified, so they are rated as themselves (not as
G.711). Every value that could not be checked against the standard's own text
names itself in ``unverified``. All rows can be replaced through
``QualityConfig.codec_overrides``.

A codec the table does not cover (LPC, QCELP, DVI4, L16, speex, an unknown
dynamic name ...) gets the stated fallback: the G.711 row (Ie 0, Bpl per the
PLC choice) named ``unknown`` with ``known=False``; a record then says
``codec_figures: assumed`` and an SLA does not judge its MOS.

G.711's loss robustness depends on whether the endpoints conceal loss (G.711
Appendix I PLC): Bpl 25.1 with PLC (the default, modern phones conceal), 4.3
without.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass

from agent.media.payloads import canonical_name

G711_BPL_PLC = 25.1  # G.113 App. I Table I.3, G.711 with Appendix I PLC
G711_BPL_NO_PLC = 4.3  # G.113 App. I Table I.3, G.711 without PLC (unverified)
NO_PLC_BPL = G711_BPL_NO_PLC  # codecs whose Bpl G.113 does not give (unverified)


@dataclass(frozen=True, slots=True)
class CodecImpairment:
    """E-model inputs for one codec. ``ie`` is on the scale of ``wideband``."""

    name: str  # canonical encoding name, as reported in records
    ie: float  # Ie (narrowband) or Ie,WB (wideband, G.107.1 scale)
    bpl: float  # packet-loss robustness factor
    lookahead_ms: float  # algorithmic look-ahead beyond one frame
    default_ptime_ms: float  # packetisation when SDP and packets give no ptime
    wideband: bool
    source: str
    unverified: tuple[str, ...] = ()  # names of fields whose value is not verified
    frame_ms: float = 0.0  # codec frame; 0 for sample-based codecs (G.711, G.726, G.722)
    known: bool = True  # False: the fallback row for a codec without figures

    @property
    def figures(self) -> str:
        """``standard`` (the codec's own figures) or ``assumed`` (the fallback)."""
        return "standard" if self.known else "assumed"


_G113 = "G.113 App. I"
_LIT = "literature, not in G.113"


def _row(name: str, ie: float, bpl: float, frame_ms: float, lookahead_ms: float,
         ptime_ms: float = 20.0, *, wideband: bool = False, source: str = _G113,
         unverified: tuple[str, ...] = ()) -> CodecImpairment:
    return CodecImpairment(name, ie, bpl, lookahead_ms, ptime_ms, wideband, source,
                           unverified, frame_ms)


def _g726(prefix: str) -> tuple[CodecImpairment, ...]:
    # G.113 App. I Table I.1: G.726/G.727 ADPCM 40/32/24/16 kbit/s -> Ie 2/7/25/50.
    # Sample-based (G.726 §1): no frame, no look-ahead. The AAL2- names (RFC 3551
    # §4.5.4 packing order) are the same codec.
    return tuple(_row(f"{prefix}G726-{k}", ie, NO_PLC_BPL, 0.0, 0.0, unverified=("bpl",))
                 for k, ie in ((40, 2.0), (32, 7.0), (24, 25.0), (16, 50.0)))


#: The codec table. Ie/Bpl: G.113 App. I unless ``source`` says otherwise.
CODECS: tuple[CodecImpairment, ...] = (
    # G.711: Ie 0 (Table I.1); Bpl by PLC choice (Table I.3). Sample-based.
    _row("PCMU", 0.0, G711_BPL_PLC, 0.0, 0.0),
    _row("PCMA", 0.0, G711_BPL_PLC, 0.0, 0.0),
    # G.729 Ie 10, G.729A+VAD Ie 11 (Table I.1); SDP "G729" covers Annex A/B (RFC 3551
    # §4.5.6), so the A+VAD row: Bpl 19.0 at 2 frames/packet (Table I.3).
    # G.729 §2: 10 ms frame, 5 ms look-ahead.
    _row("G729", 11.0, 19.0, 10.0, 5.0),
    # G.723.1 6.3 kbit/s Ie 15, Bpl 16.1 (+VAD, 30 ms); 5.3 kbit/s would be Ie 19.
    # G.723.1 §2: 30 ms frame, 7.5 ms look-ahead.
    _row("G723", 15.0, 16.1, 30.0, 7.5, 30.0),
    *_g726(""), *_g726("AAL2-"),
    # G.728 16 kbit/s LD-CELP Ie 7 (12.8 kbit/s: 20). G.728: 0.625 ms vector, no look-ahead.
    _row("G728", 7.0, NO_PLC_BPL, 0.625, 0.0, unverified=("bpl",)),
    # GSM 06.10 FR Ie 20, 06.20 HR Ie 23, 06.60 EFR Ie 5 (Table I.1); EFR Bpl 10 (Table
    # I.3, unverified). 20 ms frames (GSM 06.10/06.20/06.60).
    _row("GSM", 20.0, NO_PLC_BPL, 20.0, 0.0, unverified=("bpl",)),
    _row("GSM-HR-08", 23.0, NO_PLC_BPL, 20.0, 0.0, unverified=("bpl",)),
    _row("GSM-EFR", 5.0, 10.0, 20.0, 0.0, unverified=("bpl",)),
    # AMR 12.2 kbit/s is the GSM-EFR algorithm (3GPP TS 26.071): EFR's Ie and Bpl.
    # 3GPP TS 26.090: 20 ms frame, 5 ms look-ahead.
    _row("AMR", 5.0, 10.0, 20.0, 5.0, unverified=("ie", "bpl")),
    # iLBC (RFC 3951 §1: 20 ms block, 25 ms algorithmic delay -> 5 ms look-ahead);
    # Ie 11, Bpl 32 from published E-model fits, not ITU-T.
    _row("iLBC", 11.0, 32.0, 20.0, 5.0, source=_LIT, unverified=("ie", "bpl")),
    # Wideband rows: Ie,WB on the G.107.1 scale.
    # AMR-WB 12.65 kbit/s Ie,WB 13 (monotic; 20 diotic), Bpl 4.3 (STANDARDS.md).
    # 3GPP TS 26.190: 20 ms frame, 5 ms look-ahead.
    _row("AMR-WB", 13.0, 4.3, 20.0, 5.0, wideband=True, source="G.113 App. IV (monotic)"),
    # G.722 64 kbit/s: Ie,WB 13, Bpl 10 (unverified). Sample-based sub-band ADPCM.
    _row("G722", 13.0, 10.0, 0.0, 0.0, wideband=True, source="G.113 App. IV",
         unverified=("ie", "bpl")),
    # Opus (RFC 6716 §2: 20 ms frames, 26.5 ms algorithmic delay -> 6.5 ms look-ahead);
    # Ie,WB 10, Bpl 20 from published E-model fits, not ITU-T.
    _row("opus", 10.0, 20.0, 20.0, 6.5, wideband=True, source=_LIT,
         unverified=("ie", "bpl")),
)  # fmt: skip

_BY_NAME: Mapping[str, CodecImpairment] = {row.name.upper(): row for row in CODECS}
_G711_NAMES = frozenset({"PCMU", "PCMA"})

#: Codec modes an SDP a=fmtp selects, with figures of their own:
#: (codec, fmtp parameter, value) -> the fields that differ from the codec's row.
VARIANTS: Mapping[tuple[str, str, str], Mapping[str, object]] = {
    # RFC 4856 §2.1 (G723 "bitrate"): 5.3 kbit/s is Ie 19 (G.113 App. I Table I.1); Bpl
    # 16.1 is given for 6.3 kbit/s only.
    ("G723", "bitrate", "5.3"): {"ie": 19.0, "unverified": ("bpl",)},
    # RFC 3952 §4.2 (iLBC "mode"): 30 ms blocks, 40 ms algorithmic delay (RFC 3951 §1).
    ("iLBC", "mode", "30"): {"frame_ms": 30.0, "lookahead_ms": 10.0, "default_ptime_ms": 30.0},
}


def fmtp_parameters(fmtp: str | None) -> dict[str, str]:
    """``a=fmtp`` format parameters as a dict (RFC 4855 §3: ``name=value;...``, names
    case-insensitive); anything that is not ``name=value`` is ignored."""
    out: dict[str, str] = {}
    for part in (fmtp or "").split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            out.setdefault(name.strip().lower(), value.strip())
    return out


def _variant(row: CodecImpairment, params: str | None) -> CodecImpairment:
    """The codec's row, or the mode its fmtp selects (named ``<codec> <param>=<value>``)."""
    for name, value in sorted(fmtp_parameters(params).items()):
        changes = VARIANTS.get((row.name, name, value))
        if changes is not None:
            return dataclasses.replace(row, name=f"{row.name} {name}={value}", **changes)  # type: ignore[arg-type]
    return row


def lookup_codec(
    name: str | None,
    *,
    params: str | None = None,
    g711_plc: bool = True,
    overrides: Mapping[str, CodecImpairment] | None = None,
) -> CodecImpairment:
    """The figures for ``name`` (any spelling the registry knows; case-insensitive).

    ``params`` is the SDP ``a=fmtp`` of the payload type: a mode in `VARIANTS` (G.723.1
    at 5.3 kbit/s, iLBC's 30 ms mode) has figures of its own.
    ``g711_plc`` picks G.711's Bpl: 25.1 with concealment, 4.3 without.
    ``overrides`` (keyed by any spelling, normalised the same way) win over the
    table. A codec without figures returns the fallback: the G.711 row renamed
    ``"unknown"`` with ``known=False``.
    """
    key = canonical_name(name).upper() if name else ""
    if overrides:
        for oname, orow in overrides.items():
            if canonical_name(oname).upper() == key:
                return orow
    return _table_row(key, params, g711_plc)


@functools.lru_cache(maxsize=256)  # rows are frozen: one per (codec, mode, PLC) seen
def _table_row(key: str, params: str | None, g711_plc: bool) -> CodecImpairment:
    """The registry's row for the canonical upper-case ``key`` (see `lookup_codec`)."""
    row = _BY_NAME.get(key)
    if row is not None:
        row = _variant(row, params)
    if row is None:
        row = dataclasses.replace(_BY_NAME["PCMA"], name="unknown", known=False,
                                  source="fallback: G.711 figures (codec without figures)")
    if row.name in _G711_NAMES or not row.known:
        bpl = G711_BPL_PLC if g711_plc else G711_BPL_NO_PLC
        unverified = () if g711_plc else ("bpl",)
        row = dataclasses.replace(row, bpl=bpl, unverified=unverified)
    return row
