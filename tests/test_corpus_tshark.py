"""`voipprobe analyze --json` on every corpus capture with RTP, against tshark 4.0's
``-z rtp,streams`` (the oracle files beside the corpus).

Agreement required: the same streams (src, dst, SSRC), the same packet counts,
the same loss where tshark's is not negative, mean and max jitter within
0.05 ms or 2 %. Where we differ on purpose, `DIFFERENCES` says why, capture by
capture; docs/tshark-comparison.md carries the same table for readers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
from corpus_oracle import corpus_dir, oracle_streams
from tshark_table import TsharkStream, parse_rtp_streams

# Captures in which tshark finds RTP (default decode, heuristic, or decode-as).
RTP_CAPTURES = [
    "wiki_SIP_CALL_RTP_G711.pcap",
    "wiki_sip-rtp-dvi4.pcap",
    "wiki_sip-rtp-g729a.pcap",
    "wiki_sip-rtp-ilbc.pcap",
    "wiki_sip-rtp-l16.pcap",
    "sipp_sip-tcp_pcma_dtmf.pcap",
    "heplify_FAX-Call-t38.pcap",
    "rtpdump_vowifi_esp_null.pcap",
    "rtpproxy_lost.a.pcap",
    "rtpproxy_sess6.o.pcap",
    "rtpproxy_dups.a.pcap",
    "rtpproxy_G723_1.a.pcap",
    "rtpproxy_srtp1.o.pcap",
    "rtpproxy_DLT_NULL.a.pcap",
    "rtpproxy_rtcp.o.pcap",
    "rtpproxy_dtmf.pcap",
    "sipp_g722_rtp.pcap",
    "sipp_ssrc_change_multi.pcap",
    "webrtc_srtp_pcma_sdes.pcap",
    "ndpi_google_meet_srtp.pcapng",
    "ndpi_rtp_mixed_vlan.pcapng",
]


@dataclass(frozen=True)
class Differences:
    """Deliberate differences from tshark in one capture. SSRCs as integers."""

    why: str
    missing: frozenset[int] = frozenset()  # tshark streams we do not report
    extra: int = 0  # streams we report that tshark does not
    jitter: frozenset[int] = frozenset()  # streams whose jitter we measure differently
    delta: frozenset[int] = frozenset()  # streams whose max delta we measure differently
    packets: dict[int, int] = field(default_factory=dict)  # ssrc -> our packet count
    lost: dict[int, int] = field(default_factory=dict)  # ssrc -> our lost count


DIFFERENCES: dict[str, Differences] = {
    "wiki_SIP_CALL_RTP_G711.pcap": Differences(
        why="tshark's default decode follows SDP only; the relayed legs 200.57.7.196:40378 <-> "
        "200.57.7.199:4800 are RTP too: tshark's heuristic decode finds them, and "
        "test_extra_streams_match_tshark_heuristics checks them against it",
        extra=2,
    ),
    "wiki_sip-rtp-l16.pcap": Differences(
        why="SDP says L16/11025 but the sender's timestamps advance 256 per 32 ms (8 kHz): "
        "tshark's constant ~8.4 ms jitter is its wrong clock; we estimate 8000 Hz and "
        "measure 0.013 ms (corpus README note 3)",
        jitter=frozenset({0x043DA985}),
    ),
    "sipp_sip-tcp_pcma_dtmf.pcap": Differences(
        why="340 RFC 4733 event packets in the PCMA stream carry their onset timestamp: "
        "tshark's 90.9 ms max jitter is that artefact; we exclude events from jitter "
        "(corpus README note 2)",
        jitter=frozenset({0x421970FE}),
    ),
    "heplify_FAX-Call-t38.pcap": Differences(
        why="0x17D90134: tshark jitters across CN, RFC 2833 events and the 9.2 s T.38 gap "
        "(2730 ms); we exclude CN/events and treat |D| > 1 s as a discontinuity. "
        "0x0EAF0EAF: after the re-INVITE to T.38 the sender kept sending PCMA RTP "
        "(PT 8, same SSRC, sequence continuing) that tshark decodes as T.38 (all 2010 "
        "malformed, corpus README note 7); we count all 3848 RTP packets, none lost, so "
        "loss, jitter and delta cover a longer stream than tshark's",
        jitter=frozenset({0x17D90134, 0x0EAF0EAF}),
        delta=frozenset({0x17D90134, 0x0EAF0EAF}),
        packets={0x0EAF0EAF: 3848},
        lost={0x0EAF0EAF: 0},
    ),
    "rtpproxy_dtmf.pcap": Differences(
        why="event-only streams: events are not jitter or delta packets (their timestamps "
        "are onsets); 0x37ED87F3 lost 193 (rtpproxy's own analyser agrees) where tshark's "
        "141 counts up to the last, not the highest, sequence number",
        delta=frozenset({0xEE693E61, 0x37ED87F3}),
        lost={0x37ED87F3: 193},
    ),
    "webrtc_srtp_pcma_sdes.pcap": Differences(
        why="92 comfort-noise packets (PT 13): tshark updates jitter on CN, we exclude CN "
        "and measure the next media packet against the last media packet",
        jitter=frozenset({0x522B93AB, 0xD092D296}),
    ),
    "ndpi_google_meet_srtp.pcapng": Differences(
        why="two SSRC-0 streams are tshark heuristic mis-detections of SRTCP/DTLS "
        "(rtp.rfc2198 and PT 97 with 'loss', corpus README note 6); 0xC362591E is 4 "
        "bandwidth-probe packets in 1.3 ms whose timestamp never advances, which our "
        "probation does not accept as a stream",
        missing=frozenset({0x00000000, 0xC362591E}),
    ),
    "ndpi_rtp_mixed_vlan.pcapng": Differences(
        why="H.263 video 0x00001646: tshark's running mean gives skipped (marker) packets "
        "the weight of the current mean, we average regular packets; 15 packets, of which "
        "5 are frame ends",
        jitter=frozenset({0x00001646}),
    ),
}


def _analyze(path: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", "--streams", "--no-progress",
         path],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [o for o in map(json.loads, proc.stdout.splitlines()) if o["kind"] == "stream"]


def _close(ours: float, theirs: float) -> bool:
    return abs(ours - theirs) <= max(0.05, 0.02 * abs(theirs))


def _check_stream(ours: dict[str, Any], ts: TsharkStream, diff: Differences) -> list[str]:
    problems = []
    want_pkts = diff.packets.get(ts.ssrc, ts.packets)
    if ours["packets"] != want_pkts:
        problems.append(f"packets {ours['packets']} != {want_pkts}")
    want_lost = diff.lost.get(ts.ssrc, ts.lost)
    if want_lost >= 0 and ours["lost"] != want_lost:
        problems.append(f"lost {ours['lost']} != {want_lost}")
    if ts.lost < 0 and ours["lost"] != 0 and ours["duplicates"] < -ts.lost:
        problems.append(f"tshark lost {ts.lost}: expected >= {-ts.lost} duplicates, no loss")
    if ts.ssrc not in diff.jitter and ts.max_jitter_ms > 0:
        for name, mine, theirs in (
            ("mean jitter", ours["jitter_mean_ms"], ts.mean_jitter_ms),
            ("max jitter", ours["jitter_max_ms"], ts.max_jitter_ms),
        ):
            if not _close(mine, theirs):
                problems.append(f"{name} {mine:.3f} vs tshark {theirs:.3f}")
    delta_ok = _close(ours["max_delta_ms"], ts.max_delta_ms)
    if ts.ssrc not in diff.delta and ts.packets > 1 and not delta_ok:
        problems.append(f"max delta {ours['max_delta_ms']:.3f} vs tshark {ts.max_delta_ms:.3f}")
    return problems


@pytest.mark.parametrize("capture", RTP_CAPTURES)
def test_streams_match_tshark(capture: str) -> None:
    corpus = corpus_dir()
    variant, theirs = oracle_streams(capture)
    assert theirs, f"no tshark streams for {capture} ({variant})"
    diff = DIFFERENCES.get(capture, Differences(why=""))
    ours = _analyze(str(corpus / "pcaps" / capture))
    by_key = {(o["src"], o["dst"], o["ssrc"]): o for o in ours}
    problems: list[str] = []
    matched = 0
    for ts in theirs:
        path = f"{ts.src_endpoint} -> {ts.dst_endpoint} {ts.ssrc:#010x}"
        o = by_key.get((ts.src_endpoint, ts.dst_endpoint, ts.ssrc))
        if ts.ssrc in diff.missing:
            assert o is None, f"{capture}: {ts.ssrc:#010x} now found: update DIFFERENCES"
            continue
        if o is None:
            problems.append(f"missing {path} ({ts.packets} pkts)")
            continue
        matched += 1
        problems += [f"{path}: {p}" for p in _check_stream(o, ts, diff)]
    extra = len(ours) - matched
    if extra != diff.extra:
        problems.append(f"{extra} streams tshark does not report (expected {diff.extra})")
    assert not problems, f"{capture} vs tshark ({variant}):\n" + "\n".join(problems)


def _tshark_heuristic(path: str) -> list[TsharkStream]:
    proc = subprocess.run(
        ["tshark", "-r", path, "-q", "-o", "rtp.heuristic_rtp:TRUE", "-z", "rtp,streams"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    return parse_rtp_streams(proc.stdout)


@pytest.mark.parametrize(
    "capture", [c for c, d in DIFFERENCES.items() if d.extra and c in RTP_CAPTURES]
)
def test_extra_streams_match_tshark_heuristics(capture: str) -> None:
    """Streams we report beyond tshark's default decode are the ones its heuristic
    decode finds, with the same figures."""
    if shutil.which("tshark") is None:
        if os.environ.get("CI"):
            pytest.fail("tshark missing in CI (scripts/test.sh installs it)")
        pytest.skip("tshark not installed")
    path = str(corpus_dir() / "pcaps" / capture)
    _, default = oracle_streams(capture)
    known = {(t.src_endpoint, t.dst_endpoint, t.ssrc) for t in default}
    heur = {(t.src_endpoint, t.dst_endpoint, t.ssrc): t for t in _tshark_heuristic(path)}
    extra = [o for o in _analyze(path) if (o["src"], o["dst"], o["ssrc"]) not in known]
    assert len(extra) == DIFFERENCES[capture].extra
    for o in extra:
        ts = heur.get((o["src"], o["dst"], o["ssrc"]))
        assert ts is not None, f"{o['src']}->{o['dst']} {o['ssrc']:#x} not found by tshark either"
        assert not _check_stream(o, ts, DIFFERENCES[capture])
