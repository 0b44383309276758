"""The media registry end to end (issue 8 items 1 and 3): generated captures through
`voipprobe analyze --json`, as a user runs it.

- codec tour: each call's codec as its SDP negotiated it, and its MOS from that
  codec's figures (ITU-T G.113 Appendix I / IV values written below, not read from
  the registry), computed with the G.107 / G.107.1 formulas of
  reference/STANDARDS.md; a codec without figures says ``codec_figures: assumed``
  and its MOS threshold is not judged.
- SRTP with RFC 4733 events (80- and 32-bit tags, with an MKI, with and without
  SDP): every event packet counted, none in the jitter (the generator's RFC 3550
  jitter over the audio packets alone).
- PCMA with comfort noise (VAD): codec PCMA, CN packets counted, no loss for the
  silence gaps, jitter as the generator's, MOS equal to the same call without VAD.

Truth comes from `mediagen` / `callgen`, which import nothing from ``agent``.
"""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import callgen
import mediagen
import pytest

REPO = Path(__file__).resolve().parents[2]

# ITU-T G.113 Appendix I Table I.1 (Ie) / Table I.3 (Bpl), Appendix IV (Ie,WB), RFC 3951
# and RFC 6716 (look-ahead); iLBC and Opus: published E-model fits (no ITU-T value).
# name -> (Ie or Ie,WB, look-ahead ms, wideband)
FIGURES: dict[str, tuple[float, float, bool]] = {
    "G726-16": (50.0, 0.0, False), "G726-24": (25.0, 0.0, False),
    "G726-32": (7.0, 0.0, False), "G726-40": (2.0, 0.0, False),
    "AAL2-G726-16": (50.0, 0.0, False),
    "GSM": (20.0, 0.0, False),
    "AMR": (5.0, 5.0, False),  # 12.2 kbit/s = GSM-EFR (3GPP TS 26.071)
    "G729": (11.0, 5.0, False),  # G.729A (+VAD)
    "G722": (13.0, 0.0, True),
    "opus": (10.0, 6.5, True),
    "iLBC": (11.0, 5.0, False),
}
ASSUMED = {"speex", "X-VENDOR-VOICE"}
ASSUMED_NETWORK_MS = 20.0  # QualityConfig default: no RTCP in these captures


# -- the E-model, from reference/STANDARDS.md, all G.107 defaults -----------------------

RO_MINUS_IS = 94.7688 - 1.4136  # STANDARDS.md: Ro and Is with every G.107 default


def _idte(t: float) -> float:
    no = (15.0 - 94.7688) / 1.5 - 8.0  # No from Ro = 15 - 1.5 (SLR + No) (G.107 §7.2)
    roe = -1.5 * (no - 2.0)
    terv = 65.0 - 40.0 * math.log10((1 + t / 10) / (1 + t / 150)) + 6 * math.exp(-0.3 * t * t)
    re = 80.0 + 2.5 * (terv - 14.0)
    return ((roe - re) / 2 + math.sqrt((roe - re) ** 2 / 4 + 100) - 1) * (1 - math.exp(-t))


def _idle(tr: float) -> float:
    rle = 10.5 * (110.0 + 7.0) * (tr + 1.0) ** -0.25
    return (94.7688 - rle) / 2 + math.sqrt((94.7688 - rle) ** 2 / 4 + 169)


def _idd(ta: float) -> float:
    if ta <= 100.0:
        return 0.0
    x = math.log10(ta / 100.0) / math.log10(2.0)
    return 25 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)


def _mos(r: float) -> float:
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return max(1.0, 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6)


def expected_r_mos(ie: float, wideband: bool, ta: float) -> tuple[float, float]:
    """Zero loss, T = Ta, Tr = 2 Ta: narrowband R = Ro - Is - Id - Ie; wideband (G.107.1,
    monitoring use) R = 129 - 1.29 (Idte + Idd) - Ie,WB, MOS from R / 1.29."""
    if wideband:
        r = 129.0 - 1.29 * (_idte(ta) + _idd(ta)) - ie
        return r, _mos(r / 1.29)
    r = RO_MINUS_IS - (_idte(ta) + _idle(2 * ta) + _idd(ta)) - ie
    return r, _mos(r)


def test_the_test_emodel_meets_the_standards_vectors() -> None:
    """The yardstick itself: STANDARDS.md's delay vectors (Ta 100 and 300 ms)."""
    assert expected_r_mos(0.0, False, 100.0)[0] == pytest.approx(90.664, abs=2e-3)
    assert expected_r_mos(0.0, False, 300.0)[1] == pytest.approx(3.719, abs=2e-3)


# -- running the probe ---------------------------------------------------------------


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mediagen")


@functools.cache
def _analyzed(name: str, folder: Path) -> tuple[list[dict[str, Any]], callgen.ScenarioTruth]:
    packets, truth = mediagen.SCENARIOS[name]()
    path = callgen.write(folder / f"{name}.pcap", packets)
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", "--no-progress", "--streams",
         str(path)], capture_output=True, text=True, timeout=600, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()], truth


def _calls(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == "call"]


# -- codec tour ----------------------------------------------------------------------


