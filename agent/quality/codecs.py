"""Codec impairment table: Ie, Bpl, look-ahead and packetisation per codec.

One table, :data:`CODECS`. Sources: ITU-T G.113 Appendix I (Ie, Bpl of
narrowband codecs), G.113 / G.107.1 (Ie,WB on the wideband scale) as collected
in STANDARDS.md. Every value that could not be checked against the standard's
own text names itself in ``unverified``; codecs the G.113 tables do not cover
(iLBC, Opus, G.722, AMR's Bpl) carry documented assumptions. All of them can be
overridden through ``QualityConfig.codec_overrides``.

G.711's packet-loss robustness depends on whether the endpoints conceal loss
(G.711 Appendix I PLC): Bpl 25.1 with PLC (the default, modern phones
conceal), 4.3 without.

Lookup (:func:`lookup_codec`) takes the codec name as the RTP layer or SDP
reports it ("g711A", "PCMU", "G729", "AMR-WB", "opus/48000/2" ...),
case-insensitive. Unknown or missing names fall back to the G.711 row with
``known=False``, so a record can say its quality figure rests on a guess.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

G711_BPL_PLC = 25.1  # G.113 App. I, G.711 with Appendix I PLC
G711_BPL_NO_PLC = 4.3  # G.113 App. I, G.711 without PLC (unverified)


@dataclass(frozen=True, slots=True)
class CodecImpairment:
    """E-model inputs for one codec. ``ie`` is on the scale of ``wideband``."""

    name: str  # canonical name, as reported in records
    ie: float  # Ie (narrowband) or Ie,WB (wideband, G.107.1 scale)
    bpl: float  # packet-loss robustness factor
    lookahead_ms: float  # algorithmic look-ahead beyond one frame
    default_ptime_ms: float  # packetisation when SDP gives no a=ptime
    wideband: bool
    source: str
    unverified: tuple[str, ...] = ()  # names of fields whose value is not verified
    aliases: tuple[str, ...] = ()
    known: bool = True  # False: fallback row for an unknown codec


def _row(
    name: str,
    ie: float,
    bpl: float,
    lookahead_ms: float,
    ptime_ms: float,
    *,
    wideband: bool = False,
    source: str = "G.113 App. I",
    unverified: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
) -> CodecImpairment:
    return CodecImpairment(
        name, ie, bpl, lookahead_ms, ptime_ms, wideband, source, unverified, aliases
    )


_ASSUMED = "assumption (not in G.113 tables)"

#: The codec table. ie/bpl: G.113 App. I unless ``source`` says otherwise.
CODECS: tuple[CodecImpairment, ...] = (
    _row("g711U", 0.0, G711_BPL_PLC, 0.0, 20.0, aliases=("pcmu", "g711u", "g711", "g711mu")),
    _row("g711A", 0.0, G711_BPL_PLC, 0.0, 20.0, aliases=("pcma", "g711a", "g711alaw")),
    # G.729 Ie 10 / G.729A Ie 11; Bpl 19.0 is given for G.729A+VAD at 20 ms.
    _row("g729", 11.0, 19.0, 5.0, 20.0, aliases=("g729", "g729a", "g729ab", "g729b")),
    # G.723.1: 6.3 kbit/s Ie 15 (Bpl 16.1 at 30 ms); 5.3 kbit/s Ie 19.
    _row("g723", 15.0, 16.1, 7.5, 30.0, aliases=("g723", "g7231", "g72363")),
    _row("g723-5.3", 19.0, 16.1, 7.5, 30.0, unverified=("bpl",), aliases=("g72353",)),
    _row("g726-40", 2.0, 4.3, 0.0, 20.0, unverified=("bpl",), aliases=("g72640",)),
    _row("g726-32", 7.0, 4.3, 0.0, 20.0, unverified=("bpl",), aliases=("g72632", "g726")),
    _row("g726-24", 25.0, 4.3, 0.0, 20.0, unverified=("bpl",), aliases=("g72624",)),
    _row("g726-16", 50.0, 4.3, 0.0, 20.0, unverified=("bpl",), aliases=("g72616",)),
    _row("g728", 7.0, 4.3, 0.0, 20.0, unverified=("bpl",), aliases=("g728", "g72816")),
    _row("GSM", 20.0, 4.3, 0.0, 20.0, unverified=("bpl",), aliases=("gsm", "gsmfr")),
    _row("GSM-HR", 23.0, 4.3, 0.0, 20.0, unverified=("bpl",), aliases=("gsmhr",)),
    _row("GSM-EFR", 5.0, 10.0, 0.0, 20.0, unverified=("bpl",), aliases=("gsmefr",)),
    # AMR 12.2 kbit/s is the GSM-EFR algorithm: same Ie; Bpl as EFR.
    _row("AMR", 5.0, 10.0, 5.0, 20.0, unverified=("ie", "bpl", "lookahead_ms"),
         aliases=("amr", "amrnb")),
    _row("iLBC", 11.0, 32.0, 5.0, 20.0, source=_ASSUMED,
         unverified=("ie", "bpl", "lookahead_ms"), aliases=("ilbc",)),
    # Wideband rows: Ie,WB on the G.107.1 scale (R max 129).
    _row("AMR-WB", 13.0, 4.3, 5.0, 20.0, wideband=True, source="G.113 App. I (monotic)",
         unverified=("lookahead_ms",), aliases=("amrwb",)),
    _row("g722", 13.0, 10.0, 0.0, 20.0, wideband=True, source=_ASSUMED,
         unverified=("ie", "bpl"), aliases=("g722", "g72264")),
    _row("opus", 10.0, 20.0, 6.5, 20.0, wideband=True, source=_ASSUMED,
         unverified=("ie", "bpl"), aliases=("opus",)),
)  # fmt: skip


def _normalise(name: str) -> str:
    """'G.711 A-law' -> 'g711alaw', 'PCMU/8000' -> 'pcmu', 'AMR-WB' -> 'amrwb'."""
    base = name.split("/", 1)[0]
    return re.sub(r"[^0-9a-z]", "", base.lower())


_BY_ALIAS: dict[str, CodecImpairment] = {
    _normalise(alias): row for row in CODECS for alias in (row.name, *row.aliases)
}

_G711_NAMES = frozenset({"g711U", "g711A"})


def lookup_codec(
    name: str | None,
    *,
    g711_plc: bool = True,
    overrides: dict[str, CodecImpairment] | None = None,
) -> CodecImpairment:
    """The impairment row for ``name`` (case-insensitive, punctuation ignored).

    ``g711_plc`` picks G.711's Bpl: 25.1 with concealment, 4.3 without.
    ``overrides`` (keyed by any name/alias, normalised the same way) wins over
    the table. Unknown or ``None`` names return the G.711 row renamed
    ``"unknown"`` with ``known=False``.
    """
    key = _normalise(name) if name else ""
    if overrides:
        for oname, orow in overrides.items():
            if _normalise(oname) == key:
                return orow
    row = _BY_ALIAS.get(key)
    if row is None:
        fallback = _BY_ALIAS["pcma"]
        row = dataclasses.replace(
            fallback, name="unknown", known=False, source="fallback: G.711 figures"
        )
    if row.name in _G711_NAMES or not row.known:
        bpl = G711_BPL_PLC if g711_plc else G711_BPL_NO_PLC
        unverified = () if g711_plc else ("bpl",)
        row = dataclasses.replace(row, bpl=bpl, unverified=unverified)
    return row
