"""Codec figures of the media registry (agent/media/codecs.py)."""

from __future__ import annotations

import pytest

from agent.media.codecs import (
    CODECS,
    G711_BPL_NO_PLC,
    G711_BPL_PLC,
    CodecImpairment,
    lookup_codec,
)
from agent.media.payloads import MediaKind, canonical_name, media_kind
from agent.quality.model import DirectionInput, QualityConfig, compute_quality


@pytest.mark.parametrize(
    ("name", "canonical", "ie", "bpl", "wideband"),
    [
        ("PCMA", "PCMA", 0.0, 25.1, False),
        ("PCMU", "PCMU", 0.0, 25.1, False),
        ("PCMA", "PCMA", 0.0, 25.1, False),
        ("pcmu/8000", "PCMU", 0.0, 25.1, False),
        ("G729", "G729", 11.0, 19.0, False),
        ("G729A", "G729", 11.0, 19.0, False),
        ("G723", "G723", 15.0, 16.1, False),
        ("G.723.1", "G723", 15.0, 16.1, False),
        ("GSM", "GSM", 20.0, 4.3, False),
        ("gsm", "GSM", 20.0, 4.3, False),
        ("iLBC", "iLBC", 11.0, 32.0, False),
        ("AMR", "AMR", 5.0, 10.0, False),
        ("AMR-WB", "AMR-WB", 13.0, 4.3, True),
        ("amr-wb/16000", "AMR-WB", 13.0, 4.3, True),
        ("G722", "G722", 13.0, 10.0, True),
        ("OPUS", "opus", 10.0, 20.0, True),
        ("opus/48000/2", "opus", 10.0, 20.0, True),
        ("G726-32", "G726-32", 7.0, 4.3, False),
        ("G726-16", "G726-16", 50.0, 4.3, False),
        ("g726-24", "G726-24", 25.0, 4.3, False),
        ("G726-40", "G726-40", 2.0, 4.3, False),
        ("AAL2-G726-16", "AAL2-G726-16", 50.0, 4.3, False),
        ("aal2-g726-40", "AAL2-G726-40", 2.0, 4.3, False),
        ("GSM-EFR", "GSM-EFR", 5.0, 10.0, False),
        ("GSM-HR-08", "GSM-HR-08", 23.0, 4.3, False),
        ("G728", "G728", 7.0, 4.3, False),
    ],
)
def test_lookup(name: str, canonical: str, ie: float, bpl: float, wideband: bool) -> None:
    row = lookup_codec(name)
    assert (row.name, row.ie, row.bpl, row.wideband, row.known) == (
        canonical,
        ie,
        bpl,
        wideband,
        True,
    )


def test_g711_plc_choice() -> None:
    assert lookup_codec("PCMA", g711_plc=True).bpl == G711_BPL_PLC == 25.1
    no_plc = lookup_codec("PCMA", g711_plc=False)
    assert no_plc.bpl == G711_BPL_NO_PLC == 4.3
    assert "bpl" in no_plc.unverified
    # The PLC choice does not touch other codecs.
    assert lookup_codec("G729", g711_plc=False).bpl == 19.0


@pytest.mark.parametrize("name", [None, "", "speex", "PT96", "LPC", "QCELP", "DVI4", "L16",
                                  "G7221", "H264"])
def test_codec_without_figures_falls_back_to_g711(name: str | None) -> None:
    row = lookup_codec(name)
    assert (row.name, row.known, row.figures) == ("unknown", False, "assumed")
    assert (row.ie, row.bpl, row.wideband) == (0.0, 25.1, False)
    assert lookup_codec(name, g711_plc=False).bpl == 4.3


@pytest.mark.parametrize(
    ("name", "frame_ms", "lookahead_ms"),
    [("G729", 10.0, 5.0), ("G723", 30.0, 7.5), ("AMR", 20.0, 5.0), ("AMR-WB", 20.0, 5.0),
     ("iLBC", 20.0, 5.0), ("opus", 20.0, 6.5), ("PCMA", 0.0, 0.0), ("G726-16", 0.0, 0.0),
     ("G728", 0.625, 0.0), ("GSM", 20.0, 0.0)],
)
def test_frame_and_lookahead(name: str, frame_ms: float, lookahead_ms: float) -> None:
    row = lookup_codec(name)
    assert (row.frame_ms, row.lookahead_ms, row.figures) == (frame_ms, lookahead_ms, "standard")


def test_every_row_is_a_registry_audio_name() -> None:
    """One name per codec: each figures row is keyed by the registry's spelling."""
    for row in CODECS:
        assert canonical_name(row.name) == row.name and media_kind(row.name) == MediaKind.AUDIO


def test_override_wins() -> None:
    custom = CodecImpairment("speex", 8.0, 12.0, 0.0, 20.0, False, "site measurement")
    assert lookup_codec("SPEEX", overrides={"speex": custom}) is custom


def test_table_is_consistent() -> None:
    names = [r.name for r in CODECS]
    assert len(names) == len(set(names))
    for row in CODECS:
        assert row.bpl > 0 and row.ie >= 0 and row.default_ptime_ms > 0
        assert set(row.unverified) <= {"ie", "bpl", "lookahead_ms"}
        if not row.source.startswith("G.113"):  # not an ITU-T value: flagged
            assert {"ie", "bpl"} <= set(row.unverified)


def test_config_override_by_any_spelling() -> None:
    # a site that measured its own PCMA figures writes the name as it likes
    cfg = QualityConfig.model_validate({"codec_overrides": {"g711a": {"ie": 5, "bpl": 10}}})
    q = compute_quality(DirectionInput("PCMA", 0.01, rtt_s=0.0), cfg)
    ref = compute_quality(DirectionInput("PCMA", 0.01, rtt_s=0.0))
    assert q.codec_figures == "standard" and q.ie_eff == pytest.approx(5 + 90 * 1 / (1 + 10))
    assert ref.ie_eff == pytest.approx(95 * 1 / (1 + 25.1))
