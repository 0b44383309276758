"""Codec table lookups (agent/quality/codecs.py)."""

from __future__ import annotations

import pytest

from agent.media.codecs import (
    CODECS,
    G711_BPL_NO_PLC,
    G711_BPL_PLC,
    CodecImpairment,
    lookup_codec,
)


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


@pytest.mark.parametrize("name", [None, "", "speex", "PT96"])
def test_unknown_falls_back_to_g711(name: str | None) -> None:
    row = lookup_codec(name)
    assert row.name == "unknown" and not row.known
    assert (row.ie, row.bpl, row.wideband) == (0.0, 25.1, False)


def test_override_wins() -> None:
    custom = CodecImpairment("speex", 8.0, 12.0, 0.0, 20.0, False, "site measurement")
    assert lookup_codec("SPEEX", overrides={"speex": custom}) is custom


def test_table_is_consistent() -> None:
    names = [r.name for r in CODECS]
    assert len(names) == len(set(names))
    for row in CODECS:
        assert row.bpl > 0 and row.ie >= 0 and row.default_ptime_ms > 0
        assert set(row.unverified) <= {"ie", "bpl", "lookahead_ms"}
        if row.source.startswith("assumption"):
            assert row.unverified
