"""`voipprobe analyze --json` on every corpus capture with RTP, against tshark 4.0's
``-z rtp,streams`` (the oracle files beside the corpus).

Agreement required: the same streams (src, dst, SSRC), the same packet counts,
the same loss where tshark's is not negative, mean and max jitter within
0.05 ms or 2 %. Where we differ on purpose, `DIFFERENCES` says why, capture by
capture; docs/tshark-comparison.md carries the same table for readers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
from corpus_oracle import TsharkStream, corpus_dir, oracle_streams

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


DIFFERENCES: dict[str, Differences] = {}


def _analyze(path: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "analyze", "--json", "--no-progress", path],
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
    if ts.lost >= 0 and ts.ssrc not in diff.packets and ours["lost"] != ts.lost:
        problems.append(f"lost {ours['lost']} != {ts.lost}")
    if ts.lost < 0 and ours["lost"] != 0 and ours["duplicates"] < -ts.lost:
        problems.append(f"tshark lost {ts.lost}: expected >= {-ts.lost} duplicates, no loss")
    if ts.ssrc not in diff.jitter and ts.max_jitter_ms > 0:
        for name, mine, theirs in (
            ("mean jitter", ours["jitter_mean_ms"], ts.mean_jitter_ms),
            ("max jitter", ours["jitter_max_ms"], ts.max_jitter_ms),
        ):
            if not _close(mine, theirs):
                problems.append(f"{name} {mine:.3f} vs tshark {theirs:.3f}")
    if ts.ssrc not in diff.delta and ts.packets > 1 and not _close(ours["max_delta_ms"], ts.max_delta_ms):
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
        o = by_key.get((ts.src, ts.dst, ts.ssrc))
        if ts.ssrc in diff.missing:
            assert o is None, f"{capture}: {ts.src}->{ts.dst} 0x{ts.ssrc:08X} now found: update DIFFERENCES"
            continue
        if o is None:
            problems.append(f"missing stream {ts.src} -> {ts.dst} ssrc 0x{ts.ssrc:08X} ({ts.packets} pkts)")
            continue
        matched += 1
        problems += [f"{ts.src}->{ts.dst} 0x{ts.ssrc:08X}: {p}" for p in _check_stream(o, ts, diff)]
    extra = len(ours) - matched
    if extra != diff.extra:
        problems.append(f"{extra} streams tshark does not report (expected {diff.extra})")
    assert not problems, f"{capture} vs tshark ({variant}):\n" + "\n".join(problems)