def test_each_call_rated_on_its_own_codec_figures(gen_dir: Path) -> None:
    objs, truth = _analyzed("codec_tour", gen_dir)
    calls = {c["call_id"]: c for c in _calls(objs)}
    assert set(calls) == {t.call_id for t in truth.calls}
    seen = []
    for t in truth.calls:
        rec = calls[t.call_id]
        assert rec["codec"] == t.codec
        for d in rec["directions"]:
            s, q = d["stream"], d["quality"]
            assert (s["codec"], s["clock_rate"], s["clock_rate_estimated"]) == (
                t.codec, t.clock_rate, False)
            assert q["effective_loss_ratio"] == 0.0 and s["ptime_ms"] == 20.0
            if t.codec in ASSUMED:
                assert (q["codec_figures"], q["codec_model"]) == ("assumed", "unknown")
                assert "min_mos_cq" in d["sla"]["not_judged"]
                assert "min_mos_cq" not in {v["threshold"] for v in d["sla"]["violations"]}
                continue
            ie, lookahead, wideband = FIGURES[t.codec]
            assert (q["codec_figures"], q["codec_model"], q["wideband"]) == (
                "standard", t.codec, wideband)
            # Ta = assumed network + ptime + jitter-buffer wait + look-ahead
            ta = ASSUMED_NETWORK_MS + 20.0 + s["jitter_buffer"]["mean_delay_ms"] + lookahead
            assert q["delay_ms"] == pytest.approx(ta, abs=0.01)
            r, mos = expected_r_mos(ie, wideband, q["delay_ms"])
            assert q["r_factor"] == pytest.approx(r, abs=0.01)
            assert q["mos_cq"] == pytest.approx(mos, abs=0.002)
            assert "min_mos_cq" not in d["sla"]["not_judged"]
            judged = "min_mos_cq" in {v["threshold"] for v in d["sla"]["violations"]}
            assert judged == (q["mos_cq"] < 3.6)  # the shipped default profile's floor
        seen.append(t.codec)
    assert seen == [c.name for c in mediagen.TOUR]


def test_g726_16_is_not_rated_as_g711(gen_dir: Path) -> None:
    """The issue's case: AAL2-G726-16 was rated 4.375 (G.711's figures); Ie 50 gives ~2.1."""
    objs, _ = _analyzed("codec_tour", gen_dir)
    for name in ("G726-16", "AAL2-G726-16"):
        (rec,) = [c for c in _calls(objs) if c["codec"] == name]
        assert all(2.05 < d["quality"]["mos_cq"] < 2.2 for d in rec["directions"])


# -- SRTP with RFC 4733 events -------------------------------------------------------

SRTP = ["srtp_dtmf_80", "srtp_dtmf_32_mki", "srtp_dtmf_80_unsignalled",
        "srtp_dtmf_32_unsignalled", "srtp_dtmf_32_mki_unsignalled"]


@pytest.mark.parametrize("scenario", SRTP)
def test_srtp_events_counted_and_kept_out_of_jitter(scenario: str, gen_dir: Path) -> None:
    objs, truth = _analyzed(scenario, gen_dir)
    streams = {(o["src"], o["dst"], o["ssrc"]): o for o in objs if o["kind"] == "stream"}
    assert set(streams) == {t.key for t in truth.streams()}
    for t in truth.streams():
        s = streams[t.key]
        assert t.events == 4 * (6 + 2)  # four events of six packets, the end sent 3 times
        assert (s["codec"], s["telephone_event_packets"]) == ("PCMA", t.events)
        assert (s["packets"], s["expected"], s["lost"]) == (t.packets, t.expected, t.lost)
        # the events' onset timestamps would add ~20 ms per event packet to |D|
        assert s["jitter_ms"] == pytest.approx(t.jitter_ms, abs=1e-3)
        assert t.jitter_ms < 1.0
    signalled = "unsignalled" not in scenario
    for s in streams.values():
        assert s["profile"] == ("RTP/SAVP" if signalled else None)
        tag = {"srtp_dtmf_80": 10, "srtp_dtmf_32_mki": 8}.get(scenario)
        assert s["srtp_trailer_bytes"] == tag


# -- PCMA with comfort noise ---------------------------------------------------------


def test_pcma_with_comfort_noise(gen_dir: Path) -> None:
    objs, truth = _analyzed("pcma_vad", gen_dir)
    ref_objs, _ = _analyzed("pcma_no_vad", gen_dir)
    (rec,) = _calls(objs)
    (ref,) = _calls(ref_objs)
    assert rec["codec"] == "PCMA"
    by_src = {t.src: t for t in truth.streams()}
    for d, r in zip(rec["directions"], ref["directions"], strict=True):
        s, q, t = d["stream"], d["quality"], by_src[d["stream"]["src"]]
        assert t.comfort_noise == 15 + 6 + 10  # one CN every 10 silent slots
        assert (s["codec"], s["comfort_noise_packets"]) == ("PCMA", t.comfort_noise)
        assert (q["codec_model"], q["codec_figures"]) == ("PCMA", "standard")
        assert s["payload_types"] == [8, 13]
        assert (s["packets"], s["expected"], s["lost"], t.lost) == (t.packets, t.packets, 0, 0)
        assert s["jitter_ms"] == pytest.approx(t.jitter_ms, abs=1e-3)
        assert s["jitter_mean_ms"] < 1.0
        assert q["effective_loss_ratio"] == 0.0
        assert q["mos_cq"] == pytest.approx(r["quality"]["mos_cq"], abs=0.01)
